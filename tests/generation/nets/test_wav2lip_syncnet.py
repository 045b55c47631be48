"""The Wav2Lip expert lip-sync discriminator SyncNet_color (generation/nets/wav2lip_syncnet.py).

The official layout is written out by hand, layer by layer, from Rudrabha/Wav2Lip models/syncnet.py (master
5c90fa9; the upstream file, without the Dropout layers some forks add), see metrics_models.md §2.4.
"""

import io

import pytest
import torch
import torch.nn.functional as F

from generation.nets import list_architectures
from generation.nets.wav2lip import WAV2LIP_DEFAULT, Wav2Lip
from generation.nets.wav2lip_syncnet import (
    SYNCNET_COLOR_CONFIGS,
    SYNCNET_COLOR_DEFAULT,
    SYNCNET_COLOR_TINY,
    SyncNetColor,
    SyncNetColorConfig,
    build_syncnet_color,
    remap_official,
    sync_face_input,
    sync_loss,
)
from tests.generation.nets.test_wav2lip import official_checkpoint, official_shapes, official_trainable_count

# (module path, kind, in channels, out channels, kernel); every entry is a Conv2d block (conv + BatchNorm).
OFFICIAL_SYNCNET_COLOR_LAYERS = [
    ("face_encoder.0", "conv", 15, 32, 7),  # 48x96
    ("face_encoder.1", "conv", 32, 64, 5),  # 46x47 (stride (1, 2), padding 1)
    ("face_encoder.2", "conv", 64, 64, 3),
    ("face_encoder.3", "conv", 64, 64, 3),
    ("face_encoder.4", "conv", 64, 128, 3),  # 23x24
    ("face_encoder.5", "conv", 128, 128, 3),
    ("face_encoder.6", "conv", 128, 128, 3),
    ("face_encoder.7", "conv", 128, 128, 3),
    ("face_encoder.8", "conv", 128, 256, 3),  # 12x12
    ("face_encoder.9", "conv", 256, 256, 3),
    ("face_encoder.10", "conv", 256, 256, 3),
    ("face_encoder.11", "conv", 256, 512, 3),  # 6x6
    ("face_encoder.12", "conv", 512, 512, 3),
    ("face_encoder.13", "conv", 512, 512, 3),
    ("face_encoder.14", "conv", 512, 512, 3),  # 3x3
    ("face_encoder.15", "conv", 512, 512, 3),  # 1x1
    ("face_encoder.16", "conv", 512, 512, 1),
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
    ("audio_encoder.11", "conv", 256, 256, 3),  # the second residual conv the generator's encoder lacks
    ("audio_encoder.12", "conv", 256, 512, 3),  # 1x1
    ("audio_encoder.13", "conv", 512, 512, 1),
]


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def syncnet():
    torch.manual_seed(0)
    return SyncNetColor(SYNCNET_COLOR_DEFAULT).eval()


def inputs(batch: int = 1, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=generator) * 8 - 4
    faces = torch.rand(batch, 15, 48, 96, generator=generator)  # 5 lower halves, BGR, /255
    return mel, faces


def test_it_embeds_audio_and_five_lower_faces_as_unit_vectors(syncnet):
    mel, faces = inputs()
    with torch.inference_mode():
        audio_emb, face_emb = syncnet(mel, faces)
    assert audio_emb.shape == face_emb.shape == (1, 512)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(1))
    torch.testing.assert_close(face_emb.norm(dim=1), torch.ones(1))
    assert audio_emb.min() >= 0 and face_emb.min() >= 0  # ReLU outputs, so the cosine lies in [0, 1]


def test_it_runs_the_tiny_config():
    model = SyncNetColor(SYNCNET_COLOR_TINY).eval()
    with torch.inference_mode():
        audio_emb, face_emb = model(*inputs(batch=3))
    assert audio_emb.shape == face_emb.shape == (3, 32)
    assert SYNCNET_COLOR_CONFIGS == {"default": SYNCNET_COLOR_DEFAULT, "tiny": SYNCNET_COLOR_TINY}


def test_it_keeps_the_reference_46x47_map_after_the_k5_p1_conv():
    model = SyncNetColor(SYNCNET_COLOR_TINY).eval()
    sizes = []
    x = inputs()[1]
    with torch.inference_mode():
        for layer in model.face_encoder:
            x = layer(x)
            sizes.append(tuple(x.shape[2:]))
    assert sizes[:2] == [(48, 96), (46, 47)]
    assert sizes[4] == (23, 24) and sizes[8] == (12, 12) and sizes[11] == (6, 6) and sizes[14] == (3, 3)
    assert sizes[-1] == (1, 1)


def test_it_has_16_435_072_parameters(syncnet):
    """Sum over the official layers (conv: cin·cout·k² + cout, BatchNorm: 2·cout): face encoder 13,031,808 +
    audio encoder 3,403,264 = 16,435,072, the figure in metrics_models.md §2.4 (the paper gives no count)."""
    assert official_trainable_count(OFFICIAL_SYNCNET_COLOR_LAYERS) == 16_435_072
    assert trainable(syncnet) == 16_435_072
    assert trainable(syncnet.face_encoder) == 13_031_808
    assert trainable(syncnet.audio_encoder) == 3_403_264
    assert trainable(SyncNetColor(SYNCNET_COLOR_TINY)) == 88_992


