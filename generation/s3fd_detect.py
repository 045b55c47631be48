"""S3FD face detection: preprocessing, prior boxes, box decoding, NMS, and loading a user-installed checkpoint.

No Django. The network is ``generation.nets.s3fd.S3FD``; this module turns RGB uint8 frames into boxes
``(N, 5) float32 [x1, y1, x2, y2, score]`` in the frame's pixel coordinates, best first — the
detector interface ``generation.faces.DlibFaceDetector`` also implements (``detect`` / ``detect_batch``).

syncmos never downloads weights. :func:`load_s3fd` loads the file the user installed:

* ``sfd_face.pth`` — the S3FD file joonson/syncnet_python's ``download_model.sh`` fetches (to
  ``detectors/s3fd/weights/sfd_face.pth``), the detector of the LSE-D/LSE-C pipeline; or
* ``s3fd-619a316812.pth`` — face-alignment's S3FD, which Wav2Lip's inference uses (saved there as
  ``face_detection/detection/sfd/s3fd.pth``).

Both layouts are recognised by their keys (see ``generation.nets.s3fd``).

The two reference procedures
----------------------------
Wav2Lip ``inference.py`` → ``face_detection`` (a copy of face-alignment; ``api.py``
``get_detections_for_batch``, ``detection/sfd/{detect.py,bbox.py,sfd_detector.py}``, Rudrabha/Wav2Lip
@db7bc44 / @9ebe926 / @536432c):

1. cv2's BGR frames are flipped to RGB (``images[..., ::-1]``) and ``[104, 117, 123]`` is subtracted
   in that RGB order; the network sees R−104, G−117, B−123. face-alignment itself flips its RGB input
   to BGR first, so it feeds B−104, G−117, R−123 (the Caffe convention the numbers come from); Wav2Lip
   passes cv2's BGR frames into that flip and so feeds the network a red/blue-swapped image with
   the mean subtracted in the wrong order (metrics_models.md §2.8, §8.7).
2. Softmax over (background, face) at every cell of every level; candidates with face score > 0.05;
   anchors centred at (stride/2 + x·stride, stride/2 + y·stride), side 4·stride; SSD decoding with
   variances (0.1, 0.2).
3. NMS at IoU 0.3 with the "+1 pixel" area convention ((x2 − x1 + 1)·(y2 − y1 + 1)); keep score > 0.5.
   Wav2Lip takes the first remaining box (highest score), clips it at 0 and truncates to int.

syncnet_python ``run_pipeline.py`` → ``detectors/s3fd`` (joonson/syncnet_python ``__init__.py``,
``box_utils.py``, ``nets.py``; metrics_models.md §1.7):

1. The RGB frame is resized by ``facedet_scale`` 0.25 (cv2 INTER_LINEAR); [104, 117, 123] is
   subtracted in BGR order (B−104, G−117, R−123) and the network sees the channels in RGB order.
2. Inside the network: softmax, candidates with face score > 0.05, the 5000 best of them go
   through NMS at IoU 0.3 (plain areas, no +1), at most 750 survive; priors and boxes are in units of
   the resized image and scaled back by the original width/height.
3. Boxes with score > ``conf_th`` 0.9 are kept and go through a second NMS at IoU 0.1.

:class:`S3FDDetector`'s defaults are Wav2Lip's procedure; :data:`WAV2LIP_INFERENCE`,
:data:`FACE_ALIGNMENT` and :data:`SYNCNET_PIPELINE` hold the three settings as keyword arguments.

Known, small differences from the references: the resize for ``scale != 1`` is torch's bilinear
(half-pixel centres, no antialiasing — cv2 INTER_LINEAR's mapping) rounded back to integers, not
cv2's fixed-point arithmetic; ties in score are broken by a stable sort (level, then row, then
column) rather than numpy's default quicksort; face-alignment's quirk of returning a zero box when
nothing passes 0.05 is not reproduced (it is dropped by the 0.5 threshold anyway). Returned boxes are
clipped to the image (after NMS, so the choice of boxes is unchanged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generation.nets import s3fd as s3fd_nets

SFD_FACE_FILENAME = "sfd_face.pth"

# Per-channel means of the data S3FD was trained on, in the B, G, R order Caffe lists them.
MEAN_BGR = (104.0, 117.0, 123.0)

ORDERS = ("rgb", "bgr")

# Keyword arguments for S3FDDetector / load_s3fd reproducing each reference procedure.
WAV2LIP_INFERENCE = {
    "channel_order": "rgb", "mean_order": "rgb", "scale": 1.0,
    "candidate_threshold": 0.05, "nms_iou": 0.3, "pixel_inclusive_nms": True,
    "pre_nms_top_k": None, "post_nms_top_k": None, "score_threshold": 0.5, "final_nms_iou": None,
}
FACE_ALIGNMENT = {**WAV2LIP_INFERENCE, "channel_order": "bgr", "mean_order": "bgr"}
SYNCNET_PIPELINE = {
    "channel_order": "rgb", "mean_order": "bgr", "scale": 0.25,
    "candidate_threshold": 0.05, "nms_iou": 0.3, "pixel_inclusive_nms": False,
    "pre_nms_top_k": 5000, "post_nms_top_k": 750, "score_threshold": 0.9, "final_nms_iou": 0.1,
}


# --- 1. preprocessing ------------------------------------------------------------------------------


def as_rgb_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 from (T, H, W), (T, H, W, 1) grayscale or (T, H, W, 4) RGBA uint8 frames."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"S3FD expects uint8 RGB frames, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"S3FD expects frames shaped (T, H, W, 3), got {frames.shape}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """cv2.resize's output size for fx = fy = scale: each side rounded to the nearest integer."""
    return max(1, int(np.floor(height * scale + 0.5))), max(1, int(np.floor(width * scale + 0.5)))


