"""CSV exports for researchers: raw ratings and the MOS table. Rounding happens here, not in analysis."""

from __future__ import annotations

import pandas as pd

from analysis.data import ratings_frame
from analysis.mos import mos_table
from generation import metric_services

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


def study_test_clips(study):
    from generation.models import Clip

    return Clip.objects.filter(study_clips__study=study, study_clips__role="test").distinct()


def clip_metrics_csv(study) -> str:
    """Every objective metric of the study's test clips, one row per clip and metric (with why a value is missing)."""
    return metric_services.clip_metrics_frame(study_test_clips(study)).round(EXPORT_DECIMALS + 2).to_csv(index=False)


def metric_table_csv(study) -> str:
    """Per condition and metric: mean, SD and n over the study's test clips (FID: over the condition's clips)."""
    return metric_services.condition_metric_table(study_test_clips(study)).round(EXPORT_DECIMALS).to_csv(index=False)


def seeds_metric_table_csv(study) -> str:
    return metric_services.seeds_table(study_test_clips(study)).round(EXPORT_DECIMALS).to_csv(index=False)


def seeds_table_rows(clips) -> dict:
    """The seeds' metric table for a template: header labels and one row of formatted cells per condition."""
    table = metric_services.seeds_table(clips)
    labels = [c for c in table.columns if c != "Method"]
    rows = [{"method": r["Method"], "cells": [None if pd.isna(r[c]) else r[c] for c in labels]}
            for r in table.to_dict("records")]
    return {"labels": labels, "rows": rows}
