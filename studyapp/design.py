"""Study design workflows for researchers (admin actions and management commands call these).

``problems_before_opening`` lists what would make an open study fail its participants or its method;
the admin's "open" action must refuse while the list is not empty. The unit rules are
:mod:`studyapp.assignment`'s own (``build_design``), so what is checked here is what will be handed out.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from studyapp import assignment
from studyapp.models import RATING_MAX, RATING_MIN, ExpectedAnswer, Study, StudyClip

N_LABELS = RATING_MAX - RATING_MIN + 1
METHOD_NAMES = dict(Study.METHOD_CHOICES)


def create_study_from_clips(*, title: str, clips: Iterable, created_by=None, role: str = StudyClip.ROLE_TEST,
                            **fields) -> Study:
    """A draft study with the default scales of its method (``fields["method"]``, ACR by default) and the
    given clips in ``role``."""
    with transaction.atomic():
        study = Study.objects.create(title=title, created_by=created_by, **fields)
        study.add_default_scales()
        StudyClip.objects.bulk_create([StudyClip(study=study, clip=clip, role=role) for clip in clips])
    return study


def problems_before_opening(study: Study) -> list[str]:
    """Human-readable reasons the study must not be opened yet; empty when it may open."""
    problems = _scale_problems(study)
    rows = assignment.clip_rows(study)
    design = assignment.build_design(rows, assignment.Rules.of(study))
    tests = [r for r in rows if r.role == StudyClip.ROLE_TEST]
    method = study.method

    if method == Study.METHOD_DCR:
        without = sum(not r.reference_ready for r in tests)
        if without:
            problems.append(f"{_n(without, 'ready test clip has', 'ready test clips have')} no ready reference "
                            "clip: DCR shows every clip after its reference.")
    if method == Study.METHOD_ACR_HR:
        missing = len({design.clips[u.trial.study_clip].item for u in design.units if u.companion is None})
        if missing:
            items = _n(missing, "content item (face and sentence) has", "content items (face and sentence) have")
            problems.append(f"{items} no ready hidden-reference test clip in the study: ACR-HR rates every clip "
                            "against the hidden reference of its item.")
        if study.clips_per_participant < 2:
            problems.append("ACR-HR needs at least 2 clips per participant: each processed clip comes with its "
                            "hidden reference.")
    if not design.units:
        problems.append(_no_unit(method))

    unshowable = len(design.unshowable)
    if unshowable and method == Study.METHOD_DCR:
        problems.append(f"{_n(unshowable, 'gold or practice clip has', 'gold or practice clips have')} no ready "
                        "reference clip: DCR shows every clip after its reference.")
    if unshowable and method == Study.METHOD_PAIRWISE:
        problems.append(f"{_n(unshowable, 'gold or practice clip has', 'gold or practice clips have')} no other ready "
                        "clip of the same face and sentence in another condition to be compared with.")

    if study.gold_per_participant > len(design.gold):
        problems.append(f"{study.gold_per_participant} gold clips per participant, but the study has "
                        f"{_n(len(design.gold), 'ready gold clip', 'ready gold clips')} that can be shown.")
    problems.extend(_expected_answer_problems(study))

    if design.units:
        most = assignment.most_test_trials(design)
        if most < study.clips_per_participant:
            limited = study.content_limit != Study.LIMIT_NONE
            why = "under the content limit" if limited else "with the study's test clips"
            fix = "relax the content limit or add clips" if limited else "or add clips"
            problems.append(f"A participant can get at most {_n(most, 'test trial', 'test trials')} {why}, fewer "
                            f"than the {study.clips_per_participant} clips per participant: lower clips per "
                            f"participant, {fix}.")
    return problems


def _scale_problems(study: Study) -> list[str]:
    scales = list(study.scales.all())
    if not scales:
        return ["The study has no scales: add at least one question (e.g. sync, visual, overall)."]
    return [f"Scale “{scale.key}” has {len(scale.labels) if isinstance(scale.labels, list) else 0} labels; "
            f"every scale needs exactly {N_LABELS}, worst first."
            for scale in scales if not isinstance(scale.labels, list) or len(scale.labels) != N_LABELS]


def _expected_answer_problems(study: Study) -> list[str]:
    answered = set(ExpectedAnswer.objects.filter(study_clip__study=study).values_list("study_clip_id", flat=True))
    problems = []
    for role, what in ((StudyClip.ROLE_GOLD, "gold"), (StudyClip.ROLE_PRACTICE, "practice")):
        ids = StudyClip.objects.filter(study=study, role=role).values_list("id", flat=True)
        without = sum(pk not in answered for pk in ids)
        if without:
            problems.append(f"{_n(without, what + ' clip has', what + ' clips have')} no expected answer: give at "
                            "least one scale an expected range.")
    return problems


def _no_unit(method: str) -> str:
    if method == Study.METHOD_DCR:
        return "No ready test clip with a ready reference: DCR has nothing to show."
    if method == Study.METHOD_ACR_HR:
        return "No ready processed test clip (a condition other than the hidden reference): ACR-HR has nothing to rate."
    if method == Study.METHOD_PAIRWISE:
        return ("No pair to compare: pairwise needs two ready test clips of the same face and sentence in different "
                "conditions.")
    return "No ready test clip: add test clips whose media is ready."


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
