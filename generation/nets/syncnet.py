"""SyncNet ``S`` of joonson/syncnet_python (``syncnet_v2.model``): the network behind LSE-D / LSE-C.

Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV 2016 workshops; the released network
and its evaluation code are joonson/syncnet_python (master 6efbb1c, ``SyncNetModel.py``), which the Wav2Lip
evaluation (Rudrabha/Wav2Lip ``evaluation/scores_LSE``) runs unchanged. Facts: shared/research/
metrics_models.md §1.2, §1.3.

This is a sync *critic*, not a generator: like ``wav2lip_syncnet`` it is not registered in
``generation.nets.ARCHITECTURES`` (that registry lists what the pipeline can render with, and every entry there
becomes a model condition). Its named configs live in :data:`SYNCNET_V2_CONFIGS`; weights are loaded by
``generation.metrics.syncnet_weights`` (the official flat state dict, or a syncmos checkpoint whose
``architecture`` is :data:`ARCHITECTURE_NAME`).

Faithful to the reference code
------------------------------
* Four ``nn.Sequential`` s with the reference's attribute names and layer indices (ReLU and MaxPool layers
  count), so the official keys load by name: ``netcnnaud.{0,4,8,11,14,18}`` Conv2d and ``.{1,5,9,12,15,19}``
  BatchNorm2d; ``netcnnlip`` the same indices with Conv3d / BatchNorm3d; ``netfcaud`` and ``netfclip``
  ``.0`` Linear, ``.1`` BatchNorm1d, ``.3`` Linear. Every kernel, stride and padding is the reference's.
* Audio input (N, 1, 13, 20): 13 MFCCs x 20 MFCC frames (0.2 s). 13x20 -> 11x9 (max-pool 3x3, stride (1, 2))
  -> 5x4 (max-pool 3x3, stride 2) -> conv (5, 4) -> 1x1.
* Video input (N, 3, 5, H, W): 5 colour frames, **BGR, float 0-255, no normalisation** (cv2 frames as
  SyncNetInstance feeds them). Conv3d (5, 7, 7) stride (1, 2, 2) collapses time: 224 -> 109 -> 54 -> 26 -> 13
  -> 13 -> 6 -> conv (1, 6, 6) -> 1x1.
* Outputs: raw 1024-d vectors (no L2 normalisation); LSE compares them with a Euclidean distance.
* Default ("official") config: 13,631,616 trainable parameters (audio CNN 4,875,712, lip CNN 7,177,920, each FC
  head 788,992; the arithmetic is in tests/generation/nets/test_syncnet.py).

The crop size
-------------
**224 is hard-wired in the official network**: the last lip conv's (1, 6, 6) kernel exactly covers the 6x6 map
that a 224x224 crop leaves; any other size changes that map, and the flatten no longer gives 512 features
(primepake/wav2lip_288x288 issue #14: "4x278528 and 512x512"). Here the last kernel is derived from
``crop_size`` (:attr:`SyncNetV2Config.lip_final_kernel`: 6 for 224, 2 for the tiny config's 96), which is the
only change a smaller crop needs; the default config keeps 224 and so the official (1, 6, 6).

Not from the reference code
---------------------------
* Widths, the embedding size and the crop size are config fields so that a ``tiny`` config with the same
  topology exists (tests, the CPU demo). Each FC head is Linear(C, C) -> BN -> ReLU -> Linear(C, embedding_dim)
  with C the last conv width (512 -> 512 -> 1024 in the reference).
* ``__nFeatures__``, ``__nChs__``, ``__midChs__`` (unused attributes of the reference) are left out;
  ``forward_lipfeat`` (the 512-d pre-FC lip feature, unused by LSE) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ARCHITECTURE_NAME = "syncnet_v2"
NUM_MFCC = 13  # MFCC coefficients per frame (python_speech_features numcep)
MFCC_FRAMES = 20  # MFCC frames per window: 0.2 s at 100 frames/s, the span of 5 video frames at 25 fps
NUM_FRAMES = 5  # video frames per window; the first Conv3d's temporal kernel, so time collapses to 1
OFFICIAL_CROP_SIZE = 224


def _lip_map_size(crop_size: int) -> int:
    """Side of the lip stream's map before its last conv: 224 -> 109 -> 54 -> 26 -> 13 -> 13 -> 6."""
    size = (crop_size - 7) // 2 + 1  # Conv3d (5, 7, 7), stride (1, 2, 2), padding 0
    size = (size - 3) // 2 + 1  # MaxPool3d (1, 3, 3), stride (1, 2, 2)
    size = (size + 2 - 5) // 2 + 1  # Conv3d (1, 5, 5), stride (1, 2, 2), padding (0, 1, 1)
    size = (size + 2 - 3) // 2 + 1  # MaxPool3d (1, 3, 3), stride (1, 2, 2), padding (0, 1, 1)
    return (size - 3) // 2 + 1  # three 3x3 'same' convs, then MaxPool3d (1, 3, 3), stride (1, 2, 2)


