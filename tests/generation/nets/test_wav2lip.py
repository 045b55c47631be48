"""Wav2Lip generator and visual-quality discriminator (generation/nets/wav2lip.py).

The official layouts below are written out by hand, layer by layer, from Rudrabha/Wav2Lip models/wav2lip.py
(master 5c90fa9) as summarised in shared/research/metrics_models.md §2.1–2.3 and §2.9; they do not look at
our module, so "our keys == these keys" is a real check.
"""

import io

import pytest
import torch
import torch.nn.functional as F

from generation.nets import MASKED_FIRST, get_architecture, list_architectures
from generation.nets.wav2lip import (
    DISC_QUAL_DEFAULT,
    DISC_QUAL_TINY,
    WAV2LIP_DEFAULT,
    WAV2LIP_TINY,
    Conv2dBlock,
    Wav2Lip,
    Wav2LipConfig,
    Wav2LipDiscQual,
    remap_official,
)

# kind: "conv" = Conv2d block (conv_block.0 = nn.Conv2d, conv_block.1 = BatchNorm2d),
#       "convT" = Conv2dTranspose block (conv_block.0 = nn.ConvTranspose2d, conv_block.1 = BatchNorm2d),
#       "nonorm" = nonorm_Conv2d block (conv_block.0 = nn.Conv2d only), "plain" = a bare nn.Conv2d.
# (module path, kind, in channels, out channels, kernel)
OFFICIAL_WAV2LIP_LAYERS = [
    ("face_encoder_blocks.0.0", "conv", 6, 16, 7),  # 96x96
    ("face_encoder_blocks.1.0", "conv", 16, 32, 3),  # 48x48
    ("face_encoder_blocks.1.1", "conv", 32, 32, 3),
    ("face_encoder_blocks.1.2", "conv", 32, 32, 3),
    ("face_encoder_blocks.2.0", "conv", 32, 64, 3),  # 24x24
    ("face_encoder_blocks.2.1", "conv", 64, 64, 3),
    ("face_encoder_blocks.2.2", "conv", 64, 64, 3),
    ("face_encoder_blocks.2.3", "conv", 64, 64, 3),
    ("face_encoder_blocks.3.0", "conv", 64, 128, 3),  # 12x12
    ("face_encoder_blocks.3.1", "conv", 128, 128, 3),
    ("face_encoder_blocks.3.2", "conv", 128, 128, 3),
    ("face_encoder_blocks.4.0", "conv", 128, 256, 3),  # 6x6
    ("face_encoder_blocks.4.1", "conv", 256, 256, 3),
    ("face_encoder_blocks.4.2", "conv", 256, 256, 3),
    ("face_encoder_blocks.5.0", "conv", 256, 512, 3),  # 3x3
    ("face_encoder_blocks.5.1", "conv", 512, 512, 3),
    ("face_encoder_blocks.6.0", "conv", 512, 512, 3),  # 1x1
    ("face_encoder_blocks.6.1", "conv", 512, 512, 1),
    ("audio_encoder.0", "conv", 1, 32, 3),  # 80x16
    ("audio_encoder.1", "conv", 32, 32, 3),
    ("audio_encoder.2", "conv", 32, 32, 3),
    ("audio_encoder.3", "conv", 32, 64, 3),  # 27x16
    ("audio_encoder.4", "conv", 64, 64, 3),
    ("audio_encoder.5", "conv", 64, 64, 3),
    ("audio_encoder.6", "conv", 64, 128, 3),  # 9x6
    ("audio_encoder.7", "conv", 128, 128, 3),
    ("audio_encoder.8", "conv", 128, 128, 3),
    ("audio_encoder.9", "conv", 128, 256, 3),  # 3x3
    ("audio_encoder.10", "conv", 256, 256, 3),
    ("audio_encoder.11", "conv", 256, 512, 3),  # 1x1
    ("audio_encoder.12", "conv", 512, 512, 1),
    ("face_decoder_blocks.0.0", "conv", 512, 512, 1),  # 1x1
    ("face_decoder_blocks.1.0", "convT", 1024, 512, 3),  # 3x3
    ("face_decoder_blocks.1.1", "conv", 512, 512, 3),
    ("face_decoder_blocks.2.0", "convT", 1024, 512, 3),  # 6x6
    ("face_decoder_blocks.2.1", "conv", 512, 512, 3),
    ("face_decoder_blocks.2.2", "conv", 512, 512, 3),
    ("face_decoder_blocks.3.0", "convT", 768, 384, 3),  # 12x12
    ("face_decoder_blocks.3.1", "conv", 384, 384, 3),
    ("face_decoder_blocks.3.2", "conv", 384, 384, 3),
    ("face_decoder_blocks.4.0", "convT", 512, 256, 3),  # 24x24
    ("face_decoder_blocks.4.1", "conv", 256, 256, 3),
    ("face_decoder_blocks.4.2", "conv", 256, 256, 3),
    ("face_decoder_blocks.5.0", "convT", 320, 128, 3),  # 48x48
    ("face_decoder_blocks.5.1", "conv", 128, 128, 3),
    ("face_decoder_blocks.5.2", "conv", 128, 128, 3),
    ("face_decoder_blocks.6.0", "convT", 160, 64, 3),  # 96x96
    ("face_decoder_blocks.6.1", "conv", 64, 64, 3),
    ("face_decoder_blocks.6.2", "conv", 64, 64, 3),
    ("output_block.0", "conv", 80, 32, 3),
    ("output_block.1", "plain", 32, 3, 1),
]

