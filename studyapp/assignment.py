"""Balanced, blind assignment of trials to participants.

What a participant gets, in presentation order (stored as ``Assignment.position``):

1. **Practice**: every ready practice study clip, first, in a fixed order (study clip id), role
   "practice". Practice never counts towards coverage and is exempt from the content limit (P.808 and
   P.910 Crowd run a training section before the rating section).
2. **Test trials**: ``study.clips_per_participant`` of them, chosen unit by unit, least-covered first.
   What a *unit* is depends on the method (it is what coverage is counted on):

   * ACR: a ready test study clip.
   * DCR: a ready test study clip whose clip has a ready reference (``clip.reference``, or the clip
     itself when its condition is the hidden reference: the reference-against-itself trial shows where
     "imperceptible" lies). The trial page shows the reference from ``clip.reference``.
   * ACR-HR: a ready test study clip whose condition is not the hidden reference. Whenever a participant
     gets a unit of a content item (same source and audio) they also get that item's hidden-reference
     test study clip, once, within ``clips_per_participant`` (a unit is skipped when it and its reference
     no longer both fit). ITU-T P.910's differential score DV = V(PVS) − V(REF) + 5 needs the same
     viewer's rating of the reference, which is why it comes with the unit rather than on its own.
     References are not units: their coverage follows the units of their item.
   * Pairwise: an unordered pair of ready test study clips with the same source and audio and different
     conditions. Coverage is per pair; which clip is A (``study_clip``) and which is B
     (``paired_study_clip``) is drawn from the participant's seed.

3. **Gold**: ``study.gold_per_participant`` least-covered gold clips (their own coverage, among gold
   clips), spread evenly among the test trials, never first, each at a seeded position inside its share.

Coverage of a unit = its assignments held by participants matching ``Participant.counting`` (not
screened out, returned or timed out; not rejected or set aside by the researcher), *completed or still
in progress* — psiTurk's counterbalancer counts in-progress assignments the same way, so concurrent
sessions do not all pile onto the same clip. Participants not seen for ``study.session_timeout_minutes``
are timed out first (``time_out_stale``), which frees their units. A unit with ``study.ratings_per_clip``
completed counting assignments is *full* and no longer handed out (the stop rule; P.808/P.910 Crowd's
"n votes per clip" top-up); with every unit full the study refuses newcomers (``StudyFull``) and
``close_if_complete`` closes it when ``study.auto_close`` is set.

Researcher constraints:

* ``content_key`` says what "the same content" is (item = source and audio; sentence =
  ``audio.content_id``; source = the face) and ``content_limit`` how often one participant may see it
  (none, once, once per condition; for pairwise a trial's condition is the set of its two conditions).
  The limit binds test and gold trials; an ACR-HR unit's hidden reference (shown *because of* the unit,
  and needed by the method) and practice are exempt. Under a limit, ties in unit coverage go to the
  contents seen least, which keeps the limit from pushing participants onto more-covered units.
  UNVERIFIED choice: gold clips obey the limit
  (a participant could otherwise meet a test content first as a gold clip); with a tight limit a
  participant may get fewer gold clips than asked.
* ``no_condition_twice_in_a_row``: after the seeded shuffle the test trials are re-ordered by
  ``order_without_repeats`` — a deterministic greedy pass that keeps the shuffled order wherever it can
  and never loops (rejection sampling, "reshuffle until no repeats", can run forever); when no order
  without repeats exists (one condition fills more than half the trials) it gives an order with the
  fewest repeats. Gold clips are put at a gap that does not create a repeat when their share has one.

UNVERIFIED choices (no Recommendation prescribes them):

* Pairwise sides: a fair coin per participant and pair (seeded), so each order is shown equally often
  in expectation, not exactly; P.910/P.800 comparison methods present both orders (how they balance
  them was not checked).
* Pairwise gold and practice: the clip is always A and is compared with a *partner* (another ready clip
  of its item in another condition: its own role first, then a test clip, the lowest id), so its
  expected answers describe it shown first against that partner. A clip without a partner is not shown
  (``design.problems_before_opening`` reports it). DCR gold and practice need a ready reference.
* ACR-HR: among equally covered units, a participant's units are drawn item by item (a random order of
  the items), so they share references: about 5 processed clips in 6 trials instead of 3 + 3. With an
  odd budget left, a unit and its reference may no longer fit; the next unit that fits is taken, so unit
  coverage stays within two rather than one.
* Gold has no target: gold clips are handed out for as long as the study runs (least covered first).

Everything between reading the study and writing the rows is a pure function of the study's clips
(``ClipRow``), the coverage and the two seeds (``build_design``, ``plan_trials``, ``select_units``,
``order_without_repeats``, ``place_spread``), testable without a database. ``admit`` runs it in one
transaction that locks the Study row, so concurrent starts are serialized and coverage stays within one
across units (two for ACR-HR, above; under a content limit, when contents hold unequal numbers of units,
the units of small contents are wanted by more participants than they can be balanced against). The
queries do not depend on the number of clips or participants: one for the study's clips, one aggregate
for the coverage, one for the participant's own trials, one insert.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from generation.models import Clip, Condition
from studyapp.models import Assignment, Participant, Study, StudyClip

T = TypeVar("T")
# What coverage is counted on: a study clip id, or (A, B) study clip ids of a pair. Test pairs are
# unordered (lower id first); pairwise gold and practice pairs keep their fixed orientation.
UnitKey = int | tuple[int, int]

TEST, PRACTICE, GOLD = StudyClip.ROLE_TEST, StudyClip.ROLE_PRACTICE, StudyClip.ROLE_GOLD


class StudyNotReady(Exception):
    """The study has no ready test unit to hand out (or none fits a participant)."""


class StudyFull(StudyNotReady):
    """Every ready test unit of the study has its ``ratings_per_clip`` completed ratings."""


# =====================================================================================================
# Pure planning
# =====================================================================================================

def participant_rng(study_seed: int, participant_seed: int, purpose: str) -> random.Random:
    """An independent, reproducible random stream for one participant and one purpose."""
    return random.Random(f"{study_seed}:{participant_seed}:{purpose}")


def select_least_covered(
    coverage: Mapping[int, int], k: int, rng: random.Random, exclude: Collection[int] = ()
) -> list[int]:
    """The ``k`` keys of ``coverage`` with the lowest counts; ties broken by ``rng``.

    Keys in ``exclude`` are never picked, and no key is picked twice. Returns fewer than ``k`` keys
    only when fewer candidates exist. Candidates are visited in sorted order before drawing, so the
    result depends on the coverage and the random stream only, not on dict order.
    """
    candidates = sorted(key for key in coverage if key not in exclude)
    tiebreak = {key: rng.random() for key in candidates}
    ranked = sorted(candidates, key=lambda key: (coverage[key], tiebreak[key]))
    return ranked[: max(k, 0)]


def seeded_shuffle(items: Sequence[T], rng: random.Random) -> list[T]:
    """Fisher–Yates shuffle of a copy of ``items`` (the input is left alone)."""
    order = list(items)
    for i in range(len(order) - 1, 0, -1):
        j = rng.randrange(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def plan_assignments(
    coverage: Mapping[int, int], k: int, study_seed: int, participant_seed: int, exclude: Collection[int] = ()
) -> list[int]:
    """Which single-clip units a participant gets, in presentation order, without constraints (pure).

    The core of :func:`plan_trials` for ACR: it draws from the same streams, so without practice, gold,
    a content limit or repeated conditions both give the same order.
    """
    picked = select_least_covered(coverage, k, participant_rng(study_seed, participant_seed, "select"), exclude)
    # Shuffle from a fixed order so the presentation order does not depend on the selection ranking.
    return seeded_shuffle(sorted(picked), participant_rng(study_seed, participant_seed, "order"))


@dataclass(frozen=True, slots=True)
class ClipRow:
    """What the planner knows about one ready study clip (one row of :func:`clip_rows`)."""

    study_clip: int
    role: str
    condition: int
    source: int
    audio: int
    sentence: str = ""
    is_reference: bool = False  # its condition is the hidden reference
    reference_ready: bool = False  # DCR can show it: clip.reference is ready, or it is the reference itself

    @property
    def item(self) -> tuple[int, int]:
        """The content item: the same face saying the same thing."""
        return self.source, self.audio


@dataclass(frozen=True, slots=True)
class Trial:
    """What one trial shows: a study clip and, for pairwise, the B side."""

    study_clip: int
    paired_study_clip: int | None = None
    role: str = TEST
    condition: frozenset = frozenset()  # condition ids: one, or the two of a pair
    content: Hashable = None  # the value the content limit compares (``study.content_key``)

    def swapped(self) -> Trial:
        """The same pair with A and B exchanged."""
        return replace(self, study_clip=self.paired_study_clip, paired_study_clip=self.study_clip)


@dataclass(frozen=True, slots=True)
class Unit:
    """What coverage is counted on, the trial that shows it, and (ACR-HR) the reference it brings along."""

    key: UnitKey
    trial: Trial
    companion: Trial | None = None
    swappable: bool = False  # a test pair: A and B are drawn per participant


@dataclass(frozen=True)
class Rules:
    """The study's assignment settings (see :class:`studyapp.models.Study`)."""

    method: str = Study.METHOD_ACR
    clips_per_participant: int = 10
    content_key: str = Study.CONTENT_ITEM
    content_limit: str = Study.LIMIT_NONE
    no_condition_twice_in_a_row: bool = True
    gold_per_participant: int = 0

    @classmethod
    def of(cls, study: Study) -> Rules:
        return cls(
            method=study.method, clips_per_participant=study.clips_per_participant, content_key=study.content_key,
            content_limit=study.content_limit, no_condition_twice_in_a_row=study.no_condition_twice_in_a_row,
            gold_per_participant=study.gold_per_participant,
        )


