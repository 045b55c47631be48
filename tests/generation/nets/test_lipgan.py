"""LipGAN generator, discriminator and contrastive loss (generation/nets/lipgan.py).

Reference: Rudrabha/LipGAN fully_pythonic (d8ef8ef) generator.py / discriminator.py, as ported to PyTorch in
"All's Well That FID's Well?" (Electronics 2025, seed 000_41145e614d4b5485.txt); shared/research/metrics_models.md §3.
"""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generation.nets import REFERENCE_FIRST, get_architecture, list_architectures
from generation.nets.lipgan import (
    DISCRIMINATOR_DEFAULT,
    DISCRIMINATOR_KERAS,
    DISCRIMINATOR_PAPER_COUNT,
    DISCRIMINATOR_TINY,
    LIPGAN_BASIC,
    LIPGAN_DEFAULT,
    LIPGAN_TINY,
    ConvBlock,
    ConvTransposeBlock,
    LipGANConfig,
    LipGANDiscriminator,
    LipGANDiscriminatorConfig,
    LipGANGenerator,
    SameConv2d,
    SameConvTranspose2d,
    contrastive_loss,
    tf_same_padding,
)

PAPER_GENERATOR_PARAMETERS = 37_087_763
PAPER_DISCRIMINATOR_PARAMETERS = 10_337_152


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 27, generator=generator) * 8 - 4  # Wav2Lip-normalised log-mel in [-4, 4]
    faces = torch.rand(batch, 6, 96, 96, generator=generator)
    return mel, faces


@pytest.fixture(scope="module")
def default_generator() -> LipGANGenerator:
    torch.manual_seed(0)
    return LipGANGenerator(LIPGAN_DEFAULT).eval()


@pytest.fixture(scope="module")
def default_discriminator() -> LipGANDiscriminator:
    torch.manual_seed(0)
    return LipGANDiscriminator(DISCRIMINATOR_DEFAULT).eval()


# --- generator ---------------------------------------------------------------------------------------------


def test_it_generates_a_96x96_face_in_0_1_from_a_80x27_mel_window(default_generator):
    mel, faces = inputs(1)
    with torch.no_grad():
        frames = default_generator(mel, faces)
    assert frames.shape == (1, 3, 96, 96)
    assert frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_it_runs_the_tiny_config_at_the_same_input_size():
    torch.manual_seed(0)
    tiny = LipGANGenerator(LIPGAN_TINY).eval()
    mel, faces = inputs(3)
    with torch.no_grad():
        frames = tiny(mel, faces)
    assert frames.shape == (3, 3, 96, 96)
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_it_declares_a_reference_first_bgr_input_with_27_mel_frames(default_generator):
    spec = default_generator.input_spec
    assert (spec.face_size, spec.mel_frames, spec.face_order, spec.color) == (96, 27, REFERENCE_FIRST, "BGR")


def test_it_rejects_wrongly_shaped_inputs():
    tiny = LipGANGenerator(LIPGAN_TINY)
    mel, faces = inputs(1)
    with pytest.raises(ValueError, match="mel must be"):
        tiny(mel[..., :16], faces)  # a Wav2Lip 80x16 window
    with pytest.raises(ValueError, match="faces must be"):
        tiny(mel, faces[:, :3])


def test_it_has_49_543_123_parameters_not_the_papers_37_087_763(default_generator):
    """The faithful port of ``create_model_residual`` has 49,543,123 trainable parameters.

    Counted as Keras counts trainable weights: conv/transposed-conv kernels + biases, BatchNorm gamma + beta
    (the moving mean/variance are buffers here and non-trainable in Keras).

    =========================================  ===============  ================  ==========================
    candidate port                             face encoder     audio encoder     decoder       total
    =========================================  ===============  ================  ==========================
    residual (repo default, this port)         19,438,176       4,972,864         25,132,083    49,543,123
    basic ``create_model`` (LIPGAN_BASIC)       6,659,424       3,403,264         11,407,155    21,469,843
    =========================================  ===============  ================  ==========================

    Against the paper's 37,087,763:

    ============================================================  ============  =============
    variant                                                       total         - 37,087,763
    ============================================================  ============  =============
    residual                                                      49,543,123    +12,455,360
    residual, convs before BN without bias (15,424 biases)        49,527,699    +12,439,936
    residual, no BatchNorm (30,848 gammas/betas)                  49,512,275    +12,424,512
    residual, neither                                             49,496,851    +12,409,088
    basic                                                         21,469,843    -15,617,920
    basic + its dead ``conv_block(embedding, 512, 1)``             21,864,595    -15,223,168
      (768*512 + 512 + 2*512 = 394,752; Keras does not count it,
      it is not reachable from the model's output)
    basic, convs before BN without bias (6,272 biases)            21,463,571    -15,624,192
    basic, no BatchNorm (12,544)                                  21,457,299    -15,630,464
    ============================================================  ============  =============

    None matches; the residual port is closest (and is the repo's ``--model residual`` default). Nor does
    changing the number of residual blocks per stage (every combination of up to ~12 blocks per width was
    searched with a throwaway script during development — not re-run here —, with and without conv
    biases / BatchNorm / the dead layer) give 37,087,763 with a plausible
    layout, nor does any single or double kernel-size change of a layer. Dropping the decoder's eight
    residual blocks (-12,543,232) comes closest at 36,999,891 (-87,872), and 87,872 = 2^6 * 1373 is not the
    size of any LipGAN layer. So the paper's PyTorch port differs from LipGAN's generator in a way the paper
    does not describe; reaching its number would need an undocumented change of about 12.46 M weights
    (e.g. ~5 fewer 512-channel 3x3 convs), which we will not guess.
    """
    assert count(default_generator) == 49_543_123
    assert count(default_generator.face_encoder) == 19_438_176
    assert count(default_generator.audio_encoder) == 4_972_864
    assert count(default_generator.decoder) == 25_132_083
    assert count(default_generator) - PAPER_GENERATOR_PARAMETERS == 12_455_360


