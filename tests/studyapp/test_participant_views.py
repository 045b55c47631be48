"""The participant pages: study link, consent, resume, stages, end page, and the signed clip media."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from studyapp.assignment import coverage_rows, enroll
from studyapp.models import Assignment, Participant, Rating, Study, StudyClip
from studyapp.views import media

from .conftest import (
    GOLD_FAIL, GOLD_PASS, PRACTICE_FEEDBACK, make_quality_study, mark_ended, start_session,
)


def study_url(study: Study, query: str = "") -> str:
    return reverse("participant:study-entry", args=[study.public_id]) + query


def video_url(page) -> str:
    return re.search(r'<video[^>]* src="([^"]+)"', page.content.decode()).group(1)


def finish(session) -> None:
    session.begin()
    for assignment in session.participant.assignments.order_by("position"):
        mark_ended(assignment)
        assert session.rate(assignment).status_code == 201


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# ---- study link and consent ----

def test_it_shows_the_title_and_consent_text(study, client):
    page = client.get(study_url(study))
    assert page.status_code == 200
    html = page.content.decode()
    assert study.title in html and "We store your ratings anonymously." in html
    assert 'name="consent"' in html and "csrfmiddlewaretoken" in html


def test_it_requires_consent(study, client):
    refused = client.post(study_url(study), {"viewport": "1280x800"})
    assert refused.status_code == 400
    assert "tick the box" in refused.content.decode()
    assert not Participant.objects.exists()


def test_it_creates_the_participant_on_consent(study, client):
    response = client.post(study_url(study), {"consent": "yes", "viewport": "1440x900"}, HTTP_USER_AGENT="Firefox/130")
    participant = Participant.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/p/{participant.token}/"
    assert participant.consented_at and participant.state == Participant.IN_PROGRESS
    assert (participant.user_agent, participant.viewport) == ("Firefox/130", "1440x900")
    assert participant.assignments.count() == 4


def test_it_ignores_a_malformed_viewport(study, client):
    client.post(study_url(study), {"consent": "yes", "viewport": "<script>"})
    assert Participant.objects.get().viewport == ""


def test_it_resumes_when_the_study_link_is_opened_again(session):
    again = session.client.get(study_url(session.participant.study))
    assert again.status_code == 302 and again["Location"] == session.home
    assert Participant.objects.count() == 1


def test_it_stores_the_prolific_pid_and_never_starts_it_twice(study):
    query = "?PROLIFIC_PID=5f8a9c0ffee&STUDY_ID=abc123&SESSION_ID=s-42"
    first = start_session(study, query=query)
    assert first.participant.external_id == "5f8a9c0ffee"
    # The same PID from a fresh browser (no session) returns to the same participant.
    other_browser = Client()
    response = other_browser.post(study_url(study, query), {"consent": "yes"})
    assert response.status_code == 302 and response["Location"] == first.home
    assert Participant.objects.filter(study=study).count() == 1
    assert other_browser.get(study_url(study, query))["Location"] == first.home


def test_it_rejects_an_overlong_pid(study, client):
    assert client.get(study_url(study, "?PROLIFIC_PID=" + "x" * 101)).status_code == 400


@pytest.mark.parametrize("status, code", [(Study.DRAFT, 404), (Study.CLOSED, 410)])
def test_it_says_when_a_study_is_not_open(study, client, status, code):
    study.status = status
    study.save()
    response = client.get(study_url(study))
    assert response.status_code == code
    assert "not open" in response.content.decode() or "closed" in response.content.decode()
    assert client.post(study_url(study), {"consent": "yes"}).status_code == code
    assert not Participant.objects.exists()


def test_it_says_when_a_study_is_full(study, client):
    study.ratings_per_clip = 1
    study.save()
    for study_clip in study.study_clips.all():
        Assignment.objects.create(participant=Participant.objects.create(study=study, state=Participant.COMPLETED),
                                  study_clip=study_clip, position=0, completed_at=timezone.now())
    response = client.post(study_url(study), {"consent": "yes"})
    assert response.status_code == 503
    html = response.content.decode()
    assert "This study is full" in html and "try again" not in html
    assert not Participant.objects.filter(study=study, state=Participant.IN_PROGRESS).exists()


def test_it_says_when_a_study_has_no_clip_ready_yet(study, client):
    study.study_clips.all().delete()
    response = client.post(study_url(study), {"consent": "yes"})
    assert response.status_code == 503 and "not ready yet" in response.content.decode()


def test_it_answers_404_for_an_unknown_study(db, client):
    assert client.get("/s/no-such-study/").status_code == 404


def test_it_lets_a_started_participant_finish_after_the_study_closed(session):
    Study.objects.filter(pk=session.participant.study_id).update(status=Study.CLOSED)
    assert session.client.get(study_url(session.participant.study))["Location"] == session.home
    assert session.client.get(session.home).status_code == 200


# ---- stages ----

def test_it_walks_through_instructions_trials_and_the_end(session):
    page = session.client.get(session.home)
    assert "Instructions" in page.content.decode() and "4 clips in total" in page.content.decode()
    assert session.begin().status_code == 302
    assignments = list(session.participant.assignments.order_by("position"))
    for number, assignment in enumerate(assignments, start=1):
        page = session.client.get(session.home)
        html = page.content.decode()
        assert f"Clip <strong>{number}</strong> of 4" in html
        assert assignment.token in html  # the page is about this assignment
        mark_ended(assignment)
        session.rate(assignment)
    done = session.client.get(session.home)
    session.participant.refresh_from_db()
    assert "Thank you" in done.content.decode() and session.participant.completion_code in done.content.decode()


def test_it_renders_an_accessible_trial_page(session):
    session.begin()
    html = session.client.get(session.home).content.decode()
    video = re.search(r"<video[^>]*>", html).group(0)
    assert "autoplay" not in video and not re.search(r"\scontrols[\s>=]", video)
    assert html.count('type="radio"') == 15 and html.count("<fieldset") == 3 and html.count("<legend") == 3
    for label in ("Bad", "Poor", "Fair", "Good", "Excellent"):
        assert html.count(f'<span class="option__label">{label}</span>') == 3
    assert "How well do the lip movements match the speech?" in html
    assert 'id="play"' in html and '"csrf":' in html


def test_it_resumes_at_the_next_unrated_clip(session):
    session.begin()
    a0, a1 = list(session.participant.assignments.order_by("position"))[:2]
    mark_ended(a0)
    session.rate(a0)
    reopened = Client()  # lost cookies: the participant link alone resumes
    html = reopened.get(session.home).content.decode()
    assert a1.token in html and a0.token not in html and "Clip <strong>2</strong> of 4" in html


def test_it_shows_a_friendly_page_to_an_inactive_participant(session):
    Participant.objects.filter(pk=session.participant.pk).update(state=Participant.RETURNED)
    response = session.client.get(session.home)
    assert response.status_code == 410 and "no longer available" in response.content.decode()
    assert "You have returned this study" in response.content.decode()


def test_it_ends_the_session_of_a_participant_who_timed_out(session):
    session.begin()
    assignment = session.participant.assignments.order_by("position").first()
    mark_ended(assignment)
    Participant.objects.filter(pk=session.participant.pk).update(last_seen_at=timezone.now() - timedelta(hours=3))
    enroll(session.participant.study)  # a newcomer: the silent participant is timed out
    back = session.client.get(study_url(session.participant.study))
    assert back["Location"] == session.home
    page = session.client.get(session.home)
    assert page.status_code == 410 and "This session has ended" in page.content.decode()
    assert "timed out" in page.content.decode()
    refused = session.rate(assignment)
    assert refused.status_code == 403 and refused.json()["error"] == "not_in_progress"
    assert not Rating.objects.exists()
    assert Participant.objects.get(pk=session.participant.pk).state == Participant.TIMED_OUT


@pytest.mark.parametrize("request_kind", ["home", "begin", "rate", "events", "media"])
def test_it_notes_every_participant_request_as_a_sign_of_life(session, request_kind):
    session.begin()
    page = session.client.get(session.home)
    assignment = session.participant.assignments.order_by("position").first()
    long_ago = timezone.now() - timedelta(hours=1)
    Participant.objects.filter(pk=session.participant.pk).update(last_seen_at=long_ago)
    send = {
        "home": lambda: session.client.get(session.home),
        "begin": session.begin,
        "rate": lambda: session.rate(assignment),
        "events": lambda: session.events(assignment, {"kind": "visibility", "detail": "hidden"}),
        "media": lambda: session.client.get(video_url(page), HTTP_RANGE="bytes=0-9"),
    }[request_kind]
    assert send().status_code < 500
    assert Participant.objects.get(pk=session.participant.pk).last_seen_at > long_ago + timedelta(minutes=59)


def test_it_shows_the_end_page_only_when_everything_is_stored(study):
    study.completion_url = "https://app.prolific.com/submissions/complete?lang=en"
    study.save()
    session = start_session(study)
    session.begin()
    almost = session.client.get(session.home).content.decode()
    assert "prolific.com" not in almost
    finish(session)
    html = session.client.get(session.home).content.decode()
    session.participant.refresh_from_db()
    code = session.participant.completion_code
    link = re.search(r'href="(https://app\.prolific\.com[^"]+)"', html).group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(link).query) == {"lang": ["en"], "cc": [code]}
    # … and the page goes there by itself after a short, visible moment.
    redirect = re.search(r'data-redirect-url="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert redirect == link and 'data-redirect-seconds="3"' in html and 'id="redirect-status"' in html


# ---- clip media ----

@pytest.fixture
def trial(session):
    session.begin()
    page = session.client.get(session.home)
    assignment = session.participant.assignments.order_by("position").first()
    path = Path(settings.MEDIA_ROOT) / assignment.study_clip.clip.file.name
    return session, video_url(page), path.read_bytes()


def test_it_serves_the_clip_under_a_signed_url(trial):
    session, url, data = trial
    assert url.startswith("/m/") and "/media/" not in url and settings.MEDIA_URL not in url
    response = session.client.get(url)
    assert response.status_code == 200 and body_of(response) == data
    assert response["Content-Type"] == "video/mp4"
    assert response["Cache-Control"] == "private, no-store"
    assert response["Accept-Ranges"] == "bytes" and response["Content-Length"] == str(len(data))
    assert response["X-Content-Type-Options"] == "nosniff"
    for header in ("Content-Disposition", "ETag", "Last-Modified"):
        assert header not in response


def test_it_serves_byte_ranges(trial):
    session, url, data = trial
    middle = session.client.get(url, HTTP_RANGE="bytes=100-299")
    assert middle.status_code == 206 and body_of(middle) == data[100:300]
    assert middle["Content-Range"] == f"bytes 100-299/{len(data)}" and middle["Content-Length"] == "200"
    tail = session.client.get(url, HTTP_RANGE="bytes=-50")
    assert tail.status_code == 206 and body_of(tail) == data[-50:]
    rest = session.client.get(url, HTTP_RANGE=f"bytes={len(data) - 10}-")
    assert rest.status_code == 206 and body_of(rest) == data[-10:]
    clipped = session.client.get(url, HTTP_RANGE=f"bytes=0-{len(data) * 2}")
    assert clipped.status_code == 206 and body_of(clipped) == data


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{end}", "bytes=-0", "bytes=20-10", "bytes=abc"])
def test_it_answers_416_for_unsatisfiable_ranges(trial, header):
    session, url, data = trial
    response = session.client.get(url, HTTP_RANGE=header.format(size=len(data), end=len(data) + 5))
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(data)}"


def test_it_ignores_ranges_it_does_not_serve(trial):
    session, url, data = trial
    for header in ("items=0-5", "bytes=0-1,5-6"):
        response = session.client.get(url, HTTP_RANGE=header)
        assert response.status_code == 200 and body_of(response) == data
    guarded = session.client.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"some-etag"')
    assert guarded.status_code == 200


def test_it_answers_head_without_a_body(trial):
    session, url, data = trial
    response = session.client.head(url)
    assert response.status_code == 200 and response["Content-Length"] == str(len(data))


def test_it_refuses_a_tampered_url(trial):
    session, url, _ = trial
    signed = url.removeprefix("/m/")
    value, stamp, signature = signed.rsplit(":", 2)
    other = session.participant.assignments.order_by("position")[1].token
    for forged in (f"{value}:{stamp}:{signature[:-2]}xx", f"{other}:{stamp}:{signature}", value, "x"):
        response = session.client.get(f"/m/{forged}")
        assert response.status_code == 404, forged
        assert response["Content-Type"].startswith("text/plain")


def test_it_refuses_an_expired_url(trial, settings):
    session, url, _ = trial
    settings.SYNCMOS_CLIP_URL_MAX_AGE = 60
    signer = signing.TimestampSigner(salt=media.CLIP_URL_SALT)
    assignment = session.participant.assignments.order_by("position").first()
    old = signer.sign(assignment.token)
    stamp = signing.b62_encode(int(time.time()) - 3600)
    value = f"{assignment.token}:{stamp}"
    expired = f"{value}:{signer.signature(value)}"
    assert old != expired and session.client.get(f"/m/{expired}").status_code == 403


def test_it_refuses_another_participants_url(trial, study):
    _, url, _ = trial
    eve = start_session(study)
    assert eve.client.get(url).status_code == 403
    assert Client().get(url).status_code == 403  # no session at all


def test_it_refuses_a_url_signed_with_another_salt(trial):
    session, _, _ = trial
    token = session.participant.assignments.order_by("position").first().token
    foreign = signing.TimestampSigner(salt="something-else").sign(token)
    assert session.client.get(f"/m/{foreign}").status_code == 404


def test_it_stops_serving_media_once_the_participant_is_done(trial):
    session, url, _ = trial
    Participant.objects.filter(pk=session.participant.pk).update(state=Participant.COMPLETED)
    assert session.client.get(url).status_code == 404


def test_it_parses_ranges():
    assert media.parse_range(None, 10) is None
    assert media.parse_range("bytes=0-0", 10) == (0, 0)
    assert media.parse_range("bytes=5-", 10) == (5, 9)
    assert media.parse_range("bytes=-3", 10) == (7, 9)
    assert media.parse_range("bytes=-30", 10) == (0, 9)
    assert media.parse_range("bytes=2-50", 10) == (2, 9)
    for bad in ("bytes=10-", "bytes=-", "bytes=3-1", "bytes=a-b", "bytes=\u0661-2"):
        with pytest.raises(media.UnsatisfiableRange):
            media.parse_range(bad, 10)


def test_it_makes_every_rating_uuid_count_once_per_trial(session):
    """The idempotency key sent twice for one trial never makes two rows (belt and braces)."""
    session.begin()
    assignment = session.participant.assignments.order_by("position").first()
    mark_ended(assignment)
    uuids = {k: str(uuid.uuid4()) for k in ("sync", "visual", "overall")}
    assert session.rate(assignment, uuids=uuids).status_code == 201
    assert session.rate(assignment, uuids=uuids).status_code == 200
    assert assignment.ratings.count() == 3


def test_it_shows_the_end_page_when_the_last_rating_lands_during_the_request(session, monkeypatch):
    """READ COMMITTED: the participant row is read before, the assignments after the last rating commits."""
    from studyapp.views import participant as views

    session.begin()

    def last_rating_commits_meanwhile(participant):
        Participant.objects.filter(pk=participant.pk).update(state=Participant.COMPLETED, completion_code="LATE42")
        return None

    monkeypatch.setattr(views, "next_assignment", last_rating_commits_meanwhile)
    page = session.client.get(session.home)
    assert page.status_code == 200 and "LATE42" in page.content.decode()


# ---- Prolific ----

PROLIFIC = "?PROLIFIC_PID=5f8a9c0ffee&STUDY_ID=abc123&SESSION_ID=s-42"


def test_the_consent_form_posts_back_to_the_study_link_with_its_query(study, client):
    html = client.get(study_url(study, PROLIFIC)).content.decode()
    action = re.search(r'<form method="post" action="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert action == study_url(study, PROLIFIC)


def test_it_stores_the_prolific_ids_from_the_study_link(study):
    participant = start_session(study, query=PROLIFIC).participant
    assert (participant.external_id, participant.external_study_id, participant.external_session_id) == (
        "5f8a9c0ffee", "abc123", "s-42")


@pytest.mark.parametrize("state", [s for s, _ in Participant.STATE_CHOICES])
def test_a_prolific_id_takes_the_study_once_and_resumes_whatever_its_state(study, state):
    first = start_session(study, query=PROLIFIC)
    Participant.objects.filter(pk=first.participant.pk).update(state=state)
    for method in ("get", "post"):
        elsewhere = Client()  # another browser, the same PROLIFIC_PID
        data = {"consent": "yes"} if method == "post" else {}
        response = getattr(elsewhere, method)(study_url(study, PROLIFIC), data)
        assert response.status_code == 302 and response["Location"] == first.home
    assert Participant.objects.filter(study=study).count() == 1
    assert Participant.objects.get(pk=first.participant.pk).state == state


def test_no_code_reaches_a_participant_who_has_not_earned_it(study):
    study.completion_url, study.completion_code = "https://app.prolific.com/submissions/complete", "DONE42"
    study.save()
    session = start_session(study)
    session.begin()
    for state in (Participant.IN_PROGRESS, Participant.RETURNED, Participant.TIMED_OUT, Participant.SCREENED_OUT):
        Participant.objects.filter(pk=session.participant.pk).update(state=state)
        html = session.client.get(session.home).content.decode()
        assert "DONE42" not in html and "cc=" not in html and "prolific.com" not in html, state


def test_the_screened_out_page_sends_the_screen_out_code_back_to_the_platform(study):
    study.completion_url, study.screened_out_code = "https://app.prolific.com/submissions/complete", "SCREEN9"
    study.save()
    session = start_session(study)
    Participant.objects.filter(pk=session.participant.pk).update(
        state=Participant.SCREENED_OUT, screened_out_reason="failed 2 of 3 attention checks")
    response = session.client.get(session.home)
    html = response.content.decode()
    assert response.status_code == 200 and "You cannot continue" in html and "failed 2 of 3 attention checks" in html
    assert 'data-redirect-url="https://app.prolific.com/submissions/complete?cc=SCREEN9"' in html
    assert 'href="https://app.prolific.com/submissions/complete?cc=SCREEN9"' in html


def test_the_screened_out_page_without_a_screen_out_code_says_what_to_do(study):
    study.completion_url = "https://app.prolific.com/submissions/complete"
    study.save()
    session = start_session(study)
    Participant.objects.filter(pk=session.participant.pk).update(state=Participant.SCREENED_OUT)
    html = session.client.get(session.home).content.decode()
    assert "You cannot continue" in html and "return the study" in html
    assert "data-redirect-url" not in html and "cc=" not in html


# ---- returning the study ----

def test_it_asks_before_returning_the_study(session):
    url = reverse("participant:return", args=[session.participant.token])
    assert url in session.client.get(session.home).content.decode()  # linked from the instructions
    page = session.client.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and "Return this study?" in html
    assert f'action="{url}"' in html and "Yes, return the study" in html and f'href="{session.home}"' in html
    assert Participant.objects.get(pk=session.participant.pk).state == Participant.IN_PROGRESS


def test_returning_ends_the_session_and_frees_its_clips(session):
    study = session.participant.study
    assert sum(row.in_progress for row in coverage_rows(study)) == 4
    response = session.client.post(reverse("participant:return", args=[session.participant.token]))
    assert response.status_code == 302 and response["Location"] == session.home
    participant = Participant.objects.get(pk=session.participant.pk)
    assert participant.state == Participant.RETURNED and participant.ended_at is not None
    assert participant.completion_code == ""
    assert sum(row.in_progress for row in coverage_rows(study)) == 0
    page = session.client.get(session.home)
    assert page.status_code == 410 and "You have returned this study" in page.content.decode()
    assignment = participant.assignments.order_by("position").first()
    mark_ended(assignment)
    assert session.rate(assignment).status_code == 403


def test_a_completed_participant_cannot_return(session):
    finish(session)
    url = reverse("participant:return", args=[session.participant.token])
    assert session.client.get(url)["Location"] == session.home
    session.client.post(url)
    assert Participant.objects.get(pk=session.participant.pk).state == Participant.COMPLETED


# ---- practice feedback and gold ----

@pytest.fixture
def quality(db, clip_files):
    study = make_quality_study(clip_files, practice=1, gold=2, tests=2, gold_failures_allowed=1)
    session = start_session(study)
    session.begin()
    return session


def test_it_mentions_the_practice_clips_in_the_instructions(db, clip_files):
    session = start_session(make_quality_study(clip_files, practice=2, gold=0))
    html = session.client.get(session.home).content.decode()
    assert "The first 2 clips are practice clips" in html and "4 clips in total" in html
    assert "from 1 (Bad) to 5 (Excellent)" in html


def test_it_shows_feedback_after_a_practice_trial_until_the_participant_continues(quality):
    practice = quality.participant.assignments.get(role=StudyClip.ROLE_PRACTICE)
    mark_ended(practice)
    quality.rate(practice, {"sync": 3, "visual": 4, "overall": 1})
    for _ in range(2):  # a reload shows it again
        page = quality.client.get(quality.home)
        html = page.content.decode()
        assert page.status_code == 200 and "Feedback on your practice answers" in html
    assert "Practice clip 1 of 1" in html and "outside the range we expected" in html
    assert "3 (Fair)" in html and "4 (Good) to 5 (Excellent)" in html and "3 (Fair) to 5 (Excellent)" in html
    assert html.count("Outside the expected range") == 1 and html.count("Inside the expected range") == 1
    assert "No expected answer for this question" in html and PRACTICE_FEEDBACK in html
    assert f'name="assignment" value="{practice.token}"' in html
    response = quality.client.post(reverse("participant:feedback", args=[quality.participant.token]),
                                   {"assignment": practice.token})
    assert response.status_code == 302
    practice.refresh_from_db()
    assert practice.feedback_seen_at is not None
    following = quality.participant.assignments.get(position=practice.position + 1)
    html = quality.client.get(quality.home).content.decode()
    assert "Feedback" not in html and following.token in html


def test_it_does_not_take_feedback_acknowledgements_for_other_trials(quality):
    practice = quality.participant.assignments.get(role=StudyClip.ROLE_PRACTICE)
    eve = start_session(practice.participant.study)
    eve.client.post(reverse("participant:feedback", args=[eve.participant.token]), {"assignment": practice.token})
    quality.client.post(reverse("participant:feedback", args=[quality.participant.token]),
                        {"assignment": practice.token})  # not rated yet
    practice.refresh_from_db()
    assert practice.feedback_seen_at is None


def test_a_failed_gold_check_past_the_allowance_leads_to_the_screen_out_page(quality):
    study = quality.participant.study
    study.completion_url, study.screened_out_code = "https://app.prolific.com/submissions/complete", "GOLDOUT"
    study.save()
    practice = quality.participant.assignments.get(role=StudyClip.ROLE_PRACTICE)
    mark_ended(practice)
    quality.rate(practice, {"sync": 5, "visual": 5, "overall": 5})
    quality.client.post(reverse("participant:feedback", args=[quality.participant.token]),
                        {"assignment": practice.token})
    outcomes = []
    for assignment in quality.participant.assignments.exclude(role=StudyClip.ROLE_PRACTICE).order_by("position"):
        mark_ended(assignment)
        values = GOLD_FAIL if assignment.role == StudyClip.ROLE_GOLD else {"sync": 3, "visual": 3, "overall": 3}
        response = quality.rate(assignment, values)
        outcomes.append((assignment.role, response.status_code, response.json().get("screened_out")))
        if response.json().get("screened_out"):
            next_url = response.json()["next"]
            break
    assert outcomes[-1] == (StudyClip.ROLE_GOLD, 201, True)
    assert sum(role == StudyClip.ROLE_GOLD for role, _, _ in outcomes) == 2
    html = quality.client.get(next_url).content.decode()
    assert "You cannot continue" in html and "failed 2 of 2 attention checks" in html
    assert "cc=GOLDOUT" in html
    participant = Participant.objects.get(pk=quality.participant.pk)
    assert participant.state == Participant.SCREENED_OUT and participant.completion_code == ""


def test_a_passed_gold_check_goes_on_as_usual(quality):
    gold = quality.participant.assignments.filter(role=StudyClip.ROLE_GOLD).order_by("position").first()
    mark_ended(gold)
    assert quality.rate(gold, GOLD_PASS).json()["screened_out"] is False
    assert Participant.objects.get(pk=quality.participant.pk).state == Participant.IN_PROGRESS
