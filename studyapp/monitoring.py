"""Researcher monitoring of a running study: coverage, live MOS, rating times, gold checks, flagged
participants, what is still missing, and whether the study may be closed.

Researcher-side only (staff pages of the admin): everything here names conditions.

The statistics come from :mod:`analysis` on the long frame of :func:`analysis.data.ratings_frame`:

* live MOS ± 95 % CI per condition and scale: :func:`analysis.mos.mos_table` on the *valid* ratings
  (test clips of participants matching ``Participant.counting()``: not screened out, returned or timed
  out, not rejected and not set aside as "accepted, not used");
* screening flags: :func:`analysis.screening.screen_participants` (ITU-R BT.500 kurtosis rule, the
  P.913 correlation rule, the z-score rule) and :func:`analysis.screening.straight_lining_screening`
  restricted to "the same answer to every clip of a scale, over at least 5 clips".

Faithful: the MOS and its interval are analysis.mos's (tests/studyapp/test_monitoring.py compares them
on the same frame); the preference interval is the exact (Clopper–Pearson) binomial interval of
``scipy.stats.binomtest``; :func:`ratings_for_half_width` inverts mos_table's Student-t interval exactly.

UNVERIFIED choices (heuristics, no Recommendation prescribes them):

* The close rule and the top-up estimate use mos_table's interval, which treats ratings as independent
  (P.1401 §7.3); it ignores participant and clip variance, so it is optimistic. The planning page
  (:func:`analysis.services.study_planning`) gives the mixed-model plan.
* The extra ratings a condition needs assume its current standard deviation stays as it is; extra
  participants assume each brings ``clips_per_participant × (the condition's share of the test units)``
  ratings of the condition, as balanced assignment gives on average; assignments still in progress are
  counted as ratings to come. A condition rated without units of its own (ACR-HR's hidden reference, which
  comes with its item's units) is judged too, and its per-participant rate is the one observed so far.
* Pairwise studies: the 1–5 answer ("A much better" … "B much better") is folded onto the condition
  pair (names sorted): a *win* of the first condition is an answer on its side of the middle, the middle
  is a tie; the share of wins leaves ties out (the sign test's convention). The pair's precision is the
  Student-t half-width of the oriented answer (5 = first condition much better), in scale points like a
  MOS, so one ``target_ci_half_width`` serves every method. The BT.500, P.913 and z-score rules are not
  run on pairwise answers (they assume one stimulus per answer); straight-lining is.
* Flag thresholds: median answer time under 1 s; 3 or more tab-hidden events; 3 or more fullscreen exits
  (PlaybackEvent ``fullscreen`` with detail "exit"); any failed gold or missed practice clip.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.db.models import Count, Q
from django.utils import timezone
from scipy import stats

from studyapp.models import Assignment, Participant, PlaybackEvent, Study, StudyClip

CONFIDENCE = 0.95
FAST_MEDIAN_RESPONSE_MS = 1000
MIN_TIMED_ANSWERS = 3
TAB_HIDDEN_FLAG_AT = 3
FULLSCREEN_EXITS_FLAG_AT = 3
STRAIGHT_LINING_MIN_CLIPS = 5
SCREENING_RULES = ("bt500", "p913_correlation", "z_score")
# The fullscreen event's detail when the page left fullscreen ("enter" when it entered).
FULLSCREEN_EXIT_DETAILS = ("exit", "exited", "off")
# Bins of the answer-time histograms, seconds (the last bin is open).
TIME_BIN_EDGES_S = (0, 1, 2, 3, 5, 8, 13, 20, 30, 60)
PREFERENCE_COLUMNS = ["condition_a", "condition_b", "n", "a_wins", "b_wins", "ties", "a_share", "ci_low", "ci_high",
                      "p_value", "mean_score", "score_sd", "score_ci_half_width"]
PRECISION_COLUMNS = ["unit", "scale", "n", "estimate", "sd", "ci_half_width", "target", "met", "ratings_needed",
                     "more_ratings", "in_progress", "ratings_per_participant", "more_participants"]
REVIEW_DECISIONS = (Participant.REVIEW_ACCEPTED, Participant.REVIEW_USED, Participant.REVIEW_REJECTED)


# --------------------------------------------------------------------------------------------------
# Pure pieces (no database)


def ratings_for_half_width(sd: float, target: float, *, confidence: float = CONFIDENCE,
                           max_n: int = 1_000_000) -> int | None:
    """Fewest ratings n ≥ 2 whose Student-t half-width t_{(1+c)/2, n−1}·sd/√n is below ``target``.

    The interval is :func:`analysis.mos.mos_table`'s. Returns None when ``sd`` is unknown (NaN) or no
    n up to ``max_n`` reaches the target.
    """
    if not target > 0:
        raise ValueError(f"target must be positive, got {target}")
    if not np.isfinite(sd):
        return None
    if sd == 0:
        return 2
    quantile = 0.5 + confidence / 2.0
    # t > z, so the normal-theory n is a lower bound; step up from it.
    n = max(2, math.ceil((stats.norm.ppf(quantile) * sd / target) ** 2))
    while n <= max_n:
        if stats.t.ppf(quantile, n - 1) * sd / math.sqrt(n) < target:
            return n
        n += 1
    return None


def time_summary(values_ms: Iterable[float]) -> dict:
    """``n``, ``median``, ``p10`` and ``p90`` (ms) of the finite values; NaN statistics when there are none."""
    values = np.asarray([v for v in values_ms if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"n": 0, "median": np.nan, "p10": np.nan, "p90": np.nan}
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {"n": int(len(values)), "median": float(median), "p10": float(p10), "p90": float(p90)}


def time_histogram(values_ms: Iterable[float], edges_s: Sequence[float] = TIME_BIN_EDGES_S) -> list[dict]:
    """Counts of answer times per bin (``label``, ``count``, ``share`` of the largest bin, for bar widths)."""
    values = np.asarray([v for v in values_ms if v is not None], dtype=float) / 1000.0
    values = values[np.isfinite(values)]
    bounds = [*edges_s, np.inf]
    counts = np.histogram(values, bins=bounds)[0] if len(values) else np.zeros(len(edges_s), dtype=int)
    peak = max(int(counts.max()), 1) if len(counts) else 1
    labels = [f"{low:g}–{high:g} s" for low, high in zip(edges_s[:-1], edges_s[1:])] + [f"≥ {edges_s[-1]:g} s"]
    return [{"label": label, "count": int(c), "share": int(c) / peak} for label, c in zip(labels, counts)]


def coverage_histogram(completed: Iterable[int], target: int) -> list[dict]:
    """How many units have k completed ratings, for k = 0 … max(target, most ratings of a unit)."""
    counts = Counter(int(c) for c in completed)
    top = max([target, *counts]) if counts else target
    peak = max(counts.values(), default=1)
    return [{"completed": k, "units": counts.get(k, 0), "share": counts.get(k, 0) / peak, "full": k >= target}
            for k in range(top + 1)]


def preference_table(
    data: pd.DataFrame,
    *,
    first: str = "condition",
    second: str = "paired_condition",
    rating: str = "rating",
    by: Sequence[str] = ("scale",),
    tie_value: int = 3,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Pairwise answers per condition pair: wins, ties, the share of wins with an exact binomial interval.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per answer; ``first`` is the condition shown as A, ``second`` the one shown as B, ``rating``
        the 1–5 answer (1 = A much better, ``tie_value`` = about the same, 5 = B much better).
    first, second, rating : str
        Column names.
    by : sequence of str
        Groups tabulated separately (per scale by default).
    tie_value : int
        The middle answer.
    confidence : float
        Level of both intervals.

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns and :data:`PREFERENCE_COLUMNS`, one row per group and pair. The pair is ordered
        by name (``condition_a`` < ``condition_b``) whichever side each was shown on. ``a_share`` =
        a_wins / (a_wins + b_wins) (ties left out; NaN without a decisive answer), ``ci_low``/``ci_high``
        its Clopper–Pearson interval, ``p_value`` the two-sided exact binomial test of a share of ½.
        ``mean_score`` is the mean oriented answer (5 = condition_a much better, 1 = condition_b much
        better), with its sample SD and Student-t half-width (:func:`analysis.mos.mos_table`).

    References
    ----------
    .. [1] C. J. Clopper, E. S. Pearson (1934), The use of confidence or fiducial limits illustrated in the
       case of the binomial, Biometrika 26(4), 404–413.
    .. [2] ITU-T P.910 (2023), comparison category rating (the 1–5 fold of its −3…+3 scale is this project's).
    """
    from analysis.mos import mos_table

    by = list(by)
    missing = [c for c in [first, second, rating, *by] if c not in data.columns]
    if missing:
        raise KeyError(f"columns not in data: {missing}")
    frame = data.dropna(subset=[first, second, rating])
    if frame.empty:
        return pd.DataFrame(columns=[*by, *PREFERENCE_COLUMNS])
    values = frame[rating].astype(int).to_numpy()
    first_names = frame[first].astype(str).to_numpy()
    second_names = frame[second].astype(str).to_numpy()
    a_is_first = first_names <= second_names
    work = frame[by].copy()
    work["condition_a"] = np.where(a_is_first, first_names, second_names)
    work["condition_b"] = np.where(a_is_first, second_names, first_names)
    first_wins, second_wins = values < tie_value, values > tie_value
    work["a_win"] = np.where(a_is_first, first_wins, second_wins)
    work["b_win"] = np.where(a_is_first, second_wins, first_wins)
    work["tie"] = values == tie_value
    # Folded so that 5 = condition_a much better whichever side it was on.
    work["score"] = np.where(a_is_first, 2 * tie_value - values, values)
    keys = [*by, "condition_a", "condition_b"]
    counts = work.groupby(keys, sort=True, observed=True).agg(
        n=("tie", "size"), a_wins=("a_win", "sum"), b_wins=("b_win", "sum"), ties=("tie", "sum")).reset_index()
    scores = mos_table(work, dv="score", by=keys, confidence=confidence).rename(
        columns={"mos": "mean_score", "sd": "score_sd", "ci_half_width": "score_ci_half_width"})
    table = counts.merge(scores[[*keys, "mean_score", "score_sd", "score_ci_half_width"]], on=keys, how="left")
    shares, lows, highs, p_values = [], [], [], []
    for a_wins, b_wins in zip(table["a_wins"], table["b_wins"]):
        decisive = int(a_wins + b_wins)
        if decisive == 0:
            shares.append(np.nan), lows.append(np.nan), highs.append(np.nan), p_values.append(np.nan)
            continue
        test = stats.binomtest(int(a_wins), decisive, 0.5)
        interval = test.proportion_ci(confidence_level=confidence, method="exact")
        shares.append(a_wins / decisive), lows.append(interval.low), highs.append(interval.high)
        p_values.append(test.pvalue)
    table["a_share"], table["ci_low"], table["ci_high"], table["p_value"] = shares, lows, highs, p_values
    for column in ("n", "a_wins", "b_wins", "ties"):
        table[column] = table[column].astype(int)
    return table[[*by, *PREFERENCE_COLUMNS]]


