"""Every built analysis report across studies, read-only (requests come from the study pages)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from analysis.models import StudyReport


@admin.register(StudyReport)
class StudyReportAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "status", "reveal_conditions", "exclude_rejected", "created_at", "finished_at",
                    "files_links"]
    list_filter = ["status", "reveal_conditions", "study"]
    list_select_related = ["study"]
    readonly_fields = ["study", "status", "reveal_conditions", "exclude_rejected", "options", "requested_by",
                       "created_at", "started_at", "finished_at", "attempts", "worker", "error", "files", "summary",
                       "files_links"]
    exclude = ["claimed_until"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="files")
    def files_links(self, obj: StudyReport) -> str:
        if obj.status != StudyReport.DONE:
            return "–"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">view</a> · <a href="{}">tables (zip)</a>',
            reverse("admin:studyapp_study_report_file", args=[obj.study_id, obj.pk, "html"]),
            reverse("admin:studyapp_study_report_file", args=[obj.study_id, obj.pk, "zip"]))
