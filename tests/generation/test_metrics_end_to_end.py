"""Every built-in metric on real clips (a synthetic talking face with real speech), through the request → task →
ClipMetric/ConditionMetric path, including the metrics whose weights are not installed here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from generation import media, metric_services
from generation.metrics import catalog
from generation.models import Audio, Clip, ClipMetric, Condition, ConditionMetric, Source
from tests.fixtures import SAMPLE_RATE

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _store(path: Path, condition: Condition, source: Source, audio: Audio, **extra) -> Clip:
    info = media.probe(path)
    clip = Clip(condition=condition, source=source, audio=audio, status=Clip.READY, sha256=media.sha256_file(path),
                duration=info.duration, fps=info.fps, n_frames=info.n_frames, width=info.width, height=info.height,
                size_bytes=info.size_bytes, **extra)
    clip.file.name = f"clips/{clip.delivery_name}"
    target = Path(settings.MEDIA_ROOT) / clip.file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    clip.save()
    return clip


def blur_mouth(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A mouth-only artifact: the lower third of every face box smeared flat (what seed 000 says whole-image
    metrics miss)."""
    out = frames.copy()
    for frame, (x1, y1, x2, y2) in zip(out, boxes):
        top = y1 + 2 * (y2 - y1) // 3
        region = frame[top:y2, x1:x2].astype(float)
        frame[top:y2, x1:x2] = region.mean(axis=(0, 1)).astype(np.uint8)
    return out