@dataclass(frozen=True)
class Design:
    """A study's units, gold and practice trials under its rules (made by :func:`build_design`)."""

    rules: Rules
    units: tuple[Unit, ...]  # test units, sorted by key
    gold: tuple[Unit, ...]  # gold units, sorted by key
    practice: tuple[Trial, ...]  # in presentation order
    clips: Mapping[int, ClipRow] = field(default_factory=dict)  # every ready study clip by id
    # Gold and practice clips the method cannot show (DCR: no ready reference; pairwise: no partner).
    unshowable: tuple[int, ...] = ()

    def trial(self, study_clip: int, paired_study_clip: int | None = None, role: str = TEST) -> Trial | None:
        """The trial for stored ids (None when a clip is no longer ready)."""
        row = self.clips.get(study_clip)
        paired = self.clips.get(paired_study_clip) if paired_study_clip is not None else None
        if row is None or (paired_study_clip is not None and paired is None):
            return None
        return _trial(row, self.rules.content_key, role, paired)

    @cached_property
    def companions(self) -> frozenset[int]:
        """Study clips shown only as an ACR-HR unit's hidden reference."""
        return frozenset(u.companion.study_clip for u in self.units if u.companion is not None)


def content_of(row: ClipRow, content_key: str) -> Hashable:
    """What counts as the same content under ``content_key`` (item, sentence or source)."""
    if content_key == Study.CONTENT_SENTENCE:
        return ("sentence", row.sentence)
    if content_key == Study.CONTENT_SOURCE:
        return ("source", row.source)
    return ("item", row.item)


