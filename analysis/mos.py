"""Mean opinion scores (MOS, per content, DMOS against the hidden reference) with Student-t confidence
intervals. Django-free.

Functions take a long DataFrame (one row per rating) plus column names and return tidy DataFrames
with stable snake_case columns; nothing is rounded here (round only when exporting).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

MOS_COLUMNS = ["n", "mos", "sd", "se", "ci_low", "ci_high", "ci_half_width"]


def mos_table(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    by: Sequence[str] = ("condition", "scale"),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """MOS per group with standard deviation, n and a Student-t confidence interval.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating.
    dv : str
        Column holding the ratings (e.g. 1–5 ACR scores).
    by : sequence of str
        Grouping columns, e.g. ``("condition", "scale")`` or ``("condition", "content", "scale")``.
    confidence : float
        Two-sided confidence level of the interval, in (0, 1).

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` columns, then ``n``, ``mos`` (mean), ``sd`` (sample standard
        deviation, ddof=1), ``se`` (sd/√n), ``ci_low``, ``ci_high`` and ``ci_half_width``
        (t_{1-α/2, n-1}·se). With n = 1 the spread and the interval are NaN, never a made-up zero.

    Notes
    -----
    The interval treats every rating as independent, as ITU-T P.1401 §7.3 and P.800.2 do for the
    per-condition MOS. Ratings of one participant are correlated, so for inference between
    conditions prefer the mixed-effects model, which accounts for participants and clips.

    References
    ----------
    .. [1] ITU-T P.1401 (2020), Methods, metrics and procedures for statistical evaluation,
       qualification and comparison of objective quality prediction models, §7.3.
    .. [2] ITU-T P.800.2 (2016), Mean opinion score interpretation and reporting.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"condition": ["A"] * 5, "scale": ["sync"] * 5, "rating": [1, 2, 3, 4, 5]})
    >>> row = mos_table(df).iloc[0]
    >>> float(row.mos), round(float(row.ci_half_width), 4)
    (3.0, 1.9632)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    by = list(by)
    missing = [c for c in [dv, *by] if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")
    values = pd.to_numeric(data[dv], errors="raise").astype(float)
    frame = data[by].copy()
    frame["_value"] = values
    frame = frame.dropna(subset=["_value"])
    if frame.empty:
        return pd.DataFrame(columns=[*by, *MOS_COLUMNS])

    grouped = frame.groupby(by, sort=True, observed=True)["_value"]
    out = grouped.agg(n="count", mos="mean", sd="std").reset_index()  # std: ddof=1, NaN for n = 1
    out["n"] = out["n"].astype(int)
    out["se"] = out["sd"] / np.sqrt(out["n"])
    dof = (out["n"] - 1).where(out["n"] > 1)
    t_crit = stats.t.ppf(0.5 + confidence / 2.0, dof)
    out["ci_half_width"] = t_crit * out["se"]
    out["ci_low"] = out["mos"] - out["ci_half_width"]
    out["ci_high"] = out["mos"] + out["ci_half_width"]
    return out[[*by, *MOS_COLUMNS]]


def content_mos_table(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    condition: str = "condition",
    content: str = "content",
    scale: str = "scale",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """MOS per condition × content × scale (see :func:`mos_table` for the columns and the interval).

    A condition's MOS pools its contents; this table shows whether a condition is uniformly good or
    good only on some source contents.
    """
    return mos_table(data, dv=dv, by=(condition, content, scale), confidence=confidence)


DMOS_COLUMNS = ["n", "n_unpaired", "dmos", "sd", "se", "ci_low", "ci_high", "ci_half_width"]
PAIRINGS = ("viewer", "mos")


def dmos_table(
    data: pd.DataFrame,
    *,
    dv: str = "rating",
    by: Sequence[str] = ("condition", "scale"),
    condition: str = "condition",
    reference=None,
    kind_column: str = "condition_kind",
    reference_kind: str = "reference",
    match_on: Sequence[str] = ("content",),
    participant: str = "participant",
    scale: str = "scale",
    ref_score: float = 5.0,
    pairing: str = "viewer",
    include_reference: bool = False,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Differential MOS against the hidden reference (ACR-HR), with a Student-t interval.

    Every rating of a processed clip becomes a differential score ``rating − reference + ref_score``
    and the DMOS is their mean per group:

    * ``pairing="viewer"`` (default): the reference is the same participant's rating of the hidden
      reference of the same ``match_on`` keys (and scale): ITU-T P.910's ACR-HR differential viewer
      score DV = V(PVS) − V(REF) + 5. A participant's several reference ratings of one key are
      averaged; ratings whose participant did not rate the reference are left out and counted in
      ``n_unpaired``.
    * ``pairing="mos"``: the reference is the MOS of all ratings of the hidden reference of the same
      keys: SUREAL's ``DmosModel`` (DMOS = MOS + ref_score − MOS of the content's reference,
      statistics.md §1.2).

    Both give the same DMOS when every participant rated both the clip and its reference.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per rating (``analysis.data.ratings_frame``).
    dv : str
        Rating column.
    by : sequence of str
        Grouping of the output, e.g. ``("condition", "scale")`` or ``("condition", "content", "scale")``.
    condition : str
        Condition column.
    reference : optional
        Name of the hidden-reference condition. Default: the rows whose ``kind_column`` equals
        ``reference_kind`` (``condition_kind == "reference"`` in ``ratings_frame``).
    kind_column, reference_kind : str
        Used when ``reference`` is None.
    match_on : sequence of str
        What makes a reference "the same source": ``("content",)`` by default; ``("source",)`` or
        ``("source", "audio_content")`` for finer matching. The ``scale`` column, when present, is
        always added.
    participant, scale : str
        Participant column (for ``pairing="viewer"``) and scale column.
    ref_score : float
        Top of the scale (5 for 5-point ACR); the hidden reference's differential score.
    pairing : {"viewer", "mos"}
        See above.
    include_reference : bool
        Also report the reference condition itself (its DMOS is ``ref_score`` by construction for
        ``pairing="viewer"`` with one reference rating per key).
    confidence : float
        Two-sided level of the Student-t interval over the differential scores.

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns, then ``n`` (paired ratings), ``n_unpaired``, ``dmos``, ``sd``, ``se``,
        ``ci_low``, ``ci_high``, ``ci_half_width``. Groups with no paired rating have n = 0 and NaN
        statistics.

    Notes
    -----
    The per-viewer form DV = V(PVS) − V(REF) + 5 is P.910's ACR-HR definition as recalled here; the
    Recommendation's text was not re-read in this session (UNVERIFIED), while the ``pairing="mos"`` form
    is SUREAL's code as read (statistics.md §1.2). Differential scores above ``ref_score`` (clip
    preferred to its reference) are kept, not clipped.
    With ``pairing="viewer"`` the interval accounts for each viewer's own reference; with
    ``pairing="mos"`` it ignores the uncertainty of the reference MOS (as SUREAL does).

    References
    ----------
    .. [1] ITU-T P.910 (2008/2021), Subjective video quality assessment methods for multimedia
       applications, ACR with hidden reference (ACR-HR) differential scores.
    .. [2] Netflix SUREAL, ``sureal/subjective_model.py`` (DmosModel, dscore_mode).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    by, match_on = list(by), list(match_on)
    keys = match_on + ([scale] if scale in data.columns and scale not in match_on else [])
    needed = [dv, condition, *by, *keys] + ([participant] if pairing == "viewer" else [])
    if reference is None:
        needed.append(kind_column)
    missing = sorted({c for c in needed if c not in data.columns})
    if missing:
        raise KeyError(f"columns not in data: {missing}")

    frame = data.copy()
    frame["_value"] = pd.to_numeric(frame[dv], errors="raise").astype(float)
    frame = frame.dropna(subset=["_value"])
    is_reference = (frame[condition] == reference) if reference is not None else (frame[kind_column] == reference_kind)
    if not is_reference.any():
        raise ValueError("no hidden-reference ratings in data")
    pair_keys = ([participant] if pairing == "viewer" else []) + keys
    reference_means = (frame[is_reference].groupby(pair_keys, observed=True)["_value"].mean()
                       .rename("_reference").reset_index())
    scored = frame if include_reference else frame[~is_reference]
    scored = scored.merge(reference_means, on=pair_keys, how="left")
    scored["_dv"] = scored["_value"] - scored["_reference"] + ref_score

    unpaired = scored["_reference"].isna().groupby([scored[c] for c in by], observed=True).sum()
    table = mos_table(scored.dropna(subset=["_dv"]), dv="_dv", by=by, confidence=confidence)
    table = table.rename(columns={"mos": "dmos"})
    groups = unpaired.rename("n_unpaired").reset_index()
    table = groups.merge(table, on=by, how="left")
    table["n"] = table["n"].fillna(0).astype(int)
    table["n_unpaired"] = table["n_unpaired"].astype(int)
    return table.sort_values(by, kind="stable").reset_index(drop=True)[[*by, *DMOS_COLUMNS]]
