"""studyapp: the Django site and the participant-facing rating app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