def _trial(row: ClipRow, content_key: str, role: str, paired: ClipRow | None = None) -> Trial:
    conditions = frozenset((row.condition,) if paired is None else (row.condition, paired.condition))
    return Trial(row.study_clip, None if paired is None else paired.study_clip, role, conditions,
                 content_of(row, content_key))


def unit_key(study_clip: int, paired_study_clip: int | None) -> UnitKey:
    """The unit of a stored test trial: the clip, or the pair with the lower id first."""
    if paired_study_clip is None:
        return study_clip
    return (min(study_clip, paired_study_clip), max(study_clip, paired_study_clip))


def fixed_key(study_clip: int, paired_study_clip: int | None) -> UnitKey:
    """The unit of a stored gold or practice trial (a pairwise one keeps its orientation)."""
    return study_clip if paired_study_clip is None else (study_clip, paired_study_clip)


def build_design(rows: Iterable[ClipRow], rules: Rules) -> Design:
    """The units, gold and practice trials of a study's ready clips under ``rules`` (pure)."""
    rows = sorted(rows, key=lambda r: r.study_clip)
    by_role: dict[str, list[ClipRow]] = defaultdict(list)
    for row in rows:
        by_role[row.role].append(row)
    tests = by_role[TEST]
    key = rules.content_key
    method = rules.method

    units: list[Unit] = []
    if method == Study.METHOD_PAIRWISE:
        by_item: dict[tuple[int, int], list[ClipRow]] = defaultdict(list)
        for row in tests:
            by_item[row.item].append(row)
        for same_item in by_item.values():
            for a, b in itertools.combinations(same_item, 2):  # a.study_clip < b.study_clip
                if a.condition != b.condition:
                    units.append(Unit((a.study_clip, b.study_clip), _trial(a, key, TEST, b), swappable=True))
    elif method == Study.METHOD_ACR_HR:
        references: dict[tuple[int, int], ClipRow] = {}
        for row in tests:
            if row.is_reference:
                references.setdefault(row.item, row)  # the lowest id when an item has several
        for row in tests:
            if not row.is_reference:
                reference = references.get(row.item)
                companion = _trial(reference, key, TEST) if reference is not None else None
                units.append(Unit(row.study_clip, _trial(row, key, TEST), companion))
    else:
        showable = tests if method == Study.METHOD_ACR else [r for r in tests if r.reference_ready]
        units = [Unit(row.study_clip, _trial(row, key, TEST)) for row in showable]

    unshowable: list[int] = []

    def fixed_trial(row: ClipRow, role: str) -> Trial | None:
        if method == Study.METHOD_DCR and not row.reference_ready:
            unshowable.append(row.study_clip)
            return None
        if method == Study.METHOD_PAIRWISE:
            partner = pairwise_partner(row, rows)
            if partner is None:
                unshowable.append(row.study_clip)
                return None
            return _trial(row, key, role, partner)
        return _trial(row, key, role)

    gold = []
    for row in by_role[GOLD]:
        trial = fixed_trial(row, GOLD)
        if trial is not None:
            gold.append(Unit(fixed_key(trial.study_clip, trial.paired_study_clip), trial))
    practice = tuple(t for t in (fixed_trial(row, PRACTICE) for row in by_role[PRACTICE]) if t is not None)
    return Design(rules, tuple(sorted(units, key=lambda u: u.key)), tuple(sorted(gold, key=lambda u: u.key)),
                  practice, {row.study_clip: row for row in rows}, tuple(unshowable))


