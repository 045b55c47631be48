"""Everything a report can be downloaded as, and how its tables are shown. Django-free.

* :func:`report_zip` — one zip: every table of the report as CSV and JSON, the ratings (all of them, conditions
  relabelled as in the report, with the screening outcome), a SUREAL dataset per scale, ``report.json`` (options,
  highlights, notes, timings), a README, and the HTML when given.
* :func:`sureal_dataset` / :func:`sureal_dataset_python` — the ratings of one scale in the dataset format of
  Netflix SUREAL (statistics.md §1.1): ``ref_videos`` (``content_id`` 0…K−1, ``content_name``, ``path``) and
  ``dis_videos`` (``asset_id``, ``content_id``, ``os`` = ``{participant: score}`` for partial sampling, a list
  per participant for repetitions, ``path``), plus ``dataset_name``, ``yuv_fmt`` and ``ref_score``; written as
  SUREAL's ``DatasetReader.write_out_dataset`` writes it (``key = repr(value)`` lines, ``pprint`` lists), so
  ``sureal`` can run its models on it (``sureal MOS path/to/sync.py``). The hidden-reference clip of a content
  shares the reference video's path, which is how SUREAL's DMOS finds it (``disvideo_is_refvideo``).
* :func:`html_context` — the report as the template needs it: numbers formatted, long tables collapsed and
  truncated (the downloads keep every row).

Rounding happens only here: CSV floats are written with :data:`CSV_DECIMALS` decimals; JSON keeps full precision
(NaN as null).

UNVERIFIED choices: SUREAL gets every rating (no screening: SUREAL has its own), one dataset per scale; a
content with several hidden-reference clips (several audios) points its reference path at the first of them
and the others become ordinary distorted videos (a note in the README says so).
"""

from __future__ import annotations

import io
import json
import math
import pprint
import zipfile
from collections.abc import Mapping

import numpy as np
import pandas as pd

CSV_DECIMALS = 6
SUREAL_YUV_FMT = "notyuv"  # SUREAL's marker for stimuli that are not raw YUV files


# --------------------------------------------------------------------------------------------------
# CSV and JSON


def table_csv(table: pd.DataFrame) -> str:
    """A table as CSV, floats rounded to :data:`CSV_DECIMALS` decimals."""
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(CSV_DECIMALS)
    return out.to_csv(index=False)