@dataclass(frozen=True)
class SyncNetV2Config:
    """Widths and crop size of ``S`` (defaults: the released ``syncnet_v2.model``).

    audio_channels: output channels of the 6 audio convs (reference 64, 192, 384, 256, 256, 512).
    lip_channels: output channels of the 6 lip Conv3d (reference 96, 256, 256, 256, 256, 512).
    embedding_dim: size of both output embeddings (reference ``num_layers_in_fc_layers`` = 1024).
    crop_size: side of the square face crops (reference 224; see the module docstring).
    """

    audio_channels: tuple = (64, 192, 384, 256, 256, 512)
    lip_channels: tuple = (96, 256, 256, 256, 256, 512)
    embedding_dim: int = 1024
    crop_size: int = OFFICIAL_CROP_SIZE

    def __post_init__(self) -> None:
        for name in ("audio_channels", "lip_channels"):
            if len(getattr(self, name)) != 6:
                raise ValueError(f"SyncNetV2Config.{name} needs 6 entries, got {getattr(self, name)!r}")
        if self.lip_final_kernel < 1:
            raise ValueError(f"crop_size {self.crop_size} is too small for the lip stream (at least 39 px)")

    @property
    def lip_final_kernel(self) -> int:
        """Spatial kernel of the last lip conv: the map side it collapses to 1x1 (6 at 224 px)."""
        return _lip_map_size(self.crop_size)


SYNCNET_V2_DEFAULT = SyncNetV2Config()
SYNCNET_V2_TINY = SyncNetV2Config(
    audio_channels=(16, 32, 48, 48, 48, 128),
    lip_channels=(16, 32, 64, 64, 64, 128),
    embedding_dim=128,
    crop_size=96,
)
SYNCNET_V2_CONFIGS = {"default": SYNCNET_V2_DEFAULT, "tiny": SYNCNET_V2_TINY}


