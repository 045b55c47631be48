from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from analysis import services as analysis_services
from analysis.models import StudyReport
from generation import metric_services
from studyapp import exports
from studyapp.models import Assignment, Participant, PlaybackEvent, Rating, Scale, Study, StudyClip


class ScaleInline(admin.TabularInline):
    model = Scale
    extra = 0
    fields = ["position", "key", "question", "labels"]


class StudyClipInline(admin.TabularInline):
    model = StudyClip
    extra = 0
    raw_id_fields = ["clip"]
    fields = ["clip", "role", "condition_name", "source_name"]
    readonly_fields = ["condition_name", "source_name"]

    @admin.display(description="condition")
    def condition_name(self, obj: StudyClip) -> str:
        return str(obj.clip.condition) if obj.clip_id else ""

    @admin.display(description="source")
    def source_name(self, obj: StudyClip) -> str:
        return str(obj.clip.source) if obj.clip_id else ""


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "method", "clip_count", "completed_count", "participant_link", "created_at"]
    list_filter = ["status", "method"]
    search_fields = ["title"]
    readonly_fields = ["public_id", "participant_link", "results_links", "analysis_report", "created_at"]
    fieldsets = [
        (None, {"fields": ["title", "status", "method", "participant_link", "results_links", "analysis_report"]}),
        ("Participant texts", {"fields": ["consent_text", "instructions"]}),
        ("Design", {"fields": ["clips_per_participant", "ratings_per_clip", "session_timeout_minutes", "seed"]}),
        ("Completion", {"fields": ["completion_code", "completion_url"]}),
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
            parts.append(format_html("none yet"))
        parts.append(format_html('<a href="{}">all reports / build one</a>',
                                 reverse("admin:studyapp_study_reports", args=[obj.pk])))
        return format_html(" · ".join(["{}"] * len(parts)), *parts)

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
        ] + super().get_urls()

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
        opened = 0
        for study in queryset:
            try:
                study.full_clean()
            except ValidationError as exc:
                self.message_user(request, f"{study}: not opened — {'; '.join(exc.messages)}", messages.ERROR)
                continue
            opened += Study.objects.filter(pk=study.pk).update(status=Study.OPEN)
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


def _csv_response(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class AssignmentInline(admin.TabularInline):
    model = Assignment
    extra = 0
    can_delete = False
    fields = ["position", "study_clip", "condition_name", "issued_at", "started_at", "completed_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="condition")
    def condition_name(self, obj: Assignment) -> str:
        return str(obj.study_clip.clip.condition)


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "state", "external_id", "progress", "created_at", "completed_at"]
    list_filter = ["study", "state"]
    search_fields = ["external_id", "completion_code"]
    readonly_fields = [
        "study", "token", "external_id", "seed", "completion_code", "user_agent", "viewport", "consented_at",
        "started_at", "completed_at", "created_at", "last_seen_at",
    ]
    inlines = [AssignmentInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _assigned=Count("assignments", distinct=True),
            _rated=Count("assignments", filter=Q(assignments__completed_at__isnull=False), distinct=True),
        )

    @admin.display(description="rated")
    def progress(self, obj: Participant) -> str:
        return f"{obj._rated}/{obj._assigned}"


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
    list_display = ["id", "participant", "position", "study_clip", "issued_at", "started_at", "completed_at"]
    list_filter = ["participant__study"]
    list_select_related = ["participant", "study_clip"]


@admin.register(StudyClip)
class StudyClipAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "clip", "role"]
    list_filter = ["study", "role"]
    raw_id_fields = ["clip"]


@admin.register(Scale)
class ScaleAdmin(admin.ModelAdmin):
    list_display = ["study", "position", "key", "question"]
    list_filter = ["study"]


admin.site.site_header = "syncmos — researcher admin"
admin.site.site_title = "syncmos"
admin.site.index_title = "Studies, stimuli and ratings"