def _jsonable(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value if isinstance(value, (int, str)) else str(value)


def table_records(table: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values (NaN, NA → None)."""
    columns = [str(c) for c in table.columns]
    return [dict(zip(columns, map(_jsonable, row))) for row in table.itertuples(index=False, name=None)]


def table_json(table: pd.DataFrame) -> str:
    """A table as JSON: ``{"columns": [...], "rows": [{column: value}, ...]}`` (full precision, NaN → null)."""
    return json.dumps({"columns": [str(c) for c in table.columns], "rows": table_records(table)},
                      ensure_ascii=False, indent=1, allow_nan=False)


def report_manifest(report) -> dict:
    """What the report is, without its tables: title, options, highlights, per-section status/notes/tables,
    timings and the condition key (the key only when the names are revealed)."""
    key = None
    if report.options.reveal_conditions:
        key = table_records(report.sections["overview"].tables.get("conditions", pd.DataFrame()))
    return _jsonable({
        "title": report.title, "created_at": report.created_at, "options": report.options.as_dict(),
        "conditions_revealed": bool(report.options.reveal_conditions), "highlights": report.highlights,
        "sections": [{"key": s.key, "title": s.title, "status": s.status, "description": s.description,
                      "notes": s.notes, "tables": {name: s.captions.get(name, "") for name in s.tables},
                      "seconds": s.seconds} for s in report.sections.values()],
        "timings": report.timings, "conditions": key,
    })


def ratings_csv(report) -> str:
    """Every rating the report was built from (conditions as in the report), with ``rejected`` by screening."""
    return report.ratings.to_csv(index=False)


def report_zip(report, *, html: str | None = None) -> bytes:
    """Every table as CSV and JSON, the ratings, SUREAL datasets, a manifest and README (and the HTML) in a zip."""
    buffer = io.BytesIO()
    readme = [f"{report.title}", "", "tables/<section>__<table>.csv|.json  every table of the report (JSON keeps "
              "full precision; CSV is rounded to 6 decimals)", "ratings.csv  every rating (before screening; the "
              "'rejected' column says who screening rejected)", "sureal/<scale>.py|.json  the ratings of one scale "
              "as a Netflix SUREAL dataset (e.g. `sureal MOS sureal/sync.py`)", "report.json  options, highlights, "
              "notes and timings"]
    if html is not None:
        readme.append("report.html  the report, self-contained")
    readme.append("")
    readme.append("Conditions are " + ("REVEALED (real names): researcher only." if report.options.reveal_conditions
                                       else "shown by blind labels (C1, C2, ...)."))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, table in report.all_tables().items():
            stem = key.replace("/", "__")
            archive.writestr(f"tables/{stem}.csv", table_csv(table))
            archive.writestr(f"tables/{stem}.json", table_json(table))
        archive.writestr("ratings.csv", ratings_csv(report))
        sureal_notes = []
        for scale in pd.unique(report.ratings["scale"]):
            part = report.ratings[report.ratings["scale"] == scale]
            try:
                dataset = sureal_dataset(part, dataset_name=f"{_slug(report.title)}_{scale}")
            except (KeyError, ValueError) as exc:
                sureal_notes.append(f"{scale}: no SUREAL dataset ({exc})")
                continue
            archive.writestr(f"sureal/{scale}.py", sureal_dataset_python(dataset))
            archive.writestr(f"sureal/{scale}.json", json.dumps(_jsonable(dataset), indent=1))
            sureal_notes += [f"{scale}: {note}" for note in dataset.get("_notes", [])]
        archive.writestr("report.json", json.dumps(report_manifest(report), ensure_ascii=False, indent=1))
        if sureal_notes:
            readme += ["", "SUREAL notes:", *sureal_notes]
        archive.writestr("README.txt", "\n".join(readme) + "\n")
        if html is not None:
            archive.writestr("report.html", html)
    return buffer.getvalue()


def _slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "_" for ch in text).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    return out[:60] or "syncmos"


# --------------------------------------------------------------------------------------------------
# SUREAL


def sureal_dataset(
    ratings: pd.DataFrame,
    *,
    dataset_name: str = "syncmos",
    dv: str = "rating",
    participant: str = "participant",
    clip: str = "clip",
    condition: str = "condition",
    content: str = "content",
    kind_column: str = "condition_kind",
    reference_kind: str = "reference",
    ref_score: float = 5.0,
) -> dict:
    """One scale's ratings as a SUREAL raw dataset (a dict of the module attributes SUREAL reads).

    Parameters
    ----------
    ratings : pandas.DataFrame
        Long ratings of a single scale.
    dataset_name : str
        SUREAL's ``dataset_name``.
    dv, participant, clip, condition, content, kind_column, reference_kind : str
        Columns; ``content`` groups clips of one source (SUREAL's content), ``kind_column`` marks the hidden
        reference (optional: without it there is no reference video among the distorted ones).
    ref_score : float
        SUREAL's ``ref_score`` (the top of the scale; DMOS = MOS + ref_score − MOS of the reference).

    Returns
    -------
    dict
        ``dataset_name``, ``yuv_fmt`` ("notyuv"), ``ref_score``, ``ref_videos``, ``dis_videos`` and ``_notes``
        (not written to the file). ``asset_id`` is 0…E−1 over the clips in clip order; a dis video's ``path`` is
        ``"<condition>/<clip>"``, the reference's ``"<content>/reference"``; ``os`` maps the participant (as a
        string) to the rating, or to the list of their ratings when they rated the clip more than once.
    """
    if ratings.empty:
        raise ValueError("no ratings")
    for column in (dv, participant, clip, condition, content):
        if column not in ratings.columns:
            raise KeyError(f"column {column!r} not in ratings")
    frame = ratings.dropna(subset=[dv])
    contents = sorted(pd.unique(frame[content]), key=str)
    content_id = {value: index for index, value in enumerate(contents)}
    notes = []
    reference_clip = {}
    if kind_column in frame.columns:
        refs = frame[frame[kind_column] == reference_kind].drop_duplicates(clip).sort_values(clip)
        for value, group in refs.groupby(content, sort=True):
            reference_clip[value] = group[clip].iloc[0]
            if len(group) > 1:
                notes.append(f"content {value}: {len(group)} hidden-reference clips; the reference path is clip "
                             f"{group[clip].iloc[0]}'s, the others are ordinary distorted videos")
    ref_videos = [{"content_id": content_id[value], "content_name": str(value), "path": f"{value}/reference"}
                  for value in contents]
    # One pass over the ratings sorted by clip then participant (a groupby per clip is 20x slower at 100k).
    frame = frame.sort_values([clip, participant], kind="stable")
    clip_values = frame[clip].to_numpy()
    who = frame[participant].astype(str).to_numpy()
    votes = [_score(v) for v in frame[dv].to_numpy(dtype=float)]
    starts = np.flatnonzero(np.r_[True, clip_values[1:] != clip_values[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    firsts = frame.iloc[starts]
    dis_videos = []
    for asset_id, (start, end, clip_value, content_value, condition_value) in enumerate(zip(
            starts, ends, firsts[clip], firsts[content], firsts[condition])):
        scores: dict = {}
        for observer, vote in zip(who[start:end], votes[start:end]):
            if observer not in scores:
                scores[observer] = vote
            elif isinstance(scores[observer], list):
                scores[observer].append(vote)
            else:
                scores[observer] = [scores[observer], vote]
        is_reference = reference_clip.get(content_value) == clip_value
        dis_videos.append({
            "asset_id": asset_id, "content_id": content_id[content_value], "os": scores,
            "path": f"{content_value}/reference" if is_reference else f"{condition_value}/{clip_value}",
        })
    return {"dataset_name": dataset_name, "yuv_fmt": SUREAL_YUV_FMT, "ref_score": float(ref_score),
            "ref_videos": ref_videos, "dis_videos": dis_videos, "_notes": notes}


def _score(value):
    value = float(value)
    return int(value) if value.is_integer() else value


def sureal_dataset_python(dataset: dict) -> str:
    """The dataset as a Python file, laid out as SUREAL's ``DatasetReader.write_out_dataset`` writes one."""
    lines = ["# SUREAL dataset written by syncmos (analysis/exports.py); load with sureal's import_python_file"]
    for key, value in dataset.items():
        if key in ("ref_videos", "dis_videos") or key.startswith("_"):
            continue
        lines.append(f"{key} = {value!r}")
    lines += ["", "ref_videos = " + pprint.pformat(dataset["ref_videos"]), "",
              "dis_videos = " + pprint.pformat(dataset["dis_videos"]), ""]
    return "\n".join(lines)


def read_sureal_dataset_python(text: str) -> dict:
    """Execute a SUREAL dataset file's text (only trusted files: it is Python) and return its attributes."""
    namespace: dict = {}
    exec(compile(text, "<sureal dataset>", "exec"), {"__builtins__": {}}, namespace)
    return namespace


def sureal_long(dataset: Mapping) -> pd.DataFrame:
    """A SUREAL raw dataset back as long ratings: ``asset_id, content_id, path, participant, rating``."""
    rows = []
    for video in dataset["dis_videos"]:
        scores = video["os"]
        items = scores.items() if isinstance(scores, Mapping) else enumerate(scores)
        for who, value in items:
            for vote in value if isinstance(value, (list, tuple)) else [value]:
                rows.append({"asset_id": video["asset_id"], "content_id": video["content_id"], "path": video["path"],
                             "participant": str(who), "rating": vote})
    return pd.DataFrame(rows, columns=["asset_id", "content_id", "path", "participant", "rating"])


# --------------------------------------------------------------------------------------------------
# HTML


def format_value(column: str, value) -> str:
    """How a table cell reads in the HTML report."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if column.startswith("p_") or column == "p_value":
            return "<0.001" if value < 0.001 else f"{value:.3f}"
        if value.is_integer() and (column in ("n", "dof") or column.startswith("n_") or column.endswith("_min")
                                   or column.endswith("_max") or column.endswith("_median")):
            return str(int(value))
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        if value == 0 or abs(value) >= 0.001:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


LONG_TEXT = 140


def _cell(column: str, value, text: bool) -> dict:
    shown = format_value(column, value)
    cell = {"text": shown, "css": "text" if text else "", "title": ""}
    if len(shown) > LONG_TEXT:
        cell.update(text=shown[: LONG_TEXT - 1] + "…", title=shown, css="text long")
    elif text and len(shown) > 40:
        cell["css"] = "text long"
    return cell


def table_display(name: str, table: pd.DataFrame, caption: str = "", *, max_rows: int = 200,
                  collapse_over: int = 15) -> dict:
    """A table for the template: header cells, formatted rows (at most ``max_rows``), collapse and truncation."""
    text_columns = {str(c) for c in table.columns if _is_text(table[c])}
    columns = [{"name": str(c), "css": "text" if str(c) in text_columns else ""} for c in table.columns]
    shown = table.head(max_rows)
    rows = [[_cell(str(c), v, str(c) in text_columns) for c, v in zip(table.columns, row)]
            for row in shown.itertuples(index=False, name=None)]
    return {"name": name, "caption": caption, "columns": columns, "rows": rows, "n_rows": len(table),
            "shown": len(shown), "truncated": len(table) > len(shown), "collapsed": len(table) > collapse_over}


def seeds_display(report) -> list[dict]:
    """The two seeds'-format tables, formatted: MOS ± half-width, metric values with ↑/↓, best value bold."""
    out = []
    mos_section = report.sections["mos"]
    mos, ci = mos_section.tables.get("user_study"), mos_section.tables.get("user_study_ci")
    entry = {"title": "User study: Method | " + " | ".join(c for c in (mos.columns[1:] if mos is not None else [])),
             "columns": [], "rows": [], "empty": "No MOS (no ratings)."}
    if mos is not None and len(mos):
        entry["columns"] = list(mos.columns)
        best = {c: mos[c].max() for c in mos.columns[1:]}
        for (_, row), (_, half) in zip(mos.iterrows(), ci.iterrows()):
            cells = [{"text": str(row["Method"]), "best": False}]
            for column in mos.columns[1:]:
                value, width = row[column], half[column]
                text = "–" if pd.isna(value) else f"{value:.2f}" + (f" ± {width:.2f}" if pd.notna(width) else "")
                cells.append({"text": text, "best": pd.notna(value) and value == best[column]})
            entry["rows"].append(cells)
    out.append(entry)

    from analysis.metric_validity import metric_orientation

    table = report.sections["metrics"].tables.get("metric_table")
    entry = {"title": "Objective metrics: Method | SSIM | PSNR | FID | IFC | LMD | LSE-C | LSE-D", "columns": [],
             "rows": [], "empty": "; ".join(report.sections["metrics"].notes) or "No objective metrics."}
    if table is not None and len(table):
        options = report.options
        from analysis.report import _seeds_metric_columns

        pairs = list(options.seeds_metric_columns or _seeds_metric_columns())
        given = {k: v for k, v in dict(options.higher_is_better or {}).items() if v is not None}
        orientation = metric_orientation([name for name, _ in pairs], given)
        direction = {label: orientation[name] for name, label in pairs}
        entry["title"] = "Objective metrics: Method | " + " | ".join(table.columns[1:])
        entry["columns"] = ["Method"] + [f"{c} {'↑' if direction.get(c, True) else '↓'}" for c in table.columns[1:]]
        best = {}
        for column in table.columns[1:]:
            values = table[column].replace([np.inf, -np.inf], np.nan)
            best[column] = (values.max() if direction.get(column, True) else values.min()) if values.notna().any() \
                else np.nan
        for _, row in table.iterrows():
            cells = [{"text": str(row["Method"]), "best": False}]
            for column in table.columns[1:]:
                value = row[column]
                cells.append({"text": format_value(column, value), "best": pd.notna(value) and value == best[column]})
            entry["rows"].append(cells)
    out.append(entry)
    return out


GLANCE_FIGURES = ("mos", "metric_overview")  # shown under "At a glance" instead of in their sections


def html_context(report, *, study_line: str = "", max_rows: int = 200) -> dict:
    """Everything ``analysis/report.html`` shows, formatted."""
    sections = []
    for section in report.sections.values():
        sections.append({
            "key": section.key, "title": section.title, "description": section.description, "status": section.status,
            "notes": section.notes, "figures": section.figures,
            "tables": [table_display(name, table, section.captions.get(name, ""), max_rows=max_rows)
                       for name, table in section.tables.items()],
        })
    timings = [{"step": row["step"], "seconds": f"{row['seconds']:.3f}",
                "peak": "–" if not np.isfinite(row.get("peak_mib", np.nan)) else f"{row['peak_mib']:.1f}"}
               for row in report.timings]
    options = [(key, json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value)
               for key, value in _jsonable(report.options.as_dict()).items()]
    key_figures = [figure for section in report.sections.values() for figure in section.figures
                   if figure.key in GLANCE_FIGURES]
    for entry in sections:
        entry["figures"] = [f for f in entry["figures"] if f.key not in GLANCE_FIGURES]
        entry["moved_figures"] = [f.title for f in key_figures if any(f is g for g in
                                                                      report.sections[entry["key"]].figures)]
    return {
        "title": report.title, "study_line": study_line, "key_figures": key_figures, "created_at": report.created_at,
        "n_ratings": f"{len(report.analysed):,}", "revealed": bool(report.options.reveal_conditions),
        "highlights": report.highlights, "sections": sections, "seeds_tables": seeds_display(report),
        "timings": timings, "options": options, "confidence_percent": f"{report.options.confidence:.0%}",
    }
