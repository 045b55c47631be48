"""Study planning from pilot ratings: participants and ratings per clip for a target precision or power.

Django-free. The pilot's ratings give the three variance components of the crossed model of
:mod:`analysis.mixed` (``rating ~ condition + (1|participant) + (1|clip)``): σ²_participant (rater
bias), σ²_clip (clip-to-clip quality variation within a condition) and σ²_residual (rater
inconsistency and everything else). For a condition with I clips, each rated by m participants drawn
from N participants (each rating k = I·m/N of the condition's clips, equally often), the condition MOS
(mean of its I·m ratings) has variance

    Var(MOS) = σ²_participant/N + σ²_clip/I + σ²_residual/(I·m)           (1)

(statistics.md §5; full crossing is N = m). The 95 % half-width is h = z_{0.975}·√Var(MOS): adding
participants alone plateaus at z·√(σ²_clip/I), so more clips are needed below that.

The difference between two conditions rated by the same participants (each participant contributes
equally to both, as in a within-subject design) cancels the participant effect; the clips of the two
conditions are different clips, so

    Var(MOS_a − MOS_b) = 2σ²_clip/I + 2σ²_residual/(I·m)                  (2)

plus 2σ²_participant/N if the two conditions are rated by different participants. A two-sided Wald
test at level α has power 1 − β for a true difference Δ when Δ ≥ (z_{1−α/2} + z_{1−β})·√Var (the
minimum detectable difference; the negligible opposite-tail rejection is ignored when solving, and
included in :func:`power_for_difference`).

Normal quantiles are used throughout, matching the Wald intervals of :mod:`analysis.mixed`; with fewer
than ~20 participants or clips, Student-t quantiles would be somewhat larger (UNVERIFIED choice). The
formulas assume balanced designs; unbalanced assignment (participants rating unequal numbers of a
condition's clips) makes the participant term larger than σ²_participant/N. The formulas are checked
against simulated studies in tests/analysis/test_planning.py and reproduce the worked numbers of
statistics.md §5.

References
----------
.. [1] K. Brunnström, M. Barkowsky (2018), Statistical quality of experience analysis: on planning the
   sample size and statistical significance testing, J. Electron. Imaging 27(5), 053013.
.. [2] S. R. Searle, G. Casella, C. E. McCulloch (1992), Variance Components, Wiley (variance of means
   in crossed random designs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

PLAN_COLUMNS = [
    "target", "target_value", "n_clips", "ratings_per_clip", "n_participants", "clips_per_participant",
    "achieved", "plateau", "feasible",
]


@dataclass(frozen=True)
class VarianceComponents:
    """σ² of the participant, clip and residual terms (rating-scale units squared)."""

    participant: float
    clip: float
    residual: float

    def __post_init__(self):
        for name in ("participant", "clip", "residual"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"variance component {name} must be ≥ 0, got {getattr(self, name)}")


def pilot_variance_components(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    condition: str = "condition",
    participant: str = "participant",
    clip: str = "clip",
    engine: str = "fast",
) -> VarianceComponents:
    """REML variance components of one scale's pilot ratings (:func:`analysis.mixed.fit_mixed_model`).

    Raises ``RuntimeError`` when the fit did not converge: a plan built on an unconverged fit would be
    silently wrong.
    """
    from analysis.mixed import fit_mixed_model

    fit = fit_mixed_model(data, dv=dv, condition=condition, participant=participant, clip=clip, engine=engine)
    if not fit.converged:
        raise RuntimeError(f"pilot mixed model did not converge: {' | '.join(fit.warnings)}")
    variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
    return VarianceComponents(participant=float(variance[participant]), clip=float(variance[clip]),
                              residual=float(variance["residual"]))


def _check_design(n_participants, n_clips, ratings_per_clip):
    if n_clips < 1 or n_participants < 1:
        raise ValueError("n_clips and n_participants must be ≥ 1")
    if ratings_per_clip is not None and not 1 <= ratings_per_clip <= n_participants:
        raise ValueError("ratings_per_clip must be between 1 and n_participants")


def mos_variance(components: VarianceComponents, *, n_participants: int, n_clips: int,
                 ratings_per_clip: int | None = None) -> float:
    """Var(condition MOS), equation (1); ``ratings_per_clip`` defaults to ``n_participants`` (full crossing)."""
    _check_design(n_participants, n_clips, ratings_per_clip)
    m = n_participants if ratings_per_clip is None else ratings_per_clip
    return components.participant / n_participants + components.clip / n_clips + components.residual / (n_clips * m)


def difference_variance(components: VarianceComponents, *, n_participants: int, n_clips: int,
                        ratings_per_clip: int | None = None, shared_participants: bool = True) -> float:
    """Var(MOS_a − MOS_b) of two conditions with ``n_clips`` clips each, equation (2)."""
    _check_design(n_participants, n_clips, ratings_per_clip)
    m = n_participants if ratings_per_clip is None else ratings_per_clip
    variance = 2.0 * components.clip / n_clips + 2.0 * components.residual / (n_clips * m)
    if not shared_participants:
        variance += 2.0 * components.participant / n_participants
    return variance


def ci_half_width(components: VarianceComponents, *, n_participants: int, n_clips: int,
                  ratings_per_clip: int | None = None, confidence: float = 0.95) -> float:
    """Expected half-width of the condition-MOS confidence interval, z·√(1).

    Examples
    --------
    >>> round(ci_half_width(VarianceComponents(0.088, 0.20, 0.394), n_participants=15, n_clips=20), 2)
    0.26
    """
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    return float(z * math.sqrt(mos_variance(components, n_participants=n_participants, n_clips=n_clips,
                                            ratings_per_clip=ratings_per_clip)))


def minimum_detectable_difference(components: VarianceComponents, *, n_participants: int, n_clips: int,
                                  ratings_per_clip: int | None = None, alpha: float = 0.05,
                                  power: float = 0.8, shared_participants: bool = True) -> float:
    """Smallest MOS difference detected with ``power`` by a two-sided level-``alpha`` test,
    (z_{1−α/2} + z_{power})·√(2).

    Examples
    --------
    >>> round(minimum_detectable_difference(VarianceComponents(0.088, 0.20, 0.394), n_participants=15,
    ...                                     n_clips=20), 2)
    0.42
    """
    sd = math.sqrt(difference_variance(components, n_participants=n_participants, n_clips=n_clips,
                                       ratings_per_clip=ratings_per_clip, shared_participants=shared_participants))
    return float((stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)) * sd)


def power_for_difference(components: VarianceComponents, difference: float, *, n_participants: int,
                         n_clips: int, ratings_per_clip: int | None = None, alpha: float = 0.05,
                         shared_participants: bool = True) -> float:
    """Power of the two-sided level-``alpha`` Wald test for a true MOS difference (both tails)."""
    sd = math.sqrt(difference_variance(components, n_participants=n_participants, n_clips=n_clips,
                                       ratings_per_clip=ratings_per_clip, shared_participants=shared_participants))
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    shift = abs(difference) / sd
    return float(stats.norm.sf(z - shift) + stats.norm.cdf(-z - shift))


def plan_sample_size(
    components: VarianceComponents,
    *,
    n_clips: int,
    target_half_width: float | None = None,
    difference: float | None = None,
    clips_per_participant: int | None = None,
    confidence: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
    shared_participants: bool = True,
    max_ratings_per_clip: int = 100_000,
) -> pd.DataFrame:
    """Fewest ratings per clip (and the participants that implies) for a target precision or power.

    Parameters
    ----------
    components : VarianceComponents
        From :func:`pilot_variance_components` (or assumed).
    n_clips : int
        Clips per condition.
    target_half_width : float, optional
        Wanted half-width of the condition-MOS confidence interval.
    difference : float, optional
        MOS difference between two conditions to detect (two-sided test at ``alpha`` with ``power``).
        Give exactly one of ``target_half_width`` and ``difference``.
    clips_per_participant : int, optional
        How many of a condition's clips one participant rates. None: every participant rates every clip
        (N = m); otherwise N = ⌈I·m/k⌉.
    confidence, alpha, power : float
        Interval level; test level and power.
    shared_participants : bool
        For ``difference``: the same participants rate both conditions (their bias cancels).
    max_ratings_per_clip : int
        Search limit.

    Returns
    -------
    pandas.DataFrame
        One row, ``PLAN_COLUMNS``: ``target`` ("half_width" or "difference"), ``target_value``,
        ``n_clips``, ``ratings_per_clip``, ``n_participants``, ``clips_per_participant``, ``achieved``
        (the half-width or minimum detectable difference of that design), ``plateau`` (its limit with
        unlimited ratings: more clips are needed when the target is below it) and ``feasible``. When
        infeasible the counts are NA.

    Examples
    --------
    >>> plan = plan_sample_size(VarianceComponents(0.088, 0.20, 0.394), n_clips=30, target_half_width=0.2)
    >>> int(plan.ratings_per_clip.iloc[0]), round(float(plan.achieved.iloc[0]), 3)
    (27, 0.2)
    """
    if (target_half_width is None) == (difference is None):
        raise ValueError("give exactly one of target_half_width and difference")
    if clips_per_participant is not None and not 1 <= clips_per_participant <= n_clips:
        raise ValueError("clips_per_participant must be between 1 and n_clips")
    m = np.arange(1, max_ratings_per_clip + 1)
    if clips_per_participant is None:
        n = m
    else:
        n = np.maximum(m, np.ceil(n_clips * m / clips_per_participant).astype(int))
    c = components
    if target_half_width is not None:
        target, value = "half_width", float(target_half_width)
        multiplier = stats.norm.ppf(0.5 + confidence / 2.0)
        variance = c.participant / n + c.clip / n_clips + c.residual / (n_clips * m)
        plateau_variance = c.clip / n_clips
    else:
        target, value = "difference", abs(float(difference))
        multiplier = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
        variance = 2.0 * c.clip / n_clips + 2.0 * c.residual / (n_clips * m)
        if not shared_participants:
            variance = variance + 2.0 * c.participant / n
        plateau_variance = 2.0 * c.clip / n_clips
    achieved = multiplier * np.sqrt(variance)
    plateau = float(multiplier * math.sqrt(plateau_variance))
    ok = np.flatnonzero(achieved <= value)
    row = {"target": target, "target_value": value, "n_clips": n_clips, "clips_per_participant": clips_per_participant,
           "plateau": plateau}
    if ok.size:
        first = ok[0]
        row.update(ratings_per_clip=int(m[first]), n_participants=int(n[first]), achieved=float(achieved[first]),
                   feasible=True)
    else:
        row.update(ratings_per_clip=pd.NA, n_participants=pd.NA, achieved=float("nan"), feasible=False)
    frame = pd.DataFrame([row], columns=PLAN_COLUMNS)
    for column in ("ratings_per_clip", "n_participants", "clips_per_participant"):
        frame[column] = frame[column].astype("Int64")
    return frame


def plan_from_pilot(
    data: pd.DataFrame,
    *,
    n_clips: int,
    dv: str = "rating",
    condition: str = "condition",
    participant: str = "participant",
    clip: str = "clip",
    **plan_kwargs,
) -> pd.DataFrame:
    """:func:`pilot_variance_components` then :func:`plan_sample_size`; the components are appended as
    ``sigma2_participant``, ``sigma2_clip``, ``sigma2_residual`` columns."""
    components = pilot_variance_components(data, dv=dv, condition=condition, participant=participant, clip=clip)
    plan = plan_sample_size(components, n_clips=n_clips, **plan_kwargs)
    plan["sigma2_participant"] = components.participant
    plan["sigma2_clip"] = components.clip
    plan["sigma2_residual"] = components.residual
    return plan
