"""The researcher's side in the admin: designing a study from clips, the MOS table and the exports."""

import csv
import io

import pytest
from django.urls import reverse

from analysis.mos import mos_table
from generation.models import Clip, GenerationJob
from studyapp.blinding import find_leaks, forbidden_for_study
from studyapp.models import Scale, Study, StudyClip
from tests.fixtures import make_clip
from tests.studyapp.conftest import start_session

pytestmark = pytest.mark.django_db


def _rate_whole_session(study, values):
    session = start_session(study)
    session.begin()
    for assignment in session.participant.assignments.order_by("position"):
        session.ended(assignment)
        assert session.rate(assignment, values).status_code == 201
    return session


@pytest.fixture
def rated_study(study):
    _rate_whole_session(study, {"sync": 4, "visual": 3, "overall": 5})
    _rate_whole_session(study, {"sync": 2, "visual": 3, "overall": 4})
    return study


def test_it_shows_the_mos_table_with_confidence_intervals_to_researchers(client, alice, rated_study):
    client.force_login(alice)
    response = client.get(reverse("admin:studyapp_study_mos", args=[rated_study.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    rows = {r["condition"]: r for r in response.context["rows"]}
    for condition in rows:
        assert condition in page
    # 2 participants × 4 clips each over 5 clips: every clip rated at least once.
    assert sum(cell["n"] for row in rows.values() for cell in row["cells"][:1] if cell) == 8
    assert response.context["scales"] == ["sync", "visual", "overall"]


def test_it_keeps_the_mos_table_from_outsiders(client, charlie, rated_study):
    client.force_login(charlie)
    response = client.get(reverse("admin:studyapp_study_mos", args=[rated_study.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_it_exports_raw_ratings_exactly_once_each(client, alice, rated_study):
    client.force_login(alice)
    response = client.get(reverse("admin:studyapp_study_ratings_csv", args=[rated_study.pk]))
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 2 * 4 * 3
    assert len({(r["assignment"], r["scale"]) for r in rows}) == len(rows)
    assert {r["scale"] for r in rows} == {"sync", "visual", "overall"}
    assert sorted({r["rating"] for r in rows if r["scale"] == "overall"}) == ["4", "5"]


def test_it_exports_the_mos_table_that_analysis_computes(client, alice, rated_study):
    client.force_login(alice)
    response = client.get(reverse("admin:studyapp_study_mos_csv", args=[rated_study.pk]))
    exported = list(csv.DictReader(io.StringIO(response.content.decode())))
    raw = client.get(reverse("admin:studyapp_study_ratings_csv", args=[rated_study.pk])).content.decode()
    import pandas as pd

    expected = mos_table(pd.read_csv(io.StringIO(raw)))
    assert len(exported) == len(expected)
    for row, want in zip(exported, expected.itertuples(index=False)):
        assert (row["condition"], row["scale"], int(row["n"])) == (want.condition, want.scale, want.n)
        assert float(row["mos"]) == pytest.approx(want.mos, abs=1e-4)
        if want.n > 1:
            assert float(row["ci_half_width"]) == pytest.approx(want.ci_half_width, abs=1e-4)


STUDY_FORM = {
    "title": "Pilot", "status": "draft", "method": "acr", "consent_text": "ok", "instructions": "watch",
    "clips_per_participant": 6, "ratings_per_clip": 10, "session_timeout_minutes": 90, "seed": 7,
    "completion_code": "", "completion_url": "", "scales-TOTAL_FORMS": 0, "scales-INITIAL_FORMS": 0,
    "study_clips-TOTAL_FORMS": 0, "study_clips-INITIAL_FORMS": 0,
}


def test_it_gives_a_new_study_the_three_acr_scales(client, alice):
    client.force_login(alice)
    response = client.post(reverse("admin:studyapp_study_add"), STUDY_FORM)
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(title="Pilot")
    scales = list(study.scales.order_by("position"))
    assert [s.key for s in scales] == ["sync", "visual", "overall"]
    assert all(s.labels == ["Bad", "Poor", "Fair", "Good", "Excellent"] for s in scales)
    assert study.session_timeout_minutes == 90


@pytest.mark.parametrize("method", [Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE])
def test_it_refuses_to_create_a_study_with_a_method_not_implemented_yet(client, alice, method):
    client.force_login(alice)
    response = client.post(reverse("admin:studyapp_study_add"), {**STUDY_FORM, "method": method})
    assert response.status_code == 200
    assert "is not available yet; only ACR is implemented" in response.content.decode()
    assert not Study.objects.exists()


def test_it_adds_only_ready_clips_to_a_study_from_the_clip_list(client, alice, clip_files):
    client.force_login(alice)
    study = Study.objects.create(title="Empty")
    ready = make_clip(0, clip_files)
    broken = make_clip(1, clip_files, status=Clip.FAILED)
    response = client.post(reverse("admin:generation_clip_changelist"), {
        "action": "add_to_study", "_selected_action": [ready.pk, broken.pk], "apply": "1",
        "study": study.pk, "role": StudyClip.ROLE_TEST,
    })
    assert response.status_code == 302
    assert list(study.study_clips.values_list("clip_id", flat=True)) == [ready.pk]


def test_it_makes_a_draft_study_from_a_finished_job(client, alice, clip_files):
    client.force_login(alice)
    job = GenerationJob.objects.create(name="wav2lip vs lipgan pilot clips", status=GenerationJob.DONE)
    clips = [make_clip(v, clip_files) for v in range(3)]
    job.clips.add(*clips)
    response = client.post(reverse("admin:generation_generationjob_changelist"),
                           {"action": "make_study", "_selected_action": [job.pk]})
    assert response.status_code == 302
    study = Study.objects.get()
    assert study.status == Study.DRAFT
    assert study.study_clips.count() == 3 and Scale.objects.filter(study=study).count() == 3
    # Participants see the title: it must not name the job (which often names the models).
    assert study.title == "New study (draft) — rename before opening"
    assert find_leaks([study.title], forbidden_for_study(study)) == []


def test_it_lets_researchers_preview_a_clip_but_not_outsiders(client, alice, charlie, clip_files):
    clip = make_clip(0, clip_files)
    url = reverse("admin:generation_clip_preview", args=[clip.pk])
    client.force_login(charlie)
    assert client.get(url).status_code == 302
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "video/mp4"
    assert b"".join(response.streaming_content) == clip_files[0].path.read_bytes()


def test_it_opens_only_studies_that_pass_validation(client, alice):
    client.force_login(alice)
    good = Study.objects.create(title="ACR study")
    bad = Study.objects.create(title="DCR study", method=Study.METHOD_DCR)
    client.post(reverse("admin:studyapp_study_changelist"),
                {"action": "open_studies", "_selected_action": [good.pk, bad.pk]})
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, bad.status) == (Study.OPEN, Study.DRAFT)
