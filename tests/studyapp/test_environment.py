"""The environment check: the pure decision, the check page and its form, the sound-check clip and its
signed URL, fullscreen, and the face's share measured from a study's clips."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from generation import media
from studyapp import environment
from studyapp.environment import AudioStatus, ClientReport, Requirements, evaluate, is_phone, shown_face_px
from studyapp.models import Participant, Study
from studyapp.views import check
from tests.fixtures import face_frames, make_study

from .conftest import DESKTOP_UA, ENVIRONMENT_CHECK, IPHONE_UA, desktop_report, start_session

RULES = Requirements(allow_phones=False, min_viewport_width=800, min_viewport_height=500, min_face_px=100,
                     face_height_share=0.5, clip_aspect=352 / 288)
ANDROID_PHONE_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/126.0 Mobile Safari/537.36")
ANDROID_TABLET_UA = ("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/126.0 Safari/537.36")
OLD_IPAD_UA = ("Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/12.1 Mobile/15E148 Safari/604.1")


def report(**changes) -> ClientReport:
    return ClientReport.parse(json.dumps(desktop_report(**changes)))


# ---- the decision (pure) ----

def test_it_passes_a_desktop_with_a_large_window():
    result = evaluate(report(), DESKTOP_UA, RULES, AudioStatus.CONFIRMED)
    assert result.passed and result.reasons == () and not result.phone
    assert result.face_px == pytest.approx(162.0)


@pytest.mark.parametrize("user_agent", [IPHONE_UA, ANDROID_PHONE_UA])
def test_it_screens_out_a_phone_by_its_user_agent(user_agent):
    result = evaluate(report(), user_agent, RULES, AudioStatus.CONFIRMED)
    assert not result.passed and not result.may_retry and result.phone
    assert "phone" in result.reasons[0] and "phone" in result.screen_out_reason


@pytest.mark.parametrize("changes", [
    {"ua_mobile": True},
    {"coarse_pointer": True, "fine_pointer": False, "max_touch_points": 5, "screen_width": 393, "screen_height": 852},
])
def test_it_screens_out_a_phone_by_the_browsers_own_signals(changes):
    result = evaluate(report(**changes), DESKTOP_UA, RULES, AudioStatus.CONFIRMED)
    assert result.phone and not result.passed and not result.may_retry


@pytest.mark.parametrize("user_agent, changes", [
    (OLD_IPAD_UA, {"coarse_pointer": True, "fine_pointer": False, "max_touch_points": 5, "screen_width": 1024,
                   "screen_height": 1366}),
    (ANDROID_TABLET_UA, {"coarse_pointer": True, "fine_pointer": False, "max_touch_points": 10}),
    (DESKTOP_UA, {"coarse_pointer": True, "fine_pointer": True, "max_touch_points": 10,  # a touch-screen laptop
                  "screen_width": 1366, "screen_height": 768}),
])
def test_it_does_not_take_a_tablet_or_a_touch_laptop_for_a_phone(user_agent, changes):
    assert not is_phone(user_agent, report(**changes))


def test_it_lets_phones_in_when_the_study_allows_them():
    allowed = Requirements(**{**RULES.__dict__, "allow_phones": True})
    result = evaluate(report(), IPHONE_UA, allowed, AudioStatus.CONFIRMED)
    assert result.passed and result.phone


def test_it_asks_for_a_larger_window_and_allows_a_retry():
    result = evaluate(report(viewport_width=700, viewport_height=480), DESKTOP_UA, RULES, AudioStatus.CONFIRMED)
    assert not result.passed and result.may_retry and not result.screen_out_reason
    assert "700 × 480" in result.reasons[0] and "800 × 500" in result.reasons[0]


def test_it_sizes_the_face_by_the_player_box_and_the_clip_shape():
    tall_box = report(player_width=300.0, player_height=400.0)  # a narrow room letterboxes the picture
    assert shown_face_px(tall_box, RULES) == pytest.approx(300.0 / (352 / 288) * 0.5)
    wide_room = report(player_width=2000.0, player_height=250.0)
    assert shown_face_px(wide_room, RULES) == pytest.approx(125.0)


def test_it_asks_for_a_larger_window_when_the_face_would_be_too_small():
    result = evaluate(report(player_height=180.0), DESKTOP_UA, RULES, AudioStatus.CONFIRMED)
    assert not result.passed and result.may_retry
    assert result.face_px == pytest.approx(90.0)
    assert "90 pixels" in result.reasons[0] and "at least 100" in result.reasons[0]


@pytest.mark.parametrize("status, passed, may_retry", [
    (AudioStatus.OFF, True, True), (AudioStatus.CONFIRMED, True, True), (AudioStatus.UNANSWERED, False, True),
    (AudioStatus.WRONG, False, True), (AudioStatus.FAILED, False, False),
])
def test_it_applies_the_sound_check(status, passed, may_retry):
    result = evaluate(report(), DESKTOP_UA, RULES, status, audio_tries_left=1)
    assert (result.passed, result.may_retry) == (passed, may_retry)
    if status is AudioStatus.FAILED:
        assert result.screen_out_reason == "could not confirm that sound plays"
    if status is AudioStatus.WRONG:
        assert "1 more try" in result.reasons[0]


def test_it_reports_every_problem_at_once():
    result = evaluate(report(viewport_width=640, player_height=150.0), DESKTOP_UA, RULES, AudioStatus.UNANSWERED)
    assert len(result.reasons) == 3 and result.may_retry


def test_it_asks_again_when_nothing_was_measured():
    result = evaluate(None, DESKTOP_UA, RULES, AudioStatus.CONFIRMED)
    assert not result.passed and result.may_retry and "JavaScript" in result.reasons[0]


@pytest.mark.parametrize("raw", [
    "", "not json", "[]", json.dumps(desktop_report(viewport_width="1280")),
    json.dumps(desktop_report(viewport_width=-1)), json.dumps(desktop_report(device_pixel_ratio=0)),
    json.dumps(desktop_report(coarse_pointer="no")), json.dumps(desktop_report(ua_mobile=1)),
    json.dumps(desktop_report(player_height=10**9)), '{"viewport_width": NaN}',
    json.dumps({k: v for k, v in desktop_report().items() if k != "player_width"}),
])
def test_it_refuses_a_malformed_report(raw):
    with pytest.raises(ValueError):
        ClientReport.parse(raw)


def test_it_parses_a_report_without_user_agent_data():
    assert ClientReport.parse(json.dumps(desktop_report(ua_mobile=None))).ua_mobile is None


# ---- the check page and its form ----

@pytest.fixture
def checked_study(db, clip_files) -> Study:
    return make_study(clip_files, **ENVIRONMENT_CHECK)


def page_of(session) -> str:
    return session.client.get(session.home).content.decode()


def nonce_of(html: str) -> str:
    return re.search(r'name="attempt" value="([^"]*)"', html).group(1)


def clip_url_of(html: str) -> str | None:
    match = re.search(r'src="(/c/[^"]+)"', html)
    return match.group(1) if match else None


RIGHT, WRONG = "right", "wrong"


def attempt(session, answer: str | int | None, *, html: str | None = None, play: bool = True,
            user_agent: str = DESKTOP_UA, **report_changes):
    """Load the check page, play its clip (fetch it), and send the form as the page's script would.
    ``answer``: RIGHT or WRONG (the number the server holds now, or another), a number, or None."""
    html = html or page_of(session)
    if play and clip_url_of(html):
        assert session.client.get(clip_url_of(html)).status_code == 200
    data = {"report": json.dumps(desktop_report(**report_changes)), "attempt": nonce_of(html)}
    session.participant.refresh_from_db()
    if answer == RIGHT:
        answer = session.participant.audio_check_answer
    elif answer == WRONG:
        answer = session.participant.audio_check_answer % 9 + 1
    if answer is not None:
        data["answer"] = str(answer)
    url = reverse("participant:check", args=[session.participant.token])
    response = session.client.post(url, data, HTTP_USER_AGENT=user_agent)
    session.participant.refresh_from_db()
    return response


def test_it_shows_the_check_between_consent_and_instructions(checked_study):
    session = start_session(checked_study)
    assert session.participant.state == Participant.STARTED and not session.participant.assignments.exists()
    html = page_of(session)
    assert "Check your set-up" in html and "Which number did you hear?" in html
    assert html.count('name="answer"') == 9 and clip_url_of(html)
    assert reverse("participant:return", args=[session.participant.token]) in html
    assert 'class="player__stage"' in html  # laid out like the trial's player


def test_it_admits_the_participant_who_passes(checked_study):
    session = start_session(checked_study)
    response = attempt(session, RIGHT)
    assert response.status_code == 302 and response["Location"] == session.home
    page = page_of(session)
    participant = Participant.objects.get(pk=session.participant.pk)
    assert "Instructions" in page
    assert participant.state == Participant.IN_PROGRESS and participant.assignments.count() == 4
    environment_record = participant.environment
    assert environment_record["passed_at"] and environment_record["attempts_total"] == 1
    (first,) = environment_record["attempts"]
    assert first["passed"] and first["audio"]["status"] == "confirmed" and first["face_px"] == 162.0
    assert first["client"]["viewport_width"] == 1280 and first["client"]["device_pixel_ratio"] == 1.0


def test_it_never_sends_the_number_to_the_browser(checked_study):
    """Two participants with different numbers get the same page, once their own tokens are taken out."""
    pages = []
    for _ in range(2):
        session = start_session(checked_study)
        html = page_of(session)
        participant = Participant.objects.get(pk=session.participant.pk)
        pages.append((participant.audio_check_answer, html, participant.token, nonce_of(html)))
    while pages[0][0] == pages[1][0]:  # draw again until the numbers differ
        session = start_session(checked_study)
        html = page_of(session)
        participant = Participant.objects.get(pk=session.participant.pk)
        pages[1] = (participant.audio_check_answer, html, participant.token, nonce_of(html))

    def neutral(html: str, token: str, nonce: str) -> str:
        html = re.sub(r'src="/c/[^"]+"', 'src="CLIP"', html.replace(token, "TOKEN").replace(nonce, "NONCE"))
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)

    assert neutral(*pages[0][1:]) == neutral(*pages[1][1:])
    for number, html, _, _ in pages:
        assert environment.CHECK_WORDS[number] not in html.lower()


def test_a_wrong_answer_draws_a_new_number_and_a_second_one_screens_out(checked_study):
    session = start_session(checked_study)
    first_page = page_of(session)
    session.participant.refresh_from_db()
    first_number, first_url = session.participant.audio_check_answer, clip_url_of(first_page)
    attempt(session, WRONG, html=first_page)
    participant = session.participant
    assert participant.state == Participant.STARTED and participant.environment["audio"]["tries"] == 1
    assert participant.audio_check_answer != first_number
    second_page = page_of(session)
    assert "That was not the number" in second_page and "1 try left" in second_page
    assert nonce_of(second_page) != nonce_of(first_page)
    assert session.client.get(first_url).status_code == 404  # the old attempt's clip is gone
    attempt(session, WRONG, html=second_page)
    assert session.participant.state == Participant.SCREENED_OUT
    assert session.participant.screened_out_reason == "could not confirm that sound plays"
    assert session.participant.ended_at is not None and not session.participant.assignments.exists()
    end = session.client.get(session.home).content.decode()
    assert "You cannot continue" in end and "could not confirm that sound plays" in end


def test_a_right_answer_on_the_second_try_passes(checked_study):
    session = start_session(checked_study)
    attempt(session, WRONG)
    attempt(session, RIGHT)
    assert session.participant.state == Participant.IN_PROGRESS
    assert [a["audio"]["status"] for a in session.participant.environment["attempts"]] == ["wrong", "confirmed"]


def test_it_does_not_count_an_answer_sent_without_fetching_the_clip(checked_study):
    session = start_session(checked_study)
    attempt(session, RIGHT, play=False)  # a guess, even a right one
    assert session.participant.state == Participant.STARTED
    audio = session.participant.environment["audio"]
    assert audio["tries"] == 0 and not audio["passed"]
    assert "play the sound check" in page_of(session)


def test_it_does_not_count_a_replayed_or_forged_attempt(checked_study):
    session = start_session(checked_study)
    first_page = page_of(session)
    attempt(session, WRONG, html=first_page)
    number = session.participant.audio_check_answer
    for _ in range(3):  # the same form sent again (a double click, the back button): not a new try
        attempt(session, WRONG, html=first_page, play=False)
    forged = first_page.replace(nonce_of(first_page), "made-up-nonce")
    attempt(session, WRONG, html=forged, play=False)
    participant = session.participant
    assert participant.state == Participant.STARTED and participant.environment["audio"]["tries"] == 1
    assert participant.audio_check_answer == number


@pytest.mark.parametrize("answer", ["0", "10", "seven", "", "4 "])
def test_it_does_not_count_an_answer_that_is_not_a_number_from_1_to_9(checked_study, answer):
    session = start_session(checked_study)
    html = page_of(session)
    session.client.get(clip_url_of(html))
    url = reverse("participant:check", args=[session.participant.token])
    session.client.post(url, {"report": json.dumps(desktop_report()), "attempt": nonce_of(html), "answer": answer})
    session.participant.refresh_from_db()
    assert session.participant.state == Participant.STARTED
    assert session.participant.environment["audio"]["tries"] == 0


def test_a_replay_after_passing_changes_nothing(checked_study):
    session = start_session(checked_study)
    html = page_of(session)
    attempt(session, RIGHT, html=html)
    before = Participant.objects.get(pk=session.participant.pk).environment
    attempt(session, WRONG, html=html, play=False, user_agent=IPHONE_UA)
    after = Participant.objects.get(pk=session.participant.pk)
    assert after.state == Participant.IN_PROGRESS and after.environment == before


def test_it_screens_out_a_phone_and_sends_it_back_with_the_screen_out_code(checked_study):
    checked_study.completion_url = "https://app.prolific.com/submissions/complete"
    checked_study.screened_out_code = "NOPHONE1"
    checked_study.save()
    session = start_session(checked_study)
    attempt(session, RIGHT, user_agent=IPHONE_UA)
    assert session.participant.state == Participant.SCREENED_OUT and "phone" in session.participant.screened_out_reason
    html = page_of(session)
    assert 'data-redirect-url="https://app.prolific.com/submissions/complete?cc=NOPHONE1"' in html
    assert session.participant.completion_code == ""


def test_a_small_window_may_try_again_and_a_confirmed_sound_is_kept(checked_study):
    session = start_session(checked_study)
    attempt(session, RIGHT, viewport_width=640, viewport_height=400)
    assert session.participant.state == Participant.STARTED
    html = page_of(session)
    assert "640 × 400" in html and "Check again" in html and 'role="alert"' in html
    assert "Sound confirmed" in html and not clip_url_of(html)  # no second sound check
    attempt(session, None, html=html)
    assert session.participant.state == Participant.IN_PROGRESS
    attempts = session.participant.environment["attempts"]
    assert [a["passed"] for a in attempts] == [False, True] and attempts[0]["may_retry"]


def test_a_small_face_may_try_again(checked_study):
    session = start_session(checked_study)
    attempt(session, RIGHT, player_height=150.0)
    assert session.participant.state == Participant.STARTED
    assert "would be too small" in page_of(session)


def test_it_checks_only_the_window_when_the_sound_check_is_off(db, clip_files):
    study = make_study(clip_files, **{**ENVIRONMENT_CHECK, "audio_check": False})
    session = start_session(study)
    html = page_of(session)
    assert not clip_url_of(html) and 'name="answer"' not in html and "Check and continue" in html
    attempt(session, None, html=html)
    assert session.participant.state == Participant.IN_PROGRESS
    assert session.participant.audio_check_answer is None


def test_it_lays_the_check_out_like_a_dcr_trial_for_dcr(db, clip_files):
    study = make_study(clip_files, **ENVIRONMENT_CHECK, method=Study.METHOD_DCR)
    html = page_of(start_session(study))
    assert 'class="sequence"' in html and html.count("<video") == 2 and 'id="check-clip" data-measure' in html


def test_a_study_full_after_the_check_says_so(checked_study):
    session = start_session(checked_study)
    checked_study.study_clips.all().delete()
    attempt(session, RIGHT)
    response = session.client.get(session.home)
    assert response.status_code == 503 and session.participant.state == Participant.STARTED


# ---- the sound-check clip under its signed URL ----

@pytest.fixture
def check_clip(checked_study):
    session = start_session(checked_study)
    return session, clip_url_of(page_of(session))


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_it_serves_the_check_clip_privately_with_byte_ranges(check_clip):
    session, url = check_clip
    whole = session.client.get(url)
    data = body_of(whole)
    assert whole.status_code == 200 and whole["Content-Type"] == "video/mp4" and data[4:8] == b"ftyp"
    assert whole["Cache-Control"] == "private, no-store" and whole["Accept-Ranges"] == "bytes"
    for header in ("Content-Disposition", "ETag", "Last-Modified"):
        assert header not in whole
    part = session.client.get(url, HTTP_RANGE="bytes=10-99")
    assert part.status_code == 206 and body_of(part) == data[10:100]
    assert session.client.get(url, HTTP_RANGE=f"bytes={len(data)}-").status_code == 416
    assert Participant.objects.get(pk=session.participant.pk).environment["audio"]["served"] is True


def test_it_refuses_the_check_clip_to_another_session(check_clip, checked_study):
    _, url = check_clip
    assert Client().get(url).status_code == 403
    eve = start_session(checked_study)
    assert eve.client.get(url).status_code == 403


def test_it_refuses_a_tampered_or_foreign_check_clip_url(check_clip):
    session, url = check_clip
    signed = url.removeprefix("/c/")
    value, stamp, signature = signed.rsplit(":", 2)
    other_nonce = f"{value.rsplit('.', 1)[0]}.another"
    foreign = signing.TimestampSigner(salt="syncmos.participant.clip-url").sign(value)
    for forged in (f"{value}:{stamp}:{signature[:-2]}xx", f"{other_nonce}:{stamp}:{signature}", value, foreign):
        assert session.client.get(f"/c/{forged}").status_code == 404, forged


def test_it_refuses_an_expired_check_clip_url(check_clip, settings):
    session, url = check_clip
    settings.SYNCMOS_CLIP_URL_MAX_AGE = 60
    signer = signing.TimestampSigner(salt=check.CHECK_URL_SALT)
    value = url.removeprefix("/c/").rsplit(":", 2)[0]
    stale = f"{value}:{signing.b62_encode(int(time.time()) - 3600)}"
    assert session.client.get(f"/c/{stale}:{signer.signature(stale)}").status_code == 403


def test_it_stops_serving_the_check_clip_once_the_check_is_passed(check_clip):
    session, url = check_clip
    attempt(session, RIGHT)
    assert session.client.get(url).status_code == 404


def test_every_check_clip_lasts_as_long_and_weighs_as_much(db, settings):
    """Only the sound tells the numbers apart: same duration, same padded size, no metadata."""
    infos = [media.probe(environment.ensure_check_clip(number, 352, 288)) for number in (1, 7)]
    assert {round(i.duration, 2) for i in infos} == {environment.CHECK_SECONDS}
    assert len({i.size_bytes for i in infos}) == 1 and infos[0].size_bytes % (64 * 1024) == 0
    assert all(not set(i.format_tags) - {"major_brand", "minor_version", "compatible_brands"} for i in infos)
    names = {Path(i.path).stem for i in infos}
    assert all(re.fullmatch(r"[0-9a-f]{32}", name) for name in names) and len(names) == 2
    seven = media.read_audio(infos[1].path)
    speech = np.flatnonzero(np.abs(seven) > 0.02)
    assert speech[0] / 16000 >= environment.CHECK_LEAD_SECONDS - 0.05  # the voice starts after the lead-in
    assert 0.3 < np.abs(seven).max() < 0.7


# ---- fullscreen ----

@pytest.mark.parametrize("sent, stored", [("granted", "granted"), ("denied", "denied"), ("bogus", None)])
def test_it_records_whether_fullscreen_was_granted_and_starts_anyway(checked_study, sent, stored):
    session = start_session(checked_study)
    attempt(session, RIGHT)
    assert 'data-fullscreen' in page_of(session)
    session.client.post(reverse("participant:begin", args=[session.participant.token]), {"fullscreen": sent})
    participant = Participant.objects.get(pk=session.participant.pk)
    assert participant.started_at is not None
    assert participant.environment.get("fullscreen") == stored


# ---- the face's share of the picture ----

def face_video(path: Path, scale: float) -> None:
    """The fixture's cartoon face, shrunk by ``scale`` around the centre of a same-size frame."""
    from PIL import Image

    frames = face_frames(0, 25)  # as long as the clip's recorded duration (1 s)
    _, h, w, _ = frames.shape
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        out[t] = frame[0, 0]
        small = np.asarray(Image.fromarray(frame).resize((round(w * scale), round(h * scale))))
        top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
        out[t, top:top + small.shape[0], left:left + small.shape[1]] = small
    media.write_video(path, out, 25)


