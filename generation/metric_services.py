"""Computing, storing and exporting objective metrics: the workflows behind the metric tasks, the
``compute_metrics`` command and the admin actions.

Metrics are computed on the delivered stimuli (the normalized files participants see), each clip against its
hidden reference of the same source and audio, so the numbers describe exactly what was rated.

* :func:`request_metrics` makes one MetricRun per (clip, clip-level group) and per (condition, condition-level
  group) and enqueues the stale ones on commit. A run is up to date when its group version and its inputs
  fingerprint (the clip file and its reference file, or the condition's set of clips) are unchanged, so calling
  it again is cheap and idempotent; ``force`` recomputes anyway.
* :func:`compute_clip_run` / :func:`compute_condition_run` are called by the tasks once they hold the run's
  claim. Results are written in one transaction together with the run's status, and only while the run is
  still claimed by the caller, so a forced re-request in between is never overwritten by stale results.
* Per-clip contributions to condition-level metrics (FID's feature statistics) and face tracks are cached as
  files keyed by content, so a killed condition task only redoes the clips it had not reached.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from generation import media, render
from generation.faces import FaceNotFoundError
from generation.metrics import catalog
from generation.metrics.base import SAMPLE_RATE, ClipPair, MetricUnavailable, PerFrame
from generation.models import Clip, ClipMetric, Condition, ConditionMetric, MetricRun

log = logging.getLogger(__name__)

CACHE_DIR = "work/metrics"


# --- requesting ------------------------------------------------------------------------------------


@dataclass
class RequestSummary:
    queued: list[int] = field(default_factory=list)  # MetricRun ids enqueued now
    up_to_date: int = 0
    running: int = 0
    skipped_clips: int = 0  # not ready

    def __str__(self) -> str:
        return (f"{len(self.queued)} metric runs queued, {self.up_to_date} up to date, {self.running} running, "
                f"{self.skipped_clips} clips not ready (skipped)")


def selected_groups(groups: Sequence[str] | None) -> list[catalog.MetricGroup]:
    if not groups:
        return list(catalog.GROUPS.values())
    unknown = sorted(set(groups) - set(catalog.GROUPS))
    if unknown:
        raise ValueError(f"unknown metric groups {unknown}; known: {sorted(catalog.GROUPS)}")
    return [catalog.GROUPS[key] for key in groups]


def ground_truth_of(clip: Clip) -> Clip | None:
    """The clip a clip is compared with: its ready hidden reference; a hidden reference is its own ground truth
    (so the reference row of a metric table shows the metric's best value and the real videos' LSE)."""
    if clip.condition.kind == Condition.KIND_REFERENCE:
        return clip
    if clip.reference_id and clip.reference.status == Clip.READY:
        return clip.reference
    return None


def clip_fingerprint(clip: Clip) -> str:
    reference = ground_truth_of(clip)
    text = f"{clip.sha256}:{reference.sha256 if reference else '-'}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def condition_clips(condition: Condition):
    """The clips a condition-level metric is computed over: ready, with a ready ground truth."""
    clips = Clip.objects.filter(condition=condition, status=Clip.READY)
    if condition.kind != Condition.KIND_REFERENCE:
        clips = clips.filter(reference__status=Clip.READY)
    return clips.select_related("reference", "condition").order_by("pk")


def condition_fingerprint(clips: Iterable[Clip]) -> str:
    text = ",".join(f"{c.pk}={clip_fingerprint(c)}" for c in clips)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_metrics(clips: Iterable[Clip], groups: Sequence[str] | None = None, *, force: bool = False) -> RequestSummary:
    """Make sure every selected metric of these clips (and of their conditions) is computed or queued."""
    wanted = selected_groups(groups)
    summary = RequestSummary()
    ready, conditions = [], {}
    for clip in clips:
        if clip.status != Clip.READY:
            summary.skipped_clips += 1
            continue
        ready.append(clip)
        conditions[clip.condition_id] = clip.condition
    # Clip by clip (all groups of a clip in a row): consecutive runs then reuse the decoded clip and its ground
    # truth (see _decoded), in a worker and in the embedded mode alike.
    with transaction.atomic():
        for clip in ready:
            fingerprint = clip_fingerprint(clip)
            for group in wanted:
                if group.level == "clip":
                    run, _ = MetricRun.objects.get_or_create(clip=clip, group=group.key)
                    _queue_if_stale(run, group, fingerprint, force, summary)
        for condition in conditions.values():
            fingerprint = condition_fingerprint(condition_clips(condition))
            for group in wanted:
                if group.level == "condition":
                    run, _ = MetricRun.objects.get_or_create(condition=condition, group=group.key)
                    _queue_if_stale(run, group, fingerprint, force, summary)
    return summary


def _queue_if_stale(run: MetricRun, group: catalog.MetricGroup, fingerprint: str, force: bool,
                    summary: RequestSummary) -> None:
    up_to_date = run.status == MetricRun.DONE and run.version == group.version and run.inputs == fingerprint
    if run.status == MetricRun.RUNNING and run.lease_left() > 0:
        summary.running += 1  # it will finish (or its lease runs out and a redelivery takes over)
        return
    if up_to_date and not force:
        summary.up_to_date += 1
        return
    # PENDING runs are queued again too: their message may have been lost; the claim makes a duplicate harmless.
    MetricRun.objects.filter(pk=run.pk).update(status=MetricRun.PENDING, error="", claimed_until=None,
                                               updated_at=timezone.now())
    summary.queued.append(run.pk)
    transaction.on_commit(lambda: enqueue(run.pk, group))


def enqueue(run_id: int, group: catalog.MetricGroup) -> None:
    from generation.tasks import compute_clip_metrics, compute_condition_metrics

    task = compute_clip_metrics if group.level == "clip" else compute_condition_metrics
    task.apply_async((run_id,), queue=group.queue)


def request_for_jobs(job_ids: Iterable[int], groups: Sequence[str] | None = None, *, force: bool = False) -> RequestSummary:
    clips = Clip.objects.filter(jobs__in=list(job_ids)).distinct().select_related("condition", "reference")
    return request_metrics(clips, groups, force=force)


def resume_stalled_runs() -> int:
    """Re-queue runs whose message was lost or whose worker died (expired claim); returns how many."""
    now = timezone.now()
    stalled = MetricRun.objects.filter(Q(status=MetricRun.PENDING) | Q(status=MetricRun.RUNNING, claimed_until__lt=now))
    count = 0
    for run in stalled:
        group = catalog.GROUPS.get(run.group)
        if group is not None:
            transaction.on_commit(lambda run_id=run.pk, group=group: enqueue(run_id, group))
            count += 1
    return count


# --- loading clips ---------------------------------------------------------------------------------


def _media_file(clip: Clip) -> Path:
    if not clip.file:
        raise MetricUnavailable(f"clip {clip.pk} has no delivery file")
    return Path(clip.file.path)


@functools.lru_cache(maxsize=4)
def _decoded(path: str, sha256: str) -> tuple[np.ndarray, float, np.ndarray]:
    """(frames, fps, audio) of a delivery file. A handful are kept: every metric group of a clip needs the clip and
    its ground truth, and one ground truth serves every condition of its source. Keyed by content, so a replaced
    file is decoded again. Read-only: callers get copies (:func:`load_pair`), a few ms against ffmpeg's decode."""
    frames, fps = media.read_video(path)
    audio = media.read_audio(path, SAMPLE_RATE)
    frames.flags.writeable = audio.flags.writeable = False
    return frames, fps, audio


