"""Fréchet Inception Distance as pytorch-fid 0.3.0 computes it, no Django.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS
2017) is the Fréchet distance between two Gaussians fitted to the 2048-d pool3 features of the FID Inception-v3:

    d² = ||μ1 − μ2||² + tr Σ1 + tr Σ2 − 2 tr sqrt(Σ1 Σ2).

Reference code: mseitzer/pytorch-fid 0.3.0 ``src/pytorch_fid/fid_score.py`` (``get_activations``,
``calculate_activation_statistics``, ``calculate_frechet_distance``), research notes metrics_models.md §5.1.

Faithful to the reference code
------------------------------
* Features: frames are RGB uint8 -> float32 / 255 (torchvision ``ToTensor``), batches of 50, through
  :class:`generation.nets.inception_fid.FIDInceptionV3` (bilinear resize to 299, 2x − 1, pool3), checked against
  pytorch-fid itself (tests/generation/nets/test_inception_fid.py).
* Statistics: μ = the mean, Σ = the sample covariance with N − 1 (``np.cov(rowvar=False)``); FID needs at least
  2 samples per side (:class:`MetricUnavailable` otherwise).
* :func:`frechet_distance_reference` is the reference algorithm itself: ``scipy.linalg.sqrtm(Σ1 Σ2, disp=False)``;
  if the root has non-finite entries, a warning and a retry with Σ + 1e-6·I on both sides; a complex root raises
  ValueError when an imaginary part of its diagonal exceeds 1e-3, otherwise its real part is used.

Not from the reference code (our choices)
-----------------------------------------
* :func:`frechet_distance` computes tr sqrt(Σ1 Σ2) without a matrix square root: Σ1 = F Fᵀ (pivoted Cholesky,
  LAPACK ``dpstrf``, which also factors rank-deficient covariances), and the eigenvalues of Σ1 Σ2 are those of the
  symmetric PSD matrix Fᵀ Σ2 F, whose square roots are summed (eigenvalues below the rounding level
  ``n·eps·max λ`` count as 0). Everything in float64. Input is taken to be PSD (a covariance): only negative
  variances are refused, and rounding-level negative eigenvalues count as 0. It equals the reference to ~1e-7
  relative on realistic 2048-d covariances, full-rank or from fewer samples than dimensions, is several times faster
  (benchmarks/bench_metrics_fid.py), is real and finite by construction (no ε retry, no imaginary parts), and is
  exact where sqrtm is not (e.g. Σ1 = Σ2 from fewer samples than dimensions gives 0 up to rounding, the reference a
  ~1e-7 negative number).
* The reference's numbers depend on the installed SciPy: ``sqrtm`` was rewritten in SciPy 1.16 (recursive Schur in
  C), which returns finite roots for the singular products where older versions needed the ε retry; results from
  different SciPy versions agree to ~1e-7 relative, not bit for bit. [UNVERIFIED against SciPy < 1.16: only the
  installed 1.17 was run.]
* Statistics: float32 features stored as float64, then mean and covariance in float64, as the reference
  (``get_activations`` fills a float64 array); accumulated in batches instead of from one (N, 2048) array.
* :class:`FeatureStats` keeps (n, mean, Σ (x − mean)(x − mean)ᵀ) and merges with Chan et al.'s pairwise update
  (Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for computing sample variances", 1979)
  rather than raw sums of x and xxᵀ (torchmetrics): the same quantities, without the cancellation of
  Σxxᵀ − n μμᵀ. Its serialised form holds the full D×D matrix (32 MiB for D = 2048): for clips of fewer than
  ~4000 frames storing the features themselves is smaller.
* Frames are fed as decoded video frames (``(N, H, W, 3)`` uint8 RGB), not read from image files; pytorch-fid reads
  PNG/JPEG files with PIL (JPEG decoding would differ).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import lapack

from generation.metrics.base import MetricUnavailable

log = logging.getLogger(__name__)

BATCH_SIZE = 50  # pytorch-fid's default --batch-size
REFERENCE_EPS = 1e-6  # pytorch-fid's offset when sqrtm fails
REFERENCE_IMAGINARY_ATOL = 1e-3
STATS_FORMAT = "syncmos-fid-feature-stats-v1"
MIN_SAMPLES = 2


# ---------------------------------------------------------------------------------------------------------------
# The Fréchet distance
# ---------------------------------------------------------------------------------------------------------------


def _as_gaussian(mu, sigma, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{which}: mean {mu.shape} and covariance {sigma.shape} do not describe one Gaussian")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{which}: the mean or covariance has non-finite entries")
    if (np.diagonal(sigma) < 0).any():  # (a cheap necessary condition for PSD; the full check costs an eigh)
        raise ValueError(f"{which}: the covariance has negative variances on its diagonal")
    return mu, sigma


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(Σ1 Σ2) for symmetric PSD Σ1, Σ2 (D, D), via a pivoted Cholesky factor of Σ1 (module docstring)."""
    dim = len(sigma1)
    factor, pivots, rank, info = lapack.dpstrf(sigma1, lower=1, tol=-1.0)  # P^T Σ1 P = L Lᵀ; tol: n·eps·max diag
    if info < 0:
        raise ValueError(f"LAPACK dpstrf rejected argument {-info}")
    if rank == 0:  # Σ1 = 0
        return 0.0
    lower = np.tril(factor)[:, :rank]  # (D, r)
    f = np.empty_like(lower)
    f[pivots - 1] = lower  # Σ1 = F Fᵀ with F = P L
    inner = f.T @ sigma2 @ f  # (r, r), same non-zero eigenvalues as Σ1 Σ2
    inner = (inner + inner.T) / 2
    eigenvalues = scipy.linalg.eigh(inner, eigvals_only=True, driver="evr", check_finite=False)
    tolerance = max(eigenvalues.max(), 0.0) * dim * np.finfo(np.float64).eps
    return float(np.sqrt(eigenvalues[eigenvalues > tolerance]).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance d² between N(μ1, Σ1) and N(μ2, Σ2), numerically stable (module docstring).

    Parameters
    ----------
    mu1, mu2 : array_like, (D,)
        Means.
    sigma1, sigma2 : array_like, (D, D)
        Symmetric positive semi-definite covariances (rank-deficient allowed).

    Returns
    -------
    float
        ||μ1 − μ2||² + tr Σ1 + tr Σ2 − 2 tr sqrt(Σ1 Σ2); 0 up to rounding for identical Gaussians.

    References
    ----------
    Dowson & Landau, "The Fréchet distance between multivariate normal distributions", J. Multivariate Anal.
    12(3), 1982. Heusel et al., NeurIPS 2017.
    """
    mu1, sigma1 = _as_gaussian(mu1, sigma1, "first Gaussian")
    mu2, sigma2 = _as_gaussian(mu2, sigma2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the Gaussians have different dimensions: {len(mu1)} and {len(mu2)}")
    diff = mu1 - mu2
    trace_term = np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + trace_term)


def _sqrtm_with_error(matrix: np.ndarray) -> np.ndarray:
    # pytorch-fid calls sqrtm(..., disp=False) (and ignores the error estimate); SciPy 1.16 deprecated `disp`
    # and 1.18 removes it, with the same root either way. (SciPy returns a 1x1 input's root without the estimate.)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated", category=DeprecationWarning)
            result = scipy.linalg.sqrtm(matrix, disp=False)
    except TypeError:
        result = scipy.linalg.sqrtm(matrix)
    return result[0] if isinstance(result, tuple) else result


def frechet_distance_reference(mu1, sigma1, mu2, sigma2, eps: float = REFERENCE_EPS) -> float:
    """pytorch-fid 0.3.0's ``calculate_frechet_distance``, step for step (module docstring): the reference the
    tests and the benchmark compare :func:`frechet_distance` with. Slow (a Schur-based matrix square root)."""
    mu1, sigma1 = np.atleast_1d(mu1), np.atleast_2d(sigma1)
    mu2, sigma2 = np.atleast_1d(mu2), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError("Training and test mean vectors have different lengths")
    if sigma1.shape != sigma2.shape:
        raise ValueError("Training and test covariances have different dimensions")
    diff = mu1 - mu2
    covmean = _sqrtm_with_error(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        log.warning("fid calculation produces singular product; adding %s to diagonal of cov estimates", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=REFERENCE_IMAGINARY_ATOL):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ---------------------------------------------------------------------------------------------------------------
# Running feature statistics
# ---------------------------------------------------------------------------------------------------------------


class FeatureStats:
    """Mergeable float64 mean and covariance of feature vectors, e.g. per clip, then for a whole condition.

    Holds n, the mean (D,) and the scatter Σ (x − mean)(x − mean)ᵀ (D, D). ``mean`` equals
    ``np.mean(features, axis=0)`` and ``cov`` ``np.cov(features, rowvar=False)`` of all features seen, in whatever
    batches and merges they came. Serialisable (:meth:`to_bytes` / :meth:`save`, ``.npz`` without pickles).
    """

    def __init__(self, dim: int):
        if dim < 1:
            raise ValueError(f"feature dimension must be positive, got {dim}")
        self.dim = int(dim)
        self.n = 0
        self._mean = np.zeros(self.dim)
        self._scatter = np.zeros((self.dim, self.dim))

    @classmethod
    def from_features(cls, features) -> FeatureStats:
        features = np.asarray(features)
        if features.ndim != 2:
            raise ValueError(f"features must be (N, D), got {features.shape}")
        return cls(features.shape[1]).update(features)

    def update(self, features) -> FeatureStats:
        """Add (N, D) features (any float dtype; accumulated in float64). Returns self."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("features have non-finite entries")
        if len(features):
            batch_mean = features.mean(axis=0)
            centred = features - batch_mean
            self._combine(len(features), batch_mean, centred.T @ centred)
        return self

    def _combine(self, n: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        total = self.n + n
        delta = mean - self._mean  # (D,)
        self._scatter = self._scatter + scatter + np.outer(delta, delta) * (self.n * n / total)
        self._mean = self._mean + delta * (n / total)
        self.n = total

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new FeatureStats of the features of both (neither operand changes)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of {self.dim}-d and {other.dim}-d features")
        merged = self.copy()
        if other.n:
            merged._combine(other.n, other._mean, other._scatter)
        return merged

    def copy(self) -> FeatureStats:
        clone = FeatureStats(self.dim)
        clone.n, clone._mean, clone._scatter = self.n, self._mean.copy(), self._scatter.copy()
        return clone

    @property
    def mean(self) -> np.ndarray:
        """(D,) float64 mean; needs at least one sample."""
        self._require(1, "a mean")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """(D, D) float64 sample covariance with N − 1, as ``np.cov(rowvar=False)``; needs at least 2 samples."""
        self._require(MIN_SAMPLES, "a covariance")
        cov = self._scatter / (self.n - 1)
        return (cov + cov.T) / 2

    def _require(self, samples: int, what: str) -> None:
        if self.n < samples:
            raise MetricUnavailable(f"{what} of FID features needs at least {samples} samples, got {self.n}")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, format=np.array(STATS_FORMAT), n=np.array(self.n, dtype=np.int64), mean=self._mean,
                 scatter=self._scatter)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureStats:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if "format" not in arrays.files or str(arrays["format"]) != STATS_FORMAT:
                raise ValueError(f"not serialised FID feature statistics (no format {STATS_FORMAT!r})")
            mean, scatter, n = arrays["mean"], arrays["scatter"], int(arrays["n"])
        if mean.ndim != 1 or scatter.shape != (len(mean), len(mean)) or n < 0:
            raise ValueError(f"inconsistent FID feature statistics: n={n}, mean {mean.shape}, scatter {scatter.shape}")
        stats = cls(len(mean))
        stats.n, stats._mean, stats._scatter = n, mean.astype(np.float64), scatter.astype(np.float64)
        return stats

    def save(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path) -> FeatureStats:
        return cls.from_bytes(Path(path).read_bytes())

    def __repr__(self) -> str:
        return f"FeatureStats(dim={self.dim}, n={self.n})"


def frechet_distance_from_stats(first: FeatureStats, second: FeatureStats) -> float:
    """:func:`frechet_distance` of two feature sets' Gaussians; MetricUnavailable when a side has < 2 samples."""
    if first.n < MIN_SAMPLES or second.n < MIN_SAMPLES:
        raise MetricUnavailable(f"FID needs at least {MIN_SAMPLES} frames on each side to estimate a covariance; "
                                f"got {first.n} and {second.n}")
    if first.dim != second.dim:
        raise ValueError(f"feature dimensions differ: {first.dim} and {second.dim}")
    return frechet_distance(first.mean, first.cov, second.mean, second.cov)


# ---------------------------------------------------------------------------------------------------------------
# Features of frames
# ---------------------------------------------------------------------------------------------------------------


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return frames


def inception_features(model: torch.nn.Module, frames, batch_size: int = BATCH_SIZE,
                       device: str | torch.device | None = None) -> np.ndarray:
    """Pool3 features of RGB frames, as pytorch-fid's ``get_activations``.

    Parameters
    ----------
    model : FIDInceptionV3
        E.g. :func:`generation.metrics.fid_weights.load_fid_inception`; put in eval mode here (as the reference).
    frames : array_like, (N, H, W, 3) uint8 RGB (or one (H, W, 3) frame)
        Any size; the net resizes to 299x299 itself.
    batch_size : int
        Frames per forward pass (50 as pytorch-fid).
    device : optional
        Where to run; default the model's device.

    Returns
    -------
    np.ndarray, (N, D) float64
        The float32 features of the net, as float64.
    """
    frames = _check_frames(frames)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(frames), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch_size])).to(device)
            # (B, 3, H, W) in [0, 1], contiguous as ToTensor makes it (a permuted view would run the whole net in
            # channels-last layout: other conv kernels, slower on CPU).
            images = batch.permute(0, 3, 1, 2).contiguous().float().div(255)
            outputs.append(model(images).double().cpu().numpy())  # (B, D)
    if not outputs:
        return np.zeros((0, getattr(model, "feature_dim", 2048)))
    return np.concatenate(outputs)


