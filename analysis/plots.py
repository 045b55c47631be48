"""The report's figures: matplotlib (Agg, no pyplot state) rendered to data URIs for a self-contained page.

Django-free. Every function takes report tables and returns a :class:`analysis.report.Figure` whose
``data_uri`` embeds a PNG (default) or SVG; :func:`render_figures` draws them all into a
:class:`analysis.report.Report`, each figure failure becoming a note of its section.

Figures:

* :func:`mos_figure` — MOS with CI per scale × condition, conditions best first, coloured by kind, with the
  mixed model's compact letters (conditions sharing a letter do not differ significantly);
* :func:`metric_overview_figure` — heat map of every metric's Spearman correlation with MOS (over clips and
  over conditions) per scale, starred where the bootstrap CI excludes 0;
* :func:`metric_scatter_figure` — one metric against MOS per scale: clip MOS (grey), condition MOS with CI
  (coloured), and the fitted P.1401 monotonic cubic mapping;
* :func:`screening_figure` — every participant's P.913 correlation with the clip MOS against the spread of
  their z-scores, rejected participants marked, with the rules' thresholds;
* :func:`subject_figure` — the subject model's participant bias against inconsistency;
* :func:`planning_figure` — expected CI half-width and minimum detectable difference against ratings per clip.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from numpy.polynomial import Polynomial

from analysis.planning import VarianceComponents, ci_half_width, minimum_detectable_difference
from analysis.report import Figure, Report, ReportOptions

KIND_COLOURS = {"reference": "#4d4d4d", "control": "#d95f02", "model": "#1f78b4"}
OTHER_COLOUR = "#7570b3"
REJECTED_COLOUR = "#d7191c"
KEPT_COLOUR = "#5e5e5e"
FORMATS = ("png", "svg")
DPI = 110


def figure_data_uri(figure: MplFigure, fmt: str = "png") -> str:
    """Render a matplotlib figure to a ``data:`` URI (PNG base64, or SVG percent-encoded)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else {})
    data = buffer.getvalue()
    if fmt == "png":
        return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return "data:image/svg+xml;charset=utf-8," + quote(data.decode("utf-8"))


def _colour(kind) -> str:
    return KIND_COLOURS.get(kind, OTHER_COLOUR)


def _kind_legend(figure: MplFigure, kinds: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    present = [k for k in ("reference", "control", "model") if k in set(kinds)]
    if not present:
        return
    names = {"reference": "hidden reference", "control": "control", "model": "model"}
    handles = [Line2D([], [], marker="o", linestyle="", color=_colour(k), label=names[k]) for k in present]
    figure.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
                  bbox_to_anchor=(0.5, 0.0))


def condition_order(mos: pd.DataFrame) -> list:
    """Conditions best first: by their MOS averaged over scales."""
    return mos.groupby("condition")["mos"].mean().sort_values(ascending=False).index.tolist()


