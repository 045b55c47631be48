"""Every table of a MOS study report, computed from the tidy ratings frame. Django-free.

:func:`build_report` takes the long ratings frame of :mod:`analysis.data` (one row per rating: ``participant``,
``clip``, ``condition``, ``scale``, ``rating``; optionally ``condition_kind``, ``content``) and, optionally, one
row per clip of objective metrics (``clip`` plus one column per metric), and returns a :class:`Report`: ordered
:class:`Section` objects, each a set of tidy DataFrames with stable snake_case columns (the seeds' formats
excepted, whose column names are the papers' headers), notes and step timings. Nothing is rounded here
(:mod:`analysis.exports` rounds; the HTML formats).

Sections (computed in :data:`COMPUTE_ORDER`, shown in :data:`SECTION_KEYS` order): ``overview`` (design and
conditions), ``screening`` (every rule's decisions, who was rejected, the MOS with and without them), ``mos``
(MOS ± CI, the seeds' "Method | Sync | Visual | Overall" table), ``mixed_model`` (``rating ~ condition +
(1|participant) + (1|clip)`` per scale, EMMs, Holm-adjusted contrasts and compact letter display), ``dmos``
(only with a hidden reference), ``content_mos``, ``subject_model`` (P.910 Annex E), ``agreement`` (ICC,
Krippendorff's alpha, split-half, model-based ICC), ``metrics`` (metric vs MOS: correlations with
crossed-bootstrap CIs, rm_corr, P.1401, ranking agreement, the seeds' metric table) and ``planning``
(participants and ratings per clip for a target CI half-width or detectable difference).

Failure policy: a section or a per-scale fit that cannot be computed (too few participants for an ICC, a model
that does not converge, no metric stored) becomes a note in its section and a status ("partial", "failed" or
"skipped"), never an exception and never a silent omission.

Blinding: conditions get blind labels ``C1, C2, …`` (zero-padded past nine, so they sort in order) in the
order given by ``ReportOptions.condition_order`` (the Django side passes the study's conditions by primary
key, so labels are stable per study); ``reveal_conditions=True`` keeps the real names and adds the label ↔
name key. The relabelling is applied to the ratings before anything is computed, so no table, figure or
export of a blind report can contain a condition name. ``condition_kind`` (reference / control / model) stays
visible: it names no model and DMOS needs it.

Faithful: every statistic comes from the tested modules (:mod:`analysis.mos`, :mod:`analysis.mixed`,
:mod:`analysis.subject_model`, :mod:`analysis.agreement`, :mod:`analysis.screening`,
:mod:`analysis.metric_validity`, :mod:`analysis.planning`); the compact letter display is Piepho's (2004)
insert-and-absorb algorithm; the model-based ICC is statistics.md §4.1's formula.

UNVERIFIED choices (docs/analysis.md explains them):

* The primary analysis drops every participant rejected by any of the screening rules run
  (``exclude_rejected=True``), unless fewer than :data:`MIN_PARTICIPANTS_AFTER_SCREENING` would remain; the
  screening section always shows the MOS both ways.
* The model-based ICC uses the harmonic mean of the ratings per clip as k.
* The planning section reuses the variance components of the mixed model of the analysed ratings (the same
  REML fit :func:`analysis.planning.pilot_variance_components` makes) with the study's clips per condition and
  the observed clips per condition per participant.
* Metric values that are not finite (PSNR of a clip against itself) are treated as missing.
* A metric "predicts MOS" in the summary when the lower end of its clip-level Spearman bootstrap CI is above 0.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from analysis.agreement import agreement_summary
from analysis.metric_validity import (
    metric_correlations,
    metric_orientation,
    metric_rm_correlations,
    p1401_evaluation,
    ranking_agreement,
)
from analysis.mixed import fit_mixed_model
from analysis.mos import content_mos_table, dmos_table, mos_table
from analysis.planning import VarianceComponents, ci_half_width, minimum_detectable_difference, plan_sample_size
from analysis.screening import DEFAULT_RULES, drop_rejected, rejected_participants, screen_participants
from analysis.subject_model import fit_subject_model

REQUIRED_COLUMNS = ("participant", "clip", "condition", "scale", "rating")
# Display order: what a reader needs first. The sections are computed in COMPUTE_ORDER (screening decides which
# ratings everything after it analyses).
SECTION_KEYS = ("overview", "mos", "mixed_model", "metrics", "dmos", "content_mos", "agreement", "screening",
                "subject_model", "planning")
COMPUTE_ORDER = ("overview", "screening", "mos", "mixed_model", "dmos", "content_mos", "subject_model", "agreement",
                 "metrics", "planning")
# Below this many participants left after screening the rejections are reported but not applied.
MIN_PARTICIPANTS_AFTER_SCREENING = 3
STATUSES = ("ok", "partial", "failed", "skipped")


def _seeds_metric_columns() -> tuple[tuple[str, str], ...]:
    from generation.metrics.catalog import SEEDS_TABLE

    return tuple(SEEDS_TABLE)


@dataclass(frozen=True)
class ReportOptions:
    """What :func:`build_report` computes and how.

    Attributes
    ----------
    title : str
        Shown at the top of the report.
    scales : sequence of str, optional
        Scales in display order; default: order of first appearance in the ratings.
    scale_labels : mapping, optional
        Display names of the scales (default: the key capitalised, "sync" → "Sync" as in the seeds' table).
    condition_order : sequence, optional
        Order in which conditions get their blind labels C1, C2, … (default: sorted names). Entries absent from
        the ratings still take their label, so labels stay stable as a study grows.
    reveal_conditions : bool
        Keep the real condition names (researcher-only) instead of the blind labels.
    confidence : float
        Level of every interval (MOS, model, bootstrap).
    screening_rules : sequence of str
        Rules of :func:`analysis.screening.screen_participants` to run.
    exclude_rejected : bool
        Analyse without the participants any of the rules rejected (default) or with everyone.
    mixed_engine : {"fast", "statsmodels"}
        Engine of the mixed models.
    n_boot : int
        Bootstrap replicates of the metric correlations and ranking agreement (0: no CI).
    n_splits : int
        Random splits of the split-half reliability.
    seed : int
        Seed of every random draw (bootstrap, splits).
    metrics : sequence of str, optional
        Metric columns to evaluate; default every numeric column of ``clip_metrics`` but ``clip``.
    higher_is_better : mapping, optional
        Metric directions; a metric mapped to None is not a quality score and is left out of the correlations
        (see :func:`analysis.metric_validity.metric_orientation` for the defaults).
    metric_labels : mapping, optional
        Display names of metrics ("lse_c" → "LSE-C").
    seeds_metric_columns : sequence of (name, label), optional
        Columns of the seeds' metric table; default ``generation.metrics.catalog.SEEDS_TABLE``
        (SSIM, PSNR, FID, IFC, LMD, LSE-C, LSE-D).
    clip_correlation_methods, condition_correlation_methods : sequence of str
        Correlations computed over clips and over conditions.
    target_half_width, target_difference, alpha, power : float
        Planning targets: the condition-MOS CI half-width, and the MOS difference to detect with a two-sided
        level-``alpha`` test at ``power``.
    trace_memory : bool
        Record each step's peak traced memory (tracemalloc; slows numpy code a little).
    max_metric_figures : int, optional
        Draw the metric-vs-MOS scatter plot of at most this many metrics (the best predictors first); None: all.
    """

    title: str = "MOS study report"
    scales: Sequence[str] | None = None
    scale_labels: Mapping[str, str] | None = None
    condition_order: Sequence | None = None
    reveal_conditions: bool = False
    confidence: float = 0.95
    screening_rules: Sequence[str] = DEFAULT_RULES
    exclude_rejected: bool = True
    mixed_engine: str = "fast"
    n_boot: int = 1000
    n_splits: int = 1000
    seed: int = 0
    metrics: Sequence[str] | None = None
    higher_is_better: Mapping[str, bool | None] | None = None
    metric_labels: Mapping[str, str] | None = None
    seeds_metric_columns: Sequence[tuple[str, str]] | None = None
    clip_correlation_methods: Sequence[str] = ("pearson", "spearman")
    condition_correlation_methods: Sequence[str] = ("pearson", "spearman", "kendall")
    target_half_width: float = 0.2
    target_difference: float = 0.3
    alpha: float = 0.05
    power: float = 0.8
    trace_memory: bool = False
    max_metric_figures: int | None = None

    def scale_label(self, scale) -> str:
        labels = dict(self.scale_labels or {})
        return labels.get(scale, str(scale)[:1].upper() + str(scale)[1:])

    def metric_label(self, metric: str) -> str:
        return dict(self.metric_labels or {}).get(metric, metric)

    def as_dict(self) -> dict:
        """JSON-friendly copy (sequences as lists, mappings as dicts). Unless ``reveal_conditions``, the condition
        names in ``condition_order`` are withheld (only their number is kept): the options go into blind reports."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "condition_order" and value is not None and not self.reveal_conditions:
                value = f"{len(value)} conditions (names withheld in a blind report)"
            if isinstance(value, Mapping):
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, (list, tuple)):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[name] = value
        return out


