"""Balanced assignment: units per method, least-covered first, inactive participants free their units,
content limits, no condition twice in a row, practice first, gold spread out, seeded orders, the stop
rule and closing a complete study."""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generation.models import Audio, Clip, Condition, Source
from studyapp import assignment
from studyapp.assignment import ClipRow, Design, Rules, build_design, plan_trials
from studyapp.models import Assignment, Participant, Study, StudyClip

from tests.fixtures import CONDITIONS, make_clip, make_study


def enroll_and_admit(study, **fields):
    """A participant who consented and passed the environment check: in progress, with their clips."""
    participant, created = assignment.enroll(study, **fields)
    if created:
        assignment.admit(participant)
    return participant, created


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
    participant, created = enroll_and_admit(study)
    rows = list(participant.assignments.order_by("position"))
    assert created and participant.state == Participant.IN_PROGRESS and participant.consented_at
    assert [a.position for a in rows] == [0, 1, 2, 3]
    assert len({a.study_clip_id for a in rows}) == 4


def test_it_gives_the_least_covered_clips_first(study):
    first, _ = enroll_and_admit(study)
    second, _ = enroll_and_admit(study)
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
    newcomer, _ = enroll_and_admit(study)
    assert light.id in set(newcomer.assignments.values_list("study_clip_id", flat=True))


def test_it_keeps_coverage_within_one_after_many_participants(db, clip_files):
    study = make_study(clip_files, n_clips=6, per_participant=4)
    for i in range(40):
        participant, _ = enroll_and_admit(study)
        if i % 7 == 3:  # some drop out; their clips must be handed out again
            Participant.objects.filter(pk=participant.pk).update(state=Participant.RETURNED)
        counts = coverage(study)
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    active = Participant.objects.filter(study=study).exclude(state__in=Participant.INACTIVE_STATES).count()
    assert sum(coverage(study).values()) == active * 4


def test_it_orders_each_participant_reproducibly_from_the_seeds(study):
    participant, _ = enroll_and_admit(study)
    stored = list(participant.assignments.order_by("position").values_list("study_clip_id", flat=True))
    replanned = assignment.plan_assignments(
        {sc: 0 for sc in study.study_clips.values_list("id", flat=True)}, 4, study.seed, participant.seed
    )
    assert stored == replanned


def test_it_orders_participants_differently(study):
    orders = set()
    for _ in range(8):
        participant, _ = enroll_and_admit(study)
        orders.add(tuple(participant.assignments.order_by("position").values_list("study_clip_id", flat=True)))
    assert len(orders) > 1


def test_it_only_hands_out_ready_test_clips_as_test_trials(db, clip_files):
    study = make_study(clip_files, n_clips=3, per_participant=10)
    practice = StudyClip.objects.create(study=study, clip=make_clip(3, clip_files), role=StudyClip.ROLE_PRACTICE)
    unready = StudyClip.objects.create(study=study, clip=make_clip(4, clip_files, status=Clip.RENDERING))
    participant, _ = enroll_and_admit(study)
    tests = set(participant.assignments.filter(role=StudyClip.ROLE_TEST).values_list("study_clip_id", flat=True))
    assert len(tests) == 3 and practice.id not in tests and unready.id not in tests
    assert unready.id not in given(participant)


def test_it_refuses_to_enroll_without_ready_clips(db, clip_files):
    study = make_study(clip_files, n_clips=0)
    with pytest.raises(assignment.StudyNotReady):
        enroll_and_admit(study)
    assert not Participant.objects.filter(study=study).exists()


def test_it_returns_the_existing_participant_for_a_known_external_id(study):
    first, created = enroll_and_admit(study, external_id="5f0c0ffee")
    again, created_again = enroll_and_admit(study, external_id="5f0c0ffee")
    assert created and not created_again and again.pk == first.pk
    assert Assignment.objects.filter(participant=first).count() == 4


def test_it_never_assigns_a_clip_twice_when_topping_up(study):
    participant, _ = enroll_and_admit(study)
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
        Assignment(participant=participant, study_clip=sc, role=sc.role, position=i, completed_at=done)
        for i, sc in enumerate(clips)
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
    newcomer, _ = enroll_and_admit(study)
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
    enroll_and_admit(study)
    states = dict(Participant.objects.filter(study=study).values_list("pk", "state"))
    assert states[gone.pk] == states[never_seen.pk] == Participant.TIMED_OUT
    assert states[still_here.pk] == Participant.IN_PROGRESS and states[done.pk] == Participant.COMPLETED


def test_it_leaves_participants_of_other_studies_alone(db, clip_files):
    study, other = make_study(clip_files, n_clips=2, per_participant=1), make_study(clip_files, n_clips=0)
    elsewhere = Participant.objects.create(study=other, state=Participant.IN_PROGRESS,
                                           last_seen_at=timezone.now() - timedelta(days=1))
    enroll_and_admit(study)
    elsewhere.refresh_from_db()
    assert elsewhere.state == Participant.IN_PROGRESS


# ---- the stop rule: ratings_per_clip ----

