"""Saving a participant's ratings exactly once, and the playback telemetry that gates them.

A trial page sends one POST with the assignment token and, per scale, the value and a client UUID
(the idempotency key it created when it first showed the trial). ``save_ratings`` then, in one
transaction with the participant and assignment rows locked:

1. answers 404 for an unknown participant, or an assignment that is not theirs;
2. answers 400 when the scales sent are not exactly the study's scales;
3. if the assignment is already rated: the same UUIDs with the same values → the stored answer (a
   replay, nothing written); other UUIDs or other values (a second tab) → 409 with the stored
   answer, nothing written;
4. answers 403 unless the participant is in progress, 409 unless the clip was played to its end
   (``watched_to_end``: the main clip's events only; a DCR reference's or a pairwise B video's
   events are stored but do not count);
5. writes one Rating per scale and completes the assignment (with ``first_choice_ms``, the time
   from the questions unlocking to the first answer chosen, when the page sends it); a practice or
   gold trial gets its ``passed_check`` (``studyapp.quality``), and a gold failure beyond
   ``study.gold_failures_allowed`` screens the participant out (the response says
   ``screened_out``); otherwise the last trial completes the participant, after which the study
   may close itself (``assignment.close_if_complete``).

Every refusal is a ``RatingError`` raised before anything is written (or rolled back with it).
Parsing (``parse_submission``, ``parse_events``) is pure and does the 400s for malformed input.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from generation.models import Clip
from studyapp import assignment as assignment_rules
from studyapp import quality
from studyapp.models import (
    RATING_MAX, RATING_MIN, Assignment, ExpectedAnswer, Participant, PlaybackEvent, Rating, Scale, StudyClip,
    new_completion_code,
)

MAX_RESPONSE_TIME_MS = 2**31 - 1
MAX_EVENTS_PER_POST = 100
MAX_CLIENT_TIME = 2**53
EVENT_KINDS = {kind for kind, _ in PlaybackEvent.KIND_CHOICES}
# A clip was watched when the page reported "play", then "ended" at least this share into the clip …
ENDED_AT_SHARE = 0.9
# … and the server received the first "play" at least this share of the clip's length before the
# rating (server clock): a forged "ended" or an instantly scripted replay does not unlock rating.
PLAYED_FOR_SHARE = 0.8
# Events of the other videos on a trial page (DCR: the reference; pairwise: clip B) are telemetry only.
NOT_THE_MAIN_CLIP = ("reference", "b")


class RatingError(Exception):
    """A refused request: HTTP status, a stable machine code, a sentence for people, the stored answer."""

    def __init__(self, status: int, code: str, message: str, stored: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.stored = stored

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.stored is not None:
            body["ratings"] = self.stored
        return body


@dataclass(frozen=True)
class Answer:
    value: int
    uuid: uuid.UUID


@dataclass(frozen=True)
class Submission:
    assignment: str
    answers: dict[str, Answer]
    response_time_ms: int | None = None
    first_choice_ms: int | None = None


@dataclass(frozen=True)
class Outcome:
    replay: bool
    answers: dict[str, dict]
    completed: bool
    screened_out: bool = False

    @property
    def status(self) -> int:
        return 200 if self.replay else 201


def _bad(message: str) -> RatingError:
    return RatingError(400, "bad_request", message)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def load_json_object(body: bytes) -> dict:
    """Strict JSON (no NaN/Infinity) that must be an object."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise _bad("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.")
    return data


