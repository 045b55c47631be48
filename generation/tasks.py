"""Thin Celery tasks: take ids, claim the row, call plain functions, record the outcome.

Routing (settings.CELERY_TASK_ROUTES): rendering raw frames goes to queue "gpu" — even for
controls, so the route models use is exercised — and normalization goes to queue "cpu".
Tasks are ``acks_late``: a worker that dies mid-task leaves the message to be redelivered. A
redelivered task that finds the row still claimed comes back when the claim's lease runs out and
then takes the work over. Bad input fails one clip with a clear error; database hiccups are retried.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from generation import media, metric_services, render, services, weights
from generation.audio import AudioError
from generation.controls import ControlError
from generation.faces import FaceNotFoundError
from generation.models import Clip, MetricRun

log = logging.getLogger(__name__)

# Errors caused by the input itself: retrying cannot help, so the clip fails with the message.
# Any other exception also fails the clip (never leaving it claimed forever), with a traceback logged.
INPUT_ERRORS = (
    media.MediaError, AudioError, ControlError, FaceNotFoundError, render.RenderError, weights.WeightsError,
    FileNotFoundError,
)
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
TASK_OPTIONS = dict(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=5)


@shared_task(name="generation.start_job", **TASK_OPTIONS)
def start_job(self, job_id: int) -> None:
    job = services.claim_job(job_id)
    if job is None:
        return  # gone, or another worker is already fanning it out
    try:
        plan = services.plan_clips(job)
    except TRANSIENT_ERRORS as exc:
        services.release_job(job_id)
        raise self.retry(exc=exc, countdown=5 * (self.request.retries + 1))
    except Exception as exc:
        log.exception("job %s could not be planned", job_id)
        services.fail_job(job_id, f"{exc.__class__.__name__}: {exc}")
        return
    for clip_id in plan.to_render:
        transaction.on_commit(lambda clip_id=clip_id: render_raw_clip.delay(clip_id))
    for clip_id in plan.to_normalize:
        transaction.on_commit(lambda clip_id=clip_id: normalize_clip.delay(clip_id))


@shared_task(name="generation.render_raw_clip", **TASK_OPTIONS)
def render_raw_clip(self, clip_id: int) -> None:
    clip = (Clip.objects.select_related("condition__checkpoint", "source__own_audio", "audio")
            .filter(pk=clip_id).first())
    if clip is None or not _claimed(self, clip, Clip.PENDING, Clip.RENDERING):
        return
    try:
        render.render(services.render_request(clip), heartbeat=lambda: services.extend_claim(clip_id, Clip.RENDERING))
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, clip, exc, held=Clip.RENDERING, back_to=Clip.PENDING)
    except Exception as exc:
        _fail(clip, exc)
        return
    if services.mark_rendered(clip_id, worker=self.request.hostname or "in-process"):
        transaction.on_commit(lambda: normalize_clip.delay(clip_id))


@shared_task(name="generation.normalize_clip", **TASK_OPTIONS)
def normalize_clip(self, clip_id: int) -> None:
    clip = Clip.objects.filter(pk=clip_id).first()
    if clip is None or not _claimed(self, clip, Clip.RENDERED, Clip.NORMALIZING):
        return
    try:
        destination = services.media_path(f"clips/{clip.delivery_name}")
        info = media.normalize(services.raw_path(clip), destination, media.DeliveryProfile.from_options(clip.profile))
        services.finish_clip(clip, info, media.sha256_file(destination), worker=self.request.hostname or "in-process")
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, clip, exc, held=Clip.NORMALIZING, back_to=Clip.RENDERED)
    except Exception as exc:
        _fail(clip, exc)
        return
    services.refresh_jobs_of(clip_id)


def _claimed(task, clip: Clip, from_status: str, to_status: str) -> bool:
    """Claim the clip for this step; if another worker's lease is live, come back when it ends."""
    return _took(task, clip, clip.claim(from_status, to_status), give_up=lambda message: _fail(
        clip, render.RenderError(f"{message} while making this clip (out of memory or a crash?); not retried again")))


def _took(task, row, outcome: str, give_up) -> bool:
    """What a task does with the outcome of a lease claim (models.LeasedClaim) on ``row``.

    BUSY: a redelivery while the first worker may still be at it (or died holding the claim) comes back when the
    lease runs out. A row claimed more than SYNCMOS_MAX_CLIP_CLAIMS times keeps taking its worker down (out of
    memory, a native crash): ``give_up`` fails it, so one bad input cannot kill worker after worker.
    """
    if outcome == row.BUSY and not task.request.is_eager:
        raise task.retry(countdown=row.lease_left() + 1, max_retries=None)
    if outcome == row.BUSY:
        log.warning("%s is claimed by another process until %s; leaving it", row, row.claimed_until)
    if outcome == row.CLAIMED and row.attempts > settings.SYNCMOS_MAX_CLIP_CLAIMS:
        give_up(f"workers stopped {row.attempts - 1} times")
        return False
    return outcome == row.CLAIMED


def _retry_or_fail(task, clip: Clip, exc: Exception, *, held: str, back_to: str) -> None:
    """A database hiccup: hand the clip back and retry later, or fail it once retries run out."""
    if task.request.retries >= task.max_retries:
        _fail(clip, exc)
        raise exc
    services.release_clip(clip.pk, held=held, back_to=back_to)
    raise task.retry(exc=exc, countdown=5 * (task.request.retries + 1))


def _fail(clip: Clip, exc: Exception) -> None:
    """Fail one clip with a message a researcher can act on; the job's other clips go on."""
    if isinstance(exc, INPUT_ERRORS):
        log.warning("clip %s failed: %s", clip.pk, exc)
    else:  # a bug, not bad input: keep the traceback in the worker log
        log.exception("clip %s failed with an unexpected error", clip.pk)
    services.fail_clip(clip.pk, f"{exc.__class__.__name__}: {exc}")
    services.refresh_jobs_of(clip.pk)


# --- metrics ---------------------------------------------------------------------------------------
# Enqueued by metric_services.enqueue with queue="gpu" or "cpu" per metric group.


@shared_task(name="generation.compute_clip_metrics", **TASK_OPTIONS)
def compute_clip_metrics(self, run_id: int) -> None:
    _run_metrics(self, run_id, lambda run, worker: metric_services.compute_clip_run(run, worker=worker))


@shared_task(name="generation.compute_condition_metrics", **TASK_OPTIONS)
def compute_condition_metrics(self, run_id: int) -> None:
    _run_metrics(self, run_id, lambda run, worker: metric_services.compute_condition_run(
        run, worker=worker, heartbeat=lambda: metric_services.extend_run_claim(run_id)))


def _run_metrics(task, run_id: int, compute) -> None:
    run = MetricRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    if not _took(task, run, run.claim(), give_up=lambda message: metric_services.fail_run(
            run_id, f"{message} on this run (out of memory or a crash?); not retried again")):
        return
    try:
        compute(run, task.request.hostname or "in-process")
    except TRANSIENT_ERRORS as exc:
        if task.request.retries >= task.max_retries:
            metric_services.fail_run(run_id, f"{exc.__class__.__name__}: {exc}")
            raise
        metric_services.release_run(run_id)
        raise task.retry(exc=exc, countdown=5 * (task.request.retries + 1))
    except Exception as exc:
        if isinstance(exc, INPUT_ERRORS):
            log.warning("metric run %s failed: %s", run_id, exc)
        else:
            log.exception("metric run %s failed with an unexpected error", run_id)
        metric_services.fail_run(run_id, f"{exc.__class__.__name__}: {exc}")
