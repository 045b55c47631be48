"""The stabilized-synchronization model (generation/nets/stabsync.py): G_S, G_L, discriminator, L_ss, L_at.

Seed 001 §3.1–3.5 (main paper) and seed 002 (appendix). The paper publishes no parameter counts and the authors
released no weights, so the counts asserted here are our architecture's, with their arithmetic.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from generation.nets import MASKED_FIRST, get_architecture
from generation.nets.avsyncnet import AVSYNCNET_DEFAULT, AVSYNCNET_TINY, AudioEncoder, AVSyncNet
from generation.nets.stabsync import (
    SILENT_MEL_VALUE,
    STABSYNC_DEFAULT,
    STABSYNC_TINY,
    FaceDecodingBlock,
    FaceEncodingBlock,
    StabSyncConfig,
    StabSyncDiscriminator,
    StabSyncModel,
    TalkingFaceGenerator,
    adaptive_triplet_loss,
    build_stabsync,
    mask_lower_half,
    silent_mel_window,
    stabilized_sync_loss,
)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make(config: StabSyncConfig, seed: int = 0) -> StabSyncModel:
    torch.manual_seed(seed)
    return build_stabsync(config).eval()


def inputs(batch: int, seed: int = 1, frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Wav2Lip-style mel window in [-4, 4] and [masked target, reference] faces in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    time_axis = () if frames is None else (frames,)
    mel = torch.rand(batch, *time_axis, 1, 80, 16, generator=generator) * 8 - 4
    target = torch.rand(batch, 3, *time_axis, 96, 96, generator=generator)
    reference = torch.rand(batch, 3, *time_axis, 96, 96, generator=generator)
    return mel, torch.cat((mask_lower_half(target), reference), dim=1)


@pytest.fixture(scope="module")
def default_model() -> StabSyncModel:
    return make(STABSYNC_DEFAULT)


@pytest.fixture(scope="module")
def tiny_model() -> StabSyncModel:
    return make(STABSYNC_TINY)


@pytest.fixture(scope="module")
def default_output(default_model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass of the default model (batch 1), shared by the tests that need it."""
    mel, faces = inputs(batch=1)
    with torch.no_grad():
        return mel, faces, default_model(mel, faces)


# --- the generator contract ------------------------------------------------------------------------------------


def test_it_generates_a_96x96_frame_in_0_1_from_the_default_config(default_output):
    _, _, frames = default_output
    assert frames.shape == (1, 3, 96, 96)
    assert frames.min() >= 0 and frames.max() <= 1


def test_it_generates_96x96_frames_in_0_1_from_the_tiny_config(tiny_model):
    mel, faces = inputs(batch=2)
    with torch.no_grad():
        frames = tiny_model(mel, faces)
    assert frames.shape == (2, 3, 96, 96)
    assert frames.min() >= 0 and frames.max() <= 1


def test_it_declares_its_input_spec(tiny_model, default_model):
    for model in (tiny_model, default_model):
        spec = model.input_spec
        assert (spec.face_size, spec.mel_frames, spec.face_order, spec.color) == (96, 16, MASKED_FIRST, "BGR")


def test_it_folds_a_time_axis_like_the_per_frame_calls(tiny_model):
    """Training feeds 5-frame sequences: (B, T, 1, 80, 16) and (B, 6, T, 96, 96) -> (B, 3, T, 96, 96)."""
    mel, faces = inputs(batch=2, frames=3)
    with torch.no_grad():
        sequence = tiny_model(mel, faces)
        per_frame = torch.stack([tiny_model(mel[:, t], faces[:, :, t]) for t in range(3)], dim=2)
    assert sequence.shape == (2, 3, 3, 96, 96)
    torch.testing.assert_close(sequence, per_frame)


def test_it_rejects_inputs_outside_the_contract(tiny_model):
    mel, faces = inputs(batch=1)
    with pytest.raises(ValueError, match="80, 16"):
        tiny_model(torch.zeros(1, 1, 80, 27), faces)
    with pytest.raises(ValueError, match="6, 96, 96"):
        tiny_model(mel, faces[:, :3])


# --- G_S and G_L -----------------------------------------------------------------------------------------------