def pairwise_partner(row: ClipRow, rows: Sequence[ClipRow]) -> ClipRow | None:
    """The B side of a pairwise gold or practice clip: another ready clip of the same item and another
    condition, preferring the clip's own role, then test clips; the lowest id among equals.

    The clip itself is always A, so its expected answers describe it shown first against this partner.
    """
    preference = {row.role: 0, TEST: 1}
    candidates = [r for r in rows if r.item == row.item and r.condition != row.condition]
    return min(candidates, key=lambda r: (preference.get(r.role, 2), r.study_clip), default=None)


class ContentLimit:
    """The contents a participant has seen and whether one more trial keeps ``study.content_limit``."""

    def __init__(self, limit: str):
        self.limit = limit
        self.seen: set[Hashable] = set()

    def key(self, trial: Trial) -> Hashable:
        """What the limit compares: the content, or the content and the condition."""
        return trial.content if self.limit == Study.LIMIT_ONCE else (trial.content, trial.condition)

    def allows(self, trial: Trial) -> bool:
        return self.limit == Study.LIMIT_NONE or self.key(trial) not in self.seen

    def add(self, trial: Trial) -> None:
        if self.limit != Study.LIMIT_NONE:
            self.seen.add(self.key(trial))


def select_units(
    units: Sequence[Unit], coverage: Mapping[UnitKey, int], capacity: int, rng: random.Random, *,
    exclude: Collection[UnitKey] = (), limit: ContentLimit | None = None, included: Collection[int] = (),
) -> list[Unit]:
    """Least-covered units first that fit ``capacity`` trials and the content limit.

    Ranking: the unit's coverage; then, under a content limit, the coverage of its content (all units
    the limit treats as the same), so contents stay balanced and the limit does not push participants
    onto more-covered units; then, for units that bring a companion (ACR-HR), a random order of the
    companions, so that a participant's units share references and fewer trials go to references;
    last a random draw. ``units`` must be sorted by key: the draws are made in that order (one per
    candidate first, as :func:`select_least_covered`), so the result is reproducible.

    A unit costs one trial, plus one for its companion (the ACR-HR reference) unless that study clip is
    already ``included``; a unit that no longer fits is skipped and the next one tried. ``limit`` is
    updated with what is picked.
    """
    limit = limit if limit is not None else ContentLimit(Study.LIMIT_NONE)
    candidates = [u for u in units if u.key not in exclude]
    tiebreak = [rng.random() for _ in candidates]
    content_load: dict[Hashable, int] = defaultdict(int)
    if limit.limit != Study.LIMIT_NONE:
        for unit in units:
            content_load[limit.key(unit.trial)] += coverage.get(unit.key, 0)
    companion_order: dict[int, float] = {}
    for unit in candidates:
        if unit.companion is not None and unit.companion.study_clip not in companion_order:
            companion_order[unit.companion.study_clip] = rng.random()

    # Ranked one coverage level at a time: most participants need the first few units only.
    levels: dict[int, list[int]] = defaultdict(list)
    for i, unit in enumerate(candidates):
        levels[coverage.get(unit.key, 0)].append(i)

    def rank(i: int) -> tuple:
        unit = candidates[i]
        return (content_load[limit.key(unit.trial)] if content_load else 0,
                companion_order[unit.companion.study_clip] if unit.companion is not None else 0.0, tiebreak[i])

    included = set(included)
    picked: list[Unit] = []
    for level in sorted(levels):
        for i in sorted(levels[level], key=rank):
            if capacity <= 0:
                return picked
            unit = candidates[i]
            if not limit.allows(unit.trial):
                continue
            brings = unit.companion is not None and unit.companion.study_clip not in included
            if 1 + brings > capacity:
                continue
            picked.append(unit)
            limit.add(unit.trial)
            capacity -= 1 + brings
            if brings:
                included.add(unit.companion.study_clip)
    return picked


