"""Observer screening: who each rule would reject and why. Django-free.

Every rule takes the long ratings frame of :mod:`analysis.data` plus column names and returns one tidy
DataFrame of decisions with the same columns (:data:`DECISION_COLUMNS`)::

    <by columns>, participant, rule, rejected, reason, statistic, threshold,
    secondary_statistic, secondary_threshold, n_ratings

``statistic``/``secondary_statistic`` mean something per rule (each rule's docstring says what), ``reason``
says it in words. Rules run separately per ``by`` group (per scale by default). :func:`screen_participants`
runs several rules, :func:`rejected_participants` lists who was rejected, and :func:`drop_rejected` removes
them from the ratings frame, so any analysis can be run with and without them.

Faithful (tests/analysis/test_screening.py):

* :func:`bt500_screening` — ITU-R BT.500-14 (10/2019) Annex 1 §A1-2.3.1 as implemented in Netflix SUREAL
  (``BT500`` / ``SR_MOS``): per presentation mean ū, standard deviation S and β2 = m4/m2²; bounds ū ± 2S if
  2 ≤ β2 ≤ 4 else ū ± √20·S; P_i / Q_i count the observer's votes at/above the upper and at/below the lower
  bound; reject if (P_i + Q_i)/(votes of i) > 0.05 and |P_i − Q_i|/(P_i + Q_i) < 0.3; if every observer would
  be rejected, none is. Reproduces SUREAL's rejections on ``NFLX_dataset_public_raw_last4outliers``
  ({26, 28, 29} with ddof=0, {26, 29} with ddof=1, statistics.md §2.1/§6B).
* :func:`bt1788_correlation_screening` — the adaptive correlation rule of ITU-R BT.1788 / SUREAL ``SR_MOS_PCC``
  and ``SR_MOS_SRCC``: threshold min(0.7, mean(r) − sd(r)); reproduces the 0.5117 / 0.4991 thresholds and
  the {26, 27, 28, 29} rejections on the same data.
* :func:`p913_correlation_screening` — the VQEG / ITU-T P.913 rule: reject if r1 < 0.75 and r2 < 0.8, with r1
  the Pearson correlation of the participant's votes with the per-clip (PVS) MOS and r2 that of the
  participant's per-condition (HRC) means with the per-condition MOS.

UNVERIFIED choices:

* BT.500 with S = 0 (a unanimous presentation): SUREAL's loop then counts every vote as both P and Q, which
  makes unanimous agreement look like balanced outlying. By default such presentations count for nobody
  (``zero_spread_counts_as_outlier=False``); ``True`` reproduces SUREAL. The vote count J·K·L is the number of
  votes the observer gave (BT.500's definition), not SUREAL's E·R, so partial designs are handled.
* BT.500's S: ddof=0 by default, as SUREAL; BT.500's text implies N − 1 (``ddof=1``).
* P.913 with partial designs: r2 compares the participant's per-condition means with the MOS of the same clips
  the participant rated (equal to the textbook rule for complete designs). With fewer than 3 conditions r2 is
  undefined and the rule decides on r1 alone.
* z-score rule (no standard): z-scores of the participant's votes against each clip's mean and SD; reject if
  the spread (SD) of their z-scores is an outlier across participants (modified z-score > 3.5, Iglewicz &
  Hoaglin) and above 1.5. Bias (mean signed z) is reported
  and only rejects with ``reject_bias=True``: P.913 prefers removing bias to rejecting the observer.
* Straight-lining thresholds (zero variance, SD < 0.25, ≥ 90 % one answer, identical answers on every scale
  for every clip) are heuristics for crowdsourced ACR, not from a Recommendation.
* Correlation rules: a participant whose correlation is undefined (constant votes, fewer than 3 items) is not
  rejected by the correlation rule; the straight-lining rule is the one that catches constant votes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import sparse, stats

DECISION_COLUMNS = ["participant", "rule", "rejected", "reason", "statistic", "threshold", "secondary_statistic",
                    "secondary_threshold", "n_ratings"]
RULES = ("bt500", "bt1788_correlation", "p913_correlation", "z_score", "straight_lining",
         "straight_lining_across_scales")
DEFAULT_RULES = ("bt500", "p913_correlation", "z_score", "straight_lining")


def _require_columns(data: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")


def _groups(data: pd.DataFrame, by: Sequence[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    by = list(by)
    if not by:
        yield (), data
        return
    for key, frame in data.groupby(by, sort=True, observed=True):
        yield (key if isinstance(key, tuple) else (key,)), frame


def _frame(by: Sequence[str], participant: str, rows: list[dict]) -> pd.DataFrame:
    columns = [*by, participant, *DECISION_COLUMNS[1:]]
    out = pd.DataFrame(rows, columns=columns)
    out["rejected"] = out["rejected"].astype(bool)
    out["n_ratings"] = out["n_ratings"].astype(int)
    return out


def _codes(frame: pd.DataFrame, participant: str, stimulus: str, rating: str):
    frame = frame.dropna(subset=[rating])
    p_codes, p_index = pd.factorize(frame[participant], sort=True)
    s_codes, s_index = pd.factorize(frame[stimulus], sort=True)
    values = pd.to_numeric(frame[rating], errors="raise").to_numpy(dtype=float)
    return frame, p_codes, p_index, s_codes, s_index, values


def bt500_screening(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    stimulus: str = "clip",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    ddof: int = 0,
    max_outside_share: float = 0.05,
    max_imbalance: float = 0.3,
    zero_spread_counts_as_outlier: bool = False,
    keep_all_if_all_rejected: bool = True,
) -> pd.DataFrame:
    """ITU-R BT.500-14 A1-2.3.1 observer screening (the kurtosis-based rule), per group.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating; repetitions of a clip by one participant are pooled, as in BT.500.
    participant, stimulus, rating : str
        Columns naming the observer, the presentation (clip, the PVS) and the vote.
    by : sequence of str
        Groups screened separately, e.g. ``("scale",)``.
    ddof : int
        Delta degrees of freedom of the per-presentation S: 0 as SUREAL (default), 1 as BT.500's text.
    max_outside_share, max_imbalance : float
        The Recommendation's 0.05 and 0.3.
    zero_spread_counts_as_outlier : bool
        With S = 0 every vote sits on both bounds; ``True`` counts it as P and Q (SUREAL), ``False`` (default)
        counts nothing for that presentation.
    keep_all_if_all_rejected : bool
        If every observer of a group would be rejected, reject none (SUREAL's safeguard).

    Returns
    -------
    pandas.DataFrame
        :data:`DECISION_COLUMNS` with ``rule="bt500"``, ``statistic`` = (P + Q)/n (``threshold`` 0.05, reject
        above), ``secondary_statistic`` = |P − Q|/(P + Q) (``secondary_threshold`` 0.3, reject below; NaN when
        P + Q = 0), ``n_ratings`` = n, the observer's votes in the group.

    Notes
    -----
    β2 = m4/m2² with m_x = Σ(u − ū)^x / N (population moments), as in BT.500 and ``scipy.stats.kurtosis(...,
    fisher=False)``. A vote counts as P if u ≥ ū + bound and as Q if u ≤ ū − bound. BT.500 advises applying
    the procedure once per experiment.

    References
    ----------
    .. [1] ITU-R BT.500-14 (10/2019), Methodologies for the subjective assessment of the quality of television
       images, Annex 1, §A1-2.3.1.
    .. [2] Netflix SUREAL, ``sureal/subjective_model.py`` (``subject_rejection``), commit 526715c.
    """
    by = list(by)
    _require_columns(data, [participant, stimulus, rating, *by])
    rows: list[dict] = []
    for key, frame in _groups(data, by):
        frame, p_codes, p_index, s_codes, s_index, values = _codes(frame, participant, stimulus, rating)
        n_s = np.bincount(s_codes, minlength=len(s_index)).astype(float)
        mean = np.bincount(s_codes, values, minlength=len(s_index)) / n_s
        centred = values - mean[s_codes]
        m2 = np.bincount(s_codes, centred**2, minlength=len(s_index)) / n_s
        m4 = np.bincount(s_codes, centred**4, minlength=len(s_index)) / n_s
        with np.errstate(invalid="ignore", divide="ignore"):
            beta2 = m4 / m2**2
            spread = np.sqrt(m2 * n_s / (n_s - ddof))
        spread = np.where(np.isfinite(spread), spread, 0.0)
        normal = (beta2 >= 2.0) & (beta2 <= 4.0)
        bound = np.where(normal, 2.0, np.sqrt(20.0)) * spread
        upper_limit = (mean + bound)[s_codes]
        lower_limit = (mean - bound)[s_codes]
        counted = np.ones(len(values), dtype=bool) if zero_spread_counts_as_outlier else (spread > 0)[s_codes]
        # A tiny tolerance so a vote lying exactly on a bound is counted despite rounding in ū and S.
        tolerance = 1e-12 * np.maximum(1.0, np.abs(values))
        upper = counted & (values >= upper_limit - tolerance)
        lower = counted & (values <= lower_limit + tolerance)
        p = np.bincount(p_codes, upper, minlength=len(p_index))
        q = np.bincount(p_codes, lower, minlength=len(p_index))
        n = np.bincount(p_codes, minlength=len(p_index))
        outside = (p + q) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            imbalance = np.abs(p - q) / (p + q)
        rejected = (outside > max_outside_share) & (imbalance < max_imbalance)
        all_rejected = bool(rejected.all()) and keep_all_if_all_rejected
        if all_rejected:
            rejected = np.zeros_like(rejected)
        for i, who in enumerate(p_index):
            head = (f"BT.500: {int(p[i] + q[i])} of {int(n[i])} votes ({outside[i]:.1%}) on or beyond the bounds "
                    f"ū ± 2S (or √20·S) (P={int(p[i])} high, Q={int(q[i])} low)")
            if rejected[i]:
                reason = (f"{head}: more than {max_outside_share:.0%} and balanced "
                          f"(|P−Q|/(P+Q) = {imbalance[i]:.2f} < {max_imbalance})")
            elif all_rejected:
                reason = f"{head}: every observer of the group met the rule, so none is rejected"
            elif outside[i] <= max_outside_share:
                reason = f"{head}: at most {max_outside_share:.0%}"
            else:
                reason = f"{head}: one-sided (|P−Q|/(P+Q) = {imbalance[i]:.2f} ≥ {max_imbalance}), a bias, kept"
            rows.append({**dict(zip(by, key)), participant: who, "rule": "bt500", "rejected": bool(rejected[i]),
                         "reason": reason, "statistic": float(outside[i]), "threshold": max_outside_share,
                         "secondary_statistic": float(imbalance[i]), "secondary_threshold": max_imbalance,
                         "n_ratings": int(n[i])})
    return _frame(by, participant, rows)


# ---------------------------------------------------------------------------------------------------------
# Correlation rules


def _participant_item_means(p_codes: np.ndarray, s_codes: np.ndarray, values: np.ndarray, n_p: int,
                            n_s: int) -> np.ndarray:
    """(P, S) matrix of each participant's mean vote per item (repetitions averaged), NaN where not rated."""
    sums = sparse.coo_matrix((values, (p_codes, s_codes)), shape=(n_p, n_s)).toarray()
    counts = sparse.coo_matrix((np.ones_like(values), (p_codes, s_codes)), shape=(n_p, n_s)).toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of x with the same row of y, over entries finite in both (NaN if < 3 or constant)."""
    valid = np.isfinite(x) & np.isfinite(y)
    n = valid.sum(axis=1)
    x = np.where(valid, x, 0.0)
    y = np.where(valid, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(valid, x - x.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        dy = np.where(valid, y - y.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        sxx, syy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
        r = (dx * dy).sum(axis=1) / np.sqrt(sxx * syy)
    # A constant row has zero spread up to rounding: undefined, not a huge correlation.
    scale = np.maximum(1.0, np.maximum(np.abs(x).max(axis=1, initial=0.0), np.abs(y).max(axis=1, initial=0.0)))
    degenerate = (sxx <= 1e-24 * scale**2 * n) | (syy <= 1e-24 * scale**2 * n)
    r[(n < 3) | degenerate] = np.nan
    return r


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    valid = np.isfinite(x) & np.isfinite(y)
    rank_x = stats.rankdata(np.where(valid, x, np.nan), axis=1, nan_policy="omit")
    rank_y = stats.rankdata(np.where(valid, y, np.nan), axis=1, nan_policy="omit")
    return _rowwise_pearson(rank_x, rank_y)


def bt1788_correlation_screening(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    stimulus: str = "clip",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    correlation: str = "pearson",
    max_threshold: float = 0.7,
    inclusive: bool = True,
) -> pd.DataFrame:
    """Adaptive correlation screening of ITU-R BT.1788 / SUREAL (``SR_MOS_PCC``, ``SR_MOS_SRCC``), per group.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    participant, stimulus, rating : str
        Column names.
    by : sequence of str
        Groups screened separately.
    correlation : {"pearson", "spearman", "min"}
        r_i: Pearson or Spearman correlation of the participant's votes (repetitions averaged) with the MOS,
        over the clips the participant rated; ``"min"`` is BT.1788's min(Pearson, Spearman).
    max_threshold : float
        The maximum correlation threshold (MCT), 0.7 in SUREAL.
    inclusive : bool
        Reject r_i ≤ threshold (SUREAL, default) or r_i < threshold (BT.1788).

    Returns
    -------
    pandas.DataFrame
        :data:`DECISION_COLUMNS` with ``rule="bt1788_correlation"``, ``statistic`` = r_i, ``threshold`` =
        min(MCT, mean(r) − sd(r)) (sd with ddof=0, over the defined r_i), secondary columns NaN.

    Notes
    -----
    The MOS of a clip is the mean over participants of their (repetition-averaged) votes, as in SUREAL.

    References
    ----------
    .. [1] ITU-R BT.1788 (01/2007), Methodology for the subjective assessment of video quality in multimedia
       applications.
    .. [2] Netflix SUREAL, ``sureal/subjective_model.py`` (``subject_rejection_type`` pearson/spearman),
       commit 526715c.
    """
    by = list(by)
    _require_columns(data, [participant, stimulus, rating, *by])
    if correlation not in ("pearson", "spearman", "min"):
        raise ValueError(f"correlation must be pearson, spearman or min, got {correlation!r}")
    rows: list[dict] = []
    for key, frame in _groups(data, by):
        frame, p_codes, p_index, s_codes, s_index, values = _codes(frame, participant, stimulus, rating)
        votes = _participant_item_means(p_codes, s_codes, values, len(p_index), len(s_index))
        mos = np.nanmean(votes, axis=0)
        mos_rows = np.broadcast_to(mos, votes.shape)
        if correlation == "pearson":
            r = _rowwise_pearson(votes, mos_rows)
        elif correlation == "spearman":
            r = _rowwise_spearman(votes, mos_rows)
        else:
            r = np.fmin(_rowwise_pearson(votes, mos_rows), _rowwise_spearman(votes, mos_rows))
        defined = r[np.isfinite(r)]
        adaptive = float(defined.mean() - defined.std(ddof=0)) if len(defined) else np.nan
        threshold = min(max_threshold, adaptive) if np.isfinite(adaptive) else max_threshold
        n = np.bincount(p_codes, minlength=len(p_index))
        for i, who in enumerate(p_index):
            if not np.isfinite(r[i]):
                rejected = False
                reason = f"BT.1788 {correlation}: correlation with the MOS undefined (constant votes or < 3 clips)"
            else:
                rejected = bool(r[i] <= threshold) if inclusive else bool(r[i] < threshold)
                relation = ("≤" if inclusive else "<") if rejected else (">" if inclusive else "≥")
                reason = (f"BT.1788 {correlation}: r = {r[i]:.3f} with the clip MOS {relation} threshold "
                          f"{threshold:.4f} (min of {max_threshold} and mean − sd = {adaptive:.4f})")
            rows.append({**dict(zip(by, key)), participant: who, "rule": "bt1788_correlation", "rejected": rejected,
                         "reason": reason, "statistic": float(r[i]), "threshold": float(threshold),
                         "secondary_statistic": np.nan, "secondary_threshold": np.nan, "n_ratings": int(n[i])})
    return _frame(by, participant, rows)


def p913_correlation_screening(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    stimulus: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    min_clip_correlation: float = 0.75,
    min_condition_correlation: float = 0.8,
) -> pd.DataFrame:
    """VQEG / ITU-T P.913 subject screening: reject if r1 < 0.75 and r2 < 0.8, per group.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    participant, stimulus, condition, rating : str
        Column names: ``stimulus`` is the PVS (clip), ``condition`` the HRC (the generating model).
    by : sequence of str
        Groups screened separately.
    min_clip_correlation, min_condition_correlation : float
        The rule's 0.75 (r1) and 0.8 (r2).

    Returns
    -------
    pandas.DataFrame
        :data:`DECISION_COLUMNS` with ``rule="p913_correlation"``, ``statistic`` = r1 (Pearson of the
        participant's votes with the per-clip MOS, ``threshold`` 0.75), ``secondary_statistic`` = r2 (Pearson of
        the participant's per-condition means with the per-condition MOS, ``secondary_threshold`` 0.8).

    Notes
    -----
    The clip MOS includes the participant's own votes, as in NTIA's reference script. For r2 both sides are
    averaged over the clips the participant rated (for complete designs: the per-HRC MOS).

    References
    ----------
    .. [1] VQEG, Multimedia Group Test Plan (2008), Annex VI (subject screening); NTIA/ITS screening scripts
       by M. Pinson.
    .. [2] ITU-T P.913 (06/2021), Methods for the subjective assessment of video quality, audio quality and
       audiovisual quality of Internet video and distribution quality television in any environment (subject
       screening).
    """
    by = list(by)
    _require_columns(data, [participant, stimulus, condition, rating, *by])
    rows: list[dict] = []
    for key, frame in _groups(data, by):
        frame, p_codes, p_index, s_codes, s_index, values = _codes(frame, participant, stimulus, rating)
        votes = _participant_item_means(p_codes, s_codes, values, len(p_index), len(s_index))
        mos = np.nanmean(votes, axis=0)
        r1 = _rowwise_pearson(votes, np.broadcast_to(mos, votes.shape))
        # Per-condition means of the participant's votes and of the MOS of the same clips.
        clip_condition = pd.Series(frame[condition].to_numpy(), index=s_codes).groupby(level=0).first()
        c_codes, c_index = pd.factorize(clip_condition.reindex(range(len(s_index))).to_numpy(), sort=True)
        to_condition = sparse.csr_matrix((np.ones(len(s_index)), (np.arange(len(s_index)), c_codes)),
                                         shape=(len(s_index), len(c_index)))
        rated = np.isfinite(votes)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_condition_n = rated.astype(float) @ to_condition
            own = (np.where(rated, votes, 0.0) @ to_condition) / per_condition_n
            reference = (np.where(rated, mos, 0.0) @ to_condition) / per_condition_n
        own = np.asarray(own)
        reference = np.asarray(reference)
        own[per_condition_n == 0] = np.nan
        reference[per_condition_n == 0] = np.nan
        r2 = _rowwise_pearson(own, reference)
        n = np.bincount(p_codes, minlength=len(p_index))
        for i, who in enumerate(p_index):
            if not np.isfinite(r1[i]):
                rejected = False
                reason = "P.913: r1 undefined (constant votes or < 3 clips), not judged by this rule"
            elif not np.isfinite(r2[i]):
                rejected = bool(r1[i] < min_clip_correlation)
                reason = (f"P.913: r1 = {r1[i]:.3f} {'<' if rejected else '≥'} {min_clip_correlation}; r2 undefined "
                          "(< 3 conditions or constant means), decided on r1 alone")
            else:
                low1, low2 = r1[i] < min_clip_correlation, r2[i] < min_condition_correlation
                rejected = bool(low1 and low2)
                reason = (f"P.913: r1 = {r1[i]:.3f} {'<' if low1 else '≥'} {min_clip_correlation} (clips), r2 = "
                          f"{r2[i]:.3f} {'<' if low2 else '≥'} {min_condition_correlation} (conditions)"
                          + ("" if rejected else "; kept: rejection needs both below"))
            rows.append({**dict(zip(by, key)), participant: who, "rule": "p913_correlation", "rejected": rejected,
                         "reason": reason, "statistic": float(r1[i]), "threshold": min_clip_correlation,
                         "secondary_statistic": float(r2[i]), "secondary_threshold": min_condition_correlation,
                         "n_ratings": int(n[i])})
    return _frame(by, participant, rows)


# ---------------------------------------------------------------------------------------------------------
# z-scores and straight-lining


def _modified_z(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Iglewicz–Hoaglin modified z-scores 0.6745 (x − median)/MAD, with the median and MAD (NaN if MAD = 0)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.full_like(values, np.nan), np.nan, np.nan
    median = float(np.median(finite))
    mad = float(np.median(np.abs(finite - median)))
    if mad == 0:
        return np.full_like(values, np.nan), median, mad
    return 0.6745 * (values - median) / mad, median, mad


def z_score_screening(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    stimulus: str = "clip",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    max_modified_z: float = 3.5,
    min_spread: float = 1.5,
    reject_bias: bool = False,
) -> pd.DataFrame:
    """Inconsistent (and optionally biased) participants from per-clip z-scores of their votes, per group.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    participant, stimulus, rating : str
        Column names.
    by : sequence of str
        Groups screened separately.
    max_modified_z : float
        Cut-off on the modified z-score across participants (Iglewicz & Hoaglin recommend 3.5).
    min_spread : float
        A participant is only called inconsistent when the SD of their z-scores also exceeds this: in a
        homogeneous panel the MAD is small and the modified z alone would flag raters barely noisier than the
        rest (consistent raters have an SD near 1, a uniformly random voter above 2).
    reject_bias : bool
        Also reject participants whose mean z (bias) is an outlier in either direction.

    Returns
    -------
    pandas.DataFrame
        :data:`DECISION_COLUMNS` with ``rule="z_score"``, ``statistic`` = the SD of the participant's z-scores
        around their own mean (inconsistency), ``threshold`` = the SD above which a participant is rejected
        (the larger of median + 3.5·MAD/0.6745 across participants and ``min_spread``),
        ``secondary_statistic`` = mean z (bias) and ``secondary_threshold`` = the largest distance of a bias
        from the median bias that is not an outlier.

    Notes
    -----
    z = (u − ū_clip)/S_clip with S_clip the clip's sample SD (ddof=1); votes on clips with S = 0 or a single
    vote get z = 0 (no deviation measurable). Separating the spread of z from its mean keeps a participant who
    is merely stricter or more lenient (a bias, which P.913 removes rather than rejects) from being flagged as
    inconsistent. When the MAD across participants is 0 the rule rejects nobody.

    References
    ----------
    .. [1] Iglewicz, B., & Hoaglin, D. C. (1993). How to Detect and Handle Outliers. ASQC Quality Press.
    .. [2] ITU-T P.913 (06/2021), §12.4 (observer bias removal).
    """
    by = list(by)
    _require_columns(data, [participant, stimulus, rating, *by])
    rows: list[dict] = []
    for key, frame in _groups(data, by):
        frame, p_codes, p_index, s_codes, s_index, values = _codes(frame, participant, stimulus, rating)
        n_s = np.bincount(s_codes, minlength=len(s_index)).astype(float)
        mean = np.bincount(s_codes, values, minlength=len(s_index)) / n_s
        centred = values - mean[s_codes]
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt(np.bincount(s_codes, centred**2, minlength=len(s_index)) / (n_s - 1.0))
        usable = (np.isfinite(sd) & (sd > 0))[s_codes]
        z = np.where(usable, centred / np.where(usable, sd[s_codes], 1.0), 0.0)
        n = np.bincount(p_codes, minlength=len(p_index))
        bias = np.bincount(p_codes, z, minlength=len(p_index)) / n
        spread = np.sqrt(np.bincount(p_codes, (z - bias[p_codes]) ** 2, minlength=len(p_index)) / n)
        m_spread, med_s, mad_s = _modified_z(spread)
        m_bias, med_b, mad_b = _modified_z(bias)
        cut_spread = max(med_s + max_modified_z * mad_s / 0.6745, min_spread)
        cut_bias = max_modified_z * mad_b / 0.6745
        for i, who in enumerate(p_index):
            inconsistent = bool(np.isfinite(m_spread[i]) and m_spread[i] > max_modified_z and spread[i] > min_spread)
            biased = bool(np.isfinite(m_bias[i]) and abs(m_bias[i]) > max_modified_z)
            rejected = inconsistent or (reject_bias and biased)
            if np.isfinite(mad_s) and mad_s > 0:
                first = (f"z spread = {spread[i]:.2f} ({'above' if inconsistent else 'within'} the outlier cut "
                         f"{cut_spread:.2f})")
            else:
                first = f"z spread = {spread[i]:.2f} (no spread across participants, not judged)"
            second = f"bias = {bias[i]:+.2f} z"
            if biased:
                second += " (an outlier" + (")" if reject_bias else ", reported only)")
            rows.append({**dict(zip(by, key)), participant: who, "rule": "z_score", "rejected": rejected,
                         "reason": f"z-score: {first}; {second}", "statistic": float(spread[i]),
                         "threshold": float(cut_spread), "secondary_statistic": float(bias[i]),
                         "secondary_threshold": float(cut_bias), "n_ratings": int(n[i])})
    return _frame(by, participant, rows)


def straight_lining_screening(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    min_ratings: int = 5,
    min_sd: float = 0.25,
    max_modal_share: float = 0.9,
) -> pd.DataFrame:
    """Participants who (nearly) always give the same answer, per group.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    participant, rating : str
        Column names.
    by : sequence of str
        Groups screened separately (per scale by default).
    min_ratings : int
        Participants with fewer ratings in the group are not judged.
    min_sd : float
        Reject when the SD of the participant's ratings (ddof=0) is below this (zero variance always is).
    max_modal_share : float
        Reject when at least this share of the ratings is one and the same answer.

    Returns
    -------
    pandas.DataFrame
        :data:`DECISION_COLUMNS` with ``rule="straight_lining"``, ``statistic`` = SD of the participant's
        ratings (``threshold`` = ``min_sd``, reject below), ``secondary_statistic`` = share of the most frequent
        answer (``secondary_threshold`` = ``max_modal_share``, reject at or above).

    References
    ----------
    .. [1] Hoßfeld, T., et al. (2014). Best practices for QoE crowdtesting: QoE assessment with crowdsourcing.
       IEEE Transactions on Multimedia, 16(2), 541–558 (reliability checks for crowd workers).
    """
    by = list(by)
    _require_columns(data, [participant, rating, *by])
    rows: list[dict] = []
    for key, frame in _groups(data, by):
        frame = frame.dropna(subset=[rating])
        p_codes, p_index = pd.factorize(frame[participant], sort=True)
        values = pd.to_numeric(frame[rating], errors="raise").to_numpy(dtype=float)
        v_codes, v_index = pd.factorize(values, sort=True)
        n = np.bincount(p_codes, minlength=len(p_index))
        mean = np.bincount(p_codes, values, minlength=len(p_index)) / n
        sd = np.sqrt(np.bincount(p_codes, (values - mean[p_codes]) ** 2, minlength=len(p_index)) / n)
        answer_counts = np.bincount(p_codes * len(v_index) + v_codes,
                                    minlength=len(p_index) * len(v_index)).reshape(len(p_index), len(v_index))
        modal = answer_counts.argmax(axis=1)
        modal_share = answer_counts.max(axis=1) / n
        for i, who in enumerate(p_index):
            answer = v_index[modal[i]]
            answer_text = f"{answer:g}"
            if n[i] < min_ratings:
                rejected, reason = False, f"straight-lining: only {n[i]} ratings (< {min_ratings}), not judged"
            elif sd[i] == 0:
                rejected, reason = True, f"straight-lining: the same answer ({answer_text}) to all {n[i]} ratings"
            elif sd[i] < min_sd:
                rejected, reason = True, f"straight-lining: SD of the ratings {sd[i]:.2f} < {min_sd} (low variance)"
            elif modal_share[i] >= max_modal_share:
                rejected = True
                reason = (f"straight-lining: {modal_share[i]:.0%} of the {n[i]} ratings are {answer_text} "
                          f"(≥ {max_modal_share:.0%})")
            else:
                rejected = False
                reason = (f"straight-lining: SD {sd[i]:.2f}, most frequent answer {answer_text} in "
                          f"{modal_share[i]:.0%} of {n[i]} ratings")
            rows.append({**dict(zip(by, key)), participant: who, "rule": "straight_lining", "rejected": rejected,
                         "reason": reason, "statistic": float(sd[i]), "threshold": min_sd,
                         "secondary_statistic": float(modal_share[i]), "secondary_threshold": max_modal_share,
                         "n_ratings": int(n[i])})
    return _frame(by, participant, rows)


def cross_scale_straight_lining_screening(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    clip: str = "clip",
    scale: str = "scale",
    rating: str = "rating",
    min_clips: int = 10,
    max_identical_share: float = 1.0,
) -> pd.DataFrame:
    """Participants who give every scale the same answer for (nearly) every clip.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating, with at least two scales.
    participant, clip, scale, rating : str
        Column names.
    min_clips : int
        Participants who rated fewer clips on every scale are not judged.
    max_identical_share : float
        Reject when at least this share of the participant's clips got one answer on all scales (default: all
        of them).

    Returns
    -------
    pandas.DataFrame
        :data:`DECISION_COLUMNS` (no ``by`` column; the rule spans scales) with
        ``rule="straight_lining_across_scales"``, ``statistic`` = share of clips with identical answers on all
        scales (``threshold`` = ``max_identical_share``), secondary columns NaN, ``n_ratings`` = number of
        clips rated on every scale.
    """
    _require_columns(data, [participant, clip, scale, rating])
    frame = data.dropna(subset=[rating])
    n_scales = frame[scale].nunique()
    per_clip = frame.groupby([participant, clip], observed=True, sort=True)[rating].agg(["nunique", "count"])
    per_clip = per_clip.join(frame.groupby([participant, clip], observed=True, sort=True)[scale].nunique()
                             .rename("scales"))
    complete = per_clip[per_clip["scales"] == n_scales]
    rows: list[dict] = []
    for who in pd.unique(frame[participant].sort_values()):
        mine = complete.xs(who, level=0) if who in complete.index.get_level_values(0) else complete.iloc[:0]
        n_clips = len(mine)
        share = float((mine["nunique"] == 1).mean()) if n_clips else np.nan
        if n_scales < 2 or n_clips < min_clips:
            rejected = False
            reason = (f"straight-lining across scales: {n_clips} clips rated on all {n_scales} scales "
                      f"(< {min_clips} or fewer than 2 scales), not judged")
        else:
            rejected = bool(share >= max_identical_share)
            reason = (f"straight-lining across scales: identical answers on all {n_scales} scales for "
                      f"{share:.0%} of {n_clips} clips ({'≥' if rejected else '<'} {max_identical_share:.0%})")
        rows.append({participant: who, "rule": "straight_lining_across_scales", "rejected": rejected,
                     "reason": reason, "statistic": share, "threshold": max_identical_share,
                     "secondary_statistic": np.nan, "secondary_threshold": np.nan, "n_ratings": n_clips})
    return _frame([], participant, rows)


# ---------------------------------------------------------------------------------------------------------
# Running rules and dropping the rejected


def screen_participants(
    data: pd.DataFrame,
    *,
    rules: Sequence[str] = DEFAULT_RULES,
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    scale: str = "scale",
    rating: str = "rating",
) -> pd.DataFrame:
    """Run several screening rules (each per scale) and stack their decisions.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    rules : sequence of str
        Any of :data:`RULES`; by default BT.500, the P.913 correlation rule, z-scores and straight-lining.
    participant, clip, condition, scale, rating : str
        Column names.

    Returns
    -------
    pandas.DataFrame
        ``scale`` followed by :data:`DECISION_COLUMNS`, one row per rule, scale and participant
        (``scale`` is ``"all"`` for the across-scales rule), each rule with its own defaults.
    """
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; choose from {RULES}")
    common = dict(participant=participant, rating=rating, by=(scale,))
    frames = []
    for rule in rules:
        if rule == "bt500":
            frames.append(bt500_screening(data, stimulus=clip, **common))
        elif rule == "bt1788_correlation":
            frames.append(bt1788_correlation_screening(data, stimulus=clip, **common))
        elif rule == "p913_correlation":
            frames.append(p913_correlation_screening(data, stimulus=clip, condition=condition, **common))
        elif rule == "z_score":
            frames.append(z_score_screening(data, stimulus=clip, **common))
        elif rule == "straight_lining":
            frames.append(straight_lining_screening(data, **common))
        else:
            across = cross_scale_straight_lining_screening(data, participant=participant, clip=clip, scale=scale,
                                                           rating=rating)
            across.insert(0, scale, "all")
            frames.append(across)
    columns = [scale, participant, *DECISION_COLUMNS[1:]]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat([f[columns] for f in frames], ignore_index=True)


def rejected_participants(decisions: pd.DataFrame, *, rules: Sequence[str] | None = None,
                          participant: str = "participant") -> list:
    """Sorted participants rejected by any of ``rules`` (all rules when None) in any group."""
    chosen = decisions if rules is None else decisions[decisions["rule"].isin(list(rules))]
    return sorted(pd.unique(chosen.loc[chosen["rejected"], participant]).tolist())


def drop_rejected(
    data: pd.DataFrame,
    decisions: pd.DataFrame,
    *,
    rules: Sequence[str] | None = None,
    participant: str = "participant",
    per_group: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The ratings without the participants the chosen rules rejected.

    Parameters
    ----------
    data : pandas.DataFrame
        The long ratings frame.
    decisions : pandas.DataFrame
        Output of a screening rule or :func:`screen_participants`.
    rules : sequence of str, optional
        Rules whose rejections count; all of them by default.
    participant : str
        Participant column (in both frames).
    per_group : sequence of str, optional
        E.g. ``("scale",)``: drop a participant's ratings only in the groups where they were rejected (a
        decision whose group value is ``"all"`` applies to every group). By default a participant rejected
        anywhere is dropped everywhere.

    Returns
    -------
    pandas.DataFrame
        A copy of ``data`` without the rejected ratings (index preserved).
    """
    chosen = decisions if rules is None else decisions[decisions["rule"].isin(list(rules))]
    chosen = chosen[chosen["rejected"]]
    if not per_group:
        return data[~data[participant].isin(chosen[participant].unique())].copy()
    per_group = list(per_group)
    drop = np.zeros(len(data), dtype=bool)
    for _, decision in chosen.iterrows():
        mask = (data[participant] == decision[participant]).to_numpy().copy()
        for column in per_group:
            if decision[column] != "all":
                mask &= (data[column] == decision[column]).to_numpy()
        drop |= mask
    return data[~drop].copy()
