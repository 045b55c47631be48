"""Stored ratings become one tidy long DataFrame for the statistics."""

import pytest

from analysis.data import RATING_COLUMNS, ratings_frame
from studyapp.models import Participant, StudyClip
from tests.fixtures import make_study
from tests.studyapp.conftest import start_session

pytestmark = pytest.mark.django_db


def _finish(study, values):
    session = start_session(study)
    session.begin()
    for assignment in session.participant.assignments.order_by("position"):
        session.ended(assignment)
        session.rate(assignment, values)
    return session.participant


def test_it_has_one_row_per_rating_with_condition_and_content(clip_files):
    study = make_study(clip_files)
    participant = _finish(study, {"sync": 5, "visual": 4, "overall": 3})
    frame = ratings_frame(study)
    assert list(frame.columns) == RATING_COLUMNS
    assert len(frame) == 4 * 3
    assert set(frame["participant"]) == {participant.pk}
    assert dict(zip(frame["scale"], frame["rating"])) == {"sync": 5, "visual": 4, "overall": 3}
    clips = {sc.clip_id: sc.clip for sc in StudyClip.objects.filter(study=study).select_related("clip__condition")}
    for row in frame.itertuples():
        assert row.condition == clips[row.clip].condition.name
        assert row.content == clips[row.clip].source.content_id


def test_it_leaves_out_screened_out_participants_and_non_test_clips(clip_files):
    study = make_study(clip_files)
    kept = _finish(study, {"sync": 5, "visual": 4, "overall": 3})
    dropped = _finish(study, {"sync": 1, "visual": 1, "overall": 1})
    Participant.objects.filter(pk=dropped.pk).update(state=Participant.SCREENED_OUT)
    assert set(ratings_frame(study)["participant"]) == {kept.pk}
    StudyClip.objects.filter(study=study).update(role=StudyClip.ROLE_PRACTICE)
    assert ratings_frame(study).empty
    assert len(ratings_frame(study, roles=("practice",))) == 12