def feature_stats(frames_iterable: Iterable, model: torch.nn.Module, batch_size: int = BATCH_SIZE,
                  device: str | torch.device | None = None) -> FeatureStats:
    """:class:`FeatureStats` of the features of every frame in ``frames_iterable`` (items: (N, H, W, 3) or
    (H, W, 3) uint8 RGB arrays, e.g. the decoded clips of one condition). Frames of equal size are batched across
    items, so feeding single frames costs no more than feeding clips."""
    stats = FeatureStats(getattr(model, "feature_dim", 2048))
    pending: np.ndarray | None = None  # (P, H, W, 3) frames of one size, P < batch_size between items

    def run(frames: np.ndarray) -> None:
        if len(frames):
            stats.update(inception_features(model, frames, batch_size, device))

    for item in frames_iterable:
        frames = _check_frames(item)
        if pending is not None and pending.shape[1:] != frames.shape[1:]:
            run(pending)
            pending = None
        frames = frames if pending is None else np.concatenate([pending, frames])
        whole = len(frames) - len(frames) % batch_size
        run(frames[:whole])
        pending = frames[whole:]
    if pending is not None:
        run(pending)
    return stats


def fid(generated_frames_iterable: Iterable, reference_frames_iterable: Iterable,
        model: torch.nn.Module | None = None, *, batch_size: int = BATCH_SIZE,
        device: str | torch.device | None = None) -> float:
    """FID between the frames of two sets (each an iterable of (N, H, W, 3) / (H, W, 3) uint8 RGB arrays).

    ``model`` defaults to the released FID Inception (:func:`generation.metrics.fid_weights.load_fid_inception`
    on ``device`` or the CPU); if its file is not installed this raises :class:`MetricUnavailable` with the
    install instructions. Also MetricUnavailable when a side has fewer than 2 frames.
    """
    if model is None:
        from generation.metrics.fid_weights import WeightsMissingError, load_fid_inception

        try:
            model = load_fid_inception(device if device is not None else "cpu")
        except WeightsMissingError as exc:
            raise MetricUnavailable(str(exc)) from exc
    generated = feature_stats(generated_frames_iterable, model, batch_size, device)
    reference = feature_stats(reference_frames_iterable, model, batch_size, device)
    return frechet_distance_from_stats(generated, reference)