def test_it_counts_the_variants_of_the_table_above(default_generator):
    """The table's bias / BatchNorm variants, derived from the built modules rather than typed in."""
    torch.manual_seed(0)
    basic = LipGANGenerator(LIPGAN_BASIC)
    expected = ((default_generator, 49_543_123, 15_424, 30_848), (basic, 21_469_843, 6_272, 12_544))
    for model, total, biases, batchnorm in expected:
        assert count(model) == total
        blocks = [m for m in model.modules() if isinstance(m, (ConvBlock, ConvTransposeBlock))]
        assert sum(block.conv.bias.numel() for block in blocks) == biases
        assert sum(count(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)) == batchnorm
    assert count(basic.face_encoder) == 6_659_424
    assert count(basic.audio_encoder) == 3_403_264
    assert count(basic.decoder) == 11_407_155


def test_it_has_86_803_parameters_in_the_tiny_config():
    assert count(LipGANGenerator(LIPGAN_TINY)) == 86_803


def test_it_uses_keras_batchnorm_settings(default_generator):
    norms = [m for m in default_generator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == pytest.approx(0.2) and m.eps == pytest.approx(1e-3) for m in norms)


def test_it_follows_the_keras_sizes_at_every_stage(default_generator):
    """Face 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1; audio 80x27 -> 80x27 -> 27x9 -> 9x9 -> 3x3 -> 1x1; decoder back up."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, module in default_generator.named_modules():
        if (name.count(".") == 2 and ".stages." in name) or name.endswith(("bottleneck", "embedding", "stem")):
            record = lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))  # noqa: E731
            hooks.append(module.register_forward_hook(record))
    mel, faces = inputs(1)
    with torch.no_grad():
        default_generator(mel, faces)
    for hook in hooks:
        hook.remove()
    assert shapes == {
        "face_encoder.stem": (32, 96, 96),
        "face_encoder.stages.0": (64, 48, 48),
        "face_encoder.stages.1": (128, 24, 24),
        "face_encoder.stages.2": (256, 12, 12),
        "face_encoder.stages.3": (512, 6, 6),
        "face_encoder.stages.4": (512, 3, 3),
        "face_encoder.bottleneck": (512, 1, 1),
        "face_encoder.embedding": (512, 1, 1),
        "audio_encoder.stages.0": (32, 80, 27),
        "audio_encoder.stages.1": (64, 27, 9),
        "audio_encoder.stages.2": (128, 9, 9),
        "audio_encoder.stages.3": (256, 3, 3),
        "audio_encoder.bottleneck": (512, 1, 1),
        "audio_encoder.embedding": (512, 1, 1),
        "decoder.stages.0": (512, 3, 3),
        "decoder.stages.1": (512, 6, 6),
        "decoder.stages.2": (256, 12, 12),
        "decoder.stages.3": (128, 24, 24),
        "decoder.stages.4": (64, 48, 48),
        "decoder.stages.5": (32, 96, 96),
    }


def test_it_pads_like_tensorflow_same():
    """TF puts the odd padding pixel after (bottom/right); PyTorch's symmetric padding would not."""
    assert tf_same_padding(96, 7, 1) == (3, 3)
    assert tf_same_padding(96, 5, 2) == (1, 2)  # face 96 -> 48
    assert tf_same_padding(48, 3, 2) == (0, 1)  # face 48 -> 24
    assert tf_same_padding(96, 7, 2) == (2, 3)  # discriminator's first block
    assert tf_same_padding(80, 3, 3) == (0, 1)  # audio 80 -> 27
    assert tf_same_padding(27, 3, 3) == (0, 0)  # audio 27 -> 9
    assert tf_same_padding(1, 3, 1) == (1, 1)

    conv = SameConv2d(1, 1, 3, stride=2)
    x = torch.randn(1, 1, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)  # pad right/bottom only
    torch.testing.assert_close(conv(x), expected)


