"""Training run configuration: one TOML file per run, checked before anything is built.

Example (``configs/train/wav2lip_tiny.toml``)::

    family = "wav2lip"
    data_root = "../../var/train/corpus"      # relative paths are relative to this file
    output_dir = "../../var/train/runs/wav2lip_tiny"
    model_config = "tiny"
    iterations = 3000
    batch_size = 16
    seed = 10

    [options]
    expert_checkpoint = "../../var/train/runs/syncnet_tiny/syncnet_color.pt"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    family: str
    data_root: str
    output_dir: str
    model_config: str | dict = "tiny"
    train_list: str = "filelists/train.txt"  # relative to data_root
    val_list: str = "filelists/val.txt"
    iterations: int = 1000
    batch_size: int = 16
    eval_batch_size: int = 16
    seed: int = 10  # numpy.random.seed(10), as 000_41145e614d4b5485.txt trains both of its models
    lr: float = 1e-4
    log_every: int = 50  # the paper samples its curves every 600th iteration; tiny runs need finer steps
    checkpoint_every: int = 500
    device: str = "auto"  # "auto": CUDA when present, else CPU
    threads: int = 0  # CPU threads for torch (0: torch's default)
    options: dict = field(default_factory=dict)  # family-specific, see generation.training.families

    def __post_init__(self) -> None:
        from generation.training.families import get_family

        family = get_family(self.family)  # raises ConfigError naming the known families
        for name in ("iterations", "batch_size", "eval_batch_size", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {self.device!r}")
        if not isinstance(self.options, dict):
            raise ConfigError("options must be a table")
        family.check_options(self.options)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


PATH_FIELDS = ("data_root", "output_dir")
PATH_OPTIONS = ("expert_checkpoint", "avsyncnet_checkpoint", "silent_checkpoint", "lpips_heads")


def load_config(path: str | os.PathLike, **overrides) -> TrainConfig:
    """Read a TOML training config; relative paths in it are taken relative to the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no training config at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown fields {unknown}; known: {sorted(known)}")
    missing = sorted(n for n in ("family", "data_root", "output_dir") if n not in raw)
    if missing:
        raise ConfigError(f"{path}: missing required fields {missing}")
    base = path.resolve().parent
    for name in PATH_FIELDS:
        raw[name] = str((base / raw[name]).resolve())
    options = dict(raw.get("options", {}))
    for name in PATH_OPTIONS:
        if name in options:
            options[name] = str((base / options[name]).resolve())
    raw["options"] = options
    return TrainConfig(**raw)
