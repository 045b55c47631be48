"""What one training iteration of each model family does, as its paper or official code defines it.

A :class:`Family` owns the networks and optimizers of one run and knows
* the data windows it needs (:meth:`Family.window_spec`),
* one iteration (:meth:`Family.train_step`, returning the losses to log),
* an evaluation on a fixed validation batch (SSIM/PSNR of generated against true faces, sync losses),
* the extra state an exact resume needs (e.g. Wav2Lip's sync-loss weight) and
* the checkpoints it leaves behind for inference or for the next stage (:meth:`Family.export`).

The families themselves live in ``syncnets``, ``wav2lip``, ``lipgan``, ``attn_wav2lip`` and ``stabsync``; they
register here. Batches come from :class:`generation.training.dataset.LipSyncDataset`: ``faces``, ``reference``,
``shifted_faces`` (B, T, 3, S, S) in [0, 1], ``mel`` (B, 1, 80, 16) for the T-frame block, ``frame_mels``
(B, T, 1, 80, W) per frame, ``shift`` (B,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from generation.metrics.image import mean_finite, psnr, ssim
from generation.training.config import ConfigError

FAMILIES: dict[str, type[Family]] = {}


def register(family: type[Family]) -> type[Family]:
    FAMILIES[family.name] = family
    return family


class Family:
    name: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, Any]] = {}
    required_options: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(self, config, device: torch.device):
        self.config = config
        self.device = device
        self.options = {**self.option_defaults, **config.options}
        self.modules: dict[str, nn.Module] = {}  # trained (and saved in training checkpoints)
        self.frozen: dict[str, nn.Module] = {}  # loaded from other runs' files, never updated
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @classmethod
    def check_options(cls, options: dict) -> None:
        unknown = sorted(set(options) - set(cls.option_defaults) - set(cls.required_options))
        if unknown:
            known = sorted({*cls.option_defaults, *cls.required_options})
            raise ConfigError(f"family {cls.name!r} has no options {unknown}; known: {known}")
        missing = [name for name in cls.required_options if not options.get(name)]
        if missing:
            raise ConfigError(f"family {cls.name!r} needs the options {missing}")

    # -- to be provided by each family -------------------------------------------------------------------------

    def window_spec(self):
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def export(self, output_dir: Path) -> list[Path]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Plain values (not tensors) besides the networks and optimizers that an exact resume needs."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def train_mode(self) -> None:
        for module in self.modules.values():
            module.train()
        for module in self.frozen.values():
            module.eval()

    def eval_mode(self) -> None:
        for module in [*self.modules.values(), *self.frozen.values()]:
            module.eval()

    def adam(self, parameters: Iterable[nn.Parameter], betas: tuple[float, float]) -> torch.optim.Adam:
        return torch.optim.Adam(parameters, lr=self.config.lr, betas=betas)

    def freeze(self, name: str, module: nn.Module) -> nn.Module:
        module = module.to(self.device).eval()
        module.requires_grad_(False)
        self.frozen[name] = module
        return module


def channels_first_in_time(faces: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, S, S) as the dataset gives them -> (B, 3, T, S, S) as Wav2Lip's networks take sequences."""
    return faces.permute(0, 2, 1, 3, 4)


def image_quality(generated: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """SSIM and PSNR of generated against true faces, (N, 3, S, S) or (B, 3, T, S, S), averaged over frames."""
    if generated.dim() == 5:
        generated = generated.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*T, 3, S, S)
        target = target.permute(0, 2, 1, 3, 4).flatten(0, 1)
    generated, target = generated.float().clamp(0, 1), target.float()
    return {"ssim": float(ssim(generated, target).mean()), "psnr": mean_finite(psnr(generated, target))}


def value(tensor: torch.Tensor | float) -> float:
    return float(tensor.detach()) if isinstance(tensor, torch.Tensor) else float(tensor)


def alternating_labels(batch: int, device) -> torch.Tensor:
    """1, 0, 1, 0, ...: half the pairs of a sync batch in sync, half shifted (balanced in every batch)."""
    return (torch.arange(batch, device=device) % 2 == 0).float()


def named_config(configs: dict, config_class: type, name_or_values):
    """A named config ("tiny", "default") or a table of fields replacing some of the default's."""
    if isinstance(name_or_values, str):
        if name_or_values not in configs:
            raise ConfigError(f"model_config must be one of {sorted(configs)} or a table, not {name_or_values!r}")
        return configs[name_or_values]
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(name_or_values) - fields)
    if unknown:
        raise ConfigError(f"{config_class.__name__} has no fields {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in name_or_values.items()}
    return dataclasses.replace(configs["default"], **values)


def _import_families() -> None:
    from generation.training import attn_wav2lip, lipgan, stabsync, syncnet_lse, syncnets, wav2lip  # noqa: F401


def get_family(name: str) -> type[Family]:
    _import_families()
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown family {name!r}; known: {sorted(FAMILIES)}") from None

