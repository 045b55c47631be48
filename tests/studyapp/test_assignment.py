"""Balanced assignment: least-covered first, inactive participants free their clips, seeded orders."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from generation.models import Clip
from studyapp import assignment
from studyapp.models import Assignment, Participant, StudyClip

from tests.fixtures import make_clip, make_study


def coverage(study) -> Counter:
    """Assignments per study clip, counting only participants who still count."""
    rows = Assignment.objects.filter(participant__study=study).exclude(
        participant__state__in=Participant.INACTIVE_STATES
    )
    counts = Counter(dict.fromkeys(assignment.eligible_study_clips(study).values_list("id", flat=True), 0))
    counts.update(rows.values_list("study_clip_id", flat=True))
    return counts


# ---- pure functions ----

def test_it_selects_the_least_covered_keys():
    picked = assignment.select_least_covered({1: 3, 2: 0, 3: 1, 4: 0, 5: 2}, 3, random.Random(1))
    assert set(picked) == {2, 4, 3}


def test_it_breaks_ties_with_the_seed():
    flat = dict.fromkeys(range(10), 0)
    picks = {tuple(sorted(assignment.select_least_covered(flat, 3, random.Random(seed)))) for seed in range(30)}
    assert len(picks) > 10  # different seeds reach different subsets
    again = assignment.select_least_covered(flat, 3, random.Random(7))
    assert again == assignment.select_least_covered(flat, 3, random.Random(7))


def test_it_never_picks_an_excluded_key_or_a_key_twice():
    picked = assignment.select_least_covered({1: 0, 2: 0, 3: 5}, 5, random.Random(0), exclude={2})
    assert sorted(picked) == [1, 3]


def test_it_keeps_coverage_within_one_in_a_pure_simulation():
    coverage_ = dict.fromkeys(range(17), 0)
    for seed in range(200):
        for key in assignment.plan_assignments(coverage_, 5, 11, seed):
            coverage_[key] += 1
        assert max(coverage_.values()) - min(coverage_.values()) <= 1
    assert sum(coverage_.values()) == 200 * 5


def test_it_shuffles_reproducibly_and_differently_per_seed():
    items = list(range(12))
    first = assignment.seeded_shuffle(items, random.Random(3))
    assert first == assignment.seeded_shuffle(items, random.Random(3))
    assert sorted(first) == items and items == list(range(12))  # a permutation; the input is untouched
    orders = {tuple(assignment.seeded_shuffle(items, random.Random(seed))) for seed in range(20)}
    assert len(orders) == 20


def test_it_makes_every_position_equally_likely():
    # Fisher–Yates is uniform: each item lands in each position ~1/n of the time.
    n, runs = 4, 4000
    hits = Counter()
    rng = random.Random(5)
    for _ in range(runs):
        hits.update(enumerate(assignment.seeded_shuffle(range(n), rng)))
    assert all(abs(hits[(pos, item)] / runs - 1 / n) < 0.04 for pos in range(n) for item in range(n))


def test_it_plans_from_the_study_and_participant_seeds():
    coverage_ = dict.fromkeys(range(8), 0)
    plan = assignment.plan_assignments(coverage_, 5, study_seed=1, participant_seed=2)
    assert plan == assignment.plan_assignments(coverage_, 5, study_seed=1, participant_seed=2)
    assert plan != assignment.plan_assignments(coverage_, 5, study_seed=1, participant_seed=3)
    assert len(set(plan)) == 5


# ---- with the database ----

def test_it_issues_clips_per_participant_at_distinct_positions(study):
    participant, created = assignment.enroll(study)
    rows = list(participant.assignments.order_by("position"))
    assert created and participant.state == Participant.IN_PROGRESS and participant.consented_at
    assert [a.position for a in rows] == [0, 1, 2, 3]
    assert len({a.study_clip_id for a in rows}) == 4


def test_it_gives_the_least_covered_clips_first(study):
    first, _ = assignment.enroll(study)
    second, _ = assignment.enroll(study)
    # 5 clips, 4 each: the clip the first participant did not get must go to the second.
    missed = set(study.study_clips.values_list("id", flat=True)) - set(first.assignments.values_list("study_clip_id", flat=True))
    assert missed <= set(second.assignments.values_list("study_clip_id", flat=True))
    assert max(coverage(study).values()) - min(coverage(study).values()) <= 1


def test_it_counts_in_progress_and_completed_but_not_inactive_participants(study):
    heavy = list(study.study_clips.order_by("id")[:4])
    for state in (Participant.COMPLETED, Participant.IN_PROGRESS):
        p = Participant.objects.create(study=study, state=state)
        Assignment.objects.bulk_create(Assignment(participant=p, study_clip=sc, position=i) for i, sc in enumerate(heavy))
    counted = assignment.coverage_of(study)
    assert [counted[sc.id] for sc in heavy] == [2, 2, 2, 2]
    for state in Participant.INACTIVE_STATES:  # these free their clips again
        p = Participant.objects.create(study=study, state=state)
        Assignment.objects.create(participant=p, study_clip=study.study_clips.order_by("id").last(), position=0)
    light = study.study_clips.order_by("id").last()
    assert assignment.coverage_of(study)[light.id] == 0
    newcomer, _ = assignment.enroll(study)
    assert light.id in set(newcomer.assignments.values_list("study_clip_id", flat=True))


def test_it_keeps_coverage_within_one_after_many_participants(db, clip_files):
    study = make_study(clip_files, n_clips=6, per_participant=4)
    for i in range(40):
        participant, _ = assignment.enroll(study)
        if i % 7 == 3:  # some drop out; their clips must be handed out again
            Participant.objects.filter(pk=participant.pk).update(state=Participant.RETURNED)
        counts = coverage(study)
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    active = Participant.objects.filter(study=study).exclude(state__in=Participant.INACTIVE_STATES).count()
    assert sum(coverage(study).values()) == active * 4


def test_it_orders_each_participant_reproducibly_from_the_seeds(study):
    participant, _ = assignment.enroll(study)
    stored = list(participant.assignments.order_by("position").values_list("study_clip_id", flat=True))
    replanned = assignment.plan_assignments(
        {sc: 0 for sc in study.study_clips.values_list("id", flat=True)}, 4, study.seed, participant.seed
    )
    assert stored == replanned


def test_it_orders_participants_differently(study):
    orders = set()
    for _ in range(8):
        participant, _ = assignment.enroll(study)
        orders.add(tuple(participant.assignments.order_by("position").values_list("study_clip_id", flat=True)))
    assert len(orders) > 1


def test_it_only_hands_out_ready_test_clips(db, clip_files):
    study = make_study(clip_files, n_clips=3, per_participant=10)
    practice = StudyClip.objects.create(study=study, clip=make_clip(3, clip_files), role=StudyClip.ROLE_PRACTICE)
    unready = StudyClip.objects.create(study=study, clip=make_clip(4, clip_files, status=Clip.RENDERING))
    participant, _ = assignment.enroll(study)
    given = set(participant.assignments.values_list("study_clip_id", flat=True))
    assert len(given) == 3 and practice.id not in given and unready.id not in given


def test_it_refuses_to_enroll_without_ready_clips(db, clip_files):
    study = make_study(clip_files, n_clips=0)
    with pytest.raises(assignment.StudyNotReady):
        assignment.enroll(study)
    assert not Participant.objects.filter(study=study).exists()


def test_it_returns_the_existing_participant_for_a_known_external_id(study):
    first, created = assignment.enroll(study, external_id="5f0c0ffee")
    again, created_again = assignment.enroll(study, external_id="5f0c0ffee")
    assert created and not created_again and again.pk == first.pk
    assert Assignment.objects.filter(participant=first).count() == 4


def test_it_never_assigns_a_clip_twice_when_topping_up(study):
    participant, _ = assignment.enroll(study)
    study.clips_per_participant = 5
    study.save()
    assignment.issue_assignments(participant)
    rows = list(participant.assignments.all())
    assert len(rows) == 5 and len({a.study_clip_id for a in rows}) == 5 and {a.position for a in rows} == set(range(5))


def hold(study, clips, *, state=Participant.IN_PROGRESS, completed=False, **fields) -> Participant:
    """A participant of ``study`` holding these study clips (rated, when ``completed``)."""
    participant = Participant.objects.create(study=study, state=state, **fields)
    done = timezone.now() if completed else None
    Assignment.objects.bulk_create(
        Assignment(participant=participant, study_clip=sc, position=i, completed_at=done) for i, sc in enumerate(clips)
    )
    return participant


def given(participant) -> set[int]:
    return set(participant.assignments.values_list("study_clip_id", flat=True))


# ---- timeouts ----

def test_it_times_out_a_stale_participant_and_hands_their_clips_to_the_newcomer(db, clip_files):
    study = make_study(clip_files, n_clips=6, per_participant=3)
    clips = list(study.study_clips.order_by("id"))
    stale = hold(study, clips[:3], last_seen_at=timezone.now() - timedelta(minutes=121))
    fresh = hold(study, clips[3:], last_seen_at=timezone.now() - timedelta(minutes=5))
    newcomer, _ = assignment.enroll(study)
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == Participant.TIMED_OUT and fresh.state == Participant.IN_PROGRESS
    assert given(newcomer) == {sc.id for sc in clips[:3]}


def test_it_times_out_after_the_studys_own_timeout_and_counts_from_creation_when_never_seen(db, clip_files):
    study = make_study(clip_files, n_clips=6, per_participant=2, session_timeout_minutes=30)
    clips = list(study.study_clips.order_by("id"))
    now = timezone.now()
    gone = hold(study, clips[:2], last_seen_at=now - timedelta(minutes=31))
    still_here = hold(study, clips[2:4], last_seen_at=now - timedelta(minutes=29))
    never_seen = hold(study, clips[4:], state=Participant.STARTED)
    Participant.objects.filter(pk=never_seen.pk).update(created_at=now - timedelta(minutes=45))
    done = hold(study, clips[:2], state=Participant.COMPLETED, last_seen_at=now - timedelta(days=3))
    assignment.enroll(study)
    states = dict(Participant.objects.filter(study=study).values_list("pk", "state"))
    assert states[gone.pk] == states[never_seen.pk] == Participant.TIMED_OUT
    assert states[still_here.pk] == Participant.IN_PROGRESS and states[done.pk] == Participant.COMPLETED


def test_it_leaves_participants_of_other_studies_alone(db, clip_files):
    study, other = make_study(clip_files, n_clips=2, per_participant=1), make_study(clip_files, n_clips=0)
    elsewhere = Participant.objects.create(study=other, state=Participant.IN_PROGRESS,
                                           last_seen_at=timezone.now() - timedelta(days=1))
    assignment.enroll(study)
    elsewhere.refresh_from_db()
    assert elsewhere.state == Participant.IN_PROGRESS


# ---- the stop rule: ratings_per_clip ----

def test_it_stops_handing_out_a_clip_with_enough_completed_ratings(db, clip_files):
    study = make_study(clip_files, n_clips=5, per_participant=4, ratings_per_clip=2)
    clips = list(study.study_clips.order_by("id"))
    hold(study, clips[:2], state=Participant.COMPLETED, completed=True)
    hold(study, clips[:3], completed=True)  # in progress, but these three are rated
    newcomer, _ = assignment.enroll(study)
    # clips 0 and 1 have their 2 ratings; clip 2 has 1; 3 and 4 none: only 3 clips are left to give.
    assert given(newcomer) == {sc.id for sc in clips[2:]}
    assert newcomer.assignments.count() == 3 and {a.position for a in newcomer.assignments.all()} == {0, 1, 2}


def test_it_counts_only_completed_assignments_of_participants_who_count(db, clip_files):
    study = make_study(clip_files, n_clips=2, per_participant=2, ratings_per_clip=1)
    clips = list(study.study_clips.order_by("id"))
    hold(study, clips)  # assigned, not rated yet
    for state in Participant.INACTIVE_STATES:  # rated, but no longer counted
        hold(study, clips, state=state, completed=True)
    assert assignment.full_study_clips(study) == set()
    newcomer, _ = assignment.enroll(study)
    assert given(newcomer) == {sc.id for sc in clips}


def test_it_refuses_newcomers_once_every_clip_is_full(db, clip_files):
    study = make_study(clip_files, n_clips=3, per_participant=2, ratings_per_clip=1)
    hold(study, study.study_clips.all(), state=Participant.COMPLETED, completed=True)
    with pytest.raises(assignment.StudyNotReady) as refused:
        assignment.enroll(study)
    assert isinstance(refused.value, assignment.StudyFull)
    assert Participant.objects.filter(study=study).count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_serializes_concurrent_starts(clip_files):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent starts need row locks (PostgreSQL); SQLite serializes whole transactions differently")
    study = make_study(clip_files, n_clips=6, per_participant=4)
    errors, barrier = [], threading.Barrier(10)

    def start(n: int) -> None:
        try:
            barrier.wait()
            for _ in range(n):
                assignment.enroll(study)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start, args=(5,)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts = coverage(study)
    assert sum(counts.values()) == 50 * 4
    assert max(counts.values()) - min(counts.values()) <= 1, counts
