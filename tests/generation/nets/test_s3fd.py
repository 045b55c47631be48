"""S3FD network: the released checkpoint layouts, parameter counts, output geometry, determinism."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from generation import nets
from generation.nets import s3fd
from generation.nets.s3fd import S3FD, S3FDConfig

# face-alignment's net_s3fd.py (= Wav2Lip's face_detection copy): every key of s3fd-619a316812.pth,
# in the order the module registers them, with its shape. Written out by hand from that file.
FACE_ALIGNMENT_LAYOUT: dict[str, tuple[int, ...]] = {}
for _name, _cin, _cout, _k in [
    ("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3),
    ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3),
    ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3),
    ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3), ("conv4_3", 512, 512, 3),
    ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3), ("conv5_3", 512, 512, 3),
    ("fc6", 512, 1024, 3), ("fc7", 1024, 1024, 1),
    ("conv6_1", 1024, 256, 1), ("conv6_2", 256, 512, 3),
    ("conv7_1", 512, 128, 1), ("conv7_2", 128, 256, 3),
]:
    FACE_ALIGNMENT_LAYOUT[f"{_name}.weight"] = (_cout, _cin, _k, _k)
    FACE_ALIGNMENT_LAYOUT[f"{_name}.bias"] = (_cout,)
FACE_ALIGNMENT_LAYOUT["conv3_3_norm.weight"] = (256,)
FACE_ALIGNMENT_LAYOUT["conv4_3_norm.weight"] = (512,)
FACE_ALIGNMENT_LAYOUT["conv5_3_norm.weight"] = (512,)
for _name, _cin, _conf in [
    ("conv3_3_norm", 256, 4),  # 3 background logits (max-out) + 1 face logit
    ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2),
    ("fc7", 1024, 2), ("conv6_2", 512, 2), ("conv7_2", 256, 2),
]:
    FACE_ALIGNMENT_LAYOUT[f"{_name}_mbox_conf.weight"] = (_conf, _cin, 3, 3)
    FACE_ALIGNMENT_LAYOUT[f"{_name}_mbox_conf.bias"] = (_conf,)
    FACE_ALIGNMENT_LAYOUT[f"{_name}_mbox_loc.weight"] = (4, _cin, 3, 3)
    FACE_ALIGNMENT_LAYOUT[f"{_name}_mbox_loc.bias"] = (4,)

# syncnet_python's detectors/s3fd/nets.py (S3FDNet): the keys of sfd_face.pth and the face-alignment
# key each one is renamed to. The VGG ModuleList counts ReLUs and pools, hence the gaps.
SFD_FACE_TO_FACE_ALIGNMENT = {
    "vgg.0": "conv1_1", "vgg.2": "conv1_2", "vgg.5": "conv2_1", "vgg.7": "conv2_2",
    "vgg.10": "conv3_1", "vgg.12": "conv3_2", "vgg.14": "conv3_3",
    "vgg.17": "conv4_1", "vgg.19": "conv4_2", "vgg.21": "conv4_3",
    "vgg.24": "conv5_1", "vgg.26": "conv5_2", "vgg.28": "conv5_3",
    "vgg.31": "fc6", "vgg.33": "fc7",
    "L2Norm3_3": "conv3_3_norm", "L2Norm4_3": "conv4_3_norm", "L2Norm5_3": "conv5_3_norm",
    "extras.0": "conv6_1", "extras.1": "conv6_2", "extras.2": "conv7_1", "extras.3": "conv7_2",
    "loc.0": "conv3_3_norm_mbox_loc", "conf.0": "conv3_3_norm_mbox_conf",
    "loc.1": "conv4_3_norm_mbox_loc", "conf.1": "conv4_3_norm_mbox_conf",
    "loc.2": "conv5_3_norm_mbox_loc", "conf.2": "conv5_3_norm_mbox_conf",
    "loc.3": "fc7_mbox_loc", "conf.3": "fc7_mbox_conf",
    "loc.4": "conv6_2_mbox_loc", "conf.4": "conv6_2_mbox_conf",
    "loc.5": "conv7_2_mbox_loc", "conf.5": "conv7_2_mbox_conf",
}


def sfd_face_layout() -> dict[str, tuple[int, ...]]:
    out = {}
    for old, new in SFD_FACE_TO_FACE_ALIGNMENT.items():
        for param in ("weight", "bias"):
            if f"{new}.{param}" in FACE_ALIGNMENT_LAYOUT:
                out[f"{old}.{param}"] = FACE_ALIGNMENT_LAYOUT[f"{new}.{param}"]
    return out


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in layout.items()}


@pytest.fixture(scope="module")
def default_net() -> S3FD:
    torch.manual_seed(0)
    return S3FD(s3fd.DEFAULT).eval()


@pytest.fixture(scope="module")
def default_outputs_640x480(default_net):
    with torch.inference_mode():
        return default_net(torch.randn(1, 3, 480, 640, generator=torch.Generator().manual_seed(1)))


class TestCheckpointLayout:
    def test_it_has_exactly_the_face_alignment_keys_and_shapes_in_order(self, default_net):
        state = default_net.state_dict()
        assert len(FACE_ALIGNMENT_LAYOUT) == 65
        assert [(k, tuple(v.shape)) for k, v in state.items()] == list(FACE_ALIGNMENT_LAYOUT.items())

    def test_it_loads_an_official_face_alignment_state_dict_strictly(self):
        state = random_state(FACE_ALIGNMENT_LAYOUT)
        net = S3FD()
        result = net.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(net.conv3_3_norm_mbox_conf.weight, state["conv3_3_norm_mbox_conf.weight"])

    def test_it_loads_an_official_sfd_face_state_dict_strictly_after_renaming(self):
        state = random_state(sfd_face_layout())
        assert s3fd.checkpoint_layout(state) == s3fd.LAYOUT_SFD_FACE
        net = S3FD(s3fd.SFD_FACE)
        net.load_state_dict(s3fd.remap_sfd_face(state), strict=True)
        assert torch.equal(net.conv3_3.weight, state["vgg.14.weight"])
        assert torch.equal(net.fc7.weight, state["vgg.33.weight"])
        assert torch.equal(net.conv3_3_norm.weight, state["L2Norm3_3.weight"])
        assert torch.equal(net.conv7_2.bias, state["extras.3.bias"])
        assert torch.equal(net.fc7_mbox_conf.weight, state["conf.3.weight"])
        assert torch.equal(net.conv3_3_norm_mbox_loc.weight, state["loc.0.weight"])

    def test_it_recognises_the_layouts_by_their_keys(self):
        assert s3fd.checkpoint_layout(FACE_ALIGNMENT_LAYOUT) == s3fd.LAYOUT_FACE_ALIGNMENT
        assert s3fd.checkpoint_layout(sfd_face_layout()) == s3fd.LAYOUT_SFD_FACE
        assert s3fd.checkpoint_layout({"audio_encoder.0.conv_block.0.weight": None}) is None

    def test_it_passes_unknown_keys_through_the_renaming_so_a_strict_load_reports_them(self):
        state = {**random_state(sfd_face_layout()), "vgg.99.weight": torch.zeros(1)}
        with pytest.raises(RuntimeError, match="vgg.99.weight"):
            S3FD(s3fd.SFD_FACE).load_state_dict(s3fd.remap_sfd_face(state), strict=True)


class TestParameterCounts:
    def test_it_has_22_459_110_parameters_in_the_published_configuration(self, default_net):
        """VGG16 convs 14,714,688 (the well-known VGG16 conv count: 1,792 + 36,928 + 73,856 + 147,584 +
        295,168 + 2·590,080 + 1,180,160 + 2·2,359,808 + 3·2,359,808)
        + fc6 512·1024·9 + 1024 = 4,719,616 + fc7 1024·1024 + 1024 = 1,049,600
        + conv6_1 262,400 + conv6_2 1,180,160 + conv7_1 65,664 + conv7_2 295,168
        + L2Norm 256 + 512 + 512 = 1,280
        + heads: conv3_3 conf/loc 9,220 + 9,220; conv4_3 9,218 + 18,436; conv5_3 9,218 + 18,436;
          fc7 18,434 + 36,868; conv6_2 9,218 + 18,436; conv7_2 4,610 + 9,220 = 170,534
        = 22,459,110. (The S3FD paper gives no count; this is the arithmetic of the released layout.)
        """
        assert sum(p.numel() for p in default_net.parameters()) == 22_459_110

    def test_it_has_the_same_count_in_the_sfd_face_configuration(self):
        """Dilation and ceil-mode pooling change no weight shape."""
        assert sum(p.numel() for p in S3FD(s3fd.SFD_FACE).parameters()) == 22_459_110

    def test_it_has_24_818_parameters_in_the_tiny_configuration(self):
        """Widths (4, 8, 8, 16, 16), fc 16, conv6 (8, 16), conv7 (8, 8):
        VGG 112 + 148 + 296 + 584 + 3·584 + 1,168 + 2·2,320 + 3·2,320 = 15,660;
        fc6 2,320 + fc7 272 + conv6_1 136 + conv6_2 1,168 + conv7_1 136 + conv7_2 584 = 4,616;
        L2Norm 8 + 16 + 16 = 40; heads 292 + 292 + 4·(290 + 580) + 146 + 292 = 4,502;
        total 24,818.
        """
        assert sum(p.numel() for p in S3FD(s3fd.TINY).parameters()) == 24_818


class TestOutputs:
    def test_it_returns_six_levels_at_strides_4_to_128_for_a_640x480_frame(self, default_outputs_640x480):
        """Default (face-alignment) geometry: fc6 is 3×3 with padding 3 and no dilation, so fc7 is
        ⌊480/32⌋ + 4 = 19 by ⌊640/32⌋ + 4 = 24, and the stride-2 extras follow from it."""
        sizes = [(120, 160), (60, 80), (30, 40), (19, 24), (10, 12), (5, 6)]
        assert len(default_outputs_640x480) == 6
        for (cls, reg), (h, w) in zip(default_outputs_640x480, sizes):
            assert cls.shape == (1, 2, h, w)
            assert reg.shape == (1, 4, h, w)
            assert torch.isfinite(cls).all() and torch.isfinite(reg).all()

    def test_it_keeps_fc7_at_a_32nd_of_the_frame_in_the_sfd_face_geometry(self):
        """sfd_face: fc6 padding 6 / dilation 6 keeps pool5's 15×20; the extras round up to 8×10, 4×5."""
        config = dataclasses.replace(s3fd.TINY, fc6_padding=6, fc6_dilation=6, pool3_ceil_mode=True)
        with torch.inference_mode():
            levels = S3FD(config)(torch.zeros(1, 3, 480, 640))
        sizes = [tuple(cls.shape[-2:]) for cls, _ in levels]
        assert sizes == [(120, 160), (60, 80), (30, 40), (15, 20), (8, 10), (4, 5)]

    def test_it_rounds_pool3_up_only_in_the_sfd_face_geometry(self):
        """A 36-pixel side: conv3_3 is 9 cells; pool3 gives 4 (floor) or 5 (ceil)."""
        floor_net = S3FD(s3fd.TINY)
        ceil_net = S3FD(dataclasses.replace(s3fd.TINY, pool3_ceil_mode=True))
        x = torch.zeros(1, 3, 36, 36)
        with torch.inference_mode():
            assert floor_net(x)[1][0].shape[-2:] == (4, 4)
            assert ceil_net(x)[1][0].shape[-2:] == (5, 5)

    def test_it_maxes_out_the_three_background_logits_of_the_conv3_3_head(self):
        net = S3FD(s3fd.TINY).eval()
        head = net.conv3_3_norm_mbox_conf
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.5, 2.0, -1.0, 0.25]))  # three background logits, then face
        with torch.inference_mode():
            cls, _ = net(torch.zeros(1, 3, 96, 96))[0]
        assert cls.shape == (1, 2, 24, 24)
        assert torch.allclose(cls[0, 0], torch.full((24, 24), 2.0))
        assert torch.allclose(cls[0, 1], torch.full((24, 24), 0.25))

    def test_it_l2_normalises_with_learned_scales_10_8_5(self):
        net = S3FD(s3fd.TINY)
        assert torch.all(net.conv3_3_norm.weight == 10) and torch.all(net.conv4_3_norm.weight == 8)
        assert torch.all(net.conv5_3_norm.weight == 5)
        x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
        norm = s3fd.L2Norm(2, scale=10.0)
        assert torch.allclose(norm(x).flatten(), torch.tensor([6.0, 8.0]))

    def test_it_runs_the_tiny_config_at_96x96(self):
        with torch.inference_mode():
            levels = S3FD(s3fd.TINY)(torch.randn(2, 3, 96, 96))
        assert [tuple(cls.shape) for cls, _ in levels] == [
            (2, 2, 24, 24), (2, 2, 12, 12), (2, 2, 6, 6), (2, 2, 7, 7), (2, 2, 4, 4), (2, 2, 2, 2)
        ]


