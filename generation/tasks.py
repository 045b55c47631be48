"""Thin Celery tasks: take ids, claim the row, call plain functions, record the outcome.

Routing (settings.CELERY_TASK_ROUTES): rendering raw frames goes to queue "gpu" — even for
controls, so the route models use is exercised — and normalization goes to queue "cpu".
Tasks are ``acks_late``: a worker that dies mid-task leaves the message to be redelivered, and the
row's lease (Clip.claim) lets the next worker take it over. Bad input fails one clip with a clear
error; database hiccups are retried.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError, transaction

from generation import media, services
from generation.controls import ControlError
from generation.faces import FaceNotFoundError
from generation.models import Clip
from generation.render import RenderError

log = logging.getLogger(__name__)

# Errors caused by the input itself: retrying cannot help, so the clip fails with the message.
# Any other exception also fails the clip (never leaving it claimed forever), with a traceback logged.
INPUT_ERRORS = (media.MediaError, ControlError, FaceNotFoundError, RenderError, FileNotFoundError)
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
TASK_OPTIONS = dict(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=3)


@shared_task(name="generation.start_job", **TASK_OPTIONS)
def start_job(self, job_id: int) -> None:
    job = services.claim_job(job_id)
    if job is None:
        return  # gone, or another worker is already fanning it out
    for clip_id in services.plan_clips(job):
        transaction.on_commit(lambda clip_id=clip_id: render_raw_clip.delay(clip_id))


@shared_task(name="generation.render_raw_clip", **TASK_OPTIONS)
def render_raw_clip(self, clip_id: int) -> None:
    clip = Clip.objects.select_related("condition", "source__own_audio", "audio").filter(pk=clip_id).first()
    if clip is None or not clip.claim(Clip.PENDING, Clip.RENDERING):
        return
    try:
        from generation.render import render

        render(services.render_request(clip))
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, clip, exc, back_to=Clip.PENDING)
    except Exception as exc:
        _fail(clip, exc)
        return
    services.mark_rendered(clip_id, worker=self.request.hostname or "in-process")
    transaction.on_commit(lambda: normalize_clip.delay(clip_id))


@shared_task(name="generation.normalize_clip", **TASK_OPTIONS)
def normalize_clip(self, clip_id: int) -> None:
    clip = Clip.objects.select_related("job").filter(pk=clip_id).first()
    if clip is None or not clip.claim(Clip.RENDERED, Clip.NORMALIZING):
        return
    try:
        profile = media.DeliveryProfile.from_options(clip.job.options if clip.job else {})
        destination = services.media_path(f"clips/{clip.delivery_name}")
        info = media.normalize(services.raw_path(clip), destination, profile)
        services.finish_clip(clip, info, media.sha256_file(destination), worker=self.request.hostname or "in-process")
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, clip, exc, back_to=Clip.RENDERED)
    except Exception as exc:
        _fail(clip, exc)
        return
    if clip.job_id:
        services.refresh_progress(clip.job_id)


def _retry_or_fail(task, clip: Clip, exc: Exception, *, back_to: str) -> None:
    """A database hiccup: hand the clip back and retry later, or fail it once retries run out."""
    if task.request.retries >= task.max_retries:
        _fail(clip, exc)
        raise exc
    services.release_clip(clip.pk, back_to=back_to)
    raise task.retry(exc=exc, countdown=5 * (task.request.retries + 1))


def _fail(clip: Clip, exc: Exception) -> None:
    """Fail one clip with a message a researcher can act on; the job's other clips go on."""
    if isinstance(exc, INPUT_ERRORS):
        log.warning("clip %s failed: %s", clip.pk, exc)
    else:  # a bug, not bad input: keep the traceback in the worker log
        log.exception("clip %s failed with an unexpected error", clip.pk)
    services.fail_clip(clip.pk, f"{exc.__class__.__name__}: {exc}")
    if clip.job_id:
        services.refresh_progress(clip.job_id)
