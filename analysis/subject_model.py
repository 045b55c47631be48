"""Subject model beyond MOS: true quality with per-participant bias and inconsistency. Django-free.

The ITU-T P.910 (11/21) Annex E / P.913 (06/21) §12.6 model, as implemented by Netflix SUREAL
(``Subject_MLE_Projection`` = ``MLE_CO_AP``, and ``Subject_MLE_Projection2`` = ``MLE_CO_AP2`` = ``P910``;
``sureal/subjective_model.py`` read at commit 0a79d3c, the P.910 demo at 9f7f828; Li & Bampis, "Recover subjective quality scores from noisy measurements",
DCC 2017; Li et al., HVEI 2020)::

    U_js = ψ_j + Δ_s + υ_s·X,   X ~ N(0, 1)

ψ_j is the true quality of stimulus (clip) j, Δ_s the bias of participant s and υ_s ≥ 0 their
inconsistency. The maximum-likelihood estimate is found by alternating projection (AP), exactly as
SUREAL and the P.910 demo code (``itut_p910_demo``) do:

1. initialise ψ_j = mean of the ratings of j (the MOS); Δ_s = mean over s's ratings of (U − ψ_j);
2. repeat: residual r = U − ψ_j − Δ_s; υ_s = population SD (ddof=0) of s's residuals and υ_j that of
   j's residuals; ψ_j = Σ_s w_s(U − Δ_s)/Σ_s w_s with w_s = 1/(υ_s² + 1e-8); Δ_s = mean over s's
   ratings of (U − ψ_j);
3. stop when ‖ψ − ψ_previous‖₂ < 1e-8 or after 1000 iterations;
4. move the mean bias into the quality: Δ ← Δ − mean(Δ), ψ ← ψ + mean(Δ).

Missing ratings are simply absent rows (SUREAL's NaN); repeated ratings of one clip by one participant
are further observations with the participant's weight (SUREAL's repetition axis). At the fixed point
ψ, Δ, υ are the MLE of the model (the stationarity equations of the Gaussian likelihood): the tests
check this against a direct numerical maximisation and against the figures SUREAL's damped-Newton
``MLE_CO`` solver asserts on the NFLX public dataset.

Uncertainty, as in SUREAL's ``SubjectMLEModelProjectionSolver``:

* quality SE: ``quality_std="p910"`` (P.910 Annex E / ``MLE_CO_AP2``, the default; the demo's "SOS")
  1/√Σ_{ratings of j} υ_j⁻² = υ_j/√n_j, with υ_j the residual SD of stimulus j; or
  ``quality_std="subject"`` (``MLE_CO_AP``) 1/√Σ_{ratings of j} υ_s⁻²;
* bias SE 1/√Σ_{ratings of s} υ_s⁻² = υ_s/√n_s;
* inconsistency SE 1/√(−Σ_{ratings of s}(υ_s⁻² − 3r²υ_s⁻⁴)) (observed information);
* intervals: quality and bias ± z·SE (SUREAL uses 1.95996 for 95 %; here the exact normal quantile);
  inconsistency by the chi-square interval υ_s·√(n_s/χ²_{1−α/2, n_s}) … υ_s·√(n_s/χ²_{α/2, n_s}).

υ_s, υ_j and hence the SEs come from the residuals at the start of the last iteration, the inconsistency
SE from the final residuals, exactly as SUREAL (the differences are below the 1e-8 stopping threshold).

Coverage of these intervals in simulated studies with planted truth (60 stimuli × 40 participants,
80 % of pairs rated, 60 seeds; tests/analysis/test_subject_model.py): P.910 quality SE 0.969 (υ_j mixes
the participants' inconsistencies, so it is conservative), bias 0.940, SUREAL's subject-weighted quality
SE 0.922 and the χ² inconsistency interval 0.920 (both treat υ̂ as if ψ and Δ were known, and υ̂ with
ddof = 0 is biased low). Prefer the default P.910 SE.

Fit statistics per observation, as SUREAL: log-likelihood ℓ/N, dof = (J + 2·S·R)/N (R = most ratings
one participant gave one stimulus), AIC = 2·dof − 2ℓ/N, BIC = log(N)·dof − 2ℓ/N.

Faithful: the AP algorithm, its constants and stopping rule, SEs and intervals (validated against the
P.910 demo's published output to 1e-10, SUREAL's ``MLE_CO`` asserts on NFLX public (variances, sums,
log-likelihood, AIC, BIC) and its toy dataset, to SUREAL's own tolerances or tighter). UNVERIFIED
choice: the exact normal quantile instead of SUREAL's rounded 1.95996. A participant with υ_s = 0 gets
weight 1e8 and zero SEs, as in SUREAL.

References
----------
.. [1] ITU-T P.910 (11/2021), Subjective video quality assessment methods for multimedia applications,
   Annex E; ITU-T P.913 (06/2021) §12.6.
.. [2] Z. Li, C. G. Bampis (2017), Recover subjective quality scores from noisy measurements, Data
   Compression Conference, 52–61.
.. [3] Z. Li, C. G. Bampis, L. Krasula, L. Janowski, I. Katsavounidis (2020), A simple model for subject
   behavior in subjective experiments, Human Vision and Electronic Imaging.
.. [4] Netflix SUREAL, ``sureal/subjective_model.py`` (SubjectMLEModelProjectionSolver) and
   ``itut_p910_demo/README.md`` (expected output for ``sample_data.csv``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MAX_ITERATIONS = 1000
TOLERANCE = 1e-8
WEIGHT_EPSILON = 1e-8
QUALITY_STD = ("p910", "subject")
STIMULUS_COLUMNS = ["n", "mos", "quality", "quality_std", "ci_low", "ci_high"]
PARTICIPANT_COLUMNS = [
    "n", "bias", "bias_std", "bias_ci_low", "bias_ci_high", "inconsistency", "inconsistency_std",
    "inconsistency_ci_low", "inconsistency_ci_high", "mean_rating", "sd_rating",
]
FIT_COLUMNS = ["n_obs", "n_stimuli", "n_participants", "n_iterations", "converged", "log_likelihood", "dof",
               "aic", "bic"]


@dataclass(frozen=True)
class SubjectModelResult:
    """Fitted subject model.

    Attributes
    ----------
    stimuli : pandas.DataFrame
        One row per stimulus: ``<stimulus column>, n, mos`` (plain mean), ``quality`` (ψ),
        ``quality_std``, ``ci_low, ci_high``.
    participants : pandas.DataFrame
        One row per participant: ``<participant column>, n, bias, bias_std, bias_ci_low, bias_ci_high,
        inconsistency, inconsistency_std, inconsistency_ci_low, inconsistency_ci_high, mean_rating,
        sd_rating`` (the last two: the participant's raw mean and population SD, SUREAL's
        ``observer_scores_mean/std``).
    fit : dict
        ``FIT_COLUMNS``: n_obs, n_stimuli, n_participants, n_iterations, converged, and per-observation
        log_likelihood, dof, aic, bic.
    """

    stimuli: pd.DataFrame
    participants: pd.DataFrame
    fit: dict

    @property
    def converged(self) -> bool:
        return bool(self.fit["converged"])


@dataclass(frozen=True)
class SubjectModelTables:
    """Per-scale fits stacked, the scale column first; ``results`` maps scale → result."""

    stimuli: pd.DataFrame
    participants: pd.DataFrame
    fits: pd.DataFrame
    results: dict


@dataclass(frozen=True)
class _Ratings:
    values: np.ndarray        # (N,)
    stimulus: np.ndarray      # (N,) codes 0..J-1
    participant: np.ndarray   # (N,) codes 0..S-1
    stimulus_labels: np.ndarray
    participant_labels: np.ndarray
    max_repetitions: int


@dataclass(frozen=True)
class _Solution:
    quality: np.ndarray             # ψ before the bias shift (J,)
    bias: np.ndarray                # Δ before the shift (S,)
    inconsistency: np.ndarray       # υ_s from the last iteration's residuals (S,)
    stimulus_residual_sd: np.ndarray  # υ_j (J,)
    n_iterations: int
    converged: bool


def fit_subject_model(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    stimulus: str = "clip",
    participant: str = "participant",
    quality_std: str = "p910",
    confidence: float = 0.95,
    tolerance: float = TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
) -> SubjectModelResult:
    """P.910 Annex E / SUREAL MLE of true quality, participant bias and inconsistency (vectorised).

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating of one scale (filter first or use
        :func:`fit_subject_model_by_scale`). Rows with a missing rating are ignored.
    dv, stimulus, participant : str
        Column names of the rating, the rated stimulus (clip) and the participant.
    quality_std : {"p910", "subject"}
        Quality SE: P.910 Annex E's υ_j/√n_j (default) or SUREAL ``MLE_CO_AP``'s 1/√Συ_s⁻².
    confidence : float
        Level of all intervals.
    tolerance, max_iterations : float, int
        Stopping rule on ‖Δψ‖₂ (P.910: 1e-8 and 1000).

    Returns
    -------
    SubjectModelResult

    Notes
    -----
    Each iteration is a handful of ``np.bincount`` passes over the N ratings: O(N) time and memory,
    no dense stimulus × participant matrix.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"clip": [0, 0, 0, 1, 1, 1, 2, 2, 2], "participant": ["Tom", "Jerry", "Pinokio"] * 3,
    ...                    "rating": [3, 4, 1, 2, 1, 3, 4, 1, 3]})
    >>> round(float(fit_subject_model(df).stimuli["quality"].iloc[0]), 6)
    2.444444
    """
    ratings = _prepare(data, dv, stimulus, participant, quality_std, confidence)
    solution = _alternating_projection(ratings, tolerance=tolerance, max_iterations=max_iterations)
    return _result(ratings, solution, stimulus=stimulus, participant=participant, quality_std=quality_std,
                   confidence=confidence)


def fit_subject_model_loops(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    stimulus: str = "clip",
    participant: str = "participant",
    quality_std: str = "p910",
    confidence: float = 0.95,
    tolerance: float = TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
) -> SubjectModelResult:
    """The same model solved by the straightforward iteration: plain Python loops over stimuli,
    participants and ratings, step for step as SUREAL's ``run_alternating_projection``.

    Reference implementation for tests and ``benchmarks/bench_analysis_models.py``; use
    :func:`fit_subject_model` for work. Same parameters and result.
    """
    ratings = _prepare(data, dv, stimulus, participant, quality_std, confidence)
    solution = _alternating_projection_loops(ratings, tolerance=tolerance, max_iterations=max_iterations)
    return _result(ratings, solution, stimulus=stimulus, participant=participant, quality_std=quality_std,
                   confidence=confidence)


def fit_subject_model_by_scale(data: pd.DataFrame, *, scale: str = "scale", **kwargs) -> SubjectModelTables:
    """:func:`fit_subject_model` once per value of ``scale`` (sorted), stacked into tidy tables."""
    if scale not in data.columns:
        raise KeyError(f"columns not in data: {[scale]}")
    results = {value: fit_subject_model(part, **kwargs)
               for value, part in data.groupby(scale, sort=True, observed=True)}

    def stack(attribute):
        frames = []
        for value, result in results.items():
            frame = getattr(result, attribute).copy()
            frame.insert(0, scale, value)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[scale])

    fits = pd.DataFrame([{scale: value, **result.fit} for value, result in results.items()],
                        columns=[scale, *FIT_COLUMNS])
    return SubjectModelTables(stimuli=stack("stimuli"), participants=stack("participants"), fits=fits,
                              results=results)


# --------------------------------------------------------------------------------------------------


def _prepare(data, dv, stimulus, participant, quality_std, confidence) -> _Ratings:
    if quality_std not in QUALITY_STD:
        raise ValueError(f"quality_std must be one of {QUALITY_STD}, got {quality_std!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    missing = [c for c in (dv, stimulus, participant) if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")
    frame = data[[dv, stimulus, participant]].copy()
    frame[dv] = pd.to_numeric(frame[dv], errors="raise").astype(float)
    frame = frame.dropna()
    if frame.empty:
        raise ValueError("no ratings to fit")
    stimulus_codes, stimulus_labels = pd.factorize(frame[stimulus], sort=True)
    participant_codes, participant_labels = pd.factorize(frame[participant], sort=True)
    pair_counts = pd.Series(np.ones(len(frame))).groupby([stimulus_codes, participant_codes]).sum()
    return _Ratings(
        values=frame[dv].to_numpy(dtype=float), stimulus=stimulus_codes.astype(np.int64),
        participant=participant_codes.astype(np.int64), stimulus_labels=np.asarray(stimulus_labels),
        participant_labels=np.asarray(participant_labels), max_repetitions=int(pair_counts.max()),
    )


def _grouped_sd(values, codes, counts):
    """Population SD (ddof=0) of ``values`` within each code, two-pass like ``np.nanstd``."""
    means = np.bincount(codes, values, minlength=len(counts)) / counts
    deviations = values - means[codes]
    return np.sqrt(np.bincount(codes, deviations * deviations, minlength=len(counts)) / counts)


def _alternating_projection(ratings: _Ratings, *, tolerance: float, max_iterations: int) -> _Solution:
    x, j, s = ratings.values, ratings.stimulus, ratings.participant
    n_stimuli, n_participants = j.max() + 1, s.max() + 1
    count_j = np.bincount(j, minlength=n_stimuli).astype(float)
    count_s = np.bincount(s, minlength=n_participants).astype(float)

    quality = np.bincount(j, x, minlength=n_stimuli) / count_j
    bias = np.bincount(s, x - quality[j], minlength=n_participants) / count_s
    iteration, converged = 0, False
    while True:
        previous = quality
        residual = x - quality[j] - bias[s]
        inconsistency = _grouped_sd(residual, s, count_s)
        stimulus_sd = _grouped_sd(residual, j, count_j)
        weight = 1.0 / (inconsistency**2 + WEIGHT_EPSILON)
        quality = (np.bincount(j, weight[s] * (x - bias[s]), minlength=n_stimuli)
                   / np.bincount(j, weight[s], minlength=n_stimuli))
        bias = np.bincount(s, x - quality[j], minlength=n_participants) / count_s
        iteration += 1
        if np.linalg.norm(previous - quality) < tolerance:
            converged = True
            break
        if iteration >= max_iterations:
            break
    return _Solution(quality=quality, bias=bias, inconsistency=inconsistency, stimulus_residual_sd=stimulus_sd,
                     n_iterations=iteration, converged=converged)


def _alternating_projection_loops(ratings: _Ratings, *, tolerance: float, max_iterations: int) -> _Solution:
    n_stimuli = len(ratings.stimulus_labels)
    n_participants = len(ratings.participant_labels)
    by_stimulus = [[] for _ in range(n_stimuli)]        # (participant, rating) per stimulus
    by_participant = [[] for _ in range(n_participants)]  # (stimulus, rating) per participant
    for value, j, s in zip(ratings.values.tolist(), ratings.stimulus.tolist(), ratings.participant.tolist()):
        by_stimulus[j].append((s, value))
        by_participant[s].append((j, value))

    def population_sd(values):
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

    quality = [sum(v for _, v in rows) / len(rows) for rows in by_stimulus]
    bias = [sum(v - quality[j] for j, v in rows) / len(rows) for rows in by_participant]
    iteration, converged = 0, False
    while True:
        previous = list(quality)
        inconsistency = [population_sd([v - quality[j] - bias[s] for j, v in rows])
                         for s, rows in enumerate(by_participant)]
        stimulus_sd = [population_sd([v - quality[j] - bias[s] for s, v in rows])
                       for j, rows in enumerate(by_stimulus)]
        weight = [1.0 / (u * u + WEIGHT_EPSILON) for u in inconsistency]
        for j, rows in enumerate(by_stimulus):
            numerator = denominator = 0.0
            for s, v in rows:
                numerator += weight[s] * (v - bias[s])
                denominator += weight[s]
            quality[j] = numerator / denominator
        for s, rows in enumerate(by_participant):
            bias[s] = sum(v - quality[j] for j, v in rows) / len(rows)
        iteration += 1
        if math.sqrt(sum((a - b) ** 2 for a, b in zip(previous, quality))) < tolerance:
            converged = True
            break
        if iteration >= max_iterations:
            break
    return _Solution(quality=np.array(quality), bias=np.array(bias), inconsistency=np.array(inconsistency),
                     stimulus_residual_sd=np.array(stimulus_sd), n_iterations=iteration, converged=converged)


def _result(ratings: _Ratings, solution: _Solution, *, stimulus, participant, quality_std, confidence):
    x, j, s = ratings.values, ratings.stimulus, ratings.participant
    n_obs = len(x)
    n_stimuli, n_participants = len(ratings.stimulus_labels), len(ratings.participant_labels)
    count_j = np.bincount(j, minlength=n_stimuli).astype(float)
    count_s = np.bincount(s, minlength=n_participants).astype(float)
    upsilon = solution.inconsistency
    with np.errstate(divide="ignore"):
        inv_var_s = 1.0 / upsilon**2
        if quality_std == "p910":
            quality_se = 1.0 / np.sqrt(np.maximum(0.0, count_j / solution.stimulus_residual_sd**2))
        else:
            quality_se = 1.0 / np.sqrt(np.maximum(0.0, np.bincount(j, inv_var_s[s], minlength=n_stimuli)))
        bias_se = 1.0 / np.sqrt(np.maximum(0.0, count_s * inv_var_s))
        residual = x - solution.quality[j] - solution.bias[s]
        curvature = np.bincount(s, inv_var_s[s] - 3.0 * residual**2 * inv_var_s[s] ** 2, minlength=n_participants)
        inconsistency_se = 1.0 / np.sqrt(np.maximum(0.0, -curvature))

    shift = solution.bias.mean()
    quality = solution.quality + shift
    bias = solution.bias - shift
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    alpha = 1.0 - confidence
    chi_upper = stats.chi2.ppf(1.0 - alpha / 2.0, df=count_s)
    chi_lower = stats.chi2.ppf(alpha / 2.0, df=count_s)

    stimuli = pd.DataFrame({
        stimulus: ratings.stimulus_labels, "n": count_j.astype(int),
        "mos": np.bincount(j, x, minlength=n_stimuli) / count_j, "quality": quality, "quality_std": quality_se,
        "ci_low": quality - z * quality_se, "ci_high": quality + z * quality_se,
    }, columns=[stimulus, *STIMULUS_COLUMNS])
    mean_rating = np.bincount(s, x, minlength=n_participants) / count_s
    participants = pd.DataFrame({
        participant: ratings.participant_labels, "n": count_s.astype(int),
        "bias": bias, "bias_std": bias_se, "bias_ci_low": bias - z * bias_se, "bias_ci_high": bias + z * bias_se,
        "inconsistency": upsilon, "inconsistency_std": inconsistency_se,
        "inconsistency_ci_low": upsilon * np.sqrt(count_s / chi_upper),
        "inconsistency_ci_high": upsilon * np.sqrt(count_s / chi_lower),
        "mean_rating": mean_rating, "sd_rating": _grouped_sd(x, s, count_s),
    }, columns=[participant, *PARTICIPANT_COLUMNS])

    with np.errstate(divide="ignore", invalid="ignore"):
        log_likelihood = stats.norm.logpdf(x, loc=quality[j] + bias[s], scale=upsilon[s]).sum() / n_obs
    dof = (n_stimuli + 2 * n_participants * ratings.max_repetitions) / n_obs
    fit = {
        "n_obs": n_obs, "n_stimuli": n_stimuli, "n_participants": n_participants,
        "n_iterations": solution.n_iterations, "converged": solution.converged,
        "log_likelihood": float(log_likelihood), "dof": dof, "aic": float(2.0 * dof - 2.0 * log_likelihood),
        "bic": float(math.log(n_obs) * dof - 2.0 * log_likelihood),
    }
    return SubjectModelResult(stimuli=stimuli, participants=participants, fit=fit)
