"""Run a training family for N iterations: exact resume, CSV curves, checkpoints, exports.

Reproducibility: batch k is drawn by ``numpy.random.default_rng([seed, k])`` — a pure function of the seed
and the iteration — and any randomness inside a step comes from a per-iteration torch generator or from the
torch RNG state stored in the checkpoint. So a run stopped after iteration k and resumed continues exactly as
the uninterrupted run would (bit for bit on the CPU; tested).

Files in ``output_dir``:
* ``checkpoint.pt`` — networks, optimizers, family state, RNG state, iteration (written atomically);
* ``metrics.csv`` — one row per logged iteration: ``iteration``, ``seconds``, the training losses averaged
  over the last ``log_every`` iterations (``train_*``) and the evaluation on a fixed validation batch
  (``val_*``: losses, SSIM, PSNR); rows after the checkpoint's iteration are dropped on resume;
* ``plots/*.png`` — the curves (generation.training.plots);
* the exported networks (e.g. ``wav2lip.pt``), loadable by generation.weights / the admin's Checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generation.training.config import TrainConfig
from generation.training.dataset import LipSyncDataset
from generation.training.families import Family, get_family

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "syncmos-training-v1"
VALIDATION_STREAM = 2**31 - 1  # the rng stream of the fixed validation batch (never an iteration number)


@dataclass
class TrainResult:
    iterations: int
    output_dir: Path
    exported: list[Path]
    last_row: dict
    seconds: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here")
    return torch.device(name)


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class MetricLog:
    """metrics.csv, appended row by row; the header grows if a later row brings new columns."""

    def __init__(self, path: Path, *, keep_until: int):
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            with path.open(newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["iteration"]) <= keep_until]
            self._rewrite()

    def append(self, row: dict) -> None:
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        self._rewrite()

    def _rewrite(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def save_training_checkpoint(path: Path, family: Family, iteration: int, config: TrainConfig) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "family": config.family,
        "iteration": iteration,
        "config": dataclasses.asdict(config),
        "modules": {k: m.state_dict() for k, m in family.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in family.optimizers.items()},
        "family_state": family.state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_training_checkpoint(path: Path, family: Family, config: TrainConfig) -> int:
    payload = torch.load(path, map_location=family.device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("family") != config.family:
        raise RuntimeError(f"{path} is not a {config.family!r} training checkpoint; use another output_dir")
    saved = payload["config"]
    for name in ("model_config", "seed", "batch_size", "data_root"):
        if saved.get(name) != getattr(config, name) and not (name == "model_config" and
                                                             _same_config(saved.get(name), config.model_config)):
            raise RuntimeError(f"{path} was made with {name} = {saved.get(name)!r}, this config says "
                               f"{getattr(config, name)!r}: resuming would not continue the same run")
    for name, module in family.modules.items():
        module.load_state_dict(payload["modules"][name])
    for name, optimizer in family.optimizers.items():
        optimizer.load_state_dict(payload["optimizers"][name])
    family.load_state(payload["family_state"])
    torch.set_rng_state(payload["torch_rng"].cpu())
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
    return int(payload["iteration"])


def _same_config(a, b) -> bool:
    return (a == b) or (isinstance(a, dict) and isinstance(b, dict) and
                        {k: list(v) if isinstance(v, tuple) else v for k, v in a.items()} ==
                        {k: list(v) if isinstance(v, tuple) else v for k, v in b.items()})


def train(config: TrainConfig, *, resume: bool = True, stop_after: int | None = None,
          progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``config.family`` until ``config.iterations`` (or ``stop_after`` iterations in this call).

    ``resume``: continue from ``output_dir/checkpoint.pt`` when it exists (else start afresh, overwriting).
    ``progress``: called with every logged row.
    """
    started = time.monotonic()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    np.random.seed(config.seed)  # the paper's numpy.random.seed(10); nothing below draws from it, but user code may
    torch.manual_seed(config.seed)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    family = get_family(config.family)(config, device)
    spec = family.window_spec()
    root = Path(config.data_root)
    train_data = LipSyncDataset(root, root / config.train_list, spec)
    val_data = LipSyncDataset(root, root / config.val_list, spec)
    val_batch = batch_to(val_data.batch(np.random.default_rng([config.seed, VALIDATION_STREAM]),
                                        config.eval_batch_size), device)

    checkpoint = output_dir / "checkpoint.pt"
    iteration = 0
    if resume and checkpoint.exists():
        iteration = load_training_checkpoint(checkpoint, family, config)
        log.info("resuming %s from iteration %d", config.family, iteration)
    metrics = MetricLog(output_dir / "metrics.csv", keep_until=iteration)

    target = config.iterations if stop_after is None else min(config.iterations, iteration + stop_after)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    last_row: dict = metrics.rows[-1] if metrics.rows else {}
    while iteration < target:
        batch = batch_to(train_data.batch(np.random.default_rng([config.seed, iteration]), config.batch_size), device)
        family.train_mode()
        for name, v in family.train_step(batch, iteration).items():
            sums[name] += v
            counts[name] += 1
        iteration += 1
        if iteration % config.log_every == 0 or iteration == config.iterations:
            family.eval_mode()
            with torch.no_grad():
                evaluation = family.evaluate(val_batch)
            last_row = {"iteration": iteration, "seconds": round(time.monotonic() - started, 3),
                        **{f"train_{k}": sums[k] / counts[k] for k in sums},
                        **{f"val_{k}": v for k, v in evaluation.items()}}
            metrics.append(last_row)
            sums.clear()
            counts.clear()
            if progress:
                progress(last_row)
        if iteration % config.checkpoint_every == 0 or iteration == target:
            save_training_checkpoint(checkpoint, family, iteration, config)

    exported: list[Path] = []
    if iteration >= config.iterations:
        family.eval_mode()
        exported = family.export(output_dir)
        from generation.training import plots

        plots.plot_metrics(output_dir / "metrics.csv", output_dir / "plots", title=config.family)
    return TrainResult(iterations=iteration, output_dir=output_dir, exported=exported, last_row=last_row,
                       seconds=time.monotonic() - started)