def load_pair(clip: Clip, *, with_faces: bool) -> ClipPair:
    """Decode a clip and its ground truth (cut to the shorter), with face boxes from the ground truth."""
    generated, fps, audio = _decoded(str(_media_file(clip)), clip.sha256)
    generated, audio = generated.copy(), audio.copy()
    reference = None
    ref_clip = ground_truth_of(clip)
    if ref_clip is clip:
        reference = generated
    elif ref_clip is not None:
        reference, ref_fps, _ = _decoded(str(_media_file(ref_clip)), ref_clip.sha256)
        reference = reference.copy()
        if abs(ref_fps - fps) > 1e-3 or reference.shape[1:] != generated.shape[1:]:
            raise MetricUnavailable(f"the ground truth ({ref_fps:g} fps, {reference.shape[2]}x{reference.shape[1]}) "
                                    f"and the clip ({fps:g} fps, {generated.shape[2]}x{generated.shape[1]}) differ "
                                    "in delivery profile")
        n = min(len(generated), len(reference))
        generated, reference = generated[:n], reference[:n]
    boxes = None
    if with_faces:
        tracked = ref_clip if reference is not None else clip
        boxes = face_boxes(reference if reference is not None else generated, key=tracked.sha256)[: len(generated)]
    return ClipPair(generated=generated, reference=reference, audio=audio, fps=fps, face_boxes=boxes)


