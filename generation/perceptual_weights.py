"""Loading the perceptual backbones (VGG-16, VGG-19, AlexNet) and the LPIPS heads. No Django here.

syncmos never downloads weights (and torchvision is not usable here: environment.md §1, §5), so the files the
perceptual losses and the LPIPS metric need are installed by hand:

* vgg16: ``vgg16-397923af.pth`` from https://download.pytorch.org/models/vgg16-397923af.pth (528 MiB)
* vgg19: ``vgg19-dcbb9e9d.pth`` from https://download.pytorch.org/models/vgg19-dcbb9e9d.pth (548 MiB)
* alexnet: ``alexnet-owt-7be5be79.pth`` from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (233 MiB)

These are torchvision's ImageNet weights (``IMAGENET1K_V1``), the same files torch hub caches under
``~/.cache/torch/hub/checkpoints/``; copying them from such a cache works. ``SYNCMOS_WEIGHTS_DIR`` defaults to
``var/weights`` (:func:`generation.weights.weights_dir`).

How a backbone file is loaded
-----------------------------
``torch.load(weights_only=True)`` onto the CPU, then *strictly*: the file must hold exactly torchvision's keys
and shapes, either the whole net (``features.*`` + ``classifier.*``, as released) or only ``features.*``. The
perceptual nets keep only ``features`` (the classifier is 120M of vgg19's 144M parameters and no loss uses it),
so the ``classifier.*`` tensors of a complete file are checked and then dropped; ask for ``classifier=True`` to
keep them. The hexadecimal part of the official names is, by torch hub's naming convention, the start of the
file's sha256; a file that does not match it is loaded (its shapes are right) with a WARNING that it is not
the released one.

The LPIPS heads
---------------
The linear heads come with the PyPI package ``lpips`` 0.1.4 (``lpips/weights/v0.1/{alex,vgg}.pth``), which the
Makefile installs with ``--no-deps`` (its metadata requires torchvision). The package is never imported (its
``__init__`` imports torchvision): :func:`lpips_heads_path` only locates its folder with
``importlib.util.find_spec``.

Random backbones
----------------
By default a missing backbone is an error (:class:`~generation.weights.WeightsMissingError` naming the file to
install). Only a caller that passes ``allow_random_backbone=True`` to :func:`build_perceptual` gets a randomly
initialised backbone instead, from a fixed seed, with a WARNING in the log: a perceptual loss on random features
still penalises structural differences, but it is not the published loss (training the offline demo weights
needs it).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from generation import media, weights
from generation.nets import alexnet as alexnet_nets
from generation.nets import lpips as lpips_nets
from generation.nets import vgg as vgg_nets
from generation.weights import WeightsError, WeightsMismatchError, WeightsMissingError

log = logging.getLogger(__name__)

RANDOM_BACKBONE_SEED = 0
LPIPS_PACKAGE = "lpips"
LPIPS_PACKAGE_VERSION = "0.1.4"
LPIPS_HEADS_DIR = ("weights", "v0.1")  # inside the installed package folder
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")  # torch hub's "name-<sha256 prefix>.ext"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    filename: str
    family: str  # "vgg" or "alexnet"
    config: object
    source: str


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        BackboneSpec("vgg16", "vgg16-397923af.pth", "vgg", vgg_nets.VGG16,
                     "https://download.pytorch.org/models/vgg16-397923af.pth (torchvision vgg16, IMAGENET1K_V1)"),
        BackboneSpec("vgg19", "vgg19-dcbb9e9d.pth", "vgg", vgg_nets.VGG19,
                     "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth (torchvision vgg19, IMAGENET1K_V1)"),
        BackboneSpec("alexnet", "alexnet-owt-7be5be79.pth", "alexnet", alexnet_nets.ALEXNET,
                     "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision alexnet, "
                     "IMAGENET1K_V1)"),
    )
}
LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}  # LPIPS net -> backbone file
PERCEPTUAL_NAMES = (*BACKBONES, "lpips_alex", "lpips_vgg")


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise WeightsError(f"no perceptual backbone named {name!r}; known: {sorted(BACKBONES)}") from None


def backbone_path(name: str) -> Path:
    """Where the backbone file is expected: ``SYNCMOS_WEIGHTS_DIR/<official file name>``."""
    return weights.resolve_path(backbone_spec(name).filename)


def missing_backbone_message(name: str, path: Path | None = None) -> str:
    spec = backbone_spec(name)
    path = path or backbone_path(name)
    return (f"perceptual backbone {name!r} is not installed: expected the file {spec.filename} at {path}. "
            f"Get it from {spec.source} (or copy it from a torch hub cache, ~/.cache/torch/hub/checkpoints/) and "
            f"place it there, or set SYNCMOS_WEIGHTS_DIR to the folder that holds it. syncmos never downloads "
            f"weights.")


def build_backbone(name: str, *, config=None, taps: tuple[str, ...] | None = None, normalize_input: bool = True,
                   classifier: bool = False, init_weights: bool = True) -> nn.Module:
    """The backbone module with freshly initialised weights (from the current RNG state); no file involved.

    ``config`` replaces the released widths (a narrower net of the same layout, e.g. in tests).
    ``init_weights=False`` skips VGG's torchvision initialisation (AlexNet has only PyTorch's default one),
    for nets whose weights are about to be replaced.
    """
    spec = backbone_spec(name)
    config = config or spec.config
    if spec.family == "vgg":
        return vgg_nets.VGG(config, taps=taps, normalize_input=normalize_input, classifier=classifier,
                            init_weights=init_weights)
    return alexnet_nets.AlexNet(config, taps=taps, normalize_input=normalize_input, classifier=classifier)


def official_layout(name: str, *, config=None, classifier: bool = True) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the backbone's state dict, by default of the whole torchvision net (what the released
    file holds). Built on the meta device, so even vgg19 costs no memory."""
    with torch.device("meta"):  # (no init: normal_ on meta tensors is slow the first time, and pointless)
        model = build_backbone(name, config=config, classifier=classifier, init_weights=False)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _a_few(items, n: int = 4) -> str:
    items = sorted(items)
    return ", ".join(items[:n]) + (f", … ({len(items)} in all)" if len(items) > n else "") if items else "none"


