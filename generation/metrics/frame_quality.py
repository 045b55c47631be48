"""Per-clip PSNR, SSIM and LPIPS of a generated clip against its ground truth, on the whole frame, the face and the
mouth, in one batched torch pass over the clip. No Django.

Every metric is a function of a :class:`~generation.metrics.base.ClipPair` returning a
:class:`~generation.metrics.base.PerFrame`: one value per frame and the clip value, the mean of the finite per-frame
values. :func:`frame_quality` computes any set of them together (frames are converted once per chunk, each region
is cropped once, and the mouth values are read off the face computation), so a caller that wants several should
call it rather than the single-metric wrappers.

Regions: ``psnr``/``ssim``/``lpips`` on the whole frame; ``*_face`` on the face crop and ``*_mouth`` on the mouth
crop of :mod:`generation.metrics.regions` (both clips cut with the reference's face boxes and resized to
``crop_size``, default 128). The seed paper 000 (Geldhauser et al. 2025, discussion) found whole-image metrics blind
to small mouth artifacts that ruin the perceived quality; the mouth-region values are the response: the mouth crop
is the region the generators repaint, so a defect there moves the mouth value by the full amount instead of by the
mouth's share of the frame.

Faithful
--------
* PSNR: ``10 log10(255² / MSE)`` per frame, MSE over all pixels and the three channels, in float64: exactly
  ``skimage.metrics.peak_signal_noise_ratio(ref, gen, data_range=255)`` on the uint8 frames (or crops). Seed 002,
  eq. (D)-(E).
* SSIM: Wang, Bovik, Sheikh & Simoncelli (2004), seed 002 eq. (C): 11x11 Gaussian window, σ = 1.5, K1 = 0.01,
  K2 = 0.03, L = 255, population covariances, mean of the map over the positions whose window lies inside the
  image, mean over the three channels. That is ``skimage.metrics.structural_similarity(gen, ref,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``; computed in
  float64, it equals skimage to ~1e-12 (``tests/generation/metrics/test_frame_quality.py``). Same definition as
  :func:`generation.metrics.image.ssim`; this module has its own kernel because it is several times faster on the
  CPU (the separable blur is done with shifted adds instead of float64 ``conv2d``, which torch runs through a slow
  generic path), returns the map so that the mouth is read off the face map, and stays in float64 to the end.
* LPIPS: v0.1, AlexNet, linear heads (Zhang et al. 2018), inputs RGB scaled to [-1, 1] (``x / 127.5 - 1``), the
  model loaded by :func:`generation.perceptual_weights.load_lpips` from the released files; never a random
  backbone (:func:`load_lpips_metric` raises :class:`~generation.metrics.base.MetricUnavailable` naming
  ``alexnet-owt-7be5be79.pth`` when it is not installed).

UNVERIFIED choices
------------------
* Colour: RGB with the mean over channels (skimage's ``channel_axis``), not luma. Papers differ: Wang et al. define
  SSIM on luminance, ATVGnet's evaluation (Chen et al. 2019) takes SSIM on colour and PSNR on grey, super-resolution
  papers use Y of YCbCr; the seed papers do not say. RGB is what skimage computes for colour frames with
  ``channel_axis``, the most common tooling.
* No downsampling before SSIM (Wang's MATLAB ``ssim.m`` shrinks images larger than 256 px by
  ``round(min(H, W) / 256)``; skimage does not). Whole-frame SSIM of HD video therefore measures finer scales than
  the face crop does.
* Aggregation over frames: the clip value is the mean of the finite per-frame values. A frame identical to its
  ground truth has PSNR = +inf; it is left out of the mean (the number of such frames is
  ``np.isinf(result.frames).sum()``), and a clip whose frames are all identical gets +inf. Averaging per-frame
  PSNR (rather than the PSNR of the mean MSE) is what most talking-face papers do (metrics_models.md §6.4).
* LPIPS on the whole frame runs at the source resolution; LPIPS values depend on the resolution, so only the
  crop values are comparable across sources.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from generation.metrics import regions
from generation.metrics.base import ClipPair, MetricUnavailable, PerFrame

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # skimage: int(truncate 3.5 * sigma 1.5 + 0.5); an 11-tap window
SSIM_K1 = 0.01
SSIM_K2 = 0.03

PIXEL_METRICS = ("psnr", "ssim", "psnr_face", "ssim_face", "psnr_mouth", "ssim_mouth")
LPIPS_METRICS = ("lpips", "lpips_face", "lpips_mouth")
METRICS = PIXEL_METRICS + LPIPS_METRICS
LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"

# Memory per chunk of frames (uint8 frames and crops, float64 squared errors); SSIM then runs on blocks of a few
# images whose float64 maps fit in the CPU cache.
CHUNK_BYTES = 256 * 2**20
SSIM_BLOCK_BYTES = 8 * 2**20


# ---------------------------------------------------------------------------------------------------------------
# Kernels: (N, C, H, W) float64 tensors with values in [0, 255]
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def gaussian_taps(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> tuple[float, ...]:
    """The normalised 1-D Gaussian window, as scipy.ndimage builds it for skimage (float64)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return tuple(float(v) for v in w / w.sum())


