"""The participant's path: study link → consent → environment check → instructions → trials → end page.

States: *started* (consented; taking the environment check) → *screened out* (a phone, no sound, too
many failed attention checks) or *in progress* (clips issued by ``assignment.admit``) → *completed*
(every answer stored; the completion code), *returned* (they gave the study back) or *timed out*
(silent for too long). ``/p/<token>/`` always answers with the page of the state and stage the
participant is at, so a reload, a lost tab or the study link opened again resumes where they were;
after a practice trial it shows that trial's feedback until the participant continues. A Prolific
participant id takes a study once: opening the link again resumes, whatever the state.

Codes go only to those who earned them: the completion code once every answer is stored, the
study's screen-out code (if any) to the screened out, nothing to the returned or timed out. Nothing
rendered here names a clip, a condition or a file: the page knows assignments only by their random
token and the video by a signed URL.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studyapp import quality
from studyapp.assignment import StudyFull, StudyNotReady, admit, enroll, next_assignment
from studyapp.environment import check_passed, needs_environment_check, record_fullscreen, run_check
from studyapp.models import RATING_MIN, Assignment, Participant, Study, StudyClip
from studyapp.ratings import (
    RatingError, expected_answers, parse_events, parse_submission, record_events, save_ratings, stored_answers,
)
from studyapp.views.check import render_check
from studyapp.views.session import remember, remembered
from studyapp.views.trial import render_trial

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


def _prolific_field(request: HttpRequest, name: str) -> str:
    value = request.GET.get(name, "").strip()
    return value if len(value) <= 100 and value.isprintable() else ""


def _enroll(request: HttpRequest, study: Study) -> HttpResponse:
    viewport = request.POST.get("viewport", "")
    try:
        participant, _ = enroll(
            study, external_id=_external_id(request), external_study_id=_prolific_field(request, "STUDY_ID"),
            external_session_id=_prolific_field(request, "SESSION_ID"),
            user_agent=request.headers.get("User-Agent", ""),
            viewport=viewport if VIEWPORT_RE.fullmatch(viewport) else "",
        )
        if participant.state == Participant.STARTED and not needs_environment_check(study):
            admit(participant)
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


# A moment to read the end page before it sends the participant back to the platform.
REDIRECT_SECONDS = 3


def _done(request: HttpRequest, participant: Participant) -> HttpResponse:
    study = participant.study
    url = _with_code(study.completion_url, participant.completion_code) if study.completion_url else ""
    context = {"study": study, "participant": participant, "completion_url": url, "redirect_seconds": REDIRECT_SECONDS}
    return render(request, "studyapp/done.html", context)


def _screened_out(request: HttpRequest, participant: Participant) -> HttpResponse:
    study = participant.study
    code = study.screened_out_code
    url = _with_code(study.completion_url, code) if study.completion_url and code else ""
    context = {"study": study, "participant": participant, "code": code, "completion_url": url,
               "redirect_seconds": REDIRECT_SECONDS}
    return render(request, "studyapp/screened_out.html", context)


def _ended(request: HttpRequest, participant: Participant) -> HttpResponse:
    template = {Participant.RETURNED: "studyapp/returned.html", Participant.TIMED_OUT: "studyapp/timed_out.html"}
    context = {"study": participant.study, "participant": participant}
    return render(request, template.get(participant.state, "studyapp/gone.html"), context, status=410)


def _check_or_admit(request: HttpRequest, participant: Participant) -> HttpResponse | None:
    """A started participant: the environment check until it is passed, then their clips (None: go on)."""
    study = participant.study
    if needs_environment_check(study) and not check_passed(participant):
        return render_check(request, participant)
    try:
        admit(participant)
    except StudyNotReady as exc:
        return _unavailable(request, study, status=503, full=isinstance(exc, StudyFull))
    return None


def _unseen_feedback(participant: Participant) -> Assignment | None:
    """The first rated practice trial whose feedback the participant has not acknowledged yet."""
    return participant.assignments.filter(
        role=StudyClip.ROLE_PRACTICE, completed_at__isnull=False, feedback_seen_at__isnull=True
    ).order_by("position").first()


def _feedback(request: HttpRequest, participant: Participant, assignment: Assignment) -> HttpResponse:
    """Per scale: the answer given, the expected range, whether it was inside, the researcher's words."""
    scales = list(participant.study.scales.all())
    given = {key: answer["value"] for key, answer in stored_answers(assignment).items()}
    checks = {check.scale: check for check in quality.check_answers(given, expected_answers(assignment.study_clip_id))}

    def label(scale, value: int) -> str:
        index = value - RATING_MIN
        return scale.labels[index] if 0 <= index < len(scale.labels) else ""

    rows = []
    for scale in scales:
        check = checks.get(scale.key)
        if check is None:
            continue
        rows.append({
            "question": scale.question, "given": check.given, "given_label": label(scale, check.given),
            "cares": check.cares, "ok": check.ok, "feedback": check.feedback,
            "low": check.low, "high": check.high,
            "low_label": label(scale, check.low) if check.cares else "",
            "high_label": label(scale, check.high) if check.cares else "",
        })
    practice = list(participant.assignments.filter(role=StudyClip.ROLE_PRACTICE).order_by("position")
                    .values_list("pk", flat=True))
    context = {"study": participant.study, "participant": participant, "assignment": assignment, "rows": rows,
               "all_ok": all(row["ok"] for row in rows), "number": practice.index(assignment.pk) + 1,
               "total": len(practice)}
    return render(request, "studyapp/feedback.html", context)


