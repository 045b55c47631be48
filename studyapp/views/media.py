"""Clip media under opaque, signed, expiring URLs, with HTTP byte ranges.

The URL carries only the assignment token (random, different for every participant), signed with a
dedicated salt and a timestamp; it says nothing about the clip, its condition or its file. The
response carries no file name, no validator derived from the file, and may not be cached or shared.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from generation.models import Clip
from studyapp.models import Assignment, Participant
from studyapp.views.session import is_remembered

CLIP_URL_SALT = "syncmos.participant.clip-url"
CHUNK = 64 * 1024


class UnsatisfiableRange(Exception):
    pass


def clip_url(assignment_token: str) -> str:
    signed = signing.TimestampSigner(salt=CLIP_URL_SALT).sign(assignment_token)
    return reverse("participant:clip-media", args=[signed])


def unsign_clip_url(signed: str) -> str:
    """The assignment token of a clip URL; raises ``signing.BadSignature`` (or its ``SignatureExpired``)."""
    return signing.TimestampSigner(salt=CLIP_URL_SALT).unsign(signed, max_age=settings.SYNCMOS_CLIP_URL_MAX_AGE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for by a ``Range`` header, or None to send the whole file.

    Units other than bytes and multi-range requests are ignored (RFC 9110 lets a server send the
    whole representation instead); a malformed or unsatisfiable bytes range raises UnsatisfiableRange.
    """
    unit, _, spec = (header or "").strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = re.fullmatch(r"\s*(\d*)-(\d*)\s*", spec, flags=re.ASCII)
    if match is None or match.group(1) == match.group(2) == "":
        raise UnsatisfiableRange(header)
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix range: the last N bytes
        if int(last) == 0 or size == 0:
            raise UnsatisfiableRange(header)
        return max(size - int(last), 0), size - 1
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise UnsatisfiableRange(header)
    return start, end


def _read(path: str, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _private(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "private, no-store"
    response["Accept-Ranges"] = "bytes"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _refuse(status: int, text: str) -> HttpResponse:
    return _private(HttpResponse(text, status=status, content_type="text/plain; charset=utf-8"))


def _clip_path(request: HttpRequest, signed: str) -> str | HttpResponse:
    """The file to send, or the refusal: bad/expired signature, another session, not in progress."""
    try:
        token = unsign_clip_url(signed)
    except signing.SignatureExpired:
        return _refuse(403, "This video link has expired. Reload the page to continue.")
    except signing.BadSignature:
        return _refuse(404, "Not found.")
    assignment = Assignment.objects.select_related("participant", "study_clip__clip").filter(token=token).first()
    if assignment is None or not is_remembered(request, assignment.participant.token):
        return _refuse(403, "This video belongs to another session.")
    clip = assignment.study_clip.clip
    if assignment.participant.state != Participant.IN_PROGRESS or clip.status != Clip.READY or not clip.file:
        return _refuse(404, "Not found.")
    Participant.objects.filter(pk=assignment.participant_id).update(last_seen_at=timezone.now())  # watching
    return clip.file.path if os.path.isfile(clip.file.path) else _refuse(404, "Not found.")


@require_http_methods(["GET", "HEAD"])
def clip_media(request: HttpRequest, signed: str) -> HttpResponse:
    path = _clip_path(request, signed)
    if isinstance(path, HttpResponse):
        return path
    size = os.path.getsize(path)
    try:  # If-Range needs a validator we never hand out: then the whole file is the answer.
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
