"""Faults against the production topology: gunicorn (2 processes × 4 threads, DEBUG off) and PostgreSQL,
driven by simulated participants over HTTP (tests/integration/load.py), the database reached through
a TCP relay that a test can cut.

Each fault ends with the database checked against what the participants were told: every confirmed
rating stored exactly once, nothing else stored.

- the server killed (SIGKILL) with a rating in flight, and again after a rating was stored: the page
  sends the same body until the restarted server answers; stored once, then replayed;
- the database unreachable for a moment: 503 + Retry-After (JSON for the rating and telemetry POSTs, a
  short page otherwise), never 500; the retries store once — alone and under concurrent participants;
- a duplicate tab, a forged POST for another participant's assignment, a rating outside 1–5, a replayed
  request, a tampered or expired clip URL: 409, 404, 400, 200 replay, 404 and 403, nothing extra written;
- 40 participants at once: no rating lost or doubled, no 5xx.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests
from django.conf import settings
from django.core import signing
from django.db import connection
from django.urls import reverse

from studyapp.models import Assignment, Participant, PlaybackEvent, Rating
from studyapp.views.media import CLIP_URL_SALT
from tests.fixtures import make_study
from tests.integration.conftest import LOG_DIR, _require
from tests.integration.load import (
    GunicornServer, Page, RequestLog, SimulatedParticipant, TcpProxy, check_ratings, run_participants,
    send_concurrently, server_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOG = LOG_DIR / "gunicorn-faults.log"


@pytest.fixture(scope="module")
def database_relay(loopback_services, django_db_setup):
    """The test database's PostgreSQL behind a relay the tests can cut."""
    db = connection.settings_dict
    relay = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def web(database_relay, tmp_path_factory) -> GunicornServer:
    """gunicorn with production settings on a loopback port, its database through the relay."""
    if not (Path(sys.executable).parent / "gunicorn").exists():
        _require("gunicorn is not installed next to this Python")
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    url = f"postgres://{quote(db['USER'], safe='')}{password}@127.0.0.1:{database_relay.port}/{db['NAME']}"
    env = server_env(url, str(settings.MEDIA_ROOT), str(tmp_path_factory.mktemp("static")), settings.SECRET_KEY,
                     DATABASE_CONNECT_TIMEOUT="2", SYNCMOS_DATABASE_RETRY_AFTER="1")
    LOG.unlink(missing_ok=True)
    server = GunicornServer(env, workers=2, threads=4, log_path=LOG)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def study(transactional_db, clip_files, web):
    return make_study(clip_files, n_clips=5, per_participant=4, ratings_per_clip=1000)


@pytest.fixture
def log() -> RequestLog:
    return RequestLog()


def participant(web: GunicornServer, study, log: RequestLog, **options) -> SimulatedParticipant:
    return SimulatedParticipant(web.base_url, study.public_id, log, deadline=time.monotonic() + 90, **options)


def first_trial(person: SimulatedParticipant) -> tuple[Page, dict]:
    """Study link → consent → instructions → the first trial page and its config."""
    page = person.open_study()
    for _ in range(5):
        if page.trial_config is not None:
            return page, page.trial_config
        page = person.step(page)
    raise AssertionError(f"no trial page reached; last at {page.url} (HTTP {page.status})")


def watched_trial(person: SimulatedParticipant) -> tuple[Page, dict]:
    page, config = first_trial(person)
    person.watch(config, person.fetch_clips(page))
    return page, config


def finish(person: SimulatedParticipant, next_url: str) -> None:
    page = person.get_page(next_url)
    for _ in range(20):
        page = person.step(page)
        if page is None:
            return
    raise AssertionError("the session did not end")


def stored(assignment_token: str) -> dict[str, dict]:
    return {r.scale.key: {"value": r.value, "uuid": str(r.client_uuid)}
            for r in Rating.objects.filter(assignment__token=assignment_token).select_related("scale")}


