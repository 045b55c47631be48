"""The bundled lip-sync networks, one architecture per module, each built from a config dataclass.

No Django here, and no weight loading (that is generation/weights.py) and no preprocessing (that is
generation/audio.py, generation/faces.py and generation/pipeline.py).

The generator contract
----------------------
Every *generator* the pipeline can run is an ``nn.Module`` with

* ``input_spec``: an :class:`InputSpec` saying what it expects (crop size, mel window, the order of the
  two face halves of its 6-channel input, colour order);
* ``forward(mel, faces) -> frames`` where
  ``mel``    is (B, 1, 80, input_spec.mel_frames) float32, the Wav2Lip-normalised log-mel window in [-4, 4];
  ``faces``  is (B, 6, S, S) float32 in [0, 1], S = input_spec.face_size: the masked target frame (lower
             half zeroed) and the reference frame, stacked in the order ``input_spec.face_order`` names;
  ``frames`` is (B, 3, S, S) float32 in [0, 1], the generated face in ``input_spec.color`` order.

Models with more parts (e.g. the stabilized-sync model's silent-lip generator in front of its talking-face
generator) wrap them so that the pipeline still sees this one forward.

The registry
------------
``ARCHITECTURES`` maps a name (the ``Condition.architecture`` / ``Checkpoint.architecture`` value) to an
:class:`Architecture`: its config class, its generator builder, named configs (``"default"`` is the
published one, ``"tiny"`` a small one for tests and CPU demos) and, where the authors released
weights, the key remapping that makes their file load strictly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

MASKED_FIRST = "masked_first"  # Wav2Lip: [masked target, reference]
REFERENCE_FIRST = "reference_first"  # LipGAN: [reference, masked target]


@dataclass(frozen=True)
class InputSpec:
    face_size: int = 96
    mel_frames: int = 16
    face_order: str = MASKED_FIRST
    color: str = "BGR"

    def __post_init__(self) -> None:
        if self.face_order not in (MASKED_FIRST, REFERENCE_FIRST):
            raise ValueError(f"face_order must be {MASKED_FIRST!r} or {REFERENCE_FIRST!r}, not {self.face_order!r}")
        if self.color not in ("BGR", "RGB"):
            raise ValueError(f"color must be 'BGR' or 'RGB', not {self.color!r}")


@dataclass(frozen=True)
class Architecture:
    name: str
    config_class: type
    build_generator: Callable[[Any], nn.Module]
    configs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # Turns the state dict of the authors' released checkpoint (after unwrapping it from its container)
    # into this module's key layout, for a strict load. None where no official checkpoint exists.
    remap_official: Callable[[dict], dict] | None = None

    def config(self, name_or_overrides: str | dict = "default"):
        """A named config, or the default config with some fields replaced (from a Checkpoint row)."""
        if isinstance(name_or_overrides, str):
            if name_or_overrides not in self.configs:
                raise KeyError(f"{self.name} has no config {name_or_overrides!r}; known: {sorted(self.configs)}")
            return self.configs[name_or_overrides]
        base = self.configs["default"]
        unknown = set(name_or_overrides) - {f.name for f in dataclasses.fields(base)}
        if unknown:
            raise KeyError(f"{self.name} config has no fields {sorted(unknown)}")
        # Stored configs come back from JSON with lists where the dataclass holds tuples.
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in name_or_overrides.items()}
        return dataclasses.replace(base, **values)


def mask_lower_half(faces: torch.Tensor) -> torch.Tensor:
    """A copy of (..., S, S) faces with rows S//2.. zeroed: the masked target whose mouth a generator fills in."""
    masked = faces.clone()
    masked[..., faces.shape[-2] // 2:, :] = 0
    return masked


def face_input(target: torch.Tensor, reference: torch.Tensor, face_order: str) -> torch.Tensor:
    """The 6-channel face input of the contract: (N, 3, S, S) target and reference -> (N, 6, S, S), the masked
    target and the reference stacked in ``face_order``."""
    masked = mask_lower_half(target)
    halves = (masked, reference) if face_order == MASKED_FIRST else (reference, masked)
    return torch.cat(halves, dim=1)


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    if architecture.name in ARCHITECTURES:
        raise ValueError(f"architecture {architecture.name!r} is already registered")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    _load_all()
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None


def list_architectures() -> list[str]:
    _load_all()
    return sorted(ARCHITECTURES)


def _load_all() -> None:
    """Import every module of this package once; generator modules register themselves on import."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
