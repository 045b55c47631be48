"""Saving ratings: exactly once, idempotent replays, clear refusals that leave stored data intact."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from django.db import connection, connections
from django.test import Client

from generation.models import Clip
from studyapp import ratings
from studyapp.models import Assignment, Participant, PlaybackEvent, Rating, Study, StudyClip

from .conftest import (
    GOLD_FAIL, GOLD_PASS, backdate_plays, clip_duration, make_quality_study, mark_ended, start_session,
)


def first(session) -> Assignment:
    return session.participant.assignments.order_by("position").first()


def snapshot() -> list[tuple]:
    return sorted(Rating.objects.values_list("assignment_id", "scale__key", "value", "client_uuid"))


def body(assignment: Assignment, values=None, uuids=None) -> dict:
    values = values or {"sync": 4, "visual": 3, "overall": 5}
    uuids = uuids or {k: str(uuid.uuid4()) for k in values}
    return {"assignment": assignment.token, "response_time_ms": 2100,
            "ratings": {k: {"value": v, "uuid": uuids[k]} for k, v in values.items()}}


def test_it_saves_a_rating_once(session):
    assignment = first(session)
    session.ended(assignment)
    response = session.post_json("rate", body(assignment))
    assert response.status_code == 201
    assert response.json()["replay"] is False and response.json()["ratings"]["sync"]["value"] == 4
    saved = Rating.objects.filter(assignment=assignment)
    assert sorted(saved.values_list("scale__key", "value")) == [("overall", 5), ("sync", 4), ("visual", 3)]
    assert set(saved.values_list("response_time_ms", flat=True)) == {2100}
    assignment.refresh_from_db()
    assert assignment.completed_at is not None


def test_it_returns_the_stored_answer_for_a_replay_and_writes_nothing(session):
    assignment = first(session)
    session.ended(assignment)
    sent = body(assignment)
    assert session.post_json("rate", sent).status_code == 201
    before = snapshot()
    replay = session.post_json("rate", sent)
    assert replay.status_code == 200
    assert replay.json()["replay"] is True
    assert replay.json()["ratings"] == {k: {"value": v["value"], "uuid": v["uuid"]} for k, v in sent["ratings"].items()}
    assert snapshot() == before


def test_it_answers_a_second_tab_with_409_and_the_stored_answer(session):
    assignment = first(session)
    session.ended(assignment)
    original = body(assignment, {"sync": 2, "visual": 2, "overall": 2})
    session.post_json("rate", original)
    before = snapshot()
    other_tab = session.post_json("rate", body(assignment, {"sync": 5, "visual": 5, "overall": 5}))
    assert other_tab.status_code == 409
    assert other_tab.json()["error"] == "already_rated"
    assert {k: v["value"] for k, v in other_tab.json()["ratings"].items()} == {"sync": 2, "visual": 2, "overall": 2}
    assert snapshot() == before


def test_it_answers_the_same_uuids_with_other_values_with_409_and_the_stored_answer(session):
    """Two tabs sharing localStorage send the same keys; the second tab's other choice is not a replay."""
    assignment = first(session)
    session.ended(assignment)
    uuids = {k: str(uuid.uuid4()) for k in ("sync", "visual", "overall")}
    assert session.post_json("rate", body(assignment, {"sync": 2, "visual": 2, "overall": 2}, uuids)).status_code == 201
    before = snapshot()
    other_tab = session.post_json("rate", body(assignment, {"sync": 2, "visual": 5, "overall": 2}, uuids))
    assert other_tab.status_code == 409 and other_tab.json()["error"] == "already_rated"
    assert {k: v["value"] for k, v in other_tab.json()["ratings"].items()} == {"sync": 2, "visual": 2, "overall": 2}
    assert snapshot() == before
    same = session.post_json("rate", body(assignment, {"sync": 2, "visual": 2, "overall": 2}, uuids))
    assert same.status_code == 200 and same.json()["replay"] is True


