"""Checkpoint registry and safe loading of generator weights. No Django here.

syncmos never downloads weights. Every known checkpoint is a :class:`WeightsSpec`: the file the user
installs (under ``SYNCMOS_WEIGHTS_DIR``, default ``var/weights``), its architecture and config, its
layout (the authors' release, remapped by the architecture's ``remap_official``, or syncmos' own
format written by :func:`save_checkpoint`), and, where known, its sha256. Loading is
``torch.load(weights_only=True)`` or safetensors, onto the CPU in float32 unless asked otherwise, and
always ``strict``: a file for another architecture or with other shapes is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from generation import media, nets

LAYOUT_OFFICIAL = "official"
LAYOUT_SYNCMOS = "syncmos"
SYNCMOS_FORMAT = "syncmos-checkpoint-v1"


class WeightsError(Exception):
    """A checkpoint cannot be used; the message says what to do."""


class WeightsMissingError(WeightsError, FileNotFoundError):
    pass


class WeightsMismatchError(WeightsError, ValueError):
    pass


@dataclass(frozen=True)
class WeightsSpec:
    name: str
    architecture: str
    filename: str
    layout: str = LAYOUT_SYNCMOS
    config: str | dict = "default"
    sha256: str = ""
    source: str = ""
    description: str = ""


REGISTRY: dict[str, WeightsSpec] = {}


def register(spec: WeightsSpec) -> WeightsSpec:
    if spec.layout not in (LAYOUT_OFFICIAL, LAYOUT_SYNCMOS):
        raise ValueError(f"unknown layout {spec.layout!r}")
    REGISTRY[spec.name] = spec
    return spec


register(WeightsSpec(
    name="wav2lip",
    architecture="wav2lip",
    filename="wav2lip.pth",
    layout=LAYOUT_OFFICIAL,
    source="the Wav2Lip authors' release (github.com/Rudrabha/Wav2Lip, README: 'Wav2Lip' checkpoint)",
    description="Wav2Lip generator trained on LRS2 with the expert lip-sync discriminator.",
))
register(WeightsSpec(
    name="wav2lip_gan",
    architecture="wav2lip",
    filename="wav2lip_gan.pth",
    layout=LAYOUT_OFFICIAL,
    source="the Wav2Lip authors' release (github.com/Rudrabha/Wav2Lip, README: 'Wav2Lip + GAN' checkpoint)",
    description="Wav2Lip generator trained with the visual-quality discriminator as well.",
))


def _register_demo_weights() -> None:
    """The tiny demo weights trained on the synthetic corpus (``make demo-weights``), committed in demo/weights/."""
    from generation.training import demo

    for entry in demo.manifest_entries():
        register(WeightsSpec(
            name=entry["name"],
            architecture=entry["architecture"],
            filename=str(demo.WEIGHTS_DIR / entry["file"]),
            layout=LAYOUT_SYNCMOS,
            sha256=entry["sha256"],
            source=f"this repository (demo/weights/, made by `{entry['command']}`)",
            description=(f"tiny {entry['architecture']} trained on the synthetic corpus for the demo "
                         f"({entry['iterations']} iterations, {entry['config']}); not a published model"),
        ))


_register_demo_weights()


def weights_dir() -> Path:
    return Path(os.environ.get("SYNCMOS_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "var" / "weights"))


def resolve_path(filename: str | os.PathLike) -> Path:
    path = Path(filename)
    return path if path.is_absolute() else weights_dir() / path


def missing_message(spec: WeightsSpec) -> str:
    path = resolve_path(spec.filename)
    where = f" Get it from {spec.source}." if spec.source else ""
    return (f"weights {spec.name!r} ({spec.architecture}) are not installed: expected the file {path}.{where} "
            f"syncmos never downloads weights; place the file there (or set SYNCMOS_WEIGHTS_DIR).")


def is_installed(spec: WeightsSpec) -> bool:
    return resolve_path(spec.filename).is_file()


def read_checkpoint(path: Path) -> dict:
    """The raw contents of a weight file, loaded without executing any pickled code."""
    if not path.is_file():
        raise WeightsMissingError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file, or one that needs arbitrary code to unpickle
        raise WeightsMismatchError(f"{path.name} is not a loadable PyTorch checkpoint: {exc}") from exc
    if not isinstance(contents, dict):
        raise WeightsMismatchError(f"{path.name} holds a {type(contents).__name__}, not a state dict")
    return contents


def strict_load(model: nn.Module, state_dict: dict, *, what: str, architecture: str) -> None:
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsMismatchError(f"{what} does not hold a state dict of tensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(f"{len(wrong_shape)} keys with other shapes (e.g. {k}: file "
                           f"{tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})")
        raise WeightsMismatchError(
            f"{what} does not fit the {architecture!r} architecture in this config: {'; '.join(details)}. "
            "Is it a checkpoint of another model or size?"
        )
    model.load_state_dict(state_dict, strict=True)


def build_and_load(path: Path, *, architecture: str, layout: str, config: str | dict = "default",
                   sha256: str = "", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A generator of ``architecture`` with the weights in ``path``, in eval mode on ``device``."""
    if not path.is_file():
        raise WeightsMissingError(
            f"checkpoint file not found: {path}. syncmos never downloads weights; install the file there."
        )
    if sha256 and media.sha256_file(path) != sha256:
        raise WeightsMismatchError(f"{path.name} has another sha256 than registered ({sha256[:12]}…): wrong or damaged file")
    contents = read_checkpoint(path)
    arch = nets.get_architecture(architecture)
    if layout == LAYOUT_SYNCMOS:
        if contents.get("format") != SYNCMOS_FORMAT:
            raise WeightsMismatchError(f"{path.name} is not a syncmos checkpoint (no format {SYNCMOS_FORMAT!r})")
        if contents.get("architecture") != architecture:
            raise WeightsMismatchError(
                f"{path.name} is a {contents.get('architecture')!r} checkpoint, not {architecture!r}"
            )
        config = contents.get("config", config)
        state_dict = contents.get("state_dict")
    else:
        if arch.remap_official is None:
            raise WeightsMismatchError(f"the {architecture!r} architecture has no official checkpoint layout")
        try:
            state_dict = arch.remap_official(contents)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WeightsMismatchError(f"{path.name} is not in the authors' {architecture} layout: {exc}") from exc
    try:
        model = arch.build_generator(arch.config(config))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsMismatchError(f"{path.name}: its {architecture} config is not usable: {exc}") from exc
    strict_load(model, state_dict, what=path.name, architecture=architecture)
    return model.to(device=device, dtype=dtype).eval()


