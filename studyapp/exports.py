"""CSV exports for researchers: raw ratings and the MOS table. Rounding happens here, not in analysis."""

from __future__ import annotations

from analysis.data import ratings_frame
from analysis.mos import mos_table

EXPORT_DECIMALS = 4


def raw_ratings_csv(study) -> str:
    return ratings_frame(study).to_csv(index=False)


def mos_frame(study):
    return mos_table(ratings_frame(study), dv="rating", by=("condition", "scale"))


def mos_csv(study) -> str:
    return mos_frame(study).round(EXPORT_DECIMALS).to_csv(index=False)


def mos_rows_by_condition(table, scales: list[str]) -> list[dict]:
    """The MOS table pivoted for display: one row per condition, one cell per scale (the seeds'
    "Method | Sync | Visual | Overall" layout)."""
    rows = []
    for condition, group in table.groupby("condition", sort=True):
        by_scale = {r.scale: r for r in group.itertuples(index=False)}
        cells = []
        for key in scales:
            r = by_scale.get(key)
            cells.append(None if r is None else {
                "mos": r.mos, "ci_half_width": r.ci_half_width, "ci_low": r.ci_low, "ci_high": r.ci_high,
                "sd": r.sd, "n": r.n,
            })
        rows.append({"condition": condition, "cells": cells})
    return rows