def test_it_treats_a_partly_matching_replay_as_a_conflict(session):
    assignment = first(session)
    session.ended(assignment)
    sent = body(assignment)
    session.post_json("rate", sent)
    mixed = json.loads(json.dumps(sent))
    mixed["ratings"]["overall"]["uuid"] = str(uuid.uuid4())
    assert session.post_json("rate", mixed).status_code == 409


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda b: b["ratings"]["sync"].update(value=6), "1 to 5"),
        (lambda b: b["ratings"]["sync"].update(value=0), "1 to 5"),
        (lambda b: b["ratings"]["sync"].update(value=3.5), "1 to 5"),
        (lambda b: b["ratings"]["sync"].update(value="4"), "1 to 5"),
        (lambda b: b["ratings"]["sync"].update(value=True), "1 to 5"),
        (lambda b: b["ratings"].update(naturalness={"value": 3, "uuid": str(uuid.uuid4())}), "Unknown scale"),
        (lambda b: b["ratings"].pop("visual"), "missing: visual"),
        (lambda b: b["ratings"]["sync"].update(uuid="not-a-uuid"), "UUID"),
        (lambda b: b["ratings"]["sync"].pop("uuid"), "UUID"),
        (lambda b: b["ratings"]["visual"].update(uuid=b["ratings"]["sync"]["uuid"]), "its own UUID"),
        (lambda b: b.update(ratings=[]), "'ratings'"),
        (lambda b: b.update(assignment=None), "assignment token"),
        (lambda b: b.update(response_time_ms=-5), "response_time_ms"),
    ],
)
def test_it_rejects_bad_answers_with_400_and_stores_nothing(session, mutate, fragment):
    assignment = first(session)
    session.ended(assignment)
    sent = body(assignment)
    mutate(sent)
    response = session.post_json("rate", sent)
    assert response.status_code == 400
    assert fragment in response.json()["message"]
    assert Rating.objects.count() == 0
    assignment.refresh_from_db()
    assert assignment.completed_at is None


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"ratings": NaN}', b""])
def test_it_rejects_malformed_json_with_400(session, raw):
    session.ended(first(session))
    response = session.post_json("rate", None, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert Rating.objects.count() == 0


def test_it_does_not_let_bad_input_touch_a_stored_rating(session):
    assignment = first(session)
    session.ended(assignment)
    sent = body(assignment)
    session.post_json("rate", sent)
    before = snapshot()
    sent["ratings"]["sync"]["value"] = 9
    assert session.post_json("rate", sent).status_code == 400
    assert snapshot() == before


def test_it_hides_another_participants_assignment(study):
    bob, eve = start_session(study), start_session(study)
    target = first(bob)
    mark_ended(target)
    response = eve.post_json("rate", body(target))  # eve's URL token, bob's assignment token
    assert response.status_code == 404
    unknown = eve.post_json("rate", {**body(target), "assignment": "no-such-token"})
    assert unknown.status_code == 404
    assert Rating.objects.count() == 0


def test_it_refuses_a_rating_for_an_unknown_participant(session, client):
    assignment = first(session)
    mark_ended(assignment)
    response = client.post("/p/not-a-participant/rate", data=json.dumps(body(assignment)), content_type="application/json")
    assert response.status_code == 404
    assert Rating.objects.count() == 0


def test_it_refuses_a_rating_before_the_clip_ended(session):
    assignment = first(session)
    session.post_json("events", {"assignment": assignment.token, "events": [{"kind": "play", "media_time": 0}]})
    response = session.post_json("rate", body(assignment))
    assert response.status_code == 409
    assert response.json()["error"] == "not_watched"
    assert "end" in response.json()["message"]
    assert Rating.objects.count() == 0


def assert_not_watched(session, assignment) -> None:
    response = session.post_json("rate", body(assignment))
    assert (response.status_code, response.json()["error"]) == (409, "not_watched")
    assert Rating.objects.count() == 0
    assignment.refresh_from_db()
    assert assignment.completed_at is None


def test_it_does_not_let_a_forged_ended_event_unlock_rating(session):
    assignment = first(session)
    assert session.events(assignment, {"kind": "ended", "media_time": 0}).status_code == 201
    assert_not_watched(session, assignment)


def test_it_needs_a_play_before_the_ended(session):
    assignment = first(session)
    session.events(assignment, {"kind": "ended", "media_time": clip_duration(assignment)})
    session.events(assignment, {"kind": "play", "media_time": 0})
    backdate_plays(assignment, 60)
    assert_not_watched(session, assignment)


@pytest.mark.parametrize("share", [0.0, 0.5, 0.85])
def test_it_needs_the_ended_event_near_the_end_of_the_clip(session, share):
    assignment = first(session)
    session.events(assignment, {"kind": "play", "media_time": 0})
    backdate_plays(assignment, 60)
    session.events(assignment, {"kind": "ended", "media_time": share * clip_duration(assignment)})
    assert_not_watched(session, assignment)


def test_it_refuses_an_instant_scripted_replay(session):
    assignment = first(session)
    duration = clip_duration(assignment)
    session.events(assignment, {"kind": "play", "media_time": 0}, {"kind": "ended", "media_time": duration})
    assert_not_watched(session, assignment)
    backdate_plays(assignment, 0.7 * duration)  # received too shortly before the rating
    assert_not_watched(session, assignment)
    backdate_plays(assignment, 0.85 * duration)  # the first play was received 80 % of the clip's length ago
    assert session.post_json("rate", body(assignment)).status_code == 201


def test_it_times_the_clip_from_the_first_play_the_server_received(session):
    assignment = first(session)
    duration = clip_duration(assignment)
    session.events(assignment, {"kind": "play", "media_time": 0})
    backdate_plays(assignment, duration)
    session.events(assignment, {"kind": "pause", "media_time": 0.4}, {"kind": "play", "media_time": 0.4},
                   {"kind": "ended", "media_time": 0.95 * duration})
    assert session.post_json("rate", body(assignment)).status_code == 201


def test_it_needs_only_play_then_ended_when_the_clip_has_no_duration(session):
    assignment = first(session)
    Clip.objects.filter(study_clips__assignments=assignment).update(duration=None)
    session.events(assignment, {"kind": "ended", "media_time": 0})
    assert_not_watched(session, assignment)
    session.events(assignment, {"kind": "play", "media_time": 0}, {"kind": "ended", "media_time": 0.1})
    assert session.post_json("rate", body(assignment)).status_code == 201


def test_it_tells_the_page_whether_the_clip_counts_as_watched(session):
    session.begin()
    assignment = first(session)

    def watched() -> bool:
        return session.client.get(session.home).context["config"]["watched"]

    session.events(assignment, {"kind": "ended", "media_time": 0})
    assert watched() is False
    session.ended(assignment)
    assert watched() is True


@pytest.mark.parametrize("state", [Participant.RETURNED, Participant.TIMED_OUT, Participant.SCREENED_OUT])
def test_it_refuses_ratings_from_a_participant_not_in_progress(session, state):
    assignment = first(session)
    mark_ended(assignment)
    Participant.objects.filter(pk=session.participant.pk).update(state=state)
    response = session.post_json("rate", body(assignment))
    assert response.status_code == 403
    assert Rating.objects.count() == 0


def test_it_completes_the_participant_with_a_code_after_the_last_rating(session):
    assignments = list(session.participant.assignments.order_by("position"))
    for index, assignment in enumerate(assignments):
        session.ended(assignment)
        response = session.post_json("rate", body(assignment))
        assert response.status_code == 201
        assert response.json()["completed"] is (index == len(assignments) - 1)
    participant = Participant.objects.get(pk=session.participant.pk)
    assert participant.state == Participant.COMPLETED
    assert participant.completed_at is not None and len(participant.completion_code) >= 6
    assert Rating.objects.filter(assignment__participant=participant).count() == len(assignments) * 3
    # A replay of the last answer after completion still gets the stored answer.
    last = assignments[-1]
    stored = {r.scale.key: str(r.client_uuid) for r in Rating.objects.filter(assignment=last).select_related("scale")}
    replay = session.post_json("rate", body(last, uuids=stored))
    assert replay.status_code == 200 and replay.json()["replay"] is True and replay.json()["completed"] is True


def test_it_uses_the_studys_completion_code_when_set(study):
    study.completion_code = "C1A2B3"
    study.save()
    session = start_session(study)
    for assignment in session.participant.assignments.order_by("position"):
        mark_ended(assignment)
        session.post_json("rate", body(assignment))
    session.participant.refresh_from_db()
    assert session.participant.completion_code == "C1A2B3"


def test_it_turns_a_reused_uuid_into_409_without_writing(session):
    a1, a2 = list(session.participant.assignments.order_by("position"))[:2]
    for a in (a1, a2):
        mark_ended(a)
    sent = body(a1)
    session.post_json("rate", sent)
    before = snapshot()
    reused = body(a2, uuids={k: v["uuid"] for k, v in sent["ratings"].items()})
    response = session.post_json("rate", reused)
    assert response.status_code == 409 and response.json()["error"] == "duplicate_key"
    assert snapshot() == before
    a2.refresh_from_db()
    assert a2.completed_at is None


def test_it_answers_a_lost_race_with_the_stored_result(session, monkeypatch):
    """Where no row lock exists, the unique constraint decides; the loser gets replay/409, not a 500."""
    assignment = first(session)
    mark_ended(assignment)
    sent = body(assignment)
    session.post_json("rate", sent)
    # Make the service believe the assignment is still unrated, as a concurrent request would.
    real = ratings.stored_answers
    calls = {"n": 0}

    def stale_then_real(a):
        calls["n"] += 1
        return {} if calls["n"] == 1 else real(a)

    monkeypatch.setattr(ratings, "stored_answers", stale_then_real)
    before = snapshot()
    outcome = ratings.save_ratings(session.participant.token, ratings.parse_submission(json.dumps(sent).encode()))
    assert outcome.replay is True
    calls["n"] = 0
    with pytest.raises(ratings.RatingError) as conflict:
        ratings.save_ratings(session.participant.token, ratings.parse_submission(json.dumps(body(assignment)).encode()))
    assert conflict.value.status == 409
    assert snapshot() == before


def test_it_records_playback_events_and_validates_them(session):
    assignment = first(session)
    ok = session.post_json("events", {"assignment": assignment.token, "events": [
        {"kind": "play", "media_time": 0, "client_time": 1700000000000},
        {"kind": "visibility", "detail": "hidden"},
        {"kind": "ended", "media_time": 1.0},
    ]})
    assert ok.status_code == 201 and ok.json() == {"recorded": 3}
    assert list(assignment.playback_events.values_list("kind", flat=True)) == ["play", "visibility", "ended"]
    for bad in ([{"kind": "teleport"}], [{"kind": "play", "media_time": -1}], [], "play",
                [{"kind": "play", "client_time": 1.5}]):
        response = session.post_json("events", {"assignment": assignment.token, "events": bad})
        assert response.status_code == 400, bad
    assert PlaybackEvent.objects.count() == 3


def test_it_refuses_events_for_someone_elses_assignment(study):
    bob, eve = start_session(study), start_session(study)
    response = eve.post_json("events", {"assignment": first(bob).token, "events": [{"kind": "ended"}]})
    assert response.status_code == 404
    assert PlaybackEvent.objects.count() == 0


def test_it_requires_the_csrf_token(study):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    session = start_session(study, client=Client())
    strict.cookies = session.client.cookies
    assignment = first(session)
    mark_ended(assignment)
    url = f"/p/{session.participant.token}/rate"
    refused = strict.post(url, data=json.dumps(body(assignment)), content_type="application/json")
    assert refused.status_code == 403 and Rating.objects.count() == 0
    page = strict.get(session.home)  # the instructions page carries a token
    token = page.context["csrf_token"]
    accepted = strict.post(url, data=json.dumps(body(assignment)), content_type="application/json",
                           HTTP_X_CSRFTOKEN=str(token))
    assert accepted.status_code == 201


@pytest.mark.parametrize("state, status", [(Participant.COMPLETED, 201), (Participant.RETURNED, 403),
                                           (Participant.TIMED_OUT, 403)])
def test_it_takes_late_events_only_from_active_or_completed_participants(session, state, status):
    assignment = first(session)
    Participant.objects.filter(pk=session.participant.pk).update(state=state)
    response = session.post_json("events", {"assignment": assignment.token, "events": [{"kind": "visibility"}]})
    assert response.status_code == status
    assert PlaybackEvent.objects.count() == (1 if status == 201 else 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("same_trial", [True, False], ids=["same-uuids", "other-uuids"])
def test_it_stores_one_answer_when_two_requests_race(clip_files, same_trial):
    """Two tabs post the same trial at the same moment: one answer is stored, the other is a replay or 409."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent saves need row locks (PostgreSQL); SQLite serializes whole transactions differently")
    from tests.fixtures import make_study

    session = start_session(make_study(clip_files))
    assignment = first(session)
    mark_ended(assignment)
    sent = body(assignment)
    bodies = [sent, sent if same_trial else body(assignment, {"sync": 1, "visual": 1, "overall": 1})]
    url, barrier, statuses, errors = f"/p/{session.participant.token}/rate", threading.Barrier(2), [], []

    def post(data: dict) -> None:
        try:
            barrier.wait()
            statuses.append(Client().post(url, data=json.dumps(data), content_type="application/json").status_code)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(data,)) for data in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(statuses) == ([200, 201] if same_trial else [201, 409])
    stored = Rating.objects.filter(assignment=assignment)
    assert stored.count() == 3
    winner = bodies[0] if same_trial else next(b for b in bodies if str(stored.first().client_uuid) in json.dumps(b))
    assert {(r.scale.key, r.value, str(r.client_uuid)) for r in stored.select_related("scale")} == {
        (k, v["value"], v["uuid"]) for k, v in winner["ratings"].items()
    }


# ---- first choice, the main clip's events, practice and gold checks, closing the study ----

def test_it_stores_the_time_to_the_first_choice(session):
    assignment = first(session)
    session.ended(assignment)
    assert session.post_json("rate", {**body(assignment), "first_choice_ms": 812.4}).status_code == 201
    assignment.refresh_from_db()
    assert assignment.first_choice_ms == 812


@pytest.mark.parametrize("bad", [-1, "900", True, 2**31, 1e300])
def test_it_validates_the_time_to_the_first_choice_like_the_response_time(session, bad):
    assignment = first(session)
    session.ended(assignment)
    response = session.post_json("rate", {**body(assignment), "first_choice_ms": bad})
    assert response.status_code == 400 and "first_choice_ms" in response.json()["message"]
    assert Rating.objects.count() == 0


def test_it_leaves_the_first_choice_empty_when_the_page_does_not_send_it(session):
    assignment = first(session)
    session.ended(assignment)
    session.post_json("rate", body(assignment))
    assignment.refresh_from_db()
    assert assignment.first_choice_ms is None and assignment.passed_check is None  # a test trial has no check


@pytest.mark.parametrize("detail", ["reference", "b"])
def test_only_the_main_clips_events_unlock_rating(session, detail):
    """A DCR reference or a pairwise B video that played to its end does not count for the clip to rate."""
    assignment = first(session)
    duration = clip_duration(assignment)
    session.events(assignment, {"kind": "play", "media_time": 0, "detail": detail})
    backdate_plays(assignment, duration)
    session.events(assignment, {"kind": "ended", "media_time": duration, "detail": detail})
    assert_not_watched(session, assignment)
    assert assignment.playback_events.filter(detail=detail).count() == 2  # stored all the same
    session.events(assignment, {"kind": "play", "media_time": 0, "detail": "main"})
    backdate_plays(assignment, duration)
    session.events(assignment, {"kind": "ended", "media_time": duration})
    assert session.post_json("rate", body(assignment)).status_code == 201


@pytest.fixture
def quality_session(db, clip_files):
    study = make_quality_study(clip_files, practice=1, gold=2, tests=2, gold_failures_allowed=1)
    return start_session(study)


def trials(session, role: str) -> list[Assignment]:
    return list(session.participant.assignments.filter(role=role).order_by("position"))


def rate_trial(session, assignment: Assignment, values: dict[str, int]):
    mark_ended(assignment)
    return session.post_json("rate", body(assignment, values))


@pytest.mark.parametrize("values, passed", [
    ({"sync": 4, "visual": 3, "overall": 1}, True),  # overall has no expected answer: don't care
    ({"sync": 5, "visual": 5, "overall": 5}, True),
    ({"sync": 3, "visual": 4, "overall": 4}, False),
    ({"sync": 5, "visual": 2, "overall": 4}, False),
])
def test_it_checks_a_practice_answer_against_its_expected_ranges(quality_session, values, passed):
    (practice,) = trials(quality_session, StudyClip.ROLE_PRACTICE)
    assert rate_trial(quality_session, practice, values).status_code == 201
    practice.refresh_from_db()
    assert practice.passed_check is passed
    assert Participant.objects.get(pk=quality_session.participant.pk).state == Participant.IN_PROGRESS


def test_it_records_gold_passes_and_failures(quality_session):
    gold = trials(quality_session, StudyClip.ROLE_GOLD)
    response = rate_trial(quality_session, gold[0], GOLD_FAIL)
    assert response.status_code == 201 and response.json()["screened_out"] is False
    rate_trial(quality_session, gold[1], GOLD_PASS)
    assert [g.passed_check for g in Assignment.objects.filter(pk__in=[g.pk for g in gold]).order_by("position")] \
        == [False, True]
    assert Participant.objects.get(pk=quality_session.participant.pk).state == Participant.IN_PROGRESS


def test_it_screens_out_a_participant_who_fails_gold_past_the_allowance(quality_session):
    gold = trials(quality_session, StudyClip.ROLE_GOLD)
    rate_trial(quality_session, gold[0], GOLD_FAIL)
    response = rate_trial(quality_session, gold[1], GOLD_FAIL)
    assert response.status_code == 201
    data = response.json()
    assert data["screened_out"] is True and data["completed"] is False
    assert data["next"] == f"/p/{quality_session.participant.token}/"
    participant = Participant.objects.get(pk=quality_session.participant.pk)
    assert participant.state == Participant.SCREENED_OUT and participant.ended_at is not None
    assert participant.screened_out_reason == "failed 2 of 2 attention checks"
    assert participant.completion_code == ""
    assert Rating.objects.filter(assignment=gold[1]).count() == 3  # the failure itself is recorded
    # The page's retry of that same answer gets the stored answer and the news; other trials are refused.
    rows = Rating.objects.filter(assignment=gold[1]).select_related("scale")
    stored = {r.scale.key: str(r.client_uuid) for r in rows}
    replay = quality_session.post_json("rate", body(gold[1], GOLD_FAIL, stored))
    assert replay.status_code == 200 and replay.json()["screened_out"] is True
    test_trial = trials(quality_session, StudyClip.ROLE_TEST)[0]
    assert rate_trial(quality_session, test_trial, {"sync": 3, "visual": 3, "overall": 3}).status_code == 403


def test_a_gold_failure_on_the_last_trial_screens_out_instead_of_completing(db, clip_files):
    study = make_quality_study(clip_files, practice=0, gold=1, tests=1, gold_failures_allowed=0)
    session = start_session(study)
    test_trial, gold_trial = session.participant.assignments.order_by("position")  # gold is never first
    assert (test_trial.role, gold_trial.role) == (StudyClip.ROLE_TEST, StudyClip.ROLE_GOLD)
    rate_trial(session, test_trial, {"sync": 3, "visual": 3, "overall": 3})
    last = rate_trial(session, gold_trial, GOLD_FAIL).json()
    assert last["screened_out"] is True and last["completed"] is False
    participant = Participant.objects.get(pk=session.participant.pk)
    assert participant.state == Participant.SCREENED_OUT
    assert participant.screened_out_reason == "failed 1 of 1 attention check"
    assert participant.completion_code == "" and participant.completed_at is None


def test_practice_failures_never_screen_anyone_out(db, clip_files):
    study = make_quality_study(clip_files, practice=2, gold=0, tests=1, gold_failures_allowed=0)
    session = start_session(study)
    for assignment in trials(session, StudyClip.ROLE_PRACTICE):
        assert rate_trial(session, assignment, {"sync": 1, "visual": 1, "overall": 1}).json()["screened_out"] is False
    assert Participant.objects.get(pk=session.participant.pk).state == Participant.IN_PROGRESS


def test_the_last_rating_lets_an_auto_close_study_close_itself(db, clip_files):
    from tests.fixtures import make_study

    study = make_study(clip_files, n_clips=2, per_participant=2, ratings_per_clip=1, auto_close=True)
    session = start_session(study)
    assignments = list(session.participant.assignments.order_by("position"))
    rate_trial(session, assignments[0], {"sync": 3, "visual": 3, "overall": 3})
    assert Study.objects.get(pk=study.pk).status == Study.OPEN
    assert rate_trial(session, assignments[1], {"sync": 3, "visual": 3, "overall": 3}).json()["completed"] is True
    assert Study.objects.get(pk=study.pk).status == Study.CLOSED
