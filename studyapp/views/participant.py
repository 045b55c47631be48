"""The participant's path: study link → consent → instructions → one trial per clip → end page.

``/p/<token>/`` always answers with the stage the participant is at, so a reload, a lost tab or the
study link opened again resumes where they were. Nothing rendered here names a clip, a condition or
a file: the page knows assignments only by their random token and the video by a signed URL.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studyapp.assignment import StudyFull, StudyNotReady, enroll, next_assignment
from studyapp.models import RATING_MIN, Assignment, Participant, Study
from studyapp.ratings import RatingError, parse_events, parse_submission, record_events, save_ratings, watched_to_end
from studyapp.views.media import clip_url
from studyapp.views.session import remember, remembered

VIEWPORT_RE = re.compile(r"\d{2,5}x\d{2,5}", flags=re.ASCII)


def _external_id(request: HttpRequest) -> str:
    """PROLIFIC_PID from the study link (the consent form posts back to the same URL)."""
    pid = request.GET.get("PROLIFIC_PID", "").strip()
    if len(pid) > 100 or not pid.isprintable():
        raise BadRequest("The participant id in the study link is not valid.")
    return pid


def _returning(request: HttpRequest, study: Study) -> Participant | None:
    pid = _external_id(request)
    if pid:
        return Participant.objects.filter(study=study, external_id=pid).first()
    return remembered(request, study)


def _unavailable(request: HttpRequest, study: Study | None, status: int = 404, full: bool = False) -> HttpResponse:
    status = 410 if study is not None and study.status == Study.CLOSED else status
    context = {"study": study, "status": status, "full": full}
    return render(request, "studyapp/unavailable.html", context, status=status)


def _enroll(request: HttpRequest, study: Study) -> HttpResponse:
    viewport = request.POST.get("viewport", "")
    try:
        participant, _ = enroll(
            study, external_id=_external_id(request), user_agent=request.headers.get("User-Agent", ""),
            viewport=viewport if VIEWPORT_RE.fullmatch(viewport) else "",
        )
    except StudyNotReady as exc:
        return _unavailable(request, study, status=503, full=isinstance(exc, StudyFull))
    remember(request, participant)
    return redirect("participant:home", token=participant.token)


@never_cache
@require_http_methods(["GET", "POST"])
def study_entry(request: HttpRequest, public_id: str) -> HttpResponse:
    study = Study.objects.filter(public_id=public_id).first()
    # A returning participant resumes even after the study closed to newcomers.
    returning = _returning(request, study) if study is not None else None
    if returning is not None:
        remember(request, returning)
        return redirect("participant:home", token=returning.token)
    if study is None or study.status != Study.OPEN:
        return _unavailable(request, study)
    if request.method == "POST" and request.POST.get("consent") == "yes":
        return _enroll(request, study)
    refused = request.method == "POST"
    return render(request, "studyapp/consent.html", {"study": study, "refused": refused}, status=400 if refused else 200)


def _seen(token: str) -> None:
    # Every request is a sign of life: enrolment times out participants not seen for a while.
    Participant.objects.filter(token=token).update(last_seen_at=timezone.now())


def _participant(request: HttpRequest, token: str) -> Participant:
    participant = get_object_or_404(Participant.objects.select_related("study"), token=token)
    remember(request, participant)
    _seen(token)
    return participant


def _with_code(url: str, code: str) -> str:
    """The completion URL with ``cc=<code>`` (Prolific style), keeping its other parameters."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cc"] + [("cc", code)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _done(request: HttpRequest, participant: Participant) -> HttpResponse:
    study = participant.study
    url = _with_code(study.completion_url, participant.completion_code) if study.completion_url else ""
    return render(request, "studyapp/done.html", {"study": study, "participant": participant, "completion_url": url})


def _trial_config(request: HttpRequest, participant: Participant, assignment: Assignment, scales: list[dict]) -> dict:
    """What trial.js needs: opaque tokens, endpoint URLs, the scale keys, whether the clip was seen to its end."""
    return {
        "participant": participant.token, "assignment": assignment.token, "scales": [s["key"] for s in scales],
        "watched": watched_to_end(assignment),
        "rateUrl": reverse("participant:rate", args=[participant.token]),
        "eventsUrl": reverse("participant:events", args=[participant.token]),
        "nextUrl": reverse("participant:home", args=[participant.token]), "csrf": get_token(request),
    }


def _trial(request: HttpRequest, participant: Participant, assignment: Assignment) -> HttpResponse:
    if assignment.started_at is None:
        Assignment.objects.filter(pk=assignment.pk, started_at__isnull=True).update(started_at=timezone.now())
    scales = [
        {"key": s.key, "question": s.question, "options": list(enumerate(s.labels, start=RATING_MIN))}
        for s in participant.study.scales.all()
    ]
    context = {"study": participant.study, "number": assignment.position + 1, "total": participant.assignments.count(),
               "done_before": assignment.position, "scales": scales, "video_url": clip_url(assignment.token),
               "config": _trial_config(request, participant, assignment, scales)}
    return render(request, "studyapp/trial.html", context)


@never_cache
@require_GET
def participant_home(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(request, token)
    assignment = next_assignment(participant) if participant.state == Participant.IN_PROGRESS else None
    if participant.state == Participant.IN_PROGRESS and assignment is None:
        participant.refresh_from_db()  # the last rating was committed after the first read: now completed
    study = participant.study
    if participant.state == Participant.COMPLETED:
        return _done(request, participant)
    if participant.state in Participant.INACTIVE_STATES or assignment is None:
        return render(request, "studyapp/gone.html", {"study": study}, status=410)
    if participant.started_at is None:
        return render(request, "studyapp/instructions.html", {"study": study, "participant": participant})
    return _trial(request, participant, assignment)


@require_POST
def begin(request: HttpRequest, token: str) -> HttpResponse:
    """The participant has read the instructions: the trials start."""
    participant = _participant(request, token)
    Participant.objects.filter(pk=participant.pk, started_at__isnull=True).update(started_at=timezone.now())
    return redirect("participant:home", token=participant.token)


@require_POST
def rate(request: HttpRequest, token: str) -> JsonResponse:
    _seen(token)
    try:
        outcome = save_ratings(token, parse_submission(request.body))
    except RatingError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    body = {"status": "saved", "replay": outcome.replay, "ratings": outcome.answers, "completed": outcome.completed,
            "next": reverse("participant:home", args=[token])}
    return JsonResponse(body, status=outcome.status)


@require_POST
def playback(request: HttpRequest, token: str) -> JsonResponse:
    _seen(token)
    try:
        assignment_token, events = parse_events(request.body)
        recorded = record_events(token, assignment_token, events)
    except RatingError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    return JsonResponse({"recorded": recorded}, status=201)
