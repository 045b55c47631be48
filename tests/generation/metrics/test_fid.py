"""FID as pytorch-fid 0.3.0: the stable Fréchet distance equals the reference algorithm (scipy sqrtm), running
feature statistics equal np.mean / np.cov, features of uint8 frames, the weights loader, and the refusals."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from generation.metrics import fid as fid_module
from generation.metrics import fid_weights
from generation.metrics.base import MetricUnavailable
from generation.metrics.fid import (FeatureStats, feature_stats, fid, frechet_distance, frechet_distance_from_stats,
                                    frechet_distance_reference, inception_features)
from generation.nets import inception_fid
from generation.weights import WeightsMismatchError, WeightsMissingError

pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the reference's sqrtm on singular input

FAST = dataclasses.replace(inception_fid.TINY, input_size=107)  # the tiny net at a smaller input: plumbing tests




def relu_features(rng, n: int, dim: int, mixing: np.ndarray, scale: float = 1.0, shift: float = 0.3) -> np.ndarray:
    """(n, dim) non-negative, correlated features, like pool3 features (averages of ReLU outputs)."""
    return np.maximum(rng.standard_normal((n, dim)) @ mixing * scale + shift, 0)


def gaussians(seed: int, dim: int, n1: int, n2: int):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    x, y = relu_features(rng, n1, dim, mixing), relu_features(rng, n2, dim, mixing, 1.2, 0.35)
    return x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)


# ---------------------------------------------------------------------------------------------------------------
# The Fréchet distance
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stable_frechet_distance_equals_the_reference_on_full_rank_covariances(seed):
    stats = gaussians(seed, dim=64, n1=600, n2=900)
    assert frechet_distance(*stats) == pytest.approx(frechet_distance_reference(*stats), rel=1e-6)


@pytest.mark.parametrize("n1, n2", [(20, 40), (12, 500), (500, 12), (2, 3)])
def test_stable_frechet_distance_equals_the_reference_with_fewer_samples_than_dimensions(n1, n2):
    mu1, sigma1, mu2, sigma2 = gaussians(3, dim=96, n1=n1, n2=n2)
    assert np.linalg.matrix_rank(sigma1) < 96 or np.linalg.matrix_rank(sigma2) < 96
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours == pytest.approx(frechet_distance_reference(mu1, sigma1, mu2, sigma2), rel=1e-6)


def test_stable_frechet_distance_equals_the_reference_on_random_spd_covariances():
    rng = np.random.default_rng(4)
    dim = 50
    for _ in range(3):
        a, b = rng.standard_normal((dim, dim)), rng.standard_normal((dim, dim)) * rng.uniform(0.1, 10)
        sigma1, sigma2 = a @ a.T + 1e-3 * np.eye(dim), b @ b.T
        mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
        assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
            frechet_distance_reference(mu1, sigma1, mu2, sigma2), rel=1e-6)


def test_commuting_covariances_give_the_closed_form_exactly_even_when_singular():
    # diag(a), diag(b): tr sqrt(Σ1 Σ2) = Σ sqrt(a_i b_i); zeros make both covariances singular.
    a = np.array([4.0, 0.0, 2.5, 1.0, 0.0, 9.0])
    b = np.array([1.0, 3.0, 0.0, 1.0, 0.0, 16.0])
    mu1, mu2 = np.arange(6.0), np.arange(6.0)[::-1]
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-13)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((6, 6)))  # same value in any basis
    rotated = [rotation @ np.diag(v) @ rotation.T for v in (a, b)]
    assert frechet_distance(mu1, rotated[0], mu2, rotated[1]) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n", [1000, 10])
def test_identical_distributions_are_at_distance_zero(n):
    mu, sigma, _, _ = gaussians(6, dim=64, n1=n, n2=2)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-10 * np.trace(sigma)
    assert abs(frechet_distance_reference(mu, sigma, mu, sigma)) < 1e-5 * np.trace(sigma)


def test_a_zero_covariance_and_equal_means_leave_only_the_other_trace():
    mu, sigma, _, _ = gaussians(7, dim=16, n1=50, n2=2)
    assert frechet_distance(mu, np.zeros((16, 16)), mu, sigma) == pytest.approx(np.trace(sigma), rel=1e-12)
    assert frechet_distance(mu, sigma, mu + 1, np.zeros((16, 16))) == pytest.approx(np.trace(sigma) + 16, rel=1e-12)


def test_reference_retries_with_an_offset_when_sqrtm_fails_and_the_stable_one_needs_none(monkeypatch, caplog):
    a, b = np.array([4.0, 0.0, 2.5, 1.0]), np.array([1.0, 3.0, 0.0, 1.0])
    mu1, mu2 = np.zeros(4), np.ones(4)
    calls = []
    real_sqrtm = scipy.linalg.sqrtm

    def failing_once(matrix, *args, **kwargs):  # what older SciPy returned for some singular products
        calls.append(matrix.copy())
        if len(calls) == 1:
            return np.full_like(matrix, np.nan), np.inf
        return real_sqrtm(matrix)

    monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", failing_once)
    with caplog.at_level(logging.WARNING, logger="generation.metrics.fid"):
        reference = frechet_distance_reference(mu1, np.diag(a), mu2, np.diag(b))
    eps = fid_module.REFERENCE_EPS
    np.testing.assert_allclose(calls[1], np.diag((a + eps) * (b + eps)))
    assert "singular product" in caplog.text
    assert reference == pytest.approx(4 + a.sum() + b.sum() - 2 * np.sqrt((a + eps) * (b + eps)).sum(), rel=1e-12)
    exact = 4 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-13)
    assert reference == pytest.approx(exact, abs=4 * np.sqrt(eps) * np.sqrt(a.max() + b.max()))


def test_reference_refuses_a_square_root_with_a_large_imaginary_diagonal():
    with pytest.raises(ValueError, match="Imaginary component"):
        frechet_distance_reference(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_frechet_distance_refuses_mismatched_or_non_finite_input():
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="one Gaussian"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="negative variances"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


# ---------------------------------------------------------------------------------------------------------------
# Feature statistics
# ---------------------------------------------------------------------------------------------------------------


def test_feature_stats_equal_np_mean_and_np_cov_whatever_the_batches_and_merges():
    rng = np.random.default_rng(8)
    features = relu_features(rng, 257, 32, rng.standard_normal((32, 32)) / 6).astype(np.float32)
    one_go = FeatureStats.from_features(features)
    parts = [FeatureStats(32).update(features[:1]).update(features[1:100]),
             FeatureStats.from_features(features[100:101]), FeatureStats(32),
             FeatureStats.from_features(features[101:])]
    merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    for stats in (one_go, merged):
        assert stats.n == 257
        np.testing.assert_allclose(stats.mean, np.mean(features.astype(np.float64), axis=0), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=1e-12, atol=1e-15)
    assert parts[0].n == 100  # merge leaves its operands alone


def test_feature_stats_keep_the_covariance_of_features_with_a_large_offset():
    # Σxxᵀ − n·μμᵀ would lose ~8 of 16 digits here; the centred pairwise update does not.
    rng = np.random.default_rng(9)
    features = rng.standard_normal((400, 8)) * 1e-2 + 1e4
    stats = FeatureStats(8)
    for chunk in np.array_split(features, 7):
        stats.update(chunk)
    np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=1e-8)


def test_feature_stats_round_trip_through_bytes_and_npz_files(tmp_path):
    rng = np.random.default_rng(10)
    stats = FeatureStats.from_features(rng.random((5, 6)))
    for restored in (FeatureStats.from_bytes(stats.to_bytes()), FeatureStats.load(stats.save(tmp_path / "clip.npz"))):
        assert restored.n == 5 and restored.dim == 6
        np.testing.assert_array_equal(restored.mean, stats.mean)
        np.testing.assert_array_equal(restored.cov, stats.cov)
    resumed = FeatureStats.from_bytes(stats.to_bytes()).update(rng.random((3, 6)))
    assert resumed.n == 8
    buffer = tmp_path / "other.npz"
    np.savez(buffer, mu=np.zeros(6), sigma=np.eye(6))  # pytorch-fid's --save-stats file is not ours
    with pytest.raises(ValueError, match="format"):
        FeatureStats.load(buffer)


def test_feature_stats_refuse_wrong_shapes_and_too_few_samples():
    stats = FeatureStats(4)
    with pytest.raises(ValueError):
        stats.update(np.zeros((2, 5)))
    with pytest.raises(ValueError):
        stats.merge(FeatureStats(5))
    with pytest.raises(ValueError, match="non-finite"):
        stats.update(np.full((1, 4), np.inf))
    with pytest.raises(MetricUnavailable):
        _ = stats.mean
    stats.update(np.ones((1, 4)))
    with pytest.raises(MetricUnavailable, match="at least 2"):
        _ = stats.cov


def test_fid_of_fewer_than_two_samples_on_a_side_is_unavailable():
    rng = np.random.default_rng(11)
    many, one = FeatureStats.from_features(rng.random((10, 3))), FeatureStats.from_features(rng.random((1, 3)))
    with pytest.raises(MetricUnavailable, match="at least 2 frames on each side"):
        frechet_distance_from_stats(many, one)
    with pytest.raises(MetricUnavailable, match="at least 2"):
        frechet_distance_from_stats(FeatureStats(3), many)


# ---------------------------------------------------------------------------------------------------------------
# Features of frames and the whole metric (tiny random net)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return inception_fid.build_inception_fid(FAST).requires_grad_(False).eval()


def frames(seed: int, n: int, height: int = 36, width: int = 44) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def test_inception_features_are_the_net_on_frames_divided_by_255_in_float64(tiny_model):
    video = frames(12, 5)
    features = inception_features(tiny_model, video, batch_size=2)
    with torch.inference_mode():
        direct = tiny_model(torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255).double().numpy()
    assert features.dtype == np.float64 and features.shape == (5, FAST.feature_dim)
    np.testing.assert_allclose(features, direct, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(inception_features(tiny_model, video), features, rtol=1e-5, atol=1e-7)
    assert inception_features(tiny_model, video[:0]).shape == (0, FAST.feature_dim)
    with pytest.raises(ValueError, match="uint8"):
        inception_features(tiny_model, video.astype(np.float32))


def test_feature_stats_of_clips_and_single_frames_of_mixed_sizes_equal_those_of_all_features(tiny_model):
    clips = [frames(13, 3), frames(14, 1)[0], frames(15, 4, 50, 30), frames(16, 2)]
    stats = feature_stats(iter(clips), tiny_model, batch_size=3)
    expected = np.concatenate([inception_features(tiny_model, clip) for clip in clips])
    assert stats.n == 10
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.cov, np.cov(expected, rowvar=False), rtol=1e-4, atol=1e-8)


def test_fid_of_two_frame_sets_is_the_reference_distance_of_their_features(tiny_model):
    generated, reference = [frames(17, 6), frames(18, 5)], [frames(19, 9)]
    value = fid(generated, reference, tiny_model)
    a = np.concatenate([inception_features(tiny_model, clip) for clip in generated])
    b = inception_features(tiny_model, reference[0])
    expected = frechet_distance_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert value == pytest.approx(expected, rel=1e-4)
    assert value > 0
    assert abs(fid(generated, generated, tiny_model)) < 1e-9 * value


def test_fid_with_a_single_generated_frame_is_unavailable(tiny_model):
    with pytest.raises(MetricUnavailable, match="at least 2 frames"):
        fid([frames(20, 1)], [frames(21, 4)], tiny_model)


# ---------------------------------------------------------------------------------------------------------------
# The weights file
# ---------------------------------------------------------------------------------------------------------------


def test_missing_weights_raise_an_error_naming_the_file_and_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsMissingError) as raised:
        fid_weights.load_fid_inception()
    message = str(raised.value)
    assert str(tmp_path / "pt_inception-2015-12-05-6726825d.pth") in message
    assert ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth") in message
    with pytest.raises(MetricUnavailable, match="pt_inception-2015-12-05-6726825d.pth"):
        fid([frames(22, 2)], [frames(23, 2)])


def tiny_weights_file(path, *, seed: int = 0, drop_counters: bool = False):
    torch.manual_seed(seed)
    state = inception_fid.build_inception_fid(FAST).state_dict()
    if drop_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return state


def test_weights_load_strictly_frozen_in_eval_mode_and_cached_until_the_file_changes(tmp_path):
    path = tmp_path / fid_weights.FID_WEIGHTS_FILENAME
    state = tiny_weights_file(path, seed=1)
    model = fid_weights.load_fid_inception(path=path, config=FAST)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert fid_weights.load_fid_inception(path=path, config=FAST) is model
    replaced = tiny_weights_file(path, seed=2)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    reloaded = fid_weights.load_fid_inception(path=path, config=FAST)
    assert reloaded is not model
    assert torch.equal(reloaded.state_dict()["fc.weight"], replaced["fc.weight"])


def test_a_file_without_batch_norm_counters_loads_and_any_other_difference_is_refused(tmp_path):
    path = tmp_path / "no-counters.pth"
    tiny_weights_file(path, drop_counters=True)
    model = fid_weights.build_fid_inception(path, config=FAST)
    assert int(model.Conv2d_1a_3x3.bn.num_batches_tracked) == 0
    other = tmp_path / "released-layout.pth"
    tiny_weights_file(other)
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        fid_weights.build_fid_inception(other)  # a tiny file is not the released layout
    truncated = tmp_path / "truncated.pth"
    state = tiny_weights_file(truncated)
    del state["fc.bias"]
    torch.save(state, truncated)
    with pytest.raises(WeightsMismatchError, match="missing"):
        fid_weights.build_fid_inception(truncated, config=FAST)