def test_it_has_separate_g_s_and_g_l_of_the_same_architecture(tiny_model):
    g_s, g_l = tiny_model.g_silent, tiny_model.g_talking
    assert g_s is not g_l and type(g_s) is type(g_l) is TalkingFaceGenerator
    assert g_s.config == g_l.config
    shapes_s = {k: v.shape for k, v in g_s.state_dict().items()}
    shapes_l = {k: v.shape for k, v in g_l.state_dict().items()}
    assert shapes_s == shapes_l
    storage_s = {p.data_ptr() for p in g_s.parameters()}
    assert storage_s.isdisjoint(p.data_ptr() for p in g_l.parameters())  # no shared weights
    assert not torch.equal(g_s.decoder[0].up[0].weight, g_l.decoder[0].up[0].weight)  # separately initialised
    with pytest.raises(ValueError, match="separate instances"):
        StabSyncModel(g_l, g_l, tiny_model.audio_encoder)


def test_it_has_an_identity_and_a_pose_encoder_of_the_same_architecture(tiny_model):
    g = tiny_model.g_talking
    assert g.identity_encoder is not g.pose_encoder
    assert {k: v.shape for k, v in g.identity_encoder.state_dict().items()} == \
           {k: v.shape for k, v in g.pose_encoder.state_dict().items()}


def test_it_feeds_silence_to_g_s_and_the_silent_identity_to_g_l(tiny_model):
    """G_S(silent mel) turns the reference into the silent identity reference, which G_L's identity encoder takes."""
    mel, faces = inputs(batch=2)
    masked_target, reference = faces[:, :3], faces[:, 3:]
    calls = {}
    hooks = [
        tiny_model.g_silent.register_forward_hook(lambda m, args, out: calls.update(g_s=(args, out))),
        tiny_model.g_talking.register_forward_hook(lambda m, args, out: calls.update(g_l=(args, out))),
    ]
    try:
        with torch.no_grad():
            frames = tiny_model(mel, faces)
            silent_embedding = tiny_model.audio_encoder(torch.full((1, 1, 80, 16), -4.0))
            speech_embedding = tiny_model.audio_encoder(mel)
    finally:
        for hook in hooks:
            hook.remove()
    (s_audio, s_identity, s_pose), s_out = calls["g_s"]
    torch.testing.assert_close(s_audio, silent_embedding.expand(2, -1, -1, -1))
    assert torch.equal(s_identity, reference)
    assert torch.equal(s_pose, mask_lower_half(reference))  # G_S re-renders the reference itself
    (l_audio, l_identity, l_pose), l_out = calls["g_l"]
    torch.testing.assert_close(l_audio, speech_embedding)
    assert torch.equal(l_identity, s_out)
    assert torch.equal(l_pose, masked_target)
    assert torch.equal(l_out, frames)


def test_it_can_give_g_s_the_masked_target_as_pose(tiny_model):
    config = dataclasses.replace(STABSYNC_TINY, silent_pose_input="masked_target")
    model = make(config)
    mel, faces = inputs(batch=1)
    seen = {}
    model.g_silent.register_forward_hook(lambda m, args, out: seen.update(pose=args[2]))
    with torch.no_grad():
        model(mel, faces)
    assert torch.equal(seen["pose"], faces[:, :3])


def test_it_uses_minus_4_as_the_mel_of_silence():
    """Digital silence: |STFT| = 0 -> 20·log10(max(1e-5, 0)) − ref_level_db 20 = −120 dB -> Wav2Lip's symmetric
    normalisation clip(8·(S − min_level_db)/(−min_level_db) − 4, −4, 4) = clip(8·(−20)/100 − 4) = clip(−5.6) = −4."""
    level_db = 20 * math.log10(max(1e-5, 0.0)) - 20
    normalised = min(max(8 * (level_db + 100) / 100 - 4, -4.0), 4.0)
    assert level_db == -120 and normalised == SILENT_MEL_VALUE == -4.0
    window = silent_mel_window(3, STABSYNC_DEFAULT)
    assert window.shape == (3, 1, 80, 16) and (window == -4.0).all()


def test_it_masks_rows_s_over_2_onwards_of_the_pose_reference():
    face = torch.ones(1, 3, 96, 96)
    masked = mask_lower_half(face)
    assert masked[:, :, :48].eq(1).all() and masked[:, :, 48:].eq(0).all()
    assert face.eq(1).all()  # not in place