# --------------------------------------------------------------------------------------------------
# Ratings


def is_pairwise(study: Study) -> bool:
    return study.method == Study.METHOD_PAIRWISE


def _with_paired_condition(study: Study, frame: pd.DataFrame) -> pd.DataFrame:
    if not is_pairwise(study):
        return frame
    paired = dict(Assignment.objects.filter(pk__in=frame["assignment"].unique().tolist())
                  .values_list("pk", "paired_study_clip__clip__condition__name"))
    frame = frame.copy()
    frame["paired_condition"] = frame["assignment"].map(paired)
    return frame


def valid_ratings(study: Study) -> pd.DataFrame:
    """The ratings that count: test clips of participants matching ``Participant.counting()``.

    :func:`analysis.data.ratings_frame` with the inactive states and the "accepted, not used" and
    "rejected" reviews left out; pairwise studies get a ``paired_condition`` column (the B clip's).
    """
    from analysis.data import ratings_frame

    frame = ratings_frame(study, exclude_states=Participant.INACTIVE_STATES,
                          exclude_reviews=(Participant.REVIEW_ACCEPTED, Participant.REVIEW_REJECTED))
    return _with_paired_condition(study, frame)


def screening_ratings(study: Study) -> pd.DataFrame:
    """Every test rating of participants not screened out, whatever their review: the pool the flags are
    computed on (a reviewed participant keeps their flags)."""
    from analysis.data import ratings_frame

    frame = ratings_frame(study, exclude_states=(Participant.SCREENED_OUT,), exclude_reviews=())
    return _with_paired_condition(study, frame)


