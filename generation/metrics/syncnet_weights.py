"""Weights of the sync critics the lip-sync metrics use: SyncNet ``S`` (LSE) and AVSyncNet (AVS). No Django.

syncmos never downloads weights (shared/research/metrics_models.md §1.2):

* ``syncnet_v2.model`` — the official SyncNet, from syncnet_python's ``download_model.sh``
  (:data:`SYNCNET_V2_URL`); install it as ``<SYNCMOS_WEIGHTS_DIR>/syncnet_v2.model``. The file is a flat
  name -> tensor state dict (not a pickled module), read with ``torch.load(weights_only=True)``.
  syncnet_python's ``loadParameters`` copies it into ``S`` entry by entry, by name, with no strict check; here the
  load is strict (every key of ``S``, nothing else, every shape), except that missing BatchNorm
  ``num_batches_tracked`` counters are accepted: the file may predate them (PyTorch 0.4.1), and in eval mode they
  are never read.
* A syncmos checkpoint (``generation.weights.save_checkpoint`` with architecture ``syncnet_v2``), e.g. the tiny
  demo SyncNet ``demo/weights/syncnet_v2_tiny.pt`` trained by ``generation.training.syncnet_lse``: the config
  comes from the file, the load is strict.
* ``avsyncnet.pt`` — an AVSyncNet expert checkpoint as the ``avsyncnet`` training family exports it
  (``generation.training.experts.save_expert``; ``var/train/runs/avsyncnet/avsyncnet.pt`` after
  ``manage.py train configs/demo/avsyncnet.toml``); install it as ``<SYNCMOS_WEIGHTS_DIR>/avsyncnet.pt``. No
  published AVSyncNet weights exist (the paper's authors released none); the stabilized-sync demo checkpoint
  holds only AVSyncNet's frozen audio encoder, not its image encoder, so it cannot stand in.

Loaded models are cached per (path, size, modification time, device), like ``generation.weights.load_cached``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from torch import nn

from generation import weights
from generation.nets import syncnet

SYNCNET_V2_FILE = "syncnet_v2.model"
SYNCNET_V2_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
AVSYNCNET_FILE = "avsyncnet.pt"
REPO = Path(__file__).resolve().parents[2]
DEMO_SYNCNET_V2_TINY = REPO / "demo" / "weights" / "syncnet_v2_tiny.pt"
_BATCH_COUNTER = "num_batches_tracked"


def syncnet_v2_path() -> Path:
    return weights.weights_dir() / SYNCNET_V2_FILE


def avsyncnet_path() -> Path:
    return weights.weights_dir() / AVSYNCNET_FILE


def syncnet_v2_missing_message(path: Path) -> str:
    return (f"the SyncNet weights {SYNCNET_V2_FILE} are not installed: expected the file {path}. Get it from "
            f"{SYNCNET_V2_URL} (joonson/syncnet_python download_model.sh). syncmos never downloads weights; place "
            f"the file there (or set SYNCMOS_WEIGHTS_DIR).")


def avsyncnet_missing_message(path: Path) -> str:
    return (f"the AVSyncNet weights {AVSYNCNET_FILE} are not installed: expected the file {path}. No published "
            f"AVSyncNet weights exist; train one (`manage.py train configs/demo/avsyncnet.toml` writes "
            f"var/train/runs/avsyncnet/avsyncnet.pt) and copy it there (or set SYNCMOS_WEIGHTS_DIR).")


def official_state_dict(model: nn.Module, contents: dict) -> dict:
    """The official flat state dict completed with the model's own ``num_batches_tracked`` counters where the
    file has none (the only keys syncnet_python's copy-by-name load may leave untouched)."""
    own = model.state_dict()
    completed = dict(contents)
    for key, value in own.items():
        if key.endswith(_BATCH_COUNTER) and key not in completed:
            completed[key] = value.clone()
    return completed


def build_syncnet_from_file(path: Path) -> syncnet.SyncNetV2:
    """``S`` with the weights in ``path`` (official flat state dict or syncmos checkpoint), eval mode, CPU."""
    contents = weights.read_checkpoint(path)  # WeightsMissingError / WeightsMismatchError
    if contents.get("format") == weights.SYNCMOS_FORMAT:
        if contents.get("architecture") != syncnet.ARCHITECTURE_NAME:
            raise weights.WeightsMismatchError(
                f"{path.name} is a {contents.get('architecture')!r} checkpoint, not {syncnet.ARCHITECTURE_NAME!r}")
        from generation.training.experts import config_from_dict

        config = config_from_dict(syncnet.SyncNetV2Config, contents.get("config", {}))
        model = syncnet.build_syncnet_v2(config)
        state = contents.get("state_dict")
    else:
        model = syncnet.build_syncnet_v2(syncnet.SYNCNET_V2_DEFAULT)
        state = official_state_dict(model, contents)
    weights.strict_load(model, state, what=path.name, architecture=syncnet.ARCHITECTURE_NAME)
    return model.eval()


def load_syncnet(path: str | Path, *, device: str = "cpu") -> syncnet.SyncNetV2:
    """A SyncNet from any file :func:`build_syncnet_from_file` reads, cached; WeightsMissingError when absent."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise weights.WeightsMissingError(f"SyncNet checkpoint file not found: {path}") from None
    return _cached_syncnet(str(path), stat.st_size, stat.st_mtime_ns, str(device))


@functools.lru_cache(maxsize=4)
def _cached_syncnet(path: str, size: int, mtime_ns: int, device: str) -> syncnet.SyncNetV2:
    return build_syncnet_from_file(Path(path)).to(device)


def load_syncnet_v2(path: str | Path | None = None, device: str = "cpu") -> syncnet.SyncNetV2:
    """The official SyncNet (``syncnet_v2.model`` in the weights folder unless ``path`` is given), eval mode.

    Raises ``generation.weights.WeightsMissingError`` naming the file and its official URL when it is absent,
    ``WeightsMismatchError`` when it does not fit ``S``.
    """
    path = Path(path) if path is not None else syncnet_v2_path()
    if not path.is_file():
        raise weights.WeightsMissingError(syncnet_v2_missing_message(path))
    return load_syncnet(path, device=device)


def load_demo_syncnet_v2_tiny(device: str = "cpu") -> syncnet.SyncNetV2:
    """The tiny SyncNet committed in demo/weights/ (trained on the synthetic corpus; not a published model)."""
    if not DEMO_SYNCNET_V2_TINY.is_file():
        raise weights.WeightsMissingError(
            f"the tiny demo SyncNet {DEMO_SYNCNET_V2_TINY} is missing: train it with "
            f"`manage.py train configs/demo/syncnet_v2.toml` (see docs/training.md)")
    return load_syncnet(DEMO_SYNCNET_V2_TINY, device=device)


def load_avsyncnet(path: str | Path | None = None, device: str = "cpu") -> nn.Module:
    """An AVSyncNet expert checkpoint (``avsyncnet.pt`` in the weights folder unless ``path`` is given), cached.

    Raises WeightsMissingError naming the file (and how to make one) when it is absent.
    """
    path = Path(path) if path is not None else avsyncnet_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise weights.WeightsMissingError(avsyncnet_missing_message(path)) from None
    return _cached_avsyncnet(str(path), stat.st_size, stat.st_mtime_ns, str(device))


@functools.lru_cache(maxsize=2)
def _cached_avsyncnet(path: str, size: int, mtime_ns: int, device: str) -> nn.Module:
    from generation.training.experts import load_expert

    return load_expert(Path(path), kind="avsyncnet").to(device).eval()


def clear_cache() -> None:
    _cached_syncnet.cache_clear()
    _cached_avsyncnet.cache_clear()


__all__ = [
    "SYNCNET_V2_FILE", "SYNCNET_V2_URL", "AVSYNCNET_FILE", "DEMO_SYNCNET_V2_TINY", "syncnet_v2_path",
    "avsyncnet_path", "official_state_dict", "build_syncnet_from_file", "load_syncnet", "load_syncnet_v2",
    "load_demo_syncnet_v2_tiny", "load_avsyncnet", "clear_cache",
]
