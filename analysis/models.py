"""Built analysis reports: one row per request, its files under MEDIA_ROOT/reports/ (never served publicly)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class StudyReport(models.Model):
    """One requested build of a study's analysis report (HTML + a zip of every table, the ratings, SUREAL files).

    Made by :func:`analysis.services.request_report`, built by the ``analysis.build_study_report`` task (queue
    "cpu"), which claims the row with a conditional update so a redelivered message never builds it twice at
    once. ``files`` maps ``"html"`` and ``"zip"`` to paths relative to MEDIA_ROOT.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STATUS_CHOICES = [(PENDING, "pending"), (RUNNING, "running"), (DONE, "done"), (FAILED, "failed")]

    study = models.ForeignKey("studyapp.Study", on_delete=models.CASCADE, related_name="reports")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING, db_index=True)
    reveal_conditions = models.BooleanField(
        default=False, help_text="Real condition names instead of blind labels (researcher-only report).")
    exclude_rejected = models.BooleanField(
        default=True, help_text="Analyse without the participants the screening rules reject.")
    options = models.JSONField(default=dict, blank=True, help_text="Further ReportOptions overrides.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    files = models.JSONField(default=dict, blank=True, help_text='{"html": path, "zip": path} under MEDIA_ROOT')
    summary = models.JSONField(default=dict, blank=True, help_text="Highlights, ratings analysed, build seconds.")

    class Meta:
        ordering = ["-created_at", "-id"]
        get_latest_by = ["created_at", "id"]

    def __str__(self) -> str:
        return f"report {self.pk} of study {self.study_id} ({self.status})"

    @property
    def folder(self) -> str:
        """Where this report's files go, relative to MEDIA_ROOT (deterministic: a rebuild overwrites)."""
        return f"reports/study-{self.study_id}/report-{self.pk}"

    def lease(self) -> timedelta:
        return timedelta(seconds=settings.SYNCMOS_JOB_LEASE_SECONDS)

    def lease_left(self) -> float:
        if self.claimed_until is None:
            return 0.0
        return max(0.0, (self.claimed_until - timezone.now()).total_seconds())
