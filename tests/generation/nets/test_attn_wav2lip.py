"""Specification of the LPIPS-AttnWav2Lip generator (generation/nets/attn_wav2lip.py).

Chen et al., Speech Communication 2023 (seed 003_df5479c5b8ed9a72.txt): a residual-CBAM U-Net whose 6x6x256
bottleneck passes through nine cascaded semantic alignment modules (FFC + AdaIN driven by a 6x6x256 audio map).
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

import generation.nets as nets
from generation.nets.attn_wav2lip import (
    ATTN_WAV2LIP_DEFAULT,
    ATTN_WAV2LIP_TINY,
    FFC,
    AdaIN,
    AttnWav2Lip,
    AttnWav2LipConfig,
    ChannelAttention,
    FourierUnit,
    ResidualCBAMBlock,
    SemanticAlignmentModule,
    SpatialAttention,
    SpectralTransform,
)



def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=generator) * 8 - 4  # Wav2Lip-normalised log-mel in [-4, 4]
    faces = torch.rand(batch, 6, 96, 96, generator=generator)
    faces[:, :3, 48:] = 0  # masked target first, reference second
    return mel, faces


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """These small convolutions run fastest on one thread; with two threads on a busy 2-core machine they spin
    and run ~10x slower. Restored afterwards so other test modules keep their setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def default_model() -> AttnWav2Lip:
    torch.manual_seed(0)
    return AttnWav2Lip(ATTN_WAV2LIP_DEFAULT).eval()


@pytest.fixture(scope="module")
def tiny_model() -> AttnWav2Lip:
    torch.manual_seed(0)
    return AttnWav2Lip(ATTN_WAV2LIP_TINY).eval()


@pytest.fixture(scope="module")
def default_output(default_model) -> torch.Tensor:
    with torch.no_grad():
        return default_model(*_inputs(1))


# --- contract -------------------------------------------------------------------------------------------------


def test_it_declares_the_wav2lip_input_spec():
    spec = AttnWav2Lip.input_spec
    assert (spec.face_size, spec.mel_frames, spec.face_order, spec.color) == (96, 16, nets.MASKED_FIRST, "BGR")


def test_it_maps_default_inputs_to_a_96px_face_in_the_unit_range(default_output):
    assert default_output.shape == (1, 3, 96, 96)
    assert default_output.dtype == torch.float32
    assert 0.0 <= default_output.min() and default_output.max() <= 1.0


def test_it_maps_tiny_inputs_of_a_batch_to_96px_faces_in_the_unit_range(tiny_model):
    with torch.no_grad():
        frames = tiny_model(*_inputs(2))
    assert frames.shape == (2, 3, 96, 96)
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_it_rejects_inputs_of_the_wrong_shape(tiny_model):
    mel, faces = _inputs(1)
    with pytest.raises(ValueError, match="mel must be"):
        tiny_model(torch.zeros(1, 1, 80, 27), faces)
    with pytest.raises(ValueError, match="faces must be"):
        tiny_model(mel, torch.zeros(1, 6, 128, 128))
    with pytest.raises(ValueError, match="batch sizes"):
        tiny_model(mel, torch.cat((faces, faces)))


def test_it_is_registered_with_default_and_tiny_configs_and_no_official_remap():
    architecture = nets.get_architecture("attn_wav2lip")
    assert architecture.config_class is AttnWav2LipConfig
    assert architecture.config("default") == ATTN_WAV2LIP_DEFAULT
    assert architecture.config("tiny") == ATTN_WAV2LIP_TINY
    assert architecture.remap_official is None  # no checkpoint of the authors can be obtained
    model = architecture.build_generator(architecture.config("tiny")).eval()
    assert isinstance(model, AttnWav2Lip)
    with torch.no_grad():
        assert model(*_inputs(1)).shape == (1, 3, 96, 96)
    assert architecture.config({"num_alignment_modules": 3}).num_alignment_modules == 3


# --- parameter counts -----------------------------------------------------------------------------------------


