"""The generation tasks in the embedded mode (no broker: tasks run in-process, as in the demo)."""

import pytest
from django.db import OperationalError, transaction

from generation import controls, corpus, media, services
from generation.models import Clip, GenerationJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROFILE = {"width": 128, "height": 128}


@pytest.fixture(scope="module")
def corpus_items(tmp_path_factory):
    config = corpus.CorpusConfig(faces=("astronaut",), voices=corpus.CorpusConfig().voices[:1],
                                 sentences_per_voice=2, size=160, seed=11)
    return corpus.build_corpus(tmp_path_factory.mktemp("corpus"), config)


def _run(conditions, sources) -> GenerationJob:
    with transaction.atomic():
        job = services.create_job(conditions, sources, options=PROFILE)
        services.start_job(job)
    job.refresh_from_db()
    return job


def test_it_makes_every_standard_condition_in_process(corpus_items):
    sources = services.register_corpus_items(corpus_items)[:1]  # the other sentence feeds the mismatch
    conditions = services.get_or_create_conditions(controls.standard_conditions())
    job = _run(conditions, sources)
    errors = list(job.clips.exclude(status=Clip.READY).values_list("condition__name", "error"))
    assert job.status == GenerationJob.DONE, errors
    assert job.n_done == job.n_total == len(conditions) * len(sources)
    for clip in job.clips.all():
        info = media.probe(clip.file.path)
        assert (info.video_codec, info.audio_codec, info.width, info.height, info.fps) == ("h264", "aac", 128, 128, 25.0)
        assert clip.rendered_by and clip.normalized_by  # the worker (here: this host) is on record
    # Every clip of a source has the length of its ground truth (the controls keep the timing).
    for clip in job.clips.exclude(condition__kind="reference"):
        assert clip.n_frames == clip.reference.n_frames


def test_it_retries_a_database_hiccup_and_then_finishes(corpus_items, monkeypatch):
    from generation import render

    sources = services.register_corpus_items(corpus_items[:1])
    conditions = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])
    real_render = render.render
    calls = []

    def flaky_render(request, **kwargs):
        calls.append(request)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_render(request, **kwargs)

    monkeypatch.setattr(render, "render", flaky_render)
    job = _run(conditions, sources)
    clip = job.clips.get()
    assert len(calls) == 2
    # Claims on record: the failed render, its retry, and the normalization.
    assert (clip.status, clip.attempts, job.status) == (Clip.READY, 3, GenerationJob.DONE)


def test_it_fails_one_clip_with_a_clear_error_and_finishes_the_others(corpus_items, tmp_path, monkeypatch):
    from generation.models import Checkpoint, Condition

    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path))
    sources = services.register_corpus_items(corpus_items)
    reference = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])[0]
    checkpoint = Checkpoint.objects.create(name="not installed", architecture="wav2lip", path="wav2lip_gan.pth",
                                           layout="official")
    model = Condition.objects.create(name="Wav2Lip (weights missing)", kind="model", architecture="wav2lip",
                                     checkpoint=checkpoint)
    job = _run([reference, model], sources)
    assert job.status == GenerationJob.PARTIAL
    failed = job.clips.filter(status=Clip.FAILED)
    assert failed.count() == len(sources)
    assert all("checkpoint file not found" in clip.error and "wav2lip_gan.pth" in clip.error for clip in failed)
    assert not any((services.media_path(f"clips/{c.delivery_name}")).exists() for c in failed)
    assert job.clips.filter(status=Clip.READY).count() == len(sources)


def test_it_fails_a_job_whose_planning_breaks_instead_of_leaving_it_running(corpus_items, monkeypatch):
    sources = services.register_corpus_items(corpus_items[:1])
    conditions = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])

    def broken_plan(job):
        raise KeyError("profile")

    monkeypatch.setattr(services, "plan_clips", broken_plan)
    job = _run(conditions, sources)
    assert job.status == GenerationJob.FAILED and "KeyError" in job.error and job.finished_at


def test_it_comes_back_later_when_a_redelivered_task_finds_the_clip_still_claimed(corpus_items):
    from types import SimpleNamespace

    from celery.exceptions import Retry

    from generation.tasks import _claimed

    sources = services.register_corpus_items(corpus_items[:1])
    conditions = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])
    job = services.create_job(conditions, sources)
    clip = Clip.objects.get(pk=services.plan_clips(job).to_render[0])
    assert clip.claim(Clip.PENDING, Clip.RENDERING) == Clip.CLAIMED  # the first worker, still busy (or dead)
    asked = {}

    def retry(**kwargs):
        asked.update(kwargs)
        return Retry("later")

    worker_task = SimpleNamespace(request=SimpleNamespace(is_eager=False), retry=retry)
    with pytest.raises(Retry):
        _claimed(worker_task, Clip.objects.get(pk=clip.pk), Clip.PENDING, Clip.RENDERING)
    assert 14 * 60 < asked["countdown"] <= 15 * 60 + 1 and asked["max_retries"] is None


def test_it_stops_handing_out_a_clip_that_keeps_killing_its_workers(corpus_items, settings):
    from types import SimpleNamespace

    from generation.tasks import _claimed

    settings.SYNCMOS_MAX_CLIP_CLAIMS = 3
    sources = services.register_corpus_items(corpus_items[:1])
    conditions = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])
    job = services.create_job(conditions, sources)
    clip_id = services.plan_clips(job).to_render[0]
    Clip.objects.filter(pk=clip_id).update(attempts=3)  # three workers died holding it
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False), retry=None)
    assert _claimed(task, Clip.objects.get(pk=clip_id), Clip.PENDING, Clip.RENDERING) is False
    clip = Clip.objects.get(pk=clip_id)
    assert clip.status == Clip.FAILED and "workers stopped 3 times" in clip.error


def test_it_keeps_extending_its_claim_during_a_long_render(corpus_items):
    from datetime import timedelta

    from django.utils import timezone

    sources = services.register_corpus_items(corpus_items[:1])
    conditions = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])
    clip_id = services.plan_clips(services.create_job(conditions, sources)).to_render[0]
    Clip.objects.filter(pk=clip_id).update(status=Clip.RENDERING, claimed_until=timezone.now() + timedelta(seconds=5))
    services.extend_claim(clip_id, Clip.RENDERING)
    assert Clip.objects.get(pk=clip_id).lease_left() > 14 * 60
    Clip.objects.filter(pk=clip_id).update(status=Clip.RENDERED, claimed_until=None)
    services.extend_claim(clip_id, Clip.RENDERING)  # not ours any more: left alone
    assert Clip.objects.get(pk=clip_id).claimed_until is None
