"""The face and mouth regions of a clip, cut identically from the generated clip and its ground truth. No Django.

Region metrics (PSNR/SSIM/LPIPS on the face or the mouth, LMD, IFC) compare the two clips of a
:class:`~generation.metrics.base.ClipPair` inside one face box per frame, ``ClipPair.face_boxes``. The boxes are found
once, on the reference (:func:`with_face_boxes`), and both clips are cropped with them and resized with the same
interpolation, so a crop of the generated frame and the crop of its ground truth cover the same pixels, and every
crop has the same size whatever the source resolution: per-frame values can be compared across frames, clips and
sources.

The face box is the lip-sync pipeline's own
-------------------------------------------
:func:`detect_face_boxes` runs exactly the face-box protocol of :class:`generation.pipeline.LipSyncPipeline`
(Wav2Lip's inference protocol, with dlib's detector grown towards S3FD's framing): dlib detection in every frame,
short gaps filled from the nearest frame with a face, Wav2Lip's pads (0, 10, 0, 0) and its 5-frame forward smoothing,
with the pipeline's own defaults (:class:`generation.pipeline.PipelineConfig`). When the ground truth is the source
video the clip was generated from, these are the very boxes the generator was given, so the face crop is the face
the generator saw and the mouth crop is the part it repainted.

The crops
---------
* :func:`face_crops`: the box ``frame[y1:y2, x1:x2]`` resized to ``size`` x ``size`` (default :data:`CROP_SIZE` =
  128) with bilinear interpolation (half-pixel centres, as ``cv2.INTER_LINEAR``) and antialiasing when shrinking
  (torch ``interpolate(..., antialias=True)``, a triangle filter as wide as the scale factor: large faces of HD
  video are averaged, not aliased), rounded to uint8 like the frames. Rounding makes a crop metric equal to what
  scikit-image computes on the crops saved as PNG.
* :func:`mouth_crops`: the lower half of the face crop, rows ``size // 2`` to ``size``: ``(size // 2, size)``. This
  is, row for row, the region Wav2Lip-style generators mask and repaint (they mask the lower half of their square
  face crop), and because it is part of the face crop, face and mouth values of one frame share one geometry.

Why 128 (UNVERIFIED choice): every bundled generator works on 96-px faces, so 128 keeps all the detail the generator
produced (a crop below 96 would throw some away, a much larger one only interpolates); 128 is also the resolution at
which the LMD reference (Chen et al. 2019, ATVGnet) computed landmark distances, so LMD values in "pixels of a
128-px face crop" are on the scale of the published tables; and the mouth crop (64 x 128) stays well above SSIM's
11-px window and LPIPS-AlexNet's receptive field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from generation import faces
from generation.metrics.base import ClipPair, MetricUnavailable

CROP_SIZE = 128
MIN_BOX_SIDE = 8  # pixels; the pipeline refuses smaller boxes too


class NoFaceError(faces.FaceNotFoundError, MetricUnavailable):
    """No usable face in the clip: both a FaceNotFoundError (for the generation code) and a MetricUnavailable (so a
    metric that needs the face is reported as not computable, with this reason)."""


def detect_face_boxes(frames: np.ndarray, *, detector=None, config=None) -> np.ndarray:
    """Face boxes (T, 4) int64 ``x1, y1, x2, y2`` (x2, y2 exclusive) of a (T, H, W, 3) uint8 video.

    The lip-sync pipeline's protocol (module docstring): ``detector.detect_batch`` (default
    :class:`generation.faces.DlibFaceDetector`), gap filling, pads and smoothing from ``config`` (default
    :class:`generation.pipeline.PipelineConfig`). Raises :class:`NoFaceError` when no frame has a face, when a run of
    frames without a face is longer than ``config.max_missing_face_frames``, or when a box is degenerate.
    """
    from generation.pipeline import PipelineConfig  # deferred: the pipeline imports the model registry

    config = config or PipelineConfig()
    detector = detector or faces.DlibFaceDetector()
    frames = _check_frames(frames)
    detections = detector.detect_batch(frames)  # list of (N, 5), largest first
    best = [d[0, :4] if len(d) else None for d in detections]
    try:
        filled = faces.fill_missing_boxes(best, max_gap=config.max_missing_face_frames)  # (T, 4) float
    except faces.FaceNotFoundError as exc:
        raise NoFaceError(f"no face for the region metrics: {exc}") from exc
    height, width = frames.shape[1:3]
    boxes = faces.pad_boxes(filled, config.pads, width, height)
    if config.smooth:
        boxes = faces.smooth_boxes(boxes, config.smooth_window)
    small = degenerate_boxes(boxes)
    if small.any():
        raise NoFaceError(f"the face box is degenerate (under {MIN_BOX_SIDE} px) in frame {int(np.argmax(small))}")
    return boxes.astype(np.int64)


def with_face_boxes(pair: ClipPair, **kwargs) -> ClipPair:
    """``pair`` with ``face_boxes`` filled in (detected on the reference, else on the generated clip); ``pair`` itself
    when it already has them. Detect once per clip and pass the result to every region metric."""
    if pair.face_boxes is not None:
        return pair
    source = pair.reference if pair.reference is not None else pair.generated
    return dataclasses.replace(pair, face_boxes=detect_face_boxes(source, **kwargs))


def boxes_of(pair: ClipPair) -> np.ndarray:
    """The pair's face boxes (T, 4) int64 (rounded), detected on the reference if the pair has none yet."""
    return np.rint(with_face_boxes(pair).face_boxes).astype(np.int64)