def test_it_has_13_506_623_parameters_in_the_default_config(default_model):
    """The paper states no parameter count; this is the arithmetic of the design (UNVERIFIED parts included).

    conv k (bias) + BN = cin*cout*k*k + 3*cout.  Residual CBAM block at C, h = max(1, C // 16):
    9C^2 + C (conv) + 2C (BN) + 2Ch + h + C (channel MLP) + 98 + 2 (7x7 spatial conv, BN) = 9C^2 + 4C + 2Ch + h + 100
    -> C=32: 9,574; 64: 37,736; 128: 150,124; 256: 599,156; 384: 1,347,196.

    face encoder   4,752 (6->16 k7) + 4,704 + 2x9,574 + 18,624 + 3x37,736 + 74,112 + 2x150,124
                   + 295,680 + 2x599,156                                                        = 2,028,788
    audio encoder  384 + 2x9,312 | 18,624 + 2x37,056 | 74,112 + 2x147,840 | 590,592 (k6x3) + 590,592 = 1,662,720
    alignment      FFC(256; 64 local, 192 global): 36,864 + 110,592 + 110,592 (3x3 local convs)
                   + 74,304 (spectral: 18,432 + 192 | Fourier 36,864 + 384 | 18,432) + 512 (BNs)
                   = 332,864; AdaIN from audio statistics has none; x 9                         = 2,995,776
    face decoder   885,888 + 2x1,347,196 | 1,180,416 + 2x599,156 | 369,024 + 2x150,124
                   | 92,352 + 2x37,736                                                          = 6,796,104
    output block   23,136 (80->32 k3 + BN) + 99 (32->3 k1)                                      = 23,235
    total                                                                                        13,506,623
    (Wav2Lip's generator has 36,298,035: this U-Net stops at 6x6 instead of 1x1.)
    """
    parts = {name: _parameters(getattr(default_model, name)) for name in
             ("face_encoder", "audio_encoder", "alignment_modules", "face_decoder", "output_block")}
    assert parts == {"face_encoder": 2_028_788, "audio_encoder": 1_662_720, "alignment_modules": 2_995_776,
                     "face_decoder": 6_796_104, "output_block": 23_235}
    assert _parameters(default_model) == 13_506_623


def test_it_adds_1_245_824_parameters_per_module_with_the_video_retalking_adain_head():
    """audio_mlp: Linear(256*6*6 -> 128) 1,179,776 + two Linear(128 -> 256) 2 x 32,896 = 1,245,824 per module;
    13,506,623 + 9 x 1,245,824 = 24,719,039."""
    assert _parameters(AttnWav2Lip(dataclasses.replace(ATTN_WAV2LIP_DEFAULT, adain_mode="audio_mlp"))) == 24_719_039


def test_it_has_63_688_parameters_in_the_tiny_config(tiny_model):
    """Same formulas with the tiny widths: face encoder 19,281, audio encoder 8,376, 9 x 1,364 alignment
    (FFC(16; 4 local, 12 global): 144 + 432 + 432 + 324 spectral + 32 BN), face decoder 22,840, output 915."""
    parts = [_parameters(getattr(tiny_model, name)) for name in
             ("face_encoder", "audio_encoder", "alignment_modules", "face_decoder", "output_block")]
    assert parts == [19_281, 8_376, 9 * 1_364, 22_840, 915]
    assert _parameters(tiny_model) == 63_688


# --- reproducibility ------------------------------------------------------------------------------------------


def test_it_round_trips_its_state_dict_strictly(default_model, default_output):
    buffer = io.BytesIO()
    torch.save(default_model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # different random weights before the load
    fresh = AttnWav2Lip(ATTN_WAV2LIP_DEFAULT).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(*_inputs(1)), default_output)


def test_it_is_deterministic_under_a_seed(tiny_model):
    torch.manual_seed(0)
    again = AttnWav2Lip(ATTN_WAV2LIP_TINY).eval()
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(tiny_model(*_inputs(1)), again(*_inputs(1)))
    torch.manual_seed(1)
    other = AttnWav2Lip(ATTN_WAV2LIP_TINY)
    assert not torch.equal(other.face_encoder[0][0].conv.weight, tiny_model.face_encoder[0][0].conv.weight)


# --- bottleneck and the nine alignment modules ----------------------------------------------------------------


