"""A whole participant session in Debian's headless Chromium: consent, instructions, every clip played
to its end and rated (mouse and keyboard), a clip the server does not count as watched (played again,
answers kept), reloads mid-trial and right after saving, a lost network, and the completion code;
then the database must hold every answer exactly once."""

from __future__ import annotations

import time

import pytest

from studyapp.models import Participant, PlaybackEvent, Rating
from tests.e2e.pages import ARTIFACTS, SCALES, ParticipantPage
from tests.fixtures import make_study

pytestmark = pytest.mark.e2e

def test_it_runs_a_whole_session_without_losing_or_doubling_a_rating(transactional_db, isolated_live_server, browser, clip_files):
    live_server = isolated_live_server
    from selenium.webdriver.common.keys import Keys

    study = make_study(clip_files, n_clips=5, per_participant=4)
    total = study.clips_per_participant
    me = ParticipantPage(browser)
    expected: list[dict[str, int]] = []

    browser.get(f"{live_server.url}/s/{study.public_id}/?PROLIFIC_PID=e2e-5f1a&STUDY_ID=s&SESSION_ID=x")
    me.see(study.title)
    me.css('button[type="submit"]').click()  # without consent: refused, still on the consent page
    me.see("tick the box")
    me.css('input[name="consent"]').click()
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "consent-page.png"))
    me.css('button[type="submit"]').click()
    me.see("Instructions")
    browser.save_screenshot(str(ARTIFACTS / "instructions-page.png"))
    me.css('button[type="submit"]').click()

    # Clip 1: mouse only. The server loses the playback events, so it refuses the answer as not watched:
    # the page says so, locks the questions with the choices kept, and takes them after the clip is played again.
    me.on_clip(1, total)
    me.play_to_end()
    for scale, value in zip(SCALES, (4, 2, 3)):
        me.click_option(scale, value)
    expected.append(me.chosen())
    events = PlaybackEvent.objects.filter(assignment__participant__external_id="e2e-5f1a", assignment__position=0)
    me.wait.until(lambda d: events.filter(kind="ended").exists(), "the server never got the ended event")
    events.delete()
    me.css("#submit").click()
    me.see("could not confirm that the clip played to its end")
    assert me.locked() and me.chosen() == expected[-1] and not me.css("#submit").is_enabled()
    browser.save_screenshot(str(ARTIFACTS / "not-watched-page.png"))
    me.play_to_end()
    assert me.chosen() == expected[-1]
    me.css("#submit").click()

    # Clip 2: mouse for the first question, keys for the others; a screenshot; a reload mid-way.
    me.on_clip(2, total)
    assert not me.css("#submit").is_enabled()
    me.play_to_end()
    me.click_option("sync", 5)
    me.keys(Keys.TAB, "2")  # Tab moves to the next question; 2 chooses "Poor" there
    assert me.chosen() == {"sync": 5, "visual": 2}
    time.sleep(0.3)  # let the option's colour transition finish
    browser.save_screenshot(str(ARTIFACTS / "rating-page.png"))
    browser.refresh()
    me.on_clip(2, total)  # same clip; the server knows it ended, the choices come back
    me.wait.until(lambda d: me.chosen() == {"sync": 5, "visual": 2}, "the choices were not restored")
    me.click_option("overall", 4)
    expected.append(me.chosen())
    me.css("#submit").click()

    # Clip 3: the network drops while saving; the answer waits in localStorage and survives a reload.
    me.on_clip(3, total)
    me.play_to_end()
    me.click_option("sync", 1)
    me.keys(Keys.TAB, "5", Keys.TAB, "3")
    expected.append(me.chosen())
    me.block_saving(True)
    me.css("#submit").click()
    me.see("Connection problem")
    assert me.pending() == 1
    me.block_saving(False)
    browser.refresh()  # the pending answer is sent before anything else

    # Clip 4: keyboard only, then a reload right after pressing Save.
    me.on_clip(4, total)
    me.play_to_end()
    me.click_option("sync", 3)  # gives the first question focus …
    me.keys("2", Keys.TAB, "4", Keys.TAB, "1")  # … then keys only
    expected.append(me.chosen())
    assert expected[-1] == {"sync": 2, "visual": 4, "overall": 1}
    me.css("#submit").click()
    me.wait.until(lambda d: me.pending() == 1 or "Thank you" in me.text(), "the answer was never kept")
    browser.refresh()

    me.see("Thank you")
    browser.save_screenshot(str(ARTIFACTS / "end-page.png"))
    participant = Participant.objects.get(study=study, external_id="e2e-5f1a")
    assert participant.completion_code and participant.completion_code in me.text()
    assert me.pending() == 0

    participant.refresh_from_db()
    assert participant.state == Participant.COMPLETED and participant.completed_at
    rows = Rating.objects.filter(assignment__participant=participant)
    assert rows.count() == total * 3
    assert rows.values("assignment", "scale").distinct().count() == total * 3
    saved = [
        {r.scale.key: r.value for r in a.ratings.select_related("scale")}
        for a in participant.assignments.order_by("position")
    ]
    assert saved == expected
    assert all(a.playback_events.filter(kind="ended").exists() for a in participant.assignments.all())
    assert Participant.objects.filter(study=study).count() == 1


def test_it_counts_a_clip_whose_playback_events_reached_the_server_late(
    transactional_db, isolated_live_server, browser, clip_files
):
    """The network is down while the clip plays: the page keeps sending "play" and "ended", and once they
    arrive it waits as long as the clip lasts before saving, so the server does not refuse an honest answer."""
    study = make_study(clip_files, n_clips=1, per_participant=1)
    me = ParticipantPage(browser)
    browser.get(f"{isolated_live_server.url}/s/{study.public_id}/?PROLIFIC_PID=e2e-late")
    me.css('input[name="consent"]').click()
    me.css('button[type="submit"]').click()
    me.see("Instructions")
    me.css('button[type="submit"]').click()
    me.on_clip(1, 1)
    me.block("*/events")
    me.play_to_end()
    for scale in SCALES:
        me.click_option(scale, 4)
    me.see("Connection problem")  # the page says it keeps trying
    me.block()
    me.css("#submit").click()
    me.see("Thank you")
    participant = Participant.objects.get(study=study, external_id="e2e-late")
    assert participant.state == Participant.COMPLETED
    assert Rating.objects.filter(assignment__participant=participant).count() == len(SCALES)
    kinds = list(PlaybackEvent.objects.filter(assignment__participant=participant).values_list("kind", flat=True))
    assert kinds.index("play") < kinds.index("ended")