def sent(body: bytes) -> dict[str, dict]:
    return json.loads(body)["ratings"]


def post_rating_once(person: SimulatedParticipant, config: dict, body: bytes) -> requests.Response | None:
    headers = person.json_headers(config["csrf"])
    return person.request_once("rate", "POST", config["rateUrl"], data=body, headers=headers)


DATABASE_EXCEPTIONS = {"django.db.utils.OperationalError", "django.db.utils.InterfaceError", "psycopg.OperationalError",
                       "psycopg.InterfaceError"}


def no_internal_errors(log: RequestLog, web: GunicornServer, log_offset: int) -> None:
    """No request was answered 500, and every exception the server logged is the database's (answered 503)."""
    server_log = web.log(log_offset)
    assert [r for r in log.records if r.status == 500] == [], server_log[-4000:]
    raised = set(re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception)): ", server_log, flags=re.MULTILINE))
    assert raised <= DATABASE_EXCEPTIONS, server_log[-4000:]


def direct_connection(**options) -> psycopg.Connection:
    """A connection to the test database that bypasses the relay (and the server)."""
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None,
                           dbname=db["NAME"], **options)


class RowLock:
    """Hold a participant's row lock from outside the server, so that their next request waits inside it."""

    def __init__(self, participant_token: str) -> None:
        self.conn = direct_connection()
        self.conn.execute(f"SELECT 1 FROM {Participant._meta.db_table} WHERE token = %s FOR UPDATE",
                          [participant_token])

    def wait_for_waiter(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        with direct_connection(autocommit=True) as probe:
            while time.monotonic() < deadline:
                waiting = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND datname = current_database()").fetchone()[0]
                if waiting:
                    return
                time.sleep(0.05)
        raise TimeoutError("the rating request never reached the database")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def in_background(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def log_size(web: GunicornServer) -> int:
    return web.log_path.stat().st_size


# ---- the server restarted mid-session ----


def test_a_rating_cut_off_by_a_server_kill_is_stored_exactly_once_after_the_restart(web, study, log):
    offset = log_size(web)
    person = participant(web, study, log)
    _, config = watched_trial(person)
    body = person.rating_body(config)

    # Killed with the rating in flight: the request waits on the participant's row inside the server.
    lock = RowLock(person.result.token)
    try:
        answer: list = []
        sender = in_background(lambda: answer.append(post_rating_once(person, config, body)))
        lock.wait_for_waiter()
        web.kill()
        sender.join(timeout=30)
    finally:
        lock.release()
    assert answer == [None]  # no HTTP answer: the page keeps the answer and sends it again
    restart = in_background(web.start)
    response = person.send_rating(config, body)  # refused while down; the same body until answered
    restart.join()
    assert response.status_code == 201, response.text
    assert stored(config["assignment"]) == sent(body)

    # Stored, then the server died before the page moved on: the same body again is a replay.
    web.kill()
    restart = in_background(web.start)
    response = person.send_rating(config, body)
    restart.join()
    assert response.status_code == 200 and response.json()["replay"] is True
    assert stored(config["assignment"]) == sent(body)

    finish(person, response.json()["next"])  # the same cookie session goes on after two restarts
    assert person.result.completion_code
    assert check_ratings(study, [person.result]) == []
    assert any(r.status == 0 for r in log.of("rate"))  # the kills really cut requests off
    no_internal_errors(log, web, offset)


# ---- the database briefly unavailable ----


def test_while_the_database_is_unreachable_requests_get_503_with_retry_after_and_the_retry_stores_once(
    web, study, log, database_relay
):
    offset = log_size(web)
    person = participant(web, study, log)
    page, config = watched_trial(person)
    body = person.rating_body(config)

    database_relay.cut()
    try:
        rating = post_rating_once(person, config, body)
        event = person.request_once("event", "POST", config["eventsUrl"], headers=person.json_headers(config["csrf"]),
                                    data=json.dumps({"assignment": config["assignment"],
                                                     "events": [{"kind": "pause", "media_time": 0.5}]}))
        home = person.request_once("page", "GET", page.url, headers={"Accept": "text/html"})
    finally:
        database_relay.restore()
    for response in (rating, event):
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"] == "unavailable"
        assert response.headers["Retry-After"] == "1"
    assert home.status_code == 503 and home.headers["Content-Type"].startswith("text/html")
    assert home.headers["Retry-After"] == "1" and "Back in a moment" in home.text
    assert stored(config["assignment"]) == {}

    database_relay.cut()  # the page's retries run into the outage and through it
    restored = database_relay.restore_after(1.5)
    response = person.send_rating(config, body)
    restored.join()
    assert response.status_code in (200, 201), response.text
    assert stored(config["assignment"]) == sent(body)
    assert len(log.of("rate", statuses=[503])) >= 2
    finish(person, response.json()["next"])
    assert check_ratings(study, [person.result]) == []
    no_internal_errors(log, web, offset)


def test_participants_rating_through_a_database_outage_all_finish_with_every_rating_stored_once(
    web, study, log, database_relay
):
    offset = log_size(web)
    outage = database_relay.cut_for(1.5, after=2.5)
    results = run_participants(web.base_url, study.public_id, 12, log, time_limit=90, ramp_seconds=1.0, seed=7)
    outage.join()
    assert {r.status for r in log.server_errors()} == {503}, "the outage hit no request, or got another 5xx"
    assert check_ratings(study, results) == []
    no_internal_errors(log, web, offset)


# ---- a duplicate tab ----


def test_two_tabs_posting_different_answers_for_one_clip_at_once_store_one_answer(web, study, log):
    first = participant(web, study, log)
    page, config = watched_trial(first)
    second = participant(web, study, log, external_id=first.external_id)
    second.http.cookies.update(first.http.cookies)  # a second tab of the same browser
    second_config = second.get_page(page.url).trial_config
    assert second_config["assignment"] == config["assignment"]
    bodies = [first.rating_body(config, {key: 1 for key in config["scales"]}),
              second.rating_body(second_config, {key: 5 for key in config["scales"]})]
    answers = send_concurrently([lambda: post_rating_once(first, config, bodies[0]),
                                 lambda: post_rating_once(second, second_config, bodies[1])])
    assert sorted(a.status_code for a in answers) == [201, 409]
    winner = next(i for i, a in enumerate(answers) if a.status_code == 201)
    loser = answers[1 - winner]
    assert loser.json()["error"] == "already_rated"
    assert loser.json()["ratings"] == sent(bodies[winner])  # the losing tab is told what stands
    assert stored(config["assignment"]) == sent(bodies[winner])


# ---- a forged POST for another participant's assignment ----


def test_a_post_for_another_participants_assignment_is_404_and_writes_nothing(web, study, log):
    mallory, bob = participant(web, study, log), participant(web, study, log)
    _, mallory_config = first_trial(mallory)
    _, bob_config = watched_trial(bob)
    forged = dict(mallory_config, assignment=bob_config["assignment"])
    events_before = PlaybackEvent.objects.filter(assignment__token=bob_config["assignment"]).count()

    response = post_rating_once(mallory, forged, mallory.rating_body(forged))
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = mallory.request_once("event", "POST", forged["eventsUrl"], headers=mallory.json_headers(forged["csrf"]),
                                    data=json.dumps({"assignment": bob_config["assignment"],
                                                     "events": [{"kind": "ended", "media_time": 1.0}]}))
    assert response.status_code == 404
    # Without the session's CSRF cookie, a page elsewhere cannot post even with both of Bob's tokens.
    response = requests.post(web.base_url + bob_config["rateUrl"], data=bob.rating_body(bob_config),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 403
    assert stored(bob_config["assignment"]) == {}
    assert PlaybackEvent.objects.filter(assignment__token=bob_config["assignment"]).count() == events_before
    assert bob.send_rating(bob_config, bob.rating_body(bob_config)).status_code == 201  # Bob's own still works


# ---- a rating outside 1–5 ----


def test_a_rating_outside_1_to_5_is_400_and_writes_nothing(web, study, log):
    person = participant(web, study, log)
    _, config = watched_trial(person)
    for value in (0, 6, -1, 100, "3", 2.5, True, None):
        ratings = {key: {"value": 3, "uuid": str(uuid.uuid4())} for key in config["scales"]}
        ratings[config["scales"][0]]["value"] = value
        body = json.dumps({"assignment": config["assignment"], "ratings": ratings}).encode()
        response = post_rating_once(person, config, body)
        assert response.status_code == 400 and response.json()["error"] == "bad_request", value
    assert stored(config["assignment"]) == {}
    assert person.send_rating(config, person.rating_body(config)).status_code == 201


# ---- a replayed request ----


def test_a_replayed_rating_is_answered_200_from_what_is_stored_without_a_duplicate(web, study, log):
    person = participant(web, study, log)
    _, config = watched_trial(person)
    body = person.rating_body(config)
    assert post_rating_once(person, config, body).status_code == 201
    person.get_page(config["nextUrl"])  # the participant moved on to the next clip
    replay = post_rating_once(person, config, body)
    assert replay.status_code == 200
    assert replay.json()["replay"] is True and replay.json()["ratings"] == sent(body)
    assert Rating.objects.filter(assignment__token=config["assignment"]).count() == len(config["scales"])
    assert Assignment.objects.get(token=config["assignment"]).completed_at is not None


# ---- a tampered or expired signed clip URL ----


class SignedLongAgo(signing.TimestampSigner):
    """Signs as the server does, with a timestamp seven hours back (the server keeps URLs six)."""

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - 7 * 3600)


def test_a_tampered_clip_url_is_404_and_an_expired_one_is_403(web, study, log):
    person = participant(web, study, log)
    page, config = first_trial(person)
    genuine = page.parsed.videos[0]
    assert person.request_once("media", "GET", genuine, headers={"Range": "bytes=0-99"}).status_code == 206

    signed = genuine.rstrip("/").rsplit("/", 1)[-1]
    flipped = signed[:-1] + ("A" if signed[-1] != "A" else "B")
    tampered = reverse("participant:clip-media", args=[flipped])
    assert person.request_once("media", "GET", tampered).status_code == 404
    # Signed here with the server's key: accepted while fresh, so the 403 below is the expiry alone.
    fresh = reverse("participant:clip-media",
                    args=[signing.TimestampSigner(salt=CLIP_URL_SALT).sign(config["assignment"])])
    assert person.request_once("media", "GET", fresh).status_code == 200
    expired = reverse("participant:clip-media", args=[SignedLongAgo(salt=CLIP_URL_SALT).sign(config["assignment"])])
    response = person.request_once("media", "GET", expired)
    assert response.status_code == 403 and b"expired" in response.content

    stranger = participant(web, study, log)
    first_trial(stranger)
    assert stranger.request_once("media", "GET", genuine).status_code == 403  # another session's URL


# ---- load ----


def test_forty_participants_at_once_lose_and_double_no_rating_and_get_no_5xx(web, study, log):
    results = run_participants(web.base_url, study.public_id, 40, log, time_limit=90, ramp_seconds=2.0, seed=3)
    assert check_ratings(study, results) == []
    assert log.server_errors() == []
    assert len(log.of("rate", statuses=[201])) == 40 * 4


# ---- the simulated browser itself ----


def test_the_simulated_browser_reads_a_clips_duration_from_its_mp4_header(clip_files):
    from tests.integration.load import mp4_duration

    for made in clip_files:
        assert mp4_duration(made.path.read_bytes()) == pytest.approx(made.info.duration, abs=0.05)
    assert mp4_duration(b"\x00\x00\x00\x08free" * 4) is None
