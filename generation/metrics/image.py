"""PSNR and SSIM on batches of images, in torch.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 13(4), 2004: an 11x11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, an explicit
data range L, population (not sample) covariances, and the mean of the SSIM map over the positions where the
window lies wholly inside the image. That is ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=L, channel_axis=...)``: skimage filters the whole image and
then crops (win_size - 1) / 2 = 5 pixels from every side before averaging, and the cropped positions are exactly
those whose window never touches the padding. Colour images: the mean over channels, as skimage does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# skimage: gaussian_filter(truncate=3.5) gives radius int(3.5 * 1.5 + 0.5) = 5, i.e. an 11-tap window.
SSIM_RADIUS = 5


def _gaussian_window(sigma: float, radius: int, *, device, dtype) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype)  # (2r+1,)


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    return images


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, (N,) in dB: 10·log10(L² / MSE); +inf for identical images."""
    images, references = _as_batch(images).double(), _as_batch(references).double()
    if images.shape != references.shape:
        raise ValueError(f"shapes differ: {tuple(images.shape)} and {tuple(references.shape)}")
    mse = (images - references).square().flatten(1).mean(dim=1)  # (N,)
    return (10 * torch.log10(data_range**2 / mse)).float()


def ssim(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image, (N,), with the Wang et al. (2004) constants (see the module docstring).

    images, references: (N, C, H, W) or (C, H, W), same shape, H and W at least 11.
    """
    x, y = _as_batch(images).double(), _as_batch(references).double()
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} and {tuple(y.shape)}")
    n, c, h, w = x.shape
    size = 2 * SSIM_RADIUS + 1
    if h < size or w < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {h}x{w}")
    g = _gaussian_window(SSIM_SIGMA, SSIM_RADIUS, device=x.device, dtype=x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter per channel
        t = t.reshape(n * c, 1, *t.shape[-2:])
        t = F.conv2d(t, g.view(1, 1, -1, 1))  # (NC, 1, H-10, W)
        t = F.conv2d(t, g.view(1, 1, 1, -1))  # (NC, 1, H-10, W-10)
        return t.reshape(n, c, *t.shape[-2:])

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).float()  # mean over channels and positions


def mean_finite(values: torch.Tensor) -> float:
    """Mean of the finite entries (PSNR of identical images is +inf), NaN when none is finite."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan
