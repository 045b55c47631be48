"""LSE-D / LSE-C (Wav2Lip's lip-sync error on top of joonson/syncnet_python) and the AVSyncNet analogue. No Django.

LSE-D and LSE-C are Prajwal et al.'s (ACM MM 2020) names for SyncNet's "min dist" and "confidence" (Wav2Lip
issue #284); the computation is ``SyncNetInstance.evaluate`` of joonson/syncnet_python (master 6efbb1c), run
unchanged by Rudrabha/Wav2Lip ``evaluation/scores_LSE``. Facts: shared/research/metrics_models.md §1.4-§1.7, §8.

The computation (faithful; :func:`lse_reference_loop` is the same written like the reference)
--------------------------------------------------------------------------------------------
1. Frames as BGR float 0-255 (cv2), no normalisation; audio as raw int16 samples at 16 kHz, 25 fps video.
2. ``min_length = min(T, floor(samples / 640))``, ``lastframe = min_length - 5``; windows v = 0 .. lastframe-1
   (one fewer than would fit: the reference's range). Video window v = frames v..v+4 -> (1, 3, 5, H, W); audio
   window v = MFCC columns 4v .. 4v+19 -> (1, 1, 13, 20) (:mod:`generation.metrics.mfcc`, computed on all of
   the audio).
3. Embed with ``S`` in eval mode; ``calc_pdist``: the audio embeddings are zero-padded by ``vshift`` rows at both
   ends, and video window i is compared with audio windows i - vshift .. i + vshift by
   ``F.pairwise_distance`` (Euclidean, with its eps 1e-6 added to the difference). Edge windows compare
   against the zero vectors, as in the reference.
4. ``mean_dists[k]`` = mean over windows of the distance at candidate k (k = 0 .. 2 vshift);
   **LSE-D** = min_k mean_dists (a minimum of means); **LSE-C** = median_k mean_dists - LSE-D (torch.median);
   **offset** = vshift - argmin_k (positive: the audio's best match is *earlier* than the video, i.e. the
   video lags). vshift = 15 (every reference script), so 31 candidates = +-0.6 s.

:func:`lse` computes the same numbers faster: every audio window is embedded once in batches; the video
windows come from ``S.forward_lip_sequence`` on runs of consecutive frames (window t of a run is time step t of
the lip stream run over the whole run, since only the first Conv3d looks across frames), so each frame is read
once rather than copied into five windows; and all 2·vshift+1 distances of all windows come from one broadcast
over a strided view of the padded audio embeddings (in chunks that bound memory). The network dominates the
cost, so the end-to-end gain is modest; benchmarks/bench_metrics_lse.py prints both ratios, and
tests/generation/metrics/test_lse.py holds the fast path to the loop.

Crops (:func:`syncnet_crops`)
-----------------------------
* With face boxes: run_pipeline.py's ``crop_video`` geometry: per frame the box half-side s = max(w, h) / 2 and
  centre (x, y); s, x and y each median-filtered over the clip (``scipy.signal.medfilt``, kernel 13, zero-padded
  ends, as the reference); the frame padded by int(s (1 + 2·0.4)) pixels of value 110; rows
  [y - s, y + 1.8 s), cols [x - 1.4 s, x + 1.4 s) (a square of side 2.8 s reaching below the chin), each bound
  truncated with int(); resized to 224x224.
* Without boxes: Wav2Lip's LRS path (``calculate_scores_LRS.py``): the whole frame resized to 224x224.

Deviations and UNVERIFIED choices
---------------------------------
* No video re-encoding: the reference writes the crops as XVID AVI and re-reads them through ffmpeg JPEG
  extraction (and Wav2Lip's LRS path JPEG-extracts the frames); we crop the decoded frames directly. The lossy
  steps change pixel values slightly (UNVERIFIED by how much LSE moves).
* Resizing is bilinear with cv2 INTER_LINEAR's half-pixel convention (``generation.faces.resize``), not cv2's
  11-bit fixed-point arithmetic: pixel values can differ by 1.
* The boxes are whatever the caller found (ClipPair.face_boxes; syncmos uses dlib), not S3FD's
  (``facedet_scale`` 0.25, ``conf_th`` 0.9); no scene cuts, no IoU tracking and no 100-frame minimum track
  (those belong to run_pipeline's real-video path; Wav2Lip's LRS path has no such minimum). Crop geometry needs
  at least 7 frames with boxes: the zero-padded 13-tap median would otherwise reach 0 at the ends.
* Audio: ClipPair's float32 [-1, 1] samples are scaled to the int16 range as ffmpeg's s16 conversion does
  (x 32768, rounded, clipped); the reference reads the s16 WAV ffmpeg wrote.
* Clips must be 25 fps and 16 kHz (the reference assumes both; it does not resample in ``evaluate``).

The AVSync variant (AVS-D / AVS-C; syncmos' own, not a published metric)
--------------------------------------------------------------------------
The same windowing and offset search with the stabilized-sync paper's AVSyncNet (generation/nets/avsyncnet.py)
instead of SyncNet: video window v = the lower halves of the 96x96 pipeline face crops of frames v..v+4 (BGR,
[0, 1]) resized to 112x224 and stacked (:func:`generation.nets.avsyncnet.avsync_face_input`); audio window v =
the Wav2Lip mel columns int(80 v / 25) .. +16 (:mod:`generation.audio`), i.e. the same 0.2 s as SyncNet's
20 MFCC frames. AVSyncNet's embeddings are L2-normalised and non-negative, so the distance is
**d = 1 - cosine similarity** in [0, 1] (zero-padded audio rows: cosine 0, d = 1); **AVS-D** = min_k of the
mean d, **AVS-C** = median_k - AVS-D, offset as for LSE. Crops: the face boxes as given (the inference
pipeline's and the training data's crops), or the whole frame without boxes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from generation.metrics import base
from generation.metrics.base import ClipPair, MetricUnavailable
from generation.metrics.mfcc import mfcc as compute_mfcc

FPS = 25.0
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 640  # 16000 / 25
MFCC_PER_FRAME = 4  # 100 MFCC frames/s / 25 fps
WINDOW_FRAMES = 5
MFCC_WINDOW = 20
VSHIFT = 15
BATCH_SIZE = 20  # --batch_size of run_syncnet.py / the Wav2Lip scripts
PAIRWISE_EPS = 1e-6  # F.pairwise_distance's default
CROP_SIZE = 224
CROP_SCALE = 0.4  # run_pipeline.py --crop_scale
MEDIAN_KERNEL = 13
PAD_VALUE = 110
MIN_FRAMES = WINDOW_FRAMES + 1  # lastframe = min_length - 5 must leave one window
AVSYNC_FACE_SIZE = 96
_DISTANCE_CHUNK_ELEMENTS = 1 << 23  # windows x dim x offsets per broadcast chunk (32 MB in float32)


@dataclass(frozen=True)
class LseResult:
    """One clip's LSE. ``mean_dists`` (2·vshift+1,): mean distance per candidate, index k comparing video window i
    with audio window i + k - vshift; ``offset_frames`` = vshift - argmin_k, so audio delayed by n frames (the
    sound of frame i heard at frame i + n) gives -n; ``n_windows``: the windows averaged."""

    lse_d: float
    lse_c: float
    offset_frames: int
    mean_dists: np.ndarray = field(repr=False)
    n_windows: int = 0


@dataclass(frozen=True)
class AvsResult:
    """One clip's AVSync scores (see the module docstring): AVS-D, AVS-C, offset, mean 1 - cosine per offset."""

    avs_d: float
    avs_c: float
    offset_frames: int
    mean_dists: np.ndarray = field(repr=False)
    n_windows: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