def scale_keys(study: Study) -> list[str]:
    return list(study.scales.order_by("position", "key").values_list("key", flat=True))


def live_mos(study: Study, ratings: pd.DataFrame | None = None) -> pd.DataFrame:
    """MOS ± CI per condition and scale of the valid ratings (:func:`analysis.mos.mos_table`)."""
    from analysis.mos import mos_table

    ratings = valid_ratings(study) if ratings is None else ratings
    return mos_table(ratings, dv="rating", by=("condition", "scale"), confidence=CONFIDENCE)


def live_preferences(study: Study, ratings: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`preference_table` of a pairwise study's valid answers, per scale."""
    ratings = valid_ratings(study) if ratings is None else ratings
    if "paired_condition" not in ratings.columns:
        ratings = ratings.assign(paired_condition=pd.Series(dtype=object))
    return preference_table(ratings, by=("scale",))


# --------------------------------------------------------------------------------------------------
# Coverage


@dataclass(frozen=True)
class UnitInfo:
    condition: str
    paired_condition: str | None
    source: str
    content: str
    role: str

    @property
    def label(self) -> str:
        return self.condition if self.paired_condition is None else f"{self.condition} vs {self.paired_condition}"

    @property
    def condition_unit(self) -> str:
        """The precision unit: the condition, or the condition pair with names sorted."""
        if self.paired_condition is None:
            return self.condition
        return " vs ".join(sorted([self.condition, self.paired_condition]))


def _clip_info(study: Study) -> dict[int, tuple[str, str, str, str]]:
    rows = StudyClip.objects.filter(study=study).values_list(
        "pk", "clip__condition__name", "clip__source__name", "clip__audio__content_id", "role")
    return {pk: (condition, source, content, role) for pk, condition, source, content, role in rows}


def coverage(study: Study) -> dict:
    """Coverage per unit (``assignment.coverage_rows``; a pairwise unit is a pair) with condition names.

    Returns
    -------
    dict
        ``rows`` (one dict per unit: ``study_clip_id``, ``paired_study_clip_id``, ``unit``, ``condition_unit``,
        ``source``, ``content``, ``role``, ``completed``, ``in_progress``, ``target``, ``missing``),
        ``histogram`` (:func:`coverage_histogram` of the test units), and ``summary`` (test units, full units,
        ratings missing, in progress, and the participants needed to fill the per-clip target).
    """
    from studyapp.assignment import coverage_rows

    info = _clip_info(study)
    rows = []
    for unit in coverage_rows(study):
        condition, source, content, role = info.get(unit.study_clip_id, ("?", "", "", unit.role))
        paired = info[unit.paired_study_clip_id][0] if unit.paired_study_clip_id in info else None
        described = UnitInfo(condition, paired, source, content, unit.role)
        rows.append({"study_clip_id": unit.study_clip_id, "paired_study_clip_id": unit.paired_study_clip_id,
                     "unit": described.label, "condition_unit": described.condition_unit, "source": source,
                     "content": content, "role": unit.role, "completed": unit.completed,
                     "in_progress": unit.in_progress, "target": unit.target, "missing": unit.missing})
    test_rows = [r for r in rows if r["role"] == StudyClip.ROLE_TEST]
    missing = sum(r["missing"] for r in test_rows)
    in_progress = sum(r["in_progress"] for r in test_rows)
    still_needed = sum(max(r["missing"] - r["in_progress"], 0) for r in test_rows)
    summary = {
        "units": len(test_rows), "full": sum(r["missing"] == 0 for r in test_rows), "missing": missing,
        "in_progress": in_progress, "still_needed": still_needed,
        "participants_needed": math.ceil(still_needed / study.clips_per_participant) if still_needed else 0,
    }
    return {"rows": rows, "histogram": coverage_histogram([r["completed"] for r in test_rows], study.ratings_per_clip),
            "summary": summary}


# --------------------------------------------------------------------------------------------------
# Precision, top-up and closing


def precision_table(study: Study, *, ratings: pd.DataFrame | None = None,
                    units: list[dict] | None = None) -> pd.DataFrame:
    """Per condition (pairwise: condition pair) × scale: the CI half-width now, against the target, and
    how many more ratings and participants would bring it under the target.

    Columns :data:`PRECISION_COLUMNS`: ``estimate`` is the MOS (pairwise: the mean oriented answer),
    ``ratings_needed`` the total ratings :func:`ratings_for_half_width` asks for at the current SD,
    ``more_ratings`` the difference, ``in_progress`` the unit's assignments still being rated,
    ``more_participants`` = ⌈(more_ratings − in_progress)/ratings_per_participant⌉. Without a target the
    target columns are NaN/NA. Every unit with test clips appears, with n = 0 when nothing is rated yet.
    """
    ratings = valid_ratings(study) if ratings is None else ratings
    units = coverage(study)["rows"] if units is None else units
    test_units = [u for u in units if u["role"] == StudyClip.ROLE_TEST]
    target = study.target_ci_half_width
    scales = scale_keys(study)
    if is_pairwise(study):
        table = live_preferences(study, ratings)
        table = table.assign(unit=table["condition_a"] + " vs " + table["condition_b"]).rename(
            columns={"mean_score": "estimate", "score_sd": "sd", "score_ci_half_width": "ci_half_width"})
    else:
        table = live_mos(study, ratings).rename(columns={"condition": "unit", "mos": "estimate"})
    stats_by_key = {(r["unit"], r["scale"]): r for r in table.to_dict("records")}
    unit_count = Counter(u["condition_unit"] for u in test_units)
    in_progress = defaultdict(int)
    for u in test_units:
        in_progress[u["condition_unit"]] += u["in_progress"]
    total_units = sum(unit_count.values())
    # Conditions rated without being units of their own (ACR-HR's hidden reference comes with its item's
    # units): what a participant has brought so far is the best guess of what the next one brings.
    n_participants = int(ratings["participant"].nunique()) if len(ratings) else 0
    companions = {unit for unit, _ in stats_by_key} - set(unit_count)
    rows = []
    for unit in sorted(set(unit_count) | companions):
        if unit in unit_count:
            per_participant = study.clips_per_participant * unit_count[unit] / total_units
        else:
            rated = int(ratings.loc[ratings["condition"] == unit, "assignment"].nunique())
            per_participant = rated / n_participants if n_participants else 0.0
        for scale in scales:
            found = stats_by_key.get((unit, scale), {})
            n = int(found.get("n", 0) or 0)
            sd = float(found.get("sd", np.nan)) if found else np.nan
            half_width = float(found.get("ci_half_width", np.nan)) if found else np.nan
            row = {"unit": unit, "scale": scale, "n": n, "estimate": float(found["estimate"]) if found else np.nan,
                   "sd": sd, "ci_half_width": half_width, "target": target, "met": False, "ratings_needed": None,
                   "more_ratings": None, "in_progress": in_progress[unit],
                   "ratings_per_participant": per_participant, "more_participants": None}
            if target is not None:
                row["met"] = bool(n >= 2 and np.isfinite(half_width) and half_width < target)
                needed = ratings_for_half_width(sd, target) if n >= 2 else None
                if needed is not None:
                    more = max(needed - n, 0)
                    row.update(ratings_needed=needed, more_ratings=more, more_participants=math.ceil(
                        max(more - in_progress[unit], 0) / per_participant) if per_participant else None)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=PRECISION_COLUMNS)
    for column in ("ratings_needed", "more_ratings", "more_participants"):
        frame[column] = frame[column].astype("Int64")
    return frame