def _token(data: dict) -> str:
    token = data.get("assignment")
    if not isinstance(token, str) or not token or len(token) > 40:
        raise _bad("Missing or malformed assignment token.")
    return token


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _answer(key: str, raw: object) -> Answer:
    if not isinstance(raw, dict):
        raise _bad(f"The answer for {key!r} must be an object with 'value' and 'uuid'.")
    value, key_uuid = raw.get("value"), raw.get("uuid")
    if not _is_int(value) or not RATING_MIN <= value <= RATING_MAX:
        raise _bad(f"The answer for {key!r} must be a whole number from {RATING_MIN} to {RATING_MAX}.")
    try:
        parsed = uuid.UUID(key_uuid) if isinstance(key_uuid, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise _bad(f"The answer for {key!r} has a missing or malformed UUID.")
    return Answer(value=value, uuid=parsed)


def _milliseconds(raw: object, name: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _bad(f"{name} must be a number of milliseconds.")
    if not 0 <= raw <= MAX_RESPONSE_TIME_MS:
        raise _bad(f"{name} is out of range.")
    return round(raw)


def parse_submission(body: bytes) -> Submission:
    """Validate a rating POST's shape (400 on anything malformed); scales are checked later."""
    data = load_json_object(body)
    ratings = data.get("ratings")
    if not isinstance(ratings, dict) or not ratings:
        raise _bad("'ratings' must be an object with one answer per scale.")
    answers = {str(key): _answer(str(key), raw) for key, raw in ratings.items()}
    if len({a.uuid for a in answers.values()}) != len(answers):
        raise _bad("Each scale's answer needs its own UUID.")
    return Submission(_token(data), answers, _milliseconds(data.get("response_time_ms"), "response_time_ms"),
                      _milliseconds(data.get("first_choice_ms"), "first_choice_ms"))


def stored_answers(assignment: Assignment) -> dict[str, dict]:
    rows = Rating.objects.filter(assignment=assignment).select_related("scale")
    return {r.scale.key: {"value": r.value, "uuid": str(r.client_uuid)} for r in rows}


def _locked(participant_token: str, assignment_token: str) -> tuple[Participant, Assignment]:
    # of=("self",): lock the participant, not the joined Study row that enrolment locks.
    participant = (
        Participant.objects.select_for_update(of=("self",)).select_related("study").filter(token=participant_token).first()
    )
    assignment = None
    if participant is not None:
        assignment = Assignment.objects.select_for_update().filter(token=assignment_token, participant=participant).first()
    if assignment is None:
        raise RatingError(404, "not_found", "This clip is not part of your session.")
    return participant, assignment


def watched_to_end(assignment: Assignment) -> bool:
    """Whether the assignment's clip counts as played to its end, now.

    A "play" must be recorded before an "ended" reported at ``ENDED_AT_SHARE`` of the clip's duration
    or later, and the first "play" must have reached the server ``PLAYED_FOR_SHARE`` of the duration
    ago. A clip without a recorded duration needs only the "play" before an "ended".
    """
    duration = Clip.objects.filter(study_clips=assignment.study_clip_id).values_list("duration", flat=True).first()
    events = assignment.playback_events.exclude(detail__in=NOT_THE_MAIN_CLIP).order_by("id")
    first_play = events.filter(kind=PlaybackEvent.PLAY).first()
    if first_play is None:
        return False
    ended = events.filter(kind=PlaybackEvent.ENDED, id__gt=first_play.id)
    if not duration:
        return ended.exists()
    played_since = timezone.now() - timedelta(seconds=PLAYED_FOR_SHARE * duration)
    return first_play.created_at <= played_since and ended.filter(media_time__gte=ENDED_AT_SHARE * duration).exists()


def _check_scales(submission: Submission, scales: dict[str, Scale]) -> None:
    unknown = sorted(set(submission.answers) - set(scales))
    missing = sorted(set(scales) - set(submission.answers))
    if unknown:
        raise _bad(f"Unknown scale(s): {', '.join(unknown)}.")
    if missing:
        raise _bad(f"Please answer every question (missing: {', '.join(missing)}).")


def _replay_or_conflict(participant: Participant, submission: Submission, stored: dict[str, dict]) -> Outcome:
    # A replay repeats the stored answer exactly: two tabs sharing the UUIDs may still differ in the values.
    sent = {key: {"value": answer.value, "uuid": str(answer.uuid)} for key, answer in submission.answers.items()}
    if sent == stored:
        return Outcome(replay=True, answers=stored, completed=participant.state == Participant.COMPLETED,
                       screened_out=participant.state == Participant.SCREENED_OUT)
    raise RatingError(409, "already_rated", "This clip was already rated (perhaps in another tab).", stored)


def expected_answers(study_clip_id: int) -> dict[str, quality.Expected]:
    """The expected range per scale key of a practice or gold study clip (scales without one: don't care)."""
    rows = ExpectedAnswer.objects.filter(study_clip_id=study_clip_id).select_related("scale")
    return {row.scale.key: quality.Expected(row.low, row.high, row.feedback) for row in rows}


def _check(assignment: Assignment, submission: Submission) -> bool | None:
    """A practice or gold trial's verdict (None for a test trial)."""
    if assignment.role not in (StudyClip.ROLE_PRACTICE, StudyClip.ROLE_GOLD):
        return None
    given = {key: answer.value for key, answer in submission.answers.items()}
    return quality.passed(quality.check_answers(given, expected_answers(assignment.study_clip_id)))


def _gold_screen_out_reason(participant: Participant) -> str | None:
    """Why the participant is screened out by their gold answers so far, or None if they are not."""
    gold = participant.assignments.filter(role=StudyClip.ROLE_GOLD, completed_at__isnull=False)
    failed, answered = gold.filter(passed_check=False).count(), gold.count()
    if quality.gold_screens_out(failed, participant.study.gold_failures_allowed):
        return quality.gold_screen_out_reason(failed, answered)
    return None


def _write(participant: Participant, assignment: Assignment, submission: Submission, scales: dict[str, Scale]) -> None:
    """Store the ratings and move the assignment and the participant on (completed or screened out)."""
    now = timezone.now()
    Rating.objects.bulk_create(
        Rating(assignment=assignment, scale=scales[key], value=a.value, client_uuid=a.uuid,
               response_time_ms=submission.response_time_ms)
        for key, a in submission.answers.items()
    )
    assignment.completed_at = now
    assignment.started_at = assignment.started_at or now
    assignment.first_choice_ms = submission.first_choice_ms
    assignment.passed_check = _check(assignment, submission)
    assignment.save(update_fields=["completed_at", "started_at", "first_choice_ms", "passed_check"])
    participant.last_seen_at = now
    reason = _gold_screen_out_reason(participant) if assignment.passed_check is False else None
    if reason is not None:
        # A failed attention check past the allowance ends the session, even on the last trial: no code.
        participant.state = Participant.SCREENED_OUT
        participant.screened_out_reason = reason
        participant.ended_at = now
    elif not participant.assignments.filter(completed_at__isnull=True).exists():
        participant.state = Participant.COMPLETED
        participant.completion_code = participant.study.completion_code or new_completion_code()
        participant.completed_at = now
    participant.save(update_fields=["last_seen_at", "state", "completion_code", "completed_at",
                                    "screened_out_reason", "ended_at"])


def save_ratings(participant_token: str, submission: Submission) -> Outcome:
    """Store one trial's answers exactly once (see the module docstring for the rules)."""
    with transaction.atomic():
        participant, assignment = _locked(participant_token, submission.assignment)
        scales = {scale.key: scale for scale in participant.study.scales.all()}
        _check_scales(submission, scales)
        if stored := stored_answers(assignment):
            return _replay_or_conflict(participant, submission, stored)
        if participant.state != Participant.IN_PROGRESS:
            raise RatingError(403, "not_in_progress", "This session is not accepting ratings any more.")
        if not watched_to_end(assignment):
            raise RatingError(409, "not_watched", "Please play the clip to its end before rating it.")
        try:
            with transaction.atomic():
                _write(participant, assignment, submission, scales)
        except IntegrityError:
            # A concurrent request won (databases without row locks), or a UUID was used before.
            if stored := stored_answers(assignment):
                return _replay_or_conflict(participant, submission, stored)
            raise RatingError(409, "duplicate_key", "These answer keys were already used for another clip.") from None
    completed = participant.state == Participant.COMPLETED
    if completed:
        # After the commit: the participant's ratings are what may fill the study up.
        assignment_rules.close_if_complete(participant.study)
    return Outcome(replay=False, answers=stored_answers(assignment), completed=completed,
                   screened_out=participant.state == Participant.SCREENED_OUT)


@dataclass(frozen=True)
class Event:
    kind: str
    media_time: float | None
    client_time: int | None
    detail: str


def _event(raw: object) -> Event:
    if not isinstance(raw, dict) or raw.get("kind") not in EVENT_KINDS:
        raise _bad(f"Each event needs a kind out of {', '.join(sorted(EVENT_KINDS))}.")
    media_time, client_time, detail = raw.get("media_time"), raw.get("client_time"), raw.get("detail", "")
    if media_time is not None and (
        isinstance(media_time, bool) or not isinstance(media_time, int | float) or not 0 <= media_time < 1e7
    ):
        raise _bad("media_time must be a number of seconds.")
    if client_time is not None and (not _is_int(client_time) or not 0 <= client_time < MAX_CLIENT_TIME):
        raise _bad("client_time must be milliseconds since the epoch.")
    if not isinstance(detail, str):
        raise _bad("detail must be a string.")
    return Event(raw["kind"], None if media_time is None else float(media_time), client_time, detail[:200])


def parse_events(body: bytes) -> tuple[str, list[Event]]:
    """Validate a playback-events POST: ``{"assignment": token, "events": [{kind, media_time, client_time, detail}]}``."""
    data = load_json_object(body)
    events = data.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS_PER_POST:
        raise _bad(f"'events' must be a list of 1 to {MAX_EVENTS_PER_POST} events.")
    return _token(data), [_event(raw) for raw in events]


def record_events(participant_token: str, assignment_token: str, events: list[Event]) -> int:
    """Store playback events of one of the participant's assignments; returns how many."""
    assignment = Assignment.objects.select_related("participant").filter(
        token=assignment_token, participant__token=participant_token
    ).first()
    if assignment is None:
        raise RatingError(404, "not_found", "This clip is not part of your session.")
    # A completed participant's page still reports its last moments (e.g. hidden while navigating away).
    if assignment.participant.state not in (Participant.IN_PROGRESS, Participant.COMPLETED):
        raise RatingError(403, "not_in_progress", "This session is not recording playback any more.")
    PlaybackEvent.objects.bulk_create(
        PlaybackEvent(assignment=assignment, kind=e.kind, media_time=e.media_time, client_time=e.client_time,
                      detail=e.detail)
        for e in events
    )
    return len(events)