def test_it_stops_handing_out_a_clip_with_enough_completed_ratings(db, clip_files):
    study = make_study(clip_files, n_clips=5, per_participant=4, ratings_per_clip=2)
    clips = list(study.study_clips.order_by("id"))
    hold(study, clips[:2], state=Participant.COMPLETED, completed=True)
    hold(study, clips[:3], completed=True)  # in progress, but these three are rated
    newcomer, _ = enroll_and_admit(study)
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
    newcomer, _ = enroll_and_admit(study)
    assert given(newcomer) == {sc.id for sc in clips}


def test_it_refuses_newcomers_once_every_clip_is_full(db, clip_files):
    study = make_study(clip_files, n_clips=3, per_participant=2, ratings_per_clip=1)
    hold(study, study.study_clips.all(), state=Participant.COMPLETED, completed=True)
    with pytest.raises(assignment.StudyNotReady) as refused:
        enroll_and_admit(study)
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
                enroll_and_admit(study)
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


# =====================================================================================================
# The planner, without the database
# =====================================================================================================

TEST, GOLD, PRACTICE = StudyClip.ROLE_TEST, StudyClip.ROLE_GOLD, StudyClip.ROLE_PRACTICE
REFERENCE = 2  # the hidden-reference condition of the pure grids (as the fixtures' variant 2)


def grid(n_items=2, conditions=range(6), *, role=TEST, first_id=1, sources=None, sentences=None,
         reference_ready=True) -> list[ClipRow]:
    """Ready study clips for every item × condition; item i is source i saying sentence "s<i>" (audio i)."""
    rows, pk = [], first_id
    for item in range(n_items):
        for condition in conditions:
            source = sources[item] if sources else item
            sentence = sentences[item] if sentences else f"s{item}"
            rows.append(ClipRow(pk, role, condition, source, item, sentence, condition == REFERENCE,
                                reference_ready or condition == REFERENCE))
            pk += 1
    return rows


def design_of(rows, **rules) -> Design:
    return build_design(rows, Rules(**rules))


def simulate(design: Design, participants: int, study_seed: int = 1):
    """Participants planned one after another, each counted before the next: (coverage, gold coverage, plans)."""
    coverage, gold_coverage, plans = Counter(), Counter(), []
    units = {u.key for u in design.units}
    for seed in range(participants):
        plan = plan_trials(design, coverage, study_seed=study_seed, participant_seed=seed, gold_coverage=gold_coverage)
        for trial in plan:
            if trial.role == TEST and assignment.unit_key(trial.study_clip, trial.paired_study_clip) in units:
                coverage[assignment.unit_key(trial.study_clip, trial.paired_study_clip)] += 1
            elif trial.role == GOLD:
                gold_coverage[assignment.fixed_key(trial.study_clip, trial.paired_study_clip)] += 1
        plans.append(plan)
    return coverage, gold_coverage, plans


def spread(coverage: Counter, design: Design) -> int:
    counts = [coverage[u.key] for u in design.units]
    return max(counts) - min(counts)


def repeats(conditions) -> int:
    return sum(a == b for a, b in zip(conditions, conditions[1:]))


def measured(plan):
    return [t for t in plan if t.role == TEST]


# ---- units per method ----

def test_acr_units_are_the_ready_test_clips_one_each():
    design = design_of(grid(2), method=Study.METHOD_ACR)
    assert [u.key for u in design.units] == list(range(1, 13))
    assert all(u.companion is None and u.trial.paired_study_clip is None for u in design.units)


def test_dcr_units_need_a_ready_reference_and_the_reference_is_rated_against_itself():
    rows = grid(1, reference_ready=False) + grid(1, first_id=7, sources=[5])  # only the second item has references
    design = design_of(rows, method=Study.METHOD_DCR)
    first_item_reference = next(r.study_clip for r in rows[:6] if r.is_reference)
    assert {u.key for u in design.units} == {first_item_reference} | set(range(7, 13))


def test_acr_hr_units_are_the_processed_clips_each_bringing_the_reference_of_its_item():
    rows = grid(2)
    design = design_of(rows, method=Study.METHOD_ACR_HR)
    references = {r.item: r.study_clip for r in rows if r.is_reference}
    assert {u.key for u in design.units} == {r.study_clip for r in rows if not r.is_reference}
    for unit in design.units:
        row = design.clips[unit.key]
        assert unit.companion.study_clip == references[row.item] and unit.companion.role == TEST


def test_pairwise_units_are_the_unordered_pairs_of_one_item_in_two_conditions():
    rows = grid(2, conditions=range(4))
    rows.append(ClipRow(99, TEST, 0, 0, 0, "s0"))  # the same condition again on item 0: never paired with its twin
    design = design_of(rows, method=Study.METHOD_PAIRWISE)
    keys = [u.key for u in design.units]
    assert len(keys) == len(set(keys)) == 6 + 6 + 3  # C(4,2) per item, + clip 99 against item 0's other three
    for unit in design.units:
        a, b = design.clips[unit.key[0]], design.clips[unit.key[1]]
        assert unit.key[0] < unit.key[1] and a.item == b.item and a.condition != b.condition
        assert unit.trial.condition == frozenset({a.condition, b.condition}) and unit.swappable


# ---- least covered first, the budget, ACR-HR references ----

def test_it_picks_the_least_covered_units():
    design = design_of(grid(2), method=Study.METHOD_ACR, clips_per_participant=3)
    coverage = {u.key: 5 for u in design.units} | {4: 0, 9: 1, 11: 0}
    plan = plan_trials(design, coverage, study_seed=1, participant_seed=2)
    assert {t.study_clip for t in plan} == {4, 9, 11}


