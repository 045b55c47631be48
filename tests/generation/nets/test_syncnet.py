"""SyncNet ``S`` of joonson/syncnet_python (generation/nets/syncnet.py) and the loading of ``syncnet_v2.model``.

The official key layout is written out by hand from syncnet_python's SyncNetModel.py (master 6efbb1c): the index
of every layer counts the ReLU and MaxPool layers of its ``nn.Sequential``; metrics_models.md §1.2-§1.3.
"""

import pytest
import torch

from generation import weights
from generation.metrics import syncnet_weights
from generation.nets.syncnet import (
    ARCHITECTURE_NAME,
    SYNCNET_V2_CONFIGS,
    SYNCNET_V2_DEFAULT,
    SYNCNET_V2_TINY,
    SyncNetV2,
    SyncNetV2Config,
    trainable_parameters,
)

# (module path, kind, weight shape); convs and linears have a bias of shape (out,), every BatchNorm has
# weight, bias, running_mean, running_var of shape (channels,) and a num_batches_tracked counter.
OFFICIAL_LAYERS = [
    ("netcnnaud.0", "conv", (64, 1, 3, 3)),  # 13x20
    ("netcnnaud.1", "bn", (64,)),
    ("netcnnaud.4", "conv", (192, 64, 3, 3)),
    ("netcnnaud.5", "bn", (192,)),  # max-pool 3x3 stride (1, 2) -> 11x9
    ("netcnnaud.8", "conv", (384, 192, 3, 3)),
    ("netcnnaud.9", "bn", (384,)),
    ("netcnnaud.11", "conv", (256, 384, 3, 3)),
    ("netcnnaud.12", "bn", (256,)),
    ("netcnnaud.14", "conv", (256, 256, 3, 3)),
    ("netcnnaud.15", "bn", (256,)),  # max-pool 3x3 stride 2 -> 5x4
    ("netcnnaud.18", "conv", (512, 256, 5, 4)),  # -> 1x1
    ("netcnnaud.19", "bn", (512,)),
    ("netfcaud.0", "linear", (512, 512)),
    ("netfcaud.1", "bn", (512,)),
    ("netfcaud.3", "linear", (1024, 512)),
    ("netfclip.0", "linear", (512, 512)),
    ("netfclip.1", "bn", (512,)),
    ("netfclip.3", "linear", (1024, 512)),
    ("netcnnlip.0", "conv", (96, 3, 5, 7, 7)),  # 5x224x224 -> 1x109x109, max-pool -> 54
    ("netcnnlip.1", "bn", (96,)),
    ("netcnnlip.4", "conv", (256, 96, 1, 5, 5)),  # -> 26, max-pool -> 13
    ("netcnnlip.5", "bn", (256,)),
    ("netcnnlip.8", "conv", (256, 256, 1, 3, 3)),
    ("netcnnlip.9", "bn", (256,)),
    ("netcnnlip.11", "conv", (256, 256, 1, 3, 3)),
    ("netcnnlip.12", "bn", (256,)),
    ("netcnnlip.14", "conv", (256, 256, 1, 3, 3)),
    ("netcnnlip.15", "bn", (256,)),  # max-pool -> 6
    ("netcnnlip.18", "conv", (512, 256, 1, 6, 6)),  # -> 1x1x1
    ("netcnnlip.19", "bn", (512,)),
]


def official_shapes(with_counters: bool = True) -> dict[str, tuple]:
    shapes = {}
    for path, kind, shape in OFFICIAL_LAYERS:
        if kind == "bn":
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{path}.{name}"] = shape
            if with_counters:
                shapes[f"{path}.num_batches_tracked"] = ()
        else:
            shapes[f"{path}.weight"] = shape
            shapes[f"{path}.bias"] = (shape[0],)
    return shapes


def official_state_dict(with_counters: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(with_counters).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    return state


def official_trainable_count() -> int:
    """Weights + biases of convs and linears, BatchNorm weight + bias: the arithmetic of metrics_models.md §1.2."""
    total = 0
    for _, kind, shape in OFFICIAL_LAYERS:
        n = 1
        for s in shape:
            n *= s
        total += 2 * shape[0] if kind == "bn" else n + shape[0]
    return total


def test_default_config_has_exactly_the_official_keys_and_shapes():
    own = {k: tuple(v.shape) for k, v in SyncNetV2(SYNCNET_V2_DEFAULT).state_dict().items()}
    assert own == official_shapes()


def test_default_config_has_13_631_616_trainable_parameters_split_as_in_the_notes():
    model = SyncNetV2(SYNCNET_V2_DEFAULT)
    assert official_trainable_count() == 13_631_616
    assert trainable_parameters(model) == 13_631_616
    assert trainable_parameters(model.netcnnaud) == 4_875_712
    assert trainable_parameters(model.netcnnlip) == 7_177_920
    assert trainable_parameters(model.netfcaud) == trainable_parameters(model.netfclip) == 788_992


def test_default_outputs_are_1024_d_per_window():
    model = SyncNetV2(SYNCNET_V2_DEFAULT).eval()
    with torch.no_grad():
        audio = model.forward_aud(torch.randn(2, 1, 13, 20))
        video = model.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255)
        lipfeat = model.forward_lipfeat(torch.rand(1, 3, 5, 224, 224) * 255)
    assert audio.shape == video.shape == (2, 1024)
    assert lipfeat.shape == (1, 512)


