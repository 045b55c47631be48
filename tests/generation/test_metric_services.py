"""How metric values are requested, computed, stored and exported (the machinery, with small test groups;
the real metrics have their own tests under tests/generation/metrics and an end-to-end test with them)."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
from django.core.management import call_command
from django.test import override_settings

from generation import metric_services
from generation.metrics import catalog
from generation.metrics.base import MetricUnavailable, PerFrame
from generation.models import Clip, ClipMetric, ConditionMetric, GenerationJob, MetricRun
from tests.fixtures import make_clip

pytestmark = pytest.mark.django_db

CALLS: list[str] = []


def mean_abs_difference(pair, device):
    """Per-frame mean absolute pixel difference to the ground truth (a simple, real measurement)."""
    CALLS.append("clip")
    reference = pair.require_reference("mean_abs_difference")
    per_frame = np.abs(pair.generated.astype(float) - reference.astype(float)).reshape(pair.n_frames, -1).mean(1)
    return {"test_mad": PerFrame(float(per_frame.mean()), per_frame), "test_frames": float(pair.n_frames)}


def mean_luma_partial(pair, device):
    CALLS.append("partial")
    return struct.pack("<dd", float(pair.generated.mean()), float(pair.n_frames))


def mean_luma_combine(partials):
    values = [struct.unpack("<dd", p) for p in partials]
    total = sum(n for _, n in values)
    return {"test_set_luma": sum(v * n for v, n in values) / total}


def clip_group(version="1", compute=mean_abs_difference):
    return catalog.MetricGroup(
        key="test_clip", version=version, queue="cpu", level="clip", needs_reference=True, needs_faces=False,
        metrics=(catalog.MetricDef("test_mad", "MAD", False, "mean absolute difference"),
                 catalog.MetricDef("test_frames", "frames", None, "frames compared")),
        compute=compute,
    )


def condition_group():
    return catalog.MetricGroup(
        key="test_set", version="1", queue="gpu", level="condition", needs_reference=True, needs_faces=False,
        metrics=(catalog.MetricDef("test_set_luma", "luma", True, "mean luma over the condition"),),
        partial=mean_luma_partial, combine=mean_luma_combine,
    )


@pytest.fixture
def groups(monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    CALLS.clear()
    registry = {"test_clip": clip_group(), "test_set": condition_group()}
    monkeypatch.setattr(catalog, "GROUPS", registry)
    return registry


@pytest.fixture
def clips(groups, clip_files):
    """A hidden reference and two other clips of the same source pointing at it, plus one without reference."""
    reference = make_clip(2, clip_files)  # the "Hidden reference" condition, source 0
    model = make_clip(0, clip_files)
    control = make_clip(4, clip_files)
    Clip.objects.filter(pk__in=[model.pk, control.pk]).update(reference=reference)
    orphan = make_clip(1, clip_files)
    return {"reference": reference, "model": model, "control": control, "orphan": orphan}


@pytest.fixture
def request_metrics(django_capture_on_commit_callbacks):
    """request_metrics as a view or command would call it, with the enqueued tasks run (in-process) on commit."""
    def request(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return metric_services.request_metrics(*args, **kwargs)
    return request


def all_clips():
    return Clip.objects.select_related("condition", "reference").order_by("pk")


def value(clip, name):
    return ClipMetric.objects.get(clip=clip, name=name)


def test_it_computes_every_group_once_and_stores_values_with_their_version(clips, request_metrics):
    summary = request_metrics(all_clips())
    assert len(summary.queued) == 4 + 4  # 4 clips × test_clip, 4 conditions × test_set
    assert MetricRun.objects.filter(status=MetricRun.DONE).count() == 8
    mad = value(clips["model"], "test_mad")
    assert mad.status == ClipMetric.OK and mad.version == "1" and mad.value > 0
    assert len(mad.per_frame) == value(clips["model"], "test_frames").value
    assert value(clips["reference"], "test_mad").value == 0.0  # the ground truth against itself


def test_a_second_request_finds_everything_up_to_date(clips, request_metrics):
    request_metrics(all_clips())
    CALLS.clear()
    again = request_metrics(all_clips())
    assert again.queued == [] and again.up_to_date == 8 and CALLS == []


def test_force_recomputes_and_a_new_version_marks_values_stale(clips, groups, request_metrics):
    request_metrics(all_clips())
    assert len(request_metrics(all_clips(), ["test_clip"], force=True).queued) == 4
    groups["test_clip"] = clip_group(version="2")
    summary = request_metrics(all_clips())
    assert len(summary.queued) == 4 and summary.up_to_date == 4
    assert set(ClipMetric.objects.filter(name="test_mad").values_list("version", flat=True)) == {"2"}


def test_a_changed_clip_file_makes_its_values_stale(clips, request_metrics):
    request_metrics(all_clips())
    Clip.objects.filter(pk=clips["control"].pk).update(sha256="0" * 64)
    summary = request_metrics(all_clips(), ["test_clip"])
    assert [MetricRun.objects.get(pk=r).clip_id for r in summary.queued] == [clips["control"].pk]


def test_a_clip_without_ground_truth_gets_the_reason_not_a_number(clips, request_metrics):
    request_metrics(all_clips(), ["test_clip"])
    orphan = value(clips["orphan"], "test_mad")
    assert orphan.status == ClipMetric.UNAVAILABLE and orphan.value is None
    assert "no ready hidden reference" in orphan.detail


def test_an_unavailable_group_explains_itself_on_every_metric(clips, groups, request_metrics):
    def missing_weights(pair, device):
        raise MetricUnavailable("weights file syncnet_v2.model is not installed")

    groups["test_clip"] = clip_group(compute=missing_weights)
    request_metrics([clips["model"]], ["test_clip"])
    for name in ("test_mad", "test_frames"):
        row = value(clips["model"], name)
        assert row.status == ClipMetric.UNAVAILABLE and "syncnet_v2.model" in row.detail
    assert MetricRun.objects.get(clip=clips["model"]).status == MetricRun.DONE


def test_a_failing_recomputation_keeps_the_values_it_could_not_replace(clips, groups, request_metrics):
    request_metrics([clips["model"]], ["test_clip"])
    before = value(clips["model"], "test_mad").value

    def broken(pair, device):
        raise ZeroDivisionError("bug")

    groups["test_clip"] = clip_group(version="2", compute=broken)
    request_metrics([clips["model"]], ["test_clip"])
    run = MetricRun.objects.get(clip=clips["model"], group="test_clip")
    assert run.status == MetricRun.FAILED and "ZeroDivisionError: bug" in run.error
    kept = value(clips["model"], "test_mad")
    assert kept.status == ClipMetric.OK and kept.value == before and kept.version == "1"


def test_a_new_metric_that_fails_is_recorded_as_failed(clips, groups, request_metrics):
    def broken(pair, device):
        raise ValueError("cannot read")

    groups["test_clip"] = clip_group(compute=broken)
    request_metrics([clips["model"]], ["test_clip"])
    row = value(clips["model"], "test_mad")
    assert row.status == ClipMetric.FAILED and "cannot read" in row.detail


def test_results_of_a_run_taken_away_mid_computation_are_dropped(clips, groups):
    def reset_while_computing(pair, device):
        MetricRun.objects.filter(clip_id=clips["model"].pk).update(status=MetricRun.PENDING)  # a forced re-request
        return mean_abs_difference(pair, device)

    run = MetricRun.objects.create(clip=clips["model"], group="test_clip")
    groups["test_clip"] = clip_group(compute=reset_while_computing)
    assert run.claim() == Clip.CLAIMED
    assert metric_services.compute_clip_run(run, worker="w") is False
    assert not ClipMetric.objects.filter(clip=clips["model"]).exists()


def test_a_claimed_run_cannot_be_claimed_twice(clips):
    run = MetricRun.objects.create(clip=clips["model"], group="test_clip")
    assert run.claim() == Clip.CLAIMED
    assert MetricRun.objects.get(pk=run.pk).claim() == Clip.BUSY
    MetricRun.objects.filter(pk=run.pk).update(status=MetricRun.DONE)
    assert MetricRun.objects.get(pk=run.pk).claim() == Clip.GONE


def test_condition_metrics_combine_cached_per_clip_parts(clips, request_metrics):
    request_metrics(all_clips(), ["test_set"])
    assert CALLS.count("partial") == 3  # reference (its own ground truth), model and control; not the orphan
    model_set = ConditionMetric.objects.get(condition=clips["model"].condition, name="test_set_luma")
    assert model_set.status == ConditionMetric.OK and model_set.n_clips == 1 and "over 1 clips" in model_set.detail
    empty = ConditionMetric.objects.get(condition=clips["orphan"].condition, name="test_set_luma")
    assert empty.status == ConditionMetric.UNAVAILABLE and "no ready clip" in empty.detail
    CALLS.clear()
    request_metrics(all_clips(), ["test_set"], force=True)
    assert CALLS == []  # recomputed from the cached parts


def test_exports_name_conditions_and_keep_reasons(clips, request_metrics):
    request_metrics(all_clips())
    long = metric_services.clip_metrics_frame(all_clips())
    assert list(long.columns) == metric_services.CLIP_METRIC_COLUMNS
    assert len(long) == 4 * 2
    table = metric_services.condition_metric_table(all_clips())
    mad = table[(table.metric == "test_mad") & (table.condition == clips["model"].condition.name)].iloc[0]
    assert mad.n == 1 and mad.level == "clip" and mad.higher_is_better is False
    orphan = table[(table.metric == "test_mad") & (table.condition == clips["orphan"].condition.name)].iloc[0]
    assert orphan.n == 0 and math.isnan(orphan["mean"]) and "hidden reference" in orphan.detail
    wide = metric_services.clip_metrics_wide(all_clips())
    assert {"clip", "test_mad", "test_frames"} <= set(wide.columns)


def test_the_seeds_table_has_the_papers_columns(clips):
    table = metric_services.seeds_table(all_clips())
    assert list(table.columns) == ["Method", "SSIM", "PSNR", "FID", "IFC", "LMD", "LSE-C", "LSE-D"]


def test_a_finished_generation_job_queues_its_metrics(clips, django_capture_on_commit_callbacks):
    job = GenerationJob.objects.create(status=GenerationJob.RUNNING)
    job.clips.set([clips["model"], clips["reference"]])
    from generation import services

    with override_settings(SYNCMOS_METRICS_AFTER_GENERATION=True), django_capture_on_commit_callbacks(execute=True):
        services.refresh_progress(job.pk)
    assert MetricRun.objects.filter(clip__in=[clips["model"], clips["reference"]], status=MetricRun.DONE).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_command_computes_now_and_writes_a_csv(clips, tmp_path):
    out = io.StringIO()
    csv = tmp_path / "metrics.csv"
    call_command("compute_metrics", "--all", "--now", "--csv", str(csv), stdout=out)
    text = out.getvalue()
    assert "8 metric runs queued" in text and "8 runs done, 0 failed" in text and "Method" in text
    assert csv.read_text().splitlines()[0] == ",".join(metric_services.CLIP_METRIC_COLUMNS)


def test_the_command_refuses_unknown_groups_and_empty_selections(clips):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown metric groups"):
        call_command("compute_metrics", "--all", "--groups", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="say which clips"):
        call_command("compute_metrics", stdout=io.StringIO())
