"""Clip media under opaque, signed, expiring URLs, with HTTP byte ranges.

A trial shows up to two videos: the clip to rate ("main"), and by the study's method its reference
(DCR, "reference") or the second clip of a comparison (pairwise, "b"). Every one of them is served
from ``/m/<signed>``, where the signed value is the assignment token (random, different for every
participant) and a tag that names the side only to the server: an HMAC of the token and the side,
so the tags of one trial say nothing about those of another. The file behind each side is resolved
here, server-side, from the assignment; a side that does not apply to the assignment is a 404. The
URL is signed with a dedicated salt and a timestamp and only served to the browser session of the
participant it belongs to. It says nothing about the clip, its condition or its file; the response
carries no file name, no validator derived from the file, and may not be cached or shared.
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
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.http import require_http_methods

from generation.models import Clip, Condition
from studyapp.models import Assignment, Participant, Study
from studyapp.views.session import is_remembered

CLIP_URL_SALT = "syncmos.participant.clip-url"
SIDE_TAG_SALT = CLIP_URL_SALT + ".side"
CHUNK = 64 * 1024

MAIN = "main"  # the clip to rate (pairwise: clip A)
REFERENCE = "reference"  # DCR: the reference shown before the clip
B = "b"  # pairwise: clip B
SIDES = (MAIN, REFERENCE, B)
# Tokens are URL-safe base64 (letters, digits, "-" and "_"): the dot cannot be part of one.
TAG_SEPARATOR = "."
TAG_LENGTH = 16


class UnsatisfiableRange(Exception):
    pass


def side_tag(assignment_token: str, side: str) -> str:
    """An opaque name of one side of one assignment: only the server can tell which side it is."""
    return salted_hmac(SIDE_TAG_SALT, f"{assignment_token}:{side}", algorithm="sha256").hexdigest()[:TAG_LENGTH]


def clip_url(assignment_token: str, side: str = MAIN) -> str:
    """The signed, expiring URL of one side's video of an assignment."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; expected one of {SIDES}")
    value = f"{assignment_token}{TAG_SEPARATOR}{side_tag(assignment_token, side)}"
    return reverse("participant:clip-media", args=[signing.TimestampSigner(salt=CLIP_URL_SALT).sign(value)])


def unsign_clip_url(signed: str) -> tuple[str, str | None]:
    """The assignment token and side of a clip URL (side None: a tag that names no side).

    Raises ``signing.BadSignature`` (or its ``SignatureExpired``). A bare token, as signed before
    trials had sides, is the main clip.
    """
    value = signing.TimestampSigner(salt=CLIP_URL_SALT).unsign(signed, max_age=settings.SYNCMOS_CLIP_URL_MAX_AGE)
    token, _, tag = value.partition(TAG_SEPARATOR)
    if not tag:
        return token, MAIN
    return token, next((side for side in SIDES if constant_time_compare(tag, side_tag(token, side))), None)


def reference_of(clip: Clip) -> Clip | None:
    """The reference a DCR trial shows before ``clip``: the clip itself when it is the hidden reference."""
    return clip if clip.condition.kind == Condition.KIND_REFERENCE else clip.reference


def trial_sides(assignment: Assignment) -> tuple[str, ...]:
    """The sides an assignment's trial shows, in the order they play (DCR: the reference first)."""
    if assignment.paired_study_clip_id is not None:
        return (MAIN, B)
    if assignment.participant.study.method == Study.METHOD_DCR:
        return (REFERENCE, MAIN)
    return (MAIN,)


def served_clip(assignment: Assignment, side: str | None) -> Clip | None:
    """The clip behind one side of an assignment, or None where that side does not apply."""
    if side not in trial_sides(assignment):
        return None
    if side == B:
        return assignment.paired_study_clip.clip
    clip = assignment.study_clip.clip
    return reference_of(clip) if side == REFERENCE else clip


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


def refuse(status: int, text: str) -> HttpResponse:
    """A plain-text refusal with the same private headers as the media itself."""
    return _private(HttpResponse(text, status=status, content_type="text/plain; charset=utf-8"))


def _clip_path(request: HttpRequest, signed: str) -> str | HttpResponse:
    """The file to send, or the refusal: bad/expired signature, another session, not in progress,
    a side the assignment does not have. Every "no such video" answer is the same 404."""
    try:
        token, side = unsign_clip_url(signed)
    except signing.SignatureExpired:
        return refuse(403, "This video link has expired. Reload the page to continue.")
    except signing.BadSignature:
        return refuse(404, "Not found.")
    assignment = (
        Assignment.objects.select_related(
            "participant__study", "study_clip__clip__condition", "study_clip__clip__reference",
            "paired_study_clip__clip",
        ).filter(token=token).first()
    )
    if assignment is None or not is_remembered(request, assignment.participant.token):
        return refuse(403, "This video belongs to another session.")
    clip = served_clip(assignment, side)
    if assignment.participant.state != Participant.IN_PROGRESS or clip is None or clip.status != Clip.READY \
            or not clip.file:
        return refuse(404, "Not found.")
    Participant.objects.filter(pk=assignment.participant_id).update(last_seen_at=timezone.now())  # watching
    return clip.file.path if os.path.isfile(clip.file.path) else refuse(404, "Not found.")


@require_http_methods(["GET", "HEAD"])
def clip_media(request: HttpRequest, signed: str) -> HttpResponse:
    path = _clip_path(request, signed)
    if isinstance(path, HttpResponse):
        return path
    return private_mp4(request, path)


def private_mp4(request: HttpRequest, path: str) -> HttpResponse:
    """Send an mp4 to one participant: whole or a byte range, never cached, no validators or file name."""
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
