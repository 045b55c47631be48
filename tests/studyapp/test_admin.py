"""The researcher's side in the admin: designing a study from clips, the MOS table and the exports."""

import csv
import io
import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from analysis.mos import mos_table
from generation.models import Clip, GenerationJob
from studyapp.blinding import find_leaks, forbidden_for_study
from studyapp.models import Participant, Scale, Study, StudyClip
from tests.fixtures import make_clip, make_study
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
    "completion_code": "", "completion_url": "", "screened_out_code": "", "content_key": "item",
    "content_limit": "none", "no_condition_twice_in_a_row": "on", "gold_per_participant": 0,
    "gold_failures_allowed": 0, "target_ci_half_width": "", "min_viewport_width": 800, "min_viewport_height": 500,
    "min_face_px": 150, "face_height_share": 0.5, "audio_check": "on", "request_fullscreen": "on",
    "scales-TOTAL_FORMS": 0, "scales-INITIAL_FORMS": 0,
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


@pytest.mark.parametrize("method, labels", [
    (Study.METHOD_ACR_HR, ["Bad", "Poor", "Fair", "Good", "Excellent"]),
    (Study.METHOD_DCR, ["Very annoying", "Annoying", "Slightly annoying", "Perceptible but not annoying",
                        "Imperceptible"]),
    (Study.METHOD_PAIRWISE, ["A much better", "A slightly better", "About the same", "B slightly better",
                             "B much better"]),
])
def test_it_gives_a_new_study_the_scales_of_its_method(client, alice, method, labels):
    client.force_login(alice)
    response = client.post(reverse("admin:studyapp_study_add"), {**STUDY_FORM, "method": method})
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(title="Pilot")
    scales = list(study.scales.order_by("position"))
    assert [s.key for s in scales] == ["sync", "visual", "overall"]
    assert all(s.labels == labels for s in scales)


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


def test_it_opens_only_studies_that_pass_validation(client, alice, clip_files, monkeypatch):
    from studyapp import environment

    # Measuring faces (dlib) is environment's own test; here only whether the study opens matters.
    monkeypatch.setattr(environment, "measure_face_height_share", lambda study: None)
    client.force_login(alice)
    good = make_study(clip_files, n_clips=4, status=Study.DRAFT)
    bad = Study.objects.create(title="Impossible face share", face_height_share=2.0)
    empty = Study.objects.create(title="No clips yet")
    empty.add_default_scales()
    response = client.post(reverse("admin:studyapp_study_changelist"),
                           {"action": "open_studies", "_selected_action": [good.pk, bad.pk, empty.pk]}, follow=True)
    for study in (good, bad, empty):
        study.refresh_from_db()
    assert (good.status, bad.status, empty.status) == (Study.OPEN, Study.DRAFT, Study.DRAFT)
    # design.problems_before_opening's reasons reach the researcher.
    from studyapp.design import problems_before_opening

    problems = problems_before_opening(empty)
    assert problems and f"No clips yet: not opened — {'; '.join(problems)}" in response.content.decode()


# --------------------------------------------------------------------------------------------------
# Monitoring pages, review and closing


@pytest.fixture
def monitored_study(study):
    """Two careful participants and a straight-liner who gives 3 to everything."""
    _rate_whole_session(study, {"sync": 4, "visual": 3, "overall": 5})
    _rate_whole_session(study, {"sync": 2, "visual": 4, "overall": 3})
    liner = _rate_whole_session(study, {"sync": 3, "visual": 3, "overall": 3}).participant
    # Four clips are too few for the straight-lining rule (5): give them a fifth answer.
    from studyapp.models import Assignment, Rating

    extra = Assignment.objects.create(participant=liner, study_clip=study.study_clips.exclude(
        pk__in=liner.assignments.values("study_clip")).first(), position=4, completed_at=timezone.now())
    Rating.objects.bulk_create([Rating(assignment=extra, scale=s, value=3, client_uuid=uuid.uuid4(),
                                       response_time_ms=900) for s in study.scales.all()])
    study.liner = liner
    return study