def close_readiness(study: Study, *, precision: pd.DataFrame | None = None) -> tuple[bool, list[str]]:
    """Whether every condition's CI half-width is under ``study.target_ci_half_width`` on every scale,
    and why not (one line per condition × scale short of it)."""
    target = study.target_ci_half_width
    if target is None:
        return False, ["no target CI half-width is set for this study (Monitoring section)"]
    precision = precision_table(study) if precision is None else precision
    if precision.empty:
        return False, ["no test clips to rate"]
    reasons = []
    for row in precision.itertuples(index=False):
        if row.met:
            continue
        if row.n < 2:
            reasons.append(f"{row.unit} / {row.scale}: {row.n} valid rating(s), an interval needs 2")
        else:
            reasons.append(f"{row.unit} / {row.scale}: ± {row.ci_half_width:.3f} (n = {row.n}) is not under "
                           f"{target:g}")
    return not reasons, reasons


def ready_to_close(study: Study) -> bool:
    """Every condition's 95 % CI half-width is under the study's target, on every scale."""
    return close_readiness(study)[0]


def top_up(study: Study) -> dict:
    """What is still missing: units short of ``ratings_per_clip`` and, per condition × scale, the CI
    half-width against the target with the ratings and participants still needed."""
    cover = coverage(study)
    precision = precision_table(study, units=cover["rows"])
    ready, reasons = close_readiness(study, precision=precision)
    missing_units = sorted((r for r in cover["rows"] if r["role"] == StudyClip.ROLE_TEST and r["missing"] > 0),
                           key=lambda r: (-r["missing"], r["unit"], r["source"]))
    more = precision["more_participants"].dropna()
    return {"missing_units": missing_units, "coverage": cover["summary"], "precision": _records(precision),
            "participants_for_target": int(more.max()) if len(more) else None, "ready": ready, "reasons": reasons}


