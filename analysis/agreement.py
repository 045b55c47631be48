"""Inter-rater agreement: intraclass correlations, Krippendorff's alpha, split-half reliability. Django-free.

Functions take the long ratings frame of :mod:`analysis.data` (one row per rating; columns ``participant``,
``clip``, ``condition``, ``scale``, ``rating``) plus column names, and return tidy DataFrames with stable
snake_case columns. Nothing is rounded here.

Faithful (checked in tests/analysis/test_agreement.py against published values):

* ICC: a thin wrapper around :func:`pingouin.intraclass_corr` (two-way ANOVA, Shrout & Fleiss 1979 / McGraw &
  Wong 1996). pingouin renamed its rows after 0.6 ("ICC1", "ICC2", ... became "ICC(1,1)", "ICC(A,1)", ...);
  both label sets are mapped to the stable ``form`` names ``icc_1_1, icc_a_1, icc_c_1, icc_1_k, icc_a_k,
  icc_c_k`` and unknown labels fall back to pingouin's fixed row order. Reproduces pingouin's ICC dataset and the
  Shrout & Fleiss example; the CI bounds are taken at full precision (pingouin rounds them to 2 decimals unless
  its ``round.column.CI95`` option says otherwise; pingouin versions without that option round them).
* Krippendorff's alpha (nominal, ordinal, interval, ratio; missing data allowed): our own vectorised
  coincidence-matrix implementation after Krippendorff (2011, "Computing Krippendorff's alpha-reliability").
  Reproduces Krippendorff's published .743 / .815 / .849 / .797 on his 4 coders x 12 units example.

UNVERIFIED choices (documented where they are made):

* ICC needs a complete crossed design (every rater rates every target); with ``nan_policy="omit"`` pingouin
  drops every target that misses a rating. A study where each participant sees a subset of the clips has
  hardly any complete target: report the ICC from the crossed mixed model's variance components instead
  (statistics.md §4.1). Repeated ratings of one target by one rater are averaged first.
* Split-half reliability: participants are split at random into halves (sizes ⌊P/2⌋ and ⌈P/2⌉), the item MOS
  (condition MOS by default) is computed in each half, the halves are correlated (Pearson, over the items
  rated in both halves) and stepped up to the full panel with Spearman–Brown, 2r/(1+r). Over many random
  splits we report the mean and the spread of the split distribution (not a sampling CI).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from scipy import sparse

# pingouin's row order is fixed: one-way, two-way random (absolute agreement), two-way mixed (consistency),
# each for a single rating and for the mean of k ratings.
ICC_FORMS = (
    # form      McGraw & Wong / pingouin >= 0.7   Shrout & Fleiss / pingouin <= 0.6
    ("icc_1_1", "ICC(1,1)", "ICC1"),
    ("icc_a_1", "ICC(A,1)", "ICC2"),
    ("icc_c_1", "ICC(C,1)", "ICC3"),
    ("icc_1_k", "ICC(1,k)", "ICC1k"),
    ("icc_a_k", "ICC(A,k)", "ICC2k"),
    ("icc_c_k", "ICC(C,k)", "ICC3k"),
)
ICC_COLUMNS = ["form", "label", "shrout_fleiss", "icc", "f", "df1", "df2", "p_value", "ci_low", "ci_high",
               "n_targets", "n_raters"]
ALPHA_LEVELS = ("nominal", "ordinal", "interval", "ratio")
ALPHA_COLUMNS = ["level", "alpha", "n_units", "n_pairable_values"]
SPLIT_HALF_COLUMNS = ["n_participants", "n_items", "n_splits", "r_half_mean", "spearman_brown_mean",
                      "spearman_brown_split_low", "spearman_brown_split_high"]
SUMMARY_COLUMNS = ["n_targets", "n_raters", "icc_a_1", "icc_a_1_ci_low", "icc_a_1_ci_high", "icc_a_k",
                   "icc_a_k_ci_low", "icc_a_k_ci_high", "icc_c_1", "icc_note", "alpha_ordinal", "alpha_interval",
                   "split_half_spearman_brown"]

_PINGOUIN_LOCK = threading.Lock()


@contextmanager
def pingouin_full_precision() -> Iterator[None]:
    """Within the block, pingouin leaves its ``CI95`` columns unrounded (it rounds them to 2 decimals by default).

    pingouin keeps its rounding rules in a module-level dict; the override is restored on exit and guarded by a
    lock so two threads cannot interleave.
    """
    import pingouin

    key = "round.column.CI95"
    with _PINGOUIN_LOCK:
        had_key = key in pingouin.options
        previous = pingouin.options.get(key)
        pingouin.options[key] = None
        try:
            yield
        finally:
            if had_key:
                pingouin.options[key] = previous
            else:
                pingouin.options.pop(key, None)


def _require_columns(data: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")


def _groups(data: pd.DataFrame, by: Sequence[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """(key tuple, sub-frame) per group; one group with an empty key when ``by`` is empty."""
    by = list(by)
    if not by:
        yield (), data
        return
    for key, frame in data.groupby(by, sort=True, observed=True):
        yield (key if isinstance(key, tuple) else (key,)), frame


def normalize_icc_table(raw: pd.DataFrame) -> pd.DataFrame:
    """pingouin's ICC table, old or new style, as stable snake_case columns.

    Parameters
    ----------
    raw : pandas.DataFrame
        The output of :func:`pingouin.intraclass_corr`: six rows with a ``Type`` column labelled either
        ``ICC1 … ICC3k`` (pingouin <= 0.6, with a ``Description`` column) or ``ICC(1,1) … ICC(C,k)``
        (pingouin >= 0.7), and columns ``ICC, F, df1, df2``, a p-value column (``pval``, ``p-val``, ``p_val``
        or ``p_unc``) and a CI column whose name starts with ``CI``.

    Returns
    -------
    pandas.DataFrame
        Six rows in pingouin's order with ``form`` (``icc_1_1, icc_a_1, icc_c_1, icc_1_k, icc_a_k, icc_c_k``),
        ``label`` (McGraw & Wong), ``shrout_fleiss``, ``icc``, ``f``, ``df1``, ``df2``, ``p_value``,
        ``ci_low``, ``ci_high``.

    Notes
    -----
    Rows are matched by label in either style; if neither label set matches (a future renaming), they are
    taken by position, since pingouin has always emitted the six forms in this order.
    """
    if len(raw) != len(ICC_FORMS):
        raise ValueError(f"expected {len(ICC_FORMS)} ICC rows, got {len(raw)}")
    labels = [str(v) for v in raw["Type"]] if "Type" in raw.columns else []
    lookup = {label: form for form, new_label, old_label in ICC_FORMS for label in (new_label, old_label)}
    forms = [lookup.get(label) for label in labels]
    if len(forms) != len(ICC_FORMS) or None in forms or len(set(forms)) != len(ICC_FORMS):
        forms = [form for form, _, _ in ICC_FORMS]
    p_column = next((c for c in ("pval", "p-val", "p_val", "p_unc", "p-unc") if c in raw.columns), None)
    ci_column = next((c for c in raw.columns if str(c).upper().startswith("CI")), None)
    if p_column is None or ci_column is None:
        raise KeyError(f"no p-value or CI column among {list(raw.columns)}")
    ci = np.array([np.asarray(v, dtype=float) for v in raw[ci_column]])
    by_form = {form: (new_label, old_label) for form, new_label, old_label in ICC_FORMS}
    out = pd.DataFrame({
        "form": forms,
        "label": [by_form[f][0] for f in forms],
        "shrout_fleiss": [by_form[f][1] for f in forms],
        "icc": raw["ICC"].to_numpy(dtype=float),
        "f": raw["F"].to_numpy(dtype=float),
        "df1": raw["df1"].to_numpy(dtype=float),
        "df2": raw["df2"].to_numpy(dtype=float),
        "p_value": raw[p_column].to_numpy(dtype=float),
        "ci_low": ci[:, 0],
        "ci_high": ci[:, 1],
    })
    order = {form: i for i, (form, _, _) in enumerate(ICC_FORMS)}
    return out.sort_values("form", key=lambda s: s.map(order)).reset_index(drop=True)


def intraclass_correlations(
    data: pd.DataFrame,
    *,
    target: str = "clip",
    rater: str = "participant",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    nan_policy: str = "omit",
) -> pd.DataFrame:
    """All six intraclass correlations per group, via pingouin, with stable names.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    target, rater, rating : str
        Columns naming the rated item (clip), the rater (participant) and the score.
    by : sequence of str
        Groups analysed separately, e.g. ``("scale",)``.
    nan_policy : {"omit", "raise"}
        Passed to pingouin: ``"omit"`` drops every target some rater did not rate (listwise deletion).

    Returns
    -------
    pandas.DataFrame
        Per group, six rows: the ``by`` columns, ``form`` (``icc_1_1``, ``icc_a_1``, ``icc_c_1``, ``icc_1_k``,
        ``icc_a_k``, ``icc_c_k``), ``label`` (``ICC(A,1)`` …), ``shrout_fleiss`` (``ICC2`` …), ``icc``, ``f``,
        ``df1``, ``df2``, ``p_value``, ``ci_low``, ``ci_high`` (95 %), ``n_targets`` and ``n_raters`` (after
        listwise deletion).

    Notes
    -----
    For MOS studies report ``icc_a_1`` (the reliability of one participant's rating, raters as a random sample,
    absolute agreement) and ``icc_a_k`` (the reliability of the MOS of k participants). ``icc_c_1`` clearly
    above ``icc_a_1`` means participants differ in their bias (statistics.md §4.1). Repeated ratings of one
    target by one rater are averaged before the ANOVA (pingouin would do so silently).

    Raises
    ------
    ValueError
        When fewer than two complete targets or raters remain after listwise deletion: the design is too
        incomplete for an ANOVA ICC; use the mixed model's variance components instead.

    References
    ----------
    .. [1] Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
       reliability. Psychological Bulletin, 86(2), 420–428.
    .. [2] McGraw, K. O., & Wong, S. P. (1996). Forming inferences about some intraclass correlation
       coefficients. Psychological Methods, 1(1), 30–46.
    .. [3] Liljequist, D., Elfving, B., & Skavberg Roaldsen, K. (2019). Intraclass correlation – a discussion
       and demonstration of basic features. PLOS ONE, 14(7), e0219854.
    """
    import pingouin

    by = list(by)
    _require_columns(data, [target, rater, rating, *by])
    frames = []
    for key, frame in _groups(data, by):
        cells = frame.groupby([target, rater], observed=True, sort=True)[rating].mean().reset_index()
        wide = cells.pivot(index=target, columns=rater, values=rating)
        complete = wide.dropna(axis=0, how="any") if nan_policy == "omit" else wide
        if nan_policy == "raise" and wide.isna().any().any():
            raise ValueError(f"group {key}: missing ratings (the design is not complete); use nan_policy='omit'")
        n_targets, n_raters = complete.shape
        if n_targets < 2 or n_raters < 2:
            raise ValueError(
                f"group {key}: {n_targets} complete targets x {n_raters} raters; an ANOVA ICC needs a complete "
                "crossed design (derive the ICC from the crossed mixed model's variance components instead)")
        long = complete.reset_index().melt(id_vars=target, var_name=rater, value_name=rating)
        with pingouin_full_precision():
            raw = pingouin.intraclass_corr(data=long, targets=target, raters=rater, ratings=rating)
        table = normalize_icc_table(raw)
        table["n_targets"] = n_targets
        table["n_raters"] = n_raters
        for column, value in zip(by, key):
            table[column] = value
        frames.append(table[[*by, *ICC_COLUMNS]])
    if not frames:
        return pd.DataFrame(columns=[*by, *ICC_COLUMNS])
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Krippendorff's alpha


def _distance_matrix(values: np.ndarray, marginals: np.ndarray, level: str) -> np.ndarray:
    """Squared difference δ²(c, k) between every pair of values in the domain (Krippendorff 2011)."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    if level == "ratio":
        total = np.add.outer(values, values)
        diff = np.subtract.outer(values, values)
        return np.divide(diff, total, out=np.zeros_like(diff), where=total != 0) ** 2
    if level == "ordinal":
        # δ(c, k) = Σ_{g from c to k} n_g − (n_c + n_k)/2, over the domain in its order.
        cumulative = np.cumsum(marginals)
        index = np.arange(len(values))
        high = np.maximum.outer(index, index)
        low = np.minimum.outer(index, index)
        between = cumulative[high] - cumulative[low] + marginals[low]
        return (between - np.add.outer(marginals, marginals) / 2.0) ** 2
    raise ValueError(f"level must be one of {ALPHA_LEVELS}, got {level!r}")


