"""Balanced, blind assignment of clips to participants.

A new participant gets ``study.clips_per_participant`` test clips, least-covered first, in a personal
random order:

1. Participants of the study not seen for ``study.session_timeout_minutes`` are timed out.
2. Coverage of a study clip = its assignments held by participants who still count (completed or in
   progress; ``Participant.INACTIVE_STATES`` — screened out, returned, timed out — free their clips).
   A clip with ``study.ratings_per_clip`` completed assignments that count is full (the stop rule)
   and no longer handed out; with fewer open clips than asked for, the participant gets what is left.
3. Pick the least-covered open test clips; ties are broken by a random key drawn from the
   participant's seed, so two participants with equal coverage in front of them get different clips.
4. Order the picked clips with a seeded Fisher–Yates shuffle and store the positions.

Steps 3 and 4 are pure functions (``select_least_covered``, ``seeded_shuffle``) so they can be tested
without a database. ``enroll`` runs the whole thing in one transaction that locks the Study row, so
concurrent starts are serialized and coverage never differs by more than one across clips.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from generation.models import Clip
from studyapp.models import Assignment, Participant, Study, StudyClip

T = TypeVar("T")


class StudyNotReady(Exception):
    """The study has no ready test clip to hand out."""


class StudyFull(StudyNotReady):
    """Every ready test clip of the study has its ``ratings_per_clip`` completed ratings."""


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
    """Which study clips a participant gets, in presentation order (pure)."""
    picked = select_least_covered(coverage, k, participant_rng(study_seed, participant_seed, "select"), exclude)
    # Shuffle from a fixed order so the presentation order does not depend on the selection ranking.
    return seeded_shuffle(sorted(picked), participant_rng(study_seed, participant_seed, "order"))


def eligible_study_clips(study: Study):
    """Test clips of the study whose media is ready."""
    return StudyClip.objects.filter(study=study, role=StudyClip.ROLE_TEST, clip__status=Clip.READY)


def _counted(study: Study):
    """Assignments of the study's ready test clips held by participants who still count."""
    return Assignment.objects.filter(study_clip__in=eligible_study_clips(study)).exclude(
        participant__state__in=Participant.INACTIVE_STATES
    )


def coverage_of(study: Study) -> dict[int, int]:
    """Study clip id → number of assignments that count (participants not in an inactive state)."""
    coverage = dict.fromkeys(eligible_study_clips(study).values_list("id", flat=True), 0)
    coverage.update(dict(_counted(study).values_list("study_clip_id").annotate(n=Count("id"))))
    return coverage


def full_study_clips(study: Study) -> set[int]:
    """Study clips with ``study.ratings_per_clip`` completed assignments that count: no longer handed out."""
    completed = _counted(study).filter(completed_at__isnull=False).values_list("study_clip_id").annotate(n=Count("id"))
    return {study_clip for study_clip, n in completed if n >= study.ratings_per_clip}


def time_out_stale(study: Study, now: datetime) -> int:
    """Time out the study's active participants not seen for ``study.session_timeout_minutes``; how many."""
    cutoff = now - timedelta(minutes=study.session_timeout_minutes)
    stale = Q(last_seen_at__lt=cutoff) | Q(last_seen_at__isnull=True, created_at__lt=cutoff)
    active = Participant.objects.filter(study=study, state__in=(Participant.STARTED, Participant.IN_PROGRESS))
    return active.filter(stale).update(state=Participant.TIMED_OUT)


def issue_assignments(participant: Participant) -> list[Assignment]:
    """Give a participant their clips. Call inside ``enroll``'s transaction (Study row locked)."""
    study = participant.study
    taken = set(participant.assignments.values_list("study_clip_id", flat=True))
    k = study.clips_per_participant - len(taken)
    exclude = taken | full_study_clips(study)
    plan = plan_assignments(coverage_of(study), k, study.seed, participant.seed, exclude=exclude)
    start = len(taken)
    rows = [Assignment(participant=participant, study_clip_id=sc, position=start + i) for i, sc in enumerate(plan)]
    return Assignment.objects.bulk_create(rows)


def enroll(study: Study, *, external_id: str = "", user_agent: str = "", viewport: str = "") -> tuple[Participant, bool]:
    """Create a consenting participant with their assignments, or find the one with this external id.

    Returns ``(participant, created)``; raises ``StudyNotReady`` without a ready test clip, and its
    ``StudyFull`` when every one of them is full. The Study row is locked for the whole transaction,
    which serializes concurrent starts (coverage is read and written by one participant at a time).
    """
    try:
        with transaction.atomic():
            Study.objects.select_for_update().only("pk").get(pk=study.pk)
            existing = _by_external_id(study, external_id)
            if existing is not None:
                return existing, False
            now = timezone.now()
            time_out_stale(study, now)
            _check_open_clips(study)
            participant = Participant.objects.create(
                study=study, external_id=external_id, user_agent=user_agent[:500], viewport=viewport[:40],
                state=Participant.IN_PROGRESS, consented_at=now, last_seen_at=now,
            )
            issue_assignments(participant)
    except IntegrityError:
        # Only reachable where the database ignores row locks (SQLite): the same external id won a race.
        existing = _by_external_id(study, external_id)
        if existing is None:
            raise
        return existing, False
    return participant, True


def _check_open_clips(study: Study) -> None:
    ready = set(eligible_study_clips(study).values_list("id", flat=True))
    if not ready:
        raise StudyNotReady(f"study {study.pk} has no ready test clip")
    if ready <= full_study_clips(study):
        raise StudyFull(f"every test clip of study {study.pk} has its {study.ratings_per_clip} ratings")


def _by_external_id(study: Study, external_id: str) -> Participant | None:
    if not external_id:
        return None
    return Participant.objects.filter(study=study, external_id=external_id).first()


def next_assignment(participant: Participant) -> Assignment | None:
    """The first assignment (by position) still waiting for its ratings."""
    return participant.assignments.filter(completed_at__isnull=True).order_by("position").first()