# --------------------------------------------------------------------------------------------------
# Rating times and gold checks


def _answer_times(ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per rated assignment: participant, response_time_ms (the page sends one per answer)."""
    if ratings.empty:
        return pd.DataFrame(columns=["participant", "assignment", "response_time_ms"])
    return ratings.drop_duplicates("assignment")[["participant", "assignment", "response_time_ms"]]


def _first_choice_times(study: Study) -> pd.DataFrame:
    rows = (Assignment.objects.filter(participant__study=study, role=StudyClip.ROLE_TEST, completed_at__isnull=False)
            .exclude(participant__state=Participant.SCREENED_OUT)
            .values_list("participant_id", "pk", "first_choice_ms"))
    return pd.DataFrame.from_records(list(rows), columns=["participant", "assignment", "first_choice_ms"])


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def rating_times(study: Study, ratings: pd.DataFrame | None = None) -> dict:
    """Answer-time distributions of the test clips (participants not screened out).

    Returns ``per_scale`` (scale, :func:`time_summary` of response_time_ms), ``first_choice`` (summary of
    Assignment.first_choice_ms), ``per_participant`` (participant, answers, median / p10 / p90 response time,
    median first choice), ``histogram`` and ``first_choice_histogram`` (:func:`time_histogram`).
    """
    ratings = screening_ratings(study) if ratings is None else ratings
    per_scale = [{"scale": scale, **time_summary(ratings.loc[ratings["scale"] == scale, "response_time_ms"])}
                 for scale in scale_keys(study)]
    answers = _answer_times(ratings)
    first = _first_choice_times(study)
    responses = {k: v.to_numpy() for k, v in answers.groupby("participant")["response_time_ms"]}
    choices = {k: v.to_numpy() for k, v in first.groupby("participant")["first_choice_ms"]}
    per_participant = []
    for participant in sorted(set(responses) | set(choices)):
        response = time_summary(responses.get(participant, ()))
        choice = time_summary(choices.get(participant, ()))
        per_participant.append({"participant": int(participant), "answers": response["n"],
                                "median": _finite(response["median"]), "p10": _finite(response["p10"]),
                                "p90": _finite(response["p90"]), "first_choice_median": _finite(choice["median"])})
    return {"per_scale": per_scale, "first_choice": time_summary(first["first_choice_ms"]),
            "per_participant": per_participant, "histogram": time_histogram(answers["response_time_ms"]),
            "first_choice_histogram": time_histogram(first["first_choice_ms"])}


def gold_pass_rates(study: Study) -> dict:
    """Gold (and practice) checks from ``Assignment.passed_check``: ``per_clip`` (each gold clip: condition,
    source, checked, passed, rate) and ``per_participant`` (gold and practice checked / passed)."""
    checked = Assignment.objects.filter(participant__study=study, passed_check__isnull=False)
    per_clip = []
    gold = (checked.filter(role=StudyClip.ROLE_GOLD).values("study_clip_id", "study_clip__clip__condition__name",
                                                             "study_clip__clip__source__name")
            .annotate(checked=Count("id"), passed=Count("id", filter=Q(passed_check=True)))
            .order_by("study_clip_id"))
    for row in gold:
        per_clip.append({"study_clip_id": row["study_clip_id"], "condition": row["study_clip__clip__condition__name"],
                         "source": row["study_clip__clip__source__name"], "checked": row["checked"],
                         "passed": row["passed"], "rate": row["passed"] / row["checked"]})
    per_participant: dict[int, dict] = {}
    rows = checked.filter(role__in=(StudyClip.ROLE_GOLD, StudyClip.ROLE_PRACTICE)).values(
        "participant_id", "role").annotate(checked=Count("id"), passed=Count("id", filter=Q(passed_check=True)))
    for row in rows:
        entry = per_participant.setdefault(row["participant_id"], {
            "participant": row["participant_id"], "gold_checked": 0, "gold_passed": 0, "practice_checked": 0,
            "practice_passed": 0})
        entry[f"{row['role']}_checked"] = row["checked"]
        entry[f"{row['role']}_passed"] = row["passed"]
    for entry in per_participant.values():
        entry["gold_rate"] = entry["gold_passed"] / entry["gold_checked"] if entry["gold_checked"] else None
    return {"per_clip": per_clip, "per_participant": [per_participant[k] for k in sorted(per_participant)]}


# --------------------------------------------------------------------------------------------------
# Flagged participants


@dataclass
class ParticipantFlags:
    """Why a participant deserves a look: ``kinds`` (machine-readable) and ``reasons`` (for the page)."""

    participant_id: int
    external_id: str
    state: str
    review: str
    review_note: str
    screened_out_reason: str
    kinds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def state_label(self) -> str:
        return dict(Participant.STATE_CHOICES).get(self.state, self.state)

    @property
    def review_label(self) -> str:
        return dict(Participant.REVIEW_CHOICES).get(self.review, self.review)

    def add(self, kind: str, reason: str) -> None:
        if kind not in self.kinds:
            self.kinds.append(kind)
        self.reasons.append(reason)


def _event_counts(study: Study) -> tuple[Counter, Counter]:
    events = PlaybackEvent.objects.filter(assignment__participant__study=study)
    hidden = Counter(dict(events.filter(kind=PlaybackEvent.VISIBILITY, detail="hidden")
                          .values_list("assignment__participant_id").annotate(n=Count("id"))))
    exits = Counter(dict(events.filter(kind=PlaybackEvent.FULLSCREEN, detail__in=FULLSCREEN_EXIT_DETAILS)
                         .values_list("assignment__participant_id").annotate(n=Count("id"))))
    return hidden, exits


def participant_flags(
    study: Study,
    *,
    ratings: pd.DataFrame | None = None,
    fast_median_ms: float = FAST_MEDIAN_RESPONSE_MS,
    min_timed_answers: int = MIN_TIMED_ANSWERS,
    tab_hidden_flag_at: int = TAB_HIDDEN_FLAG_AT,
    fullscreen_exits_flag_at: int = FULLSCREEN_EXITS_FLAG_AT,
    straight_lining_min_clips: int = STRAIGHT_LINING_MIN_CLIPS,
    screening_rules: Sequence[str] = SCREENING_RULES,
) -> list[ParticipantFlags]:
    """Participants with at least one reason to review them, in id order.

    Kinds: ``screened_out`` (the flow screened them out, with its reason), ``gold`` (a failed gold clip),
    ``practice`` (a practice answer outside its range), ``straight_lining`` (the same answer to every clip of a
    scale, at least ``straight_lining_min_clips``), ``fast`` (median answer time under ``fast_median_ms`` over at
    least ``min_timed_answers`` answers), ``tab_hidden`` and ``fullscreen_exits`` (that many events or more), and
    each rejecting rule of :func:`analysis.screening.screen_participants` (``bt500``, ``p913_correlation``,
    ``z_score``; not for pairwise studies) with the rule's own reason.
    """
    from analysis.screening import screen_participants, straight_lining_screening

    ratings = screening_ratings(study) if ratings is None else ratings
    people = {p.pk: p for p in Participant.objects.filter(study=study)}
    flags: dict[int, ParticipantFlags] = {}

    def flag(pk: int, kind: str, reason: str) -> None:
        p = people[int(pk)]
        entry = flags.setdefault(p.pk, ParticipantFlags(p.pk, p.external_id, p.state, p.review, p.review_note,
                                                        p.screened_out_reason))
        entry.add(kind, reason)

    for p in people.values():
        if p.state == Participant.SCREENED_OUT:
            flag(p.pk, "screened_out", f"screened out: {p.screened_out_reason or 'no reason stored'}")
    for row in gold_pass_rates(study)["per_participant"]:
        if row["gold_passed"] < row["gold_checked"]:
            flag(row["participant"], "gold",
                 f"failed {row['gold_checked'] - row['gold_passed']} of {row['gold_checked']} gold clips")
        if row["practice_passed"] < row["practice_checked"]:
            flag(row["participant"], "practice", f"missed {row['practice_checked'] - row['practice_passed']} of "
                                                 f"{row['practice_checked']} practice clips")
    if not ratings.empty:
        # Strictly the same answer to every clip: no SD or modal-share threshold.
        lines = straight_lining_screening(ratings, min_ratings=straight_lining_min_clips, min_sd=0.0,
                                          max_modal_share=1.0)
        for row in lines[lines["rejected"]].itertuples(index=False):
            flag(row.participant, "straight_lining", f"{row.scale}: {row.reason}")
        if not is_pairwise(study) and screening_rules:
            decisions = screen_participants(ratings, rules=list(screening_rules))
            for row in decisions[decisions["rejected"]].itertuples(index=False):
                flag(row.participant, row.rule, f"{row.scale}: {row.reason}")
    for row in rating_times(study, ratings)["per_participant"]:
        if row["answers"] >= min_timed_answers and row["median"] is not None and row["median"] < fast_median_ms:
            flag(row["participant"], "fast", f"median answer time {row['median'] / 1000:.2f} s over {row['answers']} "
                                             f"clips is under {fast_median_ms / 1000:g} s")
    hidden, exits = _event_counts(study)
    for pk, n in sorted(hidden.items()):
        if n >= tab_hidden_flag_at:
            flag(pk, "tab_hidden", f"left the tab {n} times during trials")
    for pk, n in sorted(exits.items()):
        if n >= fullscreen_exits_flag_at:
            flag(pk, "fullscreen_exits", f"left fullscreen {n} times during trials")
    return [flags[pk] for pk in sorted(flags)]


# --------------------------------------------------------------------------------------------------
# Review


def set_review(participants, review: str, *, note: str = "", now=None) -> int:
    """Record the researcher's review (accepted / used / rejected) of ``participants`` (a queryset or ids).

    ``note`` replaces the review note when given. "Accepted, not used" and "rejected" participants stop
    counting: their ratings leave the analysis and their clips are handed out again.
    """
    if review not in REVIEW_DECISIONS:
        raise ValueError(f"review must be one of {REVIEW_DECISIONS}, got {review!r}")
    if hasattr(participants, "update"):
        queryset = participants
    else:
        queryset = Participant.objects.filter(pk__in=list(participants))
    changes = {"review": review, "reviewed_at": now or timezone.now()}
    if note:
        changes["review_note"] = note[:300]
    return queryset.update(**changes)


# --------------------------------------------------------------------------------------------------
# The whole page


def _records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as dicts for templates, NaN/NA as None."""
    return [{k: (None if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))) else v)
             for k, v in row.items()} for row in frame.to_dict("records")]