def test_it_conditions_the_frame_on_audio_and_on_both_faces(tiny_model):
    g = tiny_model.g_talking
    torch.manual_seed(3)
    audio, identity, pose = torch.rand(1, 32, 1, 1), torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        base = g(audio, identity, pose)
        assert not torch.equal(base, g(torch.rand(1, 32, 1, 1), identity, pose))
        assert not torch.equal(base, g(audio, torch.rand(1, 3, 96, 96), pose))
        assert not torch.equal(base, g(audio, identity, torch.rand(1, 3, 96, 96)))


# --- the frozen audio encoder ----------------------------------------------------------------------------------


def test_it_keeps_the_audio_encoder_and_g_s_frozen_while_g_l_trains():
    model = make(STABSYNC_TINY).train()
    encoder, g_s = model.audio_encoder, model.g_silent
    assert model.g_talking.training
    for frozen in (encoder, g_s):
        assert not any(m.training for m in frozen.modules())  # eval even after model.train()
        assert not any(p.requires_grad for p in frozen.parameters())
    running_means = (encoder.projection.bn.running_mean.clone(), g_s.fusion[1].running_mean.clone())

    mel, faces = inputs(batch=2)
    model(mel, faces).mean().backward()

    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is None for p in g_s.parameters())
    assert all(p.grad is not None for p in model.g_talking.parameters())
    assert torch.equal(encoder.projection.bn.running_mean, running_means[0])  # BN statistics did not move
    assert torch.equal(g_s.fusion[1].running_mean, running_means[1])
    assert not any(m.training for m in encoder.modules())


def test_it_can_leave_g_s_trainable_but_never_the_audio_encoder():
    torch.manual_seed(0)
    model = StabSyncModel(TalkingFaceGenerator(STABSYNC_TINY), TalkingFaceGenerator(STABSYNC_TINY),
                          AudioEncoder(STABSYNC_TINY.audio_config), freeze_silent_generator=False).train()
    assert model.g_silent.training and not model.audio_encoder.training
    mel, faces = inputs(batch=2)
    model(mel, faces).mean().backward()
    assert all(p.grad is not None for p in model.g_silent.parameters())
    assert all(p.grad is None for p in model.audio_encoder.parameters())


def test_it_loads_the_audio_encoder_of_a_trained_avsyncnet(tiny_model, default_model):
    """E_A is AVSyncNet's audio encoder: its weights load strictly into the model (default and tiny)."""
    for avsync_config, model in ((AVSYNCNET_TINY, tiny_model), (AVSYNCNET_DEFAULT, default_model)):
        torch.manual_seed(5)
        audio_encoder = AudioEncoder(avsync_config.audio_config)
        fresh = AudioEncoder(model.config.audio_config)
        fresh.load_state_dict(audio_encoder.state_dict(), strict=True)
        assert model.config.audio_config == avsync_config.audio_config
    assert isinstance(AVSyncNet(AVSYNCNET_TINY).audio_encoder, AudioEncoder)


# --- blocks ----------------------------------------------------------------------------------------------------


def test_it_sums_the_input_and_output_of_each_face_encoding_block():
    """With the second conv's BN zeroed the residual branch is 0, so the block returns its (strided) input."""
    torch.manual_seed(0)
    block = FaceEncodingBlock(8, 16).eval()
    nn.init.zeros_(block.conv2[1].weight)
    nn.init.zeros_(block.conv2[1].bias)
    x = torch.randn(2, 8, 24, 24)
    with torch.no_grad():
        out = block(x)
        assert out.shape == (2, 16, 12, 12)
        torch.testing.assert_close(out, block.down(x))
    assert block.down[0].stride == (2, 2) and block.conv1[0].stride == block.conv2[0].stride == (1, 1)


def test_it_reduces_3_px_to_1_px_in_the_last_face_encoding_block():
    block = FaceEncodingBlock(16, 32, padding=0, inner_kernel=1).eval()
    with torch.no_grad():
        assert block(torch.randn(1, 16, 3, 3)).shape == (1, 32, 1, 1)


