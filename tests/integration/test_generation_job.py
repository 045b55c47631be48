"""A GenerationJob end to end on the real topology: PostgreSQL, Redis, a gpu and a cpu worker.

Synthetic corpus → Source/Audio rows → conditions × sources → raw frames on queue "gpu" →
delivery profile on queue "cpu" → ready clips with files, hashes and probes; a corrupt and a silent
input fail their own clips with a clear error while the others finish.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import transaction

import torch

from generation import corpus, media, nets, services, weights
from generation.models import Audio, Checkpoint, Clip, Condition, GenerationJob, Source

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILE = {"width": 128, "height": 128, "fps": 25}


def _one_voice_corpus(tmp_path, *, sentences: int, size: int, seed: int) -> list[corpus.CorpusItem]:
    config = corpus.CorpusConfig(faces=("astronaut",), voices=corpus.CorpusConfig().voices[:1],
                                 sentences_per_voice=sentences, size=size, seed=seed)
    return corpus.build_corpus(tmp_path / "corpus", config)


def _wait_for(job: GenerationJob, timeout: float = 300.0) -> GenerationJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (GenerationJob.DONE, GenerationJob.PARTIAL, GenerationJob.FAILED):
            return job
        time.sleep(0.5)
    states = list(job.clips.values_list("status", flat=True))
    raise AssertionError(f"job still {job.status} after {timeout} s; clip states {states}")


def _bad_sources(good: Source, tmp_path) -> tuple[Source, Source]:
    """A source whose video file is garbage, and one whose own audio is digital silence."""
    corrupt = Source(name="corrupt-upload", identity="x", content_id=good.content_id, own_audio=good.own_audio,
                     fps=25)
    corrupt.file.save("corrupt-upload.mp4", ContentFile(np.random.default_rng(0).bytes(20000)), save=False)
    corrupt.save()
    silent_wav = tmp_path / "silent.wav"
    media.write_wav(silent_wav, np.zeros(32000, dtype=np.float32), 16000)
    silence = Audio(name="silent-take", content_id="silent", sample_rate=16000, duration=2.0)
    silence.file.save("silent-take.wav", ContentFile(silent_wav.read_bytes()), save=False)
    silence.save()
    silent = Source(name="silent-take", identity=good.identity, content_id="silent", own_audio=silence, fps=good.fps)
    silent.file.save("silent-take.mp4", ContentFile(open(good.file.path, "rb").read()), save=False)
    silent.save()
    return corrupt, silent


def test_it_runs_a_generation_job_on_real_workers(celery_workers, tmp_path):
    items = _one_voice_corpus(tmp_path, sentences=2, size=96, seed=3)
    good_sources = services.register_corpus_items(items)
    corrupt, silent = _bad_sources(good_sources[0], tmp_path)
    conditions = services.get_or_create_conditions([
        {"name": "Hidden reference", "kind": "reference"},
        {"name": "Audio +3 frames", "kind": "control", "control": "audio_shift", "params": {"frames": 3}},
        {"name": "Mismatched audio", "kind": "control", "control": "mismatched_audio", "params": {}},
        {"name": "Blur 2", "kind": "control", "control": "blur", "params": {"sigma": 2.0}},
    ])
    with transaction.atomic():
        job = services.create_job(conditions, [*good_sources, corrupt, silent], name="itest", options=PROFILE)
        services.start_job(job)  # published to Redis only when this block commits

    job = _wait_for(job)

    assert job.status == GenerationJob.PARTIAL
    assert job.n_total == 4 * 4
    ready = list(job.clips.filter(status=Clip.READY).select_related("condition", "source"))
    failed = list(job.clips.filter(status=Clip.FAILED).select_related("source"))
    assert job.n_done == len(ready) == 4 * len(good_sources)
    assert job.n_failed == len(failed) == 8
    assert {c.source.name for c in failed} == {"corrupt-upload", "silent-take"}
    for clip in failed:
        if clip.source.name == "corrupt-upload":
            assert "cannot read" in clip.error or "cannot decode" in clip.error, clip.error
        else:
            assert "silent" in clip.error, clip.error

    for clip in ready:
        info = media.probe(clip.file.path)
        assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
        assert (info.width, info.height, info.fps) == (128, 128, 25.0)
        assert clip.sha256 == media.sha256_file(clip.file.path)
        assert clip.file.name == f"clips/{clip.delivery_name}"
        # The route is real: raw frames on the gpu queue's worker, delivery encoding on the cpu one.
        assert clip.rendered_by == "gpu@itest" and clip.normalized_by == "cpu@itest"
        if clip.condition.kind != "reference":
            assert clip.reference is not None and clip.reference.condition.kind == "reference"


def test_it_treats_a_redelivered_task_as_a_no_op_once_the_clip_is_ready(celery_workers, tmp_path):
    items = _one_voice_corpus(tmp_path, sentences=1, size=96, seed=4)
    sources = services.register_corpus_items(items)
    conditions = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])
    with transaction.atomic():
        job = services.create_job(conditions, sources, options=PROFILE)
        services.start_job(job)
    job = _wait_for(job)
    clip = job.clips.get()
    first_hash, first_attempts = clip.sha256, clip.attempts

    from generation.tasks import normalize_clip, render_raw_clip

    render_again = render_raw_clip.delay(clip.pk)
    normalize_again = normalize_clip.delay(clip.pk)
    # Wait for the workers to have handled (and acknowledged) both duplicates, not for a fixed time.
    celery_workers.wait_for_log("gpu", f"[{render_again.id}] succeeded")
    celery_workers.wait_for_log("cpu", f"[{normalize_again.id}] succeeded")
    clip.refresh_from_db()
    job.refresh_from_db()
    assert (clip.status, clip.sha256, clip.attempts) == (Clip.READY, first_hash, first_attempts)
    assert (job.n_done, job.n_total, job.status) == (1, 1, GenerationJob.DONE)


def test_it_finishes_a_clip_whose_worker_process_was_killed_mid_task(worker_pool, tmp_path):
    """The pool process rendering a clip dies (as under the OOM killer); the message comes back
    (acks_late + reject_on_worker_lost), waits out the dead process's claim, and completes."""
    from studyapp.celery import app

    items = _one_voice_corpus(tmp_path, sentences=1, size=320, seed=5)
    sources = services.register_corpus_items(items)
    # Tracking landmarks in every frame of a 320 px video keeps the render busy for a few seconds.
    conditions = services.get_or_create_conditions([
        {"name": "Frozen mouth", "kind": "control", "control": "frozen_mouth", "params": {}},
    ])
    short_lease = {"SYNCMOS_JOB_LEASE_SECONDS": "10"}
    worker_pool.start("worker-gpu", "gpu", **short_lease)
    worker_pool.start("worker-cpu", "cpu", **short_lease)
    worker_pool.wait_ready(app, ["gpu", "cpu"])
    with transaction.atomic():
        job = services.create_job(conditions, sources, options={**PROFILE, "width": 320, "height": 320})
        services.start_job(job)

    deadline = time.monotonic() + 60
    while not Clip.objects.filter(jobs=job, status=Clip.RENDERING).exists():
        assert time.monotonic() < deadline, "the render never started"
        time.sleep(0.05)
    children = worker_pool.pool_children("gpu")
    assert children, "the gpu worker has no pool process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)

    job = _wait_for(job, timeout=180)
    clip = job.clips.get()
    log = worker_pool.log("gpu")
    assert "WorkerLostError" in log or "exited prematurely" in log, "the kill did not hit the task"
    assert (job.status, clip.status) == (GenerationJob.DONE, Clip.READY)
    assert clip.attempts >= 3  # the killed render, the render that took over, the normalization
    assert media.probe(clip.file.path).video_codec == "h264"


