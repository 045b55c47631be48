"""Wav2Lip: the generator and its visual-quality discriminator.

Prajwal, Mukhopadhyay, Namboodiri, Jawahar, "A Lip Sync Expert Is All You Need for Speech to Lip Generation
In the Wild", ACM Multimedia 2020. Reference code: Rudrabha/Wav2Lip (master, 5c90fa9), files
``models/conv.py`` (the conv blocks) and ``models/wav2lip.py`` (``Wav2Lip``, ``Wav2Lip_disc_qual``); the
facts used here are written down in ``shared/research/metrics_models.md`` §2.1–2.3 and §2.9.

Faithful to the reference code
------------------------------
* Every layer, kernel, stride, padding, channel width and residual connection of ``Wav2Lip`` and
  ``Wav2Lip_disc_qual``, and the module nesting, so that the ``state_dict`` keys are the official ones:
  ``face_encoder_blocks.{b}.{j}.conv_block.{0|1}.*``, ``audio_encoder.{j}.conv_block.{0|1}.*``,
  ``face_decoder_blocks.{b}.{j}.conv_block.{0|1}.*``, ``output_block.0.conv_block.{0|1}.*``,
  ``output_block.1.{weight,bias}``; for the discriminator ``face_encoder_blocks.{b}.{j}.conv_block.0.*`` and
  ``binary_pred.0.*``.
* The ``Conv2d`` block is conv (with bias) -> BatchNorm -> (+ input if residual) -> ReLU: the residual is added
  *before* the ReLU.
* The forward accepts the inference shapes (B, 1, 80, 16) / (B, 6, 96, 96) and the training shapes
  (B, T, 1, 80, 16) / (B, 6, T, 96, 96); for the latter T is folded into the batch time-major (row t*B + b, as
  the reference ``torch.cat([x[:, t] for t ...], dim=0)`` does) and the output is unfolded to (B, 3, T, 96, 96).
* Input channels: [masked target (rows 48..95 zeroed), reference] in BGR order, values in [0, 1]; the output
  is a sigmoid, so in [0, 1], also BGR.
* Default PyTorch initialisation (the reference code does not initialise explicitly).

Not from the reference code (our choices)
-----------------------------------------
* The widths and residual counts come from a config dataclass so that a ``tiny`` variant with the same
  topology exists; kernel sizes and strides are tied to the 96x96 / 80x16 input geometry and are module
  constants, not config fields.
* The residual add is written out-of-place (``out + x``; the reference writes ``out += x``): same numbers.
* ``Wav2LipDiscQual.perceptual_forward`` builds its target on the input's device (the reference calls
  ``.cuda()``), and the discriminator also accepts 4-D (N, 3, 96, 96) batches (the reference always expects
  (B, 3, T, 96, 96)). The reference's unused ``label_noise`` attribute is left out (it holds no weights).

Official checkpoints
--------------------
``wav2lip.pth`` / ``wav2lip_gan.pth`` (and the older ``visual_quality_disc.pth``) are training checkpoints
``{"state_dict", "optimizer", "global_step", "global_epoch"}``; the loaders of the reference code take
``["state_dict"]`` and delete every occurrence of ``"module."`` in the keys (a DataParallel prefix). That the
released files really carry ``module.`` keys is **UNVERIFIED** (metrics_models.md §2.9); :func:`remap_official`
works either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generation.nets import MASKED_FIRST, Architecture, InputSpec, register

FACE_SIZE = 96  # the topology below reduces exactly 96x96 (faces) and 80x16 (mel) to 1x1
NUM_MELS = 80
MEL_FRAMES = 16

# Strides of the four downsampling stages of the audio encoder: 80x16 -> 80x16 -> 27x16 -> 9x6 -> 3x3.
AUDIO_STRIDES: tuple = (1, (3, 1), 3, (3, 2))


# ---------------------------------------------------------------------------------------------------------------
# Building blocks (models/conv.py). Attribute names are the reference's, so the state dict keys are too.
# ---------------------------------------------------------------------------------------------------------------


class Conv2dBlock(nn.Module):
    """``Conv2d`` of models/conv.py: conv (bias) -> BatchNorm2d -> (+ input if residual) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False):
        super().__init__()
        if residual and (cin != cout or stride not in (1, (1, 1))):
            raise ValueError("a residual block keeps its channels and size")
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),  # conv_block.0
            nn.BatchNorm2d(cout),  # conv_block.1
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x  # before the ReLU, as in the reference
        return self.act(out)