@pytest.fixture
def study_clips(training_corpus, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    video = sorted((training_corpus / "corpus").glob("*.mp4"))[0]
    frames, fps = media.read_video(video)
    sound = media.read_audio(video, SAMPLE_RATE)
    from generation.metrics.regions import detect_face_boxes

    boxes = detect_face_boxes(frames)
    degraded = tmp_path / "degraded.mp4"
    media.write_video(degraded, blur_mouth(frames, boxes), fps, sound, SAMPLE_RATE)
    late = tmp_path / "late.mp4"  # the same frames with the speech 5 frames (200 ms) late
    media.write_video(late, frames, fps, np.concatenate([np.zeros(5 * 640, np.float32), sound])[: len(sound)],
                      SAMPLE_RATE)

    audio = Audio.objects.create(name="speech.wav", content_id="s1", sample_rate=SAMPLE_RATE, duration=len(sound) / 16e3)
    source = Source.objects.create(name="talking.mp4", identity="astronaut", content_id="s1", own_audio=audio)
    reference = _store(video, Condition.objects.create(name="reference", kind=Condition.KIND_REFERENCE), source, audio)
    model = Condition.objects.create(name="mouth smear", kind=Condition.KIND_CONTROL, control="degrade")
    smeared = _store(degraded, model, source, audio, reference=reference)
    shift = Condition.objects.create(name="audio 5 frames late", kind=Condition.KIND_CONTROL, control="audio_shift")
    late_clip = _store(late, shift, source, audio, reference=reference)
    return {"reference": reference, "smeared": smeared, "late": late_clip}


def values(clip) -> dict[str, ClipMetric]:
    return {m.name: m for m in ClipMetric.objects.filter(clip=clip)}


def test_every_metric_gets_a_value_or_a_reason(study_clips, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(catalog, "LSE_WEIGHTS", "demo")  # as `make demo` runs it: the tiny trained SyncNet
    clips = Clip.objects.select_related("condition", "reference")
    with django_capture_on_commit_callbacks(execute=True):
        metric_services.request_metrics(clips)

    smeared, reference = values(study_clips["smeared"]), values(study_clips["reference"])
    every_name = {m.name for m in catalog.all_metrics() if catalog.group_of(m.name).level == "clip"}
    assert set(smeared) == every_name
    for row in smeared.values():
        assert row.status in (ClipMetric.OK, ClipMetric.UNAVAILABLE), (row.name, row.detail)
        assert (row.value is not None) == (row.status == ClipMetric.OK)
        assert row.status == ClipMetric.OK or row.detail

    # The seed's claim as a specification: a mouth-only artifact moves the mouth metrics far more.
    assert reference["ssim"].value == pytest.approx(1.0)
    assert reference["psnr"].status == ClipMetric.UNAVAILABLE  # identical frames: PSNR is infinite
    full_drop = 1 - smeared["ssim"].value
    mouth_drop = 1 - smeared["ssim_mouth"].value
    assert mouth_drop > 3 * full_drop > 0
    assert smeared["psnr_mouth"].value < smeared["psnr_face"].value < smeared["psnr"].value
    assert smeared["lmd"].value > reference["lmd"].value == 0.0
    assert smeared["ifc"].value > 0 == reference["ifc"].value
    assert len(smeared["ssim"].per_frame) == study_clips["smeared"].n_frames

    # LSE with the demo SyncNet: late speech is found 5 frames late and matches worse than aligned speech.
    late = values(study_clips["late"])
    assert reference["lse_offset"].value == 0 and late["lse_offset"].value == -5
    assert reference["lse_d"].value < late["lse_d"].value

    lpips = smeared["lpips_mouth"]
    if not Path(settings.BASE_DIR, "var/weights/alexnet-owt-7be5be79.pth").exists():
        assert lpips.status == ClipMetric.UNAVAILABLE and "alexnet-owt-7be5be79.pth" in lpips.detail


def test_the_study_metric_page_shows_the_seeds_table(study_clips, admin_client, django_capture_on_commit_callbacks):
    from studyapp.models import Study, StudyClip

    study = Study.objects.create(title="metrics study")
    for clip in study_clips.values():
        StudyClip.objects.create(study=study, clip=clip)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/studyapp/study/{study.pk}/metrics/")
    assert response.status_code == 302
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/metrics/").content.decode()
    for label in ("SSIM", "PSNR", "FID", "IFC", "LMD", "LSE-C", "LSE-D", "mouth smear"):
        assert label in page
    csv = admin_client.get(f"/admin/studyapp/study/{study.pk}/metrics-table.csv").content.decode()
    assert csv.splitlines()[0] == "Method,SSIM,PSNR,FID,IFC,LMD,LSE-C,LSE-D"
    assert admin_client.get(f"/admin/studyapp/study/{study.pk}/metrics-nope.csv").status_code == 404


def test_fid_is_unavailable_without_the_inception_weights_and_says_which_file(
        study_clips, django_capture_on_commit_callbacks):
    clips = Clip.objects.select_related("condition", "reference")
    with django_capture_on_commit_callbacks(execute=True):
        metric_services.request_metrics(clips, ["fid"])
    row = ConditionMetric.objects.get(condition=study_clips["smeared"].condition, name="fid")
    assert row.status == ConditionMetric.UNAVAILABLE and "pt_inception-2015-12-05-6726825d.pth" in row.detail


def test_fid_per_condition_from_cached_clip_features(study_clips, django_capture_on_commit_callbacks, monkeypatch):
    import torch

    from generation.metrics import fid_weights
    from generation.nets.inception_fid import build_inception_fid

    torch.manual_seed(0)
    tiny = build_inception_fid("tiny").eval()  # random weights: the machinery, not a published FID
    monkeypatch.setattr(fid_weights, "load_fid_inception", lambda device="cpu", **kw: tiny)
    clips = Clip.objects.select_related("condition", "reference")
    with django_capture_on_commit_callbacks(execute=True):
        metric_services.request_metrics(clips, ["fid"])
    fid = {m.condition.name: m for m in ConditionMetric.objects.filter(name="fid").select_related("condition")}
    assert fid["reference"].value == pytest.approx(0.0, abs=1e-6) and fid["reference"].n_clips == 1
    assert fid["mouth smear"].value > fid["reference"].value
    assert all(m.status == ConditionMetric.OK for m in fid.values())