class SyncNetV2(nn.Module):
    """``S``: ``forward_aud(mfcc (N, 1, 13, 20)) -> (N, D)``, ``forward_lip(video (N, 3, 5, S, S)) -> (N, D)``.

    D = ``config.embedding_dim`` (1024), S = ``config.crop_size`` (224); video is BGR float 0-255.
    """

    def __init__(self, config: SyncNetV2Config = SYNCNET_V2_DEFAULT):
        super().__init__()
        self.config = config
        a = config.audio_channels
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, a[0], kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),  # 0: 13x20
            nn.BatchNorm2d(a[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),  # 3: a no-op kept for the indices
            nn.Conv2d(a[0], a[1], kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),  # 4: 13x20
            nn.BatchNorm2d(a[1]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),  # 7: -> 11x9
            nn.Conv2d(a[1], a[2], kernel_size=(3, 3), padding=(1, 1)),  # 8
            nn.BatchNorm2d(a[2]),
            nn.ReLU(inplace=True),
            nn.Conv2d(a[2], a[3], kernel_size=(3, 3), padding=(1, 1)),  # 11
            nn.BatchNorm2d(a[3]),
            nn.ReLU(inplace=True),
            nn.Conv2d(a[3], a[4], kernel_size=(3, 3), padding=(1, 1)),  # 14
            nn.BatchNorm2d(a[4]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),  # 17: -> 5x4
            nn.Conv2d(a[4], a[5], kernel_size=(5, 4), padding=(0, 0)),  # 18: -> 1x1
            nn.BatchNorm2d(a[5]),
            nn.ReLU(),
        )
        self.netfcaud = _fc_head(a[5], config.embedding_dim)

        v = config.lip_channels
        k = config.lip_final_kernel
        self.netfclip = _fc_head(v[5], config.embedding_dim)
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, v[0], kernel_size=(NUM_FRAMES, 7, 7), stride=(1, 2, 2), padding=0),  # 0: 5x224 -> 1x109
            nn.BatchNorm3d(v[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 3: -> 54
            nn.Conv3d(v[0], v[1], kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),  # 4: -> 26
            nn.BatchNorm3d(v[1]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7: -> 13
            nn.Conv3d(v[1], v[2], kernel_size=(1, 3, 3), padding=(0, 1, 1)),  # 8
            nn.BatchNorm3d(v[2]),
            nn.ReLU(inplace=True),
            nn.Conv3d(v[2], v[3], kernel_size=(1, 3, 3), padding=(0, 1, 1)),  # 11
            nn.BatchNorm3d(v[3]),
            nn.ReLU(inplace=True),
            nn.Conv3d(v[3], v[4], kernel_size=(1, 3, 3), padding=(0, 1, 1)),  # 14
            nn.BatchNorm3d(v[4]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 17: -> 6
            nn.Conv3d(v[4], v[5], kernel_size=(1, k, k), padding=0),  # 18: -> 1x1x1
            nn.BatchNorm3d(v[5]),
            nn.ReLU(inplace=True),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        if mfcc.dim() != 4 or tuple(mfcc.shape[1:]) != (1, NUM_MFCC, MFCC_FRAMES):
            raise ValueError(f"mfcc must be (N, 1, {NUM_MFCC}, {MFCC_FRAMES}), got {tuple(mfcc.shape)}")
        mid = self.netcnnaud(mfcc)  # (N, C, 1, 1)
        return self.netfcaud(mid.flatten(1))  # (N, C) -> (N, D)

    def forward_lipfeat(self, video: torch.Tensor) -> torch.Tensor:
        s = self.config.crop_size
        if video.dim() != 5 or tuple(video.shape[1:]) != (3, NUM_FRAMES, s, s):
            raise ValueError(f"video must be (N, 3, {NUM_FRAMES}, {s}, {s}), got {tuple(video.shape)}")
        return self.netcnnlip(video).flatten(1)  # (N, C, 1, 1, 1) -> (N, C)

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.forward_lipfeat(video))  # (N, D)

    def forward_lip_sequence(self, video: torch.Tensor) -> torch.Tensor:
        """Embeddings of every 5-frame window of longer clips at once: (N, 3, T, S, S) -> (N, T - 4, D).

        Row t equals ``forward_lip(video[:, :, t:t + 5])`` (to float rounding): the first Conv3d has temporal
        kernel 5 and stride 1 and every later layer a temporal kernel of 1 (BatchNorm in eval mode is a
        per-channel affine map), so window t's features are time step t of the network run over the whole clip.
        Each frame is read once instead of five times; the arithmetic is the same. In training mode BatchNorm
        would pool statistics over the time steps differently, so this is for eval mode.
        """
        s = self.config.crop_size
        if video.dim() != 5 or video.shape[1] != 3 or tuple(video.shape[3:]) != (s, s) or video.shape[2] < NUM_FRAMES:
            raise ValueError(f"video must be (N, 3, T >= {NUM_FRAMES}, {s}, {s}), got {tuple(video.shape)}")
        mid = self.netcnnlip(video)  # (N, C, T - 4, 1, 1)
        n, c, steps = mid.shape[:3]
        features = mid.reshape(n, c, steps).transpose(1, 2).reshape(n * steps, c)  # (N * (T - 4), C)
        return self.netfclip(features).reshape(n, steps, -1)  # (N, T - 4, D)

    def forward(self, mfcc: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio embeddings (N, D), video embeddings (N, D)), the order of the other sync experts."""
        return self.forward_aud(mfcc), self.forward_lip(video)


def _fc_head(width: int, embedding_dim: int) -> nn.Sequential:
    return nn.Sequential(  # .0, .1, (.2 ReLU), .3
        nn.Linear(width, width),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Linear(width, embedding_dim),
    )


def build_syncnet_v2(config: SyncNetV2Config = SYNCNET_V2_DEFAULT) -> SyncNetV2:
    return SyncNetV2(config)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