def mos_rows(table: pd.DataFrame, scales: list[str]) -> list[dict]:
    """The MOS table pivoted for display: one row per condition, one cell (or None) per scale."""
    rows = []
    for condition, group in table.groupby("condition", sort=True):
        by_scale = {r["scale"]: r for r in _records(group)}
        rows.append({"condition": condition, "cells": [by_scale.get(key) for key in scales]})
    return rows


def study_monitor(study: Study) -> dict:
    """Everything the monitor page shows, computed once."""
    valid = valid_ratings(study)
    pool = screening_ratings(study)
    scales = scale_keys(study)
    cover = coverage(study)
    precision = precision_table(study, ratings=valid, units=cover["rows"])
    ready, reasons = close_readiness(study, precision=precision)
    states = dict(Participant.objects.filter(study=study).values_list("state").annotate(n=Count("id")))
    reviews = dict(Participant.objects.filter(study=study).values_list("review").annotate(n=Count("id")))
    result = {
        "scales": scales, "pairwise": is_pairwise(study), "coverage": cover, "precision": _records(precision),
        "ready": ready, "close_reasons": reasons, "n_valid_ratings": len(valid),
        "n_valid_participants": int(valid["participant"].nunique()) if len(valid) else 0,
        "states": [{"state": label, "n": states.get(key, 0)} for key, label in Participant.STATE_CHOICES],
        "reviews": [{"review": label, "n": reviews.get(key, 0)} for key, label in Participant.REVIEW_CHOICES],
        "times": rating_times(study, pool), "gold": gold_pass_rates(study),
        "flags": participant_flags(study, ratings=pool),
    }
    if result["pairwise"]:
        result["preferences"] = _records(live_preferences(study, valid))
    else:
        result["mos_rows"] = mos_rows(live_mos(study, valid), scales)
    return result
