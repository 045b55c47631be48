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

# ITU-T P.910 (2023) §6.2: the DCR impairment scale, worst first.
DCR_LABELS = ["Very annoying", "Annoying", "Slightly annoying", "Perceptible but not annoying", "Imperceptible"]
# A comparison (P.910 CCR folded onto 1–5): 1 = the first clip (A) much better … 5 = the second (B) much better.
PAIRWISE_LABELS = ["A much better", "A slightly better", "About the same", "B slightly better", "B much better"]

DEFAULT_SCALES = [
    ("sync", "How well do the lip movements match the speech?"),
    ("visual", "How good is the visual quality of the face, especially the mouth?"),
    ("overall", "Overall, how good is this talking-head video?"),
]
DEFAULT_DCR_SCALES = [
    ("sync", "Compared with the reference, how do the lip movements match the speech?"),
    ("visual", "Compared with the reference, how is the visual quality of the face, especially the mouth?"),
    ("overall", "Compared with the reference, how would you rate this video overall?"),
]
DEFAULT_PAIRWISE_SCALES = [
    ("sync", "In which clip do the lip movements match the speech better?"),
    ("visual", "Which clip has the better visual quality of the face, especially the mouth?"),
    ("overall", "Overall, which clip is better?"),
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
    completion_url = models.URLField(
        blank=True, help_text="Where a finished or screened-out participant is sent with ?cc=<code> (e.g. "
        "https://app.prolific.com/submissions/complete)."
    )
    screened_out_code = models.CharField(
        max_length=40, blank=True, help_text="Completion code for participants screened out (Prolific's screen-out "
        "code); blank = they are not sent back with a code."
    )

    # ---- assignment rules (studyapp.assignment) ----
    CONTENT_ITEM = "item"
    CONTENT_SENTENCE = "sentence"
    CONTENT_SOURCE = "source"
    CONTENT_KEY_CHOICES = [
        (CONTENT_ITEM, "sentence and face together"), (CONTENT_SENTENCE, "sentence (what is said)"),
        (CONTENT_SOURCE, "face (the source video)"),
    ]
    LIMIT_NONE = "none"
    LIMIT_ONCE = "once"
    LIMIT_ONCE_PER_CONDITION = "once_per_condition"
    CONTENT_LIMIT_CHOICES = [
        (LIMIT_NONE, "no limit"), (LIMIT_ONCE, "at most once"), (LIMIT_ONCE_PER_CONDITION, "at most once per condition"),
    ]
    content_key = models.CharField(
        max_length=20, choices=CONTENT_KEY_CHOICES, default=CONTENT_ITEM,
        help_text="What counts as the same content for the limit below.",
    )
    content_limit = models.CharField(
        max_length=20, choices=CONTENT_LIMIT_CHOICES, default=LIMIT_NONE,
        help_text="How often one participant may see the same content.",
    )
    no_condition_twice_in_a_row = models.BooleanField(
        default=True, help_text="Never show two clips of the same condition one after the other."
    )
    gold_per_participant = models.PositiveIntegerField(
        default=0, help_text="Gold clips mixed among each participant's test clips (spread out, never first)."
    )
    gold_failures_allowed = models.PositiveIntegerField(
        default=0, help_text="A participant who fails more gold clips than this is screened out."
    )
    auto_close = models.BooleanField(
        default=False, help_text="Close the study by itself once every test clip has its ratings per clip."
    )
    target_ci_half_width = models.FloatField(
        null=True, blank=True,
        help_text="Monitoring: the study may be closed once every condition's 95% CI half-width (MOS points) is "
        "below this, on every scale.",
    )

    # ---- environment check before rating (studyapp.environment) ----
    allow_phones = models.BooleanField(default=False, help_text="Let participants on phones take part.")
    min_viewport_width = models.PositiveIntegerField(default=800, help_text="CSS pixels.")
    min_viewport_height = models.PositiveIntegerField(default=500, help_text="CSS pixels.")
    min_face_px = models.PositiveIntegerField(
        # 100: the trial player is 36% of the window's height, so a face filling half the video passes in a
        # browser window about 560 px tall (a 768-px laptop screen) — 150 would turn most laptops away.
        default=100, help_text="The face must be shown at least this tall on the participant's screen (CSS pixels)."
    )
    face_height_share = models.FloatField(
        default=0.5, help_text="The face's height as a share of the video's height (measured from the clips when "
        "the study is opened)."
    )
    audio_check = models.BooleanField(
        default=True, help_text="Participants must report a number spoken in a short check clip before rating."
    )
    request_fullscreen = models.BooleanField(default=True, help_text="Ask for fullscreen when the ratings start.")
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
        if not 0 < self.face_height_share <= 1:
            raise ValidationError({"face_height_share": "give a share between 0 and 1"})
        if self.target_ci_half_width is not None and self.target_ci_half_width <= 0:
            raise ValidationError({"target_ci_half_width": "give a positive number of MOS points"})

    def default_scales(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The (key, question) pairs and the labels a new study of this method starts with."""
        if self.method == self.METHOD_DCR:
            return DEFAULT_DCR_SCALES, DCR_LABELS
        if self.method == self.METHOD_PAIRWISE:
            return DEFAULT_PAIRWISE_SCALES, PAIRWISE_LABELS
        return DEFAULT_SCALES, ACR_LABELS

    def add_default_scales(self) -> None:
        questions, labels = self.default_scales()
        for position, (key, question) in enumerate(questions):
            Scale.objects.get_or_create(
                study=self, key=key, defaults={"question": question, "labels": labels, "position": position}
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


class ExpectedAnswer(models.Model):
    """What a practice or gold clip should get on one scale: a range (a practice answer 4 ± 1 is 3–5).

    Scales without an expected answer are "don't care". For practice clips ``feedback`` is shown to the
    participant after they answer (whether or not they were inside the range).
    """

    study_clip = models.ForeignKey(StudyClip, on_delete=models.CASCADE, related_name="expected_answers")
    scale = models.ForeignKey(Scale, on_delete=models.CASCADE, related_name="expected_answers")
    low = models.PositiveSmallIntegerField()
    high = models.PositiveSmallIntegerField()
    feedback = models.TextField(blank=True, help_text="Practice: what the participant is told about this clip.")

    class Meta:
        ordering = ["study_clip", "scale"]
        constraints = [
            models.UniqueConstraint(fields=["study_clip", "scale"], name="expected_unique_clip_scale"),
            models.CheckConstraint(
                name="expected_range_on_scale",
                condition=Q(low__gte=RATING_MIN) & Q(high__lte=RATING_MAX) & Q(low__lte=models.F("high")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scale_id}: {self.low}–{self.high}"

    def accepts(self, value: int) -> bool:
        return self.low <= value <= self.high


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

    # The researcher's review after the session (P.910 Crowd's two tiers: paid, and also used in the analysis).
    REVIEW_PENDING = ""
    REVIEW_ACCEPTED = "accepted"
    REVIEW_USED = "used"
    REVIEW_REJECTED = "rejected"
    REVIEW_CHOICES = [
        (REVIEW_PENDING, "not reviewed"), (REVIEW_ACCEPTED, "accepted, not used"),
        (REVIEW_USED, "accepted and used"), (REVIEW_REJECTED, "rejected"),
    ]

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="participants")
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    external_id = models.CharField(max_length=100, blank=True, help_text="e.g. PROLIFIC_PID")
    external_study_id = models.CharField(max_length=100, blank=True, help_text="e.g. Prolific's STUDY_ID")
    external_session_id = models.CharField(max_length=100, blank=True, help_text="e.g. Prolific's SESSION_ID")
    state = models.CharField(max_length=20, choices=STATE_CHOICES, default=STARTED, db_index=True)
    seed = models.PositiveIntegerField(default=new_seed)
    completion_code = models.CharField(max_length=40, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    viewport = models.CharField(max_length=40, blank=True)
    environment = models.JSONField(default=dict, blank=True, help_text="What the environment check measured.")
    audio_check_answer = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The number spoken in this participant's audio check (never sent to them)."
    )
    screened_out_reason = models.CharField(max_length=300, blank=True)
    review = models.CharField(max_length=10, choices=REVIEW_CHOICES, default=REVIEW_PENDING, blank=True, db_index=True)
    review_note = models.CharField(max_length=300, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="When the session ended any other way.")
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

    @classmethod
    def counting(cls, prefix: str = "") -> Q:
        """Participants whose assignments count towards coverage and whose ratings are valid: not screened
        out, returned or timed out, and not rejected or set aside ("accepted, not used") by the researcher.
        ``prefix`` is the lookup path to the participant (e.g. ``"participant__"`` from an Assignment)."""
        return ~Q(**{f"{prefix}state__in": cls.INACTIVE_STATES}) & Q(
            **{f"{prefix}review__in": (cls.REVIEW_PENDING, cls.REVIEW_USED)}
        )


class Assignment(models.Model):
    """One trial of one participant, at one position of their personal order.

    ``role`` is the study clip's role when the trial was issued (practice trials come first and do not
    count towards coverage). A pairwise trial shows ``study_clip`` as A and ``paired_study_clip`` as B
    (same source and audio, another condition); a DCR trial shows the clip's reference beside it.
    """

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="assignments")
    study_clip = models.ForeignKey(StudyClip, on_delete=models.PROTECT, related_name="assignments")
    paired_study_clip = models.ForeignKey(
        StudyClip, null=True, blank=True, on_delete=models.PROTECT, related_name="paired_assignments"
    )
    role = models.CharField(max_length=10, choices=StudyClip.ROLE_CHOICES, default=StudyClip.ROLE_TEST)
    position = models.PositiveIntegerField()
    # The only handle on the clip a participant ever sees; different for every participant.
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    issued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    first_choice_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From the questions unlocking to the first answer chosen."
    )
    passed_check = models.BooleanField(
        null=True, blank=True, help_text="Practice and gold: every answer inside its expected range."
    )
    feedback_seen_at = models.DateTimeField(null=True, blank=True, help_text="Practice: feedback acknowledged.")

    class Meta:
        ordering = ["participant", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "study_clip"], condition=Q(paired_study_clip__isnull=True),
                name="assignment_unique_participant_clip",
            ),
            models.UniqueConstraint(
                fields=["participant", "study_clip", "paired_study_clip"], condition=Q(paired_study_clip__isnull=False),
                name="assignment_unique_participant_pair",
            ),
            models.CheckConstraint(
                name="assignment_pair_differs", condition=~Q(paired_study_clip=models.F("study_clip")),
            ),
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
    SWITCH = "switch"
    CHOICE = "choice"
    ERROR = "error"
    KIND_CHOICES = [
        (PLAY, "play"), (PAUSE, "pause"), (SEEK, "seek"), (ENDED, "ended"),
        (VISIBILITY, "visibility change"), (FULLSCREEN, "fullscreen change"),
        (SWITCH, "pairwise A/B switch"), (CHOICE, "answer chosen"), (ERROR, "player error"),
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