def test_it_aligns_a_256x6x6_bottleneck_with_a_256x6x6_audio_map_exactly_nine_times_in_a_chain(default_model):
    alignment_modules = [m for m in default_model.modules() if isinstance(m, SemanticAlignmentModule)]
    assert len(alignment_modules) == 9

    calls = []  # (module, visual input, audio input, output) per call, in call order
    bottleneck = []
    handles = [m.register_forward_hook(lambda m, inputs, output: calls.append((m, *inputs, output)))
               for m in alignment_modules]
    handles.append(default_model.face_encoder[-1].register_forward_hook(lambda m, i, output: bottleneck.append(output)))
    try:
        with torch.no_grad():
            default_model(*_inputs(1))
    finally:
        for handle in handles:
            handle.remove()

    assert len(calls) == 9  # each module runs once, in order
    assert [module for module, *_ in calls] == alignment_modules
    assert bottleneck[0].shape == (1, 256, 6, 6)
    assert calls[0][1] is bottleneck[0]  # the first module takes the face encoder's output
    for (*_, previous_output), (_, visual, _, _) in zip(calls, calls[1:]):
        assert visual is previous_output  # each next one the previous one's output
    for _, visual, audio, output in calls:
        assert visual.shape == audio.shape == output.shape == (1, 256, 6, 6)
        assert audio is calls[0][2]  # the same audio map enters all nine


# --- FFC: a real spectral transform ---------------------------------------------------------------------------


def test_it_gives_the_fourier_unit_a_global_receptive_field_unlike_the_local_3x3_conv():
    torch.manual_seed(0)
    unit = FourierUnit(8, 8).eval()
    with torch.no_grad():
        unit.norm.running_mean.normal_(0, 0.1)  # break the symmetry an untrained BN would leave at zero
    local = torch.nn.Conv2d(8, 8, 3, padding=1)
    base = torch.randn(1, 8, 6, 6)
    poked = base.clone()
    poked[0, :, 0, 0] += 1.0  # change one corner pixel
    with torch.no_grad():
        spectral_change = (unit(poked) - unit(base)).abs().sum(dim=1)[0]  # (6, 6)
        local_change = (local(poked) - local(base)).abs().sum(dim=1)[0]
    assert local_change[3:, 3:].max() == 0  # a 3x3 conv cannot see the far corner
    assert (spectral_change > 1e-6).all()  # every output pixel of the Fourier unit moves