@pytest.mark.slow
def test_it_measures_the_faces_share_of_the_picture_from_the_middle_frames(db, clip_files):
    study = make_study(clip_files, n_clips=3)
    clips = [sc.clip for sc in study.study_clips.order_by("id")]
    full = environment.measure_face_height_share(study)
    assert full == pytest.approx(0.65, abs=0.05)  # dlib's box of the fixture face: brows to chin
    for clip in clips:  # the same face at half its size: half the share, within dlib's box quantization
        face_video(Path(clip.file.path), 0.5)  # (its HOG pyramid steps by about 1.2× in scale)
    assert environment.measure_face_height_share(study) == pytest.approx(full / 2, rel=0.2)


def test_it_reads_at_most_five_clips_and_gives_none_without_a_face(db, clip_files, monkeypatch):
    study = make_study(clip_files, n_clips=6)
    seen = []
    monkeypatch.setattr(environment, "middle_frame", lambda path, duration: seen.append(path) or np.zeros((8, 8, 3)))
    monkeypatch.setattr(environment, "face_height_share_of", lambda frame: None)
    assert environment.measure_face_height_share(study) is None
    assert len(seen) == environment.FACE_SHARE_CLIPS
    study.study_clips.all().delete()
    assert environment.measure_face_height_share(study) is None