def _blur_valid_block(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(..., H, W) -> (..., H - 10, W - 10): separable Gaussian filter at the positions whose window is inside."""
    taps = gaussian_taps()
    size = len(taps)
    h, w = t.shape[-2] - size + 1, t.shape[-1] - size + 1
    rows = t[..., 0:h, :] * taps[0]
    for k in range(1, size):
        rows.add_(t[..., k:k + h, :], alpha=taps[k])
    out = torch.mul(rows[..., 0:w], taps[0], out=out)
    for k in range(1, size):
        out.add_(rows[..., k:k + w], alpha=taps[k])
    return out


def blur_valid(t: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H - 10, W - 10): the Gaussian window at every position where it lies inside."""
    lead = t.shape[:-2]
    out = _blur_valid_block(t.reshape(-1, *t.shape[-2:]))
    return out.reshape(*lead, *out.shape[-2:])


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """The SSIM map (N, C, H - 10, W - 10) float64 of two (N, C, H, W) image batches (Wang et al. 2004 constants).

    Position (i, j) of the map is the window centred on pixel (i + 5, j + 5). The mean over a block of the map is
    the SSIM of the corresponding crop when the block keeps 5 pixels from the crop's edges (used for the mouth).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    size = 2 * SSIM_RADIUS + 1
    if min(x.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {x.shape[-2]}x{x.shape[-1]}")
    x, y = x.double(), y.double()
    # Four maps instead of five: the formula needs σx² + σy² only as a sum.
    stacked = torch.empty((4, *x.shape), dtype=torch.float64, device=x.device)
    stacked[0], stacked[1] = x, y
    torch.mul(x, x, out=stacked[2]).addcmul_(y, y)
    torch.mul(x, y, out=stacked[3])
    mu_x, mu_y, mean_squares, mean_xy = blur_valid(stacked)  # each (N, C, H - 10, W - 10)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    # In place where a map is not needed again: fewer fresh allocations, which dominate on large batches.
    mu_xy = mu_x * mu_y
    contrast = mean_xy.sub_(mu_xy).mul_(2).add_(c2)  # 2σxy + C2
    numerator = mu_xy.mul_(2).add_(c1).mul_(contrast)  # (2μxμy + C1)(2σxy + C2)
    means = mu_x.square_().add_(mu_y.square_())  # μx² + μy²
    spread = mean_squares.sub_(means).add_(c2)  # σx² + σy² + C2
    return numerator.div_(means.add_(c1).mul_(spread))


def ssim_means(x: torch.Tensor, y: torch.Tensor, row_slices: tuple[slice, ...] = (slice(None),),
               data_range: float = DATA_RANGE) -> list[np.ndarray]:
    """Per-image mean SSIM over rows of the map, ``[(N,) float64 for each of row_slices]``.

    The default is the whole map, i.e. the SSIM of each image. Computed a few images at a time (blocks of about
    :data:`SSIM_BLOCK_BYTES`) so that the float64 temporaries stay small and in the cache: far faster on a CPU
    than one pass over a large batch.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    per_image = 4 * x[0].numel() * 8
    step = len(x) if x.device.type != "cpu" else max(1, SSIM_BLOCK_BYTES // per_image)
    out = [np.empty(len(x)) for _ in row_slices]
    for start in range(0, len(x), step):
        smap = ssim_map(x[start:start + step], y[start:start + step], data_range)
        for values, rows in zip(out, row_slices):
            values[start:start + len(smap)] = smap[:, :, rows].mean(dim=(1, 2, 3)).cpu().numpy()
    return out


def squared_error_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, H) float64: the squared error of each image row, summed over channels and columns. Exact for integer
    pixel values (every partial sum is an integer below 2^53)."""
    return (x.double() - y.double()).square_().sum(dim=(1, 3))


def psnr_from_squared_error(total: torch.Tensor, n_values: int, data_range: float = DATA_RANGE) -> np.ndarray:
    """(N,) float64 PSNR in dB from summed squared errors over ``n_values`` values; +inf where the error is 0."""
    mse = total.double().cpu().numpy() / n_values
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range**2 / mse)


def clip_value(frames: np.ndarray) -> float:
    """The mean of the finite per-frame values; +inf if every value is +inf (all frames identical), NaN if none
    is finite otherwise."""
    frames = np.asarray(frames, dtype=np.float64)
    finite = frames[np.isfinite(frames)]
    if finite.size:
        return float(finite.mean())
    if frames.size and np.all(frames == np.inf):
        return math.inf
    return math.nan


def per_frame(frames: np.ndarray) -> PerFrame:
    frames = np.asarray(frames, dtype=np.float64)
    return PerFrame(clip_value(frames), frames)


# ---------------------------------------------------------------------------------------------------------------
# LPIPS model
# ---------------------------------------------------------------------------------------------------------------


def load_lpips_metric(device: str | torch.device = "cpu"):
    """LPIPS v0.1 (AlexNet) with the released backbone and heads, frozen, cached per device.

    Raises MetricUnavailable (its message names ``alexnet-owt-7be5be79.pth``, where to get it and the folder to put
    it in) when the backbone file, or the ``lpips`` package that ships the heads, is not installed. Never falls back
    to a random backbone.
    """
    from generation.weights import WeightsMissingError

    try:
        return _cached_lpips(str(device))
    except WeightsMissingError as exc:
        raise MetricUnavailable(f"LPIPS needs the AlexNet weights {LPIPS_BACKBONE_FILE}: {exc}") from exc


@functools.lru_cache(maxsize=4)
def _cached_lpips(device: str):
    from generation.perceptual_weights import load_lpips

    return load_lpips("alex", device=device)


def _model_device(model) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _lpips_distances(model, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(N,) LPIPS of two (N, 3, H, W) batches with uint8 values."""
    device = _model_device(model)
    scaled_x = x.to(device=device, dtype=torch.float32) / 127.5 - 1  # [-1, 1], as LPIPS expects
    scaled_y = y.to(device=device, dtype=torch.float32) / 127.5 - 1
    with torch.inference_mode():
        return model(scaled_x, scaled_y).flatten().double().cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------
# One pass over the clip
# ---------------------------------------------------------------------------------------------------------------


def _frames_tensor(frames: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8


def _chunk_frames(pair: ClipPair, wants_full: bool, crop_size: int, chunk_bytes: int) -> int:
    height, width = pair.generated.shape[1:3]
    side = height * width if wants_full else crop_size * crop_size
    per_frame_bytes = 3 * side * (2 + 8 + 8)  # two uint8 images, float64 differences and squares
    return max(1, chunk_bytes // per_frame_bytes)


def frame_quality(pair: ClipPair, names: tuple[str, ...] | list[str] = PIXEL_METRICS, *, lpips_model=None,
                  crop_size: int = regions.CROP_SIZE, device: str | torch.device | None = None,
                  chunk_bytes: int = CHUNK_BYTES) -> dict[str, PerFrame]:
    """Several frame metrics of one clip in a single pass: ``{name: PerFrame}`` for each of ``names``.

    Parameters
    ----------
    pair : ClipPair
        Needs the reference. Face/mouth metrics use ``pair.face_boxes`` (detected on the reference when absent; detect
        once with :func:`generation.metrics.regions.with_face_boxes` when computing several region metrics).
    names : sequence of str
        Any of :data:`METRICS`.
    lpips_model : LPIPS, optional
        For the LPIPS metrics; default :func:`load_lpips_metric` on ``device``.
    crop_size : int
        Side of the face crop (the mouth crop is ``crop_size // 2`` x ``crop_size``).
    device : str or torch.device, optional
        Where PSNR/SSIM run (default: CPU, or the LPIPS model's device when one is passed).
    chunk_bytes : int
        Rough memory bound of one chunk of frames.

    Raises
    ------
    MetricUnavailable
        No reference; no face (region metrics); LPIPS weights not installed.
    """
    names = tuple(names)
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown frame metrics {unknown}; known: {METRICS}")
    reference = pair.require_reference("/".join(names))
    generated = pair.generated
    wants = set(names)
    wants_full = bool(wants & {"psnr", "ssim", "lpips"})
    wants_crop = bool(wants & {"psnr_face", "ssim_face", "lpips_face", "psnr_mouth", "ssim_mouth", "lpips_mouth"})
    if wants_crop and crop_size // 2 < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"crop_size must be at least {2 * (2 * SSIM_RADIUS + 1)} (the mouth crop is half of it)")
    if wants & set(LPIPS_METRICS) and lpips_model is None:
        lpips_model = load_lpips_metric(device or "cpu")
    if device is None:
        device = _model_device(lpips_model) if lpips_model is not None else torch.device("cpu")
    boxes = regions.boxes_of(pair) if wants_crop else None
    mouth = regions.mouth_rows(crop_size)
    mouth_map_rows = slice(mouth.start, crop_size - 2 * SSIM_RADIUS)  # map rows whose window lies in the mouth

    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    step = _chunk_frames(pair, wants_full, crop_size, chunk_bytes)
    for start in range(0, pair.n_frames, step):
        stop = min(start + step, pair.n_frames)
        if wants_full:
            x = _frames_tensor(generated[start:stop], device)
            y = _frames_tensor(reference[start:stop], device)
            if "psnr" in wants:
                values["psnr"].append(psnr_from_squared_error(squared_error_rows(x, y).sum(dim=1), x[0].numel()))
            if "ssim" in wants:
                values["ssim"].extend(ssim_means(x, y))
            if "lpips" in wants:
                values["lpips"].append(_lpips_distances(lpips_model, x, y))
            del x, y
        if wants_crop:
            x = regions.crop_tensor(generated[start:stop], boxes[start:stop], crop_size).to(device)
            y = regions.crop_tensor(reference[start:stop], boxes[start:stop], crop_size).to(device)
            if wants & {"psnr_face", "psnr_mouth"}:
                rows = squared_error_rows(x, y)  # (N, S)
                if "psnr_face" in wants:
                    values["psnr_face"].append(psnr_from_squared_error(rows.sum(dim=1), x[0].numel()))
                if "psnr_mouth" in wants:
                    n_mouth = x[0, :, mouth].numel()
                    values["psnr_mouth"].append(psnr_from_squared_error(rows[:, mouth].sum(dim=1), n_mouth))
            if wants & {"ssim_face", "ssim_mouth"}:
                face_values, mouth_values = ssim_means(x, y, (slice(None), mouth_map_rows))
                if "ssim_face" in wants:
                    values["ssim_face"].append(face_values)
                if "ssim_mouth" in wants:
                    values["ssim_mouth"].append(mouth_values)
            if "lpips_face" in wants:
                values["lpips_face"].append(_lpips_distances(lpips_model, x, y))
            if "lpips_mouth" in wants:
                values["lpips_mouth"].append(_lpips_distances(lpips_model, x[:, :, mouth], y[:, :, mouth]))
    return {name: per_frame(np.concatenate(values[name])) for name in names}


# ---------------------------------------------------------------------------------------------------------------
# One metric at a time (each a function of a ClipPair, as the metric contract asks)
# ---------------------------------------------------------------------------------------------------------------


def psnr(pair: ClipPair) -> PerFrame:
    """PSNR (dB) of the whole frame, per frame and its clip mean."""
    return frame_quality(pair, ("psnr",))["psnr"]


def ssim(pair: ClipPair) -> PerFrame:
    """SSIM (Wang et al. 2004, RGB mean) of the whole frame."""
    return frame_quality(pair, ("ssim",))["ssim"]


def psnr_face(pair: ClipPair) -> PerFrame:
    """PSNR of the face crop (the reference's face box resized to 128 x 128)."""
    return frame_quality(pair, ("psnr_face",))["psnr_face"]


def ssim_face(pair: ClipPair) -> PerFrame:
    """SSIM of the face crop."""
    return frame_quality(pair, ("ssim_face",))["ssim_face"]


def psnr_mouth(pair: ClipPair) -> PerFrame:
    """PSNR of the mouth crop (lower half of the face crop, 64 x 128)."""
    return frame_quality(pair, ("psnr_mouth",))["psnr_mouth"]


def ssim_mouth(pair: ClipPair) -> PerFrame:
    """SSIM of the mouth crop."""
    return frame_quality(pair, ("ssim_mouth",))["ssim_mouth"]


def lpips(pair: ClipPair, model=None) -> PerFrame:
    """LPIPS v0.1 (AlexNet) of the whole frame; ``model`` default :func:`load_lpips_metric`."""
    return frame_quality(pair, ("lpips",), lpips_model=model)["lpips"]


def lpips_face(pair: ClipPair, model=None) -> PerFrame:
    """LPIPS v0.1 (AlexNet) of the face crop."""
    return frame_quality(pair, ("lpips_face",), lpips_model=model)["lpips_face"]


def lpips_mouth(pair: ClipPair, model=None) -> PerFrame:
    """LPIPS v0.1 (AlexNet) of the mouth crop."""
    return frame_quality(pair, ("lpips_mouth",), lpips_model=model)["lpips_mouth"]