OFFICIAL_DISC_QUAL_LAYERS = [
    ("face_encoder_blocks.0.0", "nonorm", 3, 32, 7),  # 48x96
    ("face_encoder_blocks.1.0", "nonorm", 32, 64, 5),  # 48x48
    ("face_encoder_blocks.1.1", "nonorm", 64, 64, 5),
    ("face_encoder_blocks.2.0", "nonorm", 64, 128, 5),  # 24x24
    ("face_encoder_blocks.2.1", "nonorm", 128, 128, 5),
    ("face_encoder_blocks.3.0", "nonorm", 128, 256, 5),  # 12x12
    ("face_encoder_blocks.3.1", "nonorm", 256, 256, 5),
    ("face_encoder_blocks.4.0", "nonorm", 256, 512, 3),  # 6x6
    ("face_encoder_blocks.4.1", "nonorm", 512, 512, 3),
    ("face_encoder_blocks.5.0", "nonorm", 512, 512, 3),  # 3x3
    ("face_encoder_blocks.5.1", "nonorm", 512, 512, 3),
    ("face_encoder_blocks.6.0", "nonorm", 512, 512, 3),  # 1x1
    ("face_encoder_blocks.6.1", "nonorm", 512, 512, 1),
    ("binary_pred.0", "plain", 512, 1, 1),
]


def official_shapes(layers) -> dict[str, tuple]:
    """The state dict key -> tensor shape of a layer table (BatchNorm buffers included)."""
    shapes = {}
    for path, kind, cin, cout, k in layers:
        if kind == "plain":
            shapes[f"{path}.weight"] = (cout, cin, k, k)
            shapes[f"{path}.bias"] = (cout,)
            continue
        conv = f"{path}.conv_block.0"
        shapes[f"{conv}.weight"] = (cin, cout, k, k) if kind == "convT" else (cout, cin, k, k)
        shapes[f"{conv}.bias"] = (cout,)
        if kind in ("conv", "convT"):
            bn = f"{path}.conv_block.1"
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{bn}.{name}"] = (cout,)
            shapes[f"{bn}.num_batches_tracked"] = ()
    return shapes


def official_trainable_count(layers) -> int:
    """conv: cin*cout*k*k + cout; BatchNorm: 2*cout (weight, bias)."""
    total = 0
    for _, kind, cin, cout, k in layers:
        total += cin * cout * k * k + cout
        if kind in ("conv", "convT"):
            total += 2 * cout
    return total


