"""What a clip is made from and how: sources, driving audio, conditions, checkpoints, clips, jobs, metrics.

A Condition is the only place a model or control name lives; nothing here is ever reachable from a
participant's browser (the rating app only sees clip files through opaque, per-assignment tokens).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


def opaque_clip_name() -> str:
    """A random delivery file name that carries no information about the clip."""
    return f"{secrets.token_hex(16)}.mp4"



class LeasedClaim:
    """A row workers take with a lease: a conditional update only one process can win, so a redelivered or
    duplicated task never works on it twice at the same time, and a row left claimed by a worker that died can
    be taken again once its lease ran out (which is what makes an acks_late redelivery finish the work)."""

    CLAIMED, BUSY, GONE = "claimed", "busy", "gone"  # outcomes of claim_step()

    # The model declares status, attempts, claimed_until and updated_at.
    def claim_step(self, from_status: str, to_status: str) -> str:
        """Move the row from ``from_status`` to ``to_status`` for this worker.

        Returns ``CLAIMED``; ``BUSY`` while another worker's lease on ``to_status`` is still live (the caller
        should come back when it runs out); or ``GONE`` when the row has moved past this step.
        """
        now = timezone.now()
        lease = now + timedelta(seconds=settings.SYNCMOS_JOB_LEASE_SECONDS)
        won = type(self).objects.filter(
            Q(status=from_status) | Q(status=to_status, claimed_until__lt=now), pk=self.pk
        ).update(status=to_status, claimed_until=lease, attempts=F("attempts") + 1, updated_at=now)
        self.refresh_from_db()
        if won:
            return self.CLAIMED
        return self.BUSY if self.status == to_status else self.GONE

    def lease_left(self) -> float:
        """Seconds until the current claim expires (0 when unclaimed or expired)."""
        if self.claimed_until is None:
            return 0.0
        return max(0.0, (self.claimed_until - timezone.now()).total_seconds())


class Audio(models.Model):
    """A driving audio track (speech), 16 kHz mono WAV as stored."""

    name = models.CharField(max_length=200, unique=True)
    content_id = models.CharField(
        max_length=100, db_index=True, help_text="What is said (e.g. a GRID sentence id); designs balance on it."
    )
    transcript = models.TextField(blank=True)
    file = models.FileField(upload_to="audio/", max_length=300)
    sample_rate = models.PositiveIntegerField()
    duration = models.FloatField(help_text="seconds")
    sha256 = models.CharField(max_length=64, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Source(models.Model):
    """A face video or still image, with its own speech (if any) and where it came from."""

    KIND_VIDEO = "video"
    KIND_STILL = "still"
    KIND_CHOICES = [(KIND_VIDEO, "face video"), (KIND_STILL, "still image")]

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default=KIND_VIDEO)
    identity = models.CharField(max_length=100, blank=True, help_text="Whose face (balancing and analysis).")
    content_id = models.CharField(max_length=100, db_index=True, blank=True)
    file = models.FileField(upload_to="sources/", max_length=300)
    own_audio = models.ForeignKey(
        Audio, null=True, blank=True, on_delete=models.PROTECT, related_name="sources",
        help_text="The speech recorded with this face video (ground truth), if any.",
    )
    fps = models.FloatField(null=True, blank=True)
    n_frames = models.PositiveIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Checkpoint(models.Model):
    """Weights the user installed for one architecture (never downloaded by syncmos).

    Either a registered checkpoint (``registry_name``: a generation.weights.REGISTRY entry that knows its
    file, layout and config) or a file given by path — e.g. one written by syncmos training.
    """

    LAYOUT_CHOICES = [("syncmos", "syncmos checkpoint"), ("official", "the authors' release (remapped)")]

    name = models.CharField(max_length=200, unique=True)
    registry_name = models.CharField(
        max_length=100, blank=True, help_text="A registered checkpoint (generation.weights.REGISTRY); fills the rest."
    )
    architecture = models.CharField(max_length=100, blank=True)
    path = models.CharField(
        max_length=500, blank=True, help_text="File on the workers: absolute, or relative to SYNCMOS_WEIGHTS_DIR."
    )
    layout = models.CharField(max_length=20, choices=LAYOUT_CHOICES, default="syncmos")
    sha256 = models.CharField(max_length=64, blank=True, help_text="Checked before loading when given.")
    config = models.JSONField(default=dict, blank=True, help_text="Config overrides; syncmos files carry their own.")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.architecture})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from generation import nets, weights

        if self.registry_name:
            spec = weights.REGISTRY.get(self.registry_name)
            if spec is None:
                raise ValidationError({"registry_name": f"unknown; registered: {', '.join(sorted(weights.REGISTRY))}"})
            self.architecture, self.path, self.layout = spec.architecture, spec.filename, spec.layout
            self.sha256 = self.sha256 or spec.sha256
            if not self.config and spec.config != "default":
                self.config = spec.config
        if not self.path:
            raise ValidationError({"path": "give the weight file's path, or choose a registered checkpoint"})
        if self.architecture not in nets.list_architectures():
            raise ValidationError({"architecture": f"unknown; known: {', '.join(nets.list_architectures())}"})
        if self.config:
            try:
                nets.get_architecture(self.architecture).config(self.config)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValidationError({"config": str(exc)}) from exc

    @property
    def file_path(self):
        from generation import weights

        return weights.resolve_path(self.path)

    @property
    def installed(self) -> bool:
        return self.file_path.is_file()


class Condition(models.Model):
    """What made a clip: the hidden reference, a control manipulation, or a model with its checkpoint."""

    KIND_REFERENCE = "reference"
    KIND_CONTROL = "control"
    KIND_MODEL = "model"
    KIND_CHOICES = [(KIND_REFERENCE, "hidden reference"), (KIND_CONTROL, "control"), (KIND_MODEL, "model")]

    name = models.CharField(max_length=200, unique=True, help_text="Researcher-facing label; never shown to participants.")
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    control = models.CharField(
        max_length=50, blank=True, help_text="For control conditions: the manipulation (see generation.controls)."
    )
    params = models.JSONField(default=dict, blank=True)
    architecture = models.CharField(max_length=100, blank=True)
    checkpoint = models.ForeignKey(Checkpoint, null=True, blank=True, on_delete=models.PROTECT)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                name="condition_control_iff_control_kind",
                condition=(Q(kind="control") & ~Q(control="")) | (~Q(kind="control") & Q(control="")),
            ),
            models.CheckConstraint(
                name="condition_model_has_architecture",
                condition=~Q(kind="model") | ~Q(architecture=""),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from generation import controls

        if self.kind == self.KIND_CONTROL:
            try:
                self.params = controls.validate_params(self.control, self.params or {})
            except controls.ControlError as exc:
                raise ValidationError({"params": str(exc)}) from exc
        if self.kind == self.KIND_MODEL:
            from generation import pipeline

            if not self.checkpoint_id:
                raise ValidationError({"checkpoint": "a model condition needs the checkpoint to run"})
            if self.checkpoint.architecture != self.architecture:
                raise ValidationError({"checkpoint": f"is a {self.checkpoint.architecture} checkpoint, "
                                                     f"not {self.architecture}"})
            try:
                self.params = pipeline.validate_options(self.params or {})
            except ValueError as exc:
                raise ValidationError({"params": str(exc)}) from exc


class GenerationJob(models.Model):
    """Make the clips for conditions × sources; fans out into one render and one normalize task per clip."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"
    STATUS_CHOICES = [
        (PENDING, "pending"), (RUNNING, "running"), (DONE, "done"),
        (PARTIAL, "done with failed clips"), (FAILED, "failed"),
    ]

    name = models.CharField(max_length=200, blank=True)
    conditions = models.ManyToManyField(Condition, related_name="jobs")
    sources = models.ManyToManyField(Source, related_name="jobs")
    # A clip that already exists (same condition, source and audio) is shared, not remade, so one clip
    # can belong to several jobs.
    clips = models.ManyToManyField("Clip", related_name="jobs", blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Delivery profile overrides (fps, width, height, …).")
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=PENDING, db_index=True)
    n_total = models.PositiveIntegerField(default=0)
    n_done = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    n_unplanned = models.PositiveIntegerField(
        default=0, help_text="Condition × source pairs that could not become a clip (see the error); counted as failed."
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                name="job_progress_within_total", condition=Q(n_done__lte=F("n_total")) & Q(n_failed__lte=F("n_total"))
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"job {self.pk}"

    @property
    def progress(self) -> float:
        return (self.n_done + self.n_failed) / self.n_total if self.n_total else 0.0


class Clip(LeasedClaim, models.Model):
    """One stimulus: a condition applied to a source face with a driving audio, in the delivery profile."""

    PENDING = "pending"
    RENDERING = "rendering"
    RENDERED = "rendered"
    NORMALIZING = "normalizing"
    READY = "ready"
    FAILED = "failed"
    STATUS_CHOICES = [
        (PENDING, "pending"), (RENDERING, "rendering raw frames"), (RENDERED, "raw frames ready"),
        (NORMALIZING, "normalizing"), (READY, "ready"), (FAILED, "failed"),
    ]

    condition = models.ForeignKey(Condition, on_delete=models.PROTECT, related_name="clips")
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="clips")
    audio = models.ForeignKey(Audio, on_delete=models.PROTECT, related_name="clips")
    reference = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived",
        help_text="The ground-truth clip of the same source and audio, when one exists.",
    )
    profile = models.JSONField(default=dict, blank=True, help_text="The delivery profile the clip is encoded to.")
    # Chosen once when the row is made so that re-running a task overwrites the same file.
    delivery_name = models.CharField(max_length=64, unique=True, default=opaque_clip_name, editable=False)
    file = models.FileField(upload_to="clips/", max_length=300, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    duration = models.FloatField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    n_frames = models.PositiveIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=PENDING, db_index=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Claims by workers (render and normalize each count).")
    claimed_until = models.DateTimeField(null=True, blank=True)
    rendered_by = models.CharField(max_length=200, blank=True, help_text="Worker that made the raw frames.")
    normalized_by = models.CharField(max_length=200, blank=True, help_text="Worker that encoded the delivery file.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["condition", "source", "audio"], name="clip_unique_condition_source_audio"),
        ]

    def __str__(self) -> str:
        return f"clip {self.pk}: {self.condition} / {self.source} / {self.audio}"

    @property
    def work_dir(self) -> str:
        """Deterministic scratch folder (relative to MEDIA_ROOT) for this clip's intermediate files."""
        return f"work/clip-{self.pk}"

    def claim(self, from_status: str, to_status: str) -> str:
        """Take this clip for one step (:meth:`LeasedClaim.claim_step`)."""
        return self.claim_step(from_status, to_status)


class MetricValue(models.Model):
    """Shared fields of per-clip and per-condition metric rows."""

    OK = "ok"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
    STATUS_CHOICES = [(OK, "ok"), (UNAVAILABLE, "unavailable"), (FAILED, "failed")]

    name = models.CharField(max_length=50)
    value = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=OK)
    detail = models.TextField(blank=True, help_text="Why a value is unavailable, or how it was computed.")
    version = models.CharField(max_length=50, help_text="Implementation version of the metric.")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        constraints = []

    def __str__(self) -> str:
        return f"{self.name}={self.value if self.status == self.OK else self.status}"


