"""AVSyncNet (generation/nets/avsyncnet.py): the sync expert of the stabilized-synchronization paper.

Seed 001 §3.4 and seed 002 §A.2–A.3: ResNet-50 image encoder on 112x224 lower-half faces (5 frames), ResNetSE-34
audio encoder with SAP, an extra conv after each encoder, 512-d embeddings, cosine similarity + BCE.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from generation.nets import ARCHITECTURES
from generation.nets.avsyncnet import (
    AVSYNCNET_DEFAULT,
    AVSYNCNET_TINY,
    AVSyncNet,
    AVSyncNetConfig,
    ResNetSE,
    ResNetTrunk,
    avsync_face_input,
    cosine_similarity,
    lower_half,
    sync_loss,
)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make(config: AVSyncNetConfig, seed: int = 0) -> AVSyncNet:
    torch.manual_seed(seed)
    return AVSyncNet(config).eval()


def inputs(config: AVSyncNetConfig, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, config.num_mels, config.mel_frames, generator=generator) * 8 - 4  # [-4, 4]
    faces = torch.rand(batch, 3 * config.num_frames, config.face_height, config.face_width, generator=generator)
    return mel, faces


@pytest.fixture(scope="module")
def default_net() -> AVSyncNet:
    return make(AVSYNCNET_DEFAULT)


@pytest.fixture(scope="module")
def tiny_net() -> AVSyncNet:
    return make(AVSYNCNET_TINY)


@pytest.fixture(scope="module")
def default_output(default_net) -> dict[str, torch.Tensor]:
    """One forward pass of the default network (batch 1): inputs, embeddings and the unnormalised F_A, F_I."""
    mel, faces = inputs(AVSYNCNET_DEFAULT, batch=1)
    seen = {}
    hooks = [default_net.audio_encoder.register_forward_hook(lambda m, args, out: seen.update(f_a=out)),
             default_net.image_encoder.register_forward_hook(lambda m, args, out: seen.update(f_i=out))]
    try:
        with torch.no_grad():
            audio_emb, video_emb = default_net(mel, faces)
    finally:
        for hook in hooks:
            hook.remove()
    return {"mel": mel, "faces": faces, "audio_emb": audio_emb, "video_emb": video_emb, **seen}


# --- embeddings ------------------------------------------------------------------------------------------------


def test_it_returns_unit_norm_512_d_audio_and_video_embeddings(default_output):
    audio_emb, video_emb = default_output["audio_emb"], default_output["video_emb"]
    assert audio_emb.shape == video_emb.shape == (1, 512)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(1))
    torch.testing.assert_close(video_emb.norm(dim=1), torch.ones(1))


def test_it_returns_unit_norm_embeddings_of_the_tiny_width(tiny_net):
    mel, faces = inputs(AVSYNCNET_TINY, batch=2)
    with torch.no_grad():
        audio_emb, video_emb = tiny_net(mel, faces)
    assert audio_emb.shape == video_emb.shape == (2, AVSYNCNET_TINY.embedding_dim)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(video_emb.norm(dim=1), torch.ones(2))


def test_it_gives_the_unnormalised_1x1x512_features_of_appendix_a3(default_output):
    """F_I, F_A ∈ R^{1×1×512}: each encoder ends in the "additional convolutional layer" (1x1 conv, BN, ReLU)."""
    f_a, f_i = default_output["f_a"], default_output["f_i"]
    assert f_a.shape == f_i.shape == (1, 512, 1, 1)
    assert (f_a >= 0).all() and (f_i >= 0).all()  # ReLU: cosine similarity in [0, 1], so BCE is defined


def test_it_takes_five_lower_halves_stacked_along_channels_at_112x224(tiny_net):
    """Documented input: (N, 15, 112, 224), 5 frames x 3 channels, SyncNet_color-style channel stacking."""
    assert tiny_net.image_encoder.trunk.conv1.in_channels == 15
    mel, faces = inputs(AVSYNCNET_TINY, batch=2)
    with torch.no_grad():
        tiny_net(mel, faces)
        with pytest.raises(ValueError, match="15, 112, 224"):
            tiny_net(mel, faces[:, :3])  # one RGB frame is not the input
        with pytest.raises(ValueError, match="15, 112, 224"):
            tiny_net(mel, faces[:, :, :48, :96])  # SyncNet_color's 48x96 is not the input either


def test_it_takes_the_wav2lip_80x16_mel_window(tiny_net):
    _, faces = inputs(AVSYNCNET_TINY, batch=1)
    with pytest.raises(ValueError, match="80, 16"):
        tiny_net(torch.zeros(1, 1, 80, 27), faces)


def test_it_pools_the_audio_over_time_with_self_attention():
    """ResNetSE34 on 80x16 leaves 2 time steps for SAP (ResNetSE34L 4), whose softmax weights sum to 1."""
    for variant, steps in (("ResNetSE34", 2), ("ResNetSE34L", 4)):
        torch.manual_seed(0)
        resnet = ResNetSE((8, 8, 16, 16), (3, 4, 6, 3), embedding_dim=32, variant=variant).eval()
        seen = {}
        resnet.sap_linear.register_forward_hook(lambda module, args, output: seen.update(x=args[0], h=output))
        with torch.no_grad():
            out = resnet(torch.randn(2, 1, 80, 16))
            weights = torch.softmax(torch.matmul(seen["h"], resnet.attention).squeeze(2), dim=1)
        assert seen["x"].shape == (2, steps, 16)  # (N, T', C)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
        assert out.shape == (2, 32)


def test_it_uses_voxceleb_trainers_resnetse34_layout_by_default(default_net):
    resnet = default_net.audio_encoder.resnet
    assert AVSYNCNET_DEFAULT.audio_variant == "ResNetSE34"
    assert isinstance(resnet.maxPool, torch.nn.MaxPool2d) and resnet.maxPool.stride == (2, 1)
    assert resnet.conv1.stride == (2, 1) and resnet.layer4[0].conv1.stride == (2, 2)
    assert [len(layer) for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)] == [3, 4, 6, 3]
    assert [layer[0].conv1.out_channels for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)] \
        == [16, 32, 64, 128]
    assert resnet.layer1[0].se.fc[0].out_features == 16 // 8  # SE reduction 8


# --- similarity and loss ---------------------------------------------------------------------------------------


def test_it_measures_sync_as_the_cosine_of_the_two_embeddings(tiny_net):
    mel, faces = inputs(AVSYNCNET_TINY, batch=2)
    with torch.no_grad():
        audio_emb, video_emb = tiny_net(mel, faces)
        similarity = tiny_net.similarity(mel, faces)
    assert similarity.shape == (2,)
    torch.testing.assert_close(similarity, (audio_emb * video_emb).sum(dim=1))
    assert ((similarity >= 0) & (similarity <= 1 + 1e-6)).all()


def test_it_computes_the_bce_sync_loss_of_appendix_eq_b():
    """cos([1, 0], [0.6, 0.8]) = 0.6: in sync (y = 1) costs -log 0.6, off sync (y = 0) -log 0.4; mean of the two."""
    audio_emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    video_emb = torch.tensor([[0.6, 0.8], [0.6, 0.8], [0.0, 2.0]])
    torch.testing.assert_close(cosine_similarity(audio_emb, video_emb), torch.tensor([0.6, 0.6, 1.0]))
    loss = sync_loss(audio_emb[:2], video_emb[:2], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(loss, torch.tensor((-math.log(0.6) - math.log(0.4)) / 2))
    assert sync_loss(audio_emb[2:], video_emb[2:], torch.tensor([1.0])).item() == pytest.approx(0.0, abs=1e-6)


# --- face preprocessing ----------------------------------------------------------------------------------------


def test_it_crops_the_lower_half_and_resizes_it_to_112x224_frame_by_frame():
    frames = torch.ones(2, 3, 5, 96, 96)  # upper halves 1: they must disappear
    for t in range(5):
        frames[:, :, t, 48:] = t / 10  # lower half of frame t: constant t/10
    stacked = avsync_face_input(frames)
    assert stacked.shape == (2, 15, 112, 224)
    for t in range(5):
        torch.testing.assert_close(stacked[:, 3 * t:3 * t + 3], torch.full((2, 3, 112, 224), t / 10))


def test_it_keeps_the_colour_channels_of_each_frame_together():
    frames = torch.zeros(1, 3, 5, 96, 96)
    frames[:, 1, 2] = 1.0  # channel 1 of frame 2
    stacked = avsync_face_input(frames)
    lit = [c for c in range(15) if stacked[0, c].max() > 0]
    assert lit == [3 * 2 + 1]


def test_it_takes_rows_s_over_2_onwards_as_the_lower_half():
    x = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 1, 6, 2)
    assert lower_half(x)[0, 0, :, 0].tolist() == [3.0, 4.0, 5.0]


# --- the ResNet-50 trunk ---------------------------------------------------------------------------------------


def torchvision_resnet50_keys() -> set[str]:
    """The state-dict keys of torchvision's resnet50 without ``fc`` (Bottleneck [3, 4, 6, 3])."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight"} | {f"bn1.{k}" for k in bn}
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            prefix = f"layer{layer}.{b}"
            for i in (1, 2, 3):
                keys.add(f"{prefix}.conv{i}.weight")
                keys |= {f"{prefix}.bn{i}.{k}" for k in bn}
        keys.add(f"layer{layer}.0.downsample.0.weight")
        keys |= {f"layer{layer}.0.downsample.1.{k}" for k in bn}
    return keys


