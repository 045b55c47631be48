"""Studies, their scales and clips, participants, their assignments, ratings and playback telemetry.

Database constraints make the study rules true even under concurrent requests: one rating per
assignment and scale, one assignment per participant and study clip, unique idempotency keys and
tokens, ratings inside the scale.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

ACR_LABELS = ["Bad", "Poor", "Fair", "Good", "Excellent"]
RATING_MIN = 1
RATING_MAX = 5

DEFAULT_SCALES = [
    ("sync", "How well do the lip movements match the speech?"),
    ("visual", "How good is the visual quality of the face, especially the mouth?"),
    ("overall", "Overall, how good is this talking-head video?"),
]


def new_token() -> str:
    """An unguessable URL token (128 bits)."""
    return secrets.token_urlsafe(16)


def new_completion_code() -> str:
    return secrets.token_hex(4).upper()


def new_seed() -> int:
    return secrets.randbelow(2**31)


class Study(models.Model):
    METHOD_ACR = "acr"
    METHOD_ACR_HR = "acr_hr"
    METHOD_DCR = "dcr"
    METHOD_PAIRWISE = "pairwise"
    METHOD_CHOICES = [
        (METHOD_ACR, "ACR (absolute category rating)"),
        (METHOD_ACR_HR, "ACR with hidden reference"),
        (METHOD_DCR, "DCR (degradation category rating)"),
        (METHOD_PAIRWISE, "pairwise comparison"),
    ]
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"
    STATUS_CHOICES = [(DRAFT, "draft"), (OPEN, "open"), (CLOSED, "closed")]

    title = models.CharField(max_length=200)
    public_id = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    instructions = models.TextField(blank=True)
    consent_text = models.TextField(blank=True)
    method = models.CharField(max_length=20, choices=METHOD_CHOICES, default=METHOD_ACR)
    clips_per_participant = models.PositiveIntegerField(default=10)
    ratings_per_clip = models.PositiveIntegerField(
        default=15, help_text="Stop rule: a clip with this many completed ratings is no longer handed out."
    )
    session_timeout_minutes = models.PositiveIntegerField(
        default=120, help_text="A participant not seen for this long is timed out; their clips are handed out again."
    )
    seed = models.PositiveIntegerField(default=new_seed, help_text="Base of every participant's random order.")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=DRAFT, db_index=True)
    completion_code = models.CharField(
        max_length=40, blank=True, help_text="Shown at the end (e.g. the Prolific code); blank = one per participant."
    )
    completion_url = models.URLField(blank=True, help_text="Where a finished participant is sent, if anywhere.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(name="study_clips_per_participant_positive", condition=Q(clips_per_participant__gte=1)),
            models.CheckConstraint(name="study_ratings_per_clip_positive", condition=Q(ratings_per_clip__gte=1)),
        ]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        # The choices stay for the methods still to come; until then a study must not silently run as ACR.
        if self.method != self.METHOD_ACR:
            raise ValidationError(
                {"method": f"{self.get_method_display()} is not available yet; only ACR is implemented."}
            )

    def add_default_scales(self) -> None:
        for position, (key, question) in enumerate(DEFAULT_SCALES):
            Scale.objects.get_or_create(
                study=self, key=key, defaults={"question": question, "labels": ACR_LABELS, "position": position}
            )


class Scale(models.Model):
    """One question asked about every clip, answered on a 5-point ACR scale."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="scales")
    key = models.SlugField(max_length=30)
    question = models.CharField(max_length=300)
    labels = models.JSONField(default=list, help_text="Five labels, worst first (Bad … Excellent).")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["study", "position", "key"]
        constraints = [models.UniqueConstraint(fields=["study", "key"], name="scale_unique_study_key")]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        if not isinstance(self.labels, list) or len(self.labels) != RATING_MAX - RATING_MIN + 1:
            raise ValidationError({"labels": f"give exactly {RATING_MAX - RATING_MIN + 1} labels, worst first"})


