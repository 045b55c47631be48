"""A whole participant session in Debian's headless Chromium: consent, instructions, every clip played
to its end and rated (mouse and keyboard), a clip the server does not count as watched (played again,
answers kept), reloads mid-trial and right after saving, a lost network, and the completion code;
then the database must hold every answer exactly once."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from studyapp.models import Participant, PlaybackEvent, Rating
from tests.fixtures import make_study

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCALES = ("sync", "visual", "overall")
TIMEOUT = 20


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("SYNCMOS_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


class ParticipantPage:
    """The participant's eyes and hands on the study pages: what they see and press."""

    def __init__(self, driver) -> None:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        # Pages replace each other under the waits: a vanished element just means "not yet".
        self.wait = WebDriverWait(
            driver, TIMEOUT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text(self) -> str:
        return self.css("body").text

    def see(self, words: str) -> None:
        self.wait.until(lambda d: words in self.text(), f"never saw {words!r}")

    def on_clip(self, number: int, total: int) -> None:
        self.see(f"Clip {number} of {total}")
        self.wait.until(lambda d: self.css("#play").is_enabled(), "the Play button never became active")

    def play_to_end(self) -> None:
        self.css("#play").click()
        self.wait.until(lambda d: d.execute_script("return document.getElementById('clip').ended"), "clip never ended")
        self.wait.until(lambda d: all(f.is_enabled() for f in self._fieldsets()), "ratings never unlocked")

    def locked(self) -> bool:
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('fieldset.scale')).every(f => f.disabled)"
        )

    def _fieldsets(self):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, "fieldset.scale")

    def click_option(self, scale: str, value: int) -> None:
        self.css(f'fieldset[data-scale="{scale}"] input[value="{value}"]').find_element("xpath", "..").click()

    def keys(self, *keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def chosen(self) -> dict[str, int]:
        return self.driver.execute_script(
            "const out = {}; document.querySelectorAll('fieldset.scale').forEach(f => {"
            " const c = f.querySelector('input:checked'); if (c) out[f.dataset.scale] = Number(c.value); });"
            " return out;"
        )

    def pending(self) -> object:
        return self.driver.execute_script(
            "return Object.keys(localStorage).filter(k => k.endsWith(':pending')).length"
        )

    def block(self, *urls: str) -> None:
        """Make requests to these URL patterns fail as if the network were down (none: unblock all)."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": list(urls)})

    def block_saving(self, blocked: bool) -> None:
        self.block(*(["*/rate"] if blocked else []))


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