@dataclass
class Figure:
    """One embedded figure: ``data_uri`` is a ``data:image/png;base64,…`` or ``data:image/svg+xml;…`` URI."""

    key: str
    title: str
    caption: str
    data_uri: str


@dataclass
class Section:
    """One part of the report: tidy tables (name → DataFrame), what they mean, notes, figures."""

    key: str
    title: str
    description: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    status: str = "ok"
    seconds: float = 0.0

    def add(self, name: str, table: pd.DataFrame, caption: str = "") -> pd.DataFrame:
        self.tables[name] = table.reset_index(drop=True)
        self.captions[name] = caption
        return self.tables[name]

    def note(self, text: str, *, status: str | None = None) -> None:
        self.notes.append(text)
        if status is not None:
            self.degrade(status)

    def degrade(self, status: str) -> None:
        """Lower the status (ok < partial < failed; skipped stands alone)."""
        order = {"ok": 0, "partial": 1, "failed": 2, "skipped": 2}
        if order[status] > order[self.status]:
            self.status = status


TIMING_COLUMNS = ["step", "seconds", "peak_mib"]


@dataclass
class Report:
    """The result of :func:`build_report`.

    Attributes
    ----------
    title : str
    options : ReportOptions
    sections : dict
        Section key → :class:`Section`, in :data:`SECTION_KEYS` order.
    highlights : list of str
        The findings a reader should see first (which conditions differ, which metric predicts MOS).
    condition_labels : dict
        Real condition name → label used in every table (the identity when revealed).
    ratings : pandas.DataFrame
        Every rating as analysed before screening, conditions relabelled, with a ``rejected`` column.
    analysed : pandas.DataFrame
        The ratings the main analysis used (without the rejected participants when they were excluded).
    created_at : str
        ISO 8601 time of the build (UTC).
    timings : list of dict
        ``TIMING_COLUMNS`` per step (the sections, then figures, rendering and exports as they are added).
    metrics_data : pandas.DataFrame or None
        The analysed ratings with the evaluated metric columns joined (for the scatter plots).
    """

    title: str
    options: ReportOptions
    sections: dict[str, Section]
    highlights: list[str]
    condition_labels: dict
    ratings: pd.DataFrame
    analysed: pd.DataFrame
    created_at: str
    timings: list[dict] = field(default_factory=list)
    metrics_data: pd.DataFrame | None = None

    def section(self, key: str) -> Section:
        return self.sections[key]

    def table(self, key: str) -> pd.DataFrame:
        """A table by its ``"section/name"`` key."""
        section, name = key.split("/", 1)
        return self.sections[section].tables[name]

    def all_tables(self) -> dict[str, pd.DataFrame]:
        """Every table as ``{"section/name": DataFrame}``, in report order."""
        return {f"{s.key}/{name}": table for s in self.sections.values() for name, table in s.tables.items()}

    def timings_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.timings, columns=TIMING_COLUMNS)

    @contextmanager
    def step(self, name: str):
        """Time a step (and its peak traced memory with ``options.trace_memory``) into :attr:`timings`."""
        with _measure(self.options.trace_memory) as measured:
            yield
        self.timings.append({"step": name, **measured})


