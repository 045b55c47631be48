"""Perceptual backbones (VGG-16/19, AlexNet) and LPIPS v0.1: the released file layouts, strict loading, the
LPIPS heads of the installed ``lpips`` package, LPIPS' properties, and the random-backbone policy."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys

import pytest
import torch
from torch import nn

from generation import perceptual_weights as pw
from generation.nets import alexnet, lpips, vgg
from generation.weights import WeightsMismatchError, WeightsMissingError


# ---------------------------------------------------------------------------------------------------------------
# The released layouts, written out by hand from torchvision's models/vgg.py ("D", "E") and models/alexnet.py.
# ---------------------------------------------------------------------------------------------------------------


def conv_layout(convs: list[tuple[int, int, int, int]]) -> list[tuple[str, tuple[int, ...]]]:
    """[(features index, out, in, kernel)] -> [(key, shape)] in state-dict order."""
    out = []
    for index, cout, cin, k in convs:
        out += [(f"features.{index}.weight", (cout, cin, k, k)), (f"features.{index}.bias", (cout,))]
    return out


VGG16_FEATURES = conv_layout([
    (0, 64, 3, 3), (2, 64, 64, 3),
    (5, 128, 64, 3), (7, 128, 128, 3),
    (10, 256, 128, 3), (12, 256, 256, 3), (14, 256, 256, 3),
    (17, 512, 256, 3), (19, 512, 512, 3), (21, 512, 512, 3),
    (24, 512, 512, 3), (26, 512, 512, 3), (28, 512, 512, 3),
])
VGG19_FEATURES = conv_layout([
    (0, 64, 3, 3), (2, 64, 64, 3),
    (5, 128, 64, 3), (7, 128, 128, 3),
    (10, 256, 128, 3), (12, 256, 256, 3), (14, 256, 256, 3), (16, 256, 256, 3),
    (19, 512, 256, 3), (21, 512, 512, 3), (23, 512, 512, 3), (25, 512, 512, 3),
    (28, 512, 512, 3), (30, 512, 512, 3), (32, 512, 512, 3), (34, 512, 512, 3),
])
VGG_CLASSIFIER = [
    ("classifier.0.weight", (4096, 512 * 7 * 7)), ("classifier.0.bias", (4096,)),
    ("classifier.3.weight", (4096, 4096)), ("classifier.3.bias", (4096,)),
    ("classifier.6.weight", (1000, 4096)), ("classifier.6.bias", (1000,)),
]
ALEXNET_FEATURES = conv_layout([
    (0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3),
])
ALEXNET_CLASSIFIER = [
    ("classifier.1.weight", (4096, 256 * 6 * 6)), ("classifier.1.bias", (4096,)),
    ("classifier.4.weight", (4096, 4096)), ("classifier.4.bias", (4096,)),
    ("classifier.6.weight", (1000, 4096)), ("classifier.6.bias", (1000,)),
]
OFFICIAL = {  # name: (file, features, classifier, total parameters, features parameters)
    "vgg16": ("vgg16-397923af.pth", VGG16_FEATURES, VGG_CLASSIFIER, 138_357_544, 14_714_688),
    "vgg19": ("vgg19-dcbb9e9d.pth", VGG19_FEATURES, VGG_CLASSIFIER, 143_667_240, 20_024_384),
    "alexnet": ("alexnet-owt-7be5be79.pth", ALEXNET_FEATURES, ALEXNET_CLASSIFIER, 61_100_840, 2_469_696),
}
NARROW = {  # cheap nets with the released layouts, for file round trips
    "vgg16": dataclasses.replace(vgg.VGG16, widths=(4, 8, 8, 16, 16), classifier_hidden=8, num_classes=10),
    "vgg19": dataclasses.replace(vgg.VGG19, widths=(4, 8, 8, 16, 16), classifier_hidden=8, num_classes=10),
    "alexnet": alexnet.AlexNetConfig(widths=(4, 8, 8, 8, 8), classifier_hidden=8, num_classes=10),
}


class NotATensor:
    """Pickled by reference: loading it would need this module's code (weights_only=True refuses that)."""


