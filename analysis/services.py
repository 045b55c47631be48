"""The Django side of the analysis reports: load a study, build and render its report, store and serve it.

* :func:`build_study_report` — the study's ratings (test clips, screened-out participants excluded) and clip
  metrics through :func:`analysis.report.build_report` and :func:`analysis.plots.render_figures`, with the
  study's scale order, blind labels stable per study (conditions in primary-key order) and the metric
  catalogue's labels and directions;
* :func:`render_report_html` / :func:`write_report` — the self-contained HTML and the zip of every table;
* :func:`request_report`, :func:`claim_report`, :func:`produce_report`, :func:`fail_report` — the
  :class:`analysis.models.StudyReport` life cycle behind the admin action and the Celery task (files under
  MEDIA_ROOT/reports/, written atomically to deterministic paths);
* :func:`study_planning` — the admin's planning page: :func:`analysis.planning.plan_from_pilot` on the current
  ratings of every scale.

Everything here is researcher-side (admin, staff only): reports may name conditions.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from analysis import exports
from analysis.data import ratings_frame, study_clip_metrics
from analysis.models import StudyReport
from analysis.report import Report, ReportOptions, build_report, observed_design

log = logging.getLogger(__name__)

REPORT_FILES = {"html": "report.html", "zip": "report-tables.zip"}


# --------------------------------------------------------------------------------------------------
# Building


def condition_order(study) -> list[str]:
    """The study's conditions (any clip role) by primary key: the order of the blind labels C1, C2, …"""
    from generation.models import Condition

    return list(Condition.objects.filter(clips__study_clips__study=study).distinct().order_by("pk")
                .values_list("name", flat=True))


def metric_catalogue() -> tuple[dict, dict]:
    """(labels, higher_is_better) of every metric in ``generation.metrics.catalog``."""
    from generation.metrics import catalog

    definitions = catalog.all_metrics()
    return ({m.name: m.label for m in definitions}, {m.name: m.higher_is_better for m in definitions})


def report_options(study, *, reveal_conditions: bool = False, exclude_rejected: bool = True,
                   **overrides) -> ReportOptions:
    labels, directions = metric_catalogue()
    fields = dict(
        title=f"{study.title} — analysis report", scales=list(study.scales.values_list("key", flat=True)) or None,
        condition_order=condition_order(study), reveal_conditions=reveal_conditions,
        exclude_rejected=exclude_rejected, metric_labels=labels, higher_is_better=directions,
    )
    fields.update(overrides)
    return ReportOptions(**fields)


def build_study_report(study, *, reveal_conditions: bool = False, exclude_rejected: bool = True, fmt: str = "png",
                       **overrides) -> Report:
    """Load ``study``'s ratings and clip metrics, compute every table and draw every figure."""
    options = report_options(study, reveal_conditions=reveal_conditions, exclude_rejected=exclude_rejected,
                             **overrides)
    ratings = ratings_frame(study)
    metrics = study_clip_metrics(study)
    report = build_report(ratings, metrics if metrics.shape[1] > 1 else None, options=options)
    from analysis import plots  # matplotlib: loaded by the worker that draws, not by every web process

    plots.render_figures(report, fmt=fmt)
    return report


def render_report_html(report: Report, *, study=None) -> str:
    """The self-contained HTML page (inline CSS, figures as data URIs, no scripts, no links)."""
    line = f"Study “{study.title}” (id {study.pk})" if study is not None else ""
    with report.step("render html"):
        return render_to_string("analysis/report.html", exports.html_context(report, study_line=line))


