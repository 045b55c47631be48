"""Designing a study: the draft made from clips, and the problems that keep a study from opening."""

from __future__ import annotations

import pytest

from generation.models import Clip
from studyapp.design import create_study_from_clips, problems_before_opening
from studyapp.models import ACR_LABELS, DCR_LABELS, PAIRWISE_LABELS, ExpectedAnswer, Study, StudyClip
from tests.fixtures import make_clip, make_study
from tests.studyapp.test_assignment import add_clips

TEST, GOLD, PRACTICE = StudyClip.ROLE_TEST, StudyClip.ROLE_GOLD, StudyClip.ROLE_PRACTICE
METHODS = [Study.METHOD_ACR, Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE]


@pytest.fixture
def draft(db, clip_files):
    """A draft study of a method with no clips yet (environment check off, 4 clips per participant)."""
    def make(method=Study.METHOD_ACR, per_participant=4, **fields):
        return make_study(clip_files, n_clips=0, per_participant=per_participant, method=method,
                          status=Study.DRAFT, **fields)
    return make


def expect(study_clips, scale_key="overall", low=1, high=2) -> None:
    for study_clip in study_clips:
        scale = study_clip.study.scales.get(key=scale_key)
        ExpectedAnswer.objects.create(study_clip=study_clip, scale=scale, low=low, high=high,
                                      feedback="Look at the lips.")


def only(problems: list[str], *words: str) -> str:
    """The one problem mentioning every word (fails when there is not exactly one)."""
    found = [p for p in problems if all(w in p for w in words)]
    assert len(found) == 1, problems
    return found[0]


# ---- a study that may open ----

@pytest.mark.parametrize("method", METHODS)
def test_a_complete_design_of_each_method_may_open(draft, method):
    study = draft(method, gold_per_participant=1)
    add_clips(study)
    expect(add_clips(study, sources=("face-g",), variants=(0, 2), role=GOLD))
    expect(add_clips(study, sources=("face-p",), variants=(1, 2), role=PRACTICE))
    assert problems_before_opening(study) == []


# ---- scales ----

def test_a_study_needs_scales(draft):
    study = draft()
    add_clips(study)
    study.scales.all().delete()
    assert problems_before_opening(study) == [only(problems_before_opening(study), "no scales")]


def test_every_scale_needs_five_labels(draft):
    study = draft()
    add_clips(study)
    study.scales.filter(key="visual").update(labels=["Bad", "Fair", "Good", "Excellent"])
    assert "4 labels" in only(problems_before_opening(study), "visual")
    assert len(problems_before_opening(study)) == 1


# ---- something to rate ----

def test_an_acr_study_needs_a_ready_test_clip(draft):
    study = draft()
    add_clips(study, status=Clip.RENDERING, reference_status=Clip.RENDERING)
    only(problems_before_opening(study), "No ready test clip")


def test_a_dcr_study_counts_the_test_clips_without_a_ready_reference(draft):
    study = draft(Study.METHOD_DCR)
    add_clips(study, sources=("face-a",))
    add_clips(study, sources=("face-b",), reference_status=Clip.RENDERING)
    assert only(problems_before_opening(study), "reference").startswith("5 ready test clips have no ready reference")


def test_a_dcr_study_without_any_reference_has_nothing_to_show(draft):
    study = draft(Study.METHOD_DCR)
    add_clips(study, variants=(0, 1, 3))
    only(problems_before_opening(study), "DCR has nothing to show")


def test_an_acr_hr_study_counts_the_items_without_their_hidden_reference(draft):
    study = draft(Study.METHOD_ACR_HR)
    add_clips(study, sources=("face-a",))
    add_clips(study, sources=("face-b", "face-c"), variants=(0, 1, 3))
    assert only(problems_before_opening(study), "hidden-reference").startswith("2 content items")


def test_an_acr_hr_study_needs_a_processed_clip(draft):
    study = draft(Study.METHOD_ACR_HR)
    add_clips(study, variants=(2,))
    only(problems_before_opening(study), "No ready processed test clip")


def test_an_acr_hr_study_needs_room_for_a_clip_and_its_reference(draft):
    study = draft(Study.METHOD_ACR_HR, per_participant=1)
    add_clips(study)
    only(problems_before_opening(study), "at least 2 clips per participant")


def test_a_pairwise_study_needs_two_conditions_of_one_item(draft):
    study = draft(Study.METHOD_PAIRWISE)
    add_clips(study, sources=("face-a",), variants=(0,))
    add_clips(study, sources=("face-b",), variants=(1,))
    only(problems_before_opening(study), "No pair to compare")


# ---- gold and practice ----