def test_it_transposes_like_tensorflow_conv2d_transpose_same():
    """TF's Conv2DTranspose('same') is the adjoint of the strided 'same' conv: <conv(x), z> == <x, convT(z)>.

    PyTorch's ConvTranspose2d(k3, s2, padding=1, output_padding=1) has the right size but is the adjoint of a
    symmetrically padded conv, one pixel off.
    """
    torch.manual_seed(0)
    conv = SameConv2d(4, 5, 3, stride=2)
    transposed = SameConvTranspose2d(5, 4, 3, stride=2)
    with torch.no_grad():
        conv.bias.zero_()
        transposed.bias.zero_()
        transposed.weight.copy_(conv.weight)  # both (5, 4, 3, 3)
    x, z = torch.randn(2, 4, 12, 12), torch.randn(2, 5, 6, 6)
    assert transposed(z).shape == (2, 4, 12, 12)
    torch.testing.assert_close((conv(x) * z).sum(), (x * transposed(z)).sum())

    pytorch_style = F.conv_transpose2d(z, conv.weight, stride=2, padding=1, output_padding=1)
    assert pytorch_style.shape == (2, 4, 12, 12)
    assert not torch.allclose((conv(x) * z).sum(), (x * pytorch_style).sum())


def test_it_round_trips_its_state_dict():
    torch.manual_seed(1)
    model = LipGANGenerator(LIPGAN_TINY).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = LipGANGenerator(LIPGAN_TINY).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    mel, faces = inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(fresh(mel, faces), model(mel, faces), rtol=0, atol=0)


def test_it_is_deterministic_under_a_seed():
    torch.manual_seed(7)
    first = LipGANGenerator(LIPGAN_TINY).eval()
    torch.manual_seed(7)
    second = LipGANGenerator(LIPGAN_TINY).eval()
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    mel, faces = inputs(2)
    with torch.no_grad():
        assert torch.equal(first(mel, faces), second(mel, faces))


def test_it_is_registered_as_lipgan():
    assert "lipgan" in list_architectures()
    architecture = get_architecture("lipgan")
    assert architecture.config_class is LipGANConfig
    assert architecture.remap_official is None
    assert architecture.config("default") == LIPGAN_DEFAULT
    assert architecture.config("tiny") == LIPGAN_TINY
    model = architecture.build_generator(architecture.config("tiny"))
    assert isinstance(model, LipGANGenerator)
    assert model.input_spec.face_order == REFERENCE_FIRST
    overridden = architecture.config({"head_channels": 8})
    assert overridden.head_channels == 8 and overridden.face_channels == LIPGAN_DEFAULT.face_channels
    from_json = architecture.config({"audio_strides": [[1, 1], [3, 3], [3, 1], [3, 3]], "face_blocks": [2, 3, 2, 2, 0]})
    assert from_json == LIPGAN_DEFAULT and hash(from_json) == hash(LIPGAN_DEFAULT)


def test_it_refuses_a_config_that_does_not_reach_1x1():
    with pytest.raises(ValueError, match="3x3"):
        LipGANConfig(face_size=128)
    with pytest.raises(ValueError, match="mel"):
        LipGANConfig(mel_frames=16)


# --- discriminator and contrastive loss --------------------------------------------------------------------


def test_it_measures_a_distance_in_0_2_between_face_and_audio(default_discriminator):
    mel, faces = inputs(2)
    with torch.no_grad():
        distance = default_discriminator(faces[:, :3], mel)
    assert distance.shape == (2,)
    assert (distance >= 0).all() and (distance <= 2).all()


