"""Fixtures for the participant flow: an open study whose clips are real, playable H.264 + AAC mp4s
(made by ``tests.fixtures``), and a participant driven through the Django test client.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from studyapp.models import Assignment, Participant, PlaybackEvent, Study
from tests.fixtures import make_study


@pytest.fixture
def study(db, clip_files) -> Study:
    """An open study: 3 scales, 5 ready test clips, 4 clips per participant."""
    return make_study(clip_files)


@dataclass
class Session:
    """A participant driven through the Django test client (bob, in persona terms)."""

    client: Client
    participant: Participant

    @property
    def home(self) -> str:
        return reverse("participant:home", args=[self.participant.token])

    def begin(self):
        return self.client.post(reverse("participant:begin", args=[self.participant.token]))

    def post_json(self, name: str, body: object, raw: bytes | None = None):
        url = reverse(f"participant:{name}", args=[self.participant.token])
        data = raw if raw is not None else json.dumps(body)
        return self.client.post(url, data=data, content_type="application/json")

    def events(self, assignment: Assignment, *events: dict):
        return self.post_json("events", {"assignment": assignment.token, "events": list(events)})

    def ended(self, assignment: Assignment):
        """The clip played to its end, as the page reports it: "play", then "ended" a clip's length later."""
        self.events(assignment, {"kind": "play", "media_time": 0.0, "client_time": 1})
        backdate_plays(assignment, clip_duration(assignment))
        return self.events(assignment, {"kind": "ended", "media_time": clip_duration(assignment), "client_time": 2})

    def rate(self, assignment: Assignment, values: dict[str, int] | None = None, uuids: dict[str, str] | None = None):
        values = values or {"sync": 4, "visual": 3, "overall": 5}
        uuids = uuids or {key: str(uuid.uuid4()) for key in values}
        body = {"assignment": assignment.token, "response_time_ms": 1500,
                "ratings": {key: {"value": value, "uuid": uuids[key]} for key, value in values.items()}}
        return self.post_json("rate", body)


def start_session(study: Study, client: Client | None = None, query: str = "", viewport: str = "1280x800") -> Session:
    client = client or Client()
    url = reverse("participant:study-entry", args=[study.public_id]) + query
    response = client.post(url, {"consent": "yes", "viewport": viewport}, HTTP_USER_AGENT="pytest-browser/1.0")
    assert response.status_code == 302, response.content
    token = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    return Session(client, Participant.objects.get(token=token))


@pytest.fixture
def session(study) -> Session:
    return start_session(study)


def clip_duration(assignment: Assignment) -> float:
    return assignment.study_clip.clip.duration


def backdate_plays(assignment: Assignment, seconds: float) -> None:
    """Make the server have received the assignment's "play" events ``seconds`` ago (instead of sleeping)."""
    PlaybackEvent.objects.filter(assignment=assignment, kind=PlaybackEvent.PLAY).update(
        created_at=timezone.now() - timedelta(seconds=seconds)
    )


def mark_ended(assignment: Assignment) -> None:
    """Store what a page that played the clip to its end would have sent (without going through a view)."""
    PlaybackEvent.objects.create(assignment=assignment, kind=PlaybackEvent.PLAY, media_time=0.0)
    backdate_plays(assignment, clip_duration(assignment))
    PlaybackEvent.objects.create(assignment=assignment, kind=PlaybackEvent.ENDED, media_time=clip_duration(assignment))


# The environment check on (make_study turns it off): a desktop-sized window passes it, a phone does not.
ENVIRONMENT_CHECK = dict(
    allow_phones=False, min_viewport_width=800, min_viewport_height=500, min_face_px=100, face_height_share=0.5,
    audio_check=True, request_fullscreen=True,
)
DESKTOP_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.5 Mobile/15E148 Safari/604.1")


def desktop_report(**changes) -> dict:
    """What the check page's script reports from a laptop with a large browser window (CSS px)."""
    report = dict(viewport_width=1280, viewport_height=900, screen_width=1920, screen_height=1080,
                  device_pixel_ratio=1.0, max_touch_points=0, coarse_pointer=False, fine_pointer=True,
                  ua_mobile=False, player_width=876.0, player_height=324.0)
    report.update(changes)
    return report


PRACTICE_FEEDBACK = "The lips follow the voice closely here: a good match."


def make_quality_study(clip_files, *, practice: int = 1, gold: int = 2, tests: int = 2, **fields) -> Study:
    """An open study with ``practice`` practice clips first, ``gold`` gold clips mixed among ``tests`` test trials.

    Practice expects sync 4–5 (with feedback) and visual 3–5, overall don't care; gold expects sync 1–2 and
    overall 1–2, visual don't care (the fixture's revealing names do not matter here).
    """
    from studyapp.models import ExpectedAnswer, StudyClip

    fields.setdefault("gold_per_participant", gold)
    study = make_study(clip_files, n_clips=practice + gold + tests + 1, per_participant=tests, **fields)
    scales = {scale.key: scale for scale in study.scales.all()}
    study_clips = list(study.study_clips.order_by("id"))
    for study_clip in study_clips[:practice]:
        StudyClip.objects.filter(pk=study_clip.pk).update(role=StudyClip.ROLE_PRACTICE)
        ExpectedAnswer.objects.create(study_clip=study_clip, scale=scales["sync"], low=4, high=5,
                                      feedback=PRACTICE_FEEDBACK)
        ExpectedAnswer.objects.create(study_clip=study_clip, scale=scales["visual"], low=3, high=5)
    for study_clip in study_clips[practice:practice + gold]:
        StudyClip.objects.filter(pk=study_clip.pk).update(role=StudyClip.ROLE_GOLD)
        ExpectedAnswer.objects.create(study_clip=study_clip, scale=scales["sync"], low=1, high=2)
        ExpectedAnswer.objects.create(study_clip=study_clip, scale=scales["overall"], low=1, high=2)
    return study


GOLD_PASS = {"sync": 1, "visual": 5, "overall": 2}
GOLD_FAIL = {"sync": 4, "visual": 5, "overall": 2}
