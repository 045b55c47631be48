"""Shared fixtures. Personas: alice is a researcher (staff), charlie an outsider; participants are
made by the flow itself (bob, in tests that need one, is whoever opens the study link)."""

import pytest


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(
        "alice", "alice@example.org", "alice-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def charlie(django_user_model):
    return django_user_model.objects.create_user("charlie", "charlie@example.org", "charlie-password")