def to_int16_scale(audio: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16 (x 32768, rounded, clipped), the s16 samples ffmpeg would write."""
    audio = np.asarray(audio, dtype=np.float64)
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from generation.faces import resize

    return resize(image, size, size)


def syncnet_crops(frames: np.ndarray, face_boxes: np.ndarray | None = None, size: int = CROP_SIZE, *,
                  crop_scale: float = CROP_SCALE) -> np.ndarray:
    """SyncNet's face crops: (T, H, W, 3) uint8 RGB frames -> (T, size, size, 3) uint8 RGB (size 224 officially).

    ``face_boxes`` (T, 4) x1, y1, x2, y2: run_pipeline.py ``crop_video``'s geometry (module docstring);
    None: each whole frame resized (Wav2Lip's LRS path). ``size`` other than 224 only serves smaller SyncNet
    configs (the crop is then resized straight to their input size).
    """
    from scipy.signal import medfilt

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if face_boxes is None:
        return np.stack([_resize(frame, size) for frame in frames]) if len(frames) else \
            np.zeros((0, size, size, 3), np.uint8)
    boxes = np.asarray(face_boxes, dtype=np.float64)
    if boxes.shape != (len(frames), 4):
        raise ValueError(f"face_boxes must be ({len(frames)}, 4), got {boxes.shape}")
    half_sides = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2  # (T,)
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    with warnings.catch_warnings():  # clips shorter than the kernel: zero-padded, as the reference (checked below)
        warnings.filterwarnings("ignore", message="kernel_size exceeds volume extent")
        half_sides = medfilt(half_sides, kernel_size=MEDIAN_KERNEL)  # zero-padded ends, as the reference
        centre_x = medfilt(centre_x, kernel_size=MEDIAN_KERNEL)
        centre_y = medfilt(centre_y, kernel_size=MEDIAN_KERNEL)
    if (half_sides <= 0).any():
        raise ValueError(f"crop_video's median-filtered box size is 0 for {len(frames)} frames: it needs at least "
                         f"{MEDIAN_KERNEL // 2 + 1} frames with non-empty boxes")
    crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        bs = half_sides[t]
        bsi = int(bs * (1 + 2 * crop_scale))  # padding, pixels
        padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), mode="constant", constant_values=PAD_VALUE)
        my, mx = centre_y[t] + bsi, centre_x[t] + bsi
        face = padded[int(my - bs):int(my + bs * (1 + 2 * crop_scale)),
                      int(mx - bs * (1 + crop_scale)):int(mx + bs * (1 + crop_scale))]
        crops[t] = _resize(face, size)
    return crops


def window_count(n_frames: int, n_samples: int) -> int:
    """Windows the reference evaluates: min(T, floor(samples / 640)) - 5 (may be <= 0)."""
    return min(n_frames, math.floor(n_samples / SAMPLES_PER_FRAME)) - WINDOW_FRAMES


def _video_tensor(video_crops: np.ndarray, crop_size: int) -> torch.Tensor:
    """(T, S, S, 3) uint8 RGB -> (3, T, S, S) float32 BGR 0-255, SyncNetInstance's ``imtv[0]``."""
    crops = np.asarray(video_crops)
    if crops.ndim != 4 or crops.shape[1:] != (crop_size, crop_size, 3) or crops.dtype != np.uint8:
        raise ValueError(f"video_crops must be (T, {crop_size}, {crop_size}, 3) uint8 RGB, got "
                         f"{crops.shape} {crops.dtype}")
    bgr = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1]))  # (T, S, S, 3)
    return bgr.permute(3, 0, 1, 2).float()  # (3, T, S, S)