def preprocess(
    frames: np.ndarray,
    device: torch.device | str = "cpu",
    *,
    channel_order: str = "rgb",
    mean_order: str = "rgb",
    scale: float = 1.0,
) -> torch.Tensor:
    """RGB uint8 frames (T, H, W, 3) → network input (T, 3, h, w) float32, mean subtracted, not divided.

    ``mean_order`` says which colours the numbers (104, 117, 123) are subtracted from: "bgr" — blue
    104, green 117, red 123, the Caffe convention (face-alignment, syncnet_python) —, or "rgb" — red
    104, green 117, blue 123, Wav2Lip's quirk. ``channel_order`` is the colour order of the tensor the
    network receives: "rgb" (Wav2Lip, syncnet_python) or "bgr" (face-alignment, Caffe).
    """
    if channel_order not in ORDERS or mean_order not in ORDERS:
        raise ValueError(f"channel_order and mean_order must be 'rgb' or 'bgr', got {channel_order!r}, {mean_order!r}")
    x = torch.from_numpy(as_rgb_frames(frames)).to(device)  # (T, H, W, 3) uint8, R G B
    x = x.permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    if scale != 1.0:
        size = scaled_size(x.shape[-2], x.shape[-1], scale)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)  # (T, 3, h, w)
        x = x.round().clamp(0, 255)  # cv2 returns uint8
    mean_rgb = MEAN_BGR[::-1] if mean_order == "bgr" else MEAN_BGR  # the numbers for R, G, B
    x = x - torch.tensor(mean_rgb, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    if channel_order == "bgr":
        x = x.flip(1)  # (T, 3, h, w) B G R
    return x


# --- 2. prior boxes and the SSD box encoding --------------------------------------------------------


def prior_boxes(
    feature_sizes: list[tuple[int, int]],
    strides: tuple[int, ...],
    anchor_scale: float = 4.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One square anchor per cell of every level, as (P, 4) [cx, cy, w, h] in input pixels.

    Cell (y, x) of a level with stride s is centred at (s/2 + x·s, s/2 + y·s) with side anchor_scale·s.
    Rows are in level order, then row-major (y, then x) — the order of ``feature.flatten(2)``.
    """
    priors = []
    for (height, width), stride in zip(feature_sizes, strides, strict=True):
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=torch.float32),
            torch.arange(width, device=device, dtype=torch.float32),
            indexing="ij",
        )  # (h, w) each
        centres = torch.stack([xs, ys], dim=-1).reshape(-1, 2) * stride + stride / 2  # (h·w, 2)
        sizes = torch.full_like(centres, anchor_scale * stride)  # (h·w, 2)
        priors.append(torch.cat([centres, sizes], dim=1))  # (h·w, 4)
    return torch.cat(priors, dim=0)  # (P, 4)


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> torch.Tensor:
    """SSD offsets (…, P, 4) [dcx, dcy, dw, dh] + priors (P, 4) [cx, cy, w, h] → boxes (…, P, 4) [x1, y1, x2, y2].

    centre = prior centre + offset · 0.1 · prior size; size = prior size · exp(offset · 0.2).
    """
    centres = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]  # (…, P, 2)
    sizes = priors[:, 2:] * torch.exp(loc[..., 2:] * variances[1])  # (…, P, 2)
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)  # (…, P, 4)


def encode(boxes: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> torch.Tensor:
    """The inverse of :func:`decode`: boxes (…, P, 4) [x1, y1, x2, y2] → offsets (…, P, 4)."""
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (…, P, 2)
    sizes = boxes[..., 2:] - boxes[..., :2]  # (…, P, 2)
    d_centre = (centres - priors[:, :2]) / (variances[0] * priors[:, 2:])
    d_size = torch.log(sizes / priors[:, 2:]) / variances[1]
    return torch.cat([d_centre, d_size], dim=-1)  # (…, P, 4)


# --- 3. non-maximum suppression -------------------------------------------------------------------


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    *,
    pixel_inclusive: bool = False,
    top_k: int | None = None,
) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is above ``iou_threshold``
    (kept when ≤, as in both references). ``pixel_inclusive`` counts a box's width as x2 − x1 + 1
    (face-alignment's ``bbox.nms``); syncnet_python uses x2 − x1. ``top_k`` considers only the k best
    scores (syncnet_python's ``nms_top_k``). Ties keep their input order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    one = 1.0 if pixel_inclusive else 0.0
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + one)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + one)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def select_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    candidate_threshold: float = 0.05,
    nms_iou: float = 0.3,
    pixel_inclusive_nms: bool = True,
    pre_nms_top_k: int | None = None,
    post_nms_top_k: int | None = None,
    score_threshold: float = 0.5,
    final_nms_iou: float | None = None,
) -> np.ndarray:
    """Decoded boxes (P, 4) and face scores (P,) of one image → detections (N, 5), best first.

    candidates (score > candidate_threshold) → NMS(nms_iou) → at most post_nms_top_k → score >
    score_threshold → optional second NMS(final_nms_iou, plain areas; syncnet_python's).
    """
    candidates = scores > candidate_threshold
    boxes, scores = boxes[candidates], scores[candidates]
    keep = nms(boxes, scores, nms_iou, pixel_inclusive=pixel_inclusive_nms, top_k=pre_nms_top_k)
    if post_nms_top_k is not None:
        keep = keep[:post_nms_top_k]
    boxes, scores = boxes[keep], scores[keep]  # best first
    confident = scores > score_threshold
    boxes, scores = boxes[confident], scores[confident]
    if final_nms_iou is not None:
        keep = nms(boxes, scores, final_nms_iou)
        boxes, scores = boxes[keep], scores[keep]
    return np.concatenate([boxes, scores[:, None]], axis=1).astype(np.float32).reshape(-1, 5)  # (N, 5)


# --- 4. the detector -------------------------------------------------------------------------------


class S3FDDetector:
    """S3FD behind the detector interface: ``detect(image) -> (N, 5)``, ``detect_batch(frames) -> [(N_t, 5)]``.

    ``net`` is an :class:`~generation.nets.s3fd.S3FD` (or any module with its ``config`` and output
    format). Defaults reproduce Wav2Lip's detection (see the module docstring); pass
    ``**SYNCNET_PIPELINE`` or ``**FACE_ALIGNMENT`` for the others. ``scale`` resizes frames before
    the network (syncnet_python: 0.25); boxes come back in the original frame's pixels.
    ``batch_size`` frames go through the network at once (Wav2Lip's ``--face_det_batch_size`` 16).
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device | str = "cpu",
        *,
        channel_order: str = "rgb",
        mean_order: str = "rgb",
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        candidate_threshold: float = 0.05,
        scale: float = 1.0,
        pixel_inclusive_nms: bool = True,
        pre_nms_top_k: int | None = None,
        post_nms_top_k: int | None = None,
        final_nms_iou: float | None = None,
        batch_size: int = 16,
    ):
        if channel_order not in ORDERS or mean_order not in ORDERS:
            raise ValueError(
                f"channel_order and mean_order must be 'rgb' or 'bgr', got {channel_order!r}, {mean_order!r}"
            )
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size!r}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.config: s3fd_nets.S3FDConfig = net.config
        self.channel_order = channel_order
        self.mean_order = mean_order
        self.scale = float(scale)
        self.batch_size = batch_size
        self.selection = {
            "candidate_threshold": candidate_threshold,
            "nms_iou": nms_iou,
            "pixel_inclusive_nms": pixel_inclusive_nms,
            "pre_nms_top_k": pre_nms_top_k,
            "post_nms_top_k": post_nms_top_k,
            "score_threshold": score_threshold,
            "final_nms_iou": final_nms_iou,
        }
        self._priors: dict[tuple, torch.Tensor] = {}

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Faces in one RGB uint8 image (H, W, 3): (N, 5) float32 [x1, y1, x2, y2, score], best first."""
        return self.detect_batch(np.asarray(image)[None])[0]

    def detect_batch(self, frames: np.ndarray) -> list[np.ndarray]:
        """Faces in each of T same-sized RGB uint8 frames (T, H, W, 3): a list of T (N_t, 5) arrays."""
        frames = as_rgb_frames(frames)
        results: list[np.ndarray] = []
        batch, start = self.batch_size, 0
        while start < len(frames):
            try:
                results.extend(self._detect_chunk(frames[start:start + batch]))
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)  # Wav2Lip halves --face_det_batch_size on CUDA OOM, down to 1
                continue
            start += batch
        return results

    def _priors_for(self, feature_sizes: list[tuple[int, int]]) -> torch.Tensor:
        key = tuple(feature_sizes)
        if key not in self._priors:
            self._priors[key] = prior_boxes(feature_sizes, self.config.strides, self.config.anchor_scale, self.device)
        return self._priors[key]

    def _detect_chunk(self, frames: np.ndarray) -> list[np.ndarray]:
        # 1. preprocess: (T, H, W, 3) uint8 → (T, 3, h, w) float32, possibly resized.
        height, width = frames.shape[1:3]
        x = preprocess(
            frames, self.device, channel_order=self.channel_order, mean_order=self.mean_order, scale=self.scale
        )
        # 2. network: six (cls, reg) levels.
        with torch.inference_mode():
            levels = self.net(x)
            if len(levels) != len(self.config.strides):
                raise ValueError(f"S3FD returned {len(levels)} levels, expected {len(self.config.strides)}")
            n = x.shape[0]
            scores = torch.cat([F.softmax(cls, dim=1)[:, 1].reshape(n, -1) for cls, _ in levels], dim=1)  # (T, P)
            loc = torch.cat([reg.permute(0, 2, 3, 1).reshape(n, -1, 4) for _, reg in levels], dim=1)  # (T, P, 4)
            # 3. decode against the anchors, in units of the network input.
            priors = self._priors_for([tuple(cls.shape[-2:]) for cls, _ in levels])  # (P, 4)
            boxes = decode(loc.float(), priors, self.config.variances)  # (T, P, 4)
            candidates = scores > self.selection["candidate_threshold"]  # (T, P)
        # 4. select per frame on the CPU; rescale to the original frame and clip.
        to_frame = np.array([width / x.shape[-1], height / x.shape[-2]] * 2, dtype=np.float64)
        results = []
        for t in range(n):
            mask = candidates[t]
            frame_boxes = boxes[t][mask].cpu().numpy().astype(np.float64)  # (C, 4)
            frame_scores = scores[t][mask].cpu().numpy().astype(np.float64)  # (C,)
            final_nms_iou = self.selection["final_nms_iou"]
            detections = select_detections(
                frame_boxes, frame_scores, **{**self.selection, "final_nms_iou": None}
            ).astype(np.float64)  # (N, 5), network-input pixels
            detections[:, :4] *= to_frame
            if final_nms_iou is not None:  # syncnet_python runs its second NMS on original-frame boxes
                keep = nms(detections[:, :4], detections[:, 4], final_nms_iou)
                detections = detections[keep]
            detections[:, [0, 2]] = detections[:, [0, 2]].clip(0, width)
            detections[:, [1, 3]] = detections[:, [1, 3]].clip(0, height)
            results.append(detections.astype(np.float32).reshape(-1, 5))
        return results


# --- 5. loading the user-installed checkpoint ----------------------------------------------------


def _missing_message(path: Path) -> str:
    return (
        f"S3FD face detector weights not found at {path}. syncmos never downloads weights: install the file "
        f"yourself. Use {SFD_FACE_FILENAME}, the S3FD checkpoint that joonson/syncnet_python's download_model.sh "
        f"fetches (from the VGG lipsync data page, http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/"
        f"{SFD_FACE_FILENAME}, saved there as detectors/s3fd/weights/{SFD_FACE_FILENAME}), or face-alignment's "
        f"s3fd-619a316812.pth (Wav2Lip's face_detection/detection/sfd/s3fd.pth), and put it at {path} — "
        f"or choose the offline dlib detector instead."
    )


def _a_few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", … ({len(keys)} in all)" if len(keys) > n else "") if keys else "none"


def load_s3fd(
    path: str | Path,
    device: torch.device | str = "cpu",
    *,
    config: s3fd_nets.S3FDConfig | None = None,
    **detector_options,
) -> S3FDDetector:
    """Build an :class:`S3FDDetector` from a user-installed checkpoint (``sfd_face.pth`` or face-alignment's).

    The file is read with ``torch.load(weights_only=True)`` and loaded strictly. Its layout picks the
    network config (``sfd_face`` → :data:`~generation.nets.s3fd.SFD_FACE`, face-alignment →
    :data:`~generation.nets.s3fd.DEFAULT`; ``config`` overrides) and the default mean order (the way the
    file's own code feeds it: "bgr" for sfd_face.pth as syncnet_python does, "rgb" for face-alignment's
    file as Wav2Lip does). Other ``detector_options`` go to :class:`S3FDDetector` (e.g.
    ``**SYNCNET_PIPELINE``).

    Raises FileNotFoundError when the file is missing (naming the file to install and where it comes
    from) and ValueError when it is not an S3FD checkpoint of the expected shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path))
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupt file, not a torch file, pickled objects other than tensors
        raise ValueError(
            f"{path} is not a readable PyTorch state dict ({type(exc).__name__}: {exc}); expected the S3FD "
            f"face detector checkpoint {SFD_FACE_FILENAME}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} is not an S3FD checkpoint: expected a flat state dict of tensors, got {type(state).__name__}"
        )

    layout = s3fd_nets.checkpoint_layout(state)
    if layout == s3fd_nets.LAYOUT_SFD_FACE:
        state = s3fd_nets.remap_sfd_face(state)
    if config is None:
        config = s3fd_nets.SFD_FACE if layout == s3fd_nets.LAYOUT_SFD_FACE else s3fd_nets.DEFAULT
    net = s3fd_nets.S3FD(config)
    expected = net.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if layout is None or missing or unexpected:
        raise ValueError(
            f"{path} is not an S3FD checkpoint (neither the {SFD_FACE_FILENAME} nor the face-alignment layout): "
            f"missing keys: {_a_few(missing)}; unexpected keys: {_a_few(unexpected)}"
        )
    wrong = [
        f"{key} {tuple(state[key].shape)} ≠ {tuple(value.shape)}"
        for key, value in expected.items()
        if state[key].shape != value.shape
    ]
    if wrong:
        raise ValueError(f"{path} is not an S3FD checkpoint of the expected shapes: {_a_few(wrong, 3)}")
    net.load_state_dict(state, strict=True)

    options = {"mean_order": "bgr" if layout == s3fd_nets.LAYOUT_SFD_FACE else "rgb", **detector_options}
    return S3FDDetector(net, device, **options)