def test_it_never_hands_out_a_full_unit():
    design = design_of(grid(1), method=Study.METHOD_ACR, clips_per_participant=6)
    plan = plan_trials(design, {}, study_seed=1, participant_seed=2, full={1, 2})
    assert {t.study_clip for t in plan} == {3, 4, 5, 6}


def test_acr_hr_brings_each_items_reference_once_within_the_budget():
    rows = grid(1)
    design = design_of(rows, method=Study.METHOD_ACR_HR, clips_per_participant=4)
    for seed in range(20):
        plan = plan_trials(design, {}, study_seed=1, participant_seed=seed)
        shown = [t.study_clip for t in plan]
        assert len(plan) == 4 and shown.count(3) == 1  # three processed clips + the hidden reference (clip 3)


def test_acr_hr_skips_a_unit_whose_reference_no_longer_fits():
    design = design_of(grid(2), method=Study.METHOD_ACR_HR, clips_per_participant=3)
    # Least covered: clip 1 (item 0), then clip 8 (item 1); everything else has been seen more often.
    coverage = {u.key: 5 for u in design.units} | {1: 0, 8: 1}
    plan = plan_trials(design, coverage, study_seed=1, participant_seed=4)
    shown = {t.study_clip for t in plan}
    # 1 and its reference 3 take two trials; 8 would need its reference 9 too, so a clip of item 0 comes instead.
    assert len(plan) == 3 and {1, 3} <= shown and 8 not in shown and 9 not in shown
    assert all(design.clips[t.study_clip].item == (0, 0) for t in plan)


# ---- content limits ----

def contents(plan):
    return [t.content for t in plan if t.role in (TEST, GOLD)]


def test_content_limit_once_shows_no_content_twice():
    rows = grid(6, sources=[0, 0, 1, 1, 2, 2]) + grid(3, role=GOLD, first_id=100, conditions=[1], sources=[7, 8, 0])
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=3, content_key=Study.CONTENT_SOURCE,
                       content_limit=Study.LIMIT_ONCE, gold_per_participant=1)
    coverage, _, plans = simulate(design, 60)
    for plan in plans:
        assert len(measured(plan)) == 3 and len(contents(plan)) == len(set(contents(plan))) == 4
    assert spread(coverage, design) <= 1


def test_content_limit_once_per_condition_allows_a_content_again_in_another_condition():
    # Two faces saying the same two sentences: the sentence is the content.
    rows = grid(4, conditions=range(3), sources=[0, 1, 0, 1], sentences=["a", "a", "b", "b"])
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=5, content_key=Study.CONTENT_SENTENCE,
                       content_limit=Study.LIMIT_ONCE_PER_CONDITION)
    _, _, plans = simulate(design, 40)
    twice = 0
    for plan in plans:
        pairs = [(t.content, t.condition) for t in plan]
        assert len(pairs) == len(set(pairs)) == 5
        twice += len({t.content for t in plan}) < 5
    assert twice == 40  # 2 sentences in 5 trials: sentences come back, each time in another condition


def test_content_limit_once_per_condition_compares_the_pair_of_conditions_in_pairwise():
    rows = grid(4, conditions=range(3), sources=[0, 1, 2, 3], sentences=["a", "a", "a", "a"])
    design = design_of(rows, method=Study.METHOD_PAIRWISE, clips_per_participant=6,
                       content_key=Study.CONTENT_SENTENCE, content_limit=Study.LIMIT_ONCE_PER_CONDITION)
    for plan in simulate(design, 10)[2]:
        assert len(plan) == 3 and len({t.condition for t in plan}) == 3  # one per pair of conditions, at most


def test_without_a_content_limit_a_content_may_come_back():
    design = design_of(grid(1), method=Study.METHOD_ACR, clips_per_participant=6)
    plan = plan_trials(design, {}, study_seed=1, participant_seed=1)
    assert len(plan) == 6 and len(set(contents(plan))) == 1


def test_the_acr_hr_reference_is_exempt_from_the_content_limit():
    design = design_of(grid(3), method=Study.METHOD_ACR_HR, clips_per_participant=6, content_limit=Study.LIMIT_ONCE)
    for plan in simulate(design, 20)[2]:
        processed = [t for t in plan if not design.clips[t.study_clip].is_reference]
        references = [t for t in plan if design.clips[t.study_clip].is_reference]
        assert len(processed) == len(references) == 3
        assert {t.content for t in processed} == {t.content for t in references} and len(set(contents(processed))) == 3


# ---- order: seeded, no condition twice in a row ----

def brute_force_fewest_repeats(labels, previous=None) -> int:
    return min(repeats([previous, *order]) for order in itertools.permutations(labels))


def test_ordering_without_repeats_is_optimal_on_every_small_case():
    rng = random.Random(0)
    for _ in range(300):
        labels = [rng.choice("abc") for _ in range(rng.randint(1, 6))]
        previous = rng.choice([None, "a", "b"])
        order = assignment.order_without_repeats(list(range(len(labels))), labels.__getitem__, previous)
        assert sorted(order) == list(range(len(labels)))
        got = repeats([previous, *[labels[i] for i in order]])
        assert got == brute_force_fewest_repeats(labels, previous), (labels, previous)


