"""The researcher's admin: designing studies, monitoring them while they run, reviewing participants.

Everything here is staff-only and may name conditions (blind labels are for reports, not for the
researcher's own pages).
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Count, Q
from django.forms.models import BaseInlineFormSet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from analysis import services as analysis_services
from analysis.models import StudyReport
from generation import metric_services
from generation.media import MediaError
from studyapp import exports, monitoring
from studyapp.models import (
    Assignment,
    ExpectedAnswer,
    Participant,
    PlaybackEvent,
    Rating,
    Scale,
    Study,
    StudyClip,
)

# The monitor page may reload itself every this many seconds (?refresh=N).
REFRESH_LIMITS_S = (10, 600)


class ScaleInline(admin.TabularInline):
    model = Scale
    extra = 0
    fields = ["position", "key", "question", "labels"]


class StudyClipInline(admin.TabularInline):
    model = StudyClip
    extra = 0
    raw_id_fields = ["clip"]
    fields = ["clip", "role", "condition_name", "source_name", "expected_answers_link"]
    readonly_fields = ["condition_name", "source_name", "expected_answers_link"]

    @admin.display(description="condition")
    def condition_name(self, obj: StudyClip) -> str:
        return str(obj.clip.condition) if obj.clip_id else ""

    @admin.display(description="source")
    def source_name(self, obj: StudyClip) -> str:
        return str(obj.clip.source) if obj.clip_id else ""

    @admin.display(description="expected answers")
    def expected_answers_link(self, obj: StudyClip) -> str:
        if not obj.pk or obj.role == StudyClip.ROLE_TEST:
            return "–"
        return format_html('<a href="{}">{} set — edit</a>',
                           reverse("admin:studyapp_studyclip_change", args=[obj.pk]), obj.expected_answers.count())


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "method", "clip_count", "completed_count", "monitor_link", "participant_link",
                    "created_at"]
    list_filter = ["status", "method"]
    search_fields = ["title"]
    readonly_fields = ["public_id", "participant_link", "monitor_link", "results_links", "analysis_report",
                       "created_at"]
    fieldsets = [
        (None, {"fields": ["title", "status", "participant_link", "monitor_link", "results_links", "analysis_report"]}),
        ("Participant texts", {"fields": ["consent_text", "instructions"]}),
        ("Design and method", {
            "fields": ["method", "clips_per_participant", "ratings_per_clip", "session_timeout_minutes", "seed"],
            "description": "ACR rates one clip; ACR-HR also hides the reference among the clips (DMOS in the "
                           "analysis); DCR shows each clip after its reference; pairwise compares two conditions "
                           "on the same audio. A pairwise study's units are pairs of clips.",
        }),
        ("Assignment rules", {"fields": [
            "content_key", "content_limit", "no_condition_twice_in_a_row", "gold_per_participant",
            "gold_failures_allowed", "auto_close"]}),
        ("Environment check", {"fields": [
            "allow_phones", "min_viewport_width", "min_viewport_height", "min_face_px", "face_height_share",
            "audio_check", "request_fullscreen"]}),
        ("Prolific and completion", {
            "fields": ["completion_url", "completion_code", "screened_out_code"],
            "description": "Prolific: the study URL is the participant link followed by "
                           "?PROLIFIC_PID={{%PROLIFIC_PID%}}&amp;STUDY_ID={{%STUDY_ID%}}"
                           "&amp;SESSION_ID={{%SESSION_ID%}}; "
                           "the completion URL is https://app.prolific.com/submissions/complete and the two codes "
                           "are the ones set up in Prolific (see docs/studies.md).",
        }),
        ("Monitoring", {"fields": ["target_ci_half_width"]}),
        ("Record", {"fields": ["public_id", "created_at"], "classes": ["collapse"]}),
    ]
    inlines = [ScaleInline, StudyClipInline]
    actions = ["open_studies", "close_studies", "compute_metrics", "build_analysis_report"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _clips=Count("study_clips", distinct=True),
            _completed=Count("participants", filter=Q(participants__state=Participant.COMPLETED), distinct=True),
        )

    @admin.display(description="clips", ordering="_clips")
    def clip_count(self, obj: Study) -> int:
        return obj._clips

    @admin.display(description="completed", ordering="_completed")
    def completed_count(self, obj: Study) -> int:
        return obj._completed

    @admin.display(description="monitor")
    def monitor_link(self, obj: Study) -> str:
        if not obj.pk:
            return "–"
        return format_html('<a href="{}">monitor</a> · <a href="{}">top-up</a>',
                           reverse("admin:studyapp_study_monitor", args=[obj.pk]),
                           reverse("admin:studyapp_study_top_up", args=[obj.pk]))

    @admin.display(description="participant link")
    def participant_link(self, obj: Study) -> str:
        if not obj.pk:
            return "–"
        url = reverse("participant:study-entry", args=[obj.public_id])
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    @admin.display(description="results")
    def results_links(self, obj: Study) -> str:
        if not obj.pk:
            return "–"
        return format_html(
            '<a href="{}">MOS table</a> · <a href="{}">MOS CSV</a> · <a href="{}">raw ratings CSV</a> · '
            '<a href="{}">objective metrics</a> · <a href="{}">analysis reports</a> · <a href="{}">planning</a>',
            reverse("admin:studyapp_study_mos", args=[obj.pk]),
            reverse("admin:studyapp_study_mos_csv", args=[obj.pk]),
            reverse("admin:studyapp_study_ratings_csv", args=[obj.pk]),
            reverse("admin:studyapp_study_metrics", args=[obj.pk]),
            reverse("admin:studyapp_study_reports", args=[obj.pk]),
            reverse("admin:studyapp_study_planning", args=[obj.pk]),
        )

    @admin.display(description="analysis report")
    def analysis_report(self, obj: Study) -> str:
        if not obj.pk:
            return "–"
        done = analysis_services.latest_report(obj, done=True)
        latest = analysis_services.latest_report(obj)
        parts = []
        if done is not None:
            parts.append(format_html(
                'latest: <a href="{}" target="_blank" rel="noopener">report {} ({})</a> · '
                '<a href="{}">tables (zip)</a>',
                reverse("admin:studyapp_study_report_file", args=[obj.pk, done.pk, "html"]), done.pk,
                done.finished_at.strftime("%Y-%m-%d %H:%M") if done.finished_at else "",
                reverse("admin:studyapp_study_report_file", args=[obj.pk, done.pk, "zip"])))
        if latest is not None and latest != done:
            parts.append(format_html("report {} is {}{}", latest.pk, latest.get_status_display(),
                                     f": {latest.error[:200]}" if latest.error else ""))
        if not parts:
            parts.append(format_html("{}", "none yet"))
        parts.append(format_html('<a href="{}">all reports / build one</a>',
                                 reverse("admin:studyapp_study_reports", args=[obj.pk])))
        return format_html(" · ".join(["{}"] * len(parts)), *parts)

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not form.instance.scales.exists():
            form.instance.add_default_scales()

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/mos/", view(self.mos_view), name="studyapp_study_mos"),
            path("<int:pk>/mos.csv", view(self.mos_csv_view), name="studyapp_study_mos_csv"),
            path("<int:pk>/ratings.csv", view(self.ratings_csv_view), name="studyapp_study_ratings_csv"),
            path("<int:pk>/metrics/", view(self.metrics_view), name="studyapp_study_metrics"),
            path("<int:pk>/metrics-<str:kind>.csv", view(self.metrics_csv_view), name="studyapp_study_metrics_csv"),
            path("<int:pk>/reports/", view(self.reports_view), name="studyapp_study_reports"),
            path("<int:pk>/reports/<int:report_id>/<str:kind>", view(self.report_file_view),
                 name="studyapp_study_report_file"),
            path("<int:pk>/planning/", view(self.planning_view), name="studyapp_study_planning"),
            path("<int:pk>/monitor/", view(self.monitor_view), name="studyapp_study_monitor"),
            path("<int:pk>/top-up/", view(self.top_up_view), name="studyapp_study_top_up"),
            path("<int:pk>/review/", view(self.review_view), name="studyapp_study_review"),
            path("<int:pk>/close/", view(self.close_view), name="studyapp_study_close"),
        ] + super().get_urls()

    def monitor_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        study = get_object_or_404(Study, pk=pk)
        refresh = _refresh_seconds(request.GET.get("refresh", ""))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Monitor — {study.title}",
            "study": study,
            "monitor": monitoring.study_monitor(study),
            "refresh": refresh,
            "review_choices": [(Participant.REVIEW_ACCEPTED, "accept"), (Participant.REVIEW_USED, "accept and use"),
                               (Participant.REVIEW_REJECTED, "reject")],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/studyapp/study/monitor.html", context)

    def top_up_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        study = get_object_or_404(Study, pk=pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Top-up — {study.title}",
            "study": study,
            "top_up": monitoring.top_up(study),
            "pairwise": monitoring.is_pairwise(study),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/studyapp/study/top_up.html", context)

    def review_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """POST participant, review (accepted | used | rejected), note: the monitor page's review buttons."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("studyapp.change_participant"):
            raise PermissionDenied
        study = get_object_or_404(Study, pk=pk)
        participant = get_object_or_404(Participant, pk=request.POST.get("participant") or 0, study=study)
        review = request.POST.get("review", "")
        if review not in monitoring.REVIEW_DECISIONS:
            self.message_user(request, f"Unknown review {review!r}.", messages.ERROR)
        else:
            monitoring.set_review(Participant.objects.filter(pk=participant.pk), review,
                                  note=request.POST.get("note", "").strip())
            label = dict(Participant.REVIEW_CHOICES)[review]
            self.message_user(request, f"Participant {participant.pk}: {label}.", messages.SUCCESS)
        return redirect(reverse("admin:studyapp_study_monitor", args=[pk]) + "#flagged")

    def close_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """POST: close the study if every condition's CI half-width is under its target."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        study = get_object_or_404(Study, pk=pk)
        if not self.has_change_permission(request, study):
            raise PermissionDenied
        ready, reasons = monitoring.close_readiness(study)
        if not ready:
            self.message_user(request, "Not closed: " + "; ".join(reasons[:10])
                              + (f" (and {len(reasons) - 10} more)" if len(reasons) > 10 else ""), messages.ERROR)
        else:
            Study.objects.filter(pk=study.pk).update(status=Study.CLOSED)
            self.message_user(request, f"{study}: closed (every condition's CI half-width is under "
                                       f"{study.target_ci_half_width:g}).", messages.SUCCESS)
        return redirect(reverse("admin:studyapp_study_monitor", args=[pk]))

    def reports_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        study = get_object_or_404(Study, pk=pk)
        if request.method == "POST":
            report = analysis_services.request_report(
                study, user=request.user, reveal_conditions=bool(request.POST.get("reveal_conditions")),
                exclude_rejected=not request.POST.get("with_rejected"))
            self.message_user(request, f"Analysis report {report.pk} queued.", messages.SUCCESS)
            return redirect(reverse("admin:studyapp_study_reports", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Analysis reports — {study.title}",
            "study": study,
            "reports": StudyReport.objects.filter(study=study).order_by("-created_at", "-id")[:50],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/analysis/study_reports.html", context)

    def report_file_view(self, request: HttpRequest, pk: int, report_id: int, kind: str) -> FileResponse:
        stored = get_object_or_404(StudyReport, pk=report_id, study_id=pk)
        if kind not in analysis_services.REPORT_FILES:
            raise Http404("unknown report file")
        path = analysis_services.report_file(stored, kind)
        if path is None:
            raise Http404("this report has no such file (not built yet, failed, or removed)")
        if kind == "html":
            response = FileResponse(open(path, "rb"), content_type="text/html; charset=utf-8")
            # The page is self-contained: no script, no fetch, images only as data: URIs.
            response["Content-Security-Policy"] = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
        else:
            response = FileResponse(open(path, "rb"), as_attachment=True,
                                    filename=f"study-{pk}-report-{stored.pk}-tables.zip",
                                    content_type="application/zip")
        response["Cache-Control"] = "private, no-store"
        return response

    def planning_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        study = get_object_or_404(Study, pk=pk)
        params, errors = _planning_params(request.GET)
        result = analysis_services.study_planning(study, **params)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Planning — {study.title}",
            "study": study,
            "params": params,
            "errors": errors,
            "rows": result["rows"],
            "notes": result["notes"],
            "figure": result["figure"],
            "n_ratings": result["n_ratings"],
            "confidence_percent": "95%",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/analysis/study_planning.html", context)

    def metrics_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        study = get_object_or_404(Study, pk=pk)
        clips = exports.study_test_clips(study)
        if request.method == "POST":
            summary = metric_services.request_metrics(clips, force="force" in request.POST)
            self.message_user(request, f"Objective metrics: {summary}.", messages.SUCCESS)
            return redirect(reverse("admin:studyapp_study_metrics", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Objective metrics — {study.title}",
            "study": study,
            "seeds_table": exports.seeds_table_rows(clips),
            "metric_rows": metric_services.condition_metric_table(clips).to_dict("records"),
            "runs": metric_services.run_status_counts(clips),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/studyapp/study/metrics.html", context)

    def metrics_csv_view(self, request: HttpRequest, pk: int, kind: str) -> HttpResponse:
        study = get_object_or_404(Study, pk=pk)
        writers = {"clips": exports.clip_metrics_csv, "conditions": exports.metric_table_csv,
                   "table": exports.seeds_metric_table_csv}
        if kind not in writers:
            raise Http404("unknown metrics export")
        return _csv_response(writers[kind](study), f"study-{study.pk}-metrics-{kind}.csv")

    def mos_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        study = get_object_or_404(Study, pk=pk)
        table = exports.mos_frame(study)
        scales = list(study.scales.values_list("key", flat=True))
        context = {
            **self.admin_site.each_context(request),
            "title": f"MOS — {study.title}",
            "study": study,
            "scales": scales,
            "rows": exports.mos_rows_by_condition(table, scales),
            "n_ratings": int(table.loc[table["scale"] == scales[0], "n"].sum()) if scales and len(table) else 0,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/studyapp/study/mos.html", context)

    def mos_csv_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        study = get_object_or_404(Study, pk=pk)
        return _csv_response(exports.mos_csv(study), f"study-{study.pk}-mos.csv")

    def ratings_csv_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        study = get_object_or_404(Study, pk=pk)
        return _csv_response(exports.raw_ratings_csv(study), f"study-{study.pk}-ratings.csv")

    @admin.action(description="Open selected studies to participants")
    def open_studies(self, request: HttpRequest, queryset):
        """Open studies that validate and that ``design.problems_before_opening`` finds nothing wrong with;
        measure the clips' face height share (``environment.measure_face_height_share``) on the way."""
        from studyapp.design import problems_before_opening
        from studyapp.environment import measure_face_height_share

        opened = 0
        for study in queryset:
            try:
                study.full_clean()
            except ValidationError as exc:
                self.message_user(request, f"{study}: not opened — {'; '.join(exc.messages)}", messages.ERROR)
                continue
            problems = problems_before_opening(study)
            if problems:
                self.message_user(request, f"{study}: not opened — {'; '.join(problems)}", messages.ERROR)
                continue
            changes = {"status": Study.OPEN}
            try:
                share = measure_face_height_share(study)
            except (MediaError, OSError) as exc:
                share = None
                self.message_user(request, f"{study}: could not measure the face height share ({exc}); kept "
                                           f"{study.face_height_share:g}.", messages.WARNING)
            if share is not None:
                if 0 < share <= 1:
                    changes["face_height_share"] = float(share)
                else:
                    self.message_user(request, f"{study}: the measured face height share {share!r} is not a share; "
                                               f"kept {study.face_height_share:g}.", messages.WARNING)
            opened += Study.objects.filter(pk=study.pk).update(**changes)
        self.message_user(request, f"Opened {opened} studies.", messages.SUCCESS)

    @admin.action(description="Compute the objective metrics of selected studies' clips")
    def compute_metrics(self, request: HttpRequest, queryset):
        from generation.models import Clip

        clips = Clip.objects.filter(study_clips__study__in=queryset).distinct()
        summary = metric_services.request_metrics(clips)
        self.message_user(request, f"Objective metrics: {summary}.", messages.SUCCESS)

    @admin.action(description="Build analysis report")
    def build_analysis_report(self, request: HttpRequest, queryset):
        reports = [analysis_services.request_report(study, user=request.user) for study in queryset]
        self.message_user(request, f"Queued {len(reports)} analysis report(s) (blind labels, rejected participants "
                                   "left out); open a study's \"analysis reports\" page for the files.",
                          messages.SUCCESS)

    @admin.action(description="Close selected studies")
    def close_studies(self, request: HttpRequest, queryset):
        n = queryset.update(status=Study.CLOSED)
        self.message_user(request, f"Closed {n} studies.", messages.SUCCESS)