def face_boxes(frames: np.ndarray, *, key: str) -> np.ndarray:
    """Face boxes of every frame, detected once per video content and cached (a track never changes)."""
    from generation.metrics.regions import detect_face_boxes

    path = _cache_path("faces", f"{key or 'unhashed'}-{len(frames)}.npy")
    if key and path.exists():
        return np.load(path)
    try:
        boxes = detect_face_boxes(frames)
    except FaceNotFoundError as exc:
        raise MetricUnavailable(f"no face found in the ground truth: {exc}") from exc
    if key:
        _atomic_write(path, lambda fh: np.save(fh, boxes))
    return boxes


def _cache_path(*parts: str) -> Path:
    return Path(settings.MEDIA_ROOT) / CACHE_DIR / Path(*parts)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


# --- computing -------------------------------------------------------------------------------------


def device() -> str:
    return render.inference_device()


def compute_clip_run(run: MetricRun, *, worker: str) -> bool:
    """Compute a clip-level group for a claimed run and store its values; False if the run was taken away."""
    group = catalog.GROUPS[run.group]
    clip = Clip.objects.select_related("reference", "condition").get(pk=run.clip_id)
    fingerprint = clip_fingerprint(clip)
    started = time.monotonic()
    try:
        if group.needs_reference and ground_truth_of(clip) is None:
            raise MetricUnavailable("compares with the ground truth, and this clip has no ready hidden reference")
        pair = load_pair(clip, with_faces=group.needs_faces)
        results = dict(group.compute(pair, device()))
    except MetricUnavailable as exc:
        results = catalog.unavailable_for_all(group, str(exc))
    missing = set(group.names) - set(results)
    if missing:
        raise RuntimeError(f"group {group.key} returned no value for {sorted(missing)}")
    return _store(run, group, fingerprint, time.monotonic() - started, worker,
                  lambda: _write_clip_values(clip, group, results))


def compute_condition_run(run: MetricRun, *, worker: str, heartbeat=None) -> bool:
    """Compute a condition-level group over the condition's clips (cached per-clip partials)."""
    group = catalog.GROUPS[run.group]
    clips = list(condition_clips(run.condition))
    fingerprint = condition_fingerprint(clips)
    started = time.monotonic()
    partials, skipped = [], []
    for clip in clips:
        try:
            partials.append(_clip_partial(clip, group))
        except MetricUnavailable as exc:
            skipped.append(f"clip {clip.pk}: {exc}")
        if heartbeat is not None:
            heartbeat()
    try:
        if not clips:
            raise MetricUnavailable("the condition has no ready clip with a ready hidden reference")
        if not partials:
            raise MetricUnavailable("no clip could be used: " + "; ".join(skipped[:3]))
        results = dict(group.combine(partials))
    except MetricUnavailable as exc:
        results = catalog.unavailable_for_all(group, str(exc))
    note = f"over {len(partials)} clips" + (f"; {len(skipped)} skipped ({'; '.join(skipped[:3])})" if skipped else "")
    return _store(run, group, fingerprint, time.monotonic() - started, worker,
                  lambda: _write_condition_values(run.condition, group, results, len(partials), note))


def _clip_partial(clip: Clip, group: catalog.MetricGroup) -> bytes:
    path = _cache_path(group.key, group.version, f"{clip_fingerprint(clip)}.bin")
    if path.exists():
        return path.read_bytes()
    pair = load_pair(clip, with_faces=group.needs_faces)
    data = group.partial(pair, device())
    _atomic_write(path, lambda fh: fh.write(data))
    return data