def test_ordering_keeps_an_order_that_has_no_repeats():
    items = ["a", "b", "a", "c", "b", "a"]
    assert assignment.order_without_repeats(items, str) == items


def test_ordering_moves_as_little_as_it_can():
    # Only the second "a" must move: it goes to the first place where it no longer repeats.
    assert assignment.order_without_repeats(list("aabcd"), str) == list("abacd")


def test_ordering_gives_the_fewest_repeats_when_none_is_impossible_and_stops():
    items = ["a"] * 7 + ["b", "c"]
    order = assignment.order_without_repeats(items, str)
    assert sorted(order) == sorted(items) and repeats(order) == 4  # a b a c a a a a a: 6 − 2 = 4 is the least
    assert assignment.order_without_repeats(["a"] * 3, str) == ["a"] * 3


def test_ordering_ten_thousand_items_leaves_no_repeat():
    rng = random.Random(1)
    items = [rng.randrange(6) for _ in range(10_000)]
    order = assignment.order_without_repeats(items, int)
    assert sorted(order) == sorted(items) and repeats(order) == 0


def test_no_participant_sees_a_condition_twice_in_a_row_when_it_can_be_avoided():
    design = design_of(grid(3, conditions=range(3)), method=Study.METHOD_ACR, clips_per_participant=6)
    for plan in simulate(design, 60)[2]:
        assert repeats([t.condition for t in plan]) == 0


def test_the_rule_can_be_turned_off():
    design = design_of(grid(3, conditions=range(3)), method=Study.METHOD_ACR, clips_per_participant=6,
                       no_condition_twice_in_a_row=False)
    assert any(repeats([t.condition for t in plan]) for plan in simulate(design, 60)[2])


def fewest_repeats_possible(labels) -> int:
    """Neighbours that must share a label in any order: a label filling more than half forces them."""
    return max(0, 2 * max(Counter(labels).values()) - len(labels) - 1)


def test_pairwise_trials_count_as_a_repeat_only_when_both_conditions_repeat():
    design = design_of(grid(6, conditions=range(3), sources=range(6)), method=Study.METHOD_PAIRWISE,
                       clips_per_participant=6)
    shared_one = 0
    for plan in simulate(design, 30)[2]:
        pairs = [t.condition for t in plan]
        assert repeats(pairs) == fewest_repeats_possible(pairs)
        shared_one += any(len(a & b) == 1 for a, b in zip(pairs, pairs[1:]))
    assert shared_one  # sharing one of the two conditions is no repeat


def test_it_plans_reproducibly_from_the_two_seeds_and_differently_per_participant():
    design = design_of(grid(2), method=Study.METHOD_PAIRWISE, clips_per_participant=5)
    first = plan_trials(design, {}, study_seed=3, participant_seed=4)
    assert first == plan_trials(design, {}, study_seed=3, participant_seed=4)
    others = {tuple(plan_trials(design, {}, study_seed=3, participant_seed=seed)) for seed in range(20)}
    assert len(others) == 20
    assert plan_trials(design, {}, study_seed=5, participant_seed=4) != first


# ---- pairwise sides ----

def test_pairwise_draws_which_clip_is_a_from_the_participants_seed():
    design = design_of(grid(1, conditions=range(2)), method=Study.METHOD_PAIRWISE, clips_per_participant=1)
    sides = [plan_trials(design, {}, study_seed=1, participant_seed=seed)[0] for seed in range(400)]
    a_first = sum(t.study_clip == 1 for t in sides)
    assert all({t.study_clip, t.paired_study_clip} == {1, 2} for t in sides)
    assert 160 < a_first < 240  # a fair coin: 200 ± 4 standard deviations
    assert sides[7] == plan_trials(design, {}, study_seed=1, participant_seed=7)[0]


# ---- practice and gold ----

def test_practice_comes_first_in_id_order_and_every_practice_clip_is_shown():
    rows = grid(2) + grid(1, role=PRACTICE, first_id=50, conditions=[0, 1, 3], sources=[9])
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=4)
    for plan in simulate(design, 10)[2]:
        assert [(t.study_clip, t.role) for t in plan[:3]] == [(50, PRACTICE), (51, PRACTICE), (52, PRACTICE)]
        assert all(t.role == TEST for t in plan[3:]) and len(plan) == 7


def test_practice_is_not_given_again_when_topping_up():
    rows = grid(2) + grid(1, role=PRACTICE, first_id=50, conditions=[0], sources=[9])
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=4)
    first = plan_trials(design, {}, study_seed=1, participant_seed=1)
    more = plan_trials(replace(design, rules=replace(design.rules, clips_per_participant=6)), {},
                       study_seed=1, participant_seed=1, given=first)
    assert len(more) == 2 and all(t.role == TEST for t in more)
    assert not {t.study_clip for t in more} & {t.study_clip for t in first}