PLANNING_LIMITS = {"half_width": (0.001, 5.0), "difference": (0.001, 5.0), "alpha": (0.0001, 0.5),
                   "power": (0.05, 0.9999)}


def _planning_params(query) -> tuple[dict, list[str]]:
    """The planning page's GET parameters, validated; a bad value falls back to its default with a message."""
    params: dict = dict(analysis_services.PLANNING_DEFAULTS)
    errors = []
    for name, (low, high) in PLANNING_LIMITS.items():
        raw = query.get(name, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            errors.append(f"{name}: {raw!r} is not a number; using {params[name]}")
            continue
        if not low <= value <= high:
            errors.append(f"{name}: {value} is outside [{low}, {high}]; using {params[name]}")
            continue
        params[name] = value
    for name in ("n_clips", "clips_per_participant"):
        raw = query.get(name, "").strip()
        params[name] = None
        if raw:
            if raw.isdigit() and int(raw) >= 1:
                params[name] = int(raw)
            else:
                errors.append(f"{name}: {raw!r} is not a positive whole number; using this study's design")
    return params, errors


def _refresh_seconds(raw: str) -> int | None:
    """The monitor page's auto-refresh period from ?refresh=N, clamped to REFRESH_LIMITS_S; None = off."""
    if not raw.strip().isdigit():
        return None
    low, high = REFRESH_LIMITS_S
    return min(max(int(raw), low), high)


def _csv_response(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class AssignmentInline(admin.TabularInline):
    """The participant's effective order, as stored when it was issued (researcher side: conditions named)."""

    model = Assignment
    fk_name = "participant"
    extra = 0
    can_delete = False
    verbose_name_plural = "effective order"
    fields = ["position", "role", "study_clip", "condition_name", "paired_condition_name", "started_at",
              "completed_at", "passed_check", "first_choice_ms"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related(
            "study_clip__clip__condition", "paired_study_clip__clip__condition").order_by("position")

    @admin.display(description="condition")
    def condition_name(self, obj: Assignment) -> str:
        return str(obj.study_clip.clip.condition)

    @admin.display(description="paired clip's condition (B)")
    def paired_condition_name(self, obj: Assignment) -> str:
        return str(obj.paired_study_clip.clip.condition) if obj.paired_study_clip_id else "–"


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "state", "review", "external_id", "progress", "created_at", "completed_at"]
    list_filter = ["study", "state", "review"]
    search_fields = ["external_id", "external_session_id", "completion_code"]
    readonly_fields = [
        "study", "token", "external_id", "external_study_id", "external_session_id", "state", "screened_out_reason",
        "seed", "completion_code", "user_agent", "viewport", "environment_pretty", "audio_check_answer",
        "consented_at", "started_at", "completed_at", "ended_at", "created_at", "last_seen_at", "reviewed_at",
    ]
    fieldsets = [
        (None, {"fields": ["study", "state", "screened_out_reason", "external_id", "external_study_id",
                           "external_session_id"]}),
        ("Review", {"fields": ["review", "review_note", "reviewed_at"],
                    "description": "Accepted: paid, ratings not used. Accepted and used: paid and analysed. "
                                   "Rejected: neither. Not reviewed counts as used until reviewed."}),
        ("Environment", {"fields": ["viewport", "user_agent", "environment_pretty", "audio_check_answer"]}),
        ("Session", {"fields": ["token", "seed", "completion_code", "consented_at", "started_at", "completed_at",
                                "ended_at", "last_seen_at", "created_at"], "classes": ["collapse"]}),
    ]
    inlines = [AssignmentInline]
    actions = ["accept_participants", "accept_and_use_participants", "reject_participants"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _assigned=Count("assignments", distinct=True),
            _rated=Count("assignments", filter=Q(assignments__completed_at__isnull=False), distinct=True),
        )

    @admin.display(description="rated")
    def progress(self, obj: Participant) -> str:
        return f"{obj._rated}/{obj._assigned}"

    @admin.display(description="environment")
    def environment_pretty(self, obj: Participant) -> str:
        if not obj.environment:
            return "–"
        return format_html("<pre>{}</pre>", json.dumps(obj.environment, indent=2, sort_keys=True, ensure_ascii=False))

    def save_model(self, request, obj, form, change):
        if "review" in form.changed_data:
            obj.reviewed_at = timezone.now()
        super().save_model(request, obj, form, change)

    def _review(self, request: HttpRequest, queryset, review: str) -> None:
        n = monitoring.set_review(queryset, review)
        self.message_user(request, f"{n} participant(s): {dict(Participant.REVIEW_CHOICES)[review]}.", messages.SUCCESS)

    @admin.action(description="Accept (pay; ratings not used)")
    def accept_participants(self, request: HttpRequest, queryset):
        self._review(request, queryset, Participant.REVIEW_ACCEPTED)

    @admin.action(description="Accept and use (pay; ratings analysed)")
    def accept_and_use_participants(self, request: HttpRequest, queryset):
        self._review(request, queryset, Participant.REVIEW_USED)

    @admin.action(description="Reject (not paid; ratings not used)")
    def reject_participants(self, request: HttpRequest, queryset):
        self._review(request, queryset, Participant.REVIEW_REJECTED)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Ratings and telemetry are evidence: researchers read them, nobody edits them by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Rating)
class RatingAdmin(ReadOnlyAdmin):
    list_display = ["id", "assignment", "scale", "value", "response_time_ms", "created_at"]
    list_filter = ["scale__study", "scale__key"]
    list_select_related = ["assignment", "scale"]


@admin.register(PlaybackEvent)
class PlaybackEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "assignment", "kind", "media_time", "client_time", "created_at"]
    list_filter = ["kind"]


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "participant", "position", "role", "study_clip", "paired_study_clip", "issued_at",
                    "started_at", "completed_at", "passed_check", "first_choice_ms"]
    list_filter = ["participant__study", "role", "passed_check"]
    list_select_related = ["participant", "study_clip"]


