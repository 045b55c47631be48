"""How well objective metrics predict MOS: correlations with crossed-bootstrap CIs, repeated-measures
correlation, ITU-T P.1401 evaluation and ranking agreement. Django-free.

Functions take the long ratings frame of :mod:`analysis.data` (one row per rating: ``participant``, ``clip``,
``condition``, ``content``, ``scale``, ``rating``) with one column per metric holding the clip's value on
every row of that clip (a condition-level metric such as FID holds the condition's value), plus column
names. They return tidy DataFrames with stable snake_case columns; nothing is rounded.

Sign convention. Metrics where lower is better (:data:`LOWER_IS_BETTER`: FID, LSE-D, LMD, IFC, LPIPS, or as
given by ``higher_is_better``) are negated before anything is computed, so a positive correlation always
means "the metric agrees with people". Every table says so in ``higher_is_better`` and ``sign`` (the factor
applied, +1 or -1).

Crossed ("two-way", "pigeonhole") bootstrap. A replicate draws participants with replacement (weights
w_p = how often p was drawn) and, independently, clips with replacement (weights v_c). The replicate's MOS of
clip c is Σ_p w_p·sum_pc / Σ_p w_p·n_pc. At clip level the correlation is taken over clips with multiplicities
v_c (a clip whose raters were all left out drops out of that replicate); at condition level clips are drawn
within their condition (stratified, the conditions are the fixed systems under test), the condition MOS is
the mean of all its replicate ratings and the condition's metric the mean over its drawn clips. All
replicates are computed at once with sparse x dense products; weighted Pearson, Spearman (weighted mid-ranks)
and Kendall τ-b on the expanded sample are vectorised over replicates, and the point estimates (all weights
1) equal scipy's. CIs are percentile intervals. Resampling both ways is known to be slightly conservative
(Owen 2007); resampling participants only or clips only is available through ``resample``.

Faithful (tests/analysis/test_metric_validity.py):

* ``repeated_measures_correlation`` wraps :func:`pingouin.rm_corr` (Bakdash & Marusich 2017) and reproduces
  pingouin's Bland & Altman example (r = -0.507, dof 38, p = 0.000847, CI [-0.71, -0.23]); the CI is
  recomputed unrounded with pingouin's own formula (Fisher z with n = dof + 2).
* P.1401 figures: rmse = √(Σ e² / (N − d)), rmse* = √(Σ max(0, |e| − ci95)² / (N − d)) (§7.7),
  outlier ratio = #(|e| > ci95)/N (§7.5.2.2), with d = 1 (no mapping), 2 (linear) or 4 (third-order
  mapping); SUREAL's perf-metric sanity values (RMSE 0.5, PCC 0.9827, SRCC 0.8, KRCC 1.0).
* Weighted Pearson, Spearman and Kendall tau-b (the bootstrap's engine) equal scipy on the expanded samples;
  Kendall uses a dense all-pairs form for few items and an O(K^1.5) blocked walk for many clips sharing x.

UNVERIFIED choices:

* Monotonic third-order mapping (P.1401 App. I asks for a monotonic polynomial without fixing a fitting
  method): least squares with the linear constraints f'(x_k) ≥ 0 on a grid of 64 points spanning the data
  range, solved by SLSQP; afterwards the exact minimum of the quadratic f' over the range is checked, and a
  violating point is added to the grid and the fit repeated, so the mapping is monotonic on the whole data
  range (not only at the grid). When the unconstrained cubic is already monotonic it is returned unchanged.
  The mapping is increasing in the oriented metric: a metric that orders conditions the wrong way gets a
  poor fit instead of a silent sign flip.
* ci95 of an item for rmse* and the outlier ratio: Student t with n − 1 dof (as :func:`analysis.mos.mos_table`);
  P.1401 App. III writes t(0.05, M) and switches to 1.96 for M ≥ 30. ``outlier_bound="two_se"`` uses VQEG
  FR-TV's 2σ/√M instead. Items with a single rating have no ci95 and are left out of rmse* and the outlier
  ratio (``note`` says how many).
* p-values are the usual ones for independent items (scipy); they ignore that clips share raters, which the
  bootstrap CI does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.polynomial import Polynomial
from scipy import optimize, sparse, stats

LOWER_IS_BETTER = frozenset({"fid", "lse_d", "lmd", "ifc", "lpips"})
CORRELATION_METHODS = ("pearson", "spearman", "kendall")
LEVELS = ("clip", "condition")
CORRELATION_COLUMNS = ["metric", "level", "higher_is_better", "sign", "method", "n_items", "n_participants",
                       "correlation", "ci_low", "ci_high", "p_value", "boot_se", "n_boot_valid"]
RM_CORR_COLUMNS = ["r", "dof", "p_value", "ci_low", "ci_high", "power"]
METRIC_RM_CORR_COLUMNS = ["metric", "higher_is_better", "sign", "n_clips", "n_subjects", *RM_CORR_COLUMNS]
P1401_COLUMNS = ["metric", "level", "higher_is_better", "sign", "mapping", "n_items", "n_params", "pearson_raw",
                 "spearman", "kendall", "pearson_mapped", "rmse", "rmse_star", "outlier_ratio", "outlier_bound",
                 "coef_0", "coef_1", "coef_2", "coef_3", "min_slope", "note"]
RANKING_COLUMNS = ["metric", "higher_is_better", "sign", "n_conditions", "kendall_tau", "ci_low", "ci_high",
                   "p_value", "boot_mean", "top_agrees", "boot_top_agreement", "n_boot_valid"]
CONDITION_RANK_COLUMNS = ["metric", "higher_is_better", "condition", "mos", "mos_rank", "metric_value",
                          "metric_rank"]
MAPPING_PARAMS = {"none": 1, "linear": 2, "cubic": 4}


def metric_orientation(metrics: Sequence[str], higher_is_better: Mapping[str, bool] | None = None) -> dict[str, bool]:
    """Whether a higher value of each metric means better quality.

    Parameters
    ----------
    metrics : sequence of str
        Metric column names (snake_case keys as in ``generation.metrics.catalog``).
    higher_is_better : mapping of str to bool, optional
        Explicit directions; metrics not in it default to lower-is-better if in :data:`LOWER_IS_BETTER`
        (``fid``, ``lse_d``, ``lmd``, ``ifc``, ``lpips``) and higher-is-better otherwise.

    Returns
    -------
    dict
        ``{metric: higher_is_better}``.
    """
    given = dict(higher_is_better or {})
    return {m: bool(given[m]) if m in given else m not in LOWER_IS_BETTER for m in metrics}


# ---------------------------------------------------------------------------------------------------------
# Weighted correlations, vectorised over rows (replicates)


def _sanitize(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.where(np.isfinite(x) & np.isfinite(y), w, 0.0).astype(float)
    return np.where(w > 0, x, 0.0), np.where(w > 0, y, 0.0), w


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``x`` with the same row of ``y``, observation i counted ``w[i]`` times.

    Parameters
    ----------
    x, y, w : ndarray, shape (n_rows, n_items)
        Values and non-negative multiplicities; NaN values get weight 0.

    Returns
    -------
    ndarray, shape (n_rows,)
        r per row; NaN when fewer than 3 distinct items have weight or either side has no spread. With integer
        weights this is Pearson's r of the sample in which item i is repeated w[i] times.
    """
    x, y, w = _sanitize(np.atleast_2d(x), np.atleast_2d(y), np.atleast_2d(w))
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (w * x).sum(axis=1, keepdims=True) / total[:, None]
        dy = y - (w * y).sum(axis=1, keepdims=True) / total[:, None]
        sxx, syy = (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1)
        r = (w * dx * dy).sum(axis=1) / np.sqrt(sxx * syy)
    scale = np.maximum(1.0, np.maximum(np.abs(x).max(axis=1), np.abs(y).max(axis=1)))
    flat = (sxx <= 1e-20 * scale**2 * total) | (syy <= 1e-20 * scale**2 * total)
    r[((w > 0).sum(axis=1) < 3) | flat] = np.nan
    return np.clip(r, -1.0, 1.0)


