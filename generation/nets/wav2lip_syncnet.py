"""The Wav2Lip expert lip-sync discriminator ``SyncNet_color``.

Prajwal et al., "A Lip Sync Expert Is All You Need for Speech to Lip Generation In the Wild", ACM MM 2020,
§3.2 (the "expert" SyncNet trained on colour images, frozen while the generator trains). Reference code:
Rudrabha/Wav2Lip (master, 5c90fa9) ``models/syncnet.py`` (architecture), ``color_syncnet_train.py``
(``cosine_loss``) and ``wav2lip_train.py`` (``get_sync_loss``); facts in ``shared/research/metrics_models.md``
§2.4, §2.7, §2.10.

This is a sync *critic*, not a generator: it is not registered in ``generation.nets.ARCHITECTURES``. Use
:data:`SYNCNET_COLOR_CONFIGS`, :func:`build_syncnet_color` and :func:`remap_official` directly.

Faithful to the reference code
------------------------------
* ``face_encoder`` and ``audio_encoder`` are flat ``nn.Sequential`` s of the ``Conv2d`` block (conv -> BN ->
  (+input) -> ReLU), layer for layer, so the keys are the official ``face_encoder.{j}.conv_block.{0|1}.*`` (j =
  0..16) and ``audio_encoder.{j}.conv_block.{0|1}.*`` (j = 0..13). The upstream file has no dropout (some forks
  add ``nn.Dropout`` layers, which would shift the indices).
* Face input: (B, 15, 48, 96) = the lower halves (rows 48..95) of 5 consecutive 96x96 BGR frames in [0, 1],
  stacked frame by frame along channels. Geometry: 48x96 -> k5 s(1,2) p1 -> 46x47 -> 23x24 -> 12x12 -> 6x6 ->
  3x3 -> k3 p0 -> 1x1. Note the k5 conv with padding 1 (not 2): the reference's odd 46x47 map is kept.
* Audio input: (B, 1, 80, 16). The audio encoder is the generator's except that the 256-channel stage has
  **two** residual convs (the generator's has one).
* Both embeddings are flattened to 512 and L2-normalised; as both encoders end in ReLU their cosine similarity
  lies in [0, 1] and is read as P(in sync). Loss: BCE(cosine(a, v), y) (``cosine_loss``).

Not from the reference code
---------------------------
* Widths and residual counts come from a config (``tiny`` for tests); kernels/strides are module constants.
* :func:`sync_loss` clamps the cosine to [0, 1] before the BCE: for unit vectors float rounding can give
  1 + 1e-7, which ``F.binary_cross_entropy`` rejects. The reference does not clamp (differences <= 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generation.nets.wav2lip import FACE_SIZE, MEL_FRAMES, NUM_MELS, Conv2dBlock, build_audio_encoder, remap_official

__all__ = [
    "SyncNetColor", "SyncNetColorConfig", "SYNCNET_COLOR_DEFAULT", "SYNCNET_COLOR_TINY", "SYNCNET_COLOR_CONFIGS",
    "build_syncnet_color", "sync_loss", "sync_face_input", "remap_official",
]

# (kernel, stride, padding) of the first conv of face stages 0..5: 48x96 -> 48x96 -> 46x47 -> 23x24 -> 12x12 ->
# 6x6 -> 3x3. Stage 6 is k3 p0 (3x3 -> 1x1) followed by k1.
FACE_DOWNSAMPLING = ((7, 1, 3), (5, (1, 2), 1), (3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 2, 1))


@dataclass(frozen=True)
class SyncNetColorConfig:
    """Widths and residual counts of ``SyncNet_color`` (defaults: the reference).

    num_frames: consecutive frames per face window (their lower halves are stacked: 3 * num_frames channels).
    face_encoder_channels: output channels of face stages 0..5 (48x96, 46x47, 23x24, 12, 6, 3 px) and of the
        1x1 embedding (stage 6).
    face_encoder_residuals: residual 3x3 convs after the first conv of face stages 0..5.
    audio_encoder_channels: widths of the 4 audio stages (80x16, 27x16, 9x6, 3x3) and of the 1x1 embedding.
    audio_encoder_residuals: residual 3x3 convs in each audio stage.
    The two embedding widths (last entries) must be equal.
    """

    num_frames: int = 5
    face_encoder_channels: tuple = (32, 64, 128, 256, 512, 512, 512)
    face_encoder_residuals: tuple = (0, 2, 3, 2, 2, 0)
    audio_encoder_channels: tuple = (32, 64, 128, 256, 512)
    audio_encoder_residuals: tuple = (2, 2, 2, 2)

    def __post_init__(self) -> None:
        lengths = {"face_encoder_channels": 7, "face_encoder_residuals": 6, "audio_encoder_channels": 5,
                   "audio_encoder_residuals": 4}
        for name, length in lengths.items():
            if len(getattr(self, name)) != length:
                raise ValueError(f"SyncNetColorConfig.{name} needs {length} entries, got {getattr(self, name)!r}")
        if self.face_encoder_channels[-1] != self.audio_encoder_channels[-1]:
            raise ValueError("the face and audio embeddings must have the same width")

    @property
    def embedding_dim(self) -> int:
        return self.face_encoder_channels[-1]


SYNCNET_COLOR_DEFAULT = SyncNetColorConfig()
SYNCNET_COLOR_TINY = SyncNetColorConfig(
    face_encoder_channels=(8, 8, 16, 16, 32, 32, 32),
    audio_encoder_channels=(8, 8, 16, 16, 32),
)
SYNCNET_COLOR_CONFIGS = {"default": SYNCNET_COLOR_DEFAULT, "tiny": SYNCNET_COLOR_TINY}


class SyncNetColor(nn.Module):
    """``SyncNet_color``: forward(mel (B, 1, 80, 16), faces (B, 15, 48, 96)) -> (audio_emb, face_emb), each (B, 512)
    and L2-normalised. The argument order (audio first) and the output order are the reference's."""

    def __init__(self, config: SyncNetColorConfig = SYNCNET_COLOR_DEFAULT):
        super().__init__()
        self.config = config
        ch, res = config.face_encoder_channels, config.face_encoder_residuals

        layers: list[nn.Module] = []
        cin = 3 * config.num_frames
        for stage, (kernel, stride, padding) in enumerate(FACE_DOWNSAMPLING):
            layers.append(Conv2dBlock(cin, ch[stage], kernel, stride, padding))
            layers += [Conv2dBlock(ch[stage], ch[stage], 3, 1, 1, residual=True) for _ in range(res[stage])]
            cin = ch[stage]
        layers.append(Conv2dBlock(cin, ch[6], 3, 1, 0))  # 3x3 -> 1x1
        layers.append(Conv2dBlock(ch[6], ch[6], 1, 1, 0))
        self.face_encoder = nn.Sequential(*layers)

        self.audio_encoder = build_audio_encoder(config.audio_encoder_channels, config.audio_encoder_residuals)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        face_shape = (3 * self.config.num_frames, FACE_SIZE // 2, FACE_SIZE)
        if faces.dim() != 4 or tuple(faces.shape[1:]) != face_shape:
            raise ValueError(f"faces must be (B, {face_shape[0]}, {face_shape[1]}, {face_shape[2]}), "
                             f"got {tuple(faces.shape)}")
        if mel.dim() != 4 or tuple(mel.shape[1:]) != (1, NUM_MELS, MEL_FRAMES):
            raise ValueError(f"mel must be (B, 1, {NUM_MELS}, {MEL_FRAMES}), got {tuple(mel.shape)}")
        face_embedding = self.face_encoder(faces)  # (B, 512, 1, 1)
        audio_embedding = self.audio_encoder(mel)  # (B, 512, 1, 1)
        audio_embedding = audio_embedding.view(audio_embedding.size(0), -1)  # (B, 512)
        face_embedding = face_embedding.view(face_embedding.size(0), -1)  # (B, 512)
        return F.normalize(audio_embedding, p=2, dim=1), F.normalize(face_embedding, p=2, dim=1)


def build_syncnet_color(config: SyncNetColorConfig = SYNCNET_COLOR_DEFAULT) -> SyncNetColor:
    return SyncNetColor(config)


def sync_loss(audio_emb: torch.Tensor, video_emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``cosine_loss`` of color_syncnet_train.py: mean BCE between cosine(audio, video) and the label y.

    audio_emb, video_emb: (B, D); y: (B,) or (B, 1), 1 = in sync, 0 = off sync. The generator's sync loss
    (wav2lip_train.py ``get_sync_loss``) is this with y = 1 on the generated frames.
    """
    similarity = F.cosine_similarity(audio_emb, video_emb).clamp(0.0, 1.0)  # (B,); see the module docstring
    return F.binary_cross_entropy(similarity.unsqueeze(1), y.reshape(-1, 1).to(similarity.dtype))  # (B, 1) vs (B, 1)


def sync_face_input(frames: torch.Tensor) -> torch.Tensor:
    """Generator frames (B, 3, T, 96, 96) -> SyncNet face input (B, 3T, 48, 96), as ``get_sync_loss`` builds it:
    the lower halves, concatenated frame by frame along channels (frame 0 BGR, frame 1 BGR, ...)."""
    lower = frames[:, :, :, frames.shape[3] // 2:]  # (B, 3, T, 48, 96)
    return torch.cat([lower[:, :, t] for t in range(lower.shape[2])], dim=1)  # (B, 3T, 48, 96)