def _store(run: MetricRun, group: catalog.MetricGroup, fingerprint: str, seconds: float, worker: str, write) -> bool:
    with transaction.atomic():
        held = MetricRun.objects.select_for_update().filter(pk=run.pk, status=MetricRun.RUNNING).first()
        if held is None:
            log.warning("metric run %s was taken away while computing; results dropped", run.pk)
            return False
        write()
        MetricRun.objects.filter(pk=run.pk).update(
            status=MetricRun.DONE, version=group.version, inputs=fingerprint, error="", claimed_until=None,
            worker=worker, seconds=round(seconds, 3), updated_at=timezone.now(),
        )
    return True


def _value_fields(value, version: str, note: str = "") -> dict:
    if isinstance(value, MetricUnavailable):
        return dict(value=None, status=ClipMetric.UNAVAILABLE, detail=str(value), version=version)
    per_frame = None
    if isinstance(value, PerFrame):
        per_frame = [None if not math.isfinite(v) else round(float(v), 6) for v in np.asarray(value.frames, float)]
        value = value.value
    value = float(value)
    if not math.isfinite(value):
        return dict(value=None, status=ClipMetric.UNAVAILABLE, version=version, per_frame=per_frame,
                    detail="undefined for this clip (e.g. PSNR of frames identical to the ground truth)")
    return dict(value=value, status=ClipMetric.OK, detail=note, version=version, per_frame=per_frame)


def _write_clip_values(clip: Clip, group: catalog.MetricGroup, results) -> None:
    for name in group.names:
        fields = _value_fields(results[name], group.version, group.note)
        fields.setdefault("per_frame", None)
        ClipMetric.objects.update_or_create(clip=clip, name=name, defaults=fields)


def _write_condition_values(condition: Condition, group: catalog.MetricGroup, results, n_clips: int, note: str) -> None:
    for name in group.names:
        fields = _value_fields(results[name], group.version)
        fields.pop("per_frame", None)
        if fields["status"] == ConditionMetric.OK:
            fields["detail"] = "; ".join(filter(None, [note, group.note]))
        ConditionMetric.objects.update_or_create(condition=condition, name=name, defaults={**fields, "n_clips": n_clips})


def fail_run(run_id: int, error: str) -> None:
    """The run failed (a bug or unreadable media): say so on the run and on metrics that have no value yet.

    Values from an earlier successful computation are left as they are: a failed recomputation must not
    destroy data.
    """
    run = MetricRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    group = catalog.GROUPS.get(run.group)
    with transaction.atomic():
        MetricRun.objects.filter(pk=run_id).update(status=MetricRun.FAILED, error=error[:5000], claimed_until=None,
                                                   updated_at=timezone.now())
        if group is None:
            return
        for name in group.names:
            defaults = dict(value=None, status=ClipMetric.FAILED, detail=error[:2000], version=group.version)
            if run.clip_id:
                ClipMetric.objects.get_or_create(clip_id=run.clip_id, name=name, defaults=defaults)
            else:
                ConditionMetric.objects.get_or_create(condition_id=run.condition_id, name=name, defaults=defaults)


def release_run(run_id: int) -> None:
    MetricRun.objects.filter(pk=run_id, status=MetricRun.RUNNING).update(status=MetricRun.PENDING, claimed_until=None)


def extend_run_claim(run_id: int) -> None:
    lease = timezone.now() + timedelta(seconds=settings.SYNCMOS_JOB_LEASE_SECONDS)
    MetricRun.objects.filter(pk=run_id, status=MetricRun.RUNNING).update(claimed_until=lease)


# --- reading and exporting -------------------------------------------------------------------------

CLIP_METRIC_COLUMNS = ["clip", "condition", "condition_kind", "source", "content", "metric", "value", "status",
                       "detail", "version"]


