"""Reports from Django: the admin action (Celery task, eager here), the management command, downloads, the
planning page, and who may see any of it (staff only; never linked from the participant site)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from analysis import services
from analysis.data import ratings_frame, study_clip_metrics
from analysis.models import StudyReport
from analysis.report import build_report
from generation.models import Audio, Clip, ClipMetric, Condition, ConditionMetric, Source
from studyapp.blinding import find_leaks
from studyapp.models import Assignment, Participant, Rating, Study, StudyClip

pytestmark = pytest.mark.django_db

# (name, kind, control, architecture, quality): revealing names, so a leak has something to show.
CONDITIONS = [
    ("Hidden reference (ground truth)", Condition.KIND_REFERENCE, "", "", 1.2),
    ("Wav2Lip GAN checkpoint", Condition.KIND_MODEL, "", "wav2lip", 0.4),
    ("LipGAN baseline", Condition.KIND_MODEL, "", "lipgan", -0.3),
    ("frozen_mouth control", Condition.KIND_CONTROL, "frozen_mouth", "", -1.1),
]
N_CONTENTS = 4


def make_rated_study(n_participants: int = 10, per_participant: int = 10, seed: int = 0) -> Study:
    """A study built with the ORM: 4 conditions × 4 contents, every participant rating a random subset of the
    16 clips on the three default scales (ratings inserted directly), clip metrics and a condition metric."""
    rng = np.random.default_rng(seed)
    study = Study.objects.create(title="Lip-sync pilot", status=Study.OPEN, clips_per_participant=per_participant)
    study.add_default_scales()
    scales = list(study.scales.order_by("position"))
    clips, quality = [], []
    references = {}
    for c, (name, kind, control, architecture, effect) in enumerate(CONDITIONS):
        condition = Condition.objects.create(name=name, kind=kind, control=control, architecture=architecture)
        for k in range(N_CONTENTS):
            audio, _ = Audio.objects.get_or_create(name=f"sentence-{k}.wav", defaults={
                "content_id": f"sentence-{k}", "file": f"audio/sentence-{k}.wav", "sample_rate": 16000, "duration": 1})
            source, _ = Source.objects.get_or_create(name=f"speaker-{k}.mp4", defaults={
                "identity": f"speaker-{k}", "content_id": f"sentence-{k}", "file": f"sources/s{k}.mp4",
                "own_audio": audio})
            clip = Clip.objects.create(condition=condition, source=source, audio=audio, status=Clip.READY,
                                       duration=1.0, fps=25, n_frames=25, width=96, height=96,
                                       reference=references.get(k))
            if kind == Condition.KIND_REFERENCE:
                references[k] = clip
            StudyClip.objects.create(study=study, clip=clip)
            clip_quality = effect + rng.normal(0.0, 0.2)
            ClipMetric.objects.create(clip=clip, name="lse_c", value=6.0 + 2.0 * clip_quality + rng.normal(0, 0.2),
                                      version="1")
            ClipMetric.objects.create(clip=clip, name="ssim", value=0.8 + rng.normal(0, 0.02), version="1")
            ClipMetric.objects.create(clip=clip, name="lmd", status=ClipMetric.UNAVAILABLE, detail="no face",
                                      version="1")
            clips.append(clip)
            quality.append(clip_quality)
        ConditionMetric.objects.create(condition=condition, name="fid", value=30.0 - 8.0 * effect, n_clips=N_CONTENTS,
                                       version="1")
    study_clips = {sc.clip_id: sc for sc in study.study_clips.all()}
    ratings = []
    for p in range(n_participants):
        participant = Participant.objects.create(study=study, state=Participant.COMPLETED, external_id=f"pid-{p}")
        bias = rng.normal(0.0, 0.3)
        for position, index in enumerate(rng.choice(len(clips), size=per_participant, replace=False)):
            assignment = Assignment.objects.create(participant=participant, position=position,
                                                   study_clip=study_clips[clips[index].pk])
            for scale in scales:
                value = int(np.clip(np.rint(3.0 + quality[index] + bias + rng.normal(0.0, 0.6)), 1, 5))
                ratings.append(Rating(assignment=assignment, scale=scale, value=value, client_uuid=uuid.uuid4()))
    Rating.objects.bulk_create(ratings)
    return study


@pytest.fixture
def rated_study():
    return make_rated_study()


FAST = {"n_boot": 40, "n_splits": 50, "max_metric_figures": 1}


@pytest.fixture
def fast_builds(monkeypatch):
    """Every build with few bootstrap replicates and one metric scatter plot (the full build is tested once)."""
    original = services.build_study_report
    monkeypatch.setattr(services, "build_study_report", lambda study, **kwargs: original(study, **{**FAST, **kwargs}))


@pytest.fixture
def cheap_builds(monkeypatch):
    """Builds without metrics, bootstrap or figures, recording what they were asked for (tests of the plumbing)."""
    calls = []

    def build(study, *, reveal_conditions=False, exclude_rejected=True, **overrides):
        calls.append({"reveal_conditions": reveal_conditions, "exclude_rejected": exclude_rejected, **overrides})
        options = services.report_options(study, reveal_conditions=reveal_conditions, exclude_rejected=exclude_rejected,
                                          **{**overrides, "n_boot": 0, "n_splits": 10})
        return build_report(ratings_frame(study), None, options=options)

    monkeypatch.setattr(services, "build_study_report", build)
    return calls


def fake_done_report(study) -> StudyReport:
    """A finished report row with small files, for tests about access rather than content."""
    stored = StudyReport.objects.create(study=study, status=StudyReport.DONE)
    folder = settings.MEDIA_ROOT / stored.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text("<html>report</html>")
    (folder / "report-tables.zip").write_bytes(b"PK")
    StudyReport.objects.filter(pk=stored.pk).update(files={"html": f"{stored.folder}/report.html",
                                                           "zip": f"{stored.folder}/report-tables.zip"})
    stored.refresh_from_db()
    return stored


def condition_names():
    return [name for name, *_ in CONDITIONS]


def test_the_ratings_frame_joins_clip_and_condition_metrics(rated_study):
    metrics = study_clip_metrics(rated_study)
    assert set(metrics.columns) == {"clip", "lse_c", "ssim", "fid"}  # lmd is unavailable everywhere
    assert len(metrics) == len(CONDITIONS) * N_CONTENTS
    frame = ratings_frame(rated_study, with_metrics=True)
    model = frame[frame["condition"] == "Wav2Lip GAN checkpoint"]
    assert (model["fid"] == 30.0 - 8.0 * 0.4).all()
    stored = dict(ClipMetric.objects.filter(name="lse_c").values_list("clip_id", "value"))
    assert all(frame["lse_c"] == frame["clip"].map(stored))


def test_the_admin_action_builds_the_report_on_the_cpu_queue_and_links_it(client, alice, rated_study,
                                                                           django_capture_on_commit_callbacks,
                                                                           monkeypatch):
    queued = []
    original = services.enqueue
    monkeypatch.setattr(services, "enqueue", lambda report_id: (queued.append(report_id), original(report_id)))
    assert settings.CELERY_TASK_ROUTES["analysis.build_study_report"] == {"queue": "cpu"}
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:studyapp_study_changelist"),
                               {"action": "build_analysis_report", "_selected_action": [rated_study.pk]})
    assert response.status_code == 302
    stored = StudyReport.objects.get(study=rated_study)
    assert queued == [stored.pk]
    assert stored.status == StudyReport.DONE, stored.error
    assert not stored.reveal_conditions and stored.exclude_rejected and stored.requested_by == alice
    assert stored.files == {"html": f"{stored.folder}/report.html", "zip": f"{stored.folder}/report-tables.zip"}
    assert stored.summary["highlights"] and stored.summary["sections"]["mixed_model"] == "ok"
    page = client.get(reverse("admin:studyapp_study_change", args=[rated_study.pk])).content.decode()
    assert reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "html"]) in page
    assert reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "zip"]) in page
    assert reverse("admin:studyapp_study_planning", args=[rated_study.pk]) in page


def test_the_task_sends_itself_to_the_cpu_queue(rated_study, monkeypatch):
    from analysis import tasks

    sent = []
    monkeypatch.setattr(tasks.build_study_report, "apply_async", lambda args, queue=None: sent.append((args, queue)))
    services.enqueue(7)
    assert sent == [((7,), "cpu")]


def test_the_downloads_are_the_stored_html_and_zip_and_blind(client, alice, rated_study, fast_builds):
    stored = services.request_report(rated_study, user=alice)
    stored = services.produce_report(services.claim_report(stored.pk))
    client.force_login(alice)
    html = client.get(reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "html"]))
    assert html.status_code == 200 and html["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in html["Content-Security-Policy"]
    body = b"".join(html.streaming_content).decode()
    assert "At a glance" in body and "data:image/png;base64," in body and "<script" not in body
    archive = client.get(reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "zip"]))
    assert archive["Content-Type"] == "application/zip" and "attachment" in archive["Content-Disposition"]
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert {"report.html", "ratings.csv", "tables/mos__mos.csv", "tables/metrics__summary.json",
            "sureal/overall.py"} <= set(names)
    texts = [body.encode()] + [zipfile.ZipFile(io.BytesIO(b"".join(client.get(reverse(
        "admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "zip"])).streaming_content))).read(name)
        for name in names]
    assert find_leaks(texts, condition_names()) == []  # blind by default: no file names a condition
    assert "C1" in body and "blind labels" in body
    missing = client.get(reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "pdf"]))
    assert missing.status_code == 404
    wrong_study = client.get(reverse("admin:studyapp_study_report_file", args=[rated_study.pk + 1, stored.pk, "html"]))
    assert wrong_study.status_code == 404


def test_only_staff_see_reports_and_planning(client, charlie, rated_study):
    stored = fake_done_report(rated_study)
    urls = [reverse("admin:studyapp_study_reports", args=[rated_study.pk]),
            reverse("admin:studyapp_study_planning", args=[rated_study.pk]),
            reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "html"]),
            reverse("admin:studyapp_study_report_file", args=[rated_study.pk, stored.pk, "zip"])]
    for who in (None, charlie):
        if who is not None:
            client.force_login(who)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    before = StudyReport.objects.count()
    client.post(urls[0], {"reveal_conditions": "1"})
    assert StudyReport.objects.count() == before


def test_the_participant_site_never_links_to_reports(rated_study):
    stored = fake_done_report(rated_study)
    client = Client()
    entry = reverse("participant:study-entry", args=[rated_study.public_id])
    pages = [client.get(entry).content]
    response = client.post(entry, {"consent": "yes", "viewport": "1280x800"})
    if response.status_code == 302:
        pages.append(client.get(response["Location"]).content)
    needles = ["/reports/", stored.folder, "report-tables.zip", "report.html", "planning"]
    assert find_leaks(pages, needles) == []


def test_the_reports_page_queues_a_build_with_the_chosen_options(client, alice, rated_study, cheap_builds,
                                                                 django_capture_on_commit_callbacks):
    client.force_login(alice)
    url = reverse("admin:studyapp_study_reports", args=[rated_study.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"reveal_conditions": "1", "with_rejected": "1"})
    assert response.status_code == 302
    stored = StudyReport.objects.get(study=rated_study)
    assert stored.reveal_conditions and not stored.exclude_rejected and stored.status == StudyReport.DONE
    assert cheap_builds == [{"reveal_conditions": True, "exclude_rejected": False}]
    page = client.get(url).content.decode()
    assert "real names" in page and "kept" in page and f"/reports/{stored.pk}/html" in page


def test_a_failing_build_marks_the_report_failed_with_its_error(client, alice, rated_study, monkeypatch,
                                                                django_capture_on_commit_callbacks):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "build_study_report", broken)
    with django_capture_on_commit_callbacks(execute=True):
        stored = services.request_report(rated_study)
    stored.refresh_from_db()
    assert stored.status == StudyReport.FAILED and stored.error == "RuntimeError: disk full"
    client.force_login(alice)
    page = client.get(reverse("admin:studyapp_study_change", args=[rated_study.pk])).content.decode()
    assert "disk full" in page
    assert client.get(reverse("admin:studyapp_study_report_file",
                              args=[rated_study.pk, stored.pk, "html"])).status_code == 404


def test_a_report_is_claimed_by_one_worker_at_a_time(rated_study, cheap_builds):
    stored = StudyReport.objects.create(study=rated_study)
    assert services.claim_report(stored.pk) is not None
    assert services.claim_report(stored.pk) is None  # a redelivered message while the first worker holds it
    StudyReport.objects.filter(pk=stored.pk).update(claimed_until="2000-01-01T00:00:00Z")
    assert services.claim_report(stored.pk) is not None  # the first worker died: its lease ran out
    services.produce_report(StudyReport.objects.get(pk=stored.pk))
    assert services.claim_report(stored.pk) is None  # done stays done


def test_the_command_writes_html_and_zip_with_the_chosen_options(rated_study, tmp_path, fast_builds):
    out = io.StringIO()
    call_command("study_report", str(rated_study.pk), "-o", str(tmp_path / "r"), "--with-rejected",
                 "--reveal-conditions", "--n-boot", "50", stdout=out)
    html = (tmp_path / "r" / "report.html").read_text()
    assert all(name in html for name in condition_names())
    archive = zipfile.ZipFile(tmp_path / "r" / "report-tables.zip")
    manifest = json.loads(archive.read("report.json"))
    assert manifest["options"]["exclude_rejected"] is False and manifest["options"]["n_boot"] == 50
    assert manifest["conditions_revealed"] is True
    assert "Wrote" in out.getvalue() and "researcher only" in html
    assert StudyReport.objects.count() == 0


def test_the_command_can_store_the_report_for_the_admin(rated_study, tmp_path, cheap_builds):
    call_command("study_report", str(rated_study.pk), "-o", str(tmp_path), "--n-boot", "50", "--store",
                 stdout=io.StringIO())
    stored = StudyReport.objects.get(study=rated_study)
    assert stored.status == StudyReport.DONE and stored.exclude_rejected
    assert cheap_builds == [{"reveal_conditions": False, "exclude_rejected": True, "n_boot": 50}]
    assert (tmp_path / "report.html").read_bytes() == (settings.MEDIA_ROOT / stored.files["html"]).read_bytes()


def test_the_command_refuses_an_unknown_study():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no study"):
        call_command("study_report", "999999")


def test_the_planning_page_plans_from_the_current_ratings(client, alice, rated_study):
    client.force_login(alice)
    url = reverse("admin:studyapp_study_planning", args=[rated_study.pk])
    response = client.get(url, {"half_width": "0.5", "difference": "0.8", "n_clips": "40"})
    assert response.status_code == 200
    rows = response.context["rows"]
    assert [r["scale"] for r in rows] == ["sync", "visual", "overall"]
    assert response.context["params"]["half_width"] == 0.5 and rows[0]["n_clips"] == 40
    width, difference = rows[0]["plans"]
    assert width["target"] == "half_width" and difference["target"] == "difference"
    assert width["target_value"] == 0.5 and difference["target_value"] == 0.8
    assert response.context["figure"].data_uri.startswith("data:image/png;base64,")
    bad = client.get(url, {"half_width": "wide", "power": "2"})
    assert bad.context["params"]["half_width"] == 0.2 and bad.context["params"]["power"] == 0.8
    assert len(bad.context["errors"]) == 2
