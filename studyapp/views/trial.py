"""One trial page: the clip (or, by the study's method, the clip after its reference, or two clips to
compare), the questions, and what trial.js needs. Only opaque tokens and signed URLs reach the page.

The layouts, by method:

* ACR and ACR-HR ("single"): one clip. The hidden reference of ACR-HR is rated like any clip, so
  nothing on the page differs.
* DCR ("sequence", ITU-T P.910 degradation category rating): the reference, labelled "Reference",
  then the clip, labelled "Clip", side by side (stacked on narrow windows); one Play control plays
  the reference and then the clip; the questions unlock once both have ended.
* Pairwise ("pair"): clips "A" and "B" (same source and audio) play in sync in one frame; a switch
  shows and sounds one of them while both keep playing; the questions compare them.

Practice trials are counted apart ("Practice clip 1 of 2"); test and gold trials are counted together
("Clip 3 of 10") and look the same, so a participant cannot tell a gold clip from any other.

Faithful to P.910 DCR: the reference is presented first, then the clip, and the rating is given on
the impairment scale after both. UNVERIFIED choices: no grey interval between the two (the clip
starts when the reference ends); the pair can be replayed as often as wanted; the pairwise videos are
kept within ~40 ms of each other (trial.js: the hidden one plays a little faster or slower, or seeks
when far off), a threshold chosen to stay under a video frame and well under the ~100 ms at which
audio-visual asynchrony becomes noticeable; the hidden one is silenced by an inaudible volume rather
than muted where the browser allows (Chromium stalls a video ~0.1 s when it is unmuted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from generation.models import Clip
from studyapp.models import RATING_MIN, Assignment, Participant, StudyClip
from studyapp.ratings import watched_to_end
from studyapp.views.media import B, MAIN, REFERENCE, clip_url, served_clip, trial_sides

logger = logging.getLogger(__name__)

SINGLE = "single"
SEQUENCE = "sequence"
PAIR = "pair"

# Element id (trial.js, the browser tests) and the name a participant sees and hears for each side.
VIDEO_IDS = {MAIN: "clip", REFERENCE: "reference", B: "clip-b"}

# What the player says, by layout: the Play button's labels and the hint beside it.
PLAYER_TEXTS = {
    SINGLE: {
        "play": "Play clip", "pause": "Pause", "replay": "Play again",
        "start": "Press Play and watch the whole clip with the sound on. The questions unlock when it ends.",
        "done": "Now answer the questions below. You may play the clip again.",
        "again": "Press Play and watch the clip to its end again. The questions unlock when it ends.",
    },
    SEQUENCE: {
        "play": "Play", "pause": "Pause", "replay": "Play both again",
        "start": "Press Play: the reference plays first, then the clip. Watch both with the sound on. "
                 "The questions unlock when the clip ends.",
        "done": "Now answer the questions below. You may play both again.",
        "again": "Press Play and watch the reference and the clip to the end again. The questions unlock when "
                 "the clip ends.",
    },
    PAIR: {
        "play": "Play", "pause": "Pause", "replay": "Play again",
        "start": "Press Play and watch to the end with the sound on. Switch between A and B at any time (buttons "
                 "or keys A and B): both keep playing in step. The questions unlock at the end.",
        "done": "Now answer the questions below. You may play again and switch between A and B.",
        "again": "Press Play and watch to the end again. The questions unlock at the end.",
    },
}


@dataclass(frozen=True)
class TrialVideo:
    side: str
    element_id: str
    caption: str  # shown above the video ("" for a single clip)
    accessible_name: str
    url: str


@dataclass(frozen=True)
class TrialNumber:
    """Where this trial stands: practice trials count apart from test and gold trials."""

    practice: bool
    number: int  # 1-based among the trials of its kind
    total: int
    done_before: int

    @property
    def heading(self) -> str:
        return f"{'Practice clip' if self.practice else 'Clip'} {self.number} of {self.total}"


def trial_number(participant: Participant, assignment: Assignment) -> TrialNumber:
    practice = assignment.role == StudyClip.ROLE_PRACTICE
    same_kind = participant.assignments.filter(role=StudyClip.ROLE_PRACTICE) if practice else \
        participant.assignments.exclude(role=StudyClip.ROLE_PRACTICE)
    before = same_kind.filter(position__lt=assignment.position).count()
    return TrialNumber(practice=practice, number=before + 1, total=same_kind.count(), done_before=before)


def layout_of(sides: tuple[str, ...]) -> str:
    if B in sides:
        return PAIR
    return SEQUENCE if REFERENCE in sides else SINGLE


def trial_videos(assignment: Assignment) -> list[TrialVideo]:
    """The videos of a trial in the order they play, each under its own signed URL."""
    sides = trial_sides(assignment)
    layout = layout_of(sides)
    names = {
        SINGLE: {MAIN: ("", "The clip to rate")},
        SEQUENCE: {REFERENCE: ("Reference", "Reference clip"), MAIN: ("Clip", "The clip to rate")},
        PAIR: {MAIN: ("A", "Clip A"), B: ("B", "Clip B")},
    }[layout]
    return [TrialVideo(side, VIDEO_IDS[side], *names[side], clip_url(assignment.token, side)) for side in sides]


def _return_url(participant: Participant) -> str:
    """Where "Return this study" posts, when the flow offers it."""
    try:
        return reverse("participant:return", args=[participant.token])
    except NoReverseMatch:
        return ""


def _trial_config(request: HttpRequest, participant: Participant, assignment: Assignment, scales: list[dict],
                  layout: str) -> dict:
    """What trial.js needs: opaque tokens, endpoint URLs, the scale keys, the layout, whether the clip was
    seen to its end."""
    return {
        "participant": participant.token, "assignment": assignment.token, "scales": [s["key"] for s in scales],
        "layout": layout, "texts": PLAYER_TEXTS[layout], "watched": watched_to_end(assignment),
        "fullscreen": participant.study.request_fullscreen,
        "rateUrl": reverse("participant:rate", args=[participant.token]),
        "eventsUrl": reverse("participant:events", args=[participant.token]),
        "nextUrl": reverse("participant:home", args=[participant.token]), "csrf": get_token(request),
    }


def _missing_video(request: HttpRequest, participant: Participant, assignment: Assignment) -> HttpResponse | None:
    """A 503 instead of a trial that cannot be shown as designed (a DCR clip without a ready reference)."""
    for side in trial_sides(assignment):
        clip = served_clip(assignment, side)
        if clip is None or clip.status != Clip.READY or not clip.file:
            logger.error("assignment %s has no ready clip for side %r; check the study design", assignment.pk, side)
            return render(request, "studyapp/unavailable.html", {"study": participant.study, "status": 503},
                          status=503)
    return None


def render_trial(request: HttpRequest, participant: Participant, assignment: Assignment) -> HttpResponse:
    assignment = Assignment.objects.select_related(
        "participant__study", "study_clip__clip__condition", "study_clip__clip__reference", "paired_study_clip__clip",
    ).get(pk=assignment.pk)
    if (refusal := _missing_video(request, participant, assignment)) is not None:
        return refusal
    if assignment.started_at is None:
        Assignment.objects.filter(pk=assignment.pk, started_at__isnull=True).update(started_at=timezone.now())
    scales = [
        {"key": s.key, "question": s.question, "options": list(enumerate(s.labels, start=RATING_MIN))}
        for s in participant.study.scales.all()
    ]
    videos = trial_videos(assignment)
    layout = layout_of(tuple(v.side for v in videos))
    context = {
        "study": participant.study, "trial": trial_number(participant, assignment), "scales": scales,
        "videos": videos, "layout": layout, "texts": PLAYER_TEXTS[layout], "return_url": _return_url(participant),
        "config": _trial_config(request, participant, assignment, scales, layout),
    }
    return render(request, "studyapp/trial.html", context)
