"""Saving and loading the networks one training stage hands to the next (sync experts, G_S).

Generators for inference are written with :func:`generation.weights.save_checkpoint` (their architecture is
registered for the pipeline). The other networks — Wav2Lip's expert SyncNet, AVSyncNet, the stabilized-sync
model's silent-lip generator — use the same syncmos checkpoint format under their own names, and are loaded
strictly here, with the config stored in the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from generation import weights
from generation.nets import avsyncnet, stabsync, wav2lip_syncnet

# name in the file -> (config class, builder)
EXPERTS: dict[str, tuple[type, Callable[[object], nn.Module]]] = {
    "wav2lip_syncnet": (wav2lip_syncnet.SyncNetColorConfig, wav2lip_syncnet.build_syncnet_color),
    "avsyncnet": (avsyncnet.AVSyncNetConfig, avsyncnet.build_avsyncnet),
    "stabsync_silent_generator": (stabsync.StabSyncConfig, stabsync.TalkingFaceGenerator),
}


def config_from_dict(config_class: type, values: dict):
    """A frozen config dataclass from its JSON/TOML form (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise weights.WeightsMismatchError(f"{config_class.__name__} has no fields {unknown}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def save_expert(path: Path, module: nn.Module, *, kind: str, config) -> Path:
    if kind not in EXPERTS:
        raise ValueError(f"unknown network kind {kind!r}; known: {sorted(EXPERTS)}")
    return weights.save_checkpoint(path, module, architecture=kind, config=config)


def load_expert(path: str | Path, *, kind: str) -> nn.Module:
    """The network saved by :func:`save_expert`, strictly loaded, on the CPU, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise weights.WeightsMissingError(
            f"the {kind} checkpoint {path} does not exist: train it first (see docs/training.md) or fix the path")
    contents = weights.read_checkpoint(path)
    if contents.get("format") != weights.SYNCMOS_FORMAT or contents.get("architecture") != kind:
        raise weights.WeightsMismatchError(
            f"{path.name} is not a syncmos {kind} checkpoint (it says {contents.get('architecture')!r})")
    config_class, build = EXPERTS[kind]
    config = config_from_dict(config_class, contents.get("config", {}))
    module = build(config)
    weights.strict_load(module, contents.get("state_dict"), what=path.name, architecture=kind)
    return module.eval()
