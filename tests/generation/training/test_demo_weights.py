"""The committed demo weights: small, exactly the files the manifest names, loadable, and their mouths move
with the audio on sentences they never trained on."""

from __future__ import annotations

import pytest

from generation import media, weights
from generation.training import demo

FAMILIES = {"wav2lip", "attn_wav2lip", "lipgan", "l1wgan_gp", "stabsync"}


@pytest.fixture(scope="module")
def entries():
    found = demo.manifest_entries()
    assert found, f"no demo weights manifest at {demo.MANIFEST}; run `make demo-weights`"
    return {e["architecture"]: e for e in found}


def test_every_family_has_a_demo_checkpoint_under_5_mb_with_its_recipe(entries):
    assert set(entries) == FAMILIES
    for entry in entries.values():
        path = demo.WEIGHTS_DIR / entry["file"]
        assert path.stat().st_size < 5 * 1024 * 1024
        assert media.sha256_file(path) == entry["sha256"]
        assert (demo.REPO / entry["config"]).is_file()
        assert "make demo-weights" in entry["command"]


def test_the_demo_checkpoints_are_registered_and_load_strictly(entries):
    for entry in entries.values():
        spec = weights.REGISTRY[entry["name"]]
        assert spec.sha256 == entry["sha256"] and weights.is_installed(spec)
        model = weights.load_registered(entry["name"])
        assert model.input_spec.face_size == 96


@pytest.fixture(scope="module")
def held_out_items(tmp_path_factory):
    """Two sentences of the demo study's corpus (seed 0), which the demo weights (seed 7) never saw."""
    from generation import corpus

    config = corpus.CorpusConfig(faces=("astronaut",), voices=("en-us", "en+f3"), sentences_per_voice=1,
                                 size=160, seed=0)
    return corpus.build_corpus(tmp_path_factory.mktemp("held-out"), config)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_demo_model_opens_its_mouth_with_the_audio(family, entries, held_out_items):
    item, other = held_out_items
    model = weights.load_registered(entries[family]["name"])
    result = demo.lip_sync_correlation(model, item, media.read_audio(other.audio_path))
    assert result["synced"] > demo.MIN_SYNCED_CORRELATION[family], result
    assert result["synced"] > result["mismatched"] + 0.2, result