def order_without_repeats(items: Sequence[T], label: Callable[[T], Hashable], previous: Hashable = None) -> list[T]:
    """Re-order ``items`` so that no two neighbours share a label, keeping their order where it can.

    A deterministic greedy pass: each step takes the earliest remaining item whose label differs from
    the last one placed (``previous`` before the first), except that a label holding half of what is left
    (rounded up, with an odd number left) must come now or an order without repeats stops existing.
    When none exists from the start (a label fills more than half the items, or ``previous`` leaves no
    room) the dominant label is placed whenever it may, which gives the fewest repeats possible. Never
    loops: n steps of O(number of labels) each.
    """
    queues: dict[Hashable, deque[int]] = {}
    labels = [label(item) for item in items]
    for index, name in enumerate(labels):
        queues.setdefault(name, deque()).append(index)
    out: list[T] = []
    last, left = previous, len(items)
    while left:
        top = max(queues, key=lambda name: (len(queues[name]), -queues[name][0]))
        top_count = len(queues[top])
        must = (left + 1) // 2
        if top != last and (top_count > must or (left % 2 == 1 and top_count == must)):
            chosen = top  # the only way to keep (or get closest to) an order without repeats
        else:
            others = [name for name in queues if name != last]
            chosen = min(others, key=lambda name: queues[name][0]) if others else last
        index = queues[chosen].popleft()
        if not queues[chosen]:
            del queues[chosen]
        out.append(items[index])
        last, left = chosen, left - 1
    return out


def place_spread(
    base: Sequence[T], inserts: Sequence[T], rng: random.Random, label: Callable[[T], Hashable] | None = None
) -> list[T]:
    """Insert ``inserts`` among ``base`` spread evenly, never first, each at a seeded gap of its share.

    With n base items and g inserts, insert i goes after base item number j, j drawn from its share
    (i·n/g, (i+1)·n/g]; the first insert therefore has at least one base item before it (with more
    inserts than base items, some share a gap; with no base item at all they can only come alone). With
    ``label``, a gap whose neighbours share the insert's label is avoided when the share has another gap.
    """
    n, g = len(base), len(inserts)
    if not n or not g:
        return list(base) + list(inserts)
    after: dict[int, list[T]] = defaultdict(list)
    for i, item in enumerate(inserts):
        low, high = i * n // g + 1, (i + 1) * n // g
        gaps = seeded_shuffle(range(low, high + 1), rng) if low <= high else [max(high, 1)]
        if label is not None:
            clear = [gap for gap in gaps if not _repeats_at(base, gap, label(item), label)]
            gaps = clear or gaps
        after[gaps[0]].append(item)
    out: list[T] = []
    for position, item in enumerate(base, start=1):
        out.append(item)
        out.extend(after.get(position, ()))
    return out


def _repeats_at(base: Sequence[T], gap: int, name: Hashable, label: Callable[[T], Hashable]) -> bool:
    before = label(base[gap - 1]) if 0 < gap <= len(base) else None
    following = label(base[gap]) if gap < len(base) else None
    return name in (before, following)


