from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from generation import metric_services, services
from generation.models import (
    Audio, Checkpoint, Clip, ClipMetric, Condition, ConditionMetric, GenerationJob, MetricRun, Source,
)


@admin.register(Audio)
class AudioAdmin(admin.ModelAdmin):
    list_display = ["name", "content_id", "transcript", "duration", "sample_rate"]
    search_fields = ["name", "content_id", "transcript"]
    readonly_fields = ["sha256", "created_at"]


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "identity", "content_id", "fps", "n_frames", "duration"]
    list_filter = ["kind", "identity"]
    search_fields = ["name", "identity", "content_id"]
    readonly_fields = ["sha256", "created_at"]


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["name", "registry_name", "architecture", "layout", "path", "is_installed"]
    search_fields = ["name", "architecture", "path"]
    readonly_fields = ["file_status", "created_at"]

    @admin.display(description="installed", boolean=True)
    def is_installed(self, obj: Checkpoint) -> bool:
        return obj.installed

    @admin.display(description="file")
    def file_status(self, obj: Checkpoint) -> str:
        if not obj.path:
            return "–"
        if obj.installed:
            return f"installed at {obj.file_path}"
        return (f"MISSING: place the weight file at {obj.file_path} on every GPU worker "
                "(syncmos never downloads weights).")


class ConditionMetricInline(admin.TabularInline):
    model = ConditionMetric
    extra = 0
    readonly_fields = ["name", "value", "status", "detail", "version", "n_clips", "computed_at"]
    can_delete = False


@admin.register(Condition)
class ConditionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "control", "params", "architecture", "clip_count"]
    list_filter = ["kind", "control"]
    search_fields = ["name", "control", "architecture"]
    inlines = [ConditionMetricInline]
    actions = ["compute_metrics"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_clip_count=Count("clips"))

    @admin.action(description="Compute objective metrics of the selected conditions' clips")
    def compute_metrics(self, request: HttpRequest, queryset):
        clips = Clip.objects.filter(condition__in=queryset).select_related("condition", "reference")
        self.message_user(request, f"Objective metrics: {metric_services.request_metrics(clips)}.", messages.SUCCESS)

    @admin.display(description="clips", ordering="_clip_count")
    def clip_count(self, obj: Condition) -> int:
        return obj._clip_count


class ClipMetricInline(admin.TabularInline):
    model = ClipMetric
    extra = 0
    readonly_fields = ["name", "value", "status", "detail", "version", "computed_at"]
    can_delete = False


