"""LSE-D / LSE-C (generation/metrics/lse.py): the fast path against syncnet_python's loop, the offset search, the
crops, the clip contract, and the committed tiny SyncNet telling aligned from shifted audio on held-out clips."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from generation import faces, weights
from generation.metrics import syncnet_weights
from generation.metrics.base import ClipPair, MetricUnavailable
from generation.metrics.lse import (
    avsync,
    avsync_crops,
    avsync_metrics,
    lse,
    lse_metrics,
    lse_reference_loop,
    offset_distances,
    summarise,
    syncnet_crops,
    to_int16_scale,
)
from generation.nets.avsyncnet import AVSYNCNET_TINY, AVSyncNet, avsync_face_input
from generation.nets.syncnet import SYNCNET_V2_TINY, SyncNetV2


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and running statistics, so that eval-mode outputs depend on the input and the offset."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_random():
    torch.manual_seed(0)
    return randomised(SyncNetV2(SYNCNET_V2_TINY), 1)


def random_clip(n_frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random crops (a moving blob, so neighbouring frames resemble each other) and speech-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    crops = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for t in range(n_frames):
        cy, cx = size / 2 + size / 4 * np.sin(0.7 * t + seed), size / 2 + size / 4 * np.cos(0.3 * t)
        blob = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 6) ** 2))
        crops[t] = np.clip(blob[..., None] * rng.uniform(0.5, 1, 3) + rng.normal(0, 8, (size, size, 3)), 0, 255)
    envelope = np.repeat(rng.uniform(0, 1, n_frames), 640)
    audio = np.clip(envelope * rng.normal(0, 4000, n_frames * 640), -32768, 32767).astype(np.int16)
    return crops, audio


# --- the fast path is the reference loop ------------------------------------------------------------------


@pytest.mark.parametrize("n_frames", [40, 12], ids=["more windows than offsets", "fewer windows than offsets"])
def test_fast_path_equals_the_syncnet_python_loop(tiny_random, n_frames):
    crops, audio = random_clip(n_frames, 96, seed=n_frames)
    fast = lse(crops, audio, tiny_random)
    loop = lse_reference_loop(crops, audio, tiny_random)
    assert fast.n_windows == loop.n_windows == n_frames - 5
    np.testing.assert_allclose(fast.mean_dists, loop.mean_dists, rtol=1e-5)
    assert fast.lse_d == pytest.approx(loop.lse_d, rel=1e-5)
    assert fast.lse_c == pytest.approx(loop.lse_c, rel=1e-4, abs=1e-5)
    assert fast.offset_frames == loop.offset_frames
    assert len(fast.mean_dists) == 31 and fast.mean_dists.std() > 0  # the offsets are not all alike


def test_batch_size_and_vshift_do_not_change_the_definition(tiny_random):
    crops, audio = random_clip(30, 96, seed=5)
    a = lse(crops, audio, tiny_random, vshift=7, batch_size=3)
    b = lse_reference_loop(crops, audio, tiny_random, vshift=7, batch_size=20)
    assert len(a.mean_dists) == 15
    np.testing.assert_allclose(a.mean_dists, b.mean_dists, rtol=1e-5)


def test_windows_follow_min_length_minus_five(tiny_random):
    crops, audio = random_clip(30, 96, seed=6)
    assert lse(crops, audio[:20 * 640 + 639], tiny_random).n_windows == 15  # the audio covers 20 frames
    assert lse(crops[:6], audio, tiny_random).n_windows == 1
    with pytest.raises(ValueError, match="at least 6 frames"):
        lse(crops[:5], audio, tiny_random)


def test_offset_distances_is_calc_pdist_for_both_metrics():
    generator = torch.Generator().manual_seed(3)
    video, audio = torch.randn(9, 16, generator=generator), torch.randn(9, 16, generator=generator)
    vshift = 4
    padded = F.pad(audio, (0, 0, vshift, vshift))
    expected = torch.stack([F.pairwise_distance(video[[i]].repeat(9, 1), padded[i:i + 9]) for i in range(9)])
    torch.testing.assert_close(offset_distances(video, audio, vshift), expected)

    unit_video, unit_audio = F.normalize(video, dim=1), F.normalize(audio, dim=1)
    padded = F.pad(unit_audio, (0, 0, vshift, vshift))
    expected = torch.stack([1 - F.cosine_similarity(unit_video[[i]].repeat(9, 1), padded[i:i + 9], eps=1e-12)
                            for i in range(9)])
    torch.testing.assert_close(offset_distances(unit_video, unit_audio, vshift, metric="cosine"), expected)


# --- the offset search -----------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [-6, -1, 0, 3, 12])
def test_offset_search_recovers_a_known_audio_delay(delay):
    """Audio delayed by k frames (window j holds the sound of frame j - k) gives offset -k and the smallest mean
    distance at that candidate; LSE-C is the median minus that minimum."""
    generator = torch.Generator().manual_seed(10 + delay)
    n, dim, vshift = 60, 32, 15
    video = torch.randn(n, dim, generator=generator) * 3
    audio = torch.randn(n, dim, generator=generator) * 3  # unrelated where no shifted partner exists
    for j in range(n):
        if 0 <= j - delay < n:
            audio[j] = video[j - delay] + 0.1 * torch.randn(dim, generator=generator)
    lse_d, lse_c, offset, mean_dists = summarise(offset_distances(video, audio, vshift), vshift)
    assert offset == -delay
    assert lse_d == pytest.approx(mean_dists.min()) and np.argmin(mean_dists) == vshift + delay
    assert lse_c == pytest.approx(float(np.median(mean_dists)) - lse_d, rel=1e-6)
    assert lse_c > 1


def test_cosine_offset_search_recovers_a_known_delay_too():
    generator = torch.Generator().manual_seed(4)
    video = F.normalize(torch.rand(40, 16, generator=generator), dim=1)
    audio = torch.roll(video, shifts=2, dims=0)  # audio window j = video window j - 2: delayed by 2
    _, avs_c, offset, mean_dists = summarise(offset_distances(video, audio, 15, metric="cosine"), 15)
    assert offset == -2 and avs_c > 0
    assert 0 <= mean_dists.min() and mean_dists.max() <= 1


# --- crops ------------------------------------------------------------------------------------------------


def test_crops_with_boxes_follow_crop_video_geometry():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (15, 100, 120, 3), dtype=np.uint8)
    boxes = np.tile([30, 20, 70, 70], (15, 1))  # w 40, h 50: s = 25, centre (50, 45)
    crops = syncnet_crops(frames, boxes)
    # bsi = int(25 * 1.8) = 45; in the padded frame the centre is (95, 90): rows 65:135, cols 60:130 (70 = 2.8 s)
    padded = np.pad(frames[7], ((45, 45), (45, 45), (0, 0)), constant_values=110)
    expected = faces.resize(padded[65:135, 60:130], 224, 224)
    assert crops.shape == (15, 224, 224, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[7], expected)


def test_crop_boxes_are_median_filtered_and_padded_with_110():
    frames = np.zeros((15, 100, 100, 3), dtype=np.uint8)
    boxes = np.tile([2, 2, 42, 42], (15, 1)).astype(float)  # s = 20, centre (22, 22): cols from 22 - 28 = -6
    boxes[7] = [50, 50, 90, 90]  # a one-frame detector glitch
    crops = syncnet_crops(frames, boxes, size=64)
    np.testing.assert_array_equal(crops[7], crops[6])  # the 13-tap median ignores the glitch
    assert (crops[0, :, :6] == 110).all()  # the square reaches left of the image: 6 of its 56 columns are 110
    assert (crops[0, :, 8:] == 0).all()


def test_crops_without_boxes_resize_the_whole_frame():
    frames = np.random.default_rng(1).integers(0, 255, (3, 80, 60, 3), dtype=np.uint8)
    crops = syncnet_crops(frames, None)
    np.testing.assert_array_equal(crops[1], faces.resize(frames[1], 224, 224))


def test_too_few_frames_for_the_median_filter_are_refused():
    frames = np.zeros((6, 50, 50, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 7 frames"):
        syncnet_crops(frames, np.tile([10, 10, 40, 40], (6, 1)))


def test_float_audio_goes_to_the_int16_scale_exactly():
    samples = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    np.testing.assert_array_equal(to_int16_scale(samples.astype(np.float32) / 32768), samples)
    np.testing.assert_array_equal(to_int16_scale(np.array([1.5, -2.0])), [32767, -32768])


# --- the clip contract ------------------------------------------------------------------------------------


def clip_pair(n_frames: int, n_samples: int, fps: float = 25.0, boxes: bool = False) -> ClipPair:
    crops, audio = random_clip(max(n_frames, 1), 64, seed=7)
    audio = np.resize(audio, n_samples).astype(np.float32) / 32768
    face_boxes = np.tile([8, 8, 56, 56], (n_frames, 1)) if boxes else None
    return ClipPair(generated=crops[:n_frames], reference=None, audio=audio, fps=fps, face_boxes=face_boxes)


def test_clip_metrics_are_lse_of_the_crops_with_the_int16_audio(tiny_random):
    pair = clip_pair(20, 20 * 640, boxes=True)
    values = lse_metrics(pair, tiny_random)
    direct = lse(syncnet_crops(pair.generated, pair.face_boxes, 96), to_int16_scale(pair.audio), tiny_random)
    assert set(values) == {"lse_d", "lse_c", "lse_offset"}
    assert values == {"lse_d": direct.lse_d, "lse_c": direct.lse_c, "lse_offset": float(direct.offset_frames)}


def test_clips_shorter_than_one_window_are_unavailable(tiny_random):
    with pytest.raises(MetricUnavailable, match="at least 6 frames"):
        lse_metrics(clip_pair(5, 5 * 640), tiny_random)
    with pytest.raises(MetricUnavailable, match="at least 6 frames"):
        lse_metrics(clip_pair(30, 5 * 640 + 639), tiny_random)  # the audio covers fewer than 6 frames
    assert set(lse_metrics(clip_pair(6, 6 * 640), tiny_random)) == {"lse_d", "lse_c", "lse_offset"}
    with pytest.raises(MetricUnavailable, match="median filter"):
        lse_metrics(clip_pair(6, 6 * 640, boxes=True), tiny_random)


def test_other_frame_rates_are_unavailable(tiny_random):
    with pytest.raises(MetricUnavailable, match="25 fps"):
        lse_metrics(clip_pair(30, 30 * 640, fps=30.0), tiny_random)


def test_missing_weights_make_the_metrics_unavailable_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path))
    pair = clip_pair(20, 20 * 640)
    with pytest.raises(MetricUnavailable, match="syncnet_v2.model") as lse_missing:
        lse_metrics(pair)
    assert syncnet_weights.SYNCNET_V2_URL in str(lse_missing.value)
    with pytest.raises(MetricUnavailable, match="avsyncnet.pt"):
        avsync_metrics(pair)
    with pytest.raises(weights.WeightsMissingError, match="avsyncnet.pt"):
        syncnet_weights.load_avsyncnet()


# --- the AVSync variant -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def avsyncnet_random():
    torch.manual_seed(2)
    return randomised(AVSyncNet(AVSYNCNET_TINY), 3)


@pytest.mark.slow  # AVSyncNet's tiny ResNet-50 trunk and librosa's first mel take ~10-25 s on 2 CPU cores
def test_avsync_is_the_same_offset_search_on_one_minus_cosine(avsyncnet_random):
    from generation import audio as audio_features

    crops, audio_int16 = random_clip(9, 96, seed=8)
    audio = audio_int16.astype(np.float32) / 32768
    result = avsync(crops, audio, avsyncnet_random)

    mel = torch.from_numpy(audio_features.melspectrogram(audio))  # (80, M)
    bgr = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).permute(3, 0, 1, 2).float() / 255  # (3, T, S, S)
    video_emb, audio_emb = [], []
    with torch.no_grad():
        for v in range(9 - 5):
            start = audio_features.mel_window_start(v, 25.0)
            a, f = avsyncnet_random(mel[None, None, :, start:start + 16], avsync_face_input(bgr[None, :, v:v + 5]))
            audio_emb.append(a[0])
            video_emb.append(f[0])
    video_emb, audio_emb = torch.stack(video_emb), torch.stack(audio_emb)
    padded = F.pad(audio_emb, (0, 0, 15, 15))
    dists = torch.stack([1 - (video_emb[[i]] * padded[i:i + 31]).sum(1) for i in range(4)])  # (4, 31)
    mean = dists.mean(0)
    np.testing.assert_allclose(result.mean_dists, mean.numpy(), rtol=1e-5, atol=1e-6)
    assert result.avs_d == pytest.approx(float(mean.min()), rel=1e-5)
    assert result.avs_c == pytest.approx(float(mean.median() - mean.min()), rel=1e-4, abs=1e-6)
    assert result.offset_frames == 15 - int(mean.argmin())
    assert result.n_windows == 4


@pytest.mark.slow
def test_avsync_clip_metrics_use_box_crops_at_96(avsyncnet_random):
    pair = clip_pair(7, 7 * 640, boxes=True)
    values = avsync_metrics(pair, avsyncnet_random)
    direct = avsync(avsync_crops(pair.generated, pair.face_boxes), pair.audio, avsyncnet_random)
    assert values == {"avs_d": direct.avs_d, "avs_c": direct.avs_c, "avs_offset": float(direct.offset_frames)}
    assert 0 <= values["avs_d"] <= 1


# --- the committed tiny SyncNet on held-out corpus clips ----------------------------------------------------


@pytest.fixture(scope="module")
def held_out_clips(tmp_path_factory):
    """Two clips of the demo study's corpus (seed 0; the tiny SyncNet trained on seed 7), with the face boxes the
    training data had (dlib, padded [0, 10, 0, 0], smoothed over 5 frames)."""
    from generation import corpus, media

    config = corpus.CorpusConfig(faces=("astronaut",), voices=("en-us", "en+f3"), sentences_per_voice=1,
                                 size=160, seed=0)
    clips = []
    for item in corpus.build_corpus(tmp_path_factory.mktemp("lse-held-out"), config):
        frames, fps = media.read_video(item.video_path)
        detections = faces.DlibFaceDetector().detect_batch(frames)
        boxes = faces.fill_missing_boxes([d[0, :4] if len(d) else None for d in detections], max_gap=12)
        boxes = faces.smooth_boxes(faces.pad_boxes(boxes, (0, 10, 0, 0), frames.shape[2], frames.shape[1]), 5)
        clips.append((frames, fps, media.read_audio(item.audio_path), boxes))
    return clips


def moved(audio: np.ndarray, frames: int) -> np.ndarray:
    """The audio ``frames`` video frames (640 samples each) later (earlier if negative), the same length, the gap
    filled with silence."""
    pad = np.zeros(abs(frames) * 640, dtype=audio.dtype)
    if frames >= 0:
        return np.concatenate([pad, audio])[:len(audio)]
    return np.concatenate([audio[-frames * 640:], pad])


@pytest.mark.slow
@pytest.mark.parametrize("delay", [5, -5], ids=["audio 5 frames late", "audio 5 frames early"])
def test_tiny_syncnet_scores_aligned_audio_better_than_audio_shifted_by_five_frames(held_out_clips, delay):
    """Every clip: lower LSE-D aligned than shifted. LSE-C (median - min over offsets) is held on the mean over
    the clips: the offset search re-aligns a shifted clip, which then only loses the windows at its ends, so on
    a single clip LSE-C can tie (tiny SyncNet, 16 held-out clips x 2 directions: LSE-D 32/32, LSE-C 31/32)."""
    model = syncnet_weights.load_demo_syncnet_v2_tiny()
    aligned_c, shifted_c = [], []
    for frames, fps, audio, boxes in held_out_clips:
        aligned = lse_metrics(ClipPair(frames, None, audio, fps, face_boxes=boxes), model)
        shifted = lse_metrics(ClipPair(frames, None, moved(audio, delay), fps, face_boxes=boxes), model)
        assert aligned["lse_d"] < shifted["lse_d"]
        assert aligned["lse_offset"] == 0 and shifted["lse_offset"] == -delay
        aligned_c.append(aligned["lse_c"])
        shifted_c.append(shifted["lse_c"])
    assert np.mean(aligned_c) > np.mean(shifted_c)


@pytest.mark.slow
def test_tiny_syncnet_finds_the_offset_of_shifted_audio(held_out_clips):
    model = syncnet_weights.load_demo_syncnet_v2_tiny()
    frames, fps, audio, boxes = held_out_clips[1]
    crops = syncnet_crops(frames, boxes, model.config.crop_size)
    for delay in (-12, -4, -1, 1, 3, 9):
        assert lse(crops, to_int16_scale(moved(audio, delay)), model).offset_frames == -delay