def plan_trials(
    design: Design, coverage: Mapping[UnitKey, int], *, study_seed: int, participant_seed: int,
    full: Collection[UnitKey] = (), gold_coverage: Mapping[UnitKey, int] | None = None,
    given: Sequence[Trial] = (),
) -> list[Trial]:
    """The trials a participant gets next, in presentation order (pure).

    ``given`` are the trials the participant already has (in position order); the new ones are meant
    to follow them: practice only for a participant without trials, test units up to
    ``clips_per_participant`` (never a unit twice, never a ``full`` one), gold up to
    ``gold_per_participant``, with the content limit counting what was given.
    """
    rules = design.rules
    stream = partial(participant_rng, study_seed, participant_seed)
    companions = design.companions
    limit = ContentLimit(rules.content_limit)
    given_test = [t for t in given if t.role == TEST]
    given_gold = [t for t in given if t.role == GOLD]
    for trial in given_test + given_gold:
        if not (trial.role == TEST and trial.paired_study_clip is None and trial.study_clip in companions):
            limit.add(trial)

    exclude = set(full) | {unit_key(t.study_clip, t.paired_study_clip) for t in given_test}
    capacity = rules.clips_per_participant - len(given_test)
    picked = select_units(design.units, coverage, capacity, stream("select"), exclude=exclude, limit=limit,
                          included={t.study_clip for t in given_test})
    tests: list[Trial] = []
    seen_companions = {t.study_clip for t in given_test}
    sides = stream("sides")
    for unit in sorted(picked, key=lambda u: u.key):  # sides drawn in a fixed order
        trial = unit.trial.swapped() if unit.swappable and sides.random() < 0.5 else unit.trial
        tests.append(trial)
        if unit.companion is not None and unit.companion.study_clip not in seen_companions:
            seen_companions.add(unit.companion.study_clip)
            tests.append(unit.companion)
    # Shuffle from a fixed order so the presentation order does not depend on the selection ranking.
    order = seeded_shuffle(sorted(tests, key=_trial_sort_key), stream("order"))
    if rules.no_condition_twice_in_a_row:
        previous = next((t.condition for t in reversed(given) if t.role != PRACTICE), None)
        order = order_without_repeats(order, _condition, previous)

    wanted_gold = rules.gold_per_participant - len(given_gold)
    gold: list[Trial] = []
    if wanted_gold > 0 and order:
        given_gold_keys = {fixed_key(t.study_clip, t.paired_study_clip) for t in given_gold}
        chosen = select_units(design.gold, gold_coverage or {}, wanted_gold, stream("gold"),
                              exclude=given_gold_keys, limit=limit)
        gold = seeded_shuffle(sorted((u.trial for u in chosen), key=_trial_sort_key), stream("gold-order"))
    placed = place_spread(order, gold, stream("gold-place"),
                          label=_condition if rules.no_condition_twice_in_a_row else None)
    practice = list(design.practice) if not given else []
    return practice + placed


def _trial_sort_key(trial: Trial) -> tuple[int, int]:
    return trial.study_clip, -1 if trial.paired_study_clip is None else trial.paired_study_clip


def _condition(trial: Trial) -> frozenset:
    return trial.condition


def most_test_trials(design: Design) -> int:
    """The most test trials one participant can get under the design's content limit (from an empty
    study; the greedy selection of :func:`plan_trials`, so what a participant would really get)."""
    roomy = sum(1 + (u.companion is not None) for u in design.units)
    picked = select_units(design.units, {}, roomy, random.Random(0), limit=ContentLimit(design.rules.content_limit))
    return len(picked) + len({u.companion.study_clip for u in picked if u.companion is not None})


# =====================================================================================================
# The database side
# =====================================================================================================

def eligible_study_clips(study: Study):
    """Test clips of the study whose media is ready."""
    return StudyClip.objects.filter(study=study, role=StudyClip.ROLE_TEST, clip__status=Clip.READY)


def clip_rows(study: Study) -> list[ClipRow]:
    """Every ready study clip of ``study`` as the planner sees it (one query)."""
    rows = StudyClip.objects.filter(study=study, clip__status=Clip.READY).values_list(
        "id", "role", "clip__condition_id", "clip__condition__kind", "clip__source_id", "clip__audio_id",
        "clip__audio__content_id", "clip__reference__status",
    )
    out = []
    for pk, role, condition, kind, source, audio, sentence, reference_status in rows:
        is_reference = kind == Condition.KIND_REFERENCE
        out.append(ClipRow(pk, role, condition, source, audio, sentence, is_reference,
                           is_reference or reference_status == Clip.READY))
    return out