def load_registered(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise WeightsError(f"no registered weights named {name!r}; known: {sorted(REGISTRY)}") from None
    if not is_installed(spec):
        raise WeightsMissingError(missing_message(spec))
    return build_and_load(resolve_path(spec.filename), architecture=spec.architecture, layout=spec.layout,
                          config=spec.config, sha256=spec.sha256, device=device)


def load_cached(path: Path, *, architecture: str, layout: str, config: str | dict = "default", sha256: str = "",
                device: str = "cpu") -> nn.Module:
    """:func:`build_and_load`, but a worker keeps the last few models it loaded (it renders many clips
    with one). The file's size and modification time are part of the key, so a checkpoint replaced on
    disk is loaded (and its sha256 checked) again."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise WeightsMissingError(
            f"checkpoint file not found: {path}. syncmos never downloads weights; install the file there."
        ) from None
    return _cached(str(path), stat.st_size, stat.st_mtime_ns, architecture, layout,
                   json.dumps(config, sort_keys=True), sha256, device)


@functools.lru_cache(maxsize=4)
def _cached(path: str, size: int, mtime_ns: int, architecture: str, layout: str, config_json: str, sha256: str,
            device: str) -> nn.Module:
    return build_and_load(Path(path), architecture=architecture, layout=layout, config=json.loads(config_json),
                          sha256=sha256, device=device)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, architecture: str, config, extra: dict | None = None) -> Path:
    """Write a syncmos checkpoint: the architecture, its config and the state dict, loadable with
    ``torch.load(weights_only=True)`` (only tensors and plain Python values inside)."""
    config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    payload = {
        "format": SYNCMOS_FORMAT,
        "architecture": architecture,
        "config": config_dict,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path