def test_the_monitor_page_shows_every_section_to_researchers(client, alice, monitored_study):
    client.force_login(alice)
    response = client.get(reverse("admin:studyapp_study_monitor", args=[monitored_study.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    for heading in ("Live MOS ± 95% CI", "Coverage", "Rating times", "Gold checks", "Flagged participants",
                    "Closing"):
        assert heading in page
    # Researcher side: condition names, not blind labels.
    for condition in monitored_study.study_clips.values_list("clip__condition__name", flat=True):
        assert condition in page
    monitor = response.context["monitor"]
    flagged = {f.participant_id: f for f in monitor["flags"]}
    assert "straight_lining" in flagged[monitored_study.liner.pk].kinds
    assert f'name="participant" value="{monitored_study.liner.pk}"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    # No target: the close button is off.
    assert not monitor["ready"] and 'value="Close the study" disabled' in page


def test_the_monitor_page_reloads_itself_only_when_asked(client, alice, monitored_study):
    client.force_login(alice)
    url = reverse("admin:studyapp_study_monitor", args=[monitored_study.pk])
    assert 'http-equiv="refresh"' not in client.get(url).content.decode()
    assert '<meta http-equiv="refresh" content="30">' in client.get(url + "?refresh=30").content.decode()
    assert '<meta http-equiv="refresh" content="10">' in client.get(url + "?refresh=1").content.decode()


def test_the_top_up_page_lists_missing_clips_and_participants_needed(client, alice, monitored_study):
    monitored_study.target_ci_half_width = 0.5
    monitored_study.save()
    client.force_login(alice)
    response = client.get(reverse("admin:studyapp_study_top_up", args=[monitored_study.pk]))
    assert response.status_code == 200
    top = response.context["top_up"]
    # 5 clips, ratings_per_clip 15: every clip is short.
    assert len(top["missing_units"]) == 5 and top["coverage"]["missing"] == 5 * 15 - (4 + 4 + 5)
    assert {r["scale"] for r in top["precision"]} == {"sync", "visual", "overall"}
    assert "more participants" in response.content.decode()


@pytest.mark.parametrize("name", ["monitor", "top_up"])
def test_monitoring_pages_are_kept_from_outsiders(client, charlie, monitored_study, name):
    client.force_login(charlie)
    response = client.get(reverse(f"admin:studyapp_study_{name}", args=[monitored_study.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_outsiders_cannot_review_or_close(client, charlie, monitored_study):
    client.force_login(charlie)
    liner = monitored_study.liner
    response = client.post(reverse("admin:studyapp_study_review", args=[monitored_study.pk]),
                           {"participant": liner.pk, "review": "rejected"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    monitored_study.target_ci_half_width = 100.0
    monitored_study.save()
    client.post(reverse("admin:studyapp_study_close", args=[monitored_study.pk]))
    liner.refresh_from_db()
    monitored_study.refresh_from_db()
    assert liner.review == "" and monitored_study.status == Study.OPEN


@pytest.mark.parametrize("review", [Participant.REVIEW_ACCEPTED, Participant.REVIEW_USED, Participant.REVIEW_REJECTED])
def test_the_review_buttons_record_the_decision(client, alice, monitored_study, review):
    client.force_login(alice)
    liner = monitored_study.liner
    response = client.post(reverse("admin:studyapp_study_review", args=[monitored_study.pk]),
                           {"participant": liner.pk, "review": review, "note": "3 to everything"})
    assert response.status_code == 302
    monitor = reverse("admin:studyapp_study_monitor", args=[monitored_study.pk])
    assert response["Location"].endswith(monitor + "#flagged")
    liner.refresh_from_db()
    assert (liner.review, liner.review_note) == (review, "3 to everything") and liner.reviewed_at is not None
    # Rejected and set-aside ratings leave the live MOS; "used" ones stay.
    from studyapp import monitoring

    counted = monitoring.valid_ratings(monitored_study)["participant"].unique()
    assert (liner.pk in counted) == (review == Participant.REVIEW_USED)


def test_the_review_endpoint_takes_only_posts_about_this_studys_participants(client, alice, monitored_study):
    client.force_login(alice)
    url = reverse("admin:studyapp_study_review", args=[monitored_study.pk])
    assert client.get(url).status_code == 405
    other = Study.objects.create(title="Another study", status=Study.OPEN)
    stranger = Participant.objects.create(study=other)
    assert client.post(url, {"participant": stranger.pk, "review": "rejected"}).status_code == 404
    client.post(url, {"participant": monitored_study.liner.pk, "review": "maybe"})
    monitored_study.liner.refresh_from_db()
    assert monitored_study.liner.review == ""


def test_the_close_button_closes_only_once_every_interval_is_under_the_target(client, alice, monitored_study):
    from studyapp import monitoring

    client.force_login(alice)
    url = reverse("admin:studyapp_study_close", args=[monitored_study.pk])
    widest = float(monitoring.live_mos(monitored_study)["ci_half_width"].max())
    monitored_study.target_ci_half_width = widest
    monitored_study.save()
    response = client.post(url, follow=True)
    monitored_study.refresh_from_db()
    assert monitored_study.status == Study.OPEN
    assert "Not closed" in response.content.decode()
    monitored_study.target_ci_half_width = widest + 0.01
    monitored_study.save()
    page = client.get(reverse("admin:studyapp_study_monitor", args=[monitored_study.pk])).content.decode()
    assert 'value="Close the study" >' in page or 'value="Close the study">' in page
    client.post(url)
    monitored_study.refresh_from_db()
    assert monitored_study.status == Study.CLOSED


def test_the_study_list_and_page_link_to_the_monitor(client, alice, study):
    client.force_login(alice)
    monitor = reverse("admin:studyapp_study_monitor", args=[study.pk])
    assert monitor in client.get(reverse("admin:studyapp_study_changelist")).content.decode()
    page = client.get(reverse("admin:studyapp_study_change", args=[study.pk])).content.decode()
    assert monitor in page and reverse("admin:studyapp_study_top_up", args=[study.pk]) in page
    for section in ("Design and method", "Assignment rules", "Environment check", "Prolific and completion",
                    "Monitoring"):
        assert section in page


# --------------------------------------------------------------------------------------------------
# Opening


def test_opening_refuses_a_study_with_design_problems_and_lists_them(client, alice, clip_files, monkeypatch):
    from studyapp import design, environment

    study = make_study(clip_files, n_clips=2, status=Study.DRAFT)
    monkeypatch.setattr(design, "problems_before_opening",
                        lambda s: ["no gold clip for 1 gold per participant", "pairwise needs two conditions"],
                        raising=False)
    monkeypatch.setattr(environment, "measure_face_height_share", lambda s: 0.42, raising=False)
    client.force_login(alice)
    response = client.post(reverse("admin:studyapp_study_changelist"),
                           {"action": "open_studies", "_selected_action": [study.pk]}, follow=True)
    study.refresh_from_db()
    assert study.status == Study.DRAFT and study.face_height_share == 0.5
    assert "no gold clip for 1 gold per participant; pairwise needs two conditions" in response.content.decode()


def test_opening_measures_the_face_height_share(client, alice, clip_files, monkeypatch):
    from studyapp import design, environment

    measured = make_study(clip_files, n_clips=2, status=Study.DRAFT)
    kept = Study.objects.create(title="Same clips", status=Study.DRAFT)
    StudyClip.objects.bulk_create([StudyClip(study=kept, clip=sc.clip) for sc in measured.study_clips.all()])
    monkeypatch.setattr(design, "problems_before_opening", lambda s: [], raising=False)
    monkeypatch.setattr(environment, "measure_face_height_share", lambda s: 0.42 if s.pk == measured.pk else None,
                        raising=False)
    client.force_login(alice)
    client.post(reverse("admin:studyapp_study_changelist"),
                {"action": "open_studies", "_selected_action": [measured.pk, kept.pk]})
    measured.refresh_from_db()
    kept.refresh_from_db()
    assert (measured.status, measured.face_height_share) == (Study.OPEN, 0.42)
    assert (kept.status, kept.face_height_share) == (Study.OPEN, 0.5)


# --------------------------------------------------------------------------------------------------
# Participants and expected answers


def test_the_participant_page_shows_the_effective_order_environment_and_review(client, alice, study):
    session = start_session(study)
    session.begin()
    participant = session.participant
    participant.environment = {"viewport": [1280, 800], "face_px": 212}
    participant.external_study_id, participant.external_session_id = "study-7", "session-9"
    participant.save()
    client.force_login(alice)
    response = client.get(reverse("admin:studyapp_participant_change", args=[participant.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "effective order" in page.lower()
    for assignment in participant.assignments.select_related("study_clip__clip__condition"):
        assert assignment.study_clip.clip.condition.name in page
    assert "&quot;face_px&quot;: 212" in page and "session-9" in page and "study-7" in page
    assert "first_choice_ms" in page or "First choice ms" in page


@pytest.mark.parametrize("action, review", [("accept_participants", "accepted"),
                                            ("accept_and_use_participants", "used"),
                                            ("reject_participants", "rejected")])
def test_participant_review_actions(client, alice, study, action, review):
    participant = start_session(study).participant
    client.force_login(alice)
    response = client.post(reverse("admin:studyapp_participant_changelist"),
                           {"action": action, "_selected_action": [participant.pk]})
    assert response.status_code == 302
    participant.refresh_from_db()
    assert participant.review == review and participant.reviewed_at is not None


def _expected_answer_form(study_clip, scale, low, high, feedback=""):
    return {
        "study": study_clip.study_id, "clip": study_clip.clip_id, "role": study_clip.role,
        "expected_answers-TOTAL_FORMS": 1, "expected_answers-INITIAL_FORMS": 0,
        "expected_answers-0-scale": scale.pk, "expected_answers-0-low": low, "expected_answers-0-high": high,
        "expected_answers-0-feedback": feedback,
    }


def test_a_gold_clip_gets_expected_answers_on_its_own_studys_scales(client, alice, study):
    gold = study.study_clips.first()
    gold.role = StudyClip.ROLE_GOLD
    gold.save()
    sync = study.scales.get(key="sync")
    client.force_login(alice)
    url = reverse("admin:studyapp_studyclip_change", args=[gold.pk])
    page = client.get(url).content.decode()
    assert "expected answers (practice and gold" in page.lower()
    response = client.post(url, _expected_answer_form(gold, sync, 1, 2, "The lips lag the voice."))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert [(a.scale.key, a.low, a.high, a.feedback) for a in gold.expected_answers.all()] == [
        ("sync", 1, 2, "The lips lag the voice.")]
    # Another study's scale, an upside-down range, or a test clip: refused.
    other = Study.objects.create(title="Another study")
    other.add_default_scales()
    other_scale = other.scales.get(key="sync")
    refused = client.post(url, {**_expected_answer_form(gold, other_scale, 1, 2), "expected_answers-INITIAL_FORMS": 0})
    assert refused.status_code == 200
    visual = study.scales.get(key="visual")
    assert client.post(url, _expected_answer_form(gold, visual, 4, 2)).status_code == 200
    test_clip = study.study_clips.filter(role=StudyClip.ROLE_TEST).first()
    response = client.post(reverse("admin:studyapp_studyclip_change", args=[test_clip.pk]),
                           _expected_answer_form(test_clip, visual, 3, 5))
    assert response.status_code == 200 and "practice and gold clips" in response.content.decode()
    assert gold.expected_answers.count() == 1 and not test_clip.expected_answers.exists()


def test_the_review_buttons_need_the_csrf_token(alice, monitored_study):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    response = browser.post(reverse("admin:studyapp_study_review", args=[monitored_study.pk]),
                            {"participant": monitored_study.liner.pk, "review": "rejected"})
    assert response.status_code == 403
    monitored_study.liner.refresh_from_db()
    assert monitored_study.liner.review == ""


def test_a_face_measurement_failure_still_opens_the_study_with_a_warning(client, alice, clip_files, monkeypatch):
    from generation.media import MediaError
    from studyapp import design, environment

    study = make_study(clip_files, n_clips=2, status=Study.DRAFT)
    monkeypatch.setattr(design, "problems_before_opening", lambda s: [], raising=False)

    def broken(s):
        raise MediaError("cannot take the middle frame")

    monkeypatch.setattr(environment, "measure_face_height_share", broken, raising=False)
    client.force_login(alice)
    response = client.post(reverse("admin:studyapp_study_changelist"),
                           {"action": "open_studies", "_selected_action": [study.pk]}, follow=True)
    study.refresh_from_db()
    assert (study.status, study.face_height_share) == (Study.OPEN, 0.5)
    assert "could not measure the face height share (cannot take the middle frame)" in response.content.decode()