@contextmanager
def _measure(trace: bool):
    measured = {"seconds": math.nan, "peak_mib": math.nan}
    started_tracing = False
    if trace:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            started_tracing = True
        tracemalloc.reset_peak()
    start = time.perf_counter()
    try:
        yield measured
    finally:
        measured["seconds"] = time.perf_counter() - start
        if trace:
            measured["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            if started_tracing:
                tracemalloc.stop()


# --------------------------------------------------------------------------------------------------
# Blinding


def blind_labels(conditions: Sequence, order: Sequence | None = None) -> dict:
    """Blind label of every condition: ``C1, C2, …`` in ``order`` (then the rest, sorted by name).

    Labels are zero-padded when there are ten or more (``C01 … C12``) so that sorting them as text keeps
    their order.

    Examples
    --------
    >>> blind_labels(["wav2lip", "reference", "lipgan"], order=["reference", "wav2lip", "lipgan"])
    {'reference': 'C1', 'wav2lip': 'C2', 'lipgan': 'C3'}
    """
    ordered = list(dict.fromkeys(order or []))
    known = set(ordered)
    ordered += sorted({c for c in conditions if c not in known}, key=str)
    width = len(str(len(ordered))) if len(ordered) >= 10 else 1
    return {condition: f"C{index + 1:0{width}d}" for index, condition in enumerate(ordered)}


# --------------------------------------------------------------------------------------------------
# Compact letter display


def compact_letters(levels: Sequence, significant_pairs: Sequence[tuple]) -> dict:
    """Compact letter display: two levels share a letter unless their difference is significant.

    Piepho's (2004) insert-and-absorb algorithm: start with one group holding every level; for each
    significant pair, split every group holding both into one without each; drop groups contained in another.
    Letters are assigned to the groups in the order of their first member in ``levels`` (pass the levels
    sorted best first, so "a" marks the best group).

    Parameters
    ----------
    levels : sequence
        The levels (conditions), in display order.
    significant_pairs : sequence of (level, level)
        Pairs whose difference is significant.

    Returns
    -------
    dict
        Level → its letters (e.g. ``"ab"``).

    References
    ----------
    .. [1] H.-P. Piepho (2004), An algorithm for a letter-based representation of all-pairwise comparisons,
       J. Comput. Graph. Stat. 13(2), 456–466.

    Examples
    --------
    >>> compact_letters(["A", "B", "C"], [("A", "C")])
    {'A': 'a', 'B': 'ab', 'C': 'b'}
    """
    levels = list(levels)
    groups: list[frozenset] = [frozenset(levels)] if levels else []
    for a, b in significant_pairs:
        split = []
        for group in groups:
            if a in group and b in group:
                split += [group - {a}, group - {b}]
            else:
                split.append(group)
        unique = list(dict.fromkeys(split))
        groups = [g for g in unique if g and not any(g < other for other in unique)]
    position = {level: i for i, level in enumerate(levels)}
    groups.sort(key=lambda g: sorted(position[x] for x in g))
    names = _letter_names(len(groups))
    return {level: "".join(name for name, group in zip(names, groups) if level in group) for level in levels}


def _letter_names(n: int) -> list[str]:
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    names = list(alphabet) + [a + b for a in alphabet for b in alphabet]
    return names[:n]


# --------------------------------------------------------------------------------------------------
# Section texts

DESCRIPTIONS = {
    "overview": "What was rated: participants, clips, conditions and ratings per scale, and the ratings each "
                "clip and condition received.",
    "screening": "Each screening rule's decision for every participant (per scale), who was rejected, and how "
                 "much the MOS moves when the rejected participants are left out.",
    "mos": "Mean opinion score per condition and scale on the 5-point ACR scale (1 Bad … 5 Excellent) with its "
           "Student-t confidence interval. The interval treats every rating as independent (P.1401 §7.3); for "
           "comparisons between conditions use the mixed model, which accounts for participants and clips.",
    "mixed_model": "rating ~ condition + (1|participant) + (1|clip), fitted by REML per scale. Estimated marginal "
                   "means (EMM) are the participant- and clip-corrected condition MOS; every pair of conditions is "
                   "compared with a Wald z test, Holm-adjusted. Conditions that share a letter do not differ "
                   "significantly.",
    "dmos": "Differential MOS against the hidden reference (ACR-HR): each rating minus the same participant's "
            "rating of the hidden reference of the same content, plus 5 (P.910); and SUREAL's form against the "
            "reference's MOS.",
    "content_mos": "MOS per condition, source content and scale: is a condition uniformly good, or only on some "
                   "contents?",
    "subject_model": "ITU-T P.910 Annex E / SUREAL subject model: every clip's recovered quality, and every "
                     "participant's bias and inconsistency (maximum likelihood by alternating projection).",
    "agreement": "Inter-rater agreement per scale: ICC(A,1) and ICC(A,k) (complete clips × participants only), "
                 "Krippendorff's alpha (ordinal and interval), split-half reliability of the condition MOS, and "
                 "the ICC from the crossed random-effects model, which works for partial designs.",
    "metrics": "How well each objective metric predicts the MOS: Pearson/Spearman over clips and over conditions "
               "with crossed-bootstrap CIs (participants and clips resampled), the within-content repeated-measures "
               "correlation, ITU-T P.1401 (monotonic third-order mapping, RMSE, RMSE*, outlier ratio) and whether "
               "the metric ranks the conditions as people do. Lower-is-better metrics are negated first, so a "
               "positive correlation always means agreement with people.",
    "planning": "From these ratings taken as a pilot: the participants and ratings per clip a study needs for a "
                "target half-width of the condition-MOS confidence interval, or to detect a MOS difference.",
}
TITLES = {
    "overview": "Design", "screening": "Participant screening", "mos": "MOS per condition",
    "mixed_model": "Mixed-effects model", "dmos": "DMOS against the hidden reference",
    "content_mos": "MOS per source content", "subject_model": "Subject model (P.910 Annex E)",
    "agreement": "Agreement and reliability", "metrics": "Objective metrics versus MOS",
    "planning": "Planning the next study",
}


# --------------------------------------------------------------------------------------------------
# The build


def build_report(ratings: pd.DataFrame, clip_metrics: pd.DataFrame | None = None, *,
                 options: ReportOptions | None = None) -> Report:
    """Compute every table of the report.

    Parameters
    ----------
    ratings : pandas.DataFrame
        Long ratings frame (``analysis.data.ratings_frame``): at least ``participant``, ``clip``,
        ``condition``, ``scale``, ``rating``; ``condition_kind`` enables DMOS and the hidden-reference
        baseline, ``content`` the per-content tables and the repeated-measures correlation.
    clip_metrics : pandas.DataFrame, optional
        One row per clip: ``clip`` and one column per metric (a condition-level metric such as FID repeated
        on each clip of its condition). None or empty: the metrics section is skipped with a note.
    options : ReportOptions, optional

    Returns
    -------
    Report

    Raises
    ------
    KeyError
        When a required column is missing (the only error not turned into a note: nothing can be computed).
    """
    options = options or ReportOptions()
    missing = [c for c in REQUIRED_COLUMNS if c not in ratings.columns]
    if missing:
        raise KeyError(f"columns not in ratings: {missing}")
    frame = ratings.copy()
    frame["rating"] = pd.to_numeric(frame["rating"], errors="raise")
    labels = blind_labels(frame["condition"].dropna().unique().tolist(), options.condition_order)
    if options.reveal_conditions:
        names = {name: name for name in labels}
    else:
        names = labels
    condition_key = pd.DataFrame({"label": list(labels.values()), "condition_name": list(labels.keys())})
    frame["condition"] = frame["condition"].map(names)
    scales = list(options.scales) if options.scales else list(pd.unique(frame["scale"]))
    frame = frame[frame["scale"].isin(scales)].reset_index(drop=True)

    report = Report(title=options.title, options=options, sections={}, highlights=[],
                    condition_labels={k: v for k, v in names.items() if k in set(ratings["condition"])},
                    ratings=frame, analysed=frame,
                    created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    for key in SECTION_KEYS:
        report.sections[key] = Section(key=key, title=TITLES[key], description=DESCRIPTIONS[key])
    context = _Context(report=report, options=options, scales=scales, condition_key=condition_key, names=names)

    builders = {"overview": _overview, "screening": _screening, "mos": _mos, "mixed_model": _mixed, "dmos": _dmos,
                "content_mos": _content_mos, "subject_model": _subject_model, "agreement": _agreement,
                "metrics": lambda c: _metrics(c, clip_metrics), "planning": _planning}
    for key in COMPUTE_ORDER:
        builder = builders[key]
        section = report.sections[key]
        with _measure(options.trace_memory) as measured:
            try:
                builder(context)
            except Exception as exc:  # a section never takes the report down: it says why it is empty
                section.note(f"This section could not be computed: {exc.__class__.__name__}: {exc}", status="failed")
        section.seconds = measured["seconds"]
        report.timings.append({"step": f"section: {key}", **measured})
    with report.step("highlights"):
        report.highlights = _highlights(context)
    return report


@dataclass
class _Context:
    report: Report
    options: ReportOptions
    scales: list
    condition_key: pd.DataFrame
    names: dict
    reference: object = None
    fits: dict = field(default_factory=dict)  # scale → MixedModelResult

    @property
    def all_ratings(self) -> pd.DataFrame:
        return self.report.ratings

    @property
    def data(self) -> pd.DataFrame:
        return self.report.analysed

    def by_scale(self, data: pd.DataFrame | None = None):
        data = self.data if data is None else data
        for scale in self.scales:
            part = data[data["scale"] == scale]
            if len(part):
                yield scale, part


def _kind_of_condition(data: pd.DataFrame) -> dict:
    if "condition_kind" not in data.columns:
        return {}
    return data.drop_duplicates("condition").set_index("condition")["condition_kind"].to_dict()


def _overview(c: _Context) -> None:
    section = c.report.sections["overview"]
    data = c.all_ratings
    rows = []
    for scale, part in c.by_scale(data):
        per_clip = part.groupby("clip").size()
        per_condition = part.groupby("condition").size()
        rows.append({"scale": scale, "n_ratings": len(part), "n_participants": part["participant"].nunique(),
                     "n_clips": part["clip"].nunique(), "n_conditions": part["condition"].nunique(),
                     "n_contents": part["content"].nunique() if "content" in part else np.nan,
                     "ratings_per_clip_min": int(per_clip.min()),
                     "ratings_per_clip_median": float(per_clip.median()),
                     "ratings_per_clip_max": int(per_clip.max()),
                     "ratings_per_condition_min": int(per_condition.min()),
                     "ratings_per_condition_max": int(per_condition.max())})
    section.add("design", pd.DataFrame(rows), "Per scale: ratings, participants, clips, conditions, contents, "
                "and the spread of ratings per clip and per condition (before screening).")
    kinds = _kind_of_condition(data)
    conditions = (data.groupby("condition")
                  .agg(n_clips=("clip", "nunique"), n_participants=("participant", "nunique"))
                  .reset_index())
    trials = data.drop_duplicates(["participant", "clip"]).groupby("condition").size()
    conditions["n_rated_trials"] = conditions["condition"].map(trials).astype(int)
    conditions.insert(1, "kind", conditions["condition"].map(kinds) if kinds else "")
    if c.options.reveal_conditions:
        label_of = dict(zip(c.condition_key["condition_name"], c.condition_key["label"]))
        conditions.insert(1, "blind_label", conditions["condition"].map(label_of))
    section.add("conditions", conditions,
                "Every condition: kind (hidden reference, control or model), clips, participants who rated it, "
                "and rated trials (a trial = one clip rated by one participant on every scale)."
                + ("" if c.options.reveal_conditions else " Conditions are shown by blind label."))
    if data.empty:
        section.note("No ratings yet: nothing below can be computed.", status="failed")
    references = [k for k, v in kinds.items() if v == "reference"]
    if references:
        c.reference = sorted(references)[0]
        if len(references) > 1:
            section.note(f"{len(references)} hidden-reference conditions; {c.reference} is the model baseline.")


def _screening(c: _Context) -> None:
    section = c.report.sections["screening"]
    data = c.all_ratings
    report = c.report
    report.ratings = data.assign(rejected=False)
    if data.empty:
        section.note("No ratings to screen.", status="skipped")
        return
    decisions = screen_participants(data, rules=c.options.screening_rules)
    section.add("decisions", decisions, "One row per rule, scale and participant: the rule's statistic and "
                "threshold, whether it rejects, and why (scale 'all' for rules across scales).")
    rejected = rejected_participants(decisions)
    report.ratings = data.assign(rejected=data["participant"].isin(rejected))

    per_participant = data.groupby("participant").agg(n_ratings=("rating", "size"), mean_rating=("rating", "mean"),
                                                      sd_rating=("rating", "std")).reset_index()
    hits = decisions[decisions["rejected"]]
    why = {participant: "; ".join(f"{rule} ({', '.join(map(str, part['scale']))})"
                                  for rule, part in group.groupby("rule", sort=True))
           for participant, group in hits.groupby("participant")}
    per_participant["rejected"] = per_participant["participant"].isin(rejected)
    per_participant["rejected_by"] = [why.get(p, "") for p in per_participant["participant"]]
    section.add("participants", per_participant, "Every participant: ratings given, mean and SD of their "
                "ratings, and the rules (scales) that rejected them.")
    summary = (decisions.groupby(["rule", "scale"], sort=True)
               .agg(n_participants=("participant", "nunique"), n_rejected=("rejected", "sum")).reset_index())
    summary["n_rejected"] = summary["n_rejected"].astype(int)
    section.add("summary", summary, "Participants rejected per rule and scale.")

    kept = drop_rejected(data, decisions)
    n_all, n_kept = data["participant"].nunique(), kept["participant"].nunique()
    if rejected and c.options.exclude_rejected:
        if n_kept >= MIN_PARTICIPANTS_AFTER_SCREENING:
            report.analysed = kept.reset_index(drop=True)
            section.note(f"{len(rejected)} of {n_all} participants were rejected by at least one rule; every "
                         f"section below analyses the remaining {n_kept}.")
        else:
            section.note(f"Screening would leave only {n_kept} of {n_all} participants; the rejections are "
                         "reported but not applied: every section below analyses all participants.",
                         status="partial")
    elif rejected:
        section.note(f"{len(rejected)} of {n_all} participants were rejected by at least one rule; as requested, "
                     "every section below analyses all participants (with the rejected ones).")
    else:
        section.note(f"No participant was rejected ({n_all} participants).")

    with_all = mos_table(data, confidence=c.options.confidence)
    without = mos_table(kept, confidence=c.options.confidence) if len(kept) else with_all.iloc[0:0]
    keys = ["condition", "scale"]
    both = with_all[keys + ["n", "mos", "ci_half_width"]].merge(
        without[keys + ["n", "mos", "ci_half_width"]], on=keys, how="left", suffixes=("_all", "_without_rejected"))
    both["difference"] = both["mos_without_rejected"] - both["mos_all"]
    section.add("sensitivity", both, "MOS per condition and scale with every participant and without the "
                "rejected ones, and the difference (without − all).")


def _mos(c: _Context) -> None:
    section = c.report.sections["mos"]
    table = mos_table(c.data, confidence=c.options.confidence)
    section.add("mos", table, f"MOS, SD, n and the {c.options.confidence:.0%} Student-t interval per condition "
                "and scale.")
    mos_wide, ci_wide = _seeds_user_study(table, c.scales, c.options)
    section.add("user_study", mos_wide, "The seeds' user-study table (seed 002, Table C): Method | Sync | Visual | "
                "Overall, MOS per condition.")
    section.add("user_study_ci", ci_wide, f"Half-widths of the {c.options.confidence:.0%} intervals of the "
                "user-study table, same layout.")
    single = table[table["n"] < 2]
    if len(single):
        section.note(f"{len(single)} condition × scale cells have a single rating: no interval.", status="partial")


def _seeds_user_study(table: pd.DataFrame, scales: Sequence, options: ReportOptions):
    conditions = sorted(table["condition"].unique(), key=str)
    mos_wide = pd.DataFrame({"Method": conditions})
    ci_wide = pd.DataFrame({"Method": conditions})
    for scale in scales:
        part = table[table["scale"] == scale].set_index("condition")
        mos_wide[options.scale_label(scale)] = [part["mos"].get(m, np.nan) for m in conditions]
        ci_wide[options.scale_label(scale)] = [part["ci_half_width"].get(m, np.nan) for m in conditions]
    return mos_wide, ci_wide


def _mixed(c: _Context) -> None:
    section = c.report.sections["mixed_model"]
    alpha = 1.0 - c.options.confidence
    stacks = {"fixed_effects": [], "variance_components": [], "emms": [], "contrasts": [], "fits": [], "letters": []}
    for scale, part in c.by_scale():
        levels = set(part["condition"])
        reference = c.reference if c.reference in levels else None
        try:
            fit = fit_mixed_model(part, reference_condition=reference, engine=c.options.mixed_engine,
                                  confidence=c.options.confidence)
        except Exception as exc:
            section.note(f"{scale}: the mixed model could not be fitted ({exc.__class__.__name__}: {exc}).",
                         status="partial")
            continue
        c.fits[scale] = fit
        if not fit.converged:
            section.note(f"{scale}: the fit did not converge; its estimates are unreliable.", status="partial")
        for text in fit.warnings:
            section.note(f"{scale}: {text}")
        for name in ("fixed_effects", "variance_components", "emms", "contrasts"):
            stacks[name].append(getattr(fit, name).assign(scale=scale))
        stacks["fits"].append(pd.DataFrame([{"scale": scale, **fit.fit_row()}]))
        ordered = fit.emms.sort_values("emm", ascending=False)["condition"].tolist()
        significant = fit.contrasts.loc[fit.contrasts["p_holm"] < alpha, ["condition_a", "condition_b"]]
        letters = compact_letters(ordered, list(significant.itertuples(index=False, name=None)))
        emm = fit.emms.set_index("condition")["emm"]
        stacks["letters"].append(pd.DataFrame({
            "scale": scale, "condition": ordered, "rank": np.arange(1, len(ordered) + 1),
            "emm": [emm[x] for x in ordered], "letters": [letters[x] for x in ordered]}))
    if not c.fits:
        section.note("No scale could be fitted.", status="failed")
        return
    captions = {
        "emms": "Estimated marginal means per condition and scale with Wald intervals.",
        "contrasts": "Every pair of conditions: difference a − b, Wald z, p-value and Holm-adjusted p (per scale).",
        "letters": f"Compact letter display per scale (Holm-adjusted, α = {alpha:.2g}): conditions sharing a letter "
                   "do not differ significantly; ranked by EMM.",
        "fixed_effects": "Treatment-coded fixed effects"
                         + (f" against {c.reference} (hidden reference)." if c.reference else "."),
        "variance_components": "Variance of the participant and clip random intercepts and the residual, with "
                               "their share of the total.",
        "fits": "Fit statistics per scale: engine, REML, convergence, log-likelihood, warnings.",
    }
    tables = {}
    for name in ("emms", "letters", "contrasts", "fixed_effects", "variance_components", "fits"):
        table = pd.concat(stacks[name], ignore_index=True)
        tables[name] = table[["scale", *[col for col in table.columns if col != "scale"]]]
    section.add("by_condition", _by_condition(tables["emms"], tables["letters"], c.scales),
                "One row per condition, best first (mean EMM over scales): per scale the EMM, the half-width of its "
                "Wald interval and the compact letters (conditions sharing a letter do not differ significantly).")
    for name, table in tables.items():
        section.add(name, table, captions[name])


def _by_condition(emms: pd.DataFrame, letters: pd.DataFrame, scales: Sequence) -> pd.DataFrame:
    order = emms.groupby("condition")["emm"].mean().sort_values(ascending=False).index
    out = pd.DataFrame({"condition": order})
    for scale in scales:
        part = emms[emms["scale"] == scale].set_index("condition")
        if part.empty:
            continue
        marks = letters[letters["scale"] == scale].set_index("condition")["letters"]
        out[f"{scale}_emm"] = out["condition"].map(part["emm"])
        out[f"{scale}_ci_half_width"] = out["condition"].map((part["ci_high"] - part["ci_low"]) / 2.0)
        out[f"{scale}_letters"] = out["condition"].map(marks)
    return out


def _dmos(c: _Context) -> None:
    section = c.report.sections["dmos"]
    data = c.data
    if "condition_kind" not in data.columns or not (data["condition_kind"] == "reference").any():
        section.note("The study has no hidden reference: DMOS is not defined.", status="skipped")
        return
    if "content" not in data.columns:
        section.note("The ratings have no content column to pair clips with their reference.", status="skipped")
        return
    viewer = dmos_table(data, pairing="viewer", confidence=c.options.confidence)
    section.add("dmos", viewer, "DMOS per condition and scale, each rating paired with the same participant's "
                "rating of the content's hidden reference (ACR-HR, P.910); n_unpaired ratings had no such rating.")
    pooled = dmos_table(data, pairing="mos", confidence=c.options.confidence)
    section.add("dmos_reference_mos", pooled, "DMOS against the MOS of the content's hidden reference (SUREAL's "
                "DmosModel); uses every rating whose content has a rated reference.")
    unpaired = int(viewer["n_unpaired"].sum())
    if unpaired:
        section.note(f"{unpaired} ratings have no same-participant reference rating (partial design); the "
                     "second table pairs them with the reference MOS instead.")


def _content_mos(c: _Context) -> None:
    section = c.report.sections["content_mos"]
    if "content" not in c.data.columns:
        section.note("The ratings have no content column.", status="skipped")
        return
    section.add("content_mos", content_mos_table(c.data, confidence=c.options.confidence),
                "MOS per condition × content × scale.")


def _subject_model(c: _Context) -> None:
    section = c.report.sections["subject_model"]
    stimuli, participants, fits = [], [], []
    condition_of_clip = c.data.drop_duplicates("clip").set_index("clip")["condition"]
    for scale, part in c.by_scale():
        try:
            fit = fit_subject_model(part, confidence=c.options.confidence)
        except Exception as exc:
            section.note(f"{scale}: the subject model could not be fitted ({exc.__class__.__name__}: {exc}).",
                         status="partial")
            continue
        if not fit.converged:
            section.note(f"{scale}: alternating projection stopped after {fit.fit['n_iterations']} iterations "
                         "without converging.", status="partial")
        clip_rows = fit.stimuli.copy()
        clip_rows.insert(1, "condition", clip_rows["clip"].map(condition_of_clip))
        stimuli.append(clip_rows.assign(scale=scale))
        participants.append(fit.participants.assign(scale=scale))
        fits.append(pd.DataFrame([{"scale": scale, **fit.fit}]))
    if not fits:
        section.note("No scale could be fitted.", status="failed")
        return

    def first_scale(frames):
        table = pd.concat(frames, ignore_index=True)
        return table[["scale", *[col for col in table.columns if col != "scale"]]]

    stimuli_table = first_scale(stimuli)
    quality = (stimuli_table.groupby(["condition", "scale"], sort=True)
               .agg(n_clips=("clip", "size"), mean_quality=("quality", "mean"), mean_mos=("mos", "mean"))
               .reset_index())
    section.add("condition_quality", quality, "Per condition and scale: the mean recovered quality ψ of its clips "
                "(participant bias removed, consistent participants weighted up) next to the mean clip MOS.")
    section.add("participants", first_scale(participants), "Every participant's bias Δ (mean offset from the "
                "true quality) and inconsistency υ (SD of their residuals) with intervals.")
    section.add("stimuli", stimuli_table, "Every clip's recovered quality ψ with its P.910 standard error and "
                "interval, next to its plain MOS.")
    section.add("fits", first_scale(fits), "Fit statistics per scale (per observation, as SUREAL reports them).")


def _agreement(c: _Context) -> None:
    section = c.report.sections["agreement"]
    try:
        summary = agreement_summary(c.data, by=("scale",), n_splits=c.options.n_splits, seed=c.options.seed)
    except Exception as exc:
        section.note(f"ICC, alpha and split-half could not be computed ({exc.__class__.__name__}: {exc}).",
                     status="partial")
    else:
        section.add("summary", summary, "Per scale: ICC(A,1), ICC(A,k) (95 % CI) and ICC(C,1) over the clips every "
                    "kept participant rated, Krippendorff's alpha, and the split-half (Spearman–Brown) reliability "
                    "of the condition MOS.")
        for row in summary.itertuples(index=False):
            if row.icc_note:
                reason = str(row.icc_note).replace("group (): ", "")
                section.note(f"{row.scale}: no ANOVA ICC — {reason}. The model-based ICC below covers it.")
    rows = []
    for scale, part in c.by_scale():
        try:
            fit = fit_mixed_model(part.assign(_all_conditions="all"), condition="_all_conditions",
                                  engine=c.options.mixed_engine)
        except Exception as exc:
            section.note(f"{scale}: the random-effects model for the ICC could not be fitted ({exc}).",
                         status="partial")
            continue
        variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
        per_clip = part.groupby("clip").size().to_numpy(float)
        k = len(per_clip) / np.sum(1.0 / per_clip)
        clip_var, rater_var, residual = variance["clip"], variance["participant"], variance["residual"]
        rows.append({"scale": scale, "n_clips": len(per_clip), "k_harmonic": k, "sigma2_clip": clip_var,
                     "sigma2_participant": rater_var, "sigma2_residual": residual,
                     "icc_a_1": clip_var / (clip_var + rater_var + residual),
                     "icc_a_k": clip_var / (clip_var + (rater_var + residual) / k), "converged": fit.converged})
        if not fit.converged:
            section.note(f"{scale}: the random-effects model for the ICC did not converge.", status="partial")
    if rows:
        section.add("icc_model", pd.DataFrame(rows), "ICC from rating ~ 1 + (1|participant) + (1|clip): "
                    "σ²_clip/(σ²_clip + σ²_participant + σ²_residual) for one rating and with the residual and "
                    "participant terms divided by k (harmonic mean of ratings per clip) for the clip MOS.")


def _metrics(c: _Context, clip_metrics: pd.DataFrame | None) -> None:
    section = c.report.sections["metrics"]
    if clip_metrics is None or clip_metrics.empty or "clip" not in clip_metrics.columns:
        section.note("No objective metrics are stored for the rated clips.", status="skipped")
        return
    data = c.data
    candidates = list(c.options.metrics) if c.options.metrics else [
        col for col in clip_metrics.columns if col != "clip" and pd.api.types.is_numeric_dtype(clip_metrics[col])]
    given = dict(c.options.higher_is_better or {})
    metrics_frame = clip_metrics[["clip", *[m for m in candidates if m in clip_metrics.columns]]].copy()
    rated = metrics_frame[metrics_frame["clip"].isin(set(data["clip"]))]
    metrics, skipped = [], []
    for name in candidates:
        if name not in rated.columns:
            skipped.append(f"{name} (no such column)")
            continue
        if name in data.columns:
            skipped.append(f"{name} (clashes with a ratings column)")
            continue
        if name in given and given[name] is None:
            skipped.append(f"{c.options.metric_label(name)} (not a quality score)")
            continue
        values = pd.to_numeric(rated[name], errors="coerce").astype(float)
        infinite = int(np.isinf(values).sum())
        values = values.where(np.isfinite(values))
        metrics_frame[name] = pd.to_numeric(metrics_frame[name], errors="coerce").astype(float).where(
            lambda v: np.isfinite(v))
        if infinite:
            section.note(f"{c.options.metric_label(name)}: {infinite} non-finite clip values (e.g. a clip compared "
                         "with itself) are treated as missing.")
        if values.notna().sum() < 3 or values.std() == 0:
            skipped.append(f"{c.options.metric_label(name)} (fewer than 3 rated clips with a value, or no spread)")
            continue
        metrics.append(name)
    if skipped:
        section.note("Not evaluated: " + "; ".join(skipped) + ".")
    if not metrics:
        section.note("No metric has usable values for the rated clips.", status="skipped")
        return
    orientation = metric_orientation(metrics, {m: v for m, v in given.items() if v is not None})
    merged = data.merge(metrics_frame[["clip", *metrics]], on="clip", how="left")
    options = c.options
    common = dict(higher_is_better=orientation, by=("scale",))

    condition_values = _condition_metric_values(merged, metrics, options)
    section.add("metric_table", _seeds_metric_table(condition_values, options),
                "The seeds' metric table (seed 001 Table 1, seed 002 Table B): per condition, the mean over its rated "
                "clips (FID: the condition's value).")
    section.add("condition_metrics", condition_values, "Every metric per condition: mean, SD and number of "
                "rated clips with a value.")

    def attempt(name, caption, function, *args, **kwargs):
        try:
            table = function(*args, **kwargs)
        except Exception as exc:
            section.note(f"{name} could not be computed ({exc.__class__.__name__}: {exc}).", status="partial")
            return None
        return section.add(name, table, caption)

    clip_corr = attempt("correlations_clip", "Correlation of each metric with the clip MOS over clips, per scale, "
                        "with crossed-bootstrap percentile CIs.", metric_correlations, merged, metrics, level="clip",
                        methods=options.clip_correlation_methods, n_boot=options.n_boot,
                        confidence=options.confidence, seed=options.seed, **common)
    condition_corr = attempt("correlations_condition", "Correlation of each condition's mean metric with its MOS, "
                             "with CIs from resampling participants and clips within conditions.",
                             metric_correlations, merged, metrics, level="condition",
                             methods=options.condition_correlation_methods, n_boot=options.n_boot,
                             confidence=options.confidence, seed=options.seed, **common)
    if "content" in merged.columns:
        attempt("rm_correlations", "Repeated-measures correlation over clips sharing a content (rm_corr): does the "
                "metric track the differences between conditions on the same content?", metric_rm_correlations,
                merged, metrics, subject="content", **common)
    p1401 = attempt("p1401_condition", "ITU-T P.1401 per metric and scale over conditions: monotonic cubic mapping "
                    "to MOS, Pearson after mapping, RMSE, RMSE* and outlier ratio.", _p1401_per_metric, section,
                    merged, metrics, level="condition", confidence=options.confidence, **common)
    attempt("p1401_clip", "ITU-T P.1401 over clips (clip MOS).", _p1401_per_metric, section, merged, metrics,
            level="clip", confidence=options.confidence, **common)
    ranking = attempt("ranking", "Kendall τ between the MOS ranking and the metric's ranking of the conditions, "
                      "with its bootstrap CI, and whether both pick the same best condition.", ranking_agreement,
                      merged, metrics, n_boot=options.n_boot, confidence=options.confidence, seed=options.seed,
                      **common)
    if clip_corr is not None:
        section.add("summary", _metric_summary(clip_corr, condition_corr, p1401, ranking, options, c.scales),
                    "Per scale, metrics ranked by their clip-level Spearman correlation with MOS: 'predicts MOS' when "
                    "the lower end of its CI is above 0.")
    c.report.metrics_data = merged  # the scatter plots draw from it


def _p1401_per_metric(section: Section, merged: pd.DataFrame, metrics: Sequence[str], *, level: str,
                      **kwargs) -> pd.DataFrame:
    """:func:`p1401_evaluation` one metric at a time, so that a mapping that cannot be fitted costs one row (and
    a note), not the table."""
    frames = []
    for name in metrics:
        try:
            frames.append(p1401_evaluation(merged, [name], level=level, mapping="cubic", **kwargs))
        except Exception as exc:
            section.note(f"P.1401 over {level}s, {name}: {exc.__class__.__name__}: {exc}.", status="partial")
    if not frames:
        raise RuntimeError("no metric could be evaluated")
    return pd.concat(frames, ignore_index=True).sort_values(["scale", "metric"], kind="stable")


def _condition_metric_values(merged: pd.DataFrame, metrics: Sequence[str], options: ReportOptions) -> pd.DataFrame:
    clips = merged.drop_duplicates("clip")
    rows = []
    for name in metrics:
        grouped = clips.groupby("condition", sort=True)[name]
        stats = grouped.agg(["mean", "std", "count"]).reset_index()
        for row in stats.itertuples(index=False):
            rows.append({"condition": row.condition, "metric": name, "label": options.metric_label(name),
                         "mean": row.mean, "sd": row.std, "n_clips": int(row.count)})
    return pd.DataFrame(rows, columns=["condition", "metric", "label", "mean", "sd", "n_clips"])


def _seeds_metric_table(condition_values: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    columns = options.seeds_metric_columns or _seeds_metric_columns()
    methods = sorted(condition_values["condition"].unique(), key=str)
    table = pd.DataFrame({"Method": methods})
    for name, label in columns:
        values = condition_values[condition_values["metric"] == name].set_index("condition")["mean"]
        table[label] = [values.get(m, np.nan) for m in methods]
    return table


def _metric_summary(clip_corr, condition_corr, p1401, ranking, options: ReportOptions, scales) -> pd.DataFrame:
    def pick(table, method, prefix):
        if table is None or table.empty:
            return pd.DataFrame(columns=["scale", "metric"])
        part = table[table["method"] == method][["scale", "metric", "correlation", "ci_low", "ci_high", "n_items"]]
        return part.rename(columns={"correlation": prefix, "ci_low": f"{prefix}_ci_low",
                                    "ci_high": f"{prefix}_ci_high", "n_items": f"n_{prefix.split('_')[-1]}s"})

    summary = pick(clip_corr, "spearman", "spearman_clip")
    summary = summary.merge(pick(condition_corr, "spearman", "spearman_condition"), on=["scale", "metric"],
                            how="left")
    if p1401 is not None and not p1401.empty:
        summary = summary.merge(p1401[["scale", "metric", "pearson_mapped", "rmse", "rmse_star"]],
                                on=["scale", "metric"], how="left")
    if ranking is not None and not ranking.empty:
        summary = summary.merge(ranking[["scale", "metric", "kendall_tau", "top_agrees"]].rename(
            columns={"kendall_tau": "ranking_kendall_tau"}), on=["scale", "metric"], how="left")
    summary.insert(2, "label", summary["metric"].map(options.metric_label))
    low = summary["spearman_clip_ci_low"]
    high = summary["spearman_clip_ci_high"]
    summary.insert(3, "verdict", np.select([low > 0, high < 0], ["predicts MOS", "contradicts MOS"], "no evidence"))
    order = {scale: i for i, scale in enumerate(scales)}
    summary = summary.assign(_order=summary["scale"].map(order)).sort_values(
        ["_order", "spearman_clip"], ascending=[True, False], na_position="last").drop(columns="_order")
    return summary


def _planning(c: _Context) -> None:
    section = c.report.sections["planning"]
    options = c.options
    if not c.fits:
        section.note("No mixed model was fitted, so there are no variance components to plan with.", status="skipped")
        return
    component_rows, design_rows, plans, clips_needed = [], [], [], []
    for scale, part in c.by_scale():
        fit = c.fits.get(scale)
        if fit is None:
            continue
        if not fit.converged:
            section.note(f"{scale}: the mixed model did not converge; no plan.", status="partial")
            continue
        variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
        components = VarianceComponents(participant=float(variance["participant"]), clip=float(variance["clip"]),
                                        residual=float(variance["residual"]))
        component_rows.append({"scale": scale, "sigma2_participant": components.participant,
                               "sigma2_clip": components.clip, "sigma2_residual": components.residual})
        design = observed_design(part)
        n_participants, n_clips, m = design["n_participants"], design["n_clips"], design["ratings_per_clip"]
        design_rows.append({"scale": scale, **design,
                            "ci_half_width": ci_half_width(components, n_participants=n_participants, n_clips=n_clips,
                                                           ratings_per_clip=m, confidence=options.confidence),
                            "minimum_detectable_difference": minimum_detectable_difference(
                                components, n_participants=n_participants, n_clips=n_clips, ratings_per_clip=m,
                                alpha=options.alpha, power=options.power)})
        k = design["clips_per_participant"]
        clips_needed.append(_clips_needed(components, design, options).assign(scale=scale))
        for target in ("half_width", "difference"):
            kwargs = ({"target_half_width": options.target_half_width, "confidence": options.confidence}
                      if target == "half_width" else
                      {"difference": options.target_difference, "alpha": options.alpha, "power": options.power})
            plan = plan_sample_size(components, n_clips=n_clips, clips_per_participant=k if k < n_clips else None,
                                    **kwargs)
            plans.append(plan.assign(scale=scale))
            if not bool(plan["feasible"].iloc[0]):
                section.note(f"{scale}: the {target.replace('_', ' ')} target {plan['target_value'].iloc[0]:.2f} "
                             f"is below what {n_clips} clips per condition can reach "
                             f"({plan['plateau'].iloc[0]:.2f} with unlimited ratings): more clips are needed.")
    if not component_rows:
        section.note("No converged model to plan with.", status="failed")
        return
    section.add("components", pd.DataFrame(component_rows), "Variance components of the mixed model of these "
                "ratings (the pilot's σ²).")
    section.add("current_design", pd.DataFrame(design_rows), f"This study's design per scale and what it achieves: "
                f"expected CI half-width of a condition MOS and the minimum MOS difference detected with "
                f"{options.power:.0%} power at α = {options.alpha:g}.")
    table = pd.concat(plans, ignore_index=True)
    table = table[["scale", *[col for col in table.columns if col != "scale"]]]
    section.add("plans", table, f"Fewest ratings per clip (and participants) for a CI half-width of "
                f"{options.target_half_width:g} and to detect a difference of {options.target_difference:g}, with "
                "the clips per condition of this study ('plateau': the best reachable with unlimited ratings).")
    needed = pd.concat(clips_needed, ignore_index=True)
    section.add("clips_needed", needed[["scale", *[col for col in needed.columns if col != "scale"]]],
                "Fewest clips per condition that reach each target with this study's ratings per clip (participants "
                "rating this study's share of a condition's clips).")


MAX_CLIPS_SEARCHED = 5000


def _clips_needed(components: VarianceComponents, design: dict, options: ReportOptions) -> pd.DataFrame:
    """For each target, the fewest clips per condition I reaching it at this study's ratings per clip m, with
    N = max(m, ⌈I·m/k⌉) participants (k: a participant's clips per condition, as :func:`plan_sample_size`)."""
    m, k = design["ratings_per_clip"], design["clips_per_participant"]
    rows = []
    for target, value in (("half_width", options.target_half_width), ("difference", options.target_difference)):
        found = None
        for n_clips in range(1, MAX_CLIPS_SEARCHED + 1):
            n_participants = max(m, math.ceil(n_clips * m / k)) if k < design["n_clips"] else m
            if target == "half_width":
                achieved = ci_half_width(components, n_participants=n_participants, n_clips=n_clips,
                                         ratings_per_clip=m, confidence=options.confidence)
            else:
                achieved = minimum_detectable_difference(components, n_participants=n_participants, n_clips=n_clips,
                                                         ratings_per_clip=m, alpha=options.alpha, power=options.power)
            if achieved <= value:
                found = (n_clips, n_participants, achieved)
                break
        rows.append({"target": target, "target_value": value, "ratings_per_clip": m,
                     "n_clips": found[0] if found else pd.NA, "n_participants": found[1] if found else pd.NA,
                     "achieved": found[2] if found else np.nan, "feasible": found is not None})
    table = pd.DataFrame(rows)
    for column in ("n_clips", "n_participants"):
        table[column] = table[column].astype("Int64")
    return table


def observed_design(ratings: pd.DataFrame) -> dict:
    """The design a set of one scale's ratings realises, in :mod:`analysis.planning`'s terms.

    Returns
    -------
    dict
        ``n_participants``; ``n_clips`` (median clips per condition); ``ratings_per_clip`` (mean, rounded,
        between 1 and ``n_participants``); ``clips_per_participant`` (mean over participants and conditions of
        the condition's clips a participant rated, rounded, between 1 and ``n_clips``).
    """
    n_participants = int(ratings["participant"].nunique())
    clips_per_condition = ratings.groupby("condition")["clip"].nunique()
    n_clips = max(1, int(round(float(clips_per_condition.median()))))
    per_clip = ratings.groupby("clip")["participant"].nunique()
    ratings_per_clip = int(min(max(1, round(float(per_clip.mean()))), n_participants))
    seen = ratings.groupby(["participant", "condition"])["clip"].nunique()
    clips_per_participant = int(min(max(1, round(float(seen.mean()))), n_clips))
    return {"n_participants": n_participants, "n_clips": n_clips, "ratings_per_clip": ratings_per_clip,
            "clips_per_participant": clips_per_participant}


# --------------------------------------------------------------------------------------------------
# Highlights


def _highlights(c: _Context) -> list[str]:
    out = []
    sections = c.report.sections
    overview = sections["overview"].tables.get("design")
    if overview is not None and len(overview):
        first = overview.iloc[0]
        out.append(f"{int(first['n_participants'])} participants rated {int(first['n_clips'])} clips of "
                   f"{int(first['n_conditions'])} conditions ({int(overview['n_ratings'].sum()):,} ratings on "
                   f"{len(overview)} scales).")
    participants = sections["screening"].tables.get("participants")
    if participants is not None and len(participants):
        n_rejected = int(participants["rejected"].sum())
        applied = c.report.analysed["participant"].nunique() < c.report.ratings["participant"].nunique()
        if n_rejected:
            out.append(f"Screening rejected {n_rejected} of {len(participants)} participants; the analysis "
                       + ("leaves them out." if applied else "keeps them."))
    letters = sections["mixed_model"].tables.get("letters")
    contrasts = sections["mixed_model"].tables.get("contrasts")
    alpha = 1.0 - c.options.confidence
    if letters is not None and len(letters):
        for scale in c.scales:
            part = letters[letters["scale"] == scale]
            if part.empty:
                continue
            best, best_emm = part.iloc[0]["condition"], part.iloc[0]["emm"]
            label = c.options.scale_label(scale)
            if len(part) == 1:
                out.append(f"{label}: one condition only ({best}, EMM {best_emm:.2f}).")
                continue
            pairs = contrasts[(contrasts["scale"] == scale)
                              & ((contrasts["condition_a"] == best) | (contrasts["condition_b"] == best))]
            tied = sorted({b if a == best else a for a, b, p in
                           pairs[["condition_a", "condition_b", "p_holm"]].itertuples(index=False, name=None)
                           if p >= alpha}, key=str)
            groups = len(set("".join(part["letters"])))
            if tied:
                out.append(f"{label}: {best} rates highest (EMM {best_emm:.2f}), not significantly above "
                           f"{', '.join(tied)}; {groups} groups of conditions.")
            else:
                out.append(f"{label}: {best} rates highest (EMM {best_emm:.2f}), significantly above every other "
                           f"condition; {groups} groups of conditions.")
    summary = sections["metrics"].tables.get("summary")
    if summary is not None and len(summary):
        for scale in c.scales:
            part = summary[summary["scale"] == scale]
            if part.empty:
                continue
            label = c.options.scale_label(scale)
            good = part[part["verdict"] == "predicts MOS"]
            if len(good):
                top = good.iloc[0]
                condition = top.get("spearman_condition", np.nan)
                out.append(f"{label}: {top['label']} predicts MOS best (clip-level Spearman {top['spearman_clip']:.2f} "
                           f"[{top['spearman_clip_ci_low']:.2f}, {top['spearman_clip_ci_high']:.2f}]"
                           + (f"; over conditions {condition:.2f}" if pd.notna(condition) else "") + ").")
            else:
                out.append(f"{label}: no metric's clip-level correlation with MOS is distinguishable from zero.")
    agreement = sections["agreement"].tables.get("icc_model")
    if agreement is not None and len(agreement):
        values = ", ".join(f"{c.options.scale_label(r.scale)} {r.icc_a_k:.2f}" for r in agreement.itertuples())
        out.append(f"Reliability of the clip MOS (model-based ICC(A,k)): {values}.")
    failed = [s.title for s in sections.values() if s.status == "failed"]
    if failed:
        out.append("Could not be computed: " + ", ".join(failed) + " (see the notes there).")
    return out
