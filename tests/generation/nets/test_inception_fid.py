"""The FID Inception-v3 of pytorch-fid 0.3.0: the released file's layout (written out by hand below), strict
loading, the input transform, and features equal to pytorch-fid's own network (golden file made by
scripts/golden/make_fid_golden.py with pytorch-fid 0.3.0 + torchvision 0.28.0)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from generation.nets import inception_fid
from generation.weights import WeightsMismatchError, strict_load

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "fid_inception_golden.npz"



# ---------------------------------------------------------------------------------------------------------------
# The released layout of pt_inception-2015-12-05-6726825d.pth, written out by hand from torchvision's
# models/inception.py (Inception3 with num_classes=1008, aux_logits=False), which pytorch-fid's fid_inception_v3
# builds; its FIDInception blocks subclass torchvision's and keep their convs.
# ---------------------------------------------------------------------------------------------------------------


def basic_conv(name: str, cin: int, cout: int, kh: int, kw: int | None = None) -> list[tuple[str, tuple]]:
    kw = kh if kw is None else kw
    return [(f"{name}.conv.weight", (cout, cin, kh, kw)), (f"{name}.bn.weight", (cout,)), (f"{name}.bn.bias", (cout,)),
            (f"{name}.bn.running_mean", (cout,)), (f"{name}.bn.running_var", (cout,)),
            (f"{name}.bn.num_batches_tracked", ())]


def block_a(p: str, cin: int, pool: int):
    return (basic_conv(f"{p}.branch1x1", cin, 64, 1) + basic_conv(f"{p}.branch5x5_1", cin, 48, 1)
            + basic_conv(f"{p}.branch5x5_2", 48, 64, 5) + basic_conv(f"{p}.branch3x3dbl_1", cin, 64, 1)
            + basic_conv(f"{p}.branch3x3dbl_2", 64, 96, 3) + basic_conv(f"{p}.branch3x3dbl_3", 96, 96, 3)
            + basic_conv(f"{p}.branch_pool", cin, pool, 1))


def block_c(p: str, c7: int):
    return (basic_conv(f"{p}.branch1x1", 768, 192, 1) + basic_conv(f"{p}.branch7x7_1", 768, c7, 1)
            + basic_conv(f"{p}.branch7x7_2", c7, c7, 1, 7) + basic_conv(f"{p}.branch7x7_3", c7, 192, 7, 1)
            + basic_conv(f"{p}.branch7x7dbl_1", 768, c7, 1) + basic_conv(f"{p}.branch7x7dbl_2", c7, c7, 7, 1)
            + basic_conv(f"{p}.branch7x7dbl_3", c7, c7, 1, 7) + basic_conv(f"{p}.branch7x7dbl_4", c7, c7, 7, 1)
            + basic_conv(f"{p}.branch7x7dbl_5", c7, 192, 1, 7) + basic_conv(f"{p}.branch_pool", 768, 192, 1))


def block_e(p: str, cin: int):
    return (basic_conv(f"{p}.branch1x1", cin, 320, 1) + basic_conv(f"{p}.branch3x3_1", cin, 384, 1)
            + basic_conv(f"{p}.branch3x3_2a", 384, 384, 1, 3) + basic_conv(f"{p}.branch3x3_2b", 384, 384, 3, 1)
            + basic_conv(f"{p}.branch3x3dbl_1", cin, 448, 1) + basic_conv(f"{p}.branch3x3dbl_2", 448, 384, 3)
            + basic_conv(f"{p}.branch3x3dbl_3a", 384, 384, 1, 3) + basic_conv(f"{p}.branch3x3dbl_3b", 384, 384, 3, 1)
            + basic_conv(f"{p}.branch_pool", cin, 192, 1))


OFFICIAL_LAYOUT: list[tuple[str, tuple]] = (
    basic_conv("Conv2d_1a_3x3", 3, 32, 3) + basic_conv("Conv2d_2a_3x3", 32, 32, 3)
    + basic_conv("Conv2d_2b_3x3", 32, 64, 3) + basic_conv("Conv2d_3b_1x1", 64, 80, 1)
    + basic_conv("Conv2d_4a_3x3", 80, 192, 3)
    + block_a("Mixed_5b", 192, 32) + block_a("Mixed_5c", 256, 64) + block_a("Mixed_5d", 288, 64)
    + basic_conv("Mixed_6a.branch3x3", 288, 384, 3) + basic_conv("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
    + basic_conv("Mixed_6a.branch3x3dbl_2", 64, 96, 3) + basic_conv("Mixed_6a.branch3x3dbl_3", 96, 96, 3)
    + block_c("Mixed_6b", 128) + block_c("Mixed_6c", 160) + block_c("Mixed_6d", 160) + block_c("Mixed_6e", 192)
    + basic_conv("Mixed_7a.branch3x3_1", 768, 192, 1) + basic_conv("Mixed_7a.branch3x3_2", 192, 320, 3)
    + basic_conv("Mixed_7a.branch7x7x3_1", 768, 192, 1) + basic_conv("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7)
    + basic_conv("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1) + basic_conv("Mixed_7a.branch7x7x3_4", 192, 192, 3)
    + block_e("Mixed_7b", 1280) + block_e("Mixed_7c", 2048)
    + [("fc.weight", (1008, 2048)), ("fc.bias", (1008,))]
)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
# torchvision's Inception_V3_Weights.IMAGENET1K_V1 meta "num_params": inception_v3 with the aux classifier and
# 1000 classes (torchvision/models/inception.py).
TORCHVISION_INCEPTION_V3_PARAMS = 27_161_264
FID_INCEPTION_PARAMS = 23_850_960


def n_params(layout) -> int:
    return sum(int(np.prod(shape)) for key, shape in layout if not key.endswith(BUFFER_SUFFIXES))


def numbered_state(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: (torch.tensor(7) if key.endswith("num_batches_tracked") else torch.randn(shape, generator=generator))
            for key, shape in layout}


def test_state_dict_has_the_released_keys_and_shapes_in_torchvision_order():
    layout = inception_fid.official_layout()
    assert list(layout.items()) == OFFICIAL_LAYOUT
    assert len(layout) == 566  # 94 BasicConv2d x 6 tensors + fc weight and bias


def test_parameter_count_is_torchvision_inception_v3_without_aux_and_with_1008_classes():
    aux = basic_conv("AuxLogits.conv0", 768, 128, 1) + basic_conv("AuxLogits.conv1", 128, 768, 5)
    aux_params = n_params(aux) + 768 * 1000 + 1000  # AuxLogits convs and its Linear(768, 1000)
    extra_classes = 8 * (2048 + 1)  # fc for 1008 instead of 1000 classes
    assert TORCHVISION_INCEPTION_V3_PARAMS - aux_params + extra_classes == FID_INCEPTION_PARAMS
    assert n_params(OFFICIAL_LAYOUT) == FID_INCEPTION_PARAMS
    with torch.device("meta"):
        model = inception_fid.FIDInceptionV3()
    assert sum(p.numel() for p in model.parameters()) == FID_INCEPTION_PARAMS


def test_a_state_dict_with_the_released_layout_loads_strictly_and_verbatim():
    model = inception_fid.build_inception_fid("default")
    state = numbered_state(OFFICIAL_LAYOUT)
    strict_load(model, state, what="a file with the released layout", architecture="inception_fid")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_a_state_dict_with_one_other_shape_or_a_missing_key_is_refused():
    model = inception_fid.build_inception_fid("tiny")
    layout = list(inception_fid.official_layout(inception_fid.TINY).items())
    state = numbered_state(layout)
    state["fc.weight"] = torch.zeros(1000, model.feature_dim)
    with pytest.raises(WeightsMismatchError, match="fc.weight"):
        strict_load(model, state, what="x", architecture="inception_fid")
    state = numbered_state(layout)
    del state["Mixed_7c.branch_pool.bn.running_var"]
    with pytest.raises(WeightsMismatchError, match="missing"):
        strict_load(model, state, what="x", architecture="inception_fid")


def test_tiny_config_has_the_same_module_names_as_the_released_net():
    tiny = inception_fid.official_layout(inception_fid.TINY)
    assert list(tiny) == [key for key, _ in OFFICIAL_LAYOUT]
    assert inception_fid.TINY.feature_dim == tiny["fc.weight"][1]


def test_released_config_gives_2048_d_pool3_features():
    with torch.device("meta"):
        model = inception_fid.FIDInceptionV3()
    assert model.feature_dim == inception_fid.DEFAULT.feature_dim == 2048  # computed by the golden tests below


# The tiny net at a smaller input size, for the tests of the forward's plumbing (the resize test covers 299).
FAST = dataclasses.replace(inception_fid.TINY, input_size=107)


def test_forward_returns_one_feature_vector_per_image():
    torch.manual_seed(0)
    model = inception_fid.build_inception_fid(FAST).eval()
    with torch.inference_mode():
        features = model(torch.rand(3, 3, 50, 70))
    assert features.shape == (3, FAST.feature_dim)
    assert torch.isfinite(features).all() and (features >= 0).all()  # averages of ReLU outputs


def bilinear_half_pixel(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent numpy bilinear resize with align_corners=False semantics: source coordinate
    (dst + 0.5) * in / out - 0.5, clamped at 0, neighbours clamped at the last row/column. image: (C, H, W)."""

    def axis_weights(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis_weights(image.shape[1], out_h)
    x0, x1, wx = axis_weights(image.shape[2], out_w)
    rows = image[:, y0, :] * (1 - wy)[None, :, None] + image[:, y1, :] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


@pytest.mark.parametrize("size", [(40, 57), (299, 299), (480, 360)])
def test_input_is_resized_bilinearly_to_299_without_antialias_and_scaled_to_minus_one_one(size):
    rng = np.random.default_rng(1)
    image = rng.random((3, *size))
    transformed = inception_fid.resize_and_scale(torch.from_numpy(image)[None]).numpy()[0]
    expected = 2 * bilinear_half_pixel(image, 299, 299) - 1
    assert transformed.shape == (3, 299, 299)
    np.testing.assert_allclose(transformed, expected, atol=1e-12)
    assert transformed.min() >= -1 and transformed.max() <= 1


def test_forward_feeds_the_transformed_input_to_the_network(monkeypatch):
    torch.manual_seed(0)
    model = inception_fid.build_inception_fid(FAST).eval()
    seen = {}
    original = model.pool3

    def spy(x):
        seen["input"] = x
        return original(x)

    monkeypatch.setattr(model, "pool3", spy)
    images = torch.rand(2, 3, 31, 45)
    with torch.inference_mode():
        features = model(images)
        direct = original(F.interpolate(images, size=(107, 107), mode="bilinear", align_corners=False) * 2 - 1)
    assert seen["input"].shape == (2, 3, 107, 107)
    assert torch.equal(features, direct)


def test_features_are_deterministic_and_independent_of_the_batch():
    torch.manual_seed(0)
    model = inception_fid.build_inception_fid(FAST).eval()
    images = torch.rand(3, 3, 80, 80)
    with torch.inference_mode():
        first, second = model(images), model(images)
        alone = model(images[1:2])
    assert torch.equal(first, second)
    torch.testing.assert_close(alone[0], first[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Against pytorch-fid itself. The two recipes below are copies of scripts/golden/make_fid_golden.py's; the golden
# file's state sums and image hashes check that the copies still agree.
# ---------------------------------------------------------------------------------------------------------------

GOLDEN_RTOL = 1e-4


def _golden_recipes():
    """The recipes of scripts/golden/make_fid_golden.py (which made the golden file with pytorch-fid itself), imported
    from the script so that the weights and images rebuilt here are the ones the oracle saw; the sums and hashes
    stored in the golden file check that nothing drifted since."""
    path = Path(__file__).resolve().parents[3] / "scripts" / "golden" / "make_fid_golden.py"
    spec = importlib.util.spec_from_file_location("make_fid_golden", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_recipes = _golden_recipes()
GOLDEN_SEED = _recipes.SEED
GOLDEN_INPUTS = _recipes.GOLDEN_INPUTS
seeded_state_dict = _recipes.seeded_state_dict
golden_images = _recipes.golden_images
to_unit_batch = _recipes.to_unit_batch


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


@pytest.fixture(scope="module")
def seeded_model(golden):
    layout = inception_fid.official_layout()
    state = seeded_state_dict(layout)
    np.testing.assert_allclose([state[key].double().sum().item() for key in layout], golden["state_sums"],
                               rtol=1e-12, err_msg="the state-dict recipe drifted from the golden script's")
    model = inception_fid.FIDInceptionV3()
    strict_load(model, state, what="seeded state dict", architecture="inception_fid")
    return model.eval()


def golden_input(name: str, golden) -> torch.Tensor:
    images = golden_images(*GOLDEN_INPUTS[name])
    assert hashlib.sha256(images.tobytes()).hexdigest() == str(golden[f"images_{name}"]), "image recipe drifted"
    return to_unit_batch(images)


def test_layout_equals_the_one_pytorch_fid_loads_the_released_file_into(golden):
    oracle = [(key, tuple(shape)) for key, shape in json.loads(str(golden["layout"]))]
    assert list(inception_fid.official_layout().items()) == oracle == OFFICIAL_LAYOUT
    assert json.loads(str(golden["versions"]))["pytorch-fid"] == "0.3.0"


@pytest.mark.parametrize("name", sorted(GOLDEN_INPUTS))
def test_features_equal_pytorch_fid_on_seeded_random_weights(name, golden, seeded_model):
    expected = golden[f"features_{name}"]
    with torch.inference_mode():
        ours = seeded_model(golden_input(name, golden)).numpy()
    assert ours.shape == expected.shape == (GOLDEN_INPUTS[name][2], 2048)
    np.testing.assert_allclose(ours, expected, rtol=GOLDEN_RTOL, atol=GOLDEN_RTOL * np.abs(expected).max())


def torchvision_avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)  # counts the zero padding


@pytest.mark.parametrize("patch", ["count_include_pad in A and C", "average pool in Mixed_7c"])
def test_the_golden_features_tell_the_fid_patches_from_torchvision(patch, golden, seeded_model, monkeypatch):
    """The comparison above can fail: undoing either FID patch moves the features far beyond its tolerance."""
    if patch == "count_include_pad in A and C":
        monkeypatch.setattr(inception_fid, "tf_avg_pool_3x3", torchvision_avg_pool_3x3)
    else:
        monkeypatch.setattr(seeded_model.Mixed_7c, "pool", inception_fid.tf_avg_pool_3x3)
    expected = golden["features_small"][:1]
    with torch.inference_mode():
        ours = seeded_model(golden_input("small", golden)[:1]).numpy()
    assert np.abs(ours - expected).max() > 100 * GOLDEN_RTOL * np.abs(expected).max()