def clip_metrics_frame(clips) -> pd.DataFrame:
    """Every stored clip metric of ``clips`` as a long table (researcher-side: it names conditions)."""
    rows = (ClipMetric.objects.filter(clip__in=clips)
            .values_list("clip_id", "clip__condition__name", "clip__condition__kind", "clip__source__name",
                         "clip__source__content_id", "name", "value", "status", "detail", "version")
            .order_by("clip_id", "name"))
    return pd.DataFrame.from_records(list(rows), columns=CLIP_METRIC_COLUMNS)


def clip_metrics_wide(clips) -> pd.DataFrame:
    """One row per clip, one column per metric (OK values only; NaN where unavailable) — for the analysis."""
    long = clip_metrics_frame(clips)
    ok = long[long["status"] == ClipMetric.OK]
    if ok.empty:
        return pd.DataFrame({"clip": pd.Series(dtype=int)})
    wide = ok.pivot_table(index="clip", columns="metric", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.reset_index()


CONDITION_TABLE_COLUMNS = ["condition", "metric", "label", "mean", "sd", "n", "n_unavailable", "higher_is_better",
                           "level", "detail"]


def condition_metric_table(clips: QuerySet) -> pd.DataFrame:
    """Per condition and metric: the mean and SD of clip values over ``clips`` (and the condition-level values
    such as FID, computed over all the condition's clips), with how many clips had no value and why."""
    long = clip_metrics_frame(clips)
    rows = []
    for (condition, metric), group in long.groupby(["condition", "metric"], sort=True):
        ok = group[group["status"] == ClipMetric.OK]["value"].astype(float)
        try:
            definition = catalog.metric_def(metric)
        except KeyError:
            continue  # a metric no longer in the catalog
        reasons = sorted(set(group.loc[group["status"] != ClipMetric.OK, "detail"]))
        rows.append(dict(condition=condition, metric=metric, label=definition.label,
                         mean=ok.mean() if len(ok) else math.nan, sd=ok.std(ddof=1) if len(ok) > 1 else math.nan,
                         n=len(ok), n_unavailable=len(group) - len(ok), higher_is_better=definition.higher_is_better,
                         level="clip", detail="; ".join(reasons)[:500]))
    condition_ids = Clip.objects.filter(pk__in=clips.values("pk")).values("condition_id")
    for cm in ConditionMetric.objects.filter(condition_id__in=condition_ids).select_related("condition"):
        try:
            definition = catalog.metric_def(cm.name)
        except KeyError:
            continue
        ok = cm.status == ConditionMetric.OK
        rows.append(dict(condition=cm.condition.name, metric=cm.name, label=definition.label,
                         mean=cm.value if ok else math.nan, sd=math.nan, n=cm.n_clips if ok else 0,
                         n_unavailable=0 if ok else 1, higher_is_better=definition.higher_is_better,
                         level="condition", detail=cm.detail))
    return pd.DataFrame(rows, columns=CONDITION_TABLE_COLUMNS)


def seeds_table(clips: QuerySet) -> pd.DataFrame:
    """The seeds' metric table: Method | SSIM | PSNR | FID | IFC | LMD | LSE-C | LSE-D, one row per condition
    (NaN where a metric is unavailable; see :func:`condition_metric_table` for why)."""
    table = condition_metric_table(clips)
    methods = sorted(table["condition"].unique()) if len(table) else []
    out = pd.DataFrame({"Method": methods})
    for name, label in catalog.SEEDS_TABLE:
        values = table[table["metric"] == name].set_index("condition")["mean"]
        out[label] = [values.get(m, math.nan) for m in methods]
    return out


def run_status_counts(clips: QuerySet) -> list[dict]:
    """Metric runs of these clips (and of their conditions) by group and status, for progress displays."""
    ids = clips.values("pk")
    conditions = Clip.objects.filter(pk__in=ids).values("condition_id")
    runs = MetricRun.objects.filter(Q(clip_id__in=ids) | Q(condition_id__in=conditions))
    counts: dict[str, dict[str, int]] = {}
    for group, status in runs.values_list("group", "status"):
        counts.setdefault(group, {s: 0 for s, _ in MetricRun.STATUS_CHOICES})[status] += 1
    return [{"group": g, **c} for g, c in sorted(counts.items())]
