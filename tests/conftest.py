"""Shared fixtures. Personas: alice is a researcher (staff), charlie an outsider; participants are
made by the flow itself (bob, in tests that need one, is whoever opens the study link)."""

import pytest

from tests.fixtures import ClipFile, write_clip_files


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(
        "alice", "alice@example.org", "alice-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def charlie(django_user_model):
    return django_user_model.objects.create_user("charlie", "charlie@example.org", "charlie-password")


def pytest_sessionfinish(session, exitstatus):
    """Remove the per-run media and static folders that tests/settings.py made."""
    import shutil

    from django.conf import settings

    for folder in (getattr(settings, "MEDIA_ROOT", None), getattr(settings, "STATIC_ROOT", None)):
        if folder and "syncmos-test-" in str(folder):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory) -> list[ClipFile]:
    """One real 1-second mp4 (H.264 + AAC) per fixture condition, made and probed once per test session."""
    return write_clip_files(tmp_path_factory.mktemp("fixture-clips"))