def test_it_keeps_torchvision_resnet50_parameter_names_in_the_trunk(default_net):
    state = default_net.image_encoder.trunk.state_dict()
    assert set(state) == torchvision_resnet50_keys()
    assert state["conv1.weight"].shape == (64, 15, 7, 7)
    assert state["layer1.0.conv1.weight"].shape == (64, 64, 1, 1)
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["layer3.0.downsample.0.weight"].shape == (1024, 512, 1, 1)
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert default_net.image_encoder.trunk.layer2[0].conv2.stride == (2, 2)  # v1.5: stride on the 3x3 conv


def test_it_has_the_resnet50_trunk_parameter_count_plus_the_conv1_difference(default_net):
    """torchvision resnet50: 25,557,032 parameters; minus fc (2048·1000 + 1000 = 2,049,000) = 23,508,032.

    The adapted conv1 takes 15 channels instead of 3: 64·(15 − 3)·7·7 = 37,632 more, 23,545,664 in all.
    """
    torch.manual_seed(0)
    rgb_trunk = ResNetTrunk(3, 64, (64, 128, 256, 512), (3, 4, 6, 3))
    assert count(rgb_trunk) == 25_557_032 - (2048 * 1000 + 1000) == 23_508_032
    adapted = default_net.image_encoder.trunk
    assert count(adapted) - count(rgb_trunk) == 64 * (15 - 3) * 7 * 7 == 37_632
    assert count(adapted) == 23_545_664


