"""Loading the FID Inception weights (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``). No Django here.

syncmos never downloads weights. The file FID needs is pytorch-fid's release (TensorFlow's
``inception-2015-12-05`` graph ported to torchvision's Inception-v3 layout, research notes metrics_models.md §5.1):

    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

pytorch-fid caches it with torch hub, so a machine that has run pytorch-fid already has it under
``~/.cache/torch/hub/checkpoints/``; copy it to ``SYNCMOS_WEIGHTS_DIR`` (default ``var/weights``,
:func:`generation.weights.weights_dir`). It is read with ``torch.load(weights_only=True)`` onto the CPU and loaded
*strictly* into :class:`generation.nets.inception_fid.FIDInceptionV3` (every key and shape of the released layout,
``fc`` included).

UNVERIFIED: whether the released file holds the 94 BatchNorm ``num_batches_tracked`` counters (it was saved in
2019/2020; pytorch-fid's own strict load works either way, because torch fills them in for state dicts saved before
they existed). A file that lacks exactly those counters and nothing else is accepted, the counters set to 0 (they
play no part in eval mode); any other difference is refused. The ``6726825d`` in the name is torch hub's
convention (the first hex digits of the file's sha256); a file whose sha256 does not start with it is used but
logged as a WARNING, as pytorch-fid itself does not check it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from generation import media, weights
from generation.nets import inception_fid
from generation.weights import WeightsMismatchError, WeightsMissingError

log = logging.getLogger(__name__)

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
BATCH_COUNTER_SUFFIX = ".num_batches_tracked"


def fid_weights_path() -> Path:
    return weights.weights_dir() / FID_WEIGHTS_FILENAME


def missing_message(path: Path) -> str:
    return (f"the FID Inception weights are not installed: expected the file {path}. Download "
            f"{FID_WEIGHTS_FILENAME} from {FID_WEIGHTS_URL} (pytorch-fid's release; a machine that ran pytorch-fid "
            f"has it in ~/.cache/torch/hub/checkpoints/) and place it there, or set SYNCMOS_WEIGHTS_DIR to the "
            f"folder that holds it. syncmos never downloads weights.")


def read_fid_state_dict(path: str | os.PathLike | None = None, *,
                        config: inception_fid.InceptionFIDConfig = inception_fid.DEFAULT) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (default :func:`fid_weights_path`), checked against the released layout.

    Raises WeightsMissingError (naming the file and where it comes from) when it is missing, WeightsMismatchError
    when it is not loadable with ``weights_only=True`` or not the FID Inception layout. Missing BatchNorm
    ``num_batches_tracked`` counters (all of them, and nothing else) are filled with 0 (module docstring).
    """
    path = Path(path) if path is not None else fid_weights_path()
    if not path.is_file():
        raise WeightsMissingError(missing_message(path))
    state = weights.read_checkpoint(path)
    layout = inception_fid.official_layout(config)
    counters = {key for key in layout if key.endswith(BATCH_COUNTER_SUFFIX)}
    if set(layout) - set(state) == counters and not set(state) - set(layout):
        state = {**state, **{key: torch.tensor(0, dtype=torch.long) for key in counters}}
    return state


def _warn_if_not_released(path: Path) -> None:
    digest = media.sha256_file(path)
    if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
        log.warning("%s: its sha256 (%s…) does not start with %s as the released file's name says; it has the right "
                    "layout and is used, but FID values may differ from pytorch-fid's", path, digest[:12],
                    FID_WEIGHTS_SHA256_PREFIX)


def build_fid_inception(path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                        config: inception_fid.InceptionFIDConfig = inception_fid.DEFAULT,
                        check_hash: bool = True) -> inception_fid.FIDInceptionV3:
    """A fresh FID Inception with the weights in ``path``: frozen (no parameter gradients), eval mode, on
    ``device``. Uncached; :func:`load_fid_inception` is the cached entry point."""
    path = Path(path) if path is not None else fid_weights_path()
    state = read_fid_state_dict(path, config=config)
    with torch.random.fork_rng(devices=[]):  # building must not shift the caller's seeded random stream
        model = inception_fid.FIDInceptionV3(config)
    weights.strict_load(model, state, what=path.name, architecture="inception_fid")
    if check_hash and config == inception_fid.DEFAULT:
        _warn_if_not_released(path)
    return model.requires_grad_(False).to(device).eval()


def load_fid_inception(device: str | torch.device = "cpu", *, path: str | os.PathLike | None = None,
                       config: inception_fid.InceptionFIDConfig = inception_fid.DEFAULT,
                       ) -> inception_fid.FIDInceptionV3:
    """The FID Inception with pytorch-fid's released weights (default: ``SYNCMOS_WEIGHTS_DIR/`` +
    :data:`FID_WEIGHTS_FILENAME`), frozen, in eval mode, on ``device``.

    A process keeps the last few loaded models, keyed by the file's path, size and modification time (as
    :func:`generation.weights.load_cached`), so a replaced file is read again. The returned module is shared:
    do not modify it.

    Raises
    ------
    WeightsMissingError
        The file is not installed; the message names it and its download address.
    WeightsMismatchError
        The file is not pytorch-fid's Inception layout (or not loadable with ``weights_only=True``).
    """
    path = Path(path) if path is not None else fid_weights_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise WeightsMissingError(missing_message(path)) from None
    return _cached(str(path), stat.st_size, stat.st_mtime_ns, str(torch.device(device)), config)


@functools.lru_cache(maxsize=2)
def _cached(path: str, size: int, mtime_ns: int, device: str,
            config: inception_fid.InceptionFIDConfig) -> inception_fid.FIDInceptionV3:
    return build_fid_inception(path, device=device, config=config)


__all__ = ["FID_WEIGHTS_FILENAME", "FID_WEIGHTS_URL", "WeightsMismatchError", "WeightsMissingError",
           "build_fid_inception", "fid_weights_path", "load_fid_inception", "read_fid_state_dict"]
