"""The checkpoint registry: safe, strict loading; clear errors for missing or wrong files; nothing downloaded."""

import pytest
import torch

from generation import media, nets, weights
from generation.weights import WeightsMismatchError, WeightsMissingError


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path))
    return tmp_path


def _tiny(name="wav2lip", seed=0):
    arch = nets.get_architecture(name)
    torch.manual_seed(seed)
    return arch.build_generator(arch.config("tiny")).eval(), arch.config("tiny")


def _inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    spec = model.input_spec
    return (torch.randn(2, 1, 80, spec.mel_frames, generator=g),
            torch.rand(2, 6, spec.face_size, spec.face_size, generator=g))


def test_it_names_the_file_to_install_when_registered_weights_are_missing(weights_dir):
    with pytest.raises(WeightsMissingError) as err:
        weights.load_registered("wav2lip_gan")
    message = str(err.value)
    assert str(weights_dir / "wav2lip_gan.pth") in message and "never downloads" in message
    assert "Rudrabha/Wav2Lip" in message


def test_it_round_trips_a_syncmos_checkpoint_with_its_architecture_and_config(weights_dir):
    model, config = _tiny()
    path = weights.save_checkpoint(weights_dir / "tiny.pth", model, architecture="wav2lip", config=config,
                                   extra={"global_step": 7})
    loaded = weights.build_and_load(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS)
    assert not loaded.training
    with torch.inference_mode():
        assert torch.equal(model(*_inputs(model)), loaded(*_inputs(loaded)))
    assert torch.load(path, weights_only=True)["global_step"] == 7


def test_it_loads_the_authors_layout_after_remapping_the_dataparallel_prefix(weights_dir):
    model, _ = _tiny()
    official = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "global_step": 1,
                "global_epoch": 1, "optimizer": {}}
    torch.save(official, weights_dir / "w2l.pth")
    loaded = weights.build_and_load(weights_dir / "w2l.pth", architecture="wav2lip", layout=weights.LAYOUT_OFFICIAL,
                                    config="tiny")
    with torch.inference_mode():
        assert torch.equal(model(*_inputs(model)), loaded(*_inputs(loaded)))


def test_it_refuses_a_checkpoint_of_another_architecture(weights_dir):
    model, config = _tiny("attn_wav2lip")
    path = weights.save_checkpoint(weights_dir / "attn.pth", model, architecture="attn_wav2lip", config=config)
    with pytest.raises(WeightsMismatchError, match="is a 'attn_wav2lip' checkpoint, not 'wav2lip'"):
        weights.build_and_load(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS)


def test_it_refuses_weights_of_another_size_and_says_which_shapes_differ(weights_dir):
    model, _ = _tiny()
    torch.save({"state_dict": model.state_dict()}, weights_dir / "tiny_official.pth")
    with pytest.raises(WeightsMismatchError, match="other shapes"):
        weights.build_and_load(weights_dir / "tiny_official.pth", architecture="wav2lip",
                               layout=weights.LAYOUT_OFFICIAL, config="default")


def test_it_checks_the_registered_sha256(weights_dir):
    model, config = _tiny()
    path = weights.save_checkpoint(weights_dir / "tiny.pth", model, architecture="wav2lip", config=config)
    with pytest.raises(WeightsMismatchError, match="sha256"):
        weights.build_and_load(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS, sha256="0" * 64)
    assert weights.build_and_load(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS,
                                  sha256=media.sha256_file(path)) is not None


def test_it_never_unpickles_code_from_a_weight_file(weights_dir):
    model, _ = _tiny()
    torch.save(model, weights_dir / "whole_module.pth")  # a pickled nn.Module, not a state dict
    with pytest.raises(WeightsMismatchError, match="not a loadable PyTorch checkpoint"):
        weights.build_and_load(weights_dir / "whole_module.pth", architecture="wav2lip",
                               layout=weights.LAYOUT_OFFICIAL, config="tiny")
    (weights_dir / "garbage.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsMismatchError):
        weights.build_and_load(weights_dir / "garbage.pth", architecture="wav2lip", layout=weights.LAYOUT_OFFICIAL)


def test_it_reads_safetensors_files(weights_dir):
    from safetensors.torch import save_file

    model, _ = _tiny()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_dir / "w.safetensors"))
    loaded = weights.build_and_load(weights_dir / "w.safetensors", architecture="wav2lip",
                                    layout=weights.LAYOUT_OFFICIAL, config="tiny")
    with torch.inference_mode():
        assert torch.equal(model(*_inputs(model)), loaded(*_inputs(loaded)))


def test_it_keeps_one_loaded_model_per_file_in_a_worker_until_the_file_changes(weights_dir):
    import os

    model, config = _tiny()
    path = weights.save_checkpoint(weights_dir / "tiny.pth", model, architecture="wav2lip", config=config)
    first = weights.load_cached(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS)
    assert weights.load_cached(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS) is first
    other, _ = _tiny(seed=5)
    weights.save_checkpoint(path, other, architecture="wav2lip", config=config)
    os.utime(path, ns=(1, 10**18))  # a new modification time even on coarse clocks
    replaced = weights.load_cached(path, architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS)
    assert replaced is not first
    with torch.inference_mode():
        assert torch.equal(other(*_inputs(other)), replaced(*_inputs(replaced)))


@pytest.mark.parametrize("contents", [
    {"format": weights.SYNCMOS_FORMAT, "architecture": "wav2lip", "config": {}},  # no state dict
    {"format": weights.SYNCMOS_FORMAT, "architecture": "wav2lip", "config": {"no_such_field": 1}, "state_dict": {}},
    {"format": weights.SYNCMOS_FORMAT, "architecture": "wav2lip", "config": {},
     "state_dict": {"face_encoder_blocks.0.0.conv_block.0.weight": {"nested": 1}}},
])
def test_it_explains_a_malformed_syncmos_checkpoint(weights_dir, contents):
    torch.save(contents, weights_dir / "bad.pth")
    with pytest.raises(WeightsMismatchError, match="bad.pth"):
        weights.build_and_load(weights_dir / "bad.pth", architecture="wav2lip", layout=weights.LAYOUT_SYNCMOS)


def test_it_explains_a_damaged_safetensors_file(weights_dir):
    (weights_dir / "w.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsMismatchError, match="w.safetensors"):
        weights.build_and_load(weights_dir / "w.safetensors", architecture="wav2lip", layout=weights.LAYOUT_OFFICIAL)
