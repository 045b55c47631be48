"""The contract every objective metric follows, no Django.

A clip-level metric is a plain function of a :class:`ClipPair` that returns one float (or a
:class:`PerFrame` when it also has per-frame values). A metric that cannot be computed for a reason the
researcher should see (a weight file is not installed, there is no ground truth, no face was found) raises
:class:`MetricUnavailable` with that reason; it never returns a made-up number. Any other exception is a bug
or bad media and is recorded as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000


class MetricUnavailable(Exception):
    """The metric cannot be computed here; ``str(exc)`` says why (shown to researchers verbatim)."""


@dataclass(frozen=True)
class ClipPair:
    """A generated clip and its ground truth, decoded and aligned frame by frame.

    generated: (T, H, W, 3) uint8 RGB frames of the clip being scored.
    reference: (T, H, W, 3) uint8 RGB frames of the ground truth (the hidden reference of the same source
        and audio), cut to the same T; None when the clip has no ground truth.
    audio: (S,) float32 mono samples in [-1, 1] at ``sample_rate``, the audio the viewer hears with
        ``generated`` (for audio-offset controls this is the shifted audio).
    fps: frame rate of both videos.
    face_boxes: (T, 4) int x1, y1, x2, y2 of the face in every frame, found on the reference when there is
        one (so both clips are cropped identically), else on the generated frames; None until detected.
    """

    generated: np.ndarray
    reference: np.ndarray | None
    audio: np.ndarray
    fps: float
    sample_rate: int = SAMPLE_RATE
    face_boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.generated.ndim != 4 or self.generated.shape[-1] != 3 or self.generated.dtype != np.uint8:
            raise ValueError(f"generated must be (T, H, W, 3) uint8, got {self.generated.shape} {self.generated.dtype}")
        if self.reference is not None and self.reference.shape != self.generated.shape:
            raise ValueError(f"reference {self.reference.shape} and generated {self.generated.shape} differ")
        if self.face_boxes is not None and self.face_boxes.shape != (len(self.generated), 4):
            raise ValueError(f"face_boxes must be ({len(self.generated)}, 4), got {self.face_boxes.shape}")

    @property
    def n_frames(self) -> int:
        return len(self.generated)

    def require_reference(self, metric: str) -> np.ndarray:
        if self.reference is None:
            raise MetricUnavailable(f"{metric} compares with the ground truth, and this clip has no hidden reference")
        return self.reference


@dataclass(frozen=True)
class PerFrame:
    """A clip-level value with the per-frame values it was aggregated from (NaN where undefined)."""

    value: float
    frames: np.ndarray = field(repr=False)


def installed_or_unavailable(load, *args, **kwargs):
    """``load(*args, **kwargs)``, with a missing weight file turned into MetricUnavailable (its message names the
    file and where to get it): a metric without its network is unavailable, never computed with other weights."""
    from generation.weights import WeightsMissingError

    try:
        return load(*args, **kwargs)
    except WeightsMissingError as exc:
        raise MetricUnavailable(str(exc)) from exc
