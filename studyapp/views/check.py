"""The environment-check page, its form, and its sound-check clip under a signed, expiring URL.

The clip URL carries the participant token and the attempt's random nonce (never the number),
signed with its own salt and a timestamp; it is served only to the browser session that is this
participant, only while they are taking the check, and only for the current attempt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from studyapp import environment
from studyapp.models import Participant, Study
from studyapp.views.media import UnsatisfiableRange, parse_range
from studyapp.views.session import is_remembered

CHECK_URL_SALT = "syncmos.participant.check-clip"
CHUNK = 64 * 1024


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


def _private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "private, no-store"
    response["Accept-Ranges"] = "bytes"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _refuse(status: int, text: str) -> HttpResponse:
    return _private(HttpResponse(text, status=status, content_type="text/plain; charset=utf-8"))


def _read(path: str, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


@require_http_methods(["GET", "HEAD"])
def check_media(request: HttpRequest, signed: str) -> HttpResponse:
    try:
        token, nonce = unsign_check_clip_url(signed)
    except signing.SignatureExpired:
        return _refuse(403, "This sound check link has expired. Reload the page to continue.")
    except signing.BadSignature:
        return _refuse(404, "Not found.")
    if not is_remembered(request, token):
        return _refuse(403, "This sound check belongs to another session.")
    path = environment.serve_check_clip(token, nonce)
    if path is None:
        return _refuse(404, "Not found.")
    path = os.fspath(path)
    size = os.path.getsize(path)
    try:
        span = None if "HTTP_IF_RANGE" in request.META else parse_range(request.headers.get("Range"), size)
    except UnsatisfiableRange:
        return _private(HttpResponse(status=416, headers={"Content-Range": f"bytes */{size}"}))
    start, end = span or (0, size - 1)
    response = StreamingHttpResponse(_read(path, start, end - start + 1), status=206 if span else 200,
                                     content_type="video/mp4")
    response["Content-Length"] = str(end - start + 1)
    if span:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return _private(response)