class AddToStudyForm(forms.Form):
    study = forms.ModelChoiceField(queryset=None)
    role = forms.ChoiceField(choices=[])

    def __init__(self, *args, **kwargs):
        from studyapp.models import Study, StudyClip

        super().__init__(*args, **kwargs)
        self.fields["study"].queryset = Study.objects.all()
        self.fields["role"].choices = StudyClip.ROLE_CHOICES


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = ["id", "condition", "source", "audio", "status", "duration", "size_bytes", "short_sha"]
    list_filter = ["status", "condition__kind", "condition", "jobs"]
    search_fields = ["condition__name", "source__name", "audio__name", "delivery_name"]
    list_select_related = ["condition", "source", "audio"]
    readonly_fields = [
        "condition", "source", "audio", "profile", "reference", "delivery_name", "file", "sha256", "duration", "fps",
        "n_frames", "width", "height", "size_bytes", "status", "error", "attempts", "claimed_until",
        "rendered_by", "normalized_by", "created_at", "updated_at", "preview",
    ]
    inlines = [ClipMetricInline]
    actions = ["add_to_study", "compute_metrics"]

    @admin.action(description="Compute objective metrics of selected clips")
    def compute_metrics(self, request: HttpRequest, queryset):
        clips = queryset.select_related("condition", "reference")
        self.message_user(request, f"Objective metrics: {metric_services.request_metrics(clips)}.", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # clips are made by generation jobs, never typed in

    @admin.display(description="sha256")
    def short_sha(self, obj: Clip) -> str:
        return obj.sha256[:12]

    @admin.display(description="preview")
    def preview(self, obj: Clip) -> str:
        if obj.status != Clip.READY:
            return "–"
        url = reverse("admin:generation_clip_preview", args=[obj.pk])
        return format_html('<video src="{}" controls preload="metadata" width="320"></video>', url)

    def get_urls(self):
        return [
            path("<int:pk>/preview.mp4", self.admin_site.admin_view(preview_clip), name="generation_clip_preview"),
        ] + super().get_urls()

    @admin.action(description="Add selected ready clips to a study…")
    def add_to_study(self, request: HttpRequest, queryset):
        from studyapp.models import StudyClip

        form = AddToStudyForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            ready = queryset.filter(status=Clip.READY)
            made = 0
            for clip in ready:
                _, created = StudyClip.objects.get_or_create(
                    study=form.cleaned_data["study"], clip=clip, defaults={"role": form.cleaned_data["role"]}
                )
                made += created
            skipped = queryset.count() - ready.count()
            self.message_user(request, f"Added {made} clips ({skipped} not ready, skipped).", messages.SUCCESS)
            return None
        return render(request, "admin/generation/clip/add_to_study.html", {
            "form": form, "clips": queryset, "action": "add_to_study", **self.admin_site.each_context(request),
        })


@staff_member_required
def preview_clip(request: HttpRequest, pk: int) -> FileResponse:
    """Researcher-only playback of a delivery file (participants get signed per-assignment URLs)."""
    clip = get_object_or_404(Clip, pk=pk, status=Clip.READY)
    if not clip.file:
        raise Http404("clip has no file")
    return FileResponse(clip.file.open("rb"), content_type="video/mp4")


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "progress_text", "created_at", "finished_at"]
    list_filter = ["status"]
    filter_horizontal = ["conditions", "sources"]
    exclude = ["clips"]  # filled by planning; shown as a link
    readonly_fields = [
        "status", "n_total", "n_done", "n_failed", "n_unplanned", "attempts", "error", "created_at", "started_at", "finished_at",
        "clips_link",
    ]
    actions = ["start_jobs", "retry_failed", "resume_stalled", "make_study", "compute_metrics"]

    @admin.action(description="Compute objective metrics of the selected jobs' clips")
    def compute_metrics(self, request: HttpRequest, queryset):
        summary = metric_services.request_for_jobs(queryset.values_list("pk", flat=True))
        self.message_user(request, f"Objective metrics: {summary}.", messages.SUCCESS)

    @admin.display(description="progress")
    def progress_text(self, obj: GenerationJob) -> str:
        failed = f", {obj.n_failed} failed" if obj.n_failed else ""
        return f"{obj.n_done}/{obj.n_total} ready{failed}"

    @admin.display(description="clips")
    def clips_link(self, obj: GenerationJob) -> str:
        url = reverse("admin:generation_clip_changelist") + f"?jobs__id__exact={obj.pk}"
        return format_html('<a href="{}">{} clips</a>', url, obj.clips.count())

    @admin.action(description="Start selected pending jobs")
    def start_jobs(self, request: HttpRequest, queryset):
        pending = list(queryset.filter(status=GenerationJob.PENDING))
        for job in pending:
            services.start_job(job)
        self.message_user(request, f"Queued {len(pending)} jobs.", messages.SUCCESS)

    @admin.action(description="Retry the failed clips of selected jobs")
    def retry_failed(self, request: HttpRequest, queryset):
        n = sum(services.restart_failed_clips(job) for job in queryset)
        self.message_user(request, f"Queued {n} failed clips again.", messages.SUCCESS)

    @admin.action(description="Resume stalled work (lost messages, expired claims) of all jobs")
    def resume_stalled(self, request: HttpRequest, queryset):
        counts = services.resume_stalled()
        self.message_user(request, "Re-queued {renders} renders and {encodes} encodes; rechecked {open_jobs} running "
                                   "jobs.".format(**counts), messages.SUCCESS)

    @admin.action(description="Create a draft study from the ready clips of selected jobs")
    def make_study(self, request: HttpRequest, queryset):
        from studyapp.design import create_study_from_clips

        clips = Clip.objects.filter(jobs__in=queryset, status=Clip.READY).distinct()
        study = create_study_from_clips(title="New study (draft) — rename before opening", clips=clips,
                                        created_by=request.user)
        self.message_user(request, f"Created draft study with {clips.count()} clips.", messages.SUCCESS)
        return redirect(reverse("admin:studyapp_study_change", args=[study.pk]))


@admin.register(ClipMetric)
class ClipMetricAdmin(admin.ModelAdmin):
    list_display = ["clip", "name", "value", "status", "version", "computed_at"]
    list_filter = ["name", "status"]
    list_select_related = ["clip"]


@admin.register(ConditionMetric)
class ConditionMetricAdmin(admin.ModelAdmin):
    list_display = ["condition", "name", "value", "status", "n_clips", "version", "computed_at"]
    list_filter = ["name", "status"]


@admin.register(MetricRun)
class MetricRunAdmin(admin.ModelAdmin):
    list_display = ["id", "group", "clip", "condition", "status", "version", "attempts", "seconds", "worker", "updated_at"]
    list_filter = ["group", "status"]
    list_select_related = ["clip", "condition"]
    readonly_fields = ["clip", "condition", "group", "version", "inputs", "status", "attempts", "claimed_until",
                       "worker", "error", "seconds", "created_at", "updated_at"]
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Compute the selected runs again")
    def retry(self, request: HttpRequest, queryset):
        clips = Clip.objects.filter(pk__in=queryset.exclude(clip=None).values("clip_id"))
        conditions = Clip.objects.filter(condition__in=queryset.exclude(condition=None).values("condition_id"))
        groups = sorted(set(queryset.values_list("group", flat=True)))
        summary = metric_services.request_metrics((clips | conditions).distinct().select_related("condition", "reference"),
                                                  groups, force=True)
        self.message_user(request, f"Objective metrics: {summary}.", messages.SUCCESS)