def test_it_has_the_resnetse34l_audio_encoder_parameter_count(default_net):
    """ResNetSE34 (widths 16, 32, 64, 128; blocks 3, 4, 6, 3; SE reduction 8; nOut 512) = 1,437,078:

    conv1 1·16·7·7 + bn 32 = 816. An SEBasicBlock (in → p) has 9·in·p + 9·p² convs, 4p BN, and an SE of
    p²/8 + p/8 + p²/8 + p = p²/4 + p/8 + p; a downsample adds in·p + 2p.
    layer1 3 × 4,754 = 14,262; layer2 14,820 + 3 × 18,852 = 71,376; layer3 58,824 + 5 × 75,080 = 434,224;
    layer4 234,384 + 2 × 299,664 = 833,712; sap_linear 128·128 + 128 = 16,512; attention 128; fc 128·512 + 512 =
    66,048. Total 1,437,078 (ResNetSE34L has the same parameters; its max-pool and strides differ). The projection
    conv 512·512 + 512 + BN 1,024 = 263,680 makes the audio encoder 1,700,758.
    """
    assert count(default_net.audio_encoder.resnet) == 1_437_078
    assert count(default_net.audio_encoder.projection) == 512 * 512 + 512 + 2 * 512 == 263_680
    assert count(default_net.audio_encoder) == 1_700_758
    torch.manual_seed(0)
    assert count(ResNetSE((16, 32, 64, 128), (3, 4, 6, 3), 512, variant="ResNetSE34L")) == 1_437_078


def test_it_counts_the_parameters_of_the_whole_network(default_net, tiny_net):
    """Default: trunk 23,545,664 + image projection 2048·512 + 512 + 1,024 = 1,050,112 + audio 1,700,758
    = 26,296,534 (the papers publish no figure). Tiny (same topology, few channels): 90,785."""
    assert count(default_net.image_encoder.projection) == 1_050_112
    assert count(default_net) == 23_545_664 + 1_050_112 + 1_700_758 == 26_296_534
    assert count(tiny_net) == 90_785


# --- state, determinism, registry ------------------------------------------------------------------------------


def round_trip(net: AVSyncNet, config: AVSyncNetConfig) -> AVSyncNet:
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = make(config, seed=123)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    return fresh.eval()


def test_it_round_trips_its_default_state_dict(default_net, default_output):
    fresh = round_trip(default_net, AVSYNCNET_DEFAULT)
    with torch.no_grad():
        audio_emb, video_emb = fresh(default_output["mel"], default_output["faces"])
    assert torch.equal(audio_emb, default_output["audio_emb"])
    assert torch.equal(video_emb, default_output["video_emb"])


def test_it_round_trips_its_tiny_state_dict(tiny_net):
    fresh = round_trip(tiny_net, AVSYNCNET_TINY)
    mel, faces = inputs(AVSYNCNET_TINY, batch=2)
    with torch.no_grad():
        for a, b in zip(tiny_net(mel, faces), fresh(mel, faces)):
            assert torch.equal(a, b)


def test_it_is_deterministic_under_a_seed():
    a, b, c = make(AVSYNCNET_TINY, seed=7), make(AVSYNCNET_TINY, seed=7), make(AVSYNCNET_TINY, seed=8)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.audio_encoder.resnet.attention, c.audio_encoder.resnet.attention)
    mel, faces = inputs(AVSYNCNET_TINY, batch=2)
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(a(mel, faces), b(mel, faces)))


def test_it_is_not_registered_as_a_generator():
    assert all(arch.build_generator.__module__ != "generation.nets.avsyncnet" for arch in ARCHITECTURES.values())
    assert "avsyncnet" not in ARCHITECTURES


def test_it_validates_its_config():
    with pytest.raises(ValueError, match="se_reduction"):
        AVSyncNetConfig(audio_widths=(4, 8, 16, 32))  # an SE bottleneck of 4 // 8 = 0 units
    with pytest.raises(ValueError, match="4 entries"):
        AVSyncNetConfig(image_blocks=(3, 4, 6))