def numbered_state(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in dict(layout).items()}


@contextlib.contextmanager
def captured_warnings(logger_name: str = "generation.perceptual_weights"):
    """The WARNING records of one logger (the suite runs with ``-p no:logging``, so no caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def vgg19_features() -> tuple[vgg.VGG, dict[str, torch.Tensor]]:
    """The released-size VGG-19 without classifier, strictly loaded from a synthetic state dict with the official
    names (random numbers): built once for the module, with the state dict it holds."""
    state = numbered_state(VGG19_FEATURES)
    net = vgg.VGG(vgg.VGG19, init_weights=False).eval()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return net, state


@pytest.fixture(scope="module")
def lpips_random_alex(tmp_path_factory) -> lpips.LPIPS:
    """LPIPS(alex) with the released heads and a random (seeded) AlexNet: the backbone file is not installed."""
    absent = tmp_path_factory.mktemp("no-weights") / "alexnet-owt-7be5be79.pth"
    return pw.build_perceptual("lpips_alex", allow_random_backbone=True, path=absent)


def images(seed: int, n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # in [-1, 1]


# ---------------------------------------------------------------------------------------------------------------


class TestReleasedLayouts:
    @pytest.mark.parametrize("name", list(OFFICIAL))
    def test_the_whole_net_has_exactly_torchvisions_keys_and_shapes_in_order(self, name):
        _, features, classifier, _, _ = OFFICIAL[name]
        assert list(pw.official_layout(name).items()) == features + classifier

    @pytest.mark.parametrize("name", list(OFFICIAL))
    def test_the_perceptual_net_keeps_only_the_features_keys(self, name):
        _, features, _, _, _ = OFFICIAL[name]
        assert list(pw.official_layout(name, classifier=False).items()) == features

    @pytest.mark.parametrize("name", list(OFFICIAL))
    def test_parameter_counts_are_torchvisions(self, name):
        """torchvision: vgg16 138,357,544, vgg19 143,667,240, alexnet 61,100,840 parameters; the classifiers
        (vgg 123,642,856, alexnet 58,631,144) are dropped by the perceptual nets."""
        _, _, _, total, features = OFFICIAL[name]
        with torch.device("meta"):  # the full nets cost no memory on the meta device
            whole = pw.build_backbone(name, classifier=True, init_weights=False)
            perceptual = pw.build_backbone(name, init_weights=False)
        assert sum(p.numel() for p in whole.parameters()) == total
        assert sum(p.numel() for p in perceptual.parameters()) == features

    @pytest.mark.parametrize("name", list(OFFICIAL))
    def test_a_state_dict_with_exactly_the_official_names_loads_strictly_into_the_whole_net(self, name):
        _, features, classifier, _, _ = OFFICIAL[name]
        with torch.device("meta"):
            whole = pw.build_backbone(name, classifier=True, init_weights=False)
            state = {key: torch.empty(shape) for key, shape in features + classifier}
        result = whole.load_state_dict(state, strict=True, assign=True)
        assert not result.missing_keys and not result.unexpected_keys

    def test_the_official_features_state_dict_lands_in_the_right_vgg19_layers(self, vgg19_features):
        net, state = vgg19_features
        assert torch.equal(net.features[0].weight, state["features.0.weight"])
        assert torch.equal(net.features[34].bias, state["features.34.bias"])
        assert isinstance(net.features[36], nn.MaxPool2d)

    def test_the_official_alexnet_features_land_in_the_right_layers(self):
        state = numbered_state(ALEXNET_FEATURES)
        net = alexnet.AlexNet()
        net.load_state_dict(state, strict=True)
        assert torch.equal(net.features[10].weight, state["features.10.weight"])
        assert net.features[0].stride == (4, 4) and net.features[0].padding == (2, 2)

    def test_normalisation_constants_are_not_in_the_state_dict(self):
        assert not [k for k in vgg.VGG(NARROW["vgg16"]).state_dict() if not k.startswith("features.")]
        assert not [k for k in alexnet.AlexNet(NARROW["alexnet"]).state_dict() if not k.startswith("features.")]


class TestFeatureTaps:
    def test_vgg19_taps_the_last_relu_of_each_block_by_default(self, vgg19_features):
        net, _ = vgg19_features
        with torch.no_grad():
            out = net(torch.rand(1, 3, 32, 32))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "relu1_2": (1, 64, 32, 32), "relu2_2": (1, 128, 16, 16), "relu3_4": (1, 256, 8, 8),
            "relu4_4": (1, 512, 4, 4), "relu5_4": (1, 512, 2, 2),
        }
        assert all((v >= 0).all() for v in out.values())

    def test_vgg16_default_taps_are_the_lpips_ones(self):
        assert vgg.default_taps(vgg.VGG16) == ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

    def test_alexnet_taps_relu1_to_relu5_as_lpips(self):
        net = alexnet.AlexNet()
        with torch.no_grad():
            out = net(torch.rand(1, 3, 64, 64))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "relu1": (1, 64, 15, 15), "relu2": (1, 192, 7, 7), "relu3": (1, 384, 3, 3),
            "relu4": (1, 256, 3, 3), "relu5": (1, 256, 3, 3),
        }

    def test_taps_come_back_in_the_order_asked_and_a_conv_tap_is_pre_activation(self):
        net = vgg.VGG(NARROW["vgg19"], taps=("conv2_1", "relu1_1"))
        with torch.no_grad():
            out = net(torch.rand(1, 3, 16, 16))
        assert list(out) == ["conv2_1", "relu1_1"]
        assert (out["conv2_1"] < 0).any()  # not overwritten by an in-place ReLU

    def test_unknown_taps_are_refused_with_the_known_names(self):
        with pytest.raises(ValueError, match="relu3_4"):
            vgg.VGG(vgg.VGG16, taps=("relu3_4",))

    def test_inputs_in_0_1_are_imagenet_normalised_inside(self):
        net = vgg.VGG(NARROW["vgg16"])
        raw = vgg.VGG(NARROW["vgg16"], normalize_input=False)
        raw.load_state_dict(net.state_dict())
        x = torch.rand(2, 3, 32, 32)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():
            assert torch.allclose(net(x)["relu5_3"], raw((x - mean) / std)["relu5_3"])

    def test_the_classifier_forward_gives_imagenet_logits(self):
        net = alexnet.AlexNet(NARROW["alexnet"], classifier=True)
        assert net.classify(torch.rand(2, 3, 64, 64)).shape == (2, 10)
        with pytest.raises(RuntimeError, match="without its classifier"):
            alexnet.AlexNet(NARROW["alexnet"]).classify(torch.rand(1, 3, 64, 64))


class TestBackboneFiles:
    @pytest.mark.parametrize("name", list(OFFICIAL))
    def test_a_missing_file_raises_weights_missing_naming_the_file_to_install(self, name, weights_dir):
        filename = OFFICIAL[name][0]
        with pytest.raises(WeightsMissingError) as error:
            pw.load_backbone(name)
        message = str(error.value)
        assert filename in message and str(weights_dir / filename) in message
        assert f"https://download.pytorch.org/models/{filename}" in message and "SYNCMOS_WEIGHTS_DIR" in message

    @pytest.mark.parametrize("name", list(OFFICIAL))
    def test_a_complete_released_file_loads_strictly_and_its_classifier_is_dropped(self, name, weights_dir):
        config = NARROW[name]
        state = numbered_state(pw.official_layout(name, config=config))
        torch.save(state, weights_dir / OFFICIAL[name][0])
        rng_before = torch.get_rng_state()
        net = pw.load_backbone(name, config=config, check_hash=False)
        assert torch.equal(torch.get_rng_state(), rng_before)  # building it does not shift the caller's RNG
        assert set(net.state_dict()) == {k for k in state if k.startswith("features.")}
        assert net.classifier is None
        assert torch.equal(net.features[0].weight, state["features.0.weight"])
        assert not net.training and not any(p.requires_grad for p in net.parameters())

    def test_the_classifier_is_kept_when_asked_for(self, weights_dir):
        config = NARROW["vgg19"]
        state = numbered_state(pw.official_layout("vgg19", config=config))
        torch.save(state, weights_dir / "vgg19-dcbb9e9d.pth")
        net = pw.load_backbone("vgg19", config=config, classifier=True, check_hash=False)
        assert torch.equal(net.classifier[6].weight, state["classifier.6.weight"])

    def test_a_features_only_file_is_accepted_but_not_for_the_classifier(self, weights_dir):
        config = NARROW["alexnet"]
        state = numbered_state(pw.official_layout("alexnet", config=config, classifier=False))
        torch.save(state, weights_dir / "alexnet-owt-7be5be79.pth")
        assert pw.load_backbone("alexnet", config=config, check_hash=False) is not None
        with pytest.raises(WeightsMismatchError, match="only the features"):
            pw.load_backbone("alexnet", config=config, classifier=True, check_hash=False)

    @pytest.mark.parametrize("change", ["extra key", "missing key", "other shape", "other net"])
    def test_anything_but_the_exact_layout_is_refused(self, change, weights_dir):
        config = NARROW["vgg16"]
        state = numbered_state(pw.official_layout("vgg16", config=config))
        if change == "extra key":
            state["features.31.weight"] = torch.zeros(1)
        elif change == "missing key":
            del state["classifier.3.bias"]
        elif change == "other shape":
            state["features.28.weight"] = torch.zeros(16, 16, 1, 1)
        else:  # a vgg19 file under the vgg16 name
            state = numbered_state(pw.official_layout("vgg19", config=NARROW["vgg19"]))
        torch.save(state, weights_dir / "vgg16-397923af.pth")
        with pytest.raises(WeightsMismatchError, match="not torchvision's vgg16"):
            pw.load_backbone("vgg16", config=config, check_hash=False)

    def test_a_file_that_needs_code_to_unpickle_is_refused(self, weights_dir):
        torch.save({"features.0.weight": NotATensor()}, weights_dir / "vgg16-397923af.pth")
        with pytest.raises(WeightsMismatchError):
            pw.load_backbone("vgg16", config=NARROW["vgg16"])

    def test_a_file_whose_sha256_does_not_match_its_name_loads_with_a_warning(self, weights_dir):
        config = NARROW["alexnet"]
        state = numbered_state(pw.official_layout("alexnet", config=config))
        torch.save(state, weights_dir / "alexnet-owt-7be5be79.pth")
        with captured_warnings() as records:
            pw.load_backbone("alexnet", config=config)
        assert len(records) == 1 and "7be5be79" in records[0].getMessage()
        with captured_warnings() as records:
            pw.load_backbone("alexnet", config=config, check_hash=False)
        assert not records


class TestLPIPSHeads:
    @pytest.mark.parametrize("net, channels", [("alex", (64, 192, 384, 256, 256)), ("vgg", (64, 128, 256, 512, 512))])
    def test_the_installed_lpips_package_ships_the_v0_1_heads(self, net, channels):
        path = pw.lpips_heads_path(net)
        assert path.parts[-4:] == ("lpips", "weights", "v0.1", f"{net}.pth")
        heads = pw.read_lpips_heads(net)
        assert {k: tuple(v.shape) for k, v in heads.items()} == {
            f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(channels)
        }
        assert all((v >= 0).all() for v in heads.values())  # the paper's non-negative weights

    def test_the_package_is_located_but_never_imported(self):
        pw.read_lpips_heads("alex")
        assert "lpips" not in sys.modules and "torchvision" not in sys.modules

    def test_the_heads_load_strictly_into_lpips(self):
        model = lpips.LPIPS(lpips.LPIPS_ALEX)
        heads = pw.read_lpips_heads("alex")
        model.load_heads(heads)
        assert torch.equal(model.lin2.model[1].weight, heads["lin2.model.1.weight"])
        assert isinstance(model.lin2.model[0], nn.Dropout)
        with pytest.raises(ValueError, match="missing"):
            model.load_heads({k: v for k, v in heads.items() if k != "lin4.model.1.weight"})
        with pytest.raises(ValueError, match="other shapes"):
            lpips.LPIPS(lpips.LPIPS_VGG).load_heads(heads)

    def test_missing_heads_name_the_install_command(self, monkeypatch):
        monkeypatch.setattr(pw, "_lpips_package_dir", lambda: None)
        with pytest.raises(WeightsMissingError, match=r"pip install --no-deps lpips==0\.1\.4"):
            pw.lpips_heads_path("alex")


class TestLPIPS:
    def test_the_distance_of_an_image_to_itself_is_zero(self, lpips_random_alex):
        x = images(1)
        with torch.no_grad():
            assert torch.equal(lpips_random_alex(x, x), torch.zeros(2, 1, 1, 1))

    def test_it_is_symmetric_and_non_negative(self, lpips_random_alex):
        x, y = images(1), images(2)
        with torch.no_grad():
            d_xy, d_yx = lpips_random_alex(x, y), lpips_random_alex(y, x)
        assert d_xy.shape == (2, 1, 1, 1)
        assert torch.allclose(d_xy, d_yx) and (d_xy > 0).all()

    def test_it_grows_with_the_noise(self, lpips_random_alex):
        x = images(3)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            d = [lpips_random_alex(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.02, 0.1, 0.3)]
        assert 0 < d[0] < d[1] < d[2]

    def test_normalize_maps_0_1_inputs_to_minus_1_1(self, lpips_random_alex):
        x, y = images(5), images(6)
        with torch.no_grad():
            assert torch.allclose(lpips_random_alex((x + 1) / 2, (y + 1) / 2, normalize=True), lpips_random_alex(x, y))

    def test_it_is_the_sum_of_five_spatially_averaged_terms(self, lpips_random_alex):
        x, y = images(7), images(8)
        with torch.no_grad():
            total, terms = lpips_random_alex(x, y, per_layer=True)
        assert len(terms) == 5 and all(t.shape == (2, 1, 1, 1) for t in terms)
        assert torch.allclose(total, sum(terms))

    def test_the_gradient_flows_to_the_input_and_not_into_the_weights(self, lpips_random_alex):
        target = images(9)
        output = images(10).requires_grad_(True)
        lpips_random_alex(output, target).mean().backward()
        assert output.grad is not None and torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
        assert not any(p.requires_grad for p in lpips_random_alex.parameters())

    def test_it_stays_in_eval_mode_inside_a_training_module(self, lpips_random_alex):
        parent = nn.ModuleDict({"loss": lpips_random_alex})
        parent.train()
        assert not lpips_random_alex.training and not lpips_random_alex.lin0.model[0].training
        x, y = images(11), images(12)
        with torch.no_grad():
            assert torch.equal(lpips_random_alex(x, y), lpips_random_alex(x, y))  # no dropout

    def test_the_channel_norm_is_the_references_with_a_finite_gradient_at_zero(self):
        features = torch.randn(2, 8, 3, 3)
        features[0, :, 1, 1] = 0  # a dead-ReLU location: an all-zero feature vector
        reference = features / (torch.sqrt(torch.sum(features ** 2, dim=1, keepdim=True)) + 1e-10)
        assert torch.equal(lpips.normalize_channels(features), reference)
        features.requires_grad_(True)
        lpips.normalize_channels(features).sum().backward()
        assert torch.isfinite(features.grad).all()

    def test_the_spatial_variant_returns_a_map_of_the_input_size(self):
        model = lpips.LPIPS(lpips.LPIPSConfig("vgg", backbone=NARROW["vgg16"]), spatial=True)
        with torch.no_grad():
            assert model(images(1, size=32), images(2, size=32)).shape == (2, 1, 32, 32)

    def test_it_loads_the_released_backbone_file_and_the_package_heads(self, weights_dir):
        state = numbered_state(ALEXNET_FEATURES)  # a features-only alexnet file (10 MB)
        torch.save(state, weights_dir / "alexnet-owt-7be5be79.pth")
        model = pw.load_lpips("alex", check_hash=False)
        assert torch.equal(model.net.features[3].weight, state["features.3.weight"])
        assert torch.equal(model.lin0.model[1].weight, pw.read_lpips_heads("alex")["lin0.model.1.weight"])


class TestBuildPerceptual:
    @pytest.mark.parametrize("name, filename", [("vgg19", "vgg19-dcbb9e9d.pth"), ("vgg16", "vgg16-397923af.pth"),
                                                ("alexnet", "alexnet-owt-7be5be79.pth"),
                                                ("lpips_alex", "alexnet-owt-7be5be79.pth"),
                                                ("lpips_vgg", "vgg16-397923af.pth")])
    def test_it_refuses_a_missing_backbone_by_default(self, name, filename, weights_dir):
        with pytest.raises(WeightsMissingError, match=filename):
            pw.build_perceptual(name)

    def test_a_random_backbone_needs_the_explicit_flag_even_with_pretrained_false(self, weights_dir):
        with pytest.raises(ValueError, match="allow_random_backbone=True"):
            pw.build_perceptual("alexnet", pretrained=False)

    def test_with_the_flag_it_builds_a_seeded_random_backbone_and_warns(self, weights_dir):
        rng_before = torch.get_rng_state()
        with captured_warnings() as records:
            first = pw.build_perceptual("alexnet", allow_random_backbone=True)
            second = pw.build_perceptual("alexnet", allow_random_backbone=True)
        assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
        assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
        assert len(records) == 2
        message = records[0].getMessage()
        assert "RANDOMLY INITIALISED" in message and "NOT the published one" in message
        assert "alexnet-owt-7be5be79.pth" in message
        assert not first.training and not any(p.requires_grad for p in first.parameters())

    def test_the_flag_does_not_replace_an_installed_file(self, weights_dir):
        state = numbered_state(ALEXNET_FEATURES)
        torch.save(state, weights_dir / "alexnet-owt-7be5be79.pth")
        with captured_warnings() as records:
            net = pw.build_perceptual("alexnet", allow_random_backbone=True)
        assert torch.equal(net.features[0].weight, state["features.0.weight"])
        assert not [r for r in records if "RANDOMLY" in r.getMessage()]

    def test_the_flag_does_not_excuse_a_wrong_file(self, weights_dir):
        torch.save({"features.0.weight": torch.zeros(1)}, weights_dir / "alexnet-owt-7be5be79.pth")
        with pytest.raises(WeightsMismatchError):
            pw.build_perceptual("alexnet", allow_random_backbone=True)

    def test_a_random_lpips_backbone_still_uses_the_released_heads(self, lpips_random_alex):
        heads = pw.read_lpips_heads("alex")
        assert all(torch.equal(getattr(lpips_random_alex, f"lin{k}").model[1].weight, heads[f"lin{k}.model.1.weight"])
                   for k in range(5))

    def test_unknown_names_are_refused(self):
        with pytest.raises(Exception, match="known"):
            pw.build_perceptual("resnet50")