def test_it_completes_a_model_clip_on_another_worker_after_its_worker_was_killed(worker_pool, tmp_path):
    """A gpu worker dies (SIGKILL, parent and pool) while running a lip-sync model; Redis hands the
    unacknowledged message to a second gpu worker once its visibility timeout passes, and that worker
    takes over the dead worker's claim when the lease runs out."""
    from studyapp.celery import app

    weights_dir = tmp_path / "weights"
    arch = nets.get_architecture("wav2lip")
    torch.manual_seed(0)
    weights.save_checkpoint(weights_dir / "tiny.pth", arch.build_generator(arch.config("tiny")),
                            architecture="wav2lip", config=arch.config("tiny"))
    checkpoint = Checkpoint.objects.create(name="tiny", architecture="wav2lip", path="tiny.pth")
    model = Condition.objects.create(name="Wav2Lip tiny", kind="model", architecture="wav2lip", checkpoint=checkpoint)
    sources = services.register_corpus_items(_one_voice_corpus(tmp_path, sentences=1, size=320, seed=6))
    fast_recovery = {"SYNCMOS_JOB_LEASE_SECONDS": "10", "CELERY_VISIBILITY_TIMEOUT": "10",
                     "CELERY_UNACKED_RESTORE_THROTTLE": "1", "SYNCMOS_WEIGHTS_DIR": str(weights_dir)}
    worker_pool.start("worker-gpu", "gpu", **fast_recovery)
    worker_pool.start("worker-cpu", "cpu", **fast_recovery)
    worker_pool.wait_ready(app, ["gpu", "cpu"])
    with transaction.atomic():
        job = services.create_job([model], sources, options={**PROFILE, "width": 320, "height": 320})
        services.start_job(job)

    deadline = time.monotonic() + 60
    while not Clip.objects.filter(jobs=job, status=Clip.RENDERING).exists():
        assert time.monotonic() < deadline, "the render never started"
        time.sleep(0.02)
    worker_pool.kill("gpu")
    assert Clip.objects.get(jobs=job).status == Clip.RENDERING  # it died holding the claim
    worker_pool.start("worker-gpu", "gpu2", host="itest2", **fast_recovery)

    job = _wait_for(job, timeout=180)
    clip = job.clips.get()
    assert (job.status, clip.status) == (GenerationJob.DONE, Clip.READY)
    assert clip.rendered_by == "gpu@itest2"
    assert clip.n_frames == sources[0].n_frames
