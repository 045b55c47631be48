"""The environment-check page, its form, and its sound-check clip under a signed, expiring URL.

The clip URL carries the participant token and the attempt's random nonce (never the number),
signed with its own salt and a timestamp; it is served only to the browser session that is this
participant, only while they are taking the check, and only for the current attempt.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from studyapp import environment
from studyapp.models import Participant, Study
from studyapp.views.media import private_mp4, refuse
from studyapp.views.session import is_remembered

CHECK_URL_SALT = "syncmos.participant.check-clip"


def check_clip_url(participant_token: str, nonce: str) -> str:
    signed = signing.TimestampSigner(salt=CHECK_URL_SALT).sign(f"{participant_token}.{nonce}")
    return reverse("participant:check-media", args=[signed])


def unsign_check_clip_url(signed: str) -> tuple[str, str]:
    """(participant token, attempt nonce); raises ``signing.BadSignature`` (or its ``SignatureExpired``)."""
    value = signing.TimestampSigner(salt=CHECK_URL_SALT).unsign(signed, max_age=settings.SYNCMOS_CLIP_URL_MAX_AGE)
    token, _, nonce = value.partition(".")
    return token, nonce


def render_check(request: HttpRequest, participant: Participant) -> HttpResponse:
    """The check page: what the last attempt said, the player box, the sound check."""
    study = participant.study
    audio = environment.prepare_check(participant) if study.audio_check else {}
    last = environment.last_attempt(participant)
    width, height = environment.check_clip_size(study)
    context = {
        "study": study, "participant": participant, "audio_check": study.audio_check,
        "audio_confirmed": bool(audio.get("passed")),
        "tries_left": environment.AUDIO_TRIES - int(audio.get("tries", 0)),
        "nonce": audio.get("nonce", ""),
        "clip_url": check_clip_url(participant.token, audio["nonce"]) if audio.get("nonce") else "",
        "clip_width": width, "clip_height": height,
        "numbers": list(environment.CHECK_WORDS),
        # DCR trials show two videos side by side (views/trial.py), so the check measures that layout.
        "layout": "sequence" if study.method == Study.METHOD_DCR else "single",
        "reasons": last["reasons"] if last and not last["passed"] and last["may_retry"] else [],
        "attempted": last is not None,
    }
    return render(request, "studyapp/environment.html", context)


@require_http_methods(["GET", "HEAD"])
def check_media(request: HttpRequest, signed: str) -> HttpResponse:
    try:
        token, nonce = unsign_check_clip_url(signed)
    except signing.SignatureExpired:
        return refuse(403, "This sound check link has expired. Reload the page to continue.")
    except signing.BadSignature:
        return refuse(404, "Not found.")
    if not is_remembered(request, token):
        return refuse(403, "This sound check belongs to another session.")
    path = environment.serve_check_clip(token, nonce)
    if path is None:
        return refuse(404, "Not found.")
    return private_mp4(request, os.fspath(path))