def _warn_if_not_released(path: Path) -> None:
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    digest = media.sha256_file(path)
    if not digest.startswith(match.group(1)):
        log.warning("%s: its sha256 (%s…) does not start with the %s in its name, so it is not the released file "
                    "(a re-saved or fine-tuned copy?); its shapes are right and it is used, but perceptual numbers "
                    "may differ from the published ones", path, digest[:12], match.group(1))


def read_backbone_state_dict(name: str, path: str | os.PathLike | None = None, *, config=None,
                             check_hash: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of a backbone file, checked against torchvision's layout.

    Accepts exactly the whole net's keys and shapes (``features.*`` + ``classifier.*``, as released) or exactly
    the ``features.*`` part. Raises WeightsMissingError (naming the file to install) when the file is missing and
    WeightsMismatchError when it is not loadable with ``weights_only=True`` or has other keys or shapes.
    """
    spec = backbone_spec(name)
    path = Path(path) if path is not None else backbone_path(name)
    if not path.is_file():
        raise WeightsMissingError(missing_backbone_message(name, path))
    state = weights.read_checkpoint(path)  # torch.load(weights_only=True) on the CPU; WeightsMismatchError if not
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path.name} is not a flat state dict of tensors; expected torchvision's "
                                   f"{spec.filename}")
    full = official_layout(name, config=config, classifier=True)
    features = {k: v for k, v in full.items() if k.startswith("features.")}
    layout = full if any(k.startswith("classifier.") for k in state) else features
    missing, unexpected = set(layout) - set(state), set(state) - set(layout)
    wrong = [f"{k} {tuple(state[k].shape)} (expected {layout[k]})"
             for k in sorted(set(layout) & set(state)) if tuple(state[k].shape) != layout[k]]
    if missing or unexpected or wrong:
        raise WeightsMismatchError(
            f"{path.name} is not torchvision's {name} (expected the layout of {spec.filename}): missing keys: "
            f"{_a_few(missing)}; unexpected keys: {_a_few(unexpected)}; other shapes: {_a_few(wrong, 2)}"
        )
    if check_hash:
        _warn_if_not_released(path)
    return state


def _rng_untouched():
    # Building a module draws its default initialisation from the global RNG; building a loss must not shift the
    # caller's (seeded) random stream, whether the weights then come from a file or from a fixed seed.
    return torch.random.fork_rng(devices=[])


def _frozen(model: nn.Module, device) -> nn.Module:
    # A perceptual loss is a fixed function of its input: no parameter gradients (they would only cost memory
    # and time), eval mode. Gradients still flow to the input.
    return model.requires_grad_(False).to(device).eval()


def load_backbone(name: str, *, path: str | os.PathLike | None = None, config=None,
                  taps: tuple[str, ...] | None = None, normalize_input: bool = True, classifier: bool = False,
                  device: str | torch.device = "cpu", check_hash: bool = True) -> nn.Module:
    """The released backbone ``name`` ("vgg16", "vgg19" or "alexnet"), frozen, in eval mode, on ``device``.

    Reads ``path`` (default :func:`backbone_path`) with :func:`read_backbone_state_dict`, drops the
    ``classifier.*`` tensors unless ``classifier=True``, and loads strictly. The module returns the activations
    at ``taps`` (default: the last ReLU of each block for VGG, relu1..relu5 for AlexNet) of [0, 1] RGB inputs,
    ImageNet-normalised inside unless ``normalize_input=False``.
    """
    state = read_backbone_state_dict(name, path, config=config, check_hash=check_hash)
    has_classifier = any(k.startswith("classifier.") for k in state)
    if classifier and not has_classifier:
        raise WeightsMismatchError(f"{Path(path or backbone_path(name)).name} holds only the features of {name}, "
                                   "not its classifier (classifier=True needs the complete released file)")
    if not classifier:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    with _rng_untouched():
        model = build_backbone(name, config=config, taps=taps, normalize_input=normalize_input,
                               classifier=classifier, init_weights=False)
    model.load_state_dict(state, strict=True)
    return _frozen(model, device)


def _random_backbone(name: str, *, seed: int, reason: str, **kwargs) -> nn.Module:
    with _rng_untouched():
        torch.manual_seed(seed)
        model = build_backbone(name, **kwargs)
    log.warning(
        "perceptual backbone %r is RANDOMLY INITIALISED (seed %d) because %s. The perceptual loss/metric computed "
        "with it is NOT the published one; install %s in %s for that.",
        name, seed, reason, backbone_spec(name).filename, weights.weights_dir(),
    )
    return model


# ---------------------------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------------------------


def _lpips_package_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec(LPIPS_PACKAGE)  # locates, does not import (the package imports torchvision)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def lpips_heads_path(net: str = "alex") -> Path:
    """``<installed lpips package>/weights/v0.1/<net>.pth``; WeightsMissingError with the install command if the
    package (or the file in it) is not there."""
    if net not in lpips_nets.NETS:
        raise WeightsError(f"LPIPS net must be one of {lpips_nets.NETS}, not {net!r}")
    package = _lpips_package_dir()
    install = (f"install it with `pip install --no-deps {LPIPS_PACKAGE}=={LPIPS_PACKAGE_VERSION}` (`make install` "
               "does; never without --no-deps, it would pull torchvision and a CUDA torch), or pass the heads file "
               "explicitly")
    if package is None:
        raise WeightsMissingError(f"the LPIPS heads come with the Python package {LPIPS_PACKAGE!r}, which is not "
                                  f"installed: {install}.")
    path = package.joinpath(*LPIPS_HEADS_DIR, f"{net}.pth")
    if not path.is_file():
        raise WeightsMissingError(f"the installed {LPIPS_PACKAGE!r} package has no {path}; is it version "
                                  f"{LPIPS_PACKAGE_VERSION}? {install[0].upper()}{install[1:]}.")
    return path


def read_lpips_heads(net: str = "alex", path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The heads state dict ``{lin{k}.model.1.weight: (1, C_k, 1, 1)}`` of a v0.1 heads file (default: the one
    of the installed ``lpips`` package), read with ``weights_only=True`` and checked against the released
    channels of ``net``."""
    path = Path(path) if path is not None else lpips_heads_path(net)
    if not path.is_file():
        raise WeightsMissingError(f"LPIPS heads file not found: {path}")
    state = weights.read_checkpoint(path)
    expected = lpips_nets.heads_layout(lpips_nets.LPIPSConfig(net))
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in state.items()}
    if found != expected:
        raise WeightsMismatchError(f"{path} does not hold the LPIPS v0.1 heads of net={net!r}: expected {expected}, "
                                   f"found {found}")
    return state