def mos_figure(mos: pd.DataFrame, *, scales: Sequence, options: ReportOptions, kinds: dict | None = None,
               letters: pd.DataFrame | None = None, fmt: str = "png") -> Figure:
    """MOS ± CI per condition (rows, best first) in one panel per scale, with compact letters."""
    kinds = kinds or {}
    order = condition_order(mos)
    n = len(order)
    figure = MplFigure(figsize=(3.3 * len(scales) + 1.2, 0.34 * n + 1.5))
    axes = np.atleast_1d(figure.subplots(1, len(scales), sharey=True, squeeze=False)[0])
    position = {condition: n - 1 - i for i, condition in enumerate(order)}
    for ax, scale in zip(axes, scales):
        part = mos[mos["scale"] == scale]
        for row in part.itertuples(index=False):
            y = position[row.condition]
            error = row.ci_half_width if np.isfinite(row.ci_half_width) else 0.0
            ax.errorbar(row.mos, y, xerr=error, fmt="o", color=_colour(kinds.get(row.condition)), capsize=3,
                        markersize=5, linewidth=1.4)
        if letters is not None:
            for row in letters[letters["scale"] == scale].itertuples(index=False):
                ax.text(5.55, position[row.condition], row.letters, va="center", ha="left", fontsize=8,
                        color="#333333", clip_on=False)
        ax.set_xlim(0.8, 5.4)
        ax.set_xticks([1, 2, 3, 4, 5])
        ax.grid(axis="x", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.set_title(options.scale_label(scale), fontsize=11)
        ax.set_xlabel(f"MOS ({options.confidence:.0%} CI)", fontsize=9)
    axes[0].set_yticks(range(n))
    axes[0].set_yticklabels(list(reversed(order)), fontsize=9)
    axes[0].set_ylim(-0.7, n - 0.3)
    _kind_legend(figure, [kinds.get(c) for c in order])
    figure.subplots_adjust(wspace=0.28)
    caption = ("Conditions from best to worst (mean MOS over scales). Bars: Student-t confidence intervals of the MOS."
               + (" Letters at the right of each panel come from the mixed model: conditions that share a letter do "
                  "not differ significantly (Holm-adjusted)." if letters is not None else ""))
    return Figure("mos", "MOS per condition and scale", caption, figure_data_uri(figure, fmt))


def metric_overview_figure(summary: pd.DataFrame, *, scales: Sequence, options: ReportOptions,
                           fmt: str = "png") -> Figure:
    """Heat map: metrics (rows) × scales (columns, over clips | over conditions) of Spearman's ρ with MOS."""
    first = summary[summary["scale"] == scales[0]] if len(scales) else summary
    metrics = list(dict.fromkeys(first["metric"].tolist() + summary["metric"].tolist()))
    labels = [options.metric_label(m) for m in metrics]
    columns = [(scale, level) for level in ("clip", "condition") for scale in scales]
    values = np.full((len(metrics), len(columns)), np.nan)
    stars = np.zeros_like(values, dtype=bool)
    indexed = summary.set_index(["scale", "metric"])
    for j, (scale, level) in enumerate(columns):
        for i, metric in enumerate(metrics):
            if (scale, metric) not in indexed.index:
                continue
            row = indexed.loc[(scale, metric)]
            value = row.get(f"spearman_{level}", np.nan)
            values[i, j] = value
            low, high = row.get(f"spearman_{level}_ci_low", np.nan), row.get(f"spearman_{level}_ci_high", np.nan)
            stars[i, j] = bool((low > 0) or (high < 0))
    figure = MplFigure(figsize=(1.05 * len(columns) + 2.4, 0.36 * len(metrics) + 1.6))
    ax = figure.subplots()
    image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    for i in range(len(metrics)):
        for j in range(len(columns)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}{'*' if stars[i, j] else ''}", ha="center", va="center",
                        fontsize=8, color="white" if abs(values[i, j]) > 0.6 else "black")
    ax.set_yticks(range(len(metrics)))
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{options.scale_label(s)}\n{'clips' if level == 'clip' else 'conditions'}"
                        for s, level in columns], fontsize=8)
    ax.xaxis.tick_top()
    if len(scales):
        ax.axvline(len(scales) - 0.5, color="white", linewidth=3)
    figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="Spearman ρ with MOS")
    caption = ("Spearman correlation of every metric with MOS, over clips (left block) and over conditions (right "
               "block). Lower-is-better metrics are negated, so blue always means agreement with people. '*': the "
               f"{options.confidence:.0%} crossed-bootstrap interval excludes 0.")
    return Figure("metric_overview", "Which metric predicts MOS?", caption, figure_data_uri(figure, fmt))