class StudyClip(models.Model):
    ROLE_TEST = "test"
    ROLE_PRACTICE = "practice"
    ROLE_GOLD = "gold"
    ROLE_CHOICES = [(ROLE_TEST, "test"), (ROLE_PRACTICE, "practice"), (ROLE_GOLD, "gold")]

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="study_clips")
    clip = models.ForeignKey("generation.Clip", on_delete=models.PROTECT, related_name="study_clips")
    role = models.CharField(max_length=10, choices=ROLE_CHOICES, default=ROLE_TEST)

    class Meta:
        ordering = ["study", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "clip"], name="studyclip_unique_study_clip")]

    def __str__(self) -> str:
        return f"{self.study_id}:{self.clip_id} ({self.role})"


class Participant(models.Model):
    STARTED = "started"
    SCREENED_OUT = "screened_out"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    RETURNED = "returned"
    TIMED_OUT = "timed_out"
    STATE_CHOICES = [
        (STARTED, "started"), (SCREENED_OUT, "screened out"), (IN_PROGRESS, "in progress"),
        (COMPLETED, "completed"), (RETURNED, "returned"), (TIMED_OUT, "timed out"),
    ]
    # Assignments of these participants no longer count towards a clip's coverage.
    INACTIVE_STATES = (SCREENED_OUT, RETURNED, TIMED_OUT)

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="participants")
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    external_id = models.CharField(max_length=100, blank=True, help_text="e.g. PROLIFIC_PID")
    state = models.CharField(max_length=20, choices=STATE_CHOICES, default=STARTED, db_index=True)
    seed = models.PositiveIntegerField(default=new_seed)
    completion_code = models.CharField(max_length=40, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    viewport = models.CharField(max_length=40, blank=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"], condition=~Q(external_id=""), name="participant_unique_external_id"
            ),
        ]

    def __str__(self) -> str:
        return f"participant {self.pk}"


class Assignment(models.Model):
    """One clip to rate by one participant, at one position of their personal order."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="assignments")
    study_clip = models.ForeignKey(StudyClip, on_delete=models.PROTECT, related_name="assignments")
    position = models.PositiveIntegerField()
    # The only handle on the clip a participant ever sees; different for every participant.
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    issued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "position"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "study_clip"], name="assignment_unique_participant_clip"),
            models.UniqueConstraint(fields=["participant", "position"], name="assignment_unique_participant_position"),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} (#{self.position})"


class Rating(models.Model):
    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="ratings")
    scale = models.ForeignKey(Scale, on_delete=models.PROTECT, related_name="ratings")
    value = models.PositiveSmallIntegerField()
    client_uuid = models.UUIDField(unique=True, help_text="Idempotency key sent by the page; a replay returns this row.")
    response_time_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["assignment", "scale"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "scale"], name="rating_unique_assignment_scale"),
            models.CheckConstraint(
                name="rating_value_on_scale", condition=Q(value__gte=RATING_MIN) & Q(value__lte=RATING_MAX)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scale_id}={self.value}"


class PlaybackEvent(models.Model):
    PLAY = "play"
    PAUSE = "pause"
    SEEK = "seek"
    ENDED = "ended"
    VISIBILITY = "visibility"
    FULLSCREEN = "fullscreen"
    ERROR = "error"
    KIND_CHOICES = [
        (PLAY, "play"), (PAUSE, "pause"), (SEEK, "seek"), (ENDED, "ended"),
        (VISIBILITY, "visibility change"), (FULLSCREEN, "fullscreen change"), (ERROR, "player error"),
    ]

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="playback_events")
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    media_time = models.FloatField(null=True, blank=True, help_text="Player position in seconds.")
    client_time = models.BigIntegerField(null=True, blank=True, help_text="Browser clock, ms since the epoch.")
    detail = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["assignment", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}@{self.media_time}"