def test_224_is_hard_wired_in_the_official_config_and_other_crops_derive_the_last_kernel():
    assert SYNCNET_V2_DEFAULT.crop_size == 224 and SYNCNET_V2_DEFAULT.lip_final_kernel == 6
    assert SYNCNET_V2_TINY.lip_final_kernel == 2  # 96 -> 45 -> 22 -> 10 -> 5 -> 5 -> 2
    model = SyncNetV2(SYNCNET_V2_DEFAULT).eval()
    with pytest.raises(ValueError, match="224"):
        model.forward_lip(torch.rand(1, 3, 5, 192, 192))
    with pytest.raises(ValueError, match="too small"):
        SyncNetV2Config(crop_size=32)


def test_tiny_config_keeps_the_topology_and_key_names_with_narrow_widths():
    tiny = SyncNetV2(SYNCNET_V2_TINY).eval()
    official_keys = set(official_shapes())
    assert set(tiny.state_dict()) == official_keys
    assert tiny.state_dict()["netcnnlip.18.weight"].shape == (128, 64, 1, 2, 2)
    with torch.no_grad():
        assert tiny.forward_aud(torch.randn(3, 1, 13, 20)).shape == (3, 128)
        assert tiny.forward_lip(torch.rand(3, 3, 5, 96, 96) * 255).shape == (3, 128)
    assert set(SYNCNET_V2_CONFIGS) == {"default", "tiny"}


def test_wrong_input_shapes_are_refused_with_the_expected_shape():
    tiny = SyncNetV2(SYNCNET_V2_TINY).eval()
    with pytest.raises(ValueError, match=r"\(N, 1, 13, 20\)"):
        tiny.forward_aud(torch.randn(2, 1, 13, 16))
    with pytest.raises(ValueError, match=r"\(N, 3, 5, 96, 96\)"):
        tiny.forward_lip(torch.rand(2, 3, 4, 96, 96))


def test_lip_sequence_gives_every_window_as_forward_lip_does():
    torch.manual_seed(0)
    tiny = SyncNetV2(SYNCNET_V2_TINY).eval()
    for module in tiny.modules():  # non-trivial running statistics, so eval-mode BatchNorm does something
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    clip = torch.rand(2, 3, 12, 96, 96) * 255
    with torch.no_grad():
        sequence = tiny.forward_lip_sequence(clip)  # (2, 8, 128)
        windows = torch.stack([tiny.forward_lip(clip[:, :, t:t + 5]) for t in range(8)], dim=1)
    assert sequence.shape == (2, 8, 128)
    torch.testing.assert_close(sequence, windows, rtol=1e-4, atol=1e-4)


# --- loading syncnet_v2.model -----------------------------------------------------------------------------


@pytest.mark.parametrize("with_counters", [True, False], ids=["with num_batches_tracked", "without"])
def test_official_flat_state_dict_loads_strictly_by_name(tmp_path, with_counters):
    state = official_state_dict(with_counters)
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    model = syncnet_weights.build_syncnet_from_file(path)
    loaded = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert not model.training


def test_an_extra_key_or_another_shape_is_refused(tmp_path):
    extra = official_state_dict()
    extra["netcnnaud.20.weight"] = torch.zeros(3)
    torch.save(extra, tmp_path / "extra.model")
    with pytest.raises(weights.WeightsMismatchError, match="unexpected"):
        syncnet_weights.build_syncnet_from_file(tmp_path / "extra.model")

    other = official_state_dict()
    other["netcnnlip.18.weight"] = torch.zeros(512, 256, 1, 5, 5)  # a crop size other than 224
    torch.save(other, tmp_path / "other.model")
    with pytest.raises(weights.WeightsMismatchError, match="netcnnlip.18.weight"):
        syncnet_weights.build_syncnet_from_file(tmp_path / "other.model")

    missing = official_state_dict()
    del missing["netfclip.3.bias"]
    torch.save(missing, tmp_path / "missing.model")
    with pytest.raises(weights.WeightsMismatchError, match="missing"):
        syncnet_weights.build_syncnet_from_file(tmp_path / "missing.model")


def test_load_syncnet_v2_reads_the_weights_folder_and_names_file_and_url_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(weights.WeightsMissingError) as missing:
        syncnet_weights.load_syncnet_v2()
    assert "syncnet_v2.model" in str(missing.value)
    assert syncnet_weights.SYNCNET_V2_URL in str(missing.value)

    torch.save(official_state_dict(with_counters=False), tmp_path / "syncnet_v2.model")
    model = syncnet_weights.load_syncnet_v2()
    assert isinstance(model, SyncNetV2) and model.config == SYNCNET_V2_DEFAULT
    assert syncnet_weights.load_syncnet_v2() is model  # cached while the file is unchanged


def test_a_syncmos_checkpoint_carries_its_config(tmp_path):
    tiny = SyncNetV2(SYNCNET_V2_TINY)
    path = weights.save_checkpoint(tmp_path / "tiny.pt", tiny, architecture=ARCHITECTURE_NAME, config=tiny.config)
    model = syncnet_weights.build_syncnet_from_file(path)
    assert model.config == SYNCNET_V2_TINY
    other = weights.save_checkpoint(tmp_path / "other.pt", tiny, architecture="avsyncnet", config=tiny.config)
    with pytest.raises(weights.WeightsMismatchError, match="avsyncnet"):
        syncnet_weights.build_syncnet_from_file(other)


def test_committed_tiny_demo_syncnet_loads_and_is_small():
    model = syncnet_weights.load_demo_syncnet_v2_tiny()
    assert model.config == SYNCNET_V2_TINY
    assert syncnet_weights.DEMO_SYNCNET_V2_TINY.stat().st_size < 3 * 1024 * 1024