def test_gold_is_spread_evenly_among_the_test_trials_and_never_first():
    rows = grid(2) + grid(1, role=GOLD, first_id=100, conditions=[1, 4, 5], sources=[9])
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=9, gold_per_participant=3)
    positions = set()
    for plan in simulate(design, 60)[2]:
        gold_at = [i for i, t in enumerate(plan) if t.role == GOLD]
        assert len(gold_at) == 3 and len(plan) == 12 and plan[0].role == TEST
        tests_before = [sum(t.role == TEST for t in plan[:i]) for i in gold_at]
        # one gold after each third of the test trials: after 1–3, 4–6 and 7–9 test trials
        assert [(n - 1) // 3 for n in tests_before] == [0, 1, 2], tests_before
        positions.add(tuple(gold_at))
    assert len(positions) > 5  # jittered by the seed


def test_gold_goes_to_the_least_covered_gold_clips():
    rows = grid(2) + grid(1, role=GOLD, first_id=100, conditions=[1, 4, 5], sources=[9])
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=4, gold_per_participant=1)
    _, gold_coverage, _ = simulate(design, 30)
    assert sorted(gold_coverage.values()) == [10, 10, 10]
    plan = plan_trials(design, {}, study_seed=1, participant_seed=1, gold_coverage={100: 3, 101: 0, 102: 2})
    assert [t.study_clip for t in plan if t.role == GOLD] == [101]


def test_spreading_never_puts_an_insert_first_even_with_more_inserts_than_items():
    for n, g in [(1, 1), (2, 3), (5, 2), (10, 4)]:
        for seed in range(20):
            out = assignment.place_spread(list(range(n)), ["g"] * g, random.Random(seed))
            assert out[0] != "g" and out.count("g") == g and [x for x in out if x != "g"] == list(range(n))


def test_a_gold_clip_is_not_put_next_to_a_trial_of_its_condition_when_its_share_has_room():
    base = ["a", "b", "a", "b", "a", "b"]
    for seed in range(30):
        out = assignment.place_spread(base, ["a"], random.Random(seed), label=str)
        assert repeats(out) == 0


def test_a_pairwise_gold_clip_is_a_fixed_against_a_partner_of_its_item():
    rows = grid(1, conditions=range(3)) + [ClipRow(100, GOLD, 4, 0, 0, "s0"), ClipRow(101, GOLD, 5, 9, 9, "s9")]
    design = design_of(rows, method=Study.METHOD_PAIRWISE, clips_per_participant=3, gold_per_participant=1)
    assert [(u.trial.study_clip, u.trial.paired_study_clip) for u in design.gold] == [(100, 1)]
    assert design.unshowable == (101,)  # nothing of its face and sentence to be compared with
    for plan in simulate(design, 10)[2]:
        assert [(t.study_clip, t.paired_study_clip) for t in plan if t.role == GOLD] == [(100, 1)]


# ---- balance, scale ----

# ACR-HR: a unit and its reference take two trials, so with one trial left the least-covered unit may not
# fit and a unit of an item already shown (one step more covered) takes the place: within two.
@pytest.mark.parametrize(("method", "bound"), [(Study.METHOD_ACR, 1), (Study.METHOD_DCR, 1),
                                               (Study.METHOD_PAIRWISE, 1), (Study.METHOD_ACR_HR, 2)])
@pytest.mark.parametrize("limit", [Study.LIMIT_NONE, Study.LIMIT_ONCE, Study.LIMIT_ONCE_PER_CONDITION])
def test_coverage_stays_within_one_unit_for_every_method_and_content_limit(method, bound, limit):
    design = design_of(grid(4, sources=[0, 1, 0, 1]), method=method, clips_per_participant=5,
                       content_key=Study.CONTENT_SOURCE, content_limit=limit)
    coverage = Counter()
    for seed in range(150):
        plan = plan_trials(design, coverage, study_seed=2, participant_seed=seed)
        for trial in plan:
            key = assignment.unit_key(trial.study_clip, trial.paired_study_clip)
            if key in {u.key for u in design.units}:
                coverage[key] += 1
        assert spread(coverage, design) <= bound, (seed, coverage)


def test_it_plans_over_ten_thousand_units():
    rows = grid(1000, conditions=range(10))
    design = design_of(rows, method=Study.METHOD_ACR, clips_per_participant=20, content_limit=Study.LIMIT_ONCE)
    rng = random.Random(3)
    coverage = {u.key: rng.randrange(5) for u in design.units}
    plan = plan_trials(design, coverage, study_seed=1, participant_seed=1)
    assert len(plan) == 20 and all(coverage[t.study_clip] == 0 for t in plan)
    assert len({t.content for t in plan}) == 20


# =====================================================================================================
# With the database: each method, balance, limits, practice and gold, coverage rows, closing
# =====================================================================================================

def fixture_condition(variant: int) -> Condition:
    """One of the six fixture conditions (variant 2 is the hidden reference)."""
    name, kind, control, architecture, *_ = CONDITIONS[variant]
    return Condition.objects.get_or_create(name=name, defaults={"kind": kind, "control": control,
                                                                "architecture": architecture})[0]


