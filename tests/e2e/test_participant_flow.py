"""The participant flow in Debian's headless Chromium: the Prolific round trip back to the completion URL
with the right code, practice feedback, a failed gold check that screens out (and sends the screen-out
code back), and the environment check with its sound check (answered, and failed twice)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from studyapp.models import Participant, StudyClip
from tests.e2e.pages import ARTIFACTS, SCALES, ParticipantPage
from tests.fixtures import make_study
from tests.studyapp.conftest import ENVIRONMENT_CHECK, GOLD_FAIL, PRACTICE_FEEDBACK, make_quality_study

pytestmark = pytest.mark.e2e


def shot(browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"flow-{name}.png"))


def consent(me: ParticipantPage) -> None:
    me.css('input[name="consent"]').click()
    me.css('button[type="submit"]').click()


def rate_clip(me: ParticipantPage, values: dict[str, int]) -> None:
    me.wait.until(lambda d: me.css("#play").is_enabled(), "the Play button never became active")
    me.play_to_end()
    for scale in SCALES:
        me.click_option(scale, values[scale])
    me.css("#submit").click()


def landed_on(me: ParticipantPage, path: str) -> dict[str, list[str]]:
    """Wait until the browser is at ``path`` (on the live server); its query."""
    me.wait.until(lambda d: urlsplit(d.current_url).path == path, f"never sent to {path}")
    return parse_qs(urlsplit(me.driver.current_url).query)


def test_the_prolific_round_trip_ends_at_the_completion_url_with_the_code(
    transactional_db, isolated_live_server, browser, clip_files
):
    server = isolated_live_server.url
    study = make_study(clip_files, n_clips=1, per_participant=1,
                       completion_url=f"{server}/healthz?from=syncmos", completion_code="C0MPL3TE")
    me = ParticipantPage(browser)
    browser.get(f"{server}/s/{study.public_id}/?PROLIFIC_PID=5f1a2b3c&STUDY_ID=st-77&SESSION_ID=se-99")
    consent(me)
    me.see("Instructions")
    me.css("#start").click()
    me.on_clip(1, 1)
    rate_clip(me, {"sync": 4, "visual": 4, "overall": 5})
    me.see("Thank you")
    me.see("Taking you back to the study platform in")
    shot(browser, "done-redirecting")
    query = landed_on(me, "/healthz")
    assert query == {"from": ["syncmos"], "cc": ["C0MPL3TE"]}
    participant = Participant.objects.get(study=study)
    assert (participant.external_id, participant.external_study_id, participant.external_session_id) == (
        "5f1a2b3c", "st-77", "se-99")
    assert participant.state == Participant.COMPLETED
    assert participant.assignments.filter(completed_at__isnull=False).count() == 1
    # The same link again (another visit from Prolific) resumes the finished session: no second participant.
    browser.get(f"{server}/s/{study.public_id}/?PROLIFIC_PID=5f1a2b3c&STUDY_ID=st-77&SESSION_ID=se-99")
    landed_on(me, "/healthz")
    assert Participant.objects.filter(study=study).count() == 1


def test_practice_feedback_is_shown_and_continued(transactional_db, isolated_live_server, browser, clip_files):
    study = make_quality_study(clip_files, practice=1, gold=0, tests=1)
    me = ParticipantPage(browser)
    browser.get(f"{isolated_live_server.url}/s/{study.public_id}/")
    consent(me)
    me.see("The first clip is a practice clip")
    shot(browser, "instructions-with-practice")
    me.css(".flow-quiet-link").click()  # "Return this study" asks first; going back changes nothing
    me.see("Return this study?")
    assert browser.switch_to.active_element.get_attribute("id") == "return-cancel"
    shot(browser, "return-confirm")
    me.keys("\ue007")  # Enter on "No, go back"
    me.see("Instructions")
    me.css("#start").click()
    me.see("Practice clip 1 of 1")
    rate_clip(me, {"sync": 3, "visual": 4, "overall": 2})  # sync outside 4–5
    me.see("Feedback on your practice answers")
    me.see(PRACTICE_FEEDBACK)
    text = me.text()
    assert "Outside the expected range" in text and "Inside the expected range" in text
    assert "4 (Good) to 5 (Excellent)" in text
    assert browser.switch_to.active_element.get_attribute("id") == "feedback-continue"  # focus is on Continue
    shot(browser, "practice-feedback")
    me.keys("\ue007")  # Enter
    me.on_clip(1, 1)
    participant = Participant.objects.get(study=study)
    practice = participant.assignments.get(role=StudyClip.ROLE_PRACTICE)
    assert practice.passed_check is False and practice.feedback_seen_at is not None
    assert participant.state == Participant.IN_PROGRESS


def test_a_failed_gold_check_screens_out_and_returns_the_screen_out_code(
    transactional_db, isolated_live_server, browser, clip_files
):
    server = isolated_live_server.url
    study = make_quality_study(clip_files, practice=0, gold=1, tests=1, gold_failures_allowed=0,
                               completion_url=f"{server}/healthz", screened_out_code="SCR33N")
    me = ParticipantPage(browser)
    browser.get(f"{server}/s/{study.public_id}/?PROLIFIC_PID=gold-e2e")
    consent(me)
    me.css("#start").click()
    me.on_clip(1, 2)
    rate_clip(me, {"sync": 3, "visual": 3, "overall": 3})
    me.on_clip(2, 2)  # the gold clip (never first) looks like any other
    rate_clip(me, GOLD_FAIL)
    me.see("You cannot continue with this study")
    me.see("failed 1 of 1 attention check")
    shot(browser, "screened-out-gold")
    assert landed_on(me, "/healthz") == {"cc": ["SCR33N"]}
    participant = Participant.objects.get(study=study)
    assert participant.state == Participant.SCREENED_OUT and participant.completion_code == ""
    assert participant.assignments.get(role=StudyClip.ROLE_GOLD).passed_check is False


def start_check(server: str, study, browser) -> tuple[ParticipantPage, Participant]:
    me = ParticipantPage(browser)
    browser.get(f"{server}/s/{study.public_id}/")
    consent(me)
    me.see("Check your set-up")
    return me, Participant.objects.get(study=study)


def hear_and_answer(me: ParticipantPage, participant: Participant, right: bool) -> None:
    """Play the sound check to its end, then press the key of the number (read from the database)."""
    assert me.css("#numbers").get_attribute("disabled") is not None  # locked until played
    me.css("#check-play").click()
    me.wait.until(lambda d: d.execute_script("return document.getElementById('check-clip').ended"),
                  "the sound check never ended")
    me.wait.until(lambda d: me.css("#numbers").get_attribute("disabled") is None, "the numbers never unlocked")
    participant.refresh_from_db()
    number = participant.audio_check_answer if right else participant.audio_check_answer % 9 + 1
    me.keys(str(number))
    assert me.css(f'input[name="answer"][value="{number}"]').is_selected()
    me.css("#check-submit").click()


def test_the_environment_check_with_its_sound_check_answered(
    transactional_db, isolated_live_server, browser, clip_files
):
    study = make_study(clip_files, n_clips=1, per_participant=1, **ENVIRONMENT_CHECK)
    me, participant = start_check(isolated_live_server.url, study, browser)
    shot(browser, "environment-check")
    hear_and_answer(me, participant, right=False)
    me.see("That was not the number")
    me.see("1 try left")
    shot(browser, "environment-check-wrong")
    hear_and_answer(me, participant, right=True)
    me.see("Instructions")
    me.css("#start").click()  # asks for fullscreen on the way
    me.on_clip(1, 1)
    participant.refresh_from_db()
    assert participant.state == Participant.IN_PROGRESS
    record = participant.environment
    assert [a["audio"]["status"] for a in record["attempts"]] == ["wrong", "confirmed"]
    client = record["attempts"][-1]["client"]
    assert client["viewport_width"] > 800 and client["player_height"] >= 200 and client["ua_mobile"] is False
    assert record["attempts"][-1]["face_px"] >= study.min_face_px
    assert record["fullscreen"] in ("granted", "denied", "unsupported")


def test_the_sound_check_answered_wrongly_twice_screens_out(
    transactional_db, isolated_live_server, browser, clip_files
):
    study = make_study(clip_files, n_clips=1, per_participant=1, **ENVIRONMENT_CHECK)
    me, participant = start_check(isolated_live_server.url, study, browser)
    hear_and_answer(me, participant, right=False)
    me.see("That was not the number")
    hear_and_answer(me, participant, right=False)
    me.see("You cannot continue with this study")
    me.see("could not confirm that sound plays")
    shot(browser, "screened-out-sound")
    participant.refresh_from_db()
    assert participant.state == Participant.SCREENED_OUT and not participant.assignments.exists()