@never_cache
@require_GET
def participant_home(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(request, token)
    if participant.state == Participant.STARTED:
        page = _check_or_admit(request, participant)
        if page is not None:
            return page
    assignment = next_assignment(participant) if participant.state == Participant.IN_PROGRESS else None
    if participant.state == Participant.IN_PROGRESS and assignment is None:
        participant.refresh_from_db()  # the last rating was committed after the first read: now completed
    if participant.state in (Participant.IN_PROGRESS, Participant.COMPLETED):
        practice = _unseen_feedback(participant)
        if practice is not None:
            return _feedback(request, participant, practice)
    if participant.state == Participant.COMPLETED:
        return _done(request, participant)
    if participant.state == Participant.SCREENED_OUT:
        return _screened_out(request, participant)
    if participant.state != Participant.IN_PROGRESS or assignment is None:
        return _ended(request, participant)
    if participant.started_at is None:
        practice_count = participant.assignments.filter(role=StudyClip.ROLE_PRACTICE).count()
        first_scale = participant.study.scales.first()
        context = {"study": participant.study, "participant": participant, "total": participant.assignments.count(),
                   "practice_count": practice_count, "labels": first_scale.labels if first_scale else []}
        return render(request, "studyapp/instructions.html", context)
    return render_trial(request, participant, assignment)


@require_POST
def environment_check(request: HttpRequest, token: str) -> HttpResponse:
    """One attempt of the environment check (the page then shows what to fix, or moves on)."""
    participant = _participant(request, token)
    result = run_check(participant, report=request.POST.get("report"),
                       user_agent=request.headers.get("User-Agent", ""), answer=request.POST.get("answer"),
                       nonce=request.POST.get("attempt"))
    if result is not None and result.passed:
        try:
            admit(participant)
        except StudyNotReady:
            pass  # the home page says the study is full or not ready, and admits them if it can later
    return redirect("participant:home", token=participant.token)


@require_POST
def begin(request: HttpRequest, token: str) -> HttpResponse:
    """The participant has read the instructions: the trials start (fullscreen was asked for on the way)."""
    participant = _participant(request, token)
    if participant.state == Participant.IN_PROGRESS and participant.started_at is None:
        if participant.study.request_fullscreen:
            record_fullscreen(participant, request.POST.get("fullscreen", ""))
        Participant.objects.filter(pk=participant.pk, started_at__isnull=True).update(started_at=timezone.now())
    return redirect("participant:home", token=participant.token)


@require_POST
def feedback_seen(request: HttpRequest, token: str) -> HttpResponse:
    """The participant read a practice trial's feedback and continues."""
    participant = _participant(request, token)
    Assignment.objects.filter(
        participant=participant, token=request.POST.get("assignment", ""), role=StudyClip.ROLE_PRACTICE,
        completed_at__isnull=False, feedback_seen_at__isnull=True,
    ).update(feedback_seen_at=timezone.now())
    return redirect("participant:home", token=participant.token)


RETURNABLE_STATES = (Participant.STARTED, Participant.IN_PROGRESS)


@never_cache
@require_http_methods(["GET", "POST"])
def return_study(request: HttpRequest, token: str) -> HttpResponse:
    """Give the study back (after a confirmation): the session ends, its clips go to others, no code."""
    participant = _participant(request, token)
    if participant.state not in RETURNABLE_STATES:
        return redirect("participant:home", token=participant.token)
    if request.method == "GET":
        return render(request, "studyapp/return_confirm.html", {"study": participant.study, "participant": participant})
    # The POST is the confirmed action (this page's button, or the trial page's "Return this study" form).
    Participant.objects.filter(pk=participant.pk, state__in=RETURNABLE_STATES).update(
        state=Participant.RETURNED, ended_at=timezone.now()
    )
    return redirect("participant:home", token=participant.token)


@require_POST
def rate(request: HttpRequest, token: str) -> JsonResponse:
    _seen(token)
    try:
        outcome = save_ratings(token, parse_submission(request.body))
    except RatingError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    body = {"status": "saved", "replay": outcome.replay, "ratings": outcome.answers, "completed": outcome.completed,
            "screened_out": outcome.screened_out, "next": reverse("participant:home", args=[token])}
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