class TestReproducibility:
    def test_it_round_trips_its_state_dict(self):
        torch.manual_seed(3)
        net = S3FD(s3fd.TINY).eval()
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        fresh = S3FD(s3fd.TINY).eval()
        fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        x = torch.randn(1, 3, 64, 64)
        with torch.inference_mode():
            for (a_cls, a_reg), (b_cls, b_reg) in zip(net(x), fresh(x)):
                assert torch.equal(a_cls, b_cls) and torch.equal(a_reg, b_reg)

    def test_it_is_deterministic_under_a_seed(self):
        torch.manual_seed(7)
        first = S3FD(s3fd.TINY).eval()
        torch.manual_seed(7)
        second = S3FD(s3fd.TINY).eval()
        for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
            assert torch.equal(a, b), name
        x = torch.randn(1, 3, 64, 64)
        with torch.inference_mode():
            assert all(torch.equal(a[0], b[0]) for a, b in zip(first(x), second(x)))


class TestConfig:
    def test_it_is_not_a_registered_generator(self):
        assert not any(a.config_class is S3FDConfig for a in nets.ARCHITECTURES.values())

    def test_it_names_its_configs(self):
        assert set(s3fd.CONFIGS) == {"default", "sfd_face", "tiny"}
        assert s3fd.CONFIGS["default"] == S3FDConfig()
        assert (s3fd.SFD_FACE.fc6_padding, s3fd.SFD_FACE.fc6_dilation, s3fd.SFD_FACE.pool3_ceil_mode) == (6, 6, True)

    def test_it_knows_its_strides_anchors_and_variances(self):
        config = S3FDConfig()
        assert config.strides == (4, 8, 16, 32, 64, 128)
        assert [config.anchor_scale * s for s in config.strides] == [16, 32, 64, 128, 256, 512]
        assert config.variances == (0.1, 0.2)

    def test_it_rejects_a_wrong_number_of_vgg_widths(self):
        with pytest.raises(ValueError, match="vgg_widths"):
            S3FDConfig(vgg_widths=(64, 128, 256, 512))