class NoNormConv2dBlock(nn.Module):
    """``nonorm_Conv2d`` of models/conv.py: conv (bias) -> LeakyReLU(0.01); no normalisation, no residual."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, negative_slope: float = 0.01):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))  # conv_block.0
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class Conv2dTransposeBlock(nn.Module):
    """``Conv2dTranspose`` of models/conv.py: transposed conv (bias) -> BatchNorm2d -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),  # conv_block.0
            nn.BatchNorm2d(cout),  # conv_block.1
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _residuals(channels: int, count: int) -> list[nn.Module]:
    return [Conv2dBlock(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def build_audio_encoder(channels: tuple, residuals: tuple) -> nn.Sequential:
    """The Wav2Lip audio encoder (also SyncNet_color's, which differs only in ``residuals``).

    (N, 1, 80, 16) -> stage 0 (stride 1) 80x16 -> stage 1 (3,1) 27x16 -> stage 2 (3) 9x6 -> stage 3 (3,2) 3x3
    -> conv k3 p0 -> 1x1 -> conv k1 -> (N, channels[4], 1, 1). One flat Sequential, so the keys are
    ``audio_encoder.{j}.*`` with j counting every block, as in the reference.
    """
    layers: list[nn.Module] = []
    cin = 1
    for width, stride, count in zip(channels[:4], AUDIO_STRIDES, residuals):
        layers.append(Conv2dBlock(cin, width, 3, stride, 1))
        layers += _residuals(width, count)
        cin = width
    layers.append(Conv2dBlock(cin, channels[4], 3, 1, 0))  # 3x3 -> 1x1
    layers.append(Conv2dBlock(channels[4], channels[4], 1, 1, 0))
    return nn.Sequential(*layers)


def fold_time(x: torch.Tensor, time_dim: int) -> torch.Tensor:
    """(B, ..., T at ``time_dim``, ...) -> (T*B, ...) time-major: row t*B + b, like ``cat([x[:, t] ...], 0)``."""
    x = x.movedim(time_dim, 0)  # (T, B, ...)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # (T*B, ...)


def unfold_time(x: torch.Tensor, batch: int, time_dim: int) -> torch.Tensor:
    """(T*B, ...) time-major -> (B, ..., T at ``time_dim``, ...), like ``stack(split(x, B), dim=time_dim)``."""
    x = x.reshape(-1, batch, *x.shape[1:])  # (T, B, ...)
    return x.movedim(0, time_dim)


# ---------------------------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wav2LipConfig:
    """Widths and residual counts of the Wav2Lip generator (defaults: the reference ``Wav2Lip``).

    face_encoder_channels: output channels of the 7 face-encoder blocks (96, 48, 24, 12, 6, 3, 1 px).
    face_encoder_residuals: residual 3x3 convs after the first conv of blocks 0..5 (block 6 is k3 p0 + k1).
    audio_encoder_channels: widths of the 4 audio stages (80x16, 27x16, 9x6, 3x3) and of the 1x1 embedding.
    audio_encoder_residuals: residual 3x3 convs in each of the 4 audio stages.
    face_decoder_channels: output channels of the 7 decoder blocks (1, 3, 6, 12, 24, 48, 96 px).
    face_decoder_residuals: residual 3x3 convs after the first (transposed) conv of each decoder block.
    output_hidden_channels: width of the 3x3 conv in front of the final 1x1 conv to 3 channels.
    """

    face_encoder_channels: tuple = (16, 32, 64, 128, 256, 512, 512)
    face_encoder_residuals: tuple = (0, 2, 3, 2, 2, 1)
    audio_encoder_channels: tuple = (32, 64, 128, 256, 512)
    audio_encoder_residuals: tuple = (2, 2, 2, 1)
    face_decoder_channels: tuple = (512, 512, 512, 384, 256, 128, 64)
    face_decoder_residuals: tuple = (0, 1, 2, 2, 2, 2, 2)
    output_hidden_channels: int = 32

    def __post_init__(self) -> None:
        lengths = {
            "face_encoder_channels": 7, "face_encoder_residuals": 6, "audio_encoder_channels": 5,
            "audio_encoder_residuals": 4, "face_decoder_channels": 7, "face_decoder_residuals": 7,
        }
        for name, length in lengths.items():
            if len(getattr(self, name)) != length:
                raise ValueError(f"Wav2LipConfig.{name} needs {length} entries, got {getattr(self, name)!r}")


WAV2LIP_DEFAULT = Wav2LipConfig()
WAV2LIP_TINY = Wav2LipConfig(
    face_encoder_channels=(4, 8, 8, 16, 16, 32, 32),
    audio_encoder_channels=(8, 8, 16, 16, 32),
    face_decoder_channels=(32, 32, 32, 16, 16, 8, 8),
    output_hidden_channels=8,
)


class Wav2Lip(nn.Module):
    """The Wav2Lip generator (models/wav2lip.py ``Wav2Lip``): a U-Net face encoder/decoder driven by audio.

    forward(mel (B, 1, 80, 16), faces (B, 6, 96, 96)) -> (B, 3, 96, 96), or with a time axis
    forward(mel (B, T, 1, 80, 16), faces (B, 6, T, 96, 96)) -> (B, 3, T, 96, 96).
    """

    input_spec = InputSpec(face_size=FACE_SIZE, mel_frames=MEL_FRAMES, face_order=MASKED_FIRST, color="BGR")

    def __init__(self, config: Wav2LipConfig = WAV2LIP_DEFAULT):
        super().__init__()
        self.config = config
        enc, dec = config.face_encoder_channels, config.face_decoder_channels

        # Face encoder: block 0 keeps 96x96, blocks 1..5 halve (48, 24, 12, 6, 3), block 6 goes 3x3 -> 1x1.
        blocks = [nn.Sequential(Conv2dBlock(6, enc[0], 7, 1, 3), *_residuals(enc[0], config.face_encoder_residuals[0]))]
        for b in range(1, 6):
            blocks.append(nn.Sequential(
                Conv2dBlock(enc[b - 1], enc[b], 3, 2, 1), *_residuals(enc[b], config.face_encoder_residuals[b])
            ))
        blocks.append(nn.Sequential(Conv2dBlock(enc[5], enc[6], 3, 1, 0), Conv2dBlock(enc[6], enc[6], 1, 1, 0)))
        self.face_encoder_blocks = nn.ModuleList(blocks)

        self.audio_encoder = build_audio_encoder(config.audio_encoder_channels, config.audio_encoder_residuals)

        # Face decoder: after block i its output is concatenated with encoder feature 6 - i, so block i + 1
        # takes dec[i] + enc[6 - i] channels. Block 0 is a 1x1 conv on the audio embedding, block 1 a
        # transposed conv 1x1 -> 3x3 (k3 s1 p0), blocks 2..6 transposed convs that double the size.
        residuals = config.face_decoder_residuals
        blocks = [nn.Sequential(Conv2dBlock(config.audio_encoder_channels[4], dec[0], 1, 1, 0),
                                *_residuals(dec[0], residuals[0]))]
        blocks.append(nn.Sequential(Conv2dTransposeBlock(dec[0] + enc[6], dec[1], 3, 1, 0),
                                    *_residuals(dec[1], residuals[1])))
        for i in range(2, 7):
            blocks.append(nn.Sequential(
                Conv2dTransposeBlock(dec[i - 1] + enc[7 - i], dec[i], 3, 2, 1, output_padding=1),
                *_residuals(dec[i], residuals[i]),
            ))
        self.face_decoder_blocks = nn.ModuleList(blocks)

        self.output_block = nn.Sequential(
            Conv2dBlock(dec[6] + enc[0], config.output_hidden_channels, 3, 1, 1),  # output_block.0
            nn.Conv2d(config.output_hidden_channels, 3, 1, 1, 0),  # output_block.1
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        batch = mel.shape[0]
        with_time = faces.dim() == 5
        if with_time:
            if mel.dim() != 5 or mel.shape[1] != faces.shape[2]:
                raise ValueError(f"with a time axis, mel must be (B, T, 1, 80, 16) and faces (B, 6, T, 96, 96); "
                                 f"got {tuple(mel.shape)} and {tuple(faces.shape)}")
            mel = fold_time(mel, 1)  # (B, T, 1, 80, 16) -> (T*B, 1, 80, 16)
            faces = fold_time(faces, 2)  # (B, 6, T, 96, 96) -> (T*B, 6, 96, 96)
        check_generator_inputs(mel, faces)

        audio_embedding = self.audio_encoder(mel)  # (N, 512, 1, 1)

        features = []  # (N, 16, 96, 96), (N, 32, 48, 48), ..., (N, 512, 3, 3), (N, 512, 1, 1)
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            features.append(x)

        x = audio_embedding
        for block in self.face_decoder_blocks:
            x = block(x)
            x = torch.cat((x, features.pop()), dim=1)  # (N, dec_i + enc_{6-i}, s, s)

        x = self.output_block(x)  # (N, 3, 96, 96) in [0, 1], BGR
        if with_time:
            x = unfold_time(x, batch, 2)  # (T*B, 3, 96, 96) -> (B, 3, T, 96, 96)
        return x


def check_generator_inputs(mel: torch.Tensor, faces: torch.Tensor) -> None:
    if mel.dim() != 4 or tuple(mel.shape[1:]) != (1, NUM_MELS, MEL_FRAMES):
        raise ValueError(f"mel must be (B, 1, {NUM_MELS}, {MEL_FRAMES}), got {tuple(mel.shape)}")
    if faces.dim() != 4 or tuple(faces.shape[1:]) != (6, FACE_SIZE, FACE_SIZE):
        raise ValueError(f"faces must be (B, 6, {FACE_SIZE}, {FACE_SIZE}), got {tuple(faces.shape)}")
    if mel.shape[0] != faces.shape[0]:
        raise ValueError(f"mel and faces have different batch sizes: {mel.shape[0]} and {faces.shape[0]}")


def build_wav2lip(config: Wav2LipConfig = WAV2LIP_DEFAULT) -> Wav2Lip:
    return Wav2Lip(config)


# ---------------------------------------------------------------------------------------------------------------
# Visual-quality discriminator
# ---------------------------------------------------------------------------------------------------------------

# (kernel, stride, padding) of the first conv of discriminator blocks 0..5; blocks 1..5 add a same-size conv with
# the same kernel. Lower half 48x96 -> 48x96 -> 48x48 -> 24 -> 12 -> 6 -> 3; block 6 is k3 p0 (1x1) + k1.
DISC_DOWNSAMPLING = ((7, 1, 3), (5, (1, 2), 2), (5, 2, 2), (5, 2, 2), (3, 2, 1), (3, 2, 1))


@dataclass(frozen=True)
class Wav2LipDiscQualConfig:
    """Widths of ``Wav2Lip_disc_qual`` (defaults: the reference).

    face_encoder_channels: output channels of the 7 blocks (48x96, 48x48, 24, 12, 6, 3, 1 px).
    negative_slope: of the LeakyReLU after every conv (``nonorm_Conv2d``).
    """

    face_encoder_channels: tuple = (32, 64, 128, 256, 512, 512, 512)
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        if len(self.face_encoder_channels) != 7:
            raise ValueError(f"face_encoder_channels needs 7 entries, got {self.face_encoder_channels!r}")


DISC_QUAL_DEFAULT = Wav2LipDiscQualConfig()
DISC_QUAL_TINY = Wav2LipDiscQualConfig(face_encoder_channels=(8, 8, 16, 16, 32, 32, 32))
DISC_QUAL_CONFIGS = {"default": DISC_QUAL_DEFAULT, "tiny": DISC_QUAL_TINY}


class Wav2LipDiscQual(nn.Module):
    """The visual-quality discriminator (models/wav2lip.py ``Wav2Lip_disc_qual``): P(real) of the lower face half.

    forward(faces (B, 3, T, 96, 96) or (N, 3, 96, 96), values in [0, 1]) -> (B*T or N, 1) probabilities; the
    time axis is folded time-major as in the generator. Only rows 48..95 (the lower half) are looked at.
    """

    def __init__(self, config: Wav2LipDiscQualConfig = DISC_QUAL_DEFAULT):
        super().__init__()
        self.config = config
        ch, slope = config.face_encoder_channels, config.negative_slope

        kernel, stride, padding = DISC_DOWNSAMPLING[0]
        blocks = [nn.Sequential(NoNormConv2dBlock(3, ch[0], kernel, stride, padding, slope))]
        for b in range(1, 6):
            kernel, stride, padding = DISC_DOWNSAMPLING[b]
            blocks.append(nn.Sequential(
                NoNormConv2dBlock(ch[b - 1], ch[b], kernel, stride, padding, slope),
                NoNormConv2dBlock(ch[b], ch[b], kernel, 1, padding, slope),
            ))
        blocks.append(nn.Sequential(
            NoNormConv2dBlock(ch[5], ch[6], 3, 1, 0, slope), NoNormConv2dBlock(ch[6], ch[6], 1, 1, 0, slope)
        ))
        self.face_encoder_blocks = nn.ModuleList(blocks)
        self.binary_pred = nn.Sequential(nn.Conv2d(ch[6], 1, 1, 1, 0), nn.Sigmoid())

    @staticmethod
    def lower_half(faces: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, H - H//2, W): rows H//2.. (``get_lower_half``)."""
        return faces[:, :, faces.shape[2] // 2:]

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() == 5:
            faces = fold_time(faces, 2)  # (B, 3, T, 96, 96) -> (T*B, 3, 96, 96)
        if faces.dim() != 4 or tuple(faces.shape[1:]) != (3, FACE_SIZE, FACE_SIZE):
            raise ValueError(f"faces must be (B, 3, T, 96, 96) or (N, 3, 96, 96), got {tuple(faces.shape)}")
        x = self.lower_half(faces)  # (N, 3, 48, 96)
        for block in self.face_encoder_blocks:
            x = block(x)  # ... -> (N, 512, 1, 1)
        return self.binary_pred(x).view(len(x), -1)  # (N, 1)

    def perceptual_forward(self, fake_faces: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial ("perceptual") loss: BCE of D(fake) against 1 (label "real")."""
        prediction = self(fake_faces)  # (N, 1)
        return F.binary_cross_entropy(prediction, torch.ones_like(prediction))


def build_disc_qual(config: Wav2LipDiscQualConfig = DISC_QUAL_DEFAULT) -> Wav2LipDiscQual:
    return Wav2LipDiscQual(config)


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------


def remap_official(checkpoint_or_state_dict: dict) -> dict:
    """The state dict of an official Wav2Lip-family checkpoint, in this module's key layout.

    Accepts the training container ``{"state_dict", "optimizer", "global_step", "global_epoch"}`` or a bare
    state dict, and deletes every occurrence of ``"module."`` from the keys, exactly as the reference loaders
    (inference.py ``load_model``, the training scripts' ``load_checkpoint``) do. The key names are otherwise
    already ours. Works for ``wav2lip.pth``, ``wav2lip_gan.pth``, ``visual_quality_disc.pth`` and
    ``lipsync_expert.pth`` alike.
    """
    state_dict = checkpoint_or_state_dict.get("state_dict", checkpoint_or_state_dict)
    if not isinstance(state_dict, dict):
        raise TypeError(f"expected a state dict, got {type(state_dict).__name__}")
    return {key.replace("module.", ""): value for key, value in state_dict.items()}


register(Architecture(
    name="wav2lip",
    config_class=Wav2LipConfig,
    build_generator=build_wav2lip,
    configs={"default": WAV2LIP_DEFAULT, "tiny": WAV2LIP_TINY},
    remap_official=remap_official,
    description="Wav2Lip generator (Prajwal et al., ACM MM 2020; Rudrabha/Wav2Lip models/wav2lip.py): "
                "96x96 BGR faces [masked, reference], 80x16 mel window. Loads wav2lip.pth and wav2lip_gan.pth.",
))