def write_report(report: Report, folder: Path | str, *, study=None) -> dict[str, Path]:
    """Write ``report.html`` and ``report-tables.zip`` (which also holds the HTML) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    html = render_report_html(report, study=study)
    with report.step("zip tables, ratings and SUREAL files"):
        archive = exports.report_zip(report, html=html)
    paths = {"html": folder / REPORT_FILES["html"], "zip": folder / REPORT_FILES["zip"]}
    _atomic_write(paths["html"], html.encode("utf-8"))
    _atomic_write(paths["zip"], archive)
    return paths


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# Stored reports (admin action and Celery task)


def request_report(study, *, user=None, reveal_conditions: bool = False, exclude_rejected: bool = True,
                   options: dict | None = None) -> StudyReport:
    """Make a pending report row and queue its build on commit (queue "cpu")."""
    report = StudyReport.objects.create(study=study, requested_by=user if getattr(user, "pk", None) else None,
                                        reveal_conditions=reveal_conditions, exclude_rejected=exclude_rejected,
                                        options=options or {})
    transaction.on_commit(lambda: enqueue(report.pk))
    return report


def enqueue(report_id: int) -> None:
    from analysis.tasks import build_study_report as task

    task.apply_async((report_id,), queue="cpu")


def claim_report(report_id: int) -> StudyReport | None:
    """Take a pending report (or one whose worker's lease ran out) for this worker; None if gone or busy."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.SYNCMOS_JOB_LEASE_SECONDS)
    won = StudyReport.objects.filter(
        Q(status=StudyReport.PENDING) | Q(status=StudyReport.RUNNING, claimed_until__lt=now), pk=report_id,
    ).update(status=StudyReport.RUNNING, claimed_until=lease, started_at=now, attempts=F("attempts") + 1, error="")
    return StudyReport.objects.select_related("study").get(pk=report_id) if won else None


def release_report(report_id: int) -> None:
    """Hand a claimed report back (a transient error: the retry claims it again)."""
    StudyReport.objects.filter(pk=report_id, status=StudyReport.RUNNING).update(status=StudyReport.PENDING,
                                                                                 claimed_until=None)


def produce_report(stored: StudyReport, *, worker: str = "") -> StudyReport:
    """Build, render and store the files of a claimed report, then mark it done."""
    study = stored.study
    report = build_study_report(study, reveal_conditions=stored.reveal_conditions,
                                exclude_rejected=stored.exclude_rejected, **(stored.options or {}))
    folder = Path(settings.MEDIA_ROOT) / stored.folder
    paths = write_report(report, folder, study=study)
    files = {kind: str(path.relative_to(settings.MEDIA_ROOT)) for kind, path in paths.items()}
    summary = {"highlights": report.highlights, "n_ratings": len(report.analysed),
               "seconds": float(sum(row["seconds"] for row in report.timings)),
               "sections": {s.key: s.status for s in report.sections.values()}}
    StudyReport.objects.filter(pk=stored.pk, status=StudyReport.RUNNING).update(
        status=StudyReport.DONE, files=files, summary=summary, finished_at=timezone.now(), claimed_until=None,
        worker=worker[:200], error="")
    stored.refresh_from_db()
    return stored


def fail_report(report_id: int, error: str) -> None:
    StudyReport.objects.filter(pk=report_id).update(status=StudyReport.FAILED, error=error[:5000],
                                                     finished_at=timezone.now(), claimed_until=None)


def latest_report(study, *, done: bool = False) -> StudyReport | None:
    reports = StudyReport.objects.filter(study=study)
    if done:
        reports = reports.filter(status=StudyReport.DONE)
    return reports.order_by("-created_at", "-id").first()


def report_file(stored: StudyReport, kind: str) -> Path | None:
    """The stored file of a done report (None when missing); only paths inside MEDIA_ROOT/reports."""
    relative = (stored.files or {}).get(kind)
    if stored.status != StudyReport.DONE or not relative:
        return None
    root = (Path(settings.MEDIA_ROOT) / "reports").resolve()
    path = (Path(settings.MEDIA_ROOT) / relative).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


# --------------------------------------------------------------------------------------------------
# Planning (admin page)

PLANNING_DEFAULTS = {"half_width": 0.2, "difference": 0.3, "alpha": 0.05, "power": 0.8}


def study_planning(study, *, half_width: float = 0.2, difference: float = 0.3, alpha: float = 0.05,
                   power: float = 0.8, n_clips: int | None = None, clips_per_participant: int | None = None,
                   confidence: float = 0.95) -> dict:
    """Per scale, :func:`analysis.planning.plan_from_pilot` on the study's current ratings, for a target CI
    half-width and for a detectable difference, with this study's design as the default.

    Returns
    -------
    dict
        ``rows`` (one dict per scale: design, components, both plans, and what the current design achieves),
        ``notes`` (why a scale has no plan), ``figure`` (:func:`analysis.plots.planning_figure`, or None).
    """
    from analysis.planning import (
        VarianceComponents,
        ci_half_width,
        minimum_detectable_difference,
        plan_from_pilot,
        plan_sample_size,
    )

    ratings = ratings_frame(study)
    scales = list(study.scales.values_list("key", flat=True)) or list(pd.unique(ratings["scale"]))
    rows, notes, components, designs = [], [], [], []
    for scale in scales:
        part = ratings[ratings["scale"] == scale]
        if part["participant"].nunique() < 2 or part["clip"].nunique() < 2:
            notes.append(f"{scale}: too few ratings for a pilot (at least 2 participants and 2 clips).")
            continue
        design = observed_design(part)
        clips = n_clips or design["n_clips"]
        per_participant = clips_per_participant or design["clips_per_participant"]
        per_participant = None if per_participant >= clips else per_participant
        try:
            plan_width = plan_from_pilot(part, n_clips=clips, target_half_width=half_width,
                                         clips_per_participant=per_participant, confidence=confidence)
            values = plan_width.iloc[0]
            pilot = VarianceComponents(values["sigma2_participant"], values["sigma2_clip"], values["sigma2_residual"])
            plan_difference = plan_sample_size(pilot, n_clips=clips, difference=difference, alpha=alpha, power=power,
                                               clips_per_participant=per_participant)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            notes.append(f"{scale}: no plan ({exc}).")
            continue
        current_m = min(design["ratings_per_clip"], design["n_participants"])
        current = {
            "half_width": ci_half_width(pilot, n_participants=design["n_participants"], n_clips=design["n_clips"],
                                        ratings_per_clip=current_m, confidence=confidence),
            "difference": minimum_detectable_difference(pilot, n_participants=design["n_participants"],
                                                        n_clips=design["n_clips"], ratings_per_clip=current_m,
                                                        alpha=alpha, power=power),
        }
        rows.append({"scale": scale, "design": design, "components": pilot, "n_clips": clips,
                     "clips_per_participant": per_participant, "current": current,
                     "plans": [plan_width.iloc[0].to_dict(), plan_difference.iloc[0].to_dict()]})
        components.append({"scale": scale, "sigma2_participant": pilot.participant, "sigma2_clip": pilot.clip,
                           "sigma2_residual": pilot.residual})
        designs.append({"scale": scale, "n_participants": design["n_participants"], "n_clips": clips,
                        "ratings_per_clip": current_m,
                        "clips_per_participant": per_participant or clips,
                        "ci_half_width": ci_half_width(pilot, n_participants=design["n_participants"], n_clips=clips,
                                                       ratings_per_clip=current_m, confidence=confidence),
                        "minimum_detectable_difference": minimum_detectable_difference(
                            pilot, n_participants=design["n_participants"], n_clips=clips,
                            ratings_per_clip=current_m, alpha=alpha, power=power)})
    figure = None
    if components:
        options = ReportOptions(target_half_width=half_width, target_difference=difference, alpha=alpha, power=power,
                                confidence=confidence)
        from analysis import plots

        figure = plots.planning_figure(pd.DataFrame(components), pd.DataFrame(designs), options=options)
    return {"rows": rows, "notes": notes, "figure": figure, "n_ratings": len(ratings)}