def official_checkpoint(layers, seed: int = 0) -> dict:
    """A file laid out like the released wav2lip.pth: the training container, ``module.``-prefixed keys."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, shape in official_shapes(layers).items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(12345, dtype=torch.long)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=generator) + 0.5
        else:
            value = torch.randn(shape, generator=generator) * 0.02
        state_dict[f"module.{key}"] = value
    return {"state_dict": state_dict, "optimizer": {"state": {}, "param_groups": []},
            "global_step": 250000, "global_epoch": 100}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return Wav2Lip(WAV2LIP_DEFAULT).eval()


@pytest.fixture(scope="module")
def discriminator():
    torch.manual_seed(0)
    return Wav2LipDiscQual(DISC_QUAL_DEFAULT).eval()


def inputs(batch: int = 1, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=generator) * 8 - 4  # the normalised mel lies in [-4, 4]
    faces = torch.rand(batch, 6, 96, 96, generator=generator)
    faces[:, :3, 48:] = 0  # masked_first: the target with its lower half zeroed, then the reference
    return mel, faces


# --- generator -------------------------------------------------------------------------------------------------


def test_it_turns_a_mel_window_and_two_faces_into_one_face_in_0_1(generator):
    mel, faces = inputs()
    with torch.inference_mode():
        out = generator(mel, faces)
    assert out.shape == (1, 3, 96, 96)
    assert out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_it_declares_the_official_input_spec(generator):
    spec = generator.input_spec
    assert (spec.face_size, spec.mel_frames, spec.face_order, spec.color) == (96, 16, MASKED_FIRST, "BGR")


def test_it_runs_the_tiny_config_at_the_same_96px_input():
    model = Wav2Lip(WAV2LIP_TINY).eval()
    mel, faces = inputs(batch=3)
    with torch.inference_mode():
        out = model(mel, faces)
    assert out.shape == (3, 3, 96, 96)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_it_folds_the_training_time_axis_into_the_batch_like_the_reference():
    """Training input: mel (B, T, 1, 80, 16), faces (B, 6, T, 96, 96) -> (B, 3, T, 96, 96). The reference does
    ``cat([x[:, t] for t], 0)`` on the way in and ``stack(split(out, B), dim=2)`` on the way out."""
    torch.manual_seed(0)
    model = Wav2Lip(WAV2LIP_TINY).eval()
    batch, steps = 2, 5
    mel = torch.rand(batch, steps, 1, 80, 16) * 8 - 4
    faces = torch.rand(batch, 6, steps, 96, 96)
    with torch.inference_mode():
        ours = model(mel, faces)
        flat = model(torch.cat([mel[:, t] for t in range(steps)], dim=0),
                     torch.cat([faces[:, :, t] for t in range(steps)], dim=0))  # (T*B, 3, 96, 96)
        reference = torch.stack(torch.split(flat, batch, dim=0), dim=2)  # (B, 3, T, 96, 96)
        one_frame = model(mel[1:2, 3], faces[1:2, :, 3])  # sample b=1 at t=3 on its own
    assert ours.shape == (batch, 3, steps, 96, 96)
    assert torch.equal(ours, reference)
    torch.testing.assert_close(ours[1:2, :, 3], one_frame)


def test_it_trains_with_a_time_axis_in_train_mode():
    torch.manual_seed(0)
    model = Wav2Lip(WAV2LIP_TINY).train()
    mel = torch.rand(2, 5, 1, 80, 16)
    faces = torch.rand(2, 6, 5, 96, 96)
    out = model(mel, faces)
    F.l1_loss(out, torch.rand_like(out)).backward()
    assert model.face_encoder_blocks[0][0].conv_block[0].weight.grad is not None


def test_it_has_36_298_035_trainable_parameters(generator):
    """Sum over the official layers (conv: cin·cout·k² + cout, BatchNorm: 2·cout):
    face encoder 8,171,056 + audio encoder 2,812,672 + face decoder 25,291,072 + output block 23,235
    = 36,298,035, the figure in metrics_models.md §2.2 (the paper gives no count)."""
    assert official_trainable_count(OFFICIAL_WAV2LIP_LAYERS) == 36_298_035
    assert trainable(generator) == 36_298_035
    parts = {name: trainable(part) for name, part in generator.named_children()}
    assert parts == {"face_encoder_blocks": 8_171_056, "audio_encoder": 2_812_672,
                     "face_decoder_blocks": 25_291_072, "output_block": 23_235}


def test_it_has_155_415_parameters_in_the_tiny_config():
    assert trainable(Wav2Lip(WAV2LIP_TINY)) == 155_415


def test_it_has_exactly_the_official_state_dict_keys_and_shapes(generator):
    ours = {key: tuple(value.shape) for key, value in generator.state_dict().items()}
    official = official_shapes(OFFICIAL_WAV2LIP_LAYERS)
    assert list(ours) == list(official)  # same keys, same order, nothing extra, nothing missing
    assert ours == official


def test_it_loads_an_official_checkpoint_strictly_after_remapping():
    checkpoint = official_checkpoint(OFFICIAL_WAV2LIP_LAYERS)
    assert all(key.startswith("module.") for key in checkpoint["state_dict"])
    model = Wav2Lip(WAV2LIP_DEFAULT)
    result = model.load_state_dict(remap_official(checkpoint), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.output_block[1].weight, checkpoint["state_dict"]["module.output_block.1.weight"])
    assert int(model.face_encoder_blocks[0][0].conv_block[1].num_batches_tracked) == 12345


def test_it_remaps_a_bare_state_dict_and_every_module_occurrence():
    bare = {"module.audio_encoder.0.conv_block.0.bias": torch.zeros(1),
            "module.face_encoder_blocks.module.0.x": torch.zeros(1), "output_block.1.bias": torch.zeros(1)}
    assert list(remap_official(bare)) == [
        "audio_encoder.0.conv_block.0.bias", "face_encoder_blocks.0.x", "output_block.1.bias"]


def test_it_registers_as_the_wav2lip_architecture():
    architecture = get_architecture("wav2lip")
    assert "wav2lip" in list_architectures()
    assert architecture.config_class is Wav2LipConfig
    assert architecture.config("default") == WAV2LIP_DEFAULT
    assert architecture.remap_official is remap_official
    model = architecture.build_generator(architecture.config("tiny")).eval()
    with torch.inference_mode():
        assert model(*inputs()).shape == (1, 3, 96, 96)
    wider = architecture.config({"output_hidden_channels": 16})
    assert wider.face_encoder_channels == WAV2LIP_DEFAULT.face_encoder_channels
    assert wider.output_hidden_channels == 16


def test_it_round_trips_its_state_dict(generator):
    buffer = io.BytesIO()
    torch.save(generator.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = Wav2Lip(WAV2LIP_DEFAULT).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    mel, faces = inputs()
    with torch.inference_mode():
        assert torch.equal(fresh(mel, faces), generator(mel, faces))


def test_it_is_deterministic_under_a_seed():
    torch.manual_seed(7)
    first = Wav2Lip(WAV2LIP_TINY).eval()
    torch.manual_seed(7)
    second = Wav2Lip(WAV2LIP_TINY).eval()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    mel, faces = inputs(batch=2)
    with torch.inference_mode():
        assert torch.equal(first(mel, faces), second(mel, faces))


def test_it_adds_the_residual_before_the_relu():
    """conv.py: out = BN(conv(x)); out += x; ReLU(out). With BN(conv(x)) = -0.5 and x = 1 that is 0.5
    (ReLU before the add would give 1)."""
    block = Conv2dBlock(2, 2, 3, 1, 1, residual=True).eval()
    with torch.no_grad():
        block.conv_block[0].weight.zero_()
        block.conv_block[0].bias.zero_()
        block.conv_block[1].bias.fill_(-0.5)
    out = block(torch.ones(1, 2, 4, 4))
    torch.testing.assert_close(out, torch.full((1, 2, 4, 4), 0.5), atol=1e-5, rtol=0)


def test_it_rejects_inputs_of_the_wrong_shape():
    model = Wav2Lip(WAV2LIP_TINY).eval()
    with pytest.raises(ValueError, match="mel must be"):
        model(torch.zeros(1, 1, 80, 27), torch.zeros(1, 6, 96, 96))
    with pytest.raises(ValueError, match="faces must be"):
        model(torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 128, 128))
    with pytest.raises(ValueError, match="time axis"):
        model(torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 5, 96, 96))


def test_it_rejects_a_config_with_the_wrong_number_of_stages():
    with pytest.raises(ValueError, match="face_encoder_channels"):
        Wav2LipConfig(face_encoder_channels=(16, 32, 64))


# --- visual-quality discriminator ------------------------------------------------------------------------------


def test_it_scores_each_frame_of_a_window_with_a_probability(discriminator):
    faces = torch.rand(1, 3, 2, 96, 96)  # (B, 3, T, 96, 96), as in hq_wav2lip_train.py
    with torch.inference_mode():
        scores = discriminator(faces)
    assert scores.shape == (2, 1)  # (T*B, 1)
    assert 0.0 <= scores.min() and scores.max() <= 1.0


def test_it_judges_only_the_lower_half_of_the_face():
    """Rows 0..47 get no gradient at all, rows 48..95 do (``get_lower_half``)."""
    torch.manual_seed(0)
    model = Wav2LipDiscQual(DISC_QUAL_TINY).eval()
    faces = torch.rand(2, 3, 96, 96, requires_grad=True)
    model(faces).sum().backward()
    assert torch.count_nonzero(faces.grad[:, :, :48]) == 0
    assert torch.count_nonzero(faces.grad[:, :, 48:]) > 0


def test_its_perceptual_loss_is_the_bce_of_fakes_against_real():
    torch.manual_seed(0)
    model = Wav2LipDiscQual(DISC_QUAL_TINY).eval()
    fakes = torch.rand(2, 3, 5, 96, 96)
    loss = model.perceptual_forward(fakes)
    expected = -torch.log(model(fakes)).mean()
    torch.testing.assert_close(loss, expected)


def test_the_discriminator_has_14_113_793_parameters(discriminator):
    """Sum over the official layers (conv only, no normalisation): face encoder 14,113,280 + binary_pred 513
    = 14,113,793, the figure in metrics_models.md §2.3."""
    assert official_trainable_count(OFFICIAL_DISC_QUAL_LAYERS) == 14_113_793
    assert trainable(discriminator) == 14_113_793
    assert trainable(Wav2LipDiscQual(DISC_QUAL_TINY)) == 69_585


def test_the_discriminator_loads_an_official_checkpoint_strictly(discriminator):
    ours = {key: tuple(value.shape) for key, value in discriminator.state_dict().items()}
    assert ours == official_shapes(OFFICIAL_DISC_QUAL_LAYERS)
    model = Wav2LipDiscQual(DISC_QUAL_DEFAULT)
    model.load_state_dict(remap_official(official_checkpoint(OFFICIAL_DISC_QUAL_LAYERS)), strict=True)


def test_the_discriminator_round_trips_and_is_deterministic():
    torch.manual_seed(3)
    first = Wav2LipDiscQual(DISC_QUAL_TINY).eval()
    torch.manual_seed(3)
    second = Wav2LipDiscQual(DISC_QUAL_TINY).eval()
    faces = torch.rand(2, 3, 96, 96)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    third = Wav2LipDiscQual(DISC_QUAL_TINY).eval()
    third.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.inference_mode():
        assert torch.equal(first(faces), second(faces))
        assert torch.equal(first(faces), third(faces))