def add_clips(study, *, sources=("face-a", "face-b"), sentences=("bin-blue",), variants=range(6), role=TEST,
              status=Clip.READY, reference_status=Clip.READY) -> list[StudyClip]:
    """Study clips for every source × sentence × condition variant, each item's clips pointing at its hidden
    reference (variant 2) as generation links them. No media files: assignment never opens them."""
    made = []
    for source_name in sources:
        source = Source.objects.get_or_create(name=source_name, defaults={"identity": source_name,
                                                                          "file": f"sources/{source_name}.mp4"})[0]
        for sentence in sentences:
            audio = Audio.objects.get_or_create(name=f"{sentence}.wav", defaults={
                "content_id": sentence, "file": f"audio/{sentence}.wav", "sample_rate": 16000, "duration": 1.0})[0]
            clips = {
                v: Clip.objects.create(condition=fixture_condition(v), source=source, audio=audio,
                                       status=reference_status if v == REFERENCE else status, file="clips/x.mp4")
                for v in variants
            }
            same_item = Clip.objects.filter(source=source, audio=audio)
            reference = same_item.filter(condition__kind=Condition.KIND_REFERENCE).first()
            if reference is not None:
                same_item.exclude(pk=reference.pk).update(reference=reference)
            made += [StudyClip.objects.create(study=study, clip=clip, role=role) for clip in clips.values()]
    return made


def trials(participant) -> list[Assignment]:
    return list(participant.assignments.select_related(
        "study_clip__clip__condition", "study_clip__clip__audio", "paired_study_clip__clip").order_by("position"))


def unit_spread(study) -> int:
    counts = [row.in_progress + row.completed for row in assignment.coverage_rows(study) if row.role == TEST]
    return max(counts) - min(counts)


@pytest.fixture
def empty_study(db, clip_files):
    def make(method=Study.METHOD_ACR, per_participant=4, **fields):
        return make_study(clip_files, n_clips=0, per_participant=per_participant, method=method, **fields)
    return make


# ---- each method ----

def test_acr_participants_get_single_clips(empty_study):
    study = empty_study(Study.METHOD_ACR)
    add_clips(study)
    participant, _ = enroll_and_admit(study)
    rows = trials(participant)
    assert len(rows) == 4 and all(a.role == TEST and a.paired_study_clip_id is None for a in rows)


def test_dcr_participants_get_only_clips_whose_reference_is_ready(empty_study):
    study = empty_study(Study.METHOD_DCR, per_participant=10)
    add_clips(study, sources=("face-a",))
    add_clips(study, sources=("face-b",), reference_status=Clip.RENDERING)
    participant, _ = enroll_and_admit(study)
    rows = trials(participant)
    assert len(rows) == 6 and {a.study_clip.clip.source.name for a in rows} == {"face-a"}
    assert sum(a.study_clip.clip.condition.kind == Condition.KIND_REFERENCE for a in rows) == 1  # against itself


def test_acr_hr_participants_get_the_hidden_reference_of_every_item_they_see(empty_study):
    study = empty_study(Study.METHOD_ACR_HR, per_participant=6)
    add_clips(study, sources=("face-a", "face-b", "face-c"))
    for _ in range(10):
        participant, _ = enroll_and_admit(study)
        rows = trials(participant)
        references = [a.study_clip.clip for a in rows if a.study_clip.clip.condition.kind == Condition.KIND_REFERENCE]
        processed = [a.study_clip.clip for a in rows if a.study_clip.clip.condition.kind != Condition.KIND_REFERENCE]
        assert len(rows) == 6 and len(references) == len({c.source_id for c in references})
        assert {c.source_id for c in processed} == {c.source_id for c in references}


def test_pairwise_participants_get_two_conditions_of_one_item(empty_study):
    study = empty_study(Study.METHOD_PAIRWISE, per_participant=5)
    add_clips(study)
    sides = Counter()
    for _ in range(12):
        participant, _ = enroll_and_admit(study)
        for a in trials(participant):
            first, second = a.study_clip.clip, a.paired_study_clip.clip
            assert (first.source_id, first.audio_id) == (second.source_id, second.audio_id)
            assert first.condition_id != second.condition_id
            sides[a.study_clip_id < a.paired_study_clip_id] += 1
    assert sides[True] and sides[False]  # the lower id is sometimes A, sometimes B
    assert unit_spread(study) <= 1


# ---- balance ----

@pytest.mark.slow  # ~1 s on SQLite, ~4 s on PostgreSQL
def test_sixty_participants_one_after_another_keep_acr_coverage_within_one(empty_study):
    study = empty_study(Study.METHOD_ACR, per_participant=5)
    add_clips(study)  # 2 faces × 6 conditions = 12 units
    for _ in range(60):
        enroll_and_admit(study)
        assert unit_spread(study) <= 1
    rows = assignment.coverage_rows(study)
    assert sum(r.in_progress for r in rows) == 60 * 5 and {r.in_progress for r in rows} == {25}


def test_with_content_limit_once_no_participant_sees_a_sentence_twice(empty_study):
    study = empty_study(Study.METHOD_ACR, per_participant=3, content_key=Study.CONTENT_SENTENCE,
                        content_limit=Study.LIMIT_ONCE)
    add_clips(study, sentences=("bin-blue", "lay-red", "set-white"))  # 2 faces × 3 sentences × 6 conditions
    for _ in range(30):
        participant, _ = enroll_and_admit(study)
        sentences = [a.study_clip.clip.audio.content_id for a in trials(participant)]
        assert len(sentences) == len(set(sentences)) == 3
        assert unit_spread(study) <= 1


