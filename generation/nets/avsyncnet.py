"""AVSyncNet: the audio-visual synchronisation expert of the stabilized-synchronization model.

Yaman, Eyiokur, Bärmann, Ekenel, Waibel, "Audio-driven Talking Face Generation with Stabilized Synchronization
Loss", ECCV 2024 (seed 001, §3.4 "AVSyncNet", §3.5) and its appendix (seed 002, §A.2 "AVSyncNet Architecture",
§A.3 "AVSyncNet Training"). The authors released no code and no weights.

AVSyncNet replaces Wav2Lip's SyncNet_color: an image encoder turns the lower halves of 5 consecutive faces into
F_I ∈ R^{1×1×512}, an audio encoder turns the mel window of those 5 frames into F_A ∈ R^{1×1×512}; the sync
probability is their cosine similarity, trained with binary cross-entropy against in-sync (1) / off-sync (0)
labels (appendix Eq. (A), (B)). After training, its audio encoder is frozen and becomes the audio encoder E_A
of both generators G_S and G_L (generation/nets/stabsync.py).

What the papers state (faithful)
--------------------------------
* Image encoder: ResNet-50 (He et al. 2016), "first layer adapted" to 112×224 lower-half faces; 5 images per
  sample (main §3.4, appendix §A.2, §A.3).
* Audio encoder: ResNetSE-34 (Chung et al. 2020, "In defence of metric learning", voxceleb_trainer), "consecutive
  convolutional layers followed by SE block and self-attentive pooling (SAP) block" (appendix §A.2).
* "After each encoder, we have an additional convolutional layer to further process the features", giving
  F_I, F_A ∈ R^{1×1×512}; cosine similarity, then BCE (appendix §A.3, Eq. (A), (B)).
* Audio input: the 16×80 mel window (16 kHz, window 800, hop 200) of main §3.5, i.e. Wav2Lip's mel, which is the
  only audio the generators' (shared, frozen) audio encoder ever sees.

What we chose where the papers are silent (UNVERIFIED)
------------------------------------------------------
* **How the 5 frames enter: channel stacking.** The 5 lower halves are stacked frame by frame into one
  (15, 112, 224) tensor (frame 0's 3 channels, then frame 1's, ...), exactly like Wav2Lip's SyncNet_color
  (15×48×96), and ResNet-50's ``conv1`` takes 15 input channels instead of 3. Reasons: the appendix says training
  follows "the similar strategy as in SyncNet", the 5 images yield one F_I ∈ R^{1×1×512} with no temporal
  pooling mentioned anywhere, and "adapting the first layer" is then a real change (ResNet-50 accepts 112×224
  RGB inputs unchanged, thanks to its global average pool). ``num_frames`` is a config field.
* ``conv1`` keeps torchvision's 7×7 kernel, stride 2, padding 3 (``image_conv1_stride``); the alternative reading
  of "adapted for 112×224" — stride (1, 2) so that the map becomes square (112×112) after ``conv1`` — is one config
  value away.
* ResNet-50 trunk = torchvision's ``resnet50`` minus ``fc`` (Bottleneck [3, 4, 6, 3], expansion 4, stride on the
  3×3 conv ("v1.5"), global average pool), with torchvision's parameter names (``conv1``, ``bn1``,
  ``layer1.0.conv1``, ..., ``layer4.2.bn3``, ``layerN.0.downsample.0/1``) so ImageNet weights could be mapped onto
  ``image_encoder.trunk`` later (conv1 would need its 3 input channels tiled 5 times).
* ResNetSE-34 variant: the model named exactly **ResNetSE34** in clovaai/voxceleb_trainer (models/ResNetSE34.py,
  listed in its README as "ResNetSE34 (SAP)"), the code of Chung et al. 2020 that the paper cites: SEBasicBlock
  [3, 4, 6, 3], widths (16, 32, 64, 128), SE reduction 8, conv1 7×7 stride (2, 1), max-pool 3×3 stride (2, 1),
  layer strides 1, 2, 2, 2, mean over frequency, SAP (``sap_linear`` + ``attention`` vector, softmax over time),
  ``fc`` to the 512-d embedding. Why this one: the paper's words are "ResNetSE34" and "self-attentive pooling
  (SAP)", and that file is the one with that name and that pooling. (The repository README maps it to the
  paper's "Thin ResNet-34"; the stored file nevertheless has the widths 16..128 above, and we follow the code.)
  ``audio_variant="ResNetSE34L"`` selects the repository's "Fast ResNet-34" (models/ResNetSE34L.py: no max-pool,
  layer4 stride 1): same widths, blocks, SAP and parameters, less time downsampling. ResNetSE34V2 (widths
  32..256, a conv1d attention over channel×frequency, released with ASP) was not chosen: it came later and its
  pooling is not this SAP. The SEBasicBlock keeps the reference's order conv → ReLU → BN for its first conv.
* The audio front end of voxceleb_trainer (its own STFT/mel + InstanceNorm on raw waveforms) is dropped: the
  input is the Wav2Lip-normalised mel window (B, 1, 80, 16), frequency on dim 2 and time on dim 3 as in
  voxceleb_trainer. ResNetSE34: 80×16 → conv1 40×16 → max-pool 20×16 → layer2 10×8 → layer3 5×4 → layer4 3×2 →
  2 time steps for SAP (ResNetSE34L: 40×16 → 20×8 → 10×4 → 10×4, 4 time steps).
* The "additional convolutional layer" after each encoder: 1×1 conv (with bias) → BatchNorm → ReLU, like the last
  block of Wav2Lip's SyncNet_color; the ReLU makes the embeddings non-negative so the cosine lies in [0, 1] and the
  BCE of Eq. (B) is defined. Image side: 2048 → 512 after ResNet-50's global average pool; audio side: 512 → 512
  after ResNetSE34's ``fc``.
* Face values in [0, 1] (like SyncNet_color, ``/255``) in the pipeline's colour order (BGR); no ImageNet
  mean/std. The lower half of a 96×96 crop (48×96) is resized bilinearly to 112×224 (same 1:2 aspect).
* Initialisation: torchvision's for the image trunk (kaiming-normal fan_out for convs, BN weight 1 / bias 0),
  voxceleb_trainer's for the audio encoder (the same, plus xavier-normal for the SAP attention vector).

Parameter counts
----------------
torchvision ``resnet50`` has 25,557,032 parameters, ``fc`` 2048·1000 + 1000 = 2,049,000, so the 3-channel trunk has
23,508,032; the 15-channel ``conv1`` adds 64·(15 − 3)·7·7 = 37,632 → 23,545,664. Default AVSyncNet: trunk
23,545,664 + image projection 1,050,112 + ResNetSE34 1,437,078 + audio projection 263,680 = 26,296,534; tiny
90,785 (arithmetic in tests/generation/nets/test_avsyncnet.py; the papers publish no figure).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# voxceleb_trainer's two SAP variants of the SE-ResNet-34 (models/ResNetSE34.py, models/ResNetSE34L.py): conv1 (7x7,
# stride (2, 1)) halves frequency only in both; ResNetSE34 adds a 3x3 max-pool with stride (2, 1) and a stride-2
# layer4, ResNetSE34L has no max-pool and a stride-1 layer4. Same parameters.
AUDIO_CONV1_STRIDE = (2, 1)
AUDIO_VARIANTS = {
    "ResNetSE34": {"stem_pool": True, "layer_strides": ((1, 1), (2, 2), (2, 2), (2, 2))},
    "ResNetSE34L": {"stem_pool": False, "layer_strides": ((1, 1), (2, 2), (2, 2), (1, 1))},
}
BOTTLENECK_EXPANSION = 4  # torchvision Bottleneck


# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEncoderConfig:
    """ResNet-50 trunk + projection on stacked lower-half faces (see the module docstring)."""

    num_frames: int = 5
    face_height: int = 112
    face_width: int = 224
    stem_channels: int = 64
    widths: tuple = (64, 128, 256, 512)  # Bottleneck planes; each layer outputs 4x as many channels
    blocks: tuple = (3, 4, 6, 3)
    conv1_stride: int | tuple = 2
    embedding_dim: int = 512

    @property
    def in_channels(self) -> int:
        return 3 * self.num_frames


@dataclass(frozen=True)
class AudioEncoderConfig:
    """ResNetSE34 (+ SAP + fc) + projection on a Wav2Lip mel window (see the module docstring)."""

    num_mels: int = 80
    mel_frames: int = 16
    widths: tuple = (16, 32, 64, 128)
    blocks: tuple = (3, 4, 6, 3)
    se_reduction: int = 8
    embedding_dim: int = 512
    variant: str = "ResNetSE34"

    def __post_init__(self) -> None:
        if self.variant not in AUDIO_VARIANTS:
            raise ValueError(f"audio variant must be one of {sorted(AUDIO_VARIANTS)}, not {self.variant!r}")
        if min(self.widths) < self.se_reduction:
            raise ValueError(f"every audio width must be >= se_reduction ({self.se_reduction}), got {self.widths}")


@dataclass(frozen=True)
class AVSyncNetConfig:
    """AVSyncNet, flat so that it survives a JSON round trip.

    num_frames: consecutive faces per sample, stacked along channels (3 * num_frames input channels).
    face_height, face_width: size of the lower-half faces fed to the image encoder (112x224).
    image_stem_channels, image_widths, image_blocks: ResNet-50 layout (torchvision: 64, (64,128,256,512), (3,4,6,3)).
    image_conv1_stride: stride of the adapted first conv (torchvision: 2).
    num_mels, mel_frames: the mel window (80 bands x 16 frames, Wav2Lip).
    audio_widths, audio_blocks, se_reduction: ResNetSE34 layout ((16,32,64,128), (3,4,6,3), 8).
    audio_variant: "ResNetSE34" (max-pool, stride-2 layer4) or "ResNetSE34L" (neither); same parameters.
    embedding_dim: size of F_I and F_A (512).
    """

    num_frames: int = 5
    face_height: int = 112
    face_width: int = 224
    image_stem_channels: int = 64
    image_widths: tuple = (64, 128, 256, 512)
    image_blocks: tuple = (3, 4, 6, 3)
    image_conv1_stride: int | tuple = 2
    num_mels: int = 80
    mel_frames: int = 16
    audio_widths: tuple = (16, 32, 64, 128)
    audio_blocks: tuple = (3, 4, 6, 3)
    se_reduction: int = 8
    audio_variant: str = "ResNetSE34"
    embedding_dim: int = 512

    def __post_init__(self) -> None:
        for name in ("image_widths", "image_blocks", "audio_widths", "audio_blocks"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"AVSyncNetConfig.{name} needs 4 entries, got {getattr(self, name)!r}")
        self.audio_config  # validates se_reduction against the widths

    @property
    def image_config(self) -> ImageEncoderConfig:
        return ImageEncoderConfig(
            num_frames=self.num_frames, face_height=self.face_height, face_width=self.face_width,
            stem_channels=self.image_stem_channels, widths=tuple(self.image_widths), blocks=tuple(self.image_blocks),
            conv1_stride=self.image_conv1_stride, embedding_dim=self.embedding_dim,
        )

    @property
    def audio_config(self) -> AudioEncoderConfig:
        return AudioEncoderConfig(
            num_mels=self.num_mels, mel_frames=self.mel_frames, widths=tuple(self.audio_widths),
            blocks=tuple(self.audio_blocks), se_reduction=self.se_reduction, embedding_dim=self.embedding_dim,
            variant=self.audio_variant,
        )


AVSYNCNET_DEFAULT = AVSyncNetConfig()
AVSYNCNET_TINY = AVSyncNetConfig(
    image_stem_channels=8,
    image_widths=(4, 8, 8, 16),
    audio_widths=(8, 8, 16, 16),
    embedding_dim=32,
)
AVSYNCNET_CONFIGS = {"default": AVSYNCNET_DEFAULT, "tiny": AVSYNCNET_TINY}


# ---------------------------------------------------------------------------------------------------------------
# Image encoder: ResNet-50 (torchvision layout and parameter names)
# ---------------------------------------------------------------------------------------------------------------


def conv1x1(cin: int, cout: int, stride=1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


def conv3x3(cin: int, cout: int, stride=1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (ResNet v1.5: the stride sits on the 3x3 conv), groups 1, base width 64."""

    expansion = BOTTLENECK_EXPANSION

    def __init__(self, inplanes: int, planes: int, stride=1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """torchvision ``ResNet`` with Bottleneck blocks, without ``fc``: (N, C, H, W) -> (N, 4*widths[3], 1, 1).

    For (N, 15, 112, 224) with stride-2 ``conv1``: 56x112 -> maxpool 28x56 -> layer1 28x56 -> layer2 14x28 ->
    layer3 7x14 -> layer4 4x7 -> avgpool 1x1.
    """

    def __init__(self, in_channels: int, stem_channels: int, widths: tuple, blocks: tuple, conv1_stride=2):
        super().__init__()
        self.inplanes = stem_channels
        self.conv1 = nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=conv1_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], blocks[0], stride=1)
        self.layer2 = self._make_layer(widths[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(widths[2], blocks[2], stride=2)
        self.layer4 = self._make_layer(widths[3], blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.out_channels = widths[3] * Bottleneck.expansion

        for m in self.modules():  # torchvision's initialisation (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(  # downsample.0 (conv), downsample.1 (BN)
                conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)  # (N, 2048, 1, 1)


class Projection(nn.Module):
    """The "additional convolutional layer" after each encoder: 1x1 conv (bias) -> BN -> ReLU on (N, C, 1, 1)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ImageEncoder(nn.Module):
    """(N, 3*T, 112, 224) stacked lower-half faces in [0, 1] -> F_I (N, 512, 1, 1), not normalised."""

    def __init__(self, config: ImageEncoderConfig = ImageEncoderConfig()):
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.in_channels, config.stem_channels, config.widths, config.blocks,
                                 config.conv1_stride)
        self.projection = Projection(self.trunk.out_channels, config.embedding_dim)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        c = self.config
        expected = (c.in_channels, c.face_height, c.face_width)
        if faces.dim() != 4 or tuple(faces.shape[1:]) != expected:
            raise ValueError(f"faces must be (N, {expected[0]}, {expected[1]}, {expected[2]}) "
                             f"(lower halves of {c.num_frames} frames stacked along channels), "
                             f"got {tuple(faces.shape)}")
        return self.projection(self.trunk(faces))  # (N, 2048, 1, 1) -> (N, 512, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# Audio encoder: ResNetSE34 (clovaai/voxceleb_trainer models/ResNetSE34.py, ResNetSE34L.py, ResNetBlocks.py)
# ---------------------------------------------------------------------------------------------------------------


class SELayer(nn.Module):
    """Squeeze-and-excitation (ResNetBlocks.py ``SELayer``): channel gates from the global average."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        gates = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)  # (N, C) -> (N, C, 1, 1)
        return x * gates


class SEBasicBlock(nn.Module):
    """ResNetBlocks.py ``SEBasicBlock``: conv3x3 → ReLU → BN → conv3x3 → BN → SE, + shortcut, ReLU.

    The ReLU-before-BN order of the first conv is the reference's, kept on purpose.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride=1, downsample: nn.Module | None = None, reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes, reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.relu(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + residual)


class ResNetSE(nn.Module):
    """ResNetSE34 / ResNetSE34L with self-attentive pooling: (N, 1, 80, T) mel -> (N, embedding_dim) embedding.

    Shapes for the 80x16 window, ResNetSE34: conv1 (2, 1) 16x40x16 -> max-pool (2, 1) 16x20x16 -> layer1 16x20x16
    -> layer2 32x10x8 -> layer3 64x5x4 -> layer4 128x3x2 -> mean over frequency 128x2 -> SAP over the 2 time steps
    -> 128 -> fc. ResNetSE34L: 16x40x16 -> 16x40x16 -> 32x20x8 -> 64x10x4 -> 128x10x4 -> SAP over 4 time steps.
    """

    def __init__(self, widths: tuple, blocks: tuple, embedding_dim: int, se_reduction: int = 8,
                 variant: str = "ResNetSE34"):
        super().__init__()
        layout = AUDIO_VARIANTS[variant]
        strides = layout["layer_strides"]
        self.inplanes = widths[0]
        self.se_reduction = se_reduction
        self.conv1 = nn.Conv2d(1, widths[0], kernel_size=7, stride=AUDIO_CONV1_STRIDE, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        # ResNetSE34's ``maxPool`` (no parameters; Identity for ResNetSE34L)
        self.maxPool = nn.MaxPool2d(kernel_size=3, stride=(2, 1), padding=1) if layout["stem_pool"] else nn.Identity()
        self.layer1 = self._make_layer(widths[0], blocks[0], strides[0])
        self.layer2 = self._make_layer(widths[1], blocks[1], strides[1])
        self.layer3 = self._make_layer(widths[2], blocks[2], strides[2])
        self.layer4 = self._make_layer(widths[3], blocks[3], strides[3])

        channels = widths[3] * SEBasicBlock.expansion
        self.sap_linear = nn.Linear(channels, channels)
        self.attention = nn.Parameter(torch.empty(channels, 1))
        self.fc = nn.Linear(channels, embedding_dim)

        nn.init.xavier_normal_(self.attention)
        for m in self.modules():  # voxceleb_trainer's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride) -> nn.Sequential:
        downsample = None
        if stride not in (1, (1, 1)) or self.inplanes != planes * SEBasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * SEBasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * SEBasicBlock.expansion),
            )
        layers = [SEBasicBlock(self.inplanes, planes, stride, downsample, self.se_reduction)]
        self.inplanes = planes * SEBasicBlock.expansion
        layers += [SEBasicBlock(self.inplanes, planes, reduction=self.se_reduction) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.maxPool(self.relu(self.bn1(self.conv1(mel))))  # (N, 16, 20, T) (ResNetSE34L: (N, 16, 40, T))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 128, 3, T/8) (L: (N, 128, 10, T/4))
        x = x.mean(dim=2)  # mean over frequency: (N, 128, T')
        x = x.transpose(1, 2)  # (N, T', 128)
        h = torch.tanh(self.sap_linear(x))  # (N, T', 128)
        w = torch.softmax(torch.matmul(h, self.attention).squeeze(2), dim=1)  # (N, T') attention over time
        x = torch.sum(x * w.unsqueeze(2), dim=1)  # (N, 128)
        return self.fc(x)  # (N, embedding_dim)


class AudioEncoder(nn.Module):
    """E_A: (N, 1, 80, 16) Wav2Lip mel in [-4, 4] -> F_A (N, 512, 1, 1), not normalised.

    AVSyncNet's audio encoder; frozen, it is also the audio encoder of G_S and G_L (stabsync.py).
    """

    def __init__(self, config: AudioEncoderConfig = AudioEncoderConfig()):
        super().__init__()
        self.config = config
        self.resnet = ResNetSE(config.widths, config.blocks, config.embedding_dim, config.se_reduction, config.variant)
        self.projection = Projection(config.embedding_dim, config.embedding_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.config
        if mel.dim() != 4 or tuple(mel.shape[1:]) != (1, c.num_mels, c.mel_frames):
            raise ValueError(f"mel must be (N, 1, {c.num_mels}, {c.mel_frames}), got {tuple(mel.shape)}")
        x = self.resnet(mel)  # (N, 512)
        return self.projection(x[:, :, None, None])  # (N, 512) -> (N, 512, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# AVSyncNet
# ---------------------------------------------------------------------------------------------------------------


class AVSyncNet(nn.Module):
    """The sync expert: ``forward(mel (B, 1, 80, 16), faces (B, 15, 112, 224)) -> (audio_emb, video_emb)``.

    Both embeddings are (B, 512), L2-normalised (as Wav2Lip's SyncNet_color returns them), so their dot product is
    the cosine similarity P_sync of appendix Eq. (A); ``similarity`` returns it directly (AVSIM of main Eq. (4)).
    ``faces`` are the lower halves of 5 consecutive frames, resized to 112x224 and stacked along channels; build
    them with :func:`avsync_face_input`.
    """

    def __init__(self, config: AVSyncNetConfig = AVSYNCNET_DEFAULT):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image_config)
        self.audio_encoder = AudioEncoder(config.audio_config)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if mel.shape[0] != faces.shape[0]:
            raise ValueError(f"mel and faces have different batch sizes: {mel.shape[0]} and {faces.shape[0]}")
        audio_emb = self.audio_encoder(mel).flatten(1)  # (B, 512, 1, 1) -> (B, 512)
        video_emb = self.image_encoder(faces).flatten(1)  # (B, 512, 1, 1) -> (B, 512)
        return F.normalize(audio_emb, p=2, dim=1), F.normalize(video_emb, p=2, dim=1)

    def similarity(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """AVSIM(I, A): cosine similarity of F_I and F_A, (B,), in [0, 1] (the embeddings are non-negative)."""
        audio_emb, video_emb = self(mel, faces)
        return cosine_similarity(audio_emb, video_emb)


def cosine_similarity(audio_emb: torch.Tensor, video_emb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Appendix Eq. (A): P_sync = F_I·F_A / max(‖F_I‖₂‖F_A‖₂, ε), per row: (B, D), (B, D) -> (B,)."""
    return F.cosine_similarity(audio_emb, video_emb, dim=1, eps=eps)


def sync_loss(audio_emb: torch.Tensor, video_emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The AVSyncNet training loss (appendix Eq. (B), as Wav2Lip's ``cosine_loss``): BCE(P_sync, y), batch mean.

    ``target`` is 1 for in-sync pairs and 0 for off-sync pairs, shape (B,). P_sync is clamped to [0, 1] only to
    absorb float rounding (with non-negative embeddings it cannot leave that range otherwise); the log is clamped
    at -100 by ``binary_cross_entropy`` exactly as in ``nn.BCELoss``.
    """
    p_sync = cosine_similarity(audio_emb, video_emb).clamp(0.0, 1.0)  # (B,)
    return F.binary_cross_entropy(p_sync, target.to(p_sync.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Face preprocessing for AVSyncNet
# ---------------------------------------------------------------------------------------------------------------


def lower_half(frames: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H - H//2, W): rows H//2.. (the mouth half, as Wav2Lip's ``get_lower_half``)."""
    return frames[..., frames.shape[-2] // 2:, :]


def avsync_face_input(frames: torch.Tensor, size: tuple[int, int] = (112, 224)) -> torch.Tensor:
    """Whole face crops (B, 3, T, S, S) in [0, 1] -> AVSyncNet input (B, 3*T, 112, 224).

    Takes the lower half of every frame (S/2 x S, e.g. 48x96 from a 96x96 crop), resizes it bilinearly to
    ``size`` (the same 1:2 aspect for square crops), and stacks the T frames along channels frame by frame
    (channels 3t..3t+2 are frame t), the SyncNet_color layout. UNVERIFIED: the resize method (the papers only say
    the input is 112x224).
    """
    if frames.dim() != 5 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (B, 3, T, H, W), got {tuple(frames.shape)}")
    b, _, t = frames.shape[:3]
    halves = lower_half(frames)  # (B, 3, T, H/2, W)
    halves = halves.permute(0, 2, 1, 3, 4).reshape(b * t, 3, *halves.shape[-2:])  # (B*T, 3, H/2, W), frame-major
    halves = F.interpolate(halves, size=size, mode="bilinear", align_corners=False)  # (B*T, 3, 112, 224)
    return halves.reshape(b, t * 3, *size)  # (B, 3*T, 112, 224): frame 0's BGR, frame 1's BGR, ...


def build_avsyncnet(config: AVSyncNetConfig = AVSYNCNET_DEFAULT) -> AVSyncNet:
    return AVSyncNet(config)
