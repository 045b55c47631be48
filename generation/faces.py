"""Face detection and 68-point landmarks with dlib, offline (models from face_recognition_models).

No Django here. The dlib models are loaded once per process and reused.
Landmark indices follow the iBUG 300-W convention: jaw 0–16, brows 17–26, nose 27–35,
eyes 36–47, outer lips 48–59, inner lips 60–67.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

JAW = slice(0, 17)
NOSE = slice(27, 36)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
MOUTH = slice(48, 68)


class FaceNotFoundError(ValueError):
    """No face was found where one was required."""


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom in pixels
    landmarks: np.ndarray  # (68, 2) float32, x then y

    @property
    def mouth(self) -> np.ndarray:
        return self.landmarks[MOUTH]


def _model_dir() -> str:
    # face_recognition_models imports pkg_resources at import time, which new setuptools lacks;
    # locating the package without importing it avoids that.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed (pip install face_recognition_models)")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


@functools.lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _predictor():
    import dlib

    path = os.path.join(_model_dir(), "shape_predictor_68_face_landmarks.dat")
    if not os.path.exists(path):
        raise RuntimeError(f"dlib landmark model missing: {path}")
    return dlib.shape_predictor(path)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray, upsample: int = 1) -> list[Face]:
    """All frontal faces in an RGB (or grayscale) image, largest first."""
    rgb = _as_rgb_uint8(image)
    rects = sorted(_detector()(rgb, upsample), key=lambda r: r.width() * r.height(), reverse=True)
    faces = []
    for rect in rects:
        shape = _predictor()(rgb, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)  # (68, 2)
        faces.append(Face(box=(rect.left(), rect.top(), rect.right(), rect.bottom()), landmarks=points))
    return faces


def largest_face(image: np.ndarray, upsample: int = 1) -> Face:
    faces = detect_faces(image, upsample=upsample)
    if not faces:
        raise FaceNotFoundError("no face found in the image")
    return faces[0]


def landmarks_in_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks inside a known face box (faster and steadier than re-detecting every frame)."""
    import dlib

    rect = dlib.rectangle(*[int(round(v)) for v in box])
    shape = _predictor()(_as_rgb_uint8(image), rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def track_landmarks(frames: np.ndarray, redetect_every: int = 10) -> np.ndarray:
    """Landmarks for every frame of a (T, H, W, 3) video: detect, then follow the face box.

    Returns (T, 68, 2) float32. Raises FaceNotFoundError if no face is found before a box exists;
    frames where a re-detection fails keep the previous box.
    """
    out = np.empty((len(frames), 68, 2), dtype=np.float32)
    box = None
    for t, frame in enumerate(frames):
        if box is None or t % redetect_every == 0:
            faces = detect_faces(frame)
            if faces:
                box = faces[0].box
            elif box is None:
                raise FaceNotFoundError(f"no face found in frame {t}")
        out[t] = landmarks_in_box(frame, box)
    return out
