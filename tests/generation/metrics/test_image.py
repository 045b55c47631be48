"""PSNR and SSIM equal scikit-image's, configured as Wang et al. (2004)."""

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from generation.metrics.image import mean_finite, psnr, ssim


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=0)


def test_ssim_equals_skimage_on_random_colour_images():
    rng = np.random.default_rng(0)
    a = rng.random((3, 40, 52))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = ssim(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert ours == pytest.approx(skimage_ssim(a, b, 1.0), abs=1e-6)


def test_ssim_equals_skimage_on_a_real_photo_in_uint8_range():
    photo = skdata.astronaut()[100:228, 150:278].transpose(2, 0, 1).astype(np.float64)  # (3, 128, 128)
    blurred = photo.copy()
    blurred[:, 1:-1, 1:-1] = (photo[:, :-2, 1:-1] + photo[:, 2:, 1:-1] + photo[:, 1:-1, 1:-1]) / 3
    ours = ssim(torch.from_numpy(photo), torch.from_numpy(blurred), data_range=255).item()
    assert ours == pytest.approx(skimage_ssim(photo, blurred, 255.0), abs=1e-6)


def test_ssim_of_identical_and_constant_images():
    image = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(image, image), torch.ones(2))
    constant = torch.full((1, 1, 12, 12), 0.5)
    assert ssim(constant, constant).item() == pytest.approx(1.0)
    assert ssim(constant, constant * 0.5).item() < 1.0


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))


def test_psnr_equals_skimage_and_is_infinite_for_identical_images():
    rng = np.random.default_rng(1)
    a = rng.random((3, 20, 20))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-4)
    values = psnr(torch.from_numpy(np.stack([a, a])), torch.from_numpy(np.stack([a, b])))
    assert math.isinf(values[0].item())
    assert mean_finite(values) == pytest.approx(values[1].item())