def test_a_timed_out_participants_pairs_are_handed_out_again(empty_study):
    study = empty_study(Study.METHOD_PAIRWISE, per_participant=3, ratings_per_clip=1)
    add_clips(study, sources=("face-a",), variants=(0, 1, 2))  # three pairs
    gone, _ = enroll_and_admit(study)
    pairs = {frozenset((a.study_clip_id, a.paired_study_clip_id)) for a in gone.assignments.all()}
    Participant.objects.filter(pk=gone.pk).update(last_seen_at=timezone.now() - timedelta(minutes=121))
    newcomer, _ = enroll_and_admit(study)
    gone.refresh_from_db()
    assert gone.state == Participant.TIMED_OUT
    assert {frozenset((a.study_clip_id, a.paired_study_clip_id)) for a in newcomer.assignments.all()} == pairs


@pytest.mark.parametrize("review", [Participant.REVIEW_REJECTED, Participant.REVIEW_ACCEPTED])
def test_a_participant_the_researcher_rejected_or_set_aside_frees_their_units(study, review):
    clips = list(study.study_clips.order_by("id"))
    hold(study, clips[:4], state=Participant.COMPLETED, completed=True, review=review)
    hold(study, clips[4:], state=Participant.COMPLETED, completed=True, review=Participant.REVIEW_USED)
    assert assignment.coverage_of(study) == {sc.id: int(sc in clips[4:]) for sc in clips}
    newcomer, _ = enroll_and_admit(study)
    assert given(newcomer) == {sc.id for sc in clips[:4]}


# ---- the stop rule, per unit ----

def test_a_pair_is_full_whichever_clip_was_a(empty_study):
    study = empty_study(Study.METHOD_PAIRWISE, per_participant=3, ratings_per_clip=1)
    a, b, c = add_clips(study, sources=("face-a",), variants=(0, 1, 2))
    done = Participant.objects.create(study=study, state=Participant.COMPLETED)
    Assignment.objects.create(participant=done, study_clip=b, paired_study_clip=a, position=0,
                              completed_at=timezone.now())
    assert assignment.full_study_clips(study) == {(a.id, b.id)}
    newcomer, _ = enroll_and_admit(study)
    assert {frozenset((x.study_clip_id, x.paired_study_clip_id)) for x in newcomer.assignments.all()} == {
        frozenset((a.id, c.id)), frozenset((b.id, c.id))}


def test_practice_never_counts_towards_coverage_or_the_stop_rule(db, clip_files):
    study = make_study(clip_files, n_clips=2, per_participant=2, ratings_per_clip=1)
    first, second = study.study_clips.order_by("id")
    done = Participant.objects.create(study=study, state=Participant.COMPLETED)
    Assignment.objects.create(participant=done, study_clip=first, role=PRACTICE, position=0,
                              completed_at=timezone.now())
    assert assignment.coverage_of(study) == {first.id: 0, second.id: 0} and not assignment.full_study_clips(study)


# ---- practice and gold in the stored order ----

def test_practice_comes_first_and_gold_is_spread_out_never_first_in_the_stored_order(empty_study):
    study = empty_study(Study.METHOD_ACR, per_participant=6, gold_per_participant=2)
    add_clips(study, sources=("face-a", "face-b"))
    practice = add_clips(study, sources=("face-p",), variants=(0, 3), role=PRACTICE)
    gold = add_clips(study, sources=("face-g",), variants=(1, 4, 5), role=GOLD)
    for _ in range(9):
        participant, _ = enroll_and_admit(study)
        rows = trials(participant)
        assert [(a.study_clip_id, a.role) for a in rows[:2]] == [(sc.id, PRACTICE) for sc in practice]
        assert [a.position for a in rows] == list(range(10)) and rows[2].role == TEST
        gold_at = [i - 2 for i, a in enumerate(rows) if a.role == GOLD]
        tests_before = [sum(a.role == TEST for a in rows[2:2 + i]) for i in gold_at]
        assert len(gold_at) == 2 and 1 <= tests_before[0] <= 3 < tests_before[1] <= 6
    gold_rows = [r for r in assignment.coverage_rows(study) if r.role == GOLD]
    assert [r.study_clip_id for r in gold_rows] == [sc.id for sc in gold]
    assert sorted(r.in_progress for r in gold_rows) == [6, 6, 6]  # 9 × 2 gold trials, least-covered first


def test_the_stored_order_is_the_plan_of_the_participants_seed(empty_study):
    study = empty_study(Study.METHOD_ACR_HR, per_participant=6, gold_per_participant=1,
                        content_limit=Study.LIMIT_ONCE_PER_CONDITION)
    add_clips(study, sources=("face-a", "face-b", "face-c"))
    add_clips(study, sources=("face-g",), variants=(1,), role=GOLD)
    add_clips(study, sources=("face-p",), variants=(0,), role=PRACTICE)
    participant, _ = enroll_and_admit(study)
    stored = [(a.study_clip_id, a.paired_study_clip_id, a.role) for a in trials(participant)]
    replayed = plan_trials(assignment.load_design(study), {}, study_seed=study.seed, participant_seed=participant.seed)
    assert stored == [(t.study_clip, t.paired_study_clip, t.role) for t in replayed]


