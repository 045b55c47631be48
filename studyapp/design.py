"""Study design workflows for researchers (admin actions and management commands call these)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from studyapp.models import Study, StudyClip


def create_study_from_clips(*, title: str, clips: Iterable, created_by=None, role: str = StudyClip.ROLE_TEST,
                            **fields) -> Study:
    """A draft study with the three default ACR scales and the given ready clips as test items."""
    with transaction.atomic():
        study = Study.objects.create(title=title, created_by=created_by, **fields)
        study.add_default_scales()
        StudyClip.objects.bulk_create([StudyClip(study=study, clip=clip, role=role) for clip in clips])
    return study