def degenerate_boxes(boxes: np.ndarray) -> np.ndarray:
    """(T,) bool: boxes narrower or lower than :data:`MIN_BOX_SIDE` pixels."""
    boxes = np.asarray(boxes)
    return (boxes[:, 2] - boxes[:, 0] < MIN_BOX_SIDE) | (boxes[:, 3] - boxes[:, 1] < MIN_BOX_SIDE)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    return frames


def _clipped_boxes(boxes: np.ndarray, n_frames: int, height: int, width: int) -> np.ndarray:
    boxes = np.asarray(boxes)
    if boxes.shape != (n_frames, 4):
        raise ValueError(f"boxes must be ({n_frames}, 4), got {boxes.shape}")
    boxes = np.rint(boxes).astype(np.int64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any():
        raise ValueError(f"face box {boxes[int(np.argmax(empty))].tolist()} of frame {int(np.argmax(empty))} has no "
                         f"pixels inside the {width}x{height} frame")
    return boxes


def crop_tensor(frames: np.ndarray, boxes: np.ndarray, size: int, height: int | None = None) -> torch.Tensor:
    """(T, 3, height, size) float32 crops with uint8 values (rounded), the boxes resized to ``size`` x ``size``.

    ``height`` (default ``size``) keeps the last ``height`` rows of the resized square, the lower part of the face
    (``height = size // 2`` is the mouth crop). Each frame is resized on its own (boxes differ between frames); see
    the module docstring for the interpolation.
    """
    frames = _check_frames(frames)
    height = size if height is None else height
    if not 0 < height <= size:
        raise ValueError(f"height must be in 1..{size}, got {height}")
    boxes = _clipped_boxes(boxes, len(frames), *frames.shape[1:3])
    out = torch.empty(len(frames), 3, height, size, dtype=torch.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        patch = torch.from_numpy(np.ascontiguousarray(frames[i, y1:y2, x1:x2])).permute(2, 0, 1)[None].float()
        resized = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i] = resized[0, :, size - height:]  # (3, height, size)
    return out.round_().clamp_(0, 255)


def _to_uint8_images(crops: torch.Tensor) -> np.ndarray:
    return crops.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def face_crops(frames: np.ndarray, boxes: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(T, size, size, 3) uint8: each frame's face box resized to a square (module docstring)."""
    return _to_uint8_images(crop_tensor(frames, boxes, size))


def mouth_crops(frames: np.ndarray, boxes: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(T, size // 2, size, 3) uint8: the lower half of :func:`face_crops` (the region lip-sync generators repaint)."""
    return _to_uint8_images(crop_tensor(frames, boxes, size, height=size // 2))


def mouth_rows(size: int) -> slice:
    """The rows of a ``size`` face crop that form the mouth crop."""
    return slice(size - size // 2, size)
