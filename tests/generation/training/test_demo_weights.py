"""The committed demo weights: small, exactly the files the manifest names, loadable, and — for the families
that learned it — a mouth that follows the audio on sentences they never trained on."""

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
def held_out(tmp_path_factory):
    return demo.held_out_items(tmp_path_factory.mktemp("held-out"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_held_out_lip_sync_in_the_manifest_is_what_the_weights_do(family, entries, held_out):
    entry = entries[family]
    measured = demo.held_out_lip_sync(demo.WEIGHTS_DIR / entry["file"], family, held_out)
    for key, value in entry["held_out_lip_sync"].items():
        assert measured[key] == pytest.approx(value, abs=0.02), (key, measured, entry["held_out_lip_sync"])
    if family in demo.MIN_SYNCED_CORRELATION:  # the families the closing note says learned sync
        assert measured["synced"] > demo.MIN_SYNCED_CORRELATION[family], measured
        assert measured["synced"] > measured["mismatched"] + 0.2, measured