def load_lpips(net: str = "alex", *, backbone_path: str | os.PathLike | None = None,
               heads_path: str | os.PathLike | None = None, spatial: bool = False,
               device: str | torch.device = "cpu", check_hash: bool = True) -> lpips_nets.LPIPS:
    """LPIPS v0.1 with the released backbone (``alexnet-owt-7be5be79.pth`` for ``net="alex"``,
    ``vgg16-397923af.pth`` for ``net="vgg"``, from SYNCMOS_WEIGHTS_DIR unless ``backbone_path``) and the released
    heads (from the ``lpips`` package unless ``heads_path``). Frozen, eval mode, on ``device``.

    The module takes inputs in [-1, 1] (or [0, 1] with ``normalize=True``), see
    :class:`generation.nets.lpips.LPIPS`.
    """
    heads = read_lpips_heads(net, heads_path)
    backbone = read_backbone_state_dict(LPIPS_BACKBONES[net], backbone_path, check_hash=check_hash)
    with _rng_untouched():
        model = lpips_nets.LPIPS(lpips_nets.LPIPSConfig(net), spatial=spatial)
    model.net.load_state_dict({k: v for k, v in backbone.items() if k.startswith("features.")}, strict=True)
    model.load_heads(heads)
    return _frozen(model, device)