def weighted_midranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of each row's values in the sample where item i is repeated ``weights[i]`` times.

    Tied values share the average of the ranks they occupy (as ``scipy.stats.rankdata``); items with zero
    weight get the rank their value would have but do not occupy ranks. A 1-D ``values`` is shared by all
    rows of ``weights`` and sorted once.
    """
    weights = np.atleast_2d(weights).astype(float)
    n_rows, n_items = weights.shape
    if np.ndim(values) == 1:
        order = np.broadcast_to(np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable"),
                                weights.shape)
        v = np.broadcast_to(np.asarray(values)[order[0]], weights.shape)
    else:
        order = np.argsort(np.where(np.isfinite(values), values, np.inf), axis=1, kind="stable")
        v = np.take_along_axis(values, order, axis=1)
    w = np.take_along_axis(weights, order, axis=1)
    new_group = np.ones(v.shape, dtype=bool)
    new_group[:, 1:] = v[:, 1:] != v[:, :-1]
    group = np.cumsum(new_group, axis=1) - 1
    flat_group = (group + n_items * np.arange(n_rows)[:, None]).ravel()
    group_weight = np.bincount(flat_group, w.ravel(), minlength=n_rows * n_items).reshape(n_rows, n_items)
    before = np.cumsum(group_weight, axis=1) - group_weight
    group_rank = before + (group_weight + 1.0) / 2.0
    ranks_sorted = np.take_along_axis(group_rank, group, axis=1)
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, np.ascontiguousarray(order), ranks_sorted, axis=1)
    return ranks


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman's rho per row of the sample with multiplicities ``w`` (Pearson r of weighted mid-ranks).

    ``x`` may be 1-D (shared by all rows), ``y`` and ``w`` are (n_rows, n_items).
    """
    y = np.atleast_2d(y)
    shared_x = np.ndim(x) == 1
    x_full, y, w = _sanitize(np.broadcast_to(x, y.shape) if shared_x else np.atleast_2d(x), y, np.atleast_2d(w))
    x_ranks = weighted_midranks(np.where(np.isfinite(x), x, 0.0) if shared_x else x_full, w)
    return weighted_pearson(x_ranks, weighted_midranks(y, w), w)


def weighted_kendall_tau_b(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, algorithm: str = "auto",
                           max_elements: int = 4_000_000) -> np.ndarray:
    """Kendall's tau-b per row of the sample with multiplicities ``w``.

    Parameters
    ----------
    x : ndarray, shape (n_rows, n_items) or (n_items,)
        A 1-D ``x`` is shared by all rows.
    y, w : ndarray, shape (n_rows, n_items)
    algorithm : {"auto", "dense", "blocked"}
        ``"dense"`` builds the sign matrices of all pairs, O(rows·K²) (rows in chunks of about
        ``max_elements`` pair entries); ``"blocked"`` (shared ``x`` only) walks the items in x order in blocks
        of √K/2 with a cumulative y histogram per row, O(rows·K^1.5). ``"auto"`` takes the blocked walk for a
        shared x and more than 32 items.
    max_elements : int
        Memory bound of the dense algorithm.

    Returns
    -------
    ndarray, shape (n_rows,)

    Notes
    -----
    In the expanded sample, copies of one item are tied in both variables, so with s_ij = sign(x_i − x_j),
    t_ij = sign(y_i − y_j): tau_b = Σ w_i w_j s_ij t_ij / √(Σ w_i w_j |s_ij| · Σ w_i w_j |t_ij|), the sums over
    all ordered pairs i ≠ j. With unit weights this is ``scipy.stats.kendalltau`` (variant "b"). The tie sums
    are W² − Σ_g W_g² over the groups g of tied values.
    """
    y = np.atleast_2d(y)
    w = np.atleast_2d(w).astype(float)
    shared_x = np.ndim(x) == 1
    x_full, y, w = _sanitize(np.broadcast_to(x, y.shape) if shared_x else np.atleast_2d(x), y, w)
    n_rows, n_items = y.shape
    if algorithm not in ("auto", "dense", "blocked"):
        raise ValueError(f"algorithm must be auto, dense or blocked, got {algorithm!r}")
    if algorithm == "blocked" and not shared_x:
        raise ValueError("the blocked walk needs one x shared by all rows")
    if algorithm == "blocked" or (algorithm == "auto" and shared_x and n_items > 32):
        shared = np.where(np.isfinite(x), x, 0.0)  # NaN entries carry weight 0 in every row
        concordance = _blocked_concordance(shared, y, w)
        pairs_x = _untied_pairs(np.broadcast_to(_dense_ranks(shared[None])[0], y.shape), w)
        pairs_y = _untied_pairs(_dense_ranks(y), w)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = concordance / np.sqrt(pairs_x * pairs_y)
    else:
        if shared_x:
            shared = np.where(np.isfinite(x), x, 0.0)
            fixed_sign = np.sign(shared[:, None] - shared[None, :])  # (K, K), computed once for all rows
            fixed_ties = np.abs(fixed_sign)
        out = np.full(n_rows, np.nan)
        chunk = max(1, max_elements // max(1, n_items * n_items))
        for start in range(0, n_rows, chunk):
            stop = min(n_rows, start + chunk)
            wc = w[start:stop]
            sign_y = np.sign(y[start:stop, :, None] - y[start:stop, None, :])  # (b, K, K)
            if shared_x:
                concordance = _quadratic_form(sign_y * fixed_sign, wc)
                pairs_x = np.einsum("bi,ij,bj->b", wc, fixed_ties, wc)
            else:
                sign_x = np.sign(x_full[start:stop, :, None] - x_full[start:stop, None, :])
                concordance = _quadratic_form(sign_x * sign_y, wc)
                pairs_x = _quadratic_form(np.abs(sign_x), wc)
            pairs_y = _quadratic_form(np.abs(sign_y), wc)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start:stop] = concordance / np.sqrt(pairs_x * pairs_y)
    out[(w > 0).sum(axis=1) < 2] = np.nan
    return np.clip(out, -1.0, 1.0)