def _mfcc_tensor(audio_int16: np.ndarray) -> torch.Tensor:
    """(N,) int16-scale samples -> (13, M) float32 MFCC (``cct[0, 0]`` of the reference)."""
    audio = np.asarray(audio_int16)
    if audio.ndim != 1:
        raise ValueError(f"audio must be one-dimensional (mono), got shape {audio.shape}")
    return torch.from_numpy(compute_mfcc(audio, SAMPLE_RATE).T.astype(float)).float()  # (13, M)


def _check_length(n_windows: int, n_frames: int, n_samples: int) -> None:
    if n_windows < 1:
        raise ValueError(f"LSE needs at least {MIN_FRAMES} frames of video with audio (0.24 s at 25 fps): got "
                         f"{n_frames} frames and {n_samples} samples ({n_samples / SAMPLES_PER_FRAME:.2f} frames)")


# ---------------------------------------------------------------------------------------------------------------
# The offset search
# ---------------------------------------------------------------------------------------------------------------


def offset_distances(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = VSHIFT, *,
                     metric: str = "euclidean") -> torch.Tensor:
    """Distances of every video window to the audio windows -vshift .. +vshift around it: (W, 2·vshift+1).

    video_emb, audio_emb: (W, D). The audio side is zero-padded by ``vshift`` rows at both ends (calc_pdist).
    ``metric``: "euclidean" = ``F.pairwise_distance`` (|v - a + 1e-6|_2), SyncNet's; "cosine" = 1 - v·a for
    L2-normalised embeddings (AVSyncNet's), 1 against the padding.
    """
    if video_emb.shape != audio_emb.shape or video_emb.dim() != 2:
        raise ValueError(f"embeddings must both be (W, D), got {tuple(video_emb.shape)}, {tuple(audio_emb.shape)}")
    n, dim = video_emb.shape
    width = 2 * vshift + 1
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))  # (W + 2 vshift, D)
    windows = padded.unfold(0, width, 1)  # (W, D, 2 vshift + 1): windows[i, :, k] = padded[i + k]
    chunk = max(1, _DISTANCE_CHUNK_ELEMENTS // max(1, dim * width))
    out = []
    for start in range(0, n, chunk):
        video = video_emb[start:start + chunk, :, None]  # (c, D, 1)
        if metric == "euclidean":
            out.append(torch.linalg.vector_norm(video - windows[start:start + chunk] + PAIRWISE_EPS, dim=1))
        elif metric == "cosine":
            out.append(1.0 - (video * windows[start:start + chunk]).sum(dim=1))
        else:
            raise ValueError(f"metric must be 'euclidean' or 'cosine', not {metric!r}")
    return torch.cat(out) if out else video_emb.new_zeros((0, width))  # (W, 2 vshift + 1)


def summarise(dists: torch.Tensor, vshift: int) -> tuple[float, float, int, np.ndarray]:
    """(min of the mean distances, median - min, vshift - argmin, the means) of (W, 2·vshift+1) distances."""
    mean_dists = dists.mean(dim=0)  # (2 vshift + 1,)
    minval, minidx = torch.min(mean_dists, 0)
    confidence = torch.median(mean_dists) - minval
    return float(minval), float(confidence), int(vshift - int(minidx)), mean_dists.detach().cpu().numpy()


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_windows(video_crops: np.ndarray, audio_int16_16k: np.ndarray, model,
                  batch_size: int = BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """SyncNet embeddings of every window, each computed once: (video (W, D), audio (W, D)) on the CPU.

    The video side runs ``S.forward_lip_sequence`` on runs of ``batch_size + 4`` consecutive frames (each
    giving ``batch_size`` windows), so no frame is copied into five windows.
    """
    video = _video_tensor(video_crops, model.config.crop_size)  # (3, T, S, S)
    n_windows = window_count(video.shape[1], len(audio_int16_16k))
    _check_length(n_windows, video.shape[1], len(audio_int16_16k))
    cc = _mfcc_tensor(audio_int16_16k)  # (13, M)
    model.eval()
    device = _model_device(model)
    audio_windows = cc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME).permute(1, 0, 2)[:, None]  # (n, 1, 13, 20), a view
    video_out, audio_out = [], []
    for start in range(0, n_windows, batch_size):
        stop = min(n_windows, start + batch_size)
        frames = video[None, :, start:stop + WINDOW_FRAMES - 1].to(device)  # (1, 3, B + 4, S, S)
        video_out.append(model.forward_lip_sequence(frames)[0].cpu())  # (B, D)
        audio_out.append(model.forward_aud(audio_windows[start:stop].contiguous().to(device)).cpu())
    return torch.cat(video_out), torch.cat(audio_out)


def lse(video_crops: np.ndarray, audio_int16_16k: np.ndarray, model, vshift: int = VSHIFT,
        batch_size: int = BATCH_SIZE) -> LseResult:
    """LSE-D, LSE-C and the AV offset of one clip (module docstring), with SyncNet ``model`` (eval mode).

    Parameters
    ----------
    video_crops : (T, S, S, 3) uint8 RGB
        Face crops at the model's input size (:func:`syncnet_crops`), 25 fps.
    audio_int16_16k : (N,) int16-scale samples at 16 kHz (:func:`to_int16_scale`).
    model : generation.nets.syncnet.SyncNetV2
    vshift : int
        Largest offset searched, in frames (15 in every reference script).

    Raises ValueError when fewer than 6 frames have both video and audio.

    References
    ----------
    Chung & Zisserman 2016 (SyncNet); joonson/syncnet_python SyncNetInstance.evaluate; Prajwal et al. 2020
    (LSE-D, LSE-C).
    """
    video_emb, audio_emb = embed_windows(video_crops, audio_int16_16k, model, batch_size)
    dists = offset_distances(video_emb, audio_emb, vshift)  # (W, 2 vshift + 1)
    lse_d, lse_c, offset, mean_dists = summarise(dists, vshift)
    return LseResult(lse_d=lse_d, lse_c=lse_c, offset_frames=offset, mean_dists=mean_dists,
                     n_windows=len(video_emb))


def _calc_pdist(feat1: torch.Tensor, feat2: torch.Tensor, vshift: int) -> list[torch.Tensor]:
    """syncnet_python's calc_pdist, loop for loop."""
    win_size = vshift * 2 + 1
    feat2p = F.pad(feat2, (0, 0, vshift, vshift))
    dists = []
    for i in range(0, len(feat1)):
        dists.append(F.pairwise_distance(feat1[[i], :].repeat(win_size, 1), feat2p[i:i + win_size, :]))
    return dists


@torch.no_grad()
def lse_reference_loop(video_crops: np.ndarray, audio_int16_16k: np.ndarray, model, vshift: int = VSHIFT,
                       batch_size: int = BATCH_SIZE) -> LseResult:
    """:func:`lse` written as SyncNetInstance.evaluate is: per-window slices concatenated batch by batch, then
    calc_pdist's loop over windows. For tests and benchmarks/bench_metrics_lse.py."""
    imtv = _video_tensor(video_crops, model.config.crop_size)[None]  # (1, 3, T, S, S)
    cct = _mfcc_tensor(audio_int16_16k)[None, None]  # (1, 1, 13, M)
    min_length = min(imtv.shape[2], math.floor(len(audio_int16_16k) / SAMPLES_PER_FRAME))
    lastframe = min_length - 5
    _check_length(lastframe, imtv.shape[2], len(audio_int16_16k))
    model.eval()
    device = _model_device(model)
    im_feat, cc_feat = [], []
    for i in range(0, lastframe, batch_size):
        im_batch = [imtv[:, :, vframe:vframe + 5, :, :] for vframe in range(i, min(lastframe, i + batch_size))]
        im_feat.append(model.forward_lip(torch.cat(im_batch, 0).to(device)).cpu())
        cc_batch = [cct[:, :, :, vframe * 4:vframe * 4 + 20] for vframe in range(i, min(lastframe, i + batch_size))]
        cc_feat.append(model.forward_aud(torch.cat(cc_batch, 0).to(device)).cpu())
    dists = _calc_pdist(torch.cat(im_feat, 0), torch.cat(cc_feat, 0), vshift)
    mdist = torch.mean(torch.stack(dists, 1), 1)  # (2 vshift + 1,)
    minval, minidx = torch.min(mdist, 0)
    offset = vshift - int(minidx)
    conf = torch.median(mdist) - minval
    return LseResult(lse_d=float(minval), lse_c=float(conf), offset_frames=int(offset),
                     mean_dists=mdist.numpy(), n_windows=len(dists))


# ---------------------------------------------------------------------------------------------------------------
# AVSync variant
# ---------------------------------------------------------------------------------------------------------------


def avsync_crops(frames: np.ndarray, face_boxes: np.ndarray | None = None,
                 size: int = AVSYNC_FACE_SIZE) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, size, size, 3): the box crops the pipeline and the training data use (the
    box as given, resized), or the whole frame resized when there are no boxes."""
    from generation.faces import crop_faces

    frames = np.asarray(frames)
    if face_boxes is None:
        return syncnet_crops(frames, None, size)
    boxes = np.asarray(face_boxes).astype(np.int64)
    h, w = frames.shape[1:3]
    boxes = np.stack([np.clip(boxes[:, 0], 0, w - 1), np.clip(boxes[:, 1], 0, h - 1),
                      np.clip(boxes[:, 2], 1, w), np.clip(boxes[:, 3], 1, h)], axis=1)
    return crop_faces(frames, boxes, size)


@torch.no_grad()
def avsync_embed_windows(face_crops: np.ndarray, audio: np.ndarray, model,
                         batch_size: int = BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """AVSyncNet embeddings (L2-normalised) of every window: (video (W, D), audio (W, D)) on the CPU.

    face_crops: (T, S, S, 3) uint8 RGB square crops; audio: (N,) float in [-1, 1] at 16 kHz.
    """
    from generation import audio as audio_features
    from generation.nets.avsyncnet import avsync_face_input

    crops = np.asarray(face_crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2] or crops.dtype != np.uint8:
        raise ValueError(f"face_crops must be (T, S, S, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
    n_windows = window_count(len(crops), len(audio))
    _check_length(n_windows, len(crops), len(audio))
    config = model.config
    mel = torch.from_numpy(audio_features.melspectrogram(np.asarray(audio, dtype=np.float32)))  # (80, M)
    faces = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).permute(3, 0, 1, 2).float() / 255.0
    faces = faces.unfold(1, WINDOW_FRAMES, 1).permute(1, 0, 4, 2, 3)  # (T-4, 3, 5, S, S) BGR [0, 1], a view
    starts = [audio_features.mel_window_start(v, FPS) for v in range(n_windows)]
    model.eval()
    device = _model_device(model)
    video_out, audio_out = [], []
    for start in range(0, n_windows, batch_size):
        stop = min(n_windows, start + batch_size)
        mels = torch.stack([mel[:, s:s + config.mel_frames] for s in starts[start:stop]])[:, None]  # (B,1,80,16)
        face_input = avsync_face_input(faces[start:stop].contiguous(), (config.face_height, config.face_width))
        audio_emb, video_emb = model(mels.to(device), face_input.to(device))
        video_out.append(video_emb.cpu())
        audio_out.append(audio_emb.cpu())
    return torch.cat(video_out), torch.cat(audio_out)


def avsync(face_crops: np.ndarray, audio: np.ndarray, model, vshift: int = VSHIFT,
           batch_size: int = BATCH_SIZE) -> AvsResult:
    """AVS-D, AVS-C and the offset of one clip with AVSyncNet ``model`` (module docstring).

    face_crops: (T, S, S, 3) uint8 RGB (:func:`avsync_crops`), 25 fps; audio: (N,) float32 [-1, 1], 16 kHz.
    """
    video_emb, audio_emb = avsync_embed_windows(face_crops, audio, model, batch_size)
    dists = offset_distances(video_emb, audio_emb, vshift, metric="cosine")
    avs_d, avs_c, offset, mean_dists = summarise(dists, vshift)
    return AvsResult(avs_d=avs_d, avs_c=avs_c, offset_frames=offset, mean_dists=mean_dists,
                     n_windows=len(video_emb))


# ---------------------------------------------------------------------------------------------------------------
# Clip-level entry points (generation/metrics/base.py)
# ---------------------------------------------------------------------------------------------------------------


def _check_clip(pair: ClipPair, metric: str, *, median_filtered_boxes: bool) -> None:
    if abs(pair.fps - FPS) > 1e-3:
        raise MetricUnavailable(f"{metric} is defined on 25 fps video (SyncNet's 4 MFCC frames per video frame); "
                                f"this clip is {pair.fps:g} fps")
    if pair.sample_rate != SAMPLE_RATE:
        raise MetricUnavailable(f"{metric} needs 16 kHz audio; this clip's is {pair.sample_rate} Hz")
    usable = min(pair.n_frames, math.floor(len(pair.audio) / SAMPLES_PER_FRAME))
    if usable < MIN_FRAMES:
        raise MetricUnavailable(f"{metric} needs at least {MIN_FRAMES} frames of video with audio (one 5-frame "
                                f"window, as syncnet_python counts them); this clip has {pair.n_frames} frames and "
                                f"{len(pair.audio) / SAMPLES_PER_FRAME:.2f} frames' worth of audio")
    if median_filtered_boxes and pair.face_boxes is not None and pair.n_frames <= MEDIAN_KERNEL // 2:
        raise MetricUnavailable(f"{metric}'s face crops (run_pipeline.py crop_video) need at least "
                                f"{MEDIAN_KERNEL // 2 + 1} frames for their 13-frame median filter; this clip has "
                                f"{pair.n_frames}")


def lse_metrics(pair: ClipPair, model=None, *, vshift: int = VSHIFT, batch_size: int = BATCH_SIZE) -> dict[str, float]:
    """``{"lse_d", "lse_c", "lse_offset"}`` of ``pair.generated`` with ``pair.audio``.

    ``model``: a SyncNet (``generation.nets.syncnet``); None loads the installed ``syncnet_v2.model``.
    Raises MetricUnavailable (with the reason) when the weights are not installed, the clip is too short, or it
    is not 25 fps / 16 kHz.
    """
    _check_clip(pair, "LSE", median_filtered_boxes=True)
    if model is None:
        from generation.metrics.syncnet_weights import load_syncnet_v2

        model = base.installed_or_unavailable(load_syncnet_v2)
    crops = syncnet_crops(pair.generated, pair.face_boxes, model.config.crop_size)
    result = lse(crops, to_int16_scale(pair.audio), model, vshift=vshift, batch_size=batch_size)
    return {"lse_d": result.lse_d, "lse_c": result.lse_c, "lse_offset": float(result.offset_frames)}


def avsync_metrics(pair: ClipPair, model=None, *, vshift: int = VSHIFT,
                   batch_size: int = BATCH_SIZE) -> dict[str, float]:
    """``{"avs_d", "avs_c", "avs_offset"}`` of ``pair.generated`` with ``pair.audio`` (AVSyncNet variant).

    ``model``: an AVSyncNet; None loads the installed ``avsyncnet.pt``. Raises MetricUnavailable as
    :func:`lse_metrics` does.
    """
    _check_clip(pair, "AVSync", median_filtered_boxes=False)
    if model is None:
        from generation.metrics.syncnet_weights import load_avsyncnet

        model = base.installed_or_unavailable(load_avsyncnet)
    crops = avsync_crops(pair.generated, pair.face_boxes)
    result = avsync(crops, pair.audio, model, vshift=vshift, batch_size=batch_size)
    return {"avs_d": result.avs_d, "avs_c": result.avs_c, "avs_offset": float(result.offset_frames)}
