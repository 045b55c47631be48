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


@pytest.fixture(scope="session")
def training_corpus(tmp_path_factory):
    """The synthetic corpus preprocessed into Wav2Lip's training layout, once per test session.

    One face (astronaut), one voice, two sentences, 128 px frames: two ~2.2 s videos of about 55 frames.
    The raw clips stay in ``<root>/corpus``; returns the root (generation.training.preprocess.corpus_dataset).
    """
    from generation import corpus
    from generation.training import preprocess

    config = corpus.CorpusConfig(faces=("astronaut",), voices=("en-us",), sentences_per_voice=2, size=128, seed=3)
    return preprocess.corpus_dataset(tmp_path_factory.mktemp("training-corpus"), config)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch code on one intra-op thread, restored afterwards. The values do not depend on the thread
    count; on a shared 2-core machine torch's per-op thread barriers make many small ops (SSIM's blurs, tiny
    convolutions) up to ~100x slower with two threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
