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