def test_it_computes_the_global_branch_with_torch_fft(monkeypatch):
    calls = []
    real_rfft2, real_irfft2 = torch.fft.rfft2, torch.fft.irfft2

    def rfft2(x, **kwargs):
        calls.append(("rfft2", tuple(x.shape)))
        return real_rfft2(x, **kwargs)

    def irfft2(x, **kwargs):
        calls.append(("irfft2", kwargs["s"]))
        return real_irfft2(x, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft2", rfft2)
    monkeypatch.setattr(torch.fft, "irfft2", irfft2)
    ffc = FFC(16, 0.75, 3).eval()
    assert isinstance(ffc.global_to_global, SpectralTransform)
    assert (ffc.local_channels, ffc.global_channels) == (4, 12)
    with torch.no_grad():
        assert ffc(torch.randn(2, 16, 6, 6)).shape == (2, 16, 6, 6)
    assert calls == [("rfft2", (2, 6, 6, 6)), ("irfft2", (6, 6))]  # on the 12 // 2 = 6 reduced global channels


def test_it_runs_under_bfloat16_autocast_although_the_fft_refuses_that_dtype(tiny_model):
    with pytest.raises(RuntimeError):
        torch.fft.rfft2(torch.zeros(1, 1, 6, 6, dtype=torch.bfloat16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        frames = tiny_model(*_inputs(1))
    assert frames.shape == (1, 3, 96, 96) and torch.isfinite(frames.float()).all()


# --- AdaIN ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["audio_statistics", "audio_mlp"])
def test_it_gives_adain_outputs_the_per_channel_mean_and_std_it_derives_from_the_audio(mode):
    torch.manual_seed(0)
    adain = AdaIN(16, (16, 6, 6), mode, mlp_hidden=8, eps=1e-5)
    audio = torch.randn(2, 16, 6, 6) * 3 + 1
    visual = torch.randn(2, 16, 6, 6) * 5 - 2
    with torch.no_grad():
        scale, shift = adain.style_parameters(audio)
        out = adain(visual, audio)
    assert scale.shape == shift.shape == (2, 16, 1, 1)
    torch.testing.assert_close(out.mean(dim=(2, 3), keepdim=True), shift, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False, keepdim=True), scale.abs(), atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # whatever the visual features were
        torch.testing.assert_close(adain(visual * 7 + 3, audio), out, atol=1e-4, rtol=1e-4)


def test_it_takes_shift_and_scale_from_the_audio_map_statistics_as_in_eq_2():
    adain = AdaIN(16, (16, 6, 6), "audio_statistics", mlp_hidden=8, eps=1e-5)
    assert _parameters(adain) == 0
    audio = torch.randn(1, 16, 6, 6)
    scale, shift = adain.style_parameters(audio)
    torch.testing.assert_close(shift, audio.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(scale, (audio.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt())


def test_it_lets_an_alignment_module_see_the_audio_only_through_its_channel_statistics():
    torch.manual_seed(0)
    module = SemanticAlignmentModule(ATTN_WAV2LIP_TINY).eval()
    visual, audio = torch.randn(1, 16, 6, 6), torch.randn(1, 16, 6, 6)
    shuffled = audio.flatten(2)[:, :, torch.randperm(36)].view_as(audio)  # same per-channel mean and std
    with torch.no_grad():
        torch.testing.assert_close(module(visual, shuffled), module(visual, audio))
        assert not torch.allclose(module(visual, audio * 2), module(visual, audio))


# --- CBAM -----------------------------------------------------------------------------------------------------


def test_it_builds_cbam_attention_maps_in_the_open_unit_interval_with_the_right_shapes(default_model):
    block = default_model.face_encoder[4][1]
    assert isinstance(block, ResidualCBAMBlock)
    features = torch.randn(2, 256, 6, 6)
    with torch.no_grad():
        channel_map = block.cbam.channel_attention(features)
        spatial_map = block.cbam.spatial_attention(features)
    assert isinstance(block.cbam.channel_attention, ChannelAttention)
    assert isinstance(block.cbam.spatial_attention, SpatialAttention)
    assert channel_map.shape == (2, 256, 1, 1)
    assert spatial_map.shape == (2, 1, 6, 6)
    for attention in (channel_map, spatial_map):
        assert (attention > 0).all() and (attention < 1).all()
    assert block.cbam.channel_attention.mlp[0].out_features == 256 // 16  # reduction ratio r = 16
    assert block.cbam.spatial_attention.conv.kernel_size == (7, 7)


def test_it_puts_residual_cbam_blocks_in_the_face_encoder_and_decoder_only(default_model):
    def count(module):
        return sum(isinstance(m, ResidualCBAMBlock) for m in module.modules())

    assert count(default_model.face_encoder) == 2 + 3 + 2 + 2
    assert count(default_model.face_decoder) == 4 * 2
    assert count(default_model.audio_encoder) == 0
    assert count(default_model.alignment_modules) == 0


# --- audio conditioning ---------------------------------------------------------------------------------------


SILENCE = torch.full((1, 1, 80, 16), -4.0)  # the floor of Wav2Lip's normalised log-mel


def test_it_changes_the_default_face_when_the_audio_changes(default_model, default_output):
    """Random weights and eval-mode BatchNorm keep the effect small, but it is there; the same inputs give
    bit-identical outputs, so any difference comes from the audio path (AdaIN, the only way audio enters)."""
    _, faces = _inputs(1)
    with torch.no_grad():
        silent = default_model(SILENCE, faces)
    assert (silent - default_output).abs().max() > 1e-5


@pytest.mark.parametrize("mode", ["audio_statistics", "audio_mlp"])
def test_it_changes_the_tiny_face_when_the_audio_changes(mode):
    torch.manual_seed(0)
    model = AttnWav2Lip(dataclasses.replace(ATTN_WAV2LIP_TINY, adain_mode=mode)).eval()
    mel, faces = _inputs(1)
    with torch.no_grad():
        assert (model(mel, faces) - model(SILENCE, faces)).abs().max() > 1e-5
        assert torch.equal(model(mel, faces), model(mel, faces))


def test_it_rejects_configs_whose_audio_map_does_not_match_the_bottleneck():
    with pytest.raises(ValueError, match="same width"):
        AttnWav2LipConfig(audio_encoder_channels=(32, 64, 128, 512))
    with pytest.raises(ValueError, match="adain_mode"):
        AttnWav2LipConfig(adain_mode="concat")
    with pytest.raises(ValueError, match="ffc_global_ratio"):
        AttnWav2LipConfig(ffc_global_ratio=1.0)