def load_design(study: Study) -> Design:
    """The study's :class:`Design` (one query)."""
    return build_design(clip_rows(study), Rules.of(study))


@dataclass(frozen=True)
class UnitCoverage:
    """Coverage of one unit for the monitoring pages (``paired_study_clip_id`` only for pairs).

    ``target`` is ``ratings_per_clip`` for test units; gold units have none (0): they are handed out
    for as long as the study runs.
    """

    study_clip_id: int
    paired_study_clip_id: int | None
    role: str
    in_progress: int
    completed: int
    target: int
    missing: int


@dataclass
class _Counts:
    """Counting assignments per unit: (in progress, completed), test and gold apart."""

    test: dict[UnitKey, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    gold: dict[UnitKey, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def coverage(self, design: Design) -> dict[UnitKey, int]:
        return {u.key: sum(self.test.get(u.key, (0, 0))) for u in design.units}

    def gold_coverage(self, design: Design) -> dict[UnitKey, int]:
        return {u.key: sum(self.gold.get(u.key, (0, 0))) for u in design.gold}

    def full(self, design: Design, target: int) -> set[UnitKey]:
        return {u.key for u in design.units if self.test.get(u.key, (0, 0))[1] >= target}


def _counts(study: Study) -> _Counts:
    """One aggregate query over the study's counting assignments (practice never counts)."""
    rows = (
        Assignment.objects.filter(participant__study=study, role__in=(TEST, GOLD))
        .filter(Participant.counting("participant__"))
        .values_list("role", "study_clip_id", "paired_study_clip_id")
        .annotate(total=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False)))
        .order_by()
    )
    counts = _Counts()
    for role, study_clip, paired, total, done in rows:
        if role == TEST:
            bucket = counts.test[unit_key(study_clip, paired)]
        else:
            bucket = counts.gold[fixed_key(study_clip, paired)]
        bucket[0] += total - done
        bucket[1] += done
    return counts


def coverage_of(study: Study) -> dict[UnitKey, int]:
    """Test unit → number of its assignments that count (completed or in progress)."""
    return _counts(study).coverage(load_design(study))


def full_study_clips(study: Study) -> set[UnitKey]:
    """Test units with ``study.ratings_per_clip`` completed assignments that count: no longer handed out."""
    return _counts(study).full(load_design(study), study.ratings_per_clip)


def coverage_rows(study: Study) -> list[UnitCoverage]:
    """Coverage of every test unit (by key), then every gold unit, in two queries."""
    design, counts = load_design(study), _counts(study)
    rows = []
    for units, role, bucket, target in ((design.units, TEST, counts.test, study.ratings_per_clip),
                                        (design.gold, GOLD, counts.gold, 0)):
        for unit in units:
            in_progress, completed = bucket.get(unit.key, (0, 0))
            a, b = unit.key if isinstance(unit.key, tuple) else (unit.key, None)
            rows.append(UnitCoverage(a, b, role, in_progress, completed, target, max(target - completed, 0)))
    return rows


def close_if_complete(study: Study) -> bool:
    """Close an open ``auto_close`` study once every test unit is full; True when this call closed it.

    Atomic and idempotent: the status changes by one conditional update (open → closed), so of two
    concurrent callers one closes the study and the other finds nothing to do.
    """
    if not study.auto_close or study.status != Study.OPEN:
        return False
    design = load_design(study)
    if not design.units or len(_counts(study).full(design, study.ratings_per_clip)) < len(design.units):
        return False
    closed = Study.objects.filter(pk=study.pk, status=Study.OPEN, auto_close=True).update(status=Study.CLOSED)
    if closed:
        study.status = Study.CLOSED
    return bool(closed)


def time_out_stale(study: Study, now: datetime) -> int:
    """Time out the study's active participants not seen for ``study.session_timeout_minutes``; how many."""
    cutoff = now - timedelta(minutes=study.session_timeout_minutes)
    stale = Q(last_seen_at__lt=cutoff) | Q(last_seen_at__isnull=True, created_at__lt=cutoff)
    active = Participant.objects.filter(study=study, state__in=(Participant.STARTED, Participant.IN_PROGRESS))
    return active.filter(stale).update(state=Participant.TIMED_OUT, ended_at=now)