def test_admitting_takes_the_same_number_of_queries_whatever_the_size_of_the_study(empty_study):
    def queries_to_admit(study) -> int:
        participant, _ = assignment.enroll(study)
        with CaptureQueriesContext(connection) as captured:
            assignment.admit(participant)
        return len(captured)

    small = empty_study(Study.METHOD_ACR_HR, per_participant=4, gold_per_participant=1)
    add_clips(small, sources=("face-a",))
    add_clips(small, sources=("face-g",), variants=(1,), role=GOLD)
    large = empty_study(Study.METHOD_ACR_HR, per_participant=12, gold_per_participant=3)
    add_clips(large, sources=("face-b", "face-c", "face-d"), sentences=("bin-blue", "lay-red", "set-white"))
    add_clips(large, sources=("face-h",), variants=(1, 3, 4), role=GOLD)
    for _ in range(10):
        enroll_and_admit(large)
    assert queries_to_admit(small) == queries_to_admit(large) <= 12


def test_a_participant_who_cannot_get_a_single_test_trial_is_refused(empty_study):
    study = empty_study(Study.METHOD_ACR_HR, per_participant=1)  # a clip and its reference need two trials
    add_clips(study, sources=("face-a",))
    participant, _ = assignment.enroll(study)
    with pytest.raises(assignment.StudyNotReady):
        assignment.admit(participant)
    participant.refresh_from_db()
    assert participant.state == Participant.STARTED and not participant.assignments.exists()


# ---- coverage rows ----

def test_coverage_rows_count_in_progress_and_completed_against_the_target(db, clip_files):
    study = make_study(clip_files, n_clips=3, per_participant=2, ratings_per_clip=2)
    gold = StudyClip.objects.create(study=study, clip=make_clip(4, clip_files), role=GOLD)
    a, b, c = study.study_clips.filter(role=TEST).order_by("id")
    hold(study, [a, b], state=Participant.COMPLETED, completed=True)
    hold(study, [a, gold])  # in progress
    hold(study, [a, b, c], state=Participant.RETURNED, completed=True)  # no longer counts
    rows = {(r.study_clip_id, r.role): r for r in assignment.coverage_rows(study)}
    assert rows[(a.id, TEST)] == assignment.UnitCoverage(a.id, None, TEST, in_progress=1, completed=1, target=2,
                                                         missing=1)
    assert (rows[(b.id, TEST)].completed, rows[(b.id, TEST)].missing) == (1, 1)
    assert (rows[(c.id, TEST)].in_progress, rows[(c.id, TEST)].completed, rows[(c.id, TEST)].missing) == (0, 0, 2)
    assert rows[(gold.id, GOLD)] == assignment.UnitCoverage(gold.id, None, GOLD, 1, 0, 0, 0)
    assert len(rows) == 4


def test_coverage_rows_list_pairs_with_the_lower_id_first(empty_study):
    study = empty_study(Study.METHOD_PAIRWISE, per_participant=1)
    a, b, c = add_clips(study, sources=("face-a",), variants=(0, 1, 2))
    hold_pair = Participant.objects.create(study=study, state=Participant.IN_PROGRESS)
    Assignment.objects.create(participant=hold_pair, study_clip=c, paired_study_clip=a, position=0)
    rows = assignment.coverage_rows(study)
    assert [(r.study_clip_id, r.paired_study_clip_id, r.in_progress) for r in rows] == [
        (a.id, b.id, 0), (a.id, c.id, 1), (b.id, c.id, 0)]


# ---- closing a complete study ----

def complete(study, clips):
    hold(study, clips, state=Participant.COMPLETED, completed=True)


def test_it_closes_an_auto_close_study_once_every_unit_is_full(db, clip_files):
    study = make_study(clip_files, n_clips=3, per_participant=3, ratings_per_clip=1, auto_close=True)
    clips = list(study.study_clips.order_by("id"))
    complete(study, clips[:2])
    hold(study, clips[2:])  # assigned, not rated yet
    assert assignment.close_if_complete(study) is False and Study.objects.get(pk=study.pk).status == Study.OPEN
    complete(study, clips[2:])
    assert assignment.close_if_complete(study) is True
    assert study.status == Study.CLOSED and Study.objects.get(pk=study.pk).status == Study.CLOSED
    assert assignment.close_if_complete(study) is False  # idempotent: already closed
    assert Study.objects.get(pk=study.pk).status == Study.CLOSED


def test_it_leaves_a_complete_study_open_without_auto_close(db, clip_files):
    study = make_study(clip_files, n_clips=2, per_participant=2, ratings_per_clip=1)
    complete(study, study.study_clips.all())
    assert assignment.close_if_complete(study) is False and Study.objects.get(pk=study.pk).status == Study.OPEN


def test_it_closes_only_open_studies(db, clip_files):
    study = make_study(clip_files, n_clips=1, per_participant=1, ratings_per_clip=1, auto_close=True,
                       status=Study.DRAFT)
    complete(study, study.study_clips.all())
    assert assignment.close_if_complete(study) is False and Study.objects.get(pk=study.pk).status == Study.DRAFT


def test_two_stale_copies_of_the_study_close_it_once(db, clip_files):
    study = make_study(clip_files, n_clips=1, per_participant=1, ratings_per_clip=1, auto_close=True)
    complete(study, study.study_clips.all())
    one, other = Study.objects.get(pk=study.pk), Study.objects.get(pk=study.pk)
    assert [assignment.close_if_complete(one), assignment.close_if_complete(other)] == [True, False]