def metric_scatter_figure(merged: pd.DataFrame, metric: str, *, scales: Sequence, options: ReportOptions,
                          mos: pd.DataFrame, p1401: pd.DataFrame | None = None, summary: pd.DataFrame | None = None,
                          kinds: dict | None = None, fmt: str = "png") -> Figure:
    """One metric against MOS, a panel per scale: clips, conditions with CI, and the P.1401 mapping."""
    kinds = kinds or {}
    figure = MplFigure(figsize=(3.4 * len(scales) + 0.6, 3.3))
    axes = np.atleast_1d(figure.subplots(1, len(scales), squeeze=False)[0])
    label = options.metric_label(metric)
    for ax, scale in zip(axes, scales):
        part = merged[merged["scale"] == scale]
        clips = part.groupby("clip").agg(mos=("rating", "mean"), value=(metric, "first"),
                                         condition=("condition", "first"))
        clips = clips[np.isfinite(clips["value"])]
        ax.scatter(clips["value"], clips["mos"], s=9, color="#bbbbbb", alpha=0.7, linewidths=0, label="clips")
        by_condition = clips.groupby("condition")["value"].mean()
        cond_mos = mos[mos["scale"] == scale].set_index("condition")
        shown = [c for c in by_condition.index if c in cond_mos.index]
        for condition in shown:
            x, row = by_condition[condition], cond_mos.loc[condition]
            error = row["ci_half_width"] if np.isfinite(row["ci_half_width"]) else 0.0
            ax.errorbar(x, row["mos"], yerr=error, fmt="o", color=_colour(kinds.get(condition)), markersize=5,
                        capsize=2, linewidth=1.2)
            if len(shown) <= 15:
                ax.annotate(str(condition), (x, row["mos"]), xytext=(4, 3), textcoords="offset points", fontsize=7)
        title = options.scale_label(scale)
        if p1401 is not None and len(p1401):
            rows = p1401[(p1401["scale"] == scale) & (p1401["metric"] == metric)]
            if len(rows) and np.isfinite(rows.iloc[0]["coef_0"]) and len(shown) >= 2:
                row = rows.iloc[0]
                coefficients = [row[f"coef_{k}"] for k in range(4)]
                coefficients = [0.0 if not np.isfinite(v) else v for v in coefficients]
                sign = float(row["sign"])
                grid = np.linspace(by_condition[shown].min(), by_condition[shown].max(), 100)
                ax.plot(grid, Polynomial(coefficients)(sign * grid), color="#444444", linewidth=1.2,
                        label="P.1401 mapping")
        if summary is not None and len(summary):
            rows = summary[(summary["scale"] == scale) & (summary["metric"] == metric)]
            if len(rows) and np.isfinite(rows.iloc[0]["spearman_clip"]):
                row = rows.iloc[0]
                title += (f": ρ = {row['spearman_clip']:.2f} [{row['spearman_clip_ci_low']:.2f}, "
                          f"{row['spearman_clip_ci_high']:.2f}]")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylim(0.8, 5.2)
        ax.grid(color="#eeeeee", linewidth=0.8)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("MOS", fontsize=9)
    figure.subplots_adjust(wspace=0.25)
    caption = (f"{label} against MOS. Grey: clip MOS; coloured: condition MOS with its confidence interval at the "
               "condition's mean metric value; line: the monotonic cubic mapping of ITU-T P.1401 fitted over "
               "conditions; ρ: clip-level Spearman correlation (sign-corrected) with its crossed-bootstrap CI.")
    return Figure(f"metric_{metric}", f"{label} versus MOS", caption, figure_data_uri(figure, fmt))


