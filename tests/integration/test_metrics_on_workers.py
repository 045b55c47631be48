"""Objective metrics on the real topology: a finished generation job queues its metrics, network metrics run on
the "gpu" worker and the rest on the "cpu" worker, and every value lands once in PostgreSQL."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from generation import services
from generation.metrics import catalog
from generation.models import Clip, ClipMetric, GenerationJob, MetricRun
from tests.integration.test_generation_job import PROFILE, _one_voice_corpus, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_for_runs(timeout: float = 300.0) -> list[MetricRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list(MetricRun.objects.all())
        if runs and all(r.status in (MetricRun.DONE, MetricRun.FAILED) for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"metric runs not finished after {timeout} s: "
                         f"{sorted((r.group, r.status) for r in MetricRun.objects.all())}")


def test_a_finished_job_gets_its_metrics_from_the_right_queues(worker_pool, tmp_path):
    from studyapp.celery import app

    worker_pool.start("worker-gpu", "gpu", SYNCMOS_METRICS_AFTER_GENERATION="1")
    worker_pool.start("worker-cpu", "cpu", SYNCMOS_METRICS_AFTER_GENERATION="1")
    worker_pool.wait_ready(app, ["gpu", "cpu"])
    sources = services.register_corpus_items(_one_voice_corpus(tmp_path, sentences=1, size=128, seed=5))
    conditions = services.get_or_create_conditions([
        {"name": "Hidden reference", "kind": "reference"},
        {"name": "Blur 2", "kind": "control", "control": "blur", "params": {"sigma": 2.0}},
    ])
    with transaction.atomic():
        job = services.create_job(conditions, sources, name="metrics-itest", options=PROFILE)
        services.start_job(job)
    assert _wait_for(job).status == GenerationJob.DONE

    runs = _wait_for_runs()
    clip_groups = [g for g in catalog.GROUPS.values() if g.level == "clip"]
    condition_groups = [g for g in catalog.GROUPS.values() if g.level == "condition"]
    assert len(runs) == 2 * len(clip_groups) + 2 * len(condition_groups)
    for run in runs:
        group = catalog.GROUPS[run.group]
        assert run.status == MetricRun.DONE, (run.group, run.error)
        assert run.worker == f"{group.queue}@itest", (run.group, run.worker)
        assert run.version == group.version and run.attempts == 1

    blurred = Clip.objects.get(condition__name="Blur 2")
    rows = {m.name: m for m in ClipMetric.objects.filter(clip=blurred)}
    assert set(rows) == {m.name for g in clip_groups for m in g.metrics}
    assert 0 < rows["ssim"].value < 1 and rows["psnr"].value > 10
    assert rows["ssim_face"].value < rows["ssim"].value  # the blur sits on the face, the background is flat
