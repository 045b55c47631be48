"""LipGAN as ported to PyTorch: generator, audio-conditioned discriminator, contrastive loss.

Prajwal, Mukhopadhyay, Jerin, Abhishek, Namboodiri, Jawahar, "Towards Automatic Face-to-Face Translation",
ACM Multimedia 2019; reference code Rudrabha/LipGAN (Keras 2.2.4 / TF 1.8), branch ``fully_pythonic``
(d8ef8ef; the 80x27 mel front end), files ``generator.py`` (``create_model_residual``, the default of
``train.py --model residual``; ``create_model`` is ``--model basic``) and ``discriminator.py``. The port
follows Geldhauser, Liljegren, Nordqvist, "All's Well That FID's Well?", Electronics 2025, 14(17), 3487
(seed 000_41145e614d4b5485.txt, §4.1 and §5): 96x96 faces, 80x27 mel windows, no batch normalisation in
the discriminator, Adam lr 1e-4 with betas (0.5, 0.9) for both networks. Facts: shared/research/
metrics_models.md §3.

Faithful to the reference code
------------------------------
* Every layer, kernel, stride and width of ``create_model_residual`` (and, with ``LIPGAN_BASIC``, of
  ``create_model``), the order of every concatenation (encoder feature first, then decoder feature; face
  embedding first, then audio embedding), and the residual block exactly as written there:
  ``relu(conv_block(conv_block(x)) + x)``, where both conv_blocks end in their own ReLU.
* conv_block = Conv2D (with bias) -> BatchNormalization(momentum=0.8, epsilon=1e-3) -> ReLU. PyTorch's
  momentum is the weight of the *new* statistic, so Keras 0.8 is PyTorch 0.2.
* TensorFlow's ``padding='same'`` is reproduced exactly, including its asymmetry (the odd extra padding pixel
  goes bottom/right; see :func:`tf_same_padding`), and ``Conv2DTranspose(k3, s2, 'same')`` is cropped the way
  TF crops it (top/left aligned; PyTorch's ``padding=1, output_padding=1`` would be shifted by one pixel).
  With these inputs symmetric padding would give the same *sizes*, but not the same pixel alignment.
* Face input: 6 channels = [reference frame, masked target frame (rows 48..95 zeroed)] -- **reference
  first**, the opposite of Wav2Lip -- in BGR, /255. Audio input: (1, 80, 27), i.e. Keras' (80, 27, 1).
  Output: 3x96x96 sigmoid, BGR.
* Discriminator: face stream on the full 96x96x3 face (stride-2 blocks 64 k7, 128 k5, 256 k3, 512 k3,
  512 k3, then a plain 512 k3 'valid' conv), audio stream (32 s1, 64 s3, 128 s(3,1), 256 s3, 512 k3 'valid',
  512 k1), both flattened and L2-normalised the Keras way (``x / sqrt(max(sum x^2, 1e-12))``); the output is
  their Euclidean distance, in [0, 2]. :func:`contrastive_loss` is the reference's (margin 1; y=0 real and
  in sync, y=1 fake or off-sync).

Our decisions (not in the reference code)
-----------------------------------------
* Dead layers. ``create_model`` (basic) computes ``conv_block(embedding, 512, 1)`` and throws the result
  away. Keras builds a ``Model`` by walking back from its outputs, so that layer is not part of the model:
  not in ``model.layers``, not in ``model.summary()``'s trainable-parameter total, not in the saved .h5.
  The port leaves it out too (it cannot change the output). ``create_model_residual`` has no dead layer.
* Discriminator normalisation: the paper says no batch normalisation in the discriminator; the default
  here has **no normalisation at all** (``norm="none"``), which is also what the paper's parameter count
  implies (see below). ``norm="keras_contrib"`` reproduces the reference's ``InstanceNormalization()``
  exactly: keras_contrib's default ``axis=None`` normalises each sample over *all* of (C, H, W) -- a
  per-sample layer norm -- with one scalar gamma and one scalar beta, eps added to the (population) std.
  A per-channel ``nn.InstanceNorm2d`` is deliberately not offered: on the audio stream's 1x1 maps it
  would output beta alone, whatever the audio.
* The distance is ``sqrt(max(sum (f - a)^2, 1e-12))``: Keras takes ``sqrt`` of the plain sum, whose gradient
  is infinite at 0; the clamp (a distance floor of 1e-6) keeps that finite.
* Default PyTorch initialisation (the paper's port does not say; Keras used Glorot-uniform kernels).
* Widths, block counts and kernels are config fields, so that a ``tiny`` config with the same topology
  exists and ``create_model`` is a config (``LIPGAN_BASIC``) rather than a second class.

Parameter counts (trainable; tests/generation/nets/test_lipgan.py shows the arithmetic)
-------------------------------------------------------------------------------------
The paper reports 37,087,763 (generator) and 10,337,152 (discriminator). This port has 49,543,123 and
8,240,000. No faithful variant reaches 37,087,763 (residual, basic, with or without dead layer, conv biases
or BN all miss it by millions), so the paper's port must differ from LipGAN somewhere it does not say.
The discriminator's figure is exactly this discriminator with no normalisation plus 2,097,152 = 2**21
weights, e.g. the audio stream's last conv with a 3x3 kernel instead of 1x1 (``DISCRIMINATOR_PAPER_COUNT``);
that layer choice is a guess (**UNVERIFIED**): a 5x5 kernel in the face stream's 256->512 block matches
the count just as well.

Weights
-------
``remap_official`` is None: no official checkpoint of *this* model exists. The paper evaluated its own
PyTorch port (trained on GRID), whose weights were not released, and whose parameter counts show it is not
layer-for-layer LipGAN's. What LipGAN released is a Keras .h5 (Google Drive; file name and branch not given,
metrics_models.md §3.4), trained on LRS2. Converting it is not supported: it is a Keras/HDF5 file (no
PyTorch state dict to remap, and reading it needs h5py), its kernels are channels-last (HWIO), and if it is
the master branch's model its 12x35 MFCC audio encoder has different layers altogether. A fully_pythonic
residual .h5 would map layer for layer onto this module (kernels HWIO -> OIHW, Conv2DTranspose HWOI -> IOHW,
BN gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var), but it would be
LipGAN's LRS2 model, not the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generation.nets import REFERENCE_FIRST, Architecture, InputSpec, register

KERAS_BN_MOMENTUM = 0.2  # Keras BatchNormalization(momentum=0.8) in PyTorch's convention
KERAS_BN_EPS = 1e-3  # Keras' BatchNormalization default
KERAS_L2_EPS = 1e-12  # K.l2_normalize: x / sqrt(max(sum(x^2), 1e-12))
DISTANCE_EPS = 1e-12  # floor of the squared distance (keeps the gradient of sqrt finite)
LEAKY_SLOPE = 0.2  # discriminator LeakyReLU(alpha=0.2)
AUDIO_BOTTLENECK_KERNEL = 3  # the 'valid' conv that maps the audio stream's 3x3 to 1x1

# Training recipe of the paper (§5), for the training code; LipGAN's own train.py weights the generator's
# [L1, contrastive] losses [1.0, 0.01].
ADAM_LR = 1e-4
ADAM_BETAS = (0.5, 0.9)
GENERATOR_LOSS_WEIGHTS = (1.0, 0.01)


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow 'same' padding
# ---------------------------------------------------------------------------------------------------------------


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF ``padding='same'`` along one axis: output ceil(size / stride).

    TF pads ``max((out - 1) * stride + kernel - size, 0)`` pixels in total and puts the odd one *after*.
    E.g. 96 with k5 s2 -> (1, 2); 48 with k3 s2 -> (0, 1); 27 with k3 s3 -> (0, 0).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with Keras/TF ``padding='same'`` (asymmetric where TF is)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1):
        super().__init__(cin, cout, kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


class SameConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with Keras ``Conv2DTranspose(padding='same')``: output = input * stride.

    The full transposed convolution is (in - 1) * s + k long; TF keeps ``out = in * s`` of it starting at the
    forward 'same' conv's ``before`` padding, ``(k - s) // 2`` (0 for k3 s2 and k3 s3).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int):
        if kernel_size < stride:
            raise ValueError("SameConvTranspose2d needs kernel_size >= stride")
        super().__init__(cin, cout, kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        full = super().forward(x)  # (B, C, (H-1)*s + k, (W-1)*s + k)
        top = (full.shape[-2] - out_h) // 2
        left = (full.shape[-1] - out_w) // 2
        return full[..., top : top + out_h, left : left + out_w]  # (B, C, H*s, W*s)


def _same_size(size: int, stride: int) -> int:
    return -(-size // stride)


def _freeze_strides(config) -> None:
    """Configs stored as JSON come back with [[1, 1], [3, 3], ...]; keep the frozen config hashable and equal."""
    object.__setattr__(config, "audio_strides", tuple(tuple(stride) for stride in config.audio_strides))


# ---------------------------------------------------------------------------------------------------------------
# Generator (generator.py)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LipGANConfig:
    """LipGAN generator sizes. Defaults: ``create_model_residual`` of the fully_pythonic branch.

    Face encoder: a stride-1 ``face_stem`` conv_block, then one stride-2 conv_block per entry of
    ``face_channels`` (each followed by ``face_blocks`` repeated blocks), a 3x3 'valid' conv_block to 1x1
    (``face_bottleneck_channels``) and a 1x1 conv_block (``face_embedding_channels``).
    Audio encoder: one conv_block per entry of ``audio_channels`` / ``audio_strides`` (each followed by
    ``audio_blocks`` repeated blocks), a 3x3 'valid' conv_block to 1x1, a 1x1 conv_block.
    Decoder: one Conv2DTranspose block per entry of ``decoder_channels`` (the first k3 s3: 1x1 -> 3x3, then
    k3 s2), each followed by ``decoder_blocks`` repeated blocks and concatenated after the matching encoder
    feature; then two 3x3 conv_blocks of ``head_channels`` and a 1x1 conv to 3 channels + sigmoid.
    ``residual``: a repeated block is LipGAN's ``residual_block`` (two conv_blocks + identity + ReLU); False
    makes it two plain conv_blocks, as the basic ``create_model`` repeats them in its audio encoder.
    """

    face_size: int = 96
    mel_bins: int = 80
    mel_frames: int = 27
    face_stem_channels: int = 32
    face_stem_kernel: int = 7
    face_channels: tuple[int, ...] = (64, 128, 256, 512, 512)  # 48, 24, 12, 6, 3
    face_kernels: tuple[int, ...] = (5, 3, 3, 3, 3)
    face_blocks: tuple[int, ...] = (2, 3, 2, 2, 0)
    face_bottleneck_channels: int = 512
    face_embedding_channels: int = 512
    audio_channels: tuple[int, ...] = (32, 64, 128, 256)  # 80x27, 27x9, 9x9, 3x3
    audio_strides: tuple[tuple[int, int], ...] = ((1, 1), (3, 3), (3, 1), (3, 3))
    audio_blocks: tuple[int, ...] = (2, 2, 2, 2)
    audio_bottleneck_channels: int = 512
    audio_embedding_channels: int = 512
    decoder_channels: tuple[int, ...] = (512, 512, 256, 128, 64, 32)  # 3, 6, 12, 24, 48, 96
    decoder_blocks: tuple[int, ...] = (0, 2, 2, 2, 2, 0)
    head_channels: int = 16
    residual: bool = True

    def __post_init__(self) -> None:
        _freeze_strides(self)
        if not len(self.face_channels) == len(self.face_kernels) == len(self.face_blocks):
            raise ValueError("face_channels, face_kernels and face_blocks must have the same length")
        if not len(self.audio_channels) == len(self.audio_strides) == len(self.audio_blocks):
            raise ValueError("audio_channels, audio_strides and audio_blocks must have the same length")
        if not len(self.decoder_channels) == len(self.decoder_blocks) == len(self.face_channels) + 1:
            raise ValueError("the decoder needs one stage per face stage plus one (1x1 -> 3x3)")
        if self.face_bottleneck_size() != 3:
            stages = len(self.face_channels)
            raise ValueError(f"face_size {self.face_size} does not reach 3x3 after {stages} stride-2 stages")
        if self.audio_bottleneck_size() != (AUDIO_BOTTLENECK_KERNEL, AUDIO_BOTTLENECK_KERNEL):
            mel = f"{self.mel_bins}x{self.mel_frames}"
            raise ValueError(f"a {mel} mel does not reach 3x3 with strides {self.audio_strides}")

    def face_bottleneck_size(self) -> int:
        size = self.face_size
        for _ in self.face_channels:
            size = _same_size(size, 2)
        return size

    def audio_bottleneck_size(self) -> tuple[int, int]:
        height, width = self.mel_bins, self.mel_frames
        for stride_h, stride_w in self.audio_strides:
            height, width = _same_size(height, stride_h), _same_size(width, stride_w)
        return height, width


class ConvBlock(nn.Module):
    """``conv_block``: Conv2D (bias) -> BatchNormalization(momentum .8, eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size=3, stride=1, padding: str = "same"):
        super().__init__()
        if padding == "same":
            self.conv = SameConv2d(cin, cout, kernel_size, stride)
        elif padding == "valid":
            self.conv = nn.Conv2d(cin, cout, kernel_size, stride)
        else:
            raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")
        self.norm = nn.BatchNorm2d(cout, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ConvTransposeBlock(nn.Module):
    """``conv_t_block``: Conv2DTranspose('same') -> BatchNormalization(momentum .8) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.conv = SameConvTranspose2d(cin, cout, kernel_size, stride)
        self.norm = nn.BatchNorm2d(cout, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class RepeatedBlock(nn.Module):
    """Two 3x3 conv_blocks; with ``residual`` LipGAN's ``residual_block``: relu(conv2(conv1(x)) + x)."""

    def __init__(self, channels: int, residual: bool):
        super().__init__()
        self.conv1 = ConvBlock(channels, channels)
        self.conv2 = ConvBlock(channels, channels)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return F.relu(out + x) if self.residual else out


class Stage(nn.Module):
    """One resolution of an encoder or of the decoder: a (strided) conv or transposed-conv block + blocks."""

    def __init__(self, first: nn.Module, channels: int, num_blocks: int, residual: bool):
        super().__init__()
        self.first = first
        self.blocks = nn.Sequential(*(RepeatedBlock(channels, residual) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.first(x))


class FaceEncoder(nn.Module):
    def __init__(self, config: LipGANConfig):
        super().__init__()
        c = config
        self.stem = ConvBlock(6, c.face_stem_channels, c.face_stem_kernel)
        stages, cin = [], c.face_stem_channels
        for cout, kernel, num_blocks in zip(c.face_channels, c.face_kernels, c.face_blocks):
            stages.append(Stage(ConvBlock(cin, cout, kernel, stride=2), cout, num_blocks, c.residual))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.bottleneck = ConvBlock(cin, c.face_bottleneck_channels, 3, padding="valid")
        self.embedding = ConvBlock(c.face_bottleneck_channels, c.face_embedding_channels, 1)

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(faces)  # (B, 32, 96, 96): Keras' identity_mapping
        features = [x]
        for stage in self.stages:
            x = stage(x)  # (B, 64, 48, 48), (B, 128, 24, 24), (B, 256, 12, 12), (B, 512, 6, 6), (B, 512, 3, 3)
            features.append(x)
        x = self.bottleneck(x)  # (B, 512, 1, 1)
        return self.embedding(x), features  # (B, 512, 1, 1), the six skip features


class AudioEncoder(nn.Module):
    def __init__(self, config: LipGANConfig):
        super().__init__()
        c = config
        stages, cin = [], 1
        for cout, stride, num_blocks in zip(c.audio_channels, c.audio_strides, c.audio_blocks):
            stages.append(Stage(ConvBlock(cin, cout, 3, stride=stride), cout, num_blocks, c.residual))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.bottleneck = ConvBlock(cin, c.audio_bottleneck_channels, AUDIO_BOTTLENECK_KERNEL, padding="valid")
        self.embedding = ConvBlock(c.audio_bottleneck_channels, c.audio_embedding_channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.stages(mel)  # (B, 1, 80, 27) -> (B, 32, 80, 27) -> (B, 64, 27, 9) -> (B, 128, 9, 9) -> (B, 256, 3, 3)
        x = self.bottleneck(x)  # (B, 512, 1, 1)
        return self.embedding(x)  # (B, 512, 1, 1)


class FaceDecoder(nn.Module):
    def __init__(self, config: LipGANConfig):
        super().__init__()
        c = config
        # Encoder features from deepest to shallowest: 3x3 (face_channels[-1]) ... 96x96 (stem).
        skip_channels = [*reversed(c.face_channels), c.face_stem_channels]
        stages, cin = [], c.face_embedding_channels + c.audio_embedding_channels
        for index, (cout, num_blocks) in enumerate(zip(c.decoder_channels, c.decoder_blocks)):
            # conv_t_block(embedding, 512, 3, 3) takes 1x1 to 3x3; every later one doubles the size.
            up = ConvTransposeBlock(cin, cout, 3, stride=3 if index == 0 else 2)
            stages.append(Stage(up, cout, num_blocks, c.residual))
            cin = skip_channels[index] + cout
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(ConvBlock(cin, c.head_channels), ConvBlock(c.head_channels, c.head_channels))
        self.to_bgr = SameConv2d(c.head_channels, 3, 1)

    def forward(self, embedding: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        x = embedding  # (B, 1024, 1, 1)
        for stage, skip in zip(self.stages, reversed(features)):
            x = stage(x)  # (B, 512, 3, 3), (B, 512, 6, 6), (B, 256, 12, 12), ..., (B, 32, 96, 96)
            x = torch.cat([skip, x], dim=1)  # encoder feature first: (B, 1024, 3, 3), ..., (B, 64, 96, 96)
        x = self.head(x)  # (B, 16, 96, 96)
        return torch.sigmoid(self.to_bgr(x))  # (B, 3, 96, 96)


class LipGANGenerator(nn.Module):
    """LipGAN's generator: ``forward(mel (B,1,80,27), faces (B,6,96,96)) -> (B,3,96,96)`` in [0, 1], BGR."""

    def __init__(self, config: LipGANConfig = LipGANConfig()):
        super().__init__()
        self.config = config
        self.input_spec = InputSpec(
            face_size=config.face_size, mel_frames=config.mel_frames, face_order=REFERENCE_FIRST, color="BGR"
        )
        self.face_encoder = FaceEncoder(config)
        self.audio_encoder = AudioEncoder(config)
        self.decoder = FaceDecoder(config)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        check_input_shape("mel", mel, (1, self.config.mel_bins, self.config.mel_frames))
        check_input_shape("faces", faces, (6, self.config.face_size, self.config.face_size))
        face_embedding, features = self.face_encoder(faces)  # (B, 512, 1, 1), skips
        audio_embedding = self.audio_encoder(mel)  # (B, 512, 1, 1)
        embedding = torch.cat([face_embedding, audio_embedding], dim=1)  # (B, 1024, 1, 1)
        return self.decoder(embedding, features)  # (B, 3, 96, 96)


def check_input_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tensor.dim() != 4 or tuple(tensor.shape[1:]) != expected:
        raise ValueError(f"{name} must be (B, {', '.join(map(str, expected))}), got {tuple(tensor.shape)}")


LIPGAN_DEFAULT = LipGANConfig()

# create_model (``--model basic``): bigger stem kernels, no residual blocks, a 256-wide face embedding, and
# an audio encoder that repeats plain conv_blocks (32, 32, 32 / 64, 64, 64 / ...: one plain pair per stage).
LIPGAN_BASIC = LipGANConfig(
    face_stem_kernel=11,
    face_kernels=(7, 5, 3, 3, 3),
    face_blocks=(0, 0, 0, 0, 0),
    face_embedding_channels=256,
    audio_blocks=(1, 1, 1, 1),
    decoder_blocks=(0, 0, 0, 0, 0, 0),
    residual=False,
)

LIPGAN_TINY = LipGANConfig(
    face_stem_channels=4,
    face_channels=(8, 8, 16, 16, 16),
    face_bottleneck_channels=16,
    face_embedding_channels=16,
    audio_channels=(4, 4, 8, 8),
    audio_bottleneck_channels=16,
    audio_embedding_channels=16,
    decoder_channels=(16, 16, 16, 8, 8, 4),
    head_channels=4,
)


# ---------------------------------------------------------------------------------------------------------------
# Discriminator (discriminator.py) and contrastive loss
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LipGANDiscriminatorConfig:
    """Sizes of LipGAN's discriminator (also the L1WGAN-GP critic's trunk).

    Face stream: one stride-2 'same' conv block per entry of ``face_channels`` / ``face_kernels``, then a
    plain conv (no norm, no activation) of ``face_embedding_kernel`` 'valid' to 1x1. Audio stream: one
    'same' k3 conv block per entry of ``audio_channels`` / ``audio_strides``, a k3 'valid' block to 1x1, and a
    block with ``audio_embedding_kernel`` (1 in LipGAN). Conv blocks are conv (bias) -> norm -> LeakyReLU(0.2);
    ``norm`` is "none" (the paper: no batch normalisation; the default) or "keras_contrib" (the reference's
    InstanceNormalization(axis=None), see :class:`KerasContribInstanceNorm`).
    """

    face_size: int = 96
    mel_bins: int = 80
    mel_frames: int = 27
    face_channels: tuple[int, ...] = (64, 128, 256, 512, 512)  # 48, 24, 12, 6, 3
    face_kernels: tuple[int, ...] = (7, 5, 3, 3, 3)
    face_embedding_kernel: int = 3
    audio_channels: tuple[int, ...] = (32, 64, 128, 256)  # 80x27, 27x9, 9x9, 3x3
    audio_strides: tuple[tuple[int, int], ...] = ((1, 1), (3, 3), (3, 1), (3, 3))
    audio_embedding_kernel: int = 1
    embedding_channels: int = 512
    norm: str = "none"

    def __post_init__(self) -> None:
        _freeze_strides(self)
        if len(self.face_channels) != len(self.face_kernels):
            raise ValueError("face_channels and face_kernels must have the same length")
        if len(self.audio_channels) != len(self.audio_strides):
            raise ValueError("audio_channels and audio_strides must have the same length")
        if self.norm not in ("none", "keras_contrib"):
            raise ValueError(f"norm must be 'none' or 'keras_contrib', not {self.norm!r}")
        size = self.face_size
        for _ in self.face_channels:
            size = _same_size(size, 2)
        if size != self.face_embedding_kernel:
            kernel = self.face_embedding_kernel
            raise ValueError(f"the face stream ends at {size}x{size}, not at the {kernel}x{kernel} of its last conv")
        height, width = self.mel_bins, self.mel_frames
        for stride_h, stride_w in self.audio_strides:
            height, width = _same_size(height, stride_h), _same_size(width, stride_w)
        if (height, width) != (AUDIO_BOTTLENECK_KERNEL, AUDIO_BOTTLENECK_KERNEL):
            raise ValueError(f"the audio stream ends at {height}x{width}, not 3x3")


class KerasContribInstanceNorm(nn.Module):
    """keras_contrib ``InstanceNormalization()`` with its default ``axis=None``, as LipGAN uses it.

    Each sample is normalised over all of (C, H, W) -- not per channel -- with the population std and eps
    added to the std: ``(x - mean) / (std + eps) * gamma + beta``, gamma and beta being single scalars.
    Per-sample, so it is allowed in a WGAN-GP critic.
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))  # gamma, shape (1,)
        self.bias = nn.Parameter(torch.zeros(1))  # beta, shape (1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)  # (B, 1, 1, 1)
        return (x - mean) / (std + self.eps) * self.weight + self.bias


class DiscriminatorConvBlock(nn.Module):
    """``conv_block`` of discriminator.py: Conv2D (bias) -> [InstanceNormalization] -> LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding: str, norm: str):
        super().__init__()
        if padding == "same":
            self.conv = SameConv2d(cin, cout, kernel_size, stride)
        else:
            self.conv = nn.Conv2d(cin, cout, kernel_size, stride)
        self.norm = KerasContribInstanceNorm() if norm == "keras_contrib" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), LEAKY_SLOPE)


class DiscriminatorFaceEncoder(nn.Module):
    """Face stream: (B, 3, 96, 96) face in [0, 1], BGR -> (B, 512) embedding (not normalised)."""

    def __init__(self, config: LipGANDiscriminatorConfig):
        super().__init__()
        c = config
        blocks, cin = [], 3
        for cout, kernel in zip(c.face_channels, c.face_kernels):
            blocks.append(DiscriminatorConvBlock(cin, cout, kernel, 2, "same", c.norm))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.embedding = nn.Conv2d(cin, c.embedding_channels, c.face_embedding_kernel)  # plain 'valid' conv

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        x = self.blocks(face)  # (B, 64, 48, 48) -> ... -> (B, 512, 3, 3)
        return self.embedding(x).flatten(1)  # (B, 512, 1, 1) -> (B, 512)


class DiscriminatorAudioEncoder(nn.Module):
    """Audio stream: (B, 1, 80, 27) mel -> (B, 512) embedding (not normalised)."""

    def __init__(self, config: LipGANDiscriminatorConfig):
        super().__init__()
        c = config
        blocks, cin = [], 1
        for cout, stride in zip(c.audio_channels, c.audio_strides):
            blocks.append(DiscriminatorConvBlock(cin, cout, 3, stride, "same", c.norm))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bottleneck = DiscriminatorConvBlock(cin, c.embedding_channels, AUDIO_BOTTLENECK_KERNEL, 1, "valid", c.norm)
        self.embedding = DiscriminatorConvBlock(
            c.embedding_channels, c.embedding_channels, c.audio_embedding_kernel, 1, "same", c.norm
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.blocks(mel)  # (B, 32, 80, 27) -> (B, 64, 27, 9) -> (B, 128, 9, 9) -> (B, 256, 3, 3)
        x = self.bottleneck(x)  # (B, 512, 1, 1)
        return self.embedding(x).flatten(1)  # (B, 512, 1, 1) -> (B, 512)


def keras_l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``K.l2_normalize(x, axis=1)``: x / sqrt(max(sum(x^2), 1e-12)) along dim 1."""
    return x * torch.rsqrt(x.square().sum(dim=1, keepdim=True).clamp_min(KERAS_L2_EPS))


class LipGANDiscriminator(nn.Module):
    """``forward(face (B,3,96,96), mel (B,1,80,27)) -> distance (B,)`` in [0, 2] between L2-normalised embeddings.

    Small distance = the face is real and in sync with the audio (label 0 of :func:`contrastive_loss`).
    """

    def __init__(self, config: LipGANDiscriminatorConfig = LipGANDiscriminatorConfig()):
        super().__init__()
        self.config = config
        self.face_encoder = DiscriminatorFaceEncoder(config)
        self.audio_encoder = DiscriminatorAudioEncoder(config)

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        check_input_shape("face", face, (3, self.config.face_size, self.config.face_size))
        check_input_shape("mel", mel, (1, self.config.mel_bins, self.config.mel_frames))
        face_embedding = keras_l2_normalize(self.face_encoder(face))  # (B, 512)
        audio_embedding = keras_l2_normalize(self.audio_encoder(mel))  # (B, 512)
        squared = (face_embedding - audio_embedding).square().sum(dim=1)  # (B,)
        return torch.sqrt(squared.clamp_min(DISTANCE_EPS))  # (B,)


def contrastive_loss(distance: torch.Tensor, label: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """LipGAN's contrastive loss: mean[(1 - y) d^2 + y max(0, margin - d)^2].

    ``label`` y = 0 for a real, in-sync (face, audio) pair; y = 1 for a generated face or off-sync audio.
    """
    label = label.to(distance.dtype)
    return ((1 - label) * distance.square() + label * (margin - distance).clamp_min(0).square()).mean()


DISCRIMINATOR_DEFAULT = LipGANDiscriminatorConfig()
# The count the paper reports (10,337,152): the audio stream's last conv 3x3 instead of 1x1. UNVERIFIED which
# layer the paper's port widened; only the total is published.
DISCRIMINATOR_PAPER_COUNT = LipGANDiscriminatorConfig(audio_embedding_kernel=3)
# LipGAN's own discriminator, with its keras_contrib InstanceNormalization (8,240,022 parameters).
DISCRIMINATOR_KERAS = LipGANDiscriminatorConfig(norm="keras_contrib")
DISCRIMINATOR_TINY = LipGANDiscriminatorConfig(
    face_channels=(8, 8, 16, 16, 16), audio_channels=(4, 4, 8, 8), embedding_channels=16
)


register(
    Architecture(
        name="lipgan",
        config_class=LipGANConfig,
        build_generator=LipGANGenerator,
        configs={"default": LIPGAN_DEFAULT, "tiny": LIPGAN_TINY, "basic": LIPGAN_BASIC},
        remap_official=None,
        description=(
            "LipGAN (Prajwal et al. 2019) as ported to PyTorch in 'All's Well That FID's Well?' (2025): "
            "fully_pythonic residual generator, 96x96 faces [reference, masked], 80x27 mel, BGR."
        ),
    )
)