def screening_figure(decisions: pd.DataFrame, participants: pd.DataFrame, *, scales: Sequence,
                     options: ReportOptions, fmt: str = "png") -> Figure:
    """Per scale, each participant's P.913 correlation r1 against the SD of their z-scores; rejected in red."""
    rejected = set(participants.loc[participants["rejected"], "participant"])
    has_rules = {"p913_correlation", "z_score"} <= set(decisions["rule"])
    figure = MplFigure(figsize=(3.3 * len(scales) + 0.6, 3.2))
    axes = np.atleast_1d(figure.subplots(1, len(scales), squeeze=False)[0])
    for ax, scale in zip(axes, scales):
        part = decisions[decisions["scale"] == scale]
        if has_rules:
            r1 = part[part["rule"] == "p913_correlation"].set_index("participant")
            z = part[part["rule"] == "z_score"].set_index("participant")
            common = r1.index.intersection(z.index)
            x, y = r1.loc[common, "statistic"], z.loc[common, "statistic"]
            ax.axvline(float(r1["threshold"].iloc[0]), color="#999999", linestyle="--", linewidth=0.9)
            if len(z) and np.isfinite(z["threshold"].iloc[0]):
                ax.axhline(float(z["threshold"].iloc[0]), color="#999999", linestyle="--", linewidth=0.9)
            xlabel, ylabel = "r1: correlation with the clip MOS (P.913)", "SD of the participant's z-scores"
        else:
            table = participants.set_index("participant")
            common = table.index
            x, y = table["mean_rating"], table["sd_rating"]
            xlabel, ylabel = "mean rating", "SD of ratings"
        bad = np.array([p in rejected for p in common], dtype=bool)
        ax.scatter(np.asarray(x)[~bad], np.asarray(y)[~bad], s=14, color=KEPT_COLOUR, alpha=0.7, linewidths=0,
                   label="kept")
        ax.scatter(np.asarray(x)[bad], np.asarray(y)[bad], s=22, color=REJECTED_COLOUR, marker="x",
                   label="rejected (any rule, any scale)")
        ax.set_title(options.scale_label(scale), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(color="#eeeeee", linewidth=0.8)
        ax.set_axisbelow(True)
    axes[0].set_ylabel(ylabel, fontsize=8)
    axes[-1].legend(fontsize=7, loc="best")
    figure.subplots_adjust(wspace=0.25)
    caption = ("Every participant (one point per scale). Dashed lines: the P.913 correlation threshold (r1 below it "
               "counts against the participant when their per-condition correlation is also low) and the z-score "
               "spread threshold. Red crosses: rejected by at least one rule on at least one scale."
               if has_rules else "Every participant's mean and SD of ratings; red crosses: rejected.")
    return Figure("screening", "Screening: every participant", caption, figure_data_uri(figure, fmt))


def subject_figure(participants: pd.DataFrame, *, scales: Sequence, options: ReportOptions,
                   fmt: str = "png") -> Figure:
    """Per scale, every participant's bias (x) against inconsistency (y) from the subject model."""
    figure = MplFigure(figsize=(3.3 * len(scales) + 0.6, 3.1))
    axes = np.atleast_1d(figure.subplots(1, len(scales), squeeze=False, sharey=True)[0])
    for ax, scale in zip(axes, scales):
        part = participants[participants["scale"] == scale]
        ax.errorbar(part["bias"], part["inconsistency"],
                    xerr=[part["bias"] - part["bias_ci_low"], part["bias_ci_high"] - part["bias"]],
                    fmt="o", markersize=3, color="#1f78b4", ecolor="#a6cee3", linewidth=0.8, alpha=0.85)
        ax.axvline(0.0, color="#999999", linewidth=0.8)
        ax.set_title(options.scale_label(scale), fontsize=10)
        ax.set_xlabel("bias Δ (rating points)", fontsize=8)
        ax.grid(color="#eeeeee", linewidth=0.8)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("inconsistency υ", fontsize=8)
    figure.subplots_adjust(wspace=0.15)
    caption = ("Participants of the analysis: bias (how much higher or lower than the recovered quality they rate, "
               "with its interval) against inconsistency (SD of their remaining error). Points far right/left or high "
               "are participants whose ratings the subject model trusts less.")
    return Figure("subject", "Participant bias and inconsistency", caption, figure_data_uri(figure, fmt))


def planning_figure(components: pd.DataFrame, design: pd.DataFrame, *, options: ReportOptions,
                    fmt: str = "png") -> Figure:
    """Expected CI half-width (left) and minimum detectable difference (right) against ratings per clip."""
    figure = MplFigure(figsize=(8.6, 3.2))
    left, right = figure.subplots(1, 2)
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"]
    largest = 10
    for index, (comp, plan) in enumerate(zip(components.itertuples(index=False), design.itertuples(index=False))):
        values = VarianceComponents(comp.sigma2_participant, comp.sigma2_clip, comp.sigma2_residual)
        top = max(60, 3 * plan.ratings_per_clip)
        largest = max(largest, top)
        m = np.arange(1, top + 1)
        k = plan.clips_per_participant
        n = m if k >= plan.n_clips else np.maximum(m, np.ceil(plan.n_clips * m / k).astype(int))
        half = [ci_half_width(values, n_participants=int(a), n_clips=plan.n_clips, ratings_per_clip=int(b),
                              confidence=options.confidence) for a, b in zip(n, m)]
        mdd = [minimum_detectable_difference(values, n_participants=int(a), n_clips=plan.n_clips,
                                             ratings_per_clip=int(b), alpha=options.alpha, power=options.power)
               for a, b in zip(n, m)]
        colour = palette[index % len(palette)]
        label = options.scale_label(comp.scale)
        left.plot(m, half, color=colour, label=label)
        right.plot(m, mdd, color=colour, label=label)
        left.plot([plan.ratings_per_clip], [plan.ci_half_width], "o", color=colour)
        right.plot([plan.ratings_per_clip], [plan.minimum_detectable_difference], "o", color=colour)
    left.axhline(options.target_half_width, color="#444444", linestyle="--", linewidth=0.9)
    right.axhline(options.target_difference, color="#444444", linestyle="--", linewidth=0.9)
    for ax, ylabel in ((left, f"expected {options.confidence:.0%} CI half-width"),
                       (right, f"min. detectable difference ({options.power:.0%} power)")):
        ax.set_xlabel("ratings per clip", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlim(1, largest)
        ax.set_ylim(bottom=0)
        ax.grid(color="#eeeeee", linewidth=0.8)
    left.legend(fontsize=8)
    figure.subplots_adjust(wspace=0.3)
    caption = ("With this study's clips per condition, the precision of a condition MOS (left) and the smallest MOS "
               "difference between two conditions detected (right) as ratings per clip grow; dots: this study; "
               "dashed: the targets. The curves flatten at the clip-to-clip variation: past that, more clips are "
               "needed, not more ratings.")
    return Figure("planning", "Ratings per clip needed", caption, figure_data_uri(figure, fmt))


def render_figures(report: Report, *, fmt: str = "png", max_metric_figures: int | None = None) -> Report:
    """Draw every figure into the report's sections (in place; also returned). A figure that cannot be drawn
    becomes a note of its section. ``max_metric_figures`` (default ``options.max_metric_figures``) limits the
    metric scatter plots to the best predictors."""
    options = report.options
    scales = _scales(report)
    kinds = _kinds(report)

    def draw(section_key: str, name: str, make):
        section = report.sections[section_key]
        with report.step(f"figure: {name}"):
            try:
                section.figures.append(make())
            except Exception as exc:
                section.note(f"Figure '{name}' could not be drawn ({exc.__class__.__name__}: {exc}).")

    mos = report.sections["mos"].tables.get("mos")
    if mos is not None and len(mos):
        letters = report.sections["mixed_model"].tables.get("letters")
        draw("mos", "mos", lambda: mos_figure(mos, scales=scales, options=options, kinds=kinds, letters=letters,
                                              fmt=fmt))
    screening = report.sections["screening"]
    if "decisions" in screening.tables and len(screening.tables["decisions"]):
        draw("screening", "screening", lambda: screening_figure(
            screening.tables["decisions"], screening.tables["participants"], scales=scales, options=options, fmt=fmt))
    subject = report.sections["subject_model"].tables.get("participants")
    if subject is not None and len(subject):
        draw("subject_model", "subject", lambda: subject_figure(subject, scales=_present(scales, subject),
                                                                 options=options, fmt=fmt))
    metrics = report.sections["metrics"]
    summary = metrics.tables.get("summary")
    if summary is not None and len(summary) and report.metrics_data is not None:
        draw("metrics", "metric overview", lambda: metric_overview_figure(summary, scales=scales, options=options,
                                                                          fmt=fmt))
        ranked = summary.groupby("metric", sort=False)["spearman_clip"].max().sort_values(ascending=False)
        limit = options.max_metric_figures if max_metric_figures is None else max_metric_figures
        names = ranked.index.tolist() if limit is None else ranked.index.tolist()[:limit]
        for metric in names:
            draw("metrics", f"metric {metric}", lambda metric=metric: metric_scatter_figure(
                report.metrics_data, metric, scales=scales, options=options, mos=mos,
                p1401=metrics.tables.get("p1401_condition"), summary=summary, kinds=kinds, fmt=fmt))
    planning = report.sections["planning"]
    if "components" in planning.tables and "current_design" in planning.tables:
        draw("planning", "planning", lambda: planning_figure(planning.tables["components"],
                                                             planning.tables["current_design"], options=options,
                                                             fmt=fmt))
    return report


def _scales(report: Report) -> list:
    if report.options.scales:
        return list(report.options.scales)
    return list(pd.unique(report.analysed["scale"]))


def _present(scales, table) -> list:
    return [s for s in scales if (table["scale"] == s).any()]


def _kinds(report: Report) -> dict:
    conditions = report.sections["overview"].tables.get("conditions")
    if conditions is None or "kind" not in conditions:
        return {}
    return dict(zip(conditions["condition"], conditions["kind"]))


def data_uri_bytes(uri: str) -> bytes:
    """The image bytes of a data URI made by :func:`figure_data_uri` (for tests and exports)."""
    header, _, payload = uri.partition(",")
    if ";base64" in header:
        return base64.b64decode(payload)
    from urllib.parse import unquote

    return unquote(payload).encode("utf-8")


__all__ = ["figure_data_uri", "mos_figure", "metric_overview_figure", "metric_scatter_figure", "screening_figure",
           "subject_figure", "planning_figure", "render_figures", "data_uri_bytes", "condition_order"]
