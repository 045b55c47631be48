"""Thin Celery task: build and store a study's analysis report on queue "cpu" (big studies take minutes).

The task takes a :class:`analysis.models.StudyReport` id, claims the row with a conditional update (a
redelivered message finds it running and leaves it, unless the first worker's lease ran out), calls
:func:`analysis.services.produce_report` and records the outcome. Database hiccups are retried; anything else
fails the report with its message (a report that cannot be built says why in the admin).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from analysis import services

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)


@shared_task(name="analysis.build_study_report", bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=3)
def build_study_report(self, report_id: int) -> None:
    stored = services.claim_report(report_id)
    if stored is None:
        return  # gone, finished, or another worker holds it
    try:
        services.produce_report(stored, worker=self.request.hostname or "in-process")
    except TRANSIENT_ERRORS as exc:
        services.release_report(report_id)
        raise self.retry(exc=exc, countdown=10 * (self.request.retries + 1))
    except Exception as exc:
        log.exception("analysis report %s failed", report_id)
        services.fail_report(report_id, f"{exc.__class__.__name__}: {exc}")