def issue_assignments(participant: Participant) -> list[Assignment]:
    """Give a participant their trials (or top them up). Call inside ``admit``'s transaction (Study row locked).

    Raises ``StudyNotReady`` without a ready test unit, ``StudyFull`` when every one is full, and
    ``StudyNotReady`` when a participant without test trials would get none (nothing fits).
    """
    study = participant.study
    design, counts = load_design(study), _counts(study)
    _check_open(study, design, counts)
    stored = list(participant.assignments.order_by("position").values_list(
        "study_clip_id", "paired_study_clip_id", "role", "position"))
    given = [t for t in (design.trial(sc, paired, role) for sc, paired, role, _ in stored) if t is not None]
    plan = plan_trials(
        design, counts.coverage(design), study_seed=study.seed, participant_seed=participant.seed,
        full=counts.full(design, study.ratings_per_clip), gold_coverage=counts.gold_coverage(design), given=given,
    )
    if not any(t.role == TEST for t in plan) and not any(role == TEST for _, _, role, _ in stored):
        raise StudyNotReady(f"no test unit of study {study.pk} fits {study.clips_per_participant} trials")
    start = stored[-1][3] + 1 if stored else 0
    rows = [
        Assignment(participant=participant, study_clip_id=t.study_clip, paired_study_clip_id=t.paired_study_clip,
                   role=t.role, position=start + i)
        for i, t in enumerate(plan)
    ]
    return Assignment.objects.bulk_create(rows)


def enroll(
    study: Study, *, external_id: str = "", external_study_id: str = "", external_session_id: str = "",
    user_agent: str = "", viewport: str = "",
) -> tuple[Participant, bool]:
    """Create a consenting participant (state started, no clips yet), or find the one with this external id.

    Returns ``(participant, created)``; raises ``StudyNotReady`` without a ready test unit, and its
    ``StudyFull`` when every one of them is full. Trials are issued by ``admit`` once the participant
    has passed the environment check. The Study row is locked, which serializes concurrent starts.
    """
    try:
        with transaction.atomic():
            Study.objects.select_for_update().only("pk").get(pk=study.pk)
            existing = _by_external_id(study, external_id)
            if existing is not None:
                return existing, False
            now = timezone.now()
            time_out_stale(study, now)
            _check_open(study, load_design(study), _counts(study))
            participant = Participant.objects.create(
                study=study, external_id=external_id, external_study_id=external_study_id[:100],
                external_session_id=external_session_id[:100], user_agent=user_agent[:500], viewport=viewport[:40],
                state=Participant.STARTED, consented_at=now, last_seen_at=now,
            )
    except IntegrityError:
        # Only reachable where the database ignores row locks (SQLite): the same external id won a race.
        existing = _by_external_id(study, external_id)
        if existing is None:
            raise
        return existing, False
    return participant, True


def admit(participant: Participant) -> list[Assignment]:
    """Issue a started participant's trials and put them in progress (after the environment check).

    Idempotent: a participant already in progress keeps their trials. Raises ``StudyNotReady`` /
    ``StudyFull`` when nothing is left to hand out (the participant stays started). The Study row is
    locked for the whole transaction, so coverage is read and written by one participant at a time.
    A fixed number of queries, whatever the size of the study.
    """
    with transaction.atomic():
        Study.objects.select_for_update().only("pk").get(pk=participant.study_id)
        locked = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
        if locked.state != Participant.STARTED:
            return list(locked.assignments.order_by("position"))
        now = timezone.now()
        time_out_stale(locked.study, now)
        issued = issue_assignments(locked)
        locked.state, locked.last_seen_at = Participant.IN_PROGRESS, now
        locked.save(update_fields=["state", "last_seen_at"])
    participant.refresh_from_db()
    return issued


def _check_open(study: Study, design: Design, counts: _Counts) -> None:
    if not design.units:
        raise StudyNotReady(f"study {study.pk} has no ready test unit")
    if len(counts.full(design, study.ratings_per_clip)) == len(design.units):
        raise StudyFull(f"every test unit of study {study.pk} has its {study.ratings_per_clip} ratings")


def _by_external_id(study: Study, external_id: str) -> Participant | None:
    if not external_id:
        return None
    return Participant.objects.filter(study=study, external_id=external_id).first()


def next_assignment(participant: Participant) -> Assignment | None:
    """The first assignment (by position) still waiting for its ratings."""
    return participant.assignments.filter(completed_at__isnull=True).order_by("position").first()