def test_it_upsamples_with_face_decoding_blocks():
    with torch.no_grad():
        assert FaceDecodingBlock(8, 4).eval()(torch.randn(1, 8, 6, 6)).shape == (1, 4, 12, 12)
        assert FaceDecodingBlock(8, 4, 1, 0, 0).eval()(torch.randn(1, 8, 1, 1)).shape == (1, 4, 3, 3)


def test_it_encodes_faces_down_to_1x1_with_skips_at_every_size(default_model):
    with torch.no_grad():
        features = default_model.g_talking.identity_encoder(torch.rand(1, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in features] == [
        (16, 96, 96), (32, 48, 48), (64, 24, 24), (128, 12, 12), (256, 6, 6), (512, 3, 3), (512, 1, 1)]


# --- discriminator ---------------------------------------------------------------------------------------------


def test_it_spectrally_normalises_every_conv_of_the_discriminator():
    disc = StabSyncDiscriminator(STABSYNC_TINY)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7  # six strided convs + the 1x1 classifier
    for conv in convs:
        assert parametrize.is_parametrized(conv, "weight")
        assert type(conv.parametrizations.weight[0]).__name__ == "_SpectralNorm"
    assert [c.stride for c in convs[:6]] == [(2, 2)] * 6
    assert any(isinstance(m, nn.LeakyReLU) for m in disc.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())


def test_it_classifies_faces_and_face_sequences_with_one_logit_each():
    torch.manual_seed(0)
    disc = StabSyncDiscriminator(STABSYNC_TINY).eval()
    with torch.no_grad():
        assert disc(torch.rand(4, 3, 96, 96)).shape == (4,)
        assert disc(torch.rand(2, 3, 5, 96, 96)).shape == (10,)


# --- parameter counts ------------------------------------------------------------------------------------------


def expected_generator_parameters(c: StabSyncConfig) -> int:
    """The arithmetic behind the counts below. conv+BN+ReLU (cin → cout, k): cin·cout·k² + cout (bias) + 2·cout (BN).
    FE block: 9·cin·cout + 2·k²·cout² + 9·cout (k = 3, or 1 in the 1x1 bottleneck block). FD block: a 3x3
    transposed conv + BN and two 3x3 conv + BN: 9·cin·cout + 18·cout² + 9·cout."""
    enc, dec = c.encoder_channels, c.decoder_channels
    k2 = c.stem_kernel ** 2
    encoder = 3 * enc[0] * k2 + 3 * enc[0]
    for i in range(1, len(enc)):
        inner = 1 if i == len(enc) - 1 else 9
        encoder += 9 * enc[i - 1] * enc[i] + 2 * inner * enc[i] ** 2 + 9 * enc[i]
    fusion = 2 * enc[-1] * c.fused_channels + 3 * c.fused_channels
    decoder, cin, levels = 0, c.fused_channels + c.audio_embedding_dim, len(enc) - 1
    for i, cout in enumerate(dec):
        decoder += 9 * cin * cout + 18 * cout ** 2 + 9 * cout
        cin = cout + 2 * enc[levels - 1 - i]
    head = 9 * cin * c.output_hidden_channels + 3 * c.output_hidden_channels + c.output_hidden_channels * 3 + 3
    return 2 * encoder + fusion + decoder + head


def test_it_counts_the_default_generator_parameters(default_model):
    """G_L (= G_S) default: each face encoder 2,400 (stem 3·16·49 + 48) + FE blocks 23,328 + 92,736 + 369,792 +
    1,476,864 + 5,902,848 + 2,888,192 (1x1 bottleneck) = 10,756,160; fusion 1024·512 + 1,536 = 525,824; FD blocks
    9,441,792 + 11,801,088 + 6,196,608 + 2,656,512 + 738,432 + 184,896 = 31,019,328; output head 27,744 + 99 =
    27,843. G = 2 × 10,756,160 + 525,824 + 31,019,328 + 27,843 = 53,085,315 (Wav2Lip's one-encoder U-Net has
    36,298,035). The composed model: G_S + G_L + the frozen audio encoder (1,700,758, see test_avsyncnet.py) =
    107,871,388. The paper publishes no count."""
    g = default_model.g_talking
    assert count(g.identity_encoder) == count(g.pose_encoder) == 10_756_160
    assert count(g.fusion) == 525_824
    assert count(g.decoder) == 31_019_328
    assert count(g.output_block) == 27_843
    assert count(g) == expected_generator_parameters(STABSYNC_DEFAULT) == 53_085_315
    assert count(default_model.g_silent) == 53_085_315
    assert count(default_model.audio_encoder) == 1_700_758
    assert count(default_model) == 2 * 53_085_315 + 1_700_758 == 107_871_388


def test_it_counts_the_tiny_generator_parameters(tiny_model):
    """Tiny: G 222,483 (same formulas), audio encoder 52,985 (AVSyncNet tiny's), model 2 × 222,483 + 52,985."""
    assert count(tiny_model.g_talking) == expected_generator_parameters(STABSYNC_TINY) == 222_483
    assert count(tiny_model.audio_encoder) == 52_985
    assert count(tiny_model) == 2 * 222_483 + 52_985 == 497_951


def test_it_counts_the_discriminator_parameters():
    """Spectral norm keeps one weight (``original``) + bias per conv (u, v are buffers). Default: 3·32·9 + 32 = 896,
    18,496, 73,856, 295,168, 1,180,160, 2,359,808, classifier 512 + 1 = 513; total 3,928,897. Tiny: 18,217."""
    assert count(StabSyncDiscriminator(STABSYNC_DEFAULT)) == 3_928_897
    assert count(StabSyncDiscriminator(STABSYNC_TINY)) == 18_217


# --- the losses ------------------------------------------------------------------------------------------------


def test_it_computes_the_stabilized_sync_loss_of_eq_3():
    """x = 0.5, y = 0.8, d = 0.2, ε = 0: ratio = 0.3 / (0.3 + 0.6) = 1/3, L_ss = −log(2/3) = log 1.5 ≈ 0.405465.
    With ε = 1e-6: −log(1 − 0.300001 / 0.900001)."""
    x, y, d = torch.tensor([0.5]), torch.tensor([0.8]), torch.tensor([0.2])
    torch.testing.assert_close(stabilized_sync_loss(x, y, d, eps=0.0), torch.tensor(math.log(1.5)))
    torch.testing.assert_close(stabilized_sync_loss(x, y, d), torch.tensor(-math.log(1 - 0.300001 / 0.900001)))


def test_it_gives_almost_no_sync_loss_when_the_generated_lips_score_like_the_gt():
    """x = y: ratio = ε / (|y − d| + ε); with ε = 0.01, |y − d| = 0.5: L_ss = −log(50/51) = log(51/50)."""
    x = y = torch.tensor([0.7])
    d = torch.tensor([0.2])
    torch.testing.assert_close(stabilized_sync_loss(x, y, d, eps=0.01), torch.tensor(math.log(51 / 50)))
    assert stabilized_sync_loss(x, y, d, eps=0.0).item() == 0.0


def test_it_caps_the_sync_loss_at_100_when_the_reference_scores_like_the_gt():
    """d = y: the ratio is 1 for every x and −log(0) = ∞; BCE's log clamp makes it 100, with a finite gradient."""
    x = torch.tensor([0.3, 0.6], requires_grad=True)
    y = d = torch.tensor([0.6, 0.6])
    loss = stabilized_sync_loss(x, y, d, reduction="none")
    torch.testing.assert_close(loss, torch.tensor([100.0, 100.0]))
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_it_penalises_more_as_the_reference_scores_closer_to_the_gt():
    """Same |x − y| = 0.2: d = 0.1 (far from y = 0.8) gives −log(1 − 0.2/0.9); d = 0.6 gives −log(1 − 0.2/0.4)."""
    x, y = torch.tensor([0.6, 0.6]), torch.tensor([0.8, 0.8])
    d = torch.tensor([0.1, 0.6])
    loss = stabilized_sync_loss(x, y, d, eps=0.0, reduction="none")
    torch.testing.assert_close(loss, torch.tensor([-math.log(1 - 0.2 / 0.9), -math.log(0.5)]))
    assert loss[1] > loss[0]


def test_it_computes_the_adaptive_triplet_loss_of_eq_2():
    """I' = (3, 4), I^GT = (0, 0), I^R = (6, 8): D(I', GT) = 5, D(I', R) = 5, D(GT, R) = 10 -> 5 − 5/10 + 1 = 5.5.
    I' = (−1, 0), GT = (0, 0), R = (0.5, 0): 1 − 1.5/0.5 + 1 = −1 -> the floor ε."""
    generated = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    reference = torch.tensor([[6.0, 8.0], [0.5, 0.0]])
    loss = adaptive_triplet_loss(generated, target, reference, eps=1e-6, reduction="none")
    torch.testing.assert_close(loss, torch.tensor([5.5, 1e-6]))
    torch.testing.assert_close(adaptive_triplet_loss(generated, target, reference), torch.tensor((5.5 + 1e-6) / 2))


def test_it_floors_the_triplet_loss_at_eps_for_a_perfect_generation():
    """I' = I^GT: 0 − D(GT, R)/D(GT, R) + α = 0 -> max(0, ε) = ε, whatever the (feature-map) shapes."""
    torch.manual_seed(0)
    target, reference = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    loss = adaptive_triplet_loss(target.clone(), target, reference, eps=1e-4, reduction="none")
    torch.testing.assert_close(loss, torch.full((2,), 1e-4))


def test_it_handles_an_identity_reference_identical_to_the_target():
    """D(GT, R) = 0 divides by zero in Eq. (2); the limit is the floor ε, returned with a zero, finite gradient."""
    generated = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    target = reference = torch.zeros(2, 2)
    loss = adaptive_triplet_loss(generated, target, reference, eps=1e-6, reduction="none")
    torch.testing.assert_close(loss, torch.full((2,), 1e-6))
    loss.sum().backward()
    assert torch.equal(generated.grad, torch.zeros(2, 2))


# --- state, determinism, registry ------------------------------------------------------------------------------


def round_trip(module: nn.Module, fresh: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    return fresh.eval()


def test_it_round_trips_its_default_state_dict(default_model, default_output):
    mel, faces, frames = default_output
    fresh = round_trip(default_model, make(STABSYNC_DEFAULT, seed=99))
    with torch.no_grad():
        assert torch.equal(fresh(mel, faces), frames)


def test_it_round_trips_its_tiny_state_dict(tiny_model):
    fresh = round_trip(tiny_model, make(STABSYNC_TINY, seed=99))
    mel, faces = inputs(batch=2)
    with torch.no_grad():
        assert torch.equal(tiny_model(mel, faces), fresh(mel, faces))


def test_it_round_trips_the_spectrally_normalised_discriminator():
    torch.manual_seed(0)
    disc = StabSyncDiscriminator(STABSYNC_TINY).eval()
    torch.manual_seed(1)
    fresh = round_trip(disc, StabSyncDiscriminator(STABSYNC_TINY))
    faces = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(disc(faces), fresh(faces))


def test_it_is_deterministic_under_a_seed():
    a, b, c = make(STABSYNC_TINY, seed=4), make(STABSYNC_TINY, seed=4), make(STABSYNC_TINY, seed=5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.g_talking.fusion[0].weight, c.g_talking.fusion[0].weight)
    mel, faces = inputs(batch=2)
    with torch.no_grad():
        assert torch.equal(a(mel, faces), b(mel, faces))


def test_it_is_registered_as_stabsync():
    arch = get_architecture("stabsync")
    assert arch.config_class is StabSyncConfig
    assert arch.configs == {"default": STABSYNC_DEFAULT, "tiny": STABSYNC_TINY}
    assert arch.remap_official is None  # no official checkpoint was released
    model = arch.build_generator(arch.config("tiny")).eval()
    assert isinstance(model, StabSyncModel)
    mel, faces = inputs(batch=1)
    with torch.no_grad():
        assert model(mel, faces).shape == (1, 3, 96, 96)


def test_it_rebuilds_its_config_from_json():
    arch = get_architecture("stabsync")
    stored = json.loads(json.dumps(dataclasses.asdict(STABSYNC_TINY)))
    assert arch.config(stored) == STABSYNC_TINY


def test_it_validates_its_config():
    with pytest.raises(ValueError, match="face_size"):
        StabSyncConfig(face_size=128)
    with pytest.raises(ValueError, match="decoder_channels"):
        StabSyncConfig(decoder_channels=(512, 256))
    with pytest.raises(ValueError, match="silent_pose_input"):
        StabSyncConfig(silent_pose_input="reference")
