from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

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
    readonly_fields = ["public_id", "participant_link", "results_links", "created_at"]
    fieldsets = [
        (None, {"fields": ["title", "status", "method", "participant_link", "results_links"]}),
        ("Participant texts", {"fields": ["consent_text", "instructions"]}),
        ("Design", {"fields": ["clips_per_participant", "ratings_per_clip", "session_timeout_minutes", "seed"]}),
        ("Completion", {"fields": ["completion_code", "completion_url"]}),
        ("Record", {"fields": ["public_id", "created_at"], "classes": ["collapse"]}),
    ]
    inlines = [ScaleInline, StudyClipInline]
    actions = ["open_studies", "close_studies", "compute_metrics"]
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
            '<a href="{}">objective metrics</a>',
            reverse("admin:studyapp_study_mos", args=[obj.pk]),
            reverse("admin:studyapp_study_mos_csv", args=[obj.pk]),
            reverse("admin:studyapp_study_ratings_csv", args=[obj.pk]),
            reverse("admin:studyapp_study_metrics", args=[obj.pk]),
        )

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
        ] + super().get_urls()

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

    @admin.action(description="Close selected studies")
    def close_studies(self, request: HttpRequest, queryset):
        n = queryset.update(status=Study.CLOSED)
        self.message_user(request, f"Closed {n} studies.", messages.SUCCESS)


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