class ExpectedAnswerFormSet(BaseInlineFormSet):
    """Expected answers belong to practice and gold clips, on the scales of the clip's own study."""

    def clean(self):
        super().clean()
        study_clip = self.instance
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if not data or data.get("DELETE"):
                continue
            scale = data.get("scale")
            if scale is not None and study_clip.study_id and scale.study_id != study_clip.study_id:
                raise ValidationError(f"scale {scale.key!r} belongs to another study")
            if study_clip.role == StudyClip.ROLE_TEST:
                raise ValidationError("expected answers are for practice and gold clips; make this clip one first")


class ExpectedAnswerInline(admin.TabularInline):
    model = ExpectedAnswer
    formset = ExpectedAnswerFormSet
    extra = 1
    fields = ["scale", "low", "high", "feedback"]
    verbose_name_plural = "expected answers (practice and gold; a scale without a row is \"don't care\")"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "scale":
            object_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            study_clip = StudyClip.objects.filter(pk=object_id).first() if object_id and object_id.isdigit() else None
            if study_clip is not None:
                kwargs["queryset"] = Scale.objects.filter(study_id=study_clip.study_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(StudyClip)
class StudyClipAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "clip", "condition_name", "role", "expected_count"]
    list_filter = ["study", "role"]
    raw_id_fields = ["clip"]
    inlines = [ExpectedAnswerInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("clip__condition").annotate(
            _expected=Count("expected_answers"))

    @admin.display(description="condition")
    def condition_name(self, obj: StudyClip) -> str:
        return str(obj.clip.condition)

    @admin.display(description="expected answers", ordering="_expected")
    def expected_count(self, obj: StudyClip) -> int:
        return obj._expected


@admin.register(Scale)
class ScaleAdmin(admin.ModelAdmin):
    list_display = ["study", "position", "key", "question"]
    list_filter = ["study"]


admin.site.site_header = "syncmos — researcher admin"
admin.site.site_title = "syncmos"
admin.site.index_title = "Studies, stimuli and ratings"