class ClipMetric(MetricValue):
    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="metrics")
    per_frame = models.JSONField(
        null=True, blank=True, help_text="Per-frame values the clip value was aggregated from (null where undefined)."
    )

    class Meta:
        ordering = ["clip", "name"]
        constraints = [
            models.UniqueConstraint(fields=["clip", "name"], name="clipmetric_unique_clip_name"),
            models.CheckConstraint(name="clipmetric_ok_has_value", condition=~Q(status="ok") | Q(value__isnull=False)),
        ]


class ConditionMetric(MetricValue):
    """Set-level metrics such as FID, computed over all ready clips of a condition."""

    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="metrics")
    n_clips = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["condition", "name"]
        constraints = [
            models.UniqueConstraint(fields=["condition", "name"], name="conditionmetric_unique_condition_name"),
            models.CheckConstraint(
                name="conditionmetric_ok_has_value", condition=~Q(status="ok") | Q(value__isnull=False)
            ),
        ]


class MetricRun(LeasedClaim, models.Model):
    """One unit of metric work: a metric group (see generation.metrics.catalog) on one clip or one condition.

    The row is what a worker claims (a lease, like Clip.claim), so a redelivered or duplicated task never does
    the work twice at the same time, and what the admin shows while metrics are being computed. Its results are
    the ClipMetric / ConditionMetric rows of the group's metric names.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STATUS_CHOICES = [(PENDING, "pending"), (RUNNING, "running"), (DONE, "done"), (FAILED, "failed")]

    clip = models.ForeignKey(Clip, null=True, blank=True, on_delete=models.CASCADE, related_name="metric_runs")
    condition = models.ForeignKey(
        Condition, null=True, blank=True, on_delete=models.CASCADE, related_name="metric_runs"
    )
    group = models.CharField(max_length=50, help_text="Metric group key in generation.metrics.catalog.")
    version = models.CharField(max_length=50, blank=True, help_text="Group version the results were computed with.")
    inputs = models.CharField(
        max_length=64, blank=True,
        help_text="Fingerprint of the inputs (clip files; for a condition, the set of its clips) the results are for.",
    )
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True, help_text="Wall time of the last successful computation.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["clip", "group"], name="metricrun_unique_clip_group",
                                    condition=Q(clip__isnull=False)),
            models.UniqueConstraint(fields=["condition", "group"], name="metricrun_unique_condition_group",
                                    condition=Q(condition__isnull=False)),
            models.CheckConstraint(name="metricrun_one_target",
                                   condition=Q(clip__isnull=False, condition__isnull=True)
                                   | Q(clip__isnull=True, condition__isnull=False)),
        ]

    def __str__(self) -> str:
        target = f"clip {self.clip_id}" if self.clip_id else f"condition {self.condition_id}"
        return f"{self.group} on {target} ({self.status})"

    def claim(self) -> str:
        """Take the run for this worker (:meth:`LeasedClaim.claim_step` from pending to running)."""
        return self.claim_step(self.PENDING, self.RUNNING)