def _dense_ranks(values: np.ndarray) -> np.ndarray:
    """Per row, 0-based dense ranks (equal values share a rank): (B, K) -> (B, K) int."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    new_value = np.ones(ordered.shape, dtype=np.int64)
    new_value[:, 0] = 0
    new_value[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ranks = np.empty_like(new_value)
    np.put_along_axis(ranks, order, np.cumsum(new_value, axis=1), axis=1)
    return ranks


def _untied_pairs(ranks: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ over ordered pairs i ≠ j with different values of w_i w_j, = W² − Σ_groups W_g², per row."""
    n_rows, n_items = ranks.shape
    flat = (ranks + n_items * np.arange(n_rows)[:, None]).ravel()
    group_weight = np.bincount(flat, w.ravel(), minlength=n_rows * n_items).reshape(n_rows, n_items)
    return w.sum(axis=1) ** 2 - (group_weight**2).sum(axis=1)


def _blocked_concordance(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ over ordered pairs of w_i w_j sign(x_i − x_j) sign(y_i − y_j), per row, for one x shared by all rows.

    Square-root decomposition: the items, in increasing x, are cut into blocks of about √K/2 (never inside a
    group of tied x). Per row a cumulative histogram over dense y ranks holds the weights of all earlier
    blocks, so each item of a block meets (weight below its y) − (weight above its y) among them by two
    look-ups; pairs inside a block are counted with their sign matrices. O(rows·K^1.5) time, O(rows·K) memory.
    """
    n_rows, n_items = y.shape
    ranks = _dense_ranks(y)  # (B, K) in 0..K-1
    rows = np.arange(n_rows)[:, None]
    histogram = np.zeros((n_rows, n_items))
    cumulative = np.zeros((n_rows, n_items + 1))  # cumulative[:, r] = weight of earlier items with rank < r
    unordered = np.zeros(n_rows)
    order = np.argsort(x, kind="stable")
    tie_starts = np.flatnonzero(np.r_[True, x[order][1:] != x[order][:-1]])
    target = max(8, int(np.sqrt(n_items) / 2))
    cuts = [0]
    for start in tie_starts[1:]:
        if start - cuts[-1] >= target:
            cuts.append(int(start))
    cuts.append(n_items)
    for begin, end in zip(cuts[:-1], cuts[1:]):
        members = order[begin:end]
        rank, weight = ranks[:, members], w[:, members]  # (B, s)
        below = np.take_along_axis(cumulative, rank, axis=1)
        above = cumulative[:, -1:] - np.take_along_axis(cumulative, rank + 1, axis=1)
        unordered += (weight * (below - above)).sum(axis=1)
        block_x = x[members]
        sign_x = np.sign(block_x[:, None] - block_x[None, :])  # (s, s)
        sign_y = np.sign(y[:, members][:, :, None] - y[:, members][:, None, :])  # (B, s, s)
        unordered += 0.5 * _quadratic_form(sign_y * sign_x, weight)
        np.add.at(histogram, (np.broadcast_to(rows, rank.shape), rank), weight)
        cumulative[:, 1:] = np.cumsum(histogram, axis=1)
    return 2.0 * unordered


def _quadratic_form(matrices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """w_b^T A_b w_b for every b: (b, K, K), (b, K) -> (b,)."""
    return np.einsum("bi,bi->b", np.matmul(matrices, weights[:, :, None])[:, :, 0], weights)


def _correlate(method: str, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    if method == "pearson":
        return weighted_pearson(np.broadcast_to(x, y.shape), y, w)
    if method == "spearman":
        return weighted_spearman(x, y, w)
    if method == "kendall":
        return weighted_kendall_tau_b(x, y, w)
    raise ValueError(f"method must be one of {CORRELATION_METHODS}, got {method!r}")


def _p_value(method: str, x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    test = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}[method]
    return float(test(x, y).pvalue)


# ---------------------------------------------------------------------------------------------------------
# The study as sparse participant x clip matrices, and its bootstrap replicates


@dataclass
class _Panel:
    key: tuple
    participants: pd.Index
    clips: pd.Index
    conditions: pd.Index
    clip_condition: np.ndarray  # (I,) condition code of each clip
    clip_content: np.ndarray | None  # (I,) content of each clip
    sums: sparse.csr_matrix  # (P, I) sum of each participant's ratings of each clip
    counts: sparse.csr_matrix  # (P, I) number of those ratings
    metric: np.ndarray  # (I, M) oriented metric values (NaN where unavailable)

    @property
    def to_condition(self) -> sparse.csr_matrix:  # (I, C) indicator
        n_i, n_c = len(self.clips), len(self.conditions)
        return sparse.csr_matrix((np.ones(n_i), (np.arange(n_i), self.clip_condition)), shape=(n_i, n_c))


def _clip_attribute(frame: pd.DataFrame, clip: str, column: str, clips: pd.Index) -> np.ndarray:
    per_clip = frame.groupby(clip, observed=True, sort=True)[column]
    varying = per_clip.nunique(dropna=False)
    if (varying > 1).any():
        bad = varying[varying > 1].index[:3].tolist()
        raise ValueError(f"column {column!r} must be constant within a clip; it varies for clips {bad}")
    return per_clip.first().reindex(clips).to_numpy()


def _panels(data: pd.DataFrame, metrics: Sequence[str], signs: Mapping[str, float], *, by: Sequence[str],
            participant: str, clip: str, condition: str, rating: str, content: str | None = None) -> list[_Panel]:
    by = list(by)
    needed = [participant, clip, condition, rating, *metrics, *by] + ([content] if content else [])
    missing = [c for c in needed if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")
    if not by:
        groups = [((), data)]
    else:
        groups = [((k if isinstance(k, tuple) else (k,)), f) for k, f in data.groupby(by, sort=True, observed=True)]
    panels = []
    for key, frame in groups:
        frame = frame.dropna(subset=[rating])
        p_codes, p_index = pd.factorize(frame[participant], sort=True)
        c_codes, c_index = pd.factorize(frame[clip], sort=True)
        values = pd.to_numeric(frame[rating], errors="raise").to_numpy(dtype=float)
        shape = (len(p_index), len(c_index))
        sums = sparse.csr_matrix((values, (p_codes, c_codes)), shape=shape)
        counts = sparse.csr_matrix((np.ones_like(values), (p_codes, c_codes)), shape=shape)
        clip_conditions = _clip_attribute(frame, clip, condition, c_index)
        k_codes, k_index = pd.factorize(clip_conditions, sort=True)
        metric = np.column_stack([
            signs[m] * pd.to_numeric(pd.Series(_clip_attribute(frame, clip, m, c_index)), errors="coerce")
            .to_numpy(dtype=float) for m in metrics]) if metrics else np.empty((len(c_index), 0))
        contents = _clip_attribute(frame, clip, content, c_index) if content else None
        panels.append(_Panel(key, p_index, c_index, pd.Index(k_index), k_codes, contents, sums, counts, metric))
    return panels


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) multiplicities of a with-replacement draw of n out of n, vectorised."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _stratified_counts(rng: np.random.Generator, strata: np.ndarray, n_boot: int) -> np.ndarray:
    """(n_boot, n) multiplicities of a with-replacement draw within each stratum (keeping stratum sizes)."""
    out = np.zeros((n_boot, len(strata)))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        out[:, members] = _resample_counts(rng, len(members), n_boot)
    return out


def _weights(panel: _Panel, level: str, n_boot: int, resample: Sequence[str], rng: np.random.Generator):
    n_p, n_i = len(panel.participants), len(panel.clips)
    participant_w = _resample_counts(rng, n_p, n_boot) if "participant" in resample else np.ones((n_boot, n_p))
    if "clip" not in resample:
        clip_w = np.ones((n_boot, n_i))
    elif level == "clip":
        clip_w = _resample_counts(rng, n_i, n_boot)
    else:
        clip_w = _stratified_counts(rng, panel.clip_condition, n_boot)
    return participant_w, clip_w


def _replicate_items(panel: _Panel, level: str, participant_w: np.ndarray, clip_w: np.ndarray):
    """MOS (B, K), per-metric values (B, K, M) or (K, M) and item weights (B, K) for B replicates.

    K is the number of clips (level "clip") or conditions (level "condition").
    """
    clip_sums = np.asarray((panel.sums.T @ participant_w.T).T)
    clip_counts = np.asarray((panel.counts.T @ participant_w.T).T)
    if level == "clip":
        with np.errstate(invalid="ignore", divide="ignore"):
            mos = clip_sums / clip_counts
        return mos, panel.metric, clip_w * (clip_counts > 0)
    to_condition = panel.to_condition
    with np.errstate(invalid="ignore", divide="ignore"):
        mos = np.asarray((clip_w * clip_sums) @ to_condition) / np.asarray((clip_w * clip_counts) @ to_condition)
        metric = np.empty((len(clip_w), len(panel.conditions), panel.metric.shape[1]))
        for m in range(panel.metric.shape[1]):
            finite = np.isfinite(panel.metric[:, m])
            values = np.where(finite, panel.metric[:, m], 0.0)
            metric[:, :, m] = (np.asarray((clip_w * values) @ to_condition)
                               / np.asarray((clip_w * finite) @ to_condition))
    return mos, metric, np.ones_like(mos)


def _metric_slice(metric: np.ndarray, m: int) -> np.ndarray:
    return metric[:, m] if metric.ndim == 2 else metric[:, :, m]


def _check_common(metrics: Sequence[str], level: str, methods: Sequence[str], resample: Sequence[str]) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    unknown = [m for m in methods if m not in CORRELATION_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {CORRELATION_METHODS}")
    if any(r not in ("participant", "clip") for r in resample):
        raise ValueError(f"resample may contain 'participant' and 'clip', got {tuple(resample)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError("metrics must be distinct")


def metric_correlations(
    data: pd.DataFrame,
    metrics: Sequence[str],
    *,
    level: str = "clip",
    methods: Sequence[str] = CORRELATION_METHODS,
    higher_is_better: Mapping[str, bool] | None = None,
    by: Sequence[str] = ("scale",),
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
    n_boot: int = 2000,
    confidence: float = 0.95,
    resample: Sequence[str] = ("participant", "clip"),
    seed: int | np.random.Generator = 0,
) -> pd.DataFrame:
    """Pearson, Spearman and Kendall correlation of each metric with the MOS, with crossed-bootstrap CIs.

    Parameters
    ----------
    data : pandas.DataFrame
        Long ratings frame with one column per metric (constant within a clip).
    metrics : sequence of str
        Metric columns to evaluate.
    level : {"clip", "condition"}
        Correlate over clips (clip MOS) or over conditions (condition MOS vs the condition's mean metric).
    methods : sequence of {"pearson", "spearman", "kendall"}
        Correlations to report (Kendall is tau-b).
    higher_is_better : mapping, optional
        Metric directions; see :func:`metric_orientation`.
    by : sequence of str
        Groups analysed separately (per scale by default).
    participant, clip, condition, rating : str
        Column names.
    n_boot : int
        Bootstrap replicates (0: no CI).
    confidence : float
        Level of the percentile intervals.
    resample : sequence of {"participant", "clip"}
        What the bootstrap resamples: both (crossed bootstrap, default), or one of them.
    seed : int or numpy.random.Generator
        Seed of the replicates; the same replicates serve every metric and method of a group.

    Returns
    -------
    pandas.DataFrame
        One row per group, metric and method: the ``by`` columns, ``metric``, ``level``, ``higher_is_better``,
        ``sign`` (+1/−1 applied to the metric), ``method``, ``n_items`` (clips or conditions with both a MOS
        and a metric value), ``n_participants``, ``correlation`` (positive = agrees with people),
        ``ci_low``/``ci_high`` (percentile), ``p_value`` (scipy, independent items), ``boot_se`` and
        ``n_boot_valid`` (replicates where the correlation was defined).

    References
    ----------
    .. [1] ITU-T P.1401 (2020), §7.5 (Pearson correlation, with Spearman rank correlation for monotonicity).
    .. [2] Owen, A. B. (2007). The pigeonhole bootstrap. Annals of Applied Statistics, 1(2), 386–411.
    .. [3] Davison, A. C., & Hinkley, D. V. (1997). Bootstrap Methods and their Application, §3.8
       (hierarchical data). Cambridge University Press.
    """
    metrics, methods, resample = list(metrics), list(methods), tuple(resample)
    _check_common(metrics, level, methods, resample)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    orientation = metric_orientation(metrics, higher_is_better)
    signs = {m: 1.0 if orientation[m] else -1.0 for m in metrics}
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tail = (1.0 - confidence) / 2.0
    rows = []
    for panel in _panels(data, metrics, signs, by=by, participant=participant, clip=clip, condition=condition,
                         rating=rating):
        n_p, n_i = len(panel.participants), len(panel.clips)
        point_mos, point_metric, point_w = _replicate_items(panel, level, np.ones((1, n_p)), np.ones((1, n_i)))
        if n_boot > 0:
            participant_w, clip_w = _weights(panel, level, n_boot, resample, rng)
            boot_mos, boot_metric, boot_w = _replicate_items(panel, level, participant_w, clip_w)
        for m, name in enumerate(metrics):
            x0 = _metric_slice(point_metric, m)
            x0_row = x0 if x0.ndim == 1 else x0[0]
            n_items = int((np.isfinite(x0_row) & np.isfinite(point_mos[0]) & (point_w[0] > 0)).sum())
            for method in methods:
                estimate = float(_correlate(method, x0, point_mos, point_w)[0])
                row = {**dict(zip(by, panel.key)), "metric": name, "level": level,
                       "higher_is_better": orientation[name], "sign": int(signs[name]), "method": method,
                       "n_items": n_items, "n_participants": n_p, "correlation": estimate,
                       "p_value": _p_value(method, x0_row, point_mos[0])}
                if n_boot > 0:
                    replicates = _correlate(method, _metric_slice(boot_metric, m), boot_mos, boot_w)
                    valid = replicates[np.isfinite(replicates)]
                    row.update(ci_low=float(np.quantile(valid, tail)) if len(valid) else np.nan,
                               ci_high=float(np.quantile(valid, 1.0 - tail)) if len(valid) else np.nan,
                               boot_se=float(valid.std(ddof=1)) if len(valid) > 1 else np.nan,
                               n_boot_valid=int(len(valid)))
                else:
                    row.update(ci_low=np.nan, ci_high=np.nan, boot_se=np.nan, n_boot_valid=0)
                rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *CORRELATION_COLUMNS])


# ---------------------------------------------------------------------------------------------------------
# Repeated-measures correlation


def repeated_measures_correlation(data: pd.DataFrame, x: str, y: str, subject: str) -> pd.DataFrame:
    """Repeated-measures correlation (Bakdash & Marusich 2017) via :func:`pingouin.rm_corr`, tidy.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation; rows with NaN in ``x`` or ``y`` are dropped.
    x, y : str
        The two measured variables.
    subject : str
        The repeated unit (here: the source content a clip was generated from).

    Returns
    -------
    pandas.DataFrame
        One row: ``r``, ``dof`` (N − k − 1), ``p_value``, ``ci_low``, ``ci_high`` (95 %, full precision),
        ``power``.

    References
    ----------
    .. [1] Bakdash, J. Z., & Marusich, L. R. (2017). Repeated measures correlation. Frontiers in Psychology,
       8, 456.
    .. [2] Bland, J. M., & Altman, D. G. (1995). Calculating correlation coefficients with repeated
       observations: Part 1 — correlation within subjects. BMJ, 310, 446.
    """
    import pingouin

    frame = data[[x, y, subject]].dropna()
    if frame[subject].nunique() < 3:
        raise ValueError(f"rm_corr needs at least 3 {subject} groups, got {frame[subject].nunique()}")
    raw = pingouin.rm_corr(data=frame, x=x, y=y, subject=subject)
    p_column = next(c for c in ("pval", "p-val", "p_val", "p_unc") if c in raw.columns)
    r, dof = float(raw["r"].iloc[0]), int(raw["dof"].iloc[0])
    # pingouin rounds its CI to 2 decimals; recompute it unrounded with pingouin's formula (Fisher z, n = dof + 2).
    half = stats.norm.ppf(0.975) / np.sqrt(dof + 2 - 3)
    ci_low, ci_high = np.tanh(np.arctanh(r) - half), np.tanh(np.arctanh(r) + half)
    return pd.DataFrame([{"r": r, "dof": dof, "p_value": float(raw[p_column].iloc[0]), "ci_low": float(ci_low),
                          "ci_high": float(ci_high), "power": float(raw["power"].iloc[0])}], columns=RM_CORR_COLUMNS)


def metric_rm_correlations(
    data: pd.DataFrame,
    metrics: Sequence[str],
    *,
    subject: str = "content",
    higher_is_better: Mapping[str, bool] | None = None,
    by: Sequence[str] = ("scale",),
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
) -> pd.DataFrame:
    """Within-source correlation of each metric with the clip MOS (clips sharing a source are repeated measures).

    Parameters
    ----------
    data : pandas.DataFrame
        Long ratings frame with the metric columns and ``subject``.
    metrics : sequence of str
        Metric columns.
    subject : str
        The column grouping clips that share a source (``content``).
    higher_is_better : mapping, optional
        Metric directions; see :func:`metric_orientation`.
    by : sequence of str
        Groups analysed separately.
    participant, clip, condition, rating : str
        Column names.

    Returns
    -------
    pandas.DataFrame
        One row per group and metric: the ``by`` columns, ``metric``, ``higher_is_better``, ``sign``,
        ``n_clips``, ``n_subjects``, and ``r``, ``dof``, ``p_value``, ``ci_low``, ``ci_high``, ``power`` from
        :func:`repeated_measures_correlation` (NaN with fewer than 3 sources).

    Notes
    -----
    The ordinary clip-level correlation mixes two things: do better conditions get better metric values, and
    do easier sources get both higher MOS and better metric values. rm_corr removes each source's mean from
    both sides and keeps only the within-source association, i.e. whether the metric tracks the differences
    between conditions on the same source.
    """
    metrics = list(metrics)
    orientation = metric_orientation(metrics, higher_is_better)
    signs = {m: 1.0 if orientation[m] else -1.0 for m in metrics}
    rows = []
    for panel in _panels(data, metrics, signs, by=by, participant=participant, clip=clip, condition=condition,
                         rating=rating, content=subject):
        counts = np.asarray(panel.counts.sum(axis=0)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            mos = np.asarray(panel.sums.sum(axis=0)).ravel() / counts
        for m, name in enumerate(metrics):
            table = pd.DataFrame({"mos": mos, "metric": panel.metric[:, m], "subject": panel.clip_content}).dropna()
            row = {**dict(zip(by, panel.key)), "metric": name, "higher_is_better": orientation[name],
                   "sign": int(signs[name]), "n_clips": len(table), "n_subjects": int(table["subject"].nunique())}
            if row["n_subjects"] >= 3 and len(table) > row["n_subjects"] + 1:
                row.update(repeated_measures_correlation(table, "metric", "mos", "subject").iloc[0].to_dict())
            else:
                row.update({c: np.nan for c in RM_CORR_COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *METRIC_RM_CORR_COLUMNS])


# ---------------------------------------------------------------------------------------------------------
# ITU-T P.1401


@dataclass(frozen=True)
class MonotonicPolynomial:
    """A polynomial mapping, monotonic on [x_min, x_max].

    ``coef`` holds the coefficients a_0, a_1, ... in ascending powers of x (original units); ``min_slope`` is
    the exact minimum over the data range of the derivative in the fitted direction (f' for an increasing
    fit, −f' for a decreasing one), ≥ 0 up to rounding.
    """

    coef: np.ndarray
    x_min: float
    x_max: float
    min_slope: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return Polynomial(self.coef)(np.asarray(x, dtype=float))


def _min_on_interval(derivative: Polynomial, low: float, high: float) -> tuple[float, float]:
    """(minimum value, argmin) of a polynomial of degree <= 2 on [low, high]."""
    candidates = [low, high]
    c = derivative.coef
    if len(c) == 3 and c[2] != 0:
        vertex = -c[1] / (2.0 * c[2])
        if low < vertex < high:
            candidates.append(vertex)
    values = derivative(np.array(candidates))
    best = int(np.argmin(values))
    return float(values[best]), float(candidates[best])


def fit_monotonic_polynomial(x: np.ndarray, y: np.ndarray, degree: int = 3, *, increasing: bool = True,
                             grid_size: int = 64, tolerance: float = 1e-10) -> MonotonicPolynomial:
    """Least-squares polynomial of ``degree`` (<= 3) constrained to be monotonic over the range of ``x``.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Predictor (the oriented metric) and target (MOS).
    degree : int
        1, 2 or 3 (P.1401 uses 3, or 1 for a linear mapping).
    increasing : bool
        Non-decreasing (default) or non-increasing mapping.
    grid_size : int
        Number of points on which f' ≥ 0 is imposed before the exact check.
    tolerance : float
        Allowed negative slope (relative to the spread of y over the range of x) before a refit.

    Returns
    -------
    MonotonicPolynomial

    Notes
    -----
    x is standardised to t ∈ [−1, 1] for conditioning. If the unconstrained least-squares fit is monotonic on
    the range it is the answer. Otherwise the convex problem min ||T a − y||² s.t. f'(t_k) ≥ 0 is solved with
    SLSQP (analytic gradient), starting from a feasible linear fit; the exact minimum of the quadratic f' over
    [−1, 1] is then checked and any violating point added to the constraint grid, up to 20 rounds.

    References
    ----------
    .. [1] ITU-T P.1401 (2020), Appendix I (mapping of objective scores with a monotonic third-order
       polynomial).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    if degree not in (1, 2, 3):
        raise ValueError(f"degree must be 1, 2 or 3, got {degree}")
    if len(x) < degree + 1:
        raise ValueError(f"a degree-{degree} mapping needs at least {degree + 1} points, got {len(x)}")
    sign = 1.0 if increasing else -1.0
    low, high = float(x.min()), float(x.max())
    if high == low:
        return MonotonicPolynomial(np.array([float(y.mean())] + [0.0] * degree), low, high, 0.0)
    centre, half = (high + low) / 2.0, (high - low) / 2.0
    t = sign * (x - centre) / half  # in [-1, 1]; fitting increasing in t covers both directions
    design = np.vander(t, degree + 1, increasing=True)
    scale = max(float(np.ptp(y)), 1e-12)

    def slope_row(points: np.ndarray) -> np.ndarray:
        rows = np.zeros((len(points), degree + 1))
        for power in range(1, degree + 1):
            rows[:, power] = power * points ** (power - 1)
        return rows

    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    min_slope, at = _min_on_interval(Polynomial(coef).deriv(), -1.0, 1.0)
    if min_slope < -tolerance * scale:
        grid = np.linspace(-1.0, 1.0, grid_size)
        linear, *_ = np.linalg.lstsq(design[:, :2], y, rcond=None)
        start = np.zeros(degree + 1)
        start[:2] = linear if linear[1] >= 0 else (y.mean(), 0.0)
        for _ in range(20):
            constraint_matrix = slope_row(grid)
            result = optimize.minimize(
                lambda a: 0.5 * np.sum((design @ a - y) ** 2), start,
                jac=lambda a: design.T @ (design @ a - y), method="SLSQP",
                constraints=[{"type": "ineq", "fun": lambda a, c=constraint_matrix: c @ a,
                              "jac": lambda a, c=constraint_matrix: c}],
                options={"ftol": 1e-14, "maxiter": 1000})
            coef = result.x
            min_slope, at = _min_on_interval(Polynomial(coef).deriv(), -1.0, 1.0)
            if min_slope >= -tolerance * scale:
                break
            grid = np.append(grid, at)
            start = coef
        else:
            raise RuntimeError("could not enforce monotonicity of the mapping")
    # Back to x units: t = sign·(x − centre)/half.
    in_x = Polynomial(coef)(Polynomial([-sign * centre / half, sign / half]))
    coef_x = np.zeros(degree + 1)
    coef_x[: len(in_x.coef)] = in_x.coef
    slope_x, _ = _min_on_interval(Polynomial(coef_x).deriv() * sign, low, high)
    return MonotonicPolynomial(coef_x, low, high, float(slope_x))


def rmse(mos: np.ndarray, predicted: np.ndarray, *, n_params: int = 0) -> float:
    """√(Σ (MOS − predicted)² / (N − d)), P.1401 §7.5.1 with d = ``n_params`` (0: the plain RMSE)."""
    error = np.asarray(mos, float) - np.asarray(predicted, float)
    dof = len(error) - n_params
    return float(np.sqrt(np.sum(error**2) / dof)) if dof > 0 else float("nan")


def epsilon_insensitive_rmse(mos: np.ndarray, predicted: np.ndarray, ci95: np.ndarray, *, n_params: int) -> float:
    """rmse* = √(Σ max(0, |MOS − predicted| − ci95)² / (N − d)), P.1401 §7.7."""
    error = np.maximum(0.0, np.abs(np.asarray(mos, float) - np.asarray(predicted, float)) - np.asarray(ci95, float))
    dof = len(error) - n_params
    return float(np.sqrt(np.sum(error**2) / dof)) if dof > 0 else float("nan")


def outlier_ratio(mos: np.ndarray, predicted: np.ndarray, bound: np.ndarray) -> float:
    """Share of items with |MOS − predicted| > bound (ci95 or 2σ/√M), P.1401 §7.5.2.2."""
    error = np.abs(np.asarray(mos, float) - np.asarray(predicted, float))
    return float(np.mean(error > np.asarray(bound, float))) if len(error) else float("nan")


def p1401_evaluation(
    data: pd.DataFrame,
    metrics: Sequence[str],
    *,
    level: str = "condition",
    mapping: str = "cubic",
    outlier_bound: str = "ci95",
    higher_is_better: Mapping[str, bool] | None = None,
    by: Sequence[str] = ("scale",),
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """ITU-T P.1401 evaluation of each metric as a MOS predictor: mapping, RMSE, RMSE*, outlier ratio.

    Parameters
    ----------
    data : pandas.DataFrame
        Long ratings frame with one column per metric.
    metrics : sequence of str
        Metric columns.
    level : {"condition", "clip"}
        Items are conditions (P.1401's usual per-condition evaluation) or clips.
    mapping : {"cubic", "linear", "none"}
        Monotonic third-order mapping (d = 4), first-order (d = 2), or none (d = 1: the metric is assumed to
        be on the MOS scale already).
    outlier_bound : {"ci95", "two_se"}
        Outlier if |error| > ci95 of the item's MOS (P.1401) or > 2σ/√M (VQEG FR-TV).
    higher_is_better : mapping, optional
        Metric directions; see :func:`metric_orientation`.
    by : sequence of str
        Groups analysed separately.
    participant, clip, condition, rating : str
        Column names.
    confidence : float
        Level of the item CIs (0.95 in P.1401).

    Returns
    -------
    pandas.DataFrame
        One row per group and metric: the ``by`` columns, ``metric``, ``level``, ``higher_is_better``,
        ``sign``, ``mapping``, ``n_items``, ``n_params`` (d), ``pearson_raw`` (unmapped), ``spearman`` and
        ``kendall`` (unmapped; monotonic mapping leaves them unchanged), ``pearson_mapped``, ``rmse``,
        ``rmse_star``, ``outlier_ratio``, ``outlier_bound``, ``coef_0 … coef_3`` (mapping coefficients in the
        oriented metric's units), ``min_slope`` and ``note``.

    References
    ----------
    .. [1] ITU-T P.1401 (2020), Methods, metrics and procedures for statistical evaluation, qualification and
       comparison of objective quality prediction models, §7.5–7.7, Appendices I–III.
    """
    from analysis.mos import mos_table

    metrics = list(metrics)
    if mapping not in MAPPING_PARAMS:
        raise ValueError(f"mapping must be one of {tuple(MAPPING_PARAMS)}, got {mapping!r}")
    if outlier_bound not in ("ci95", "two_se"):
        raise ValueError(f"outlier_bound must be 'ci95' or 'two_se', got {outlier_bound!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    by = list(by)
    orientation = metric_orientation(metrics, higher_is_better)
    signs = {m: 1.0 if orientation[m] else -1.0 for m in metrics}
    item = clip if level == "clip" else condition
    n_params = MAPPING_PARAMS[mapping]
    panels = _panels(data, metrics, signs, by=by, participant=participant, clip=clip, condition=condition,
                     rating=rating)
    items = mos_table(data, dv=rating, by=[*by, item], confidence=confidence)
    rows = []
    for panel in panels:
        mask = np.ones(len(items), dtype=bool)
        for column, value in zip(by, panel.key):
            mask &= (items[column] == value).to_numpy()
        table = items[mask].set_index(item)
        if level == "clip":
            metric_values = pd.DataFrame(panel.metric, index=panel.clips, columns=metrics)
        else:
            per_condition = pd.DataFrame(panel.metric, columns=metrics)
            per_condition["_condition"] = panel.conditions[panel.clip_condition]
            metric_values = per_condition.groupby("_condition", sort=True).mean()
        for name in metrics:
            frame = table.join(metric_values[name].rename("_x"), how="inner").dropna(subset=["mos", "_x"])
            x, y = frame["_x"].to_numpy(float), frame["mos"].to_numpy(float)
            bound = (frame["ci_half_width"] if outlier_bound == "ci95" else 2.0 * frame["se"]).to_numpy(float)
            ci = frame["ci_half_width"].to_numpy(float)
            row = {**dict(zip(by, panel.key)), "metric": name, "level": level, "higher_is_better": orientation[name],
                   "sign": int(signs[name]), "mapping": mapping, "n_items": len(frame), "n_params": n_params,
                   "outlier_bound": outlier_bound, "note": ""}
            empty = dict(pearson_raw=np.nan, spearman=np.nan, kendall=np.nan, pearson_mapped=np.nan, rmse=np.nan,
                         rmse_star=np.nan, outlier_ratio=np.nan, coef_0=np.nan, coef_1=np.nan, coef_2=np.nan,
                         coef_3=np.nan, min_slope=np.nan)
            if len(frame) <= n_params or len(frame) < 3:
                rows.append({**row, **empty, "note": f"{len(frame)} items: too few for d = {n_params}"})
                continue
            unit = np.ones((1, len(x)))
            row.update(pearson_raw=float(weighted_pearson(x[None], y[None], unit)[0]),
                       spearman=float(weighted_spearman(x[None], y[None], unit)[0]),
                       kendall=float(weighted_kendall_tau_b(x, y[None], unit)[0]))
            coefficients = np.full(4, np.nan)
            if mapping == "none":
                predicted, min_slope = x, np.nan
                coefficients[:2] = (0.0, 1.0)
            else:
                fit = fit_monotonic_polynomial(x, y, degree=3 if mapping == "cubic" else 1)
                predicted, min_slope = fit(x), fit.min_slope
                coefficients[: len(fit.coef)] = fit.coef
            defined = np.isfinite(ci) & np.isfinite(bound)
            notes = []
            if mapping != "none" and np.ptp(predicted) == 0:
                notes.append("the monotonic mapping is flat: the metric does not rise with the MOS")
            if not defined.all():
                notes.append(f"{int((~defined).sum())} items with a single rating left out of rmse* and the "
                             "outlier ratio")
            row.update(
                pearson_mapped=float(weighted_pearson(predicted[None], y[None], unit)[0]),
                rmse=rmse(y, predicted, n_params=n_params),
                rmse_star=epsilon_insensitive_rmse(y[defined], predicted[defined], ci[defined], n_params=n_params),
                outlier_ratio=outlier_ratio(y[defined], predicted[defined], bound[defined]),
                coef_0=coefficients[0], coef_1=coefficients[1], coef_2=coefficients[2], coef_3=coefficients[3],
                min_slope=min_slope, note="; ".join(notes))
            rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *P1401_COLUMNS])


# ---------------------------------------------------------------------------------------------------------
# Ranking agreement over conditions


def condition_rankings(
    data: pd.DataFrame,
    metrics: Sequence[str],
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    by: Sequence[str] = ("scale",),
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
) -> pd.DataFrame:
    """How each metric and the MOS rank the conditions (rank 1 = best; ties share the mean rank).

    Returns
    -------
    pandas.DataFrame
        One row per group, metric and condition: the ``by`` columns, ``metric``, ``higher_is_better``,
        ``condition``, ``mos``, ``mos_rank``, ``metric_value`` (raw, not negated: the condition's mean over its
        clips) and ``metric_rank``.
    """
    metrics = list(metrics)
    orientation = metric_orientation(metrics, higher_is_better)
    signs = {m: 1.0 if orientation[m] else -1.0 for m in metrics}
    rows = []
    for panel in _panels(data, metrics, signs, by=by, participant=participant, clip=clip, condition=condition,
                         rating=rating):
        mos, metric, _ = _replicate_items(panel, "condition", np.ones((1, len(panel.participants))),
                                          np.ones((1, len(panel.clips))))
        mos_rank = stats.rankdata(-mos[0], nan_policy="omit")
        for m, name in enumerate(metrics):
            oriented = metric[0, :, m]
            metric_rank = stats.rankdata(-oriented, nan_policy="omit")
            for k, cond in enumerate(panel.conditions):
                rows.append({**dict(zip(by, panel.key)), "metric": name, "higher_is_better": orientation[name],
                             "condition": cond, "mos": float(mos[0, k]), "mos_rank": float(mos_rank[k]),
                             "metric_value": float(signs[name] * oriented[k]), "metric_rank": float(metric_rank[k])})
    return pd.DataFrame(rows, columns=[*by, *CONDITION_RANK_COLUMNS])


def ranking_agreement(
    data: pd.DataFrame,
    metrics: Sequence[str],
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    by: Sequence[str] = ("scale",),
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    rating: str = "rating",
    n_boot: int = 2000,
    confidence: float = 0.95,
    resample: Sequence[str] = ("participant", "clip"),
    seed: int | np.random.Generator = 0,
    return_distribution: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Does the metric order the conditions as the MOS does? Kendall tau-b with its bootstrap distribution.

    Parameters
    ----------
    data : pandas.DataFrame
        Long ratings frame with one column per metric.
    metrics : sequence of str
        Metric columns.
    higher_is_better : mapping, optional
        Metric directions; see :func:`metric_orientation`.
    by : sequence of str
        Groups analysed separately.
    participant, clip, condition, rating : str
        Column names.
    n_boot, confidence, resample, seed
        Crossed bootstrap as in :func:`metric_correlations` at condition level (conditions fixed, participants
        and clips within conditions resampled).
    return_distribution : bool
        Also return the replicate values.

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, pandas.DataFrame)
        Summary, one row per group and metric: the ``by`` columns, ``metric``, ``higher_is_better``, ``sign``,
        ``n_conditions``, ``kendall_tau`` (between the MOS ranking and the oriented metric's ranking),
        ``ci_low``/``ci_high`` (percentile), ``p_value`` (``scipy.stats.kendalltau``), ``boot_mean``,
        ``top_agrees`` (the metric's best condition is the MOS's best, no ties), ``boot_top_agreement`` (share
        of replicates where it is) and ``n_boot_valid``. With ``return_distribution`` also the long table
        ``by…, metric, replicate, kendall_tau``.

    References
    ----------
    .. [1] Kendall, M. G. (1945). The treatment of ties in ranking problems. Biometrika, 33(3), 239–251.
    """
    metrics, resample = list(metrics), tuple(resample)
    _check_common(metrics, "condition", ("kendall",), resample)
    orientation = metric_orientation(metrics, higher_is_better)
    signs = {m: 1.0 if orientation[m] else -1.0 for m in metrics}
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tail = (1.0 - confidence) / 2.0
    rows, distribution = [], []

    def unique_top(values: np.ndarray) -> np.ndarray:
        """Index of the single best entry per row, -1 when the best is tied or undefined."""
        filled = np.where(np.isfinite(values), values, -np.inf)
        best = filled.argmax(axis=1)
        ties = (filled == filled.max(axis=1, keepdims=True)).sum(axis=1) > 1
        return np.where(ties | ~np.isfinite(filled.max(axis=1)), -1, best)

    for panel in _panels(data, metrics, signs, by=by, participant=participant, clip=clip, condition=condition,
                         rating=rating):
        n_p, n_i = len(panel.participants), len(panel.clips)
        point_mos, point_metric, point_w = _replicate_items(panel, "condition", np.ones((1, n_p)), np.ones((1, n_i)))
        if n_boot > 0:
            participant_w, clip_w = _weights(panel, "condition", n_boot, resample, rng)
            boot_mos, boot_metric, boot_w = _replicate_items(panel, "condition", participant_w, clip_w)
        for m, name in enumerate(metrics):
            x0 = point_metric[0, :, m]
            n_conditions = int((np.isfinite(x0) & np.isfinite(point_mos[0])).sum())
            tau = float(weighted_kendall_tau_b(x0[None], point_mos, point_w)[0])
            top_mos, top_metric = unique_top(point_mos), unique_top(x0[None])
            row = {**dict(zip(by, panel.key)), "metric": name, "higher_is_better": orientation[name],
                   "sign": int(signs[name]), "n_conditions": n_conditions, "kendall_tau": tau,
                   "p_value": _p_value("kendall", x0, point_mos[0]),
                   "top_agrees": bool(top_mos[0] >= 0 and top_mos[0] == top_metric[0])}
            if n_boot > 0:
                replicates = weighted_kendall_tau_b(boot_metric[:, :, m], boot_mos, boot_w)
                valid = replicates[np.isfinite(replicates)]
                agree = (unique_top(boot_mos) == unique_top(boot_metric[:, :, m])) & (unique_top(boot_mos) >= 0)
                row.update(ci_low=float(np.quantile(valid, tail)) if len(valid) else np.nan,
                           ci_high=float(np.quantile(valid, 1.0 - tail)) if len(valid) else np.nan,
                           boot_mean=float(valid.mean()) if len(valid) else np.nan,
                           boot_top_agreement=float(agree.mean()), n_boot_valid=int(len(valid)))
                if return_distribution:
                    distribution.append(pd.DataFrame({**{c: v for c, v in zip(by, panel.key)}, "metric": name,
                                                      "replicate": np.arange(n_boot), "kendall_tau": replicates}))
            else:
                row.update(ci_low=np.nan, ci_high=np.nan, boot_mean=np.nan, boot_top_agreement=np.nan,
                           n_boot_valid=0)
            rows.append(row)
    summary = pd.DataFrame(rows, columns=[*by, *RANKING_COLUMNS])
    if not return_distribution:
        return summary
    columns = [*by, "metric", "replicate", "kendall_tau"]
    dist = pd.concat(distribution, ignore_index=True)[columns] if distribution else pd.DataFrame(columns=columns)
    return summary, dist