# ---------------------------------------------------------------------------------------------------------------
# The entry point for losses and metrics
# ---------------------------------------------------------------------------------------------------------------


def build_perceptual(name: str, *, pretrained: bool = True, allow_random_backbone: bool = False,
                     seed: int = RANDOM_BACKBONE_SEED, path: str | os.PathLike | None = None,
                     taps: tuple[str, ...] | None = None, spatial: bool = False,
                     device: str | torch.device = "cpu") -> nn.Module:
    """A frozen perceptual network for a loss or a metric.

    Parameters
    ----------
    name : str
        ``"vgg16"``, ``"vgg19"``, ``"alexnet"`` (feature extractors: [0, 1] RGB in, {tap: activation} out) or
        ``"lpips_alex"``, ``"lpips_vgg"`` (LPIPS v0.1: two images in [-1, 1] in, (N, 1, 1, 1) distances out).
    pretrained : bool
        Load the released backbone (default). ``False`` asks for a random backbone outright, which also needs
        ``allow_random_backbone=True``.
    allow_random_backbone : bool
        If the backbone file is not installed (or ``pretrained=False``), build the backbone randomly from
        ``seed`` and log a WARNING that the loss is not the published one, instead of raising. Default False:
        refuse. It does not cover a file that is present but wrong (always an error), nor the LPIPS heads.
    seed : int
        Seed of the random backbone (fixed, so every run of a training recipe gets the same loss).
    path : path, optional
        The backbone file, instead of ``SYNCMOS_WEIGHTS_DIR/<official name>``.
    taps : tuple of str, optional
        Feature-extractor taps (not for LPIPS, whose taps are fixed).
    spatial : bool
        LPIPS only: return the (N, 1, H, W) distance map.

    Raises
    ------
    WeightsMissingError
        The backbone file (or the lpips package's heads) is missing and no random backbone was allowed.
    WeightsMismatchError
        The file is not torchvision's layout for this backbone.
    """
    if name not in PERCEPTUAL_NAMES:
        raise WeightsError(f"no perceptual network named {name!r}; known: {', '.join(PERCEPTUAL_NAMES)}")
    if not pretrained and not allow_random_backbone:
        raise ValueError(f"a random {name} backbone (pretrained=False) must be asked for explicitly with "
                         "allow_random_backbone=True; its loss is not the published perceptual loss")
    is_lpips = name.startswith("lpips_")
    if is_lpips and taps is not None:
        raise ValueError("LPIPS taps are fixed by the reference; taps= is for the feature extractors")
    if spatial and not is_lpips:
        raise ValueError("spatial= is an LPIPS option")
    backbone_name = LPIPS_BACKBONES[name.removeprefix("lpips_")] if is_lpips else name

    reason = None
    if not pretrained:
        reason = "pretrained=False was asked for"
    else:
        file = Path(path) if path is not None else backbone_path(backbone_name)
        if not file.is_file():
            if not allow_random_backbone:
                raise WeightsMissingError(missing_backbone_message(backbone_name, file))
            reason = f"{file} is not installed"

    if is_lpips:
        net = name.removeprefix("lpips_")
        if reason is None:
            return load_lpips(net, backbone_path=path, spatial=spatial, device=device)
        heads = read_lpips_heads(net)  # the heads are never random: missing heads are an error
        with _rng_untouched():
            model = lpips_nets.LPIPS(lpips_nets.LPIPSConfig(net), spatial=spatial)
        random_net = _random_backbone(backbone_name, seed=seed, reason=reason,
                                      taps=model.net.taps, normalize_input=False)
        model.net.load_state_dict(random_net.state_dict(), strict=True)
        model.load_heads(heads)
        return _frozen(model, device)

    if reason is None:
        return load_backbone(name, path=path, taps=taps, device=device)
    return _frozen(_random_backbone(name, seed=seed, reason=reason, taps=taps), device)