def test_its_audio_encoder_has_one_more_residual_conv_at_256_than_the_generators(syncnet):
    """Generator audio encoder 2,812,672 + one 256->256 3x3 Conv2d block (589,824 + 256 + 512 = 590,592)."""
    generator_audio = Wav2Lip(WAV2LIP_DEFAULT).audio_encoder
    assert len(syncnet.audio_encoder) == len(generator_audio) + 1 == 14
    assert trainable(syncnet.audio_encoder) - trainable(generator_audio) == 256 * 256 * 9 + 256 + 2 * 256


def test_it_has_exactly_the_official_state_dict_keys_and_shapes(syncnet):
    ours = {key: tuple(value.shape) for key, value in syncnet.state_dict().items()}
    official = official_shapes(OFFICIAL_SYNCNET_COLOR_LAYERS)
    assert list(ours) == list(official)
    assert ours == official


def test_it_loads_an_official_lipsync_expert_checkpoint_strictly_after_remapping():
    checkpoint = official_checkpoint(OFFICIAL_SYNCNET_COLOR_LAYERS)
    model = SyncNetColor(SYNCNET_COLOR_DEFAULT)
    result = model.load_state_dict(remap_official(checkpoint), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.audio_encoder[13].conv_block[0].weight,
                       checkpoint["state_dict"]["module.audio_encoder.13.conv_block.0.weight"])
    model.load_state_dict(remap_official(checkpoint["state_dict"]), strict=True)  # a bare state dict too


def test_its_loss_is_the_bce_of_the_cosine_similarity():
    """color_syncnet_train.py: d = cosine_similarity(a, v); loss = BCELoss()(d.unsqueeze(1), y)."""
    torch.manual_seed(0)
    audio_emb = F.normalize(torch.rand(4, 8), dim=1)
    video_emb = F.normalize(torch.rand(4, 8), dim=1)
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    cosine = (audio_emb * video_emb).sum(dim=1)
    expected = -(y[:, 0] * torch.log(cosine) + (1 - y[:, 0]) * torch.log(1 - cosine)).mean()
    torch.testing.assert_close(sync_loss(audio_emb, video_emb, y), expected)
    torch.testing.assert_close(sync_loss(audio_emb, video_emb, y[:, 0]), expected)  # (B,) labels too


def test_its_loss_accepts_identical_unit_vectors():
    """cosine(v, v) can round to 1 + 1e-7, which BCE would reject; the loss clamps it and gives ~0."""
    v = F.normalize(torch.rand(16, 512), dim=1)
    assert sync_loss(v, v, torch.ones(16, 1)) < 1e-4


def test_it_stacks_the_lower_halves_of_generated_frames_frame_by_frame():
    frames = torch.rand(2, 3, 5, 96, 96)  # (B, 3, T, 96, 96) generator output
    stacked = sync_face_input(frames)
    assert stacked.shape == (2, 15, 48, 96)
    assert torch.equal(stacked[:, 3:6], frames[:, :, 1, 48:])  # frame 1's B, G, R
    assert torch.equal(stacked[:, 12:15], frames[:, :, 4, 48:])


def test_it_round_trips_its_state_dict(syncnet):
    buffer = io.BytesIO()
    torch.save(syncnet.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(99)
    fresh = build_syncnet_color(SYNCNET_COLOR_DEFAULT).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    mel, faces = inputs()
    with torch.inference_mode():
        for ours, theirs in zip(fresh(mel, faces), syncnet(mel, faces)):
            assert torch.equal(ours, theirs)


def test_it_is_deterministic_under_a_seed():
    torch.manual_seed(5)
    first = SyncNetColor(SYNCNET_COLOR_TINY).eval()
    torch.manual_seed(5)
    second = SyncNetColor(SYNCNET_COLOR_TINY).eval()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    mel, faces = inputs(batch=2)
    with torch.inference_mode():
        for ours, theirs in zip(first(mel, faces), second(mel, faces)):
            assert torch.equal(ours, theirs)


def test_it_is_not_registered_as_a_generator():
    names = list_architectures()
    assert "wav2lip" in names
    assert not any("syncnet" in name for name in names)


def test_it_rejects_bad_shapes_and_configs():
    model = SyncNetColor(SYNCNET_COLOR_TINY)
    with pytest.raises(ValueError, match="faces must be"):
        model(torch.zeros(1, 1, 80, 16), torch.zeros(1, 15, 96, 96))
    with pytest.raises(ValueError, match="mel must be"):
        model(torch.zeros(1, 80, 16), torch.zeros(1, 15, 48, 96))
    with pytest.raises(ValueError, match="same width"):
        SyncNetColorConfig(audio_encoder_channels=(32, 64, 128, 256, 256))
