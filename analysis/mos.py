"""Mean opinion scores with Student-t confidence intervals. Django-free.

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
    out = grouped.agg(n="count", mos="mean", sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan).reset_index()
    out["n"] = out["n"].astype(int)
    out["se"] = out["sd"] / np.sqrt(out["n"])
    dof = (out["n"] - 1).where(out["n"] > 1)
    t_crit = stats.t.ppf(0.5 + confidence / 2.0, dof)
    out["ci_half_width"] = t_crit * out["se"]
    out["ci_low"] = out["mos"] - out["ci_half_width"]
    out["ci_high"] = out["mos"] + out["ci_half_width"]
    return out[[*by, *MOS_COLUMNS]]