def krippendorff_alpha_from_counts(value_counts: np.ndarray, values: np.ndarray, level: str = "interval") -> float:
    """Krippendorff's alpha from a units x values table of counts.

    Parameters
    ----------
    value_counts : array_like, shape (n_units, n_values)
        How many times each value was given to each unit (missing ratings simply are not counted).
    values : array_like, shape (n_values,)
        The value domain, in order (the order matters for ``"ordinal"``, the numbers for ``"interval"`` and
        ``"ratio"``).
    level : {"nominal", "ordinal", "interval", "ratio"}
        Level of measurement, which selects the difference function.

    Returns
    -------
    float
        α = 1 − D_o / D_e; NaN when no unit has two values or every pairable value is the same (D_e = 0).

    Notes
    -----
    Units with fewer than two values are not pairable and are dropped. The coincidence matrix is
    o_ck = Σ_u (n_uc n_uk − [c = k] n_uc) / (m_u − 1), its marginals n_c, n = Σ n_c, and
    α = 1 − (n − 1) Σ o_ck δ²_ck / Σ n_c n_k δ²_ck.

    References
    ----------
    .. [1] Krippendorff, K. (2011). Computing Krippendorff's alpha-reliability. Annenberg School for
       Communication, University of Pennsylvania.
    """
    counts = np.asarray(value_counts, dtype=float)
    values = np.asarray(values, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != len(values):
        raise ValueError(f"value_counts must be (n_units, {len(values)}), got {counts.shape}")
    per_unit = counts.sum(axis=1)
    pairable = per_unit >= 2
    counts, per_unit = counts[pairable], per_unit[pairable]
    if len(counts) == 0:
        return float("nan")
    scaled = counts / (per_unit - 1.0)[:, None]
    coincidences = counts.T @ scaled - np.diag(scaled.sum(axis=0))
    marginals = coincidences.sum(axis=1)
    n_total = marginals.sum()
    delta = _distance_matrix(values, marginals, level)
    expected = marginals @ delta @ marginals
    if expected <= 0:
        return float("nan")
    observed = float((coincidences * delta).sum())
    return float(1.0 - (n_total - 1.0) * observed / expected)


def _value_codes(ratings: np.ndarray, value_domain: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    if value_domain is None:
        domain, codes = np.unique(ratings, return_inverse=True)
        return domain.astype(float), codes
    domain = np.asarray(value_domain, dtype=float)
    lookup = {v: i for i, v in enumerate(domain.tolist())}
    try:
        codes = np.fromiter((lookup[v] for v in ratings.tolist()), dtype=np.int64, count=len(ratings))
    except KeyError as err:
        raise ValueError(f"rating {err.args[0]} is not in value_domain {list(domain)}") from None
    return domain, codes


def krippendorff_alpha(
    reliability_data: np.ndarray,
    level: str = "interval",
    value_domain: Sequence[float] | None = None,
) -> float:
    """Krippendorff's alpha of a coders x units matrix with NaN for missing ratings.

    Parameters
    ----------
    reliability_data : array_like, shape (n_coders, n_units)
        One row per coder (participant), one column per unit (clip); NaN where a coder did not rate a unit.
        Same orientation as the ``krippendorff`` PyPI package.
    level : {"nominal", "ordinal", "interval", "ratio"}
        Level of measurement.
    value_domain : sequence of float, optional
        The ordered value domain (e.g. ``(1, 2, 3, 4, 5)``); by default the sorted distinct values observed.

    Returns
    -------
    float
        Krippendorff's alpha (NaN when undefined, see :func:`krippendorff_alpha_from_counts`).

    References
    ----------
    .. [1] Krippendorff, K. (2011). Computing Krippendorff's alpha-reliability. Annenberg School for
       Communication, University of Pennsylvania.
    .. [2] Hayes, A. F., & Krippendorff, K. (2007). Answering the call for a standard reliability measure for
       coding data. Communication Methods and Measures, 1(1), 77–89.

    Examples
    --------
    >>> data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
    ...         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
    ...         [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
    ...         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan]]
    >>> round(krippendorff_alpha(data, "nominal"), 3), round(krippendorff_alpha(data, "interval"), 3)
    (0.743, 0.849)
    """
    matrix = np.asarray(reliability_data, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"reliability_data must be 2-D (coders x units), got shape {matrix.shape}")
    coder_idx, unit_idx = np.nonzero(~np.isnan(matrix))
    return _alpha_from_long(unit_idx, matrix[coder_idx, unit_idx], matrix.shape[1], level, value_domain)[0]


def _alpha_from_long(unit_codes: np.ndarray, ratings: np.ndarray, n_units: int, level: str,
                     value_domain: Sequence[float] | None) -> tuple[float, int, int]:
    """(alpha, pairable units, pairable values) from one value per rating and its unit code."""
    if len(ratings) == 0:
        return float("nan"), 0, 0
    domain, codes = _value_codes(np.asarray(ratings, dtype=float), value_domain)
    counts = np.bincount(unit_codes * len(domain) + codes, minlength=n_units * len(domain)).reshape(
        n_units, len(domain))
    per_unit = counts.sum(axis=1)
    pairable = per_unit >= 2
    alpha = krippendorff_alpha_from_counts(counts, domain, level)
    return alpha, int(pairable.sum()), int(per_unit[pairable].sum())


def krippendorff_alphas(
    data: pd.DataFrame,
    *,
    unit: str = "clip",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    levels: Sequence[str] = ("ordinal", "interval"),
    value_domain: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Krippendorff's alpha per group and level of measurement, from the long ratings frame.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    unit : str
        Column naming the rated unit (clip). Coder identity does not enter alpha: every rating is one value of
        its unit.
    rating : str
        Column with the (numeric) ratings.
    by : sequence of str
        Groups analysed separately, e.g. ``("scale",)``.
    levels : sequence of {"nominal", "ordinal", "interval", "ratio"}
        Levels to report; for 1–5 ACR report ordinal and interval (statistics.md §4.2).
    value_domain : sequence of float, optional
        Ordered value domain; by default the distinct ratings observed in the group.

    Returns
    -------
    pandas.DataFrame
        One row per group and level: the ``by`` columns, ``level``, ``alpha``, ``n_units`` (units with at
        least two ratings) and ``n_pairable_values`` (ratings in those units).

    Notes
    -----
    A participant who rated the same clip twice contributes two values to that unit (UNVERIFIED choice; the
    textbook setting has at most one value per coder and unit).

    References
    ----------
    .. [1] Krippendorff, K. (2011). Computing Krippendorff's alpha-reliability. Annenberg School for
       Communication, University of Pennsylvania.
    """
    by = list(by)
    _require_columns(data, [unit, rating, *by])
    for level in levels:
        if level not in ALPHA_LEVELS:
            raise ValueError(f"level must be one of {ALPHA_LEVELS}, got {level!r}")
    rows = []
    for key, frame in _groups(data, by):
        frame = frame.dropna(subset=[rating])
        unit_codes, unit_index = pd.factorize(frame[unit], sort=True)
        ratings = pd.to_numeric(frame[rating], errors="raise").to_numpy(dtype=float)
        for level in levels:
            alpha, n_units, n_values = _alpha_from_long(unit_codes, ratings, len(unit_index), level, value_domain)
            rows.append({**dict(zip(by, key)), "level": level, "alpha": alpha, "n_units": n_units,
                         "n_pairable_values": n_values})
    return pd.DataFrame(rows, columns=[*by, *ALPHA_COLUMNS])


# ---------------------------------------------------------------------------------------------------------
# Split-half reliability


def _rowwise_pearson_masked(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pearson r of x[b] and y[b] over the entries where valid[b] is True, for every row b (NaN if < 3)."""
    weight = valid.astype(float)
    count = weight.sum(axis=1)
    x = np.where(valid, x, 0.0)
    y = np.where(valid, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = (weight * x).sum(axis=1) / count
        mean_y = (weight * y).sum(axis=1) / count
        dx = (x - mean_x[:, None]) * weight
        dy = (y - mean_y[:, None]) * weight
        r = (dx * dy).sum(axis=1) / np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    r[count < 3] = np.nan
    return r


def split_half_reliability(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    item: str = "condition",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    n_splits: int = 1000,
    split_range: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> pd.DataFrame:
    """Split-half reliability of the item MOS (condition MOS by default), stepped up with Spearman–Brown.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    participant : str
        Column naming the participant; participants (not ratings) are split.
    item : str
        Column whose MOS is assessed: ``"condition"`` (the systems compared) or ``"clip"``.
    rating : str
        Column with the ratings.
    by : sequence of str
        Groups analysed separately, e.g. ``("scale",)``.
    n_splits : int
        Number of random splits of the participants into two halves.
    split_range : float
        Central share of the split distribution reported as ``spearman_brown_split_low/high``.
    seed : int or numpy.random.Generator
        Seed (or generator) for the random splits.

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` columns, ``n_participants``, ``n_items``, ``n_splits``,
        ``r_half_mean`` (mean Pearson r between the two halves' item MOS), ``spearman_brown_mean`` (mean over
        splits of 2r/(1 + r), the estimated reliability of the full panel's MOS), and
        ``spearman_brown_split_low`` / ``spearman_brown_split_high`` (quantiles of the split distribution).

    Notes
    -----
    Each split is computed from participant x item sums and counts in one sparse product, so all splits are
    vectorised. An item not rated in one half of a split is left out of that split's correlation. The spread
    reflects the arbitrariness of the split, not the sampling error of the reliability.

    References
    ----------
    .. [1] Spearman, C. (1910). Correlation calculated from faulty data. British Journal of Psychology, 3,
       271–295.
    .. [2] Brown, W. (1910). Some experimental results in the correlation of mental abilities. British Journal
       of Psychology, 3, 296–322.
    """
    by = list(by)
    _require_columns(data, [participant, item, rating, *by])
    if n_splits < 1:
        raise ValueError("n_splits must be >= 1")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tail = (1.0 - split_range) / 2.0
    rows = []
    for key, frame in _groups(data, by):
        frame = frame.dropna(subset=[rating])
        p_codes, p_index = pd.factorize(frame[participant], sort=True)
        i_codes, i_index = pd.factorize(frame[item], sort=True)
        n_p, n_i = len(p_index), len(i_index)
        values = pd.to_numeric(frame[rating], errors="raise").to_numpy(dtype=float)
        sums = sparse.csr_matrix((values, (p_codes, i_codes)), shape=(n_p, n_i))
        counts = sparse.csr_matrix((np.ones_like(values), (p_codes, i_codes)), shape=(n_p, n_i))
        row = {**dict(zip(by, key)), "n_participants": n_p, "n_items": n_i, "n_splits": n_splits}
        if n_p < 2 or n_i < 3:
            rows.append({**row, "r_half_mean": np.nan, "spearman_brown_mean": np.nan,
                         "spearman_brown_split_low": np.nan, "spearman_brown_split_high": np.nan})
            continue
        # (n_splits, P) indicator of the first half: the first ⌊P/2⌋ of a random permutation.
        order = np.argsort(rng.random((n_splits, n_p)), axis=1)
        first = np.zeros((n_splits, n_p))
        np.put_along_axis(first, order[:, : n_p // 2], 1.0, axis=1)
        total_sum = np.asarray(sums.sum(axis=0)).ravel()
        total_count = np.asarray(counts.sum(axis=0)).ravel()
        sum_a = (sums.T @ first.T).T
        count_a = (counts.T @ first.T).T
        sum_b, count_b = total_sum - sum_a, total_count - count_a
        valid = (count_a > 0) & (count_b > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = _rowwise_pearson_masked(sum_a / count_a, sum_b / count_b, valid)
            stepped = 2.0 * r / (1.0 + r)
        rows.append({**row, "r_half_mean": float(np.nanmean(r)) if np.isfinite(r).any() else np.nan,
                     "spearman_brown_mean": float(np.nanmean(stepped)) if np.isfinite(stepped).any() else np.nan,
                     "spearman_brown_split_low": float(np.nanquantile(stepped, tail))
                     if np.isfinite(stepped).any() else np.nan,
                     "spearman_brown_split_high": float(np.nanquantile(stepped, 1.0 - tail))
                     if np.isfinite(stepped).any() else np.nan})
    return pd.DataFrame(rows, columns=[*by, *SPLIT_HALF_COLUMNS])


def agreement_summary(
    data: pd.DataFrame,
    *,
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    n_splits: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The agreement figures a MOS report needs, one row per group (statistics.md §5).

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    participant, clip, condition, rating : str
        Column names.
    by : sequence of str
        Groups analysed separately, e.g. ``("scale",)``.
    n_splits, seed : int
        Passed to :func:`split_half_reliability` (of the condition MOS).

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns, ``n_targets`` and ``n_raters`` (complete clips x participants used for the ICC),
        ``icc_a_1`` and ``icc_a_k`` with their 95 % ``_ci_low``/``_ci_high``, ``icc_c_1``, ``icc_note`` (why
        the ICC is missing, else empty), ``alpha_ordinal``, ``alpha_interval`` and
        ``split_half_spearman_brown`` (mean over splits).
    """
    by = list(by)
    alphas = krippendorff_alphas(data, unit=clip, rating=rating, by=by)
    halves = split_half_reliability(data, participant=participant, item=condition, rating=rating, by=by,
                                    n_splits=n_splits, seed=seed)
    rows = []
    for key, frame in _groups(data, by):
        row = dict(zip(by, key))
        try:
            icc = intraclass_correlations(frame, target=clip, rater=participant, rating=rating, by=[])
            forms = icc.set_index("form")
            row.update(n_targets=int(icc["n_targets"].iloc[0]), n_raters=int(icc["n_raters"].iloc[0]),
                       icc_a_1=forms.at["icc_a_1", "icc"], icc_a_1_ci_low=forms.at["icc_a_1", "ci_low"],
                       icc_a_1_ci_high=forms.at["icc_a_1", "ci_high"], icc_a_k=forms.at["icc_a_k", "icc"],
                       icc_a_k_ci_low=forms.at["icc_a_k", "ci_low"], icc_a_k_ci_high=forms.at["icc_a_k", "ci_high"],
                       icc_c_1=forms.at["icc_c_1", "icc"], icc_note="")
        except ValueError as err:
            row.update(n_targets=0, n_raters=0, icc_a_1=np.nan, icc_a_1_ci_low=np.nan, icc_a_1_ci_high=np.nan,
                       icc_a_k=np.nan, icc_a_k_ci_low=np.nan, icc_a_k_ci_high=np.nan, icc_c_1=np.nan,
                       icc_note=str(err))
        mask = np.ones(len(alphas), dtype=bool)
        half_mask = np.ones(len(halves), dtype=bool)
        for column, value in zip(by, key):
            mask &= (alphas[column] == value).to_numpy()
            half_mask &= (halves[column] == value).to_numpy()
        level_alpha = alphas[mask].set_index("level")["alpha"]
        row["alpha_ordinal"] = float(level_alpha.get("ordinal", np.nan))
        row["alpha_interval"] = float(level_alpha.get("interval", np.nan))
        row["split_half_spearman_brown"] = float(halves.loc[half_mask, "spearman_brown_mean"].iloc[0]) \
            if half_mask.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])