def test_it_runs_the_tiny_discriminator_and_backpropagates_through_the_contrastive_loss():
    torch.manual_seed(0)
    tiny = LipGANDiscriminator(DISCRIMINATOR_TINY)
    mel, faces = inputs(4)
    distance = tiny(faces[:, 3:], mel)
    assert distance.shape == (4,) and (distance >= 0).all() and (distance <= 2).all()
    contrastive_loss(distance, torch.tensor([0, 1, 0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny.parameters())


def test_it_has_no_batch_statistics_in_the_discriminator(default_discriminator):
    """The paper: no batch normalisation in the discriminator; the default has no normalisation at all."""
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in default_discriminator.modules())


def test_it_has_8_240_000_discriminator_parameters_and_the_paper_count_with_a_wider_kernel(default_discriminator):
    """LipGAN's discriminator without normalisation has 8,240,000 parameters; the paper reports 10,337,152.

    conv weights + biases (k = kernel, all with bias):

    ==============================  ==========  =============================  =========
    face stream                                 audio stream
    ==============================  ==========  =============================  =========
    3->64 k7 s2                          9,472  1->32 k3 s1                          320
    64->128 k5 s2                      204,928  32->64 k3 s3                      18,496
    128->256 k3 s2                     295,168  64->128 k3 s(3,1)                 73,856
    256->512 k3 s2                   1,180,160  128->256 k3 s3                   295,168
    512->512 k3 s2                   2,359,808  256->512 k3 valid              1,180,160
    plain 512->512 k3 valid          2,359,808  512->512 k1                      262,656
    sum                              6,409,344  sum                            1,830,656
    ==============================  ==========  =============================  =========

    Total 8,240,000. Normalisation variants: LipGAN's keras_contrib InstanceNormalization (axis=None: one
    scalar gamma and beta per layer, 11 layers) +22 = 8,240,022; per-channel affine instance norm (as
    tensorflow_addons' port of LipGAN has it) +5,952 = 8,245,952; convs without bias -3,488 = 8,236,512.
    None is 10,337,152.

    10,337,152 - 8,240,000 = 2,097,152 = 2^21 exactly, which is how much a conv of the *no-norm, with-bias*
    discriminator grows when (a) the audio stream's last 512->512 conv is 3x3 instead of 1x1
    (512*512*(9 - 1)) or (b) the face stream's 256->512 block is 5x5 instead of 3x3 (256*512*(25 - 9)).
    Either reproduces the published figure exactly, and both keep every map size (the 3x3 conv runs 'same' on
    a 1x1 map). Because any normalisation parameters or dropped biases would break the power of two, the figure
    also says the paper's discriminator has conv biases and no normalisation layers with parameters.
    Which layer the paper's port widened is not published (UNVERIFIED); ``DISCRIMINATOR_PAPER_COUNT`` takes (a).
    """
    assert count(default_discriminator) == 8_240_000
    assert count(default_discriminator.face_encoder) == 6_409_344
    assert count(default_discriminator.audio_encoder) == 1_830_656
    assert count(LipGANDiscriminator(DISCRIMINATOR_KERAS)) == 8_240_022
    assert count(LipGANDiscriminator(DISCRIMINATOR_PAPER_COUNT)) == PAPER_DISCRIMINATOR_PARAMETERS
    wider_face_block = LipGANDiscriminatorConfig(face_kernels=(7, 5, 3, 5, 3))
    assert count(LipGANDiscriminator(wider_face_block)) == PAPER_DISCRIMINATOR_PARAMETERS
    assert PAPER_DISCRIMINATOR_PARAMETERS - 8_240_000 == 2**21 == 512 * 512 * 8 == 256 * 512 * 16
    assert count(LipGANDiscriminator(DISCRIMINATOR_TINY)) == 13_428


def test_it_normalises_like_keras_contrib_instance_normalization_per_sample_over_all_channels():
    torch.manual_seed(0)
    block_input = torch.randn(2, 3, 4, 5) * 3 + 1
    norm = LipGANDiscriminator(DISCRIMINATOR_KERAS).face_encoder.blocks[0].norm
    assert [p.shape for p in norm.parameters()] == [(1,), (1,)]
    out = norm(block_input)
    for sample in range(2):
        values = block_input[sample]
        expected = (values - values.mean()) / (values.std(correction=0) + 1e-3)
        torch.testing.assert_close(out[sample], expected)


@pytest.mark.parametrize(
    ("distance", "label", "expected"),
    [
        (0.0, 0, 0.0),  # real pair, embeddings equal: no loss
        (0.0, 1, 1.0),  # fake pair, embeddings equal: margin^2
        (1.5, 1, 0.0),  # fake pair beyond the margin: no loss
        (0.5, 0, 0.25),  # real pair: d^2
        (0.25, 1, 0.5625),  # fake pair inside the margin: (1 - d)^2
    ],
)
def test_it_computes_the_contrastive_loss_of_lipgan(distance, label, expected):
    loss = contrastive_loss(torch.tensor([distance]), torch.tensor([label]))
    assert loss.item() == pytest.approx(expected)


def test_it_averages_the_contrastive_loss_over_the_batch():
    loss = contrastive_loss(torch.tensor([0.0, 0.0, 1.5, 0.5]), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert loss.item() == pytest.approx((0 + 1 + 0 + 0.25) / 4)


def test_it_round_trips_the_discriminator_state_dict():
    torch.manual_seed(2)
    model = LipGANDiscriminator(DISCRIMINATOR_TINY).eval()
    fresh = LipGANDiscriminator(DISCRIMINATOR_TINY).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    mel, faces = inputs(2)
    with torch.no_grad():
        assert torch.equal(fresh(faces[:, :3], mel), model(faces[:, :3], mel))
