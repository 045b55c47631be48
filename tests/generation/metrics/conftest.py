"""Shared by the metric tests: one torch thread, and short clips of a real face (skimage's astronaut)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata


@pytest.fixture(scope="module", autouse=True)
def _metrics_on_one_torch_thread(one_torch_thread):
    yield


def astronaut_clip(n_frames: int, step_px: int, x0: int = 96, size: int = 256) -> np.ndarray:
    """(n_frames, size, size, 3) uint8: a window on skimage's astronaut photo moving ``step_px`` per frame (the
    head drifts the other way)."""
    photo = skdata.astronaut()
    return np.stack([photo[0:size, x0 - step_px * k:x0 + size - step_px * k] for k in range(n_frames)])
