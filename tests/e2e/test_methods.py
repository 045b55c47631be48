"""One participant session per method in Debian's headless Chromium (ACR is the session test's):
ACR with hidden reference, DCR (the reference, then the clip) and pairwise comparison (A and B in
step, switched mid-playback). Each ends with exactly the expected ratings in the database.

The trials are made here rather than by the planner, so that each test knows which clip it shows.
"""

from __future__ import annotations

import subprocess

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from generation import media
from studyapp.models import Participant, PlaybackEvent, Rating, Study, StudyClip
from tests.e2e.pages import ARTIFACTS, SCALES, ParticipantPage
from tests.fixtures import ClipFile, make_clip
from tests.studyapp.test_trial_views import REFERENCE_VARIANT, method_study, participant_with_trials

pytestmark = pytest.mark.e2e

TEST = StudyClip.ROLE_TEST
LONG_SECONDS = 3


@pytest.fixture(scope="module")
def long_clip_files(tmp_path_factory, clip_files) -> list[ClipFile | None]:
    """Variants 0 and 4 (same face and sentence) looped to 3-second clips: time to switch in the middle."""
    folder = tmp_path_factory.mktemp("long-clips")
    files: list[ClipFile | None] = [None] * len(clip_files)
    for variant in (0, 4):
        path = folder / f"long-{variant}.mp4"
        subprocess.run([media.FFMPEG, "-nostdin", "-v", "error", "-y", "-stream_loop", str(LONG_SECONDS - 1), "-i",
                        str(clip_files[variant].path), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-movflags", "+faststart", str(path)], check=True)
        files[variant] = ClipFile(path, media.probe(path), media.sha256_file(path))
    return files


def begin(browser, live_server, participant: Participant) -> ParticipantPage:
    ARTIFACTS.mkdir(exist_ok=True)
    me = ParticipantPage(browser)
    browser.get(f"{live_server.url}/p/{participant.token}/")
    me.see("Instructions")
    me.css("#start").click()
    return me


def answer(me: ParticipantPage, values: dict[str, int]) -> None:
    for scale, value in values.items():
        me.click_option(scale, value)


def saved(participant: Participant) -> list[dict[str, int]]:
    return [
        {r.scale.key: r.value for r in a.ratings.select_related("scale")}
        for a in participant.assignments.order_by("position")
    ]


def assert_exactly(participant: Participant, expected: list[dict[str, int]]) -> None:
    participant.refresh_from_db()
    assert participant.state == Participant.COMPLETED
    assert Rating.objects.filter(assignment__participant=participant).count() == len(expected) * len(SCALES)
    assert saved(participant) == expected
    assert all(a.first_choice_ms is not None for a in participant.assignments.all())
    for assignment in participant.assignments.all():  # one "choice" per trial: the first answer
        assert assignment.playback_events.filter(kind=PlaybackEvent.CHOICE).count() == 1


def test_an_acr_hr_session_rates_the_hidden_reference_like_any_clip(
    transactional_db, isolated_live_server, browser, clip_files
):
    study, clips = method_study(clip_files, Study.METHOD_ACR_HR, variants=(0, REFERENCE_VARIANT))
    trials = [(clips[REFERENCE_VARIANT], None, TEST), (clips[0], None, TEST)]
    participant = participant_with_trials(study, trials, started=False)
    me = begin(browser, isolated_live_server, participant)
    expected = [{"sync": 5, "visual": 4, "overall": 5}, {"sync": 2, "visual": 3, "overall": 2}]

    me.on_clip(1, 2)
    assert "reference" not in browser.page_source.lower()
    assert browser.execute_script("return document.querySelectorAll('video').length") == 1
    me.keys(" ")  # Space plays when no question has the focus
    me.wait.until(lambda d: d.execute_script("return document.getElementById('clip').ended"), "clip never ended")
    me.wait.until(lambda d: not me.locked(), "ratings never unlocked")
    answer(me, expected[0])
    me.css("#submit").click()

    me.on_clip(2, 2)
    me.play_to_end()
    answer(me, expected[1])
    me.css("#play").click()  # "Play again": a replay, telemetry only
    second = participant.assignments.get(position=1)
    me.wait.until(lambda d: second.playback_events.filter(kind="ended").count() == 2, "the replay never ended")
    assert second.playback_events.filter(kind="play", detail="replay").count() == 1
    # The rewind: reported where the player stood when the seek finished — at 0, or a few ms into the replay
    # on a busy machine.
    rewinds = [e for e in second.playback_events.filter(kind="seek")
               if float(e.detail.rpartition(" to=")[2]) < 0.25]
    assert len(rewinds) == 1
    me.css(".leave summary").click()  # "Return this study" opens a confirmation under the trial, nothing more
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    browser.save_screenshot(str(ARTIFACTS / "acr-hr-page-foot.png"))
    assert me.css("#return-form button").is_displayed()
    me.css(".leave summary").click()
    me.css("#submit").click()
    me.see("Thank you")
    assert_exactly(participant, expected)


def test_a_dcr_session_plays_the_reference_then_the_clip_before_the_questions_unlock(
    transactional_db, isolated_live_server, browser, clip_files
):
    study, clips = method_study(clip_files, Study.METHOD_DCR, variants=(0, REFERENCE_VARIANT, 4))
    participant = participant_with_trials(study, [(clips[0], None, TEST), (clips[4], None, TEST)], started=False)
    browser.set_window_size(1280, 800)
    me = begin(browser, isolated_live_server, participant)
    expected = [{"sync": 2, "visual": 5, "overall": 3}, {"sync": 4, "visual": 4, "overall": 1}]
    state = "const r = document.getElementById('reference'), c = document.getElementById('clip');"

    fast = WebDriverWait(browser, 10, poll_frequency=0.02)  # the clips last a second
    me.on_clip(1, 2)
    me.css("#play").click()
    fast.until(lambda d: d.execute_script(state + "return !r.paused && r.currentTime > 0.1"), "reference never played")
    # The reference plays first, the clip waits; the questions stay locked until the clip has ended too.
    assert browser.execute_script(state + "return c.paused && c.currentTime === 0")
    assert me.locked()
    fast.until(lambda d: d.execute_script(state + "return r.ended && !c.paused"), "the clip never followed")
    assert me.locked()
    me.wait.until(lambda d: d.execute_script(state + "return c.ended"), "the clip never ended")
    me.wait.until(lambda d: not me.locked(), "ratings never unlocked")
    me.click_option("sync", expected[0]["sync"])
    me.keys("\t", str(expected[0]["visual"]), "\t", str(expected[0]["overall"]))
    assert me.chosen() == expected[0]
    browser.save_screenshot(str(ARTIFACTS / "dcr-page.png"))
    me.css("#submit").click()

    me.on_clip(2, 2)
    browser.set_window_size(420, 900)  # narrow: the two stack
    boxes = browser.execute_script(
        "return ['reference', 'clip'].map(id => document.getElementById(id).getBoundingClientRect().top)"
    )
    assert boxes[1] > boxes[0] + 100
    no_sideways_scroll = "return document.documentElement.scrollWidth <= window.innerWidth"
    assert browser.execute_script(no_sideways_scroll)
    browser.save_screenshot(str(ARTIFACTS / "dcr-page-narrow.png"))
    me.play_to_end()
    answer(me, expected[1])
    assert browser.execute_script(no_sideways_scroll)
    me.css("#submit").click()
    me.see("Thank you")

    assert_exactly(participant, expected)
    for assignment in participant.assignments.all():
        # In the browser's clock: the page posts "play" at once but queues "ended", so the server may store
        # the clip's "play" before the reference's "ended"; the times say what happened first.
        first = {}
        for kind, detail, client_time in assignment.playback_events.order_by("id").values_list(
                "kind", "detail", "client_time"):
            first.setdefault((kind, detail), client_time)
        assert first[("play", "reference")] <= first[("ended", "reference")]
        assert first[("ended", "reference")] <= first[("play", "")] <= first[("ended", "")]


def test_a_pairwise_session_switches_between_a_and_b_without_losing_step(
    transactional_db, isolated_live_server, browser, clip_files, long_clip_files
):
    study, clips = method_study(long_clip_files, Study.METHOD_PAIRWISE, variants=(0, 4))
    short = {v: StudyClip.objects.create(study=study, clip=make_clip(v, clip_files)) for v in (1, 3)}
    trials = [(clips[0], clips[4], TEST), (short[1], short[3], TEST)]
    participant = participant_with_trials(study, trials, started=False)
    browser.set_window_size(1280, 800)
    me = begin(browser, isolated_live_server, participant)
    expected = [{"sync": 1, "visual": 2, "overall": 1}, {"sync": 5, "visual": 4, "overall": 4}]

    me.on_clip(1, 2)
    me.css("#play").click()
    WebDriverWait(browser, 10, poll_frequency=0.02).until(
        lambda d: d.execute_script("return document.getElementById('clip').currentTime > 0.6"), "A never played"
    )
    me.keys("b")  # mid-playback: B comes into view and sound, A plays on hidden and silent
    samples = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const a = document.getElementById('clip'), b = document.getElementById('clip-b');
        const audible = v => !v.muted && v.volume === 1, silent = v => v.muted || v.volume <= 1e-5;
        const samples = [], t0 = performance.now();
        (function sample() {
          samples.push({drift: Math.abs(a.currentTime - b.currentTime), t: b.currentTime,
                        playing: !a.paused && !b.paused, heard: audible(b) && silent(a),
                        aHidden: a.classList.contains('is-hidden'), bHidden: b.classList.contains('is-hidden'),
                        pressed: document.getElementById('show-b').getAttribute('aria-pressed')});
          if (performance.now() - t0 > 1200 || a.ended || b.ended) return done(samples);
          setTimeout(sample, 40);
        })();
    """)
    browser.save_screenshot(str(ARTIFACTS / "pairwise-after-switch.png"))
    # Both really played on (how far depends on the machine's load: a starved browser plays slower; the drift,
    # checked per sample, is what this test is about).
    assert len(samples) >= 10 and samples[-1]["t"] > samples[0]["t"] + 0.1
    assert all(s["playing"] for s in samples)
    assert max(s["drift"] for s in samples) < 0.1, [round(s["drift"], 3) for s in samples]
    assert all(s["heard"] and s["aHidden"] and not s["bHidden"] for s in samples)  # only B is seen and heard
    assert all(s["pressed"] == "true" for s in samples)
    me.wait.until(lambda d: d.execute_script("return document.getElementById('clip-b').ended"), "B never ended")
    me.wait.until(lambda d: not me.locked(), "ratings never unlocked")
    me.keys("a")  # back to A after the end
    assert browser.execute_script(
        "const a = document.getElementById('clip'), b = document.getElementById('clip-b');"
        "return !a.muted && a.volume === 1 && !a.classList.contains('is-hidden') && (b.muted || b.volume <= 1e-5)"
    )
    answer(me, expected[0])
    me.css("#submit").click()

    me.on_clip(2, 2)
    me.css("#show-b").click()  # a switch before playing
    me.play_to_end()
    answer(me, expected[1])
    me.css("#submit").click()
    me.see("Thank you")

    assert_exactly(participant, expected)
    first, second = participant.assignments.order_by("position")
    switches = list(first.playback_events.filter(kind=PlaybackEvent.SWITCH).values_list("detail", "media_time"))
    assert [detail for detail, _ in switches] == ["to_b", "to_a"]
    assert 0.5 < switches[0][1] < LONG_SECONDS  # mid-playback, on B's timeline (in step with A's, not equal)
    assert list(second.playback_events.filter(kind=PlaybackEvent.SWITCH).values_list("detail", flat=True)) == ["to_b"]
    for assignment in (first, second):  # A's events count for the watched gate, B's are marked "b"
        kinds = set(assignment.playback_events.values_list("kind", "detail"))
        assert {("play", ""), ("ended", ""), ("play", "b"), ("ended", "b")} <= kinds