def test_gold_per_participant_cannot_exceed_the_ready_gold_clips(draft):
    study = draft(gold_per_participant=3)
    add_clips(study)
    expect(add_clips(study, sources=("face-g",), variants=(0, 1), role=GOLD))
    assert only(problems_before_opening(study), "gold clips per participant") == (
        "3 gold clips per participant, but the study has 2 ready gold clips that can be shown.")


def test_gold_and_practice_clips_need_an_expected_answer(draft):
    study = draft(gold_per_participant=1)
    add_clips(study)
    gold = add_clips(study, sources=("face-g",), variants=(0, 1, 3), role=GOLD)
    practice = add_clips(study, sources=("face-p",), variants=(0, 1), role=PRACTICE)
    expect(gold[:1])
    problems = problems_before_opening(study)
    assert only(problems, "gold clips have no expected answer").startswith("2 gold clips")
    assert only(problems, "practice clips have no expected answer").startswith("2 practice clips")
    expect(gold[1:] + practice)
    assert problems_before_opening(study) == []


def test_dcr_gold_and_practice_clips_need_a_ready_reference(draft):
    study = draft(Study.METHOD_DCR)
    add_clips(study)
    expect(add_clips(study, sources=("face-g",), variants=(0, 1), role=GOLD, reference_status=Clip.FAILED))
    assert only(problems_before_opening(study), "gold or practice").startswith("2 gold or practice clips have no ready")


def test_pairwise_gold_and_practice_clips_need_something_to_be_compared_with(draft):
    study = draft(Study.METHOD_PAIRWISE)
    add_clips(study)
    expect(add_clips(study, sources=("face-g",), variants=(0,), role=GOLD))
    expect(add_clips(study, sources=("face-a",), sentences=("lay-red",), variants=(3,), role=PRACTICE))
    assert only(problems_before_opening(study), "compared with").startswith("2 gold or practice clips")


def test_a_pairwise_gold_clip_may_be_compared_with_a_test_clip_of_its_item(draft):
    study = draft(Study.METHOD_PAIRWISE, per_participant=3)
    add_clips(study, sources=("face-a",), variants=(0, 1, 2))
    expect(add_clips(study, sources=("face-a",), variants=(4,), role=GOLD))
    assert problems_before_opening(study) == []


# ---- enough trials for every participant ----

def test_a_content_limit_that_leaves_too_few_trials_says_how_many_a_participant_can_get(draft):
    study = draft(per_participant=4, content_key=Study.CONTENT_SENTENCE, content_limit=Study.LIMIT_ONCE)
    add_clips(study, sentences=("bin-blue", "lay-red"))
    problem = only(problems_before_opening(study), "at most")
    assert problem.startswith("A participant can get at most 2 test trials under the content limit")
    study.content_limit = Study.LIMIT_ONCE_PER_CONDITION
    assert problems_before_opening(study) == []


def test_more_clips_per_participant_than_units_is_a_problem_too(draft):
    study = draft(Study.METHOD_PAIRWISE, per_participant=10)
    add_clips(study, sources=("face-a",), variants=(0, 1, 3))
    assert "at most 3 test trials with the study's test clips" in only(problems_before_opening(study), "at most")


def test_acr_hr_counts_the_references_among_the_trials_a_participant_can_get(draft):
    study = draft(Study.METHOD_ACR_HR, per_participant=4, content_limit=Study.LIMIT_ONCE)
    add_clips(study)  # one processed clip per face under the limit, each with its reference
    assert problems_before_opening(study) == []
    study.clips_per_participant = 5
    assert "at most 4 test trials" in only(problems_before_opening(study), "at most")


# ---- a draft from clips ----

@pytest.mark.parametrize(("method", "labels"), [
    (Study.METHOD_ACR, ACR_LABELS), (Study.METHOD_ACR_HR, ACR_LABELS), (Study.METHOD_DCR, DCR_LABELS),
    (Study.METHOD_PAIRWISE, PAIRWISE_LABELS),
])
def test_a_draft_made_from_clips_gets_the_scales_of_its_method(db, clip_files, method, labels):
    clips = [make_clip(v, clip_files) for v in range(2)]
    study = create_study_from_clips(title="Pilot", clips=clips, method=method)
    assert study.status == Study.DRAFT and study.method == method
    assert [s.key for s in study.scales.all()] == ["sync", "visual", "overall"]
    assert all(s.labels == labels for s in study.scales.all())
    assert sorted(study.study_clips.values_list("clip_id", flat=True)) == [c.id for c in clips]
    assert set(study.study_clips.values_list("role", flat=True)) == {TEST}
