"""LPIPS-AttnWav2Lip: a residual-CBAM U-Net generator with nine FFC + AdaIN semantic alignment modules.

Chen, Wang, Xie, Yuan, Pan, "LPIPS-AttnWav2Lip: Generic Audio-Driven lip synchronization for Talking Head
Generation in the Wild", Speech Communication 2023 (doi 10.1016/j.specom.2023.103028), seed
``003_df5479c5b8ed9a72.txt``. The official repository (FelixChan9527/LPIPS-AttnWav2Lip) could not be read and
its checkpoints are reported unavailable (``shared/research/metrics_models.md`` §4), so this module is built from
the paper's text alone; its figures 1-3 (framework, alignment module, FFC block) are not in the seed text either.
There is no official checkpoint, hence ``remap_official=None``.

What the paper states (and this module follows)
------------------------------------------------
* §3.1: a Wav2Lip-like generator of three parts: an audio encoder, a face encoder and a face decoder, all 2-D CNNs
  "with a residual structure"; encoder and decoder form a U-Net. Input: the target frame with its lower half
  masked, concatenated channel-wise with a reference frame (Wav2Lip's 6x96x96 input, masked first, BGR); output a
  96x96 face (§6). "Residual CBAM blocks between every two convolution layers of face encoder and decoder" (CBAM:
  Woo et al., ECCV 2018; the paper's ref [23]).
* §1, §5.2: the U-Net is *shallower* than Wav2Lip's: the face encoder stops at 6x6x256 (§4.3) instead of going
  down to a 1x1x512 vector.
* §4.3: "the audio clip passed through the audio encoder also obtains a feature map of the same size" (6x6x256).
  Parameter settings otherwise "in line with" Wav2Lip [13] and AttnWav2Lip [15]: Wav2Lip's 80x16 log-mel window
  (§3.1 says "after MFCC processing", read here as Wav2Lip's mel features, since the settings follow Wav2Lip).
* §3.2 + §4.3: the semantic alignment module is one FFC layer (Fast Fourier Convolution, Chi et al. 2020 [31], in
  the residual form of LaMa, Suvorov et al. 2022 [30]) followed by one AdaIN layer (Huang & Belongie 2017 [32]):
  "we substituted the second FFC layer in the two-layer FFC residual stacking structure with the AdaIN layer".
  Nine modules are cascaded: the first takes the face-encoder output, each next one the previous output, "the
  audio features are input nine times", and the last one's 6x6x256 output is the decoder's input.
* Eq. 2: AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), with y the audio features; "AdaIN aligns the mean
  and variance of the encoded video feature map with the encoded audio latent vector ... in the channel
  dimension". Our reading: audio enters the generator *only* through AdaIN, nine times (the paper describes no
  concatenation of audio and visual features, and presents the alignment module as its replacement).
* §3.3, Eq. 4: training loss (1 - a - b) L_recon + a L_sync + b L_LPIPS with a = 0.03, b = 0.07; LPIPS (AlexNet)
  *replaces* Wav2Lip's visual-quality discriminator, so this family has no visual discriminator. The sync expert
  is Wav2Lip's ``SyncNet_color`` (generation/nets/wav2lip_syncnet.py), not built here.

UNVERIFIED: where the paper is silent, the simplest faithful choice made here
------------------------------------------------------------------------------
1. Face-encoder stages: Wav2Lip's blocks 0-4 (16, 32, 64, 128, 256 channels at 96, 48, 24, 12, 6 px; residual
   counts 0, 2, 3, 2, 2), blocks 5-6 (3x3 and 1x1) dropped. Decoder stages: Wav2Lip's decoder blocks 3-6
   (transposed conv to 384, 256, 128, 64 channels at 12, 24, 48, 96 px, two residual blocks each, then concat with
   the encoder feature of the same size) and Wav2Lip's output block. The decoder's first stage takes the 256
   aligned channels alone: the aligned bottleneck is *not* concatenated with the raw 6x6 encoder feature (the
   paper says the last alignment output "serves as the input of the face decoder").
2. "Residual CBAM block": Wav2Lip's residual conv with CBAM inserted on the residual branch, as CBAM is integrated
   in a ResNet block (Woo et al., Fig. 3): ReLU(x + CBAM(BN(conv3x3(x)))). Every residual conv of the Wav2Lip
   stages kept in (1) becomes such a block. CBAM itself follows Woo et al.: channel attention = sigmoid(MLP(avg) +
   MLP(max)), shared 2-layer MLP (Linear with bias, reduction r = 16, hidden max(1, C // r)); then spatial attention
   = sigmoid(BN(conv7x7([mean_c; max_c]))) with a bias-free conv, as in the CBAM reference code.
3. Audio encoder: Wav2Lip's first three stages unchanged (80x16 -> 80x16 -> 27x16 -> 9x6 at 32, 64, 128 channels);
   its fourth stage's k3 s(3,2) conv (which gives 3x3) is replaced by a k(6,3) p1 s1 conv that gives the 6x6 the
   paper states, followed by Wav2Lip's one residual conv at 256; Wav2Lip's 1x1x512 layers are dropped. No CBAM in
   the audio encoder (the paper puts CBAM in the face encoder and decoder only).
4. FFC layer: LaMa's ``FFC_BN_ACT`` without the local Fourier unit (LFU), as LaMa's big-lama config and
   Video-ReTalking's LNet [29] use it (OpenTalker/video-retalking models/base_blocks.py and models/ffc.py @249ebff,
   read for this module; no code copied): 3x3 reflect-padded bias-free local convs (local->local, local->global,
   global->local), the spectral transform on global->global, BatchNorm + ReLU on each branch. The global share of
   the channels is ``ffc_global_ratio`` = 0.75 (LaMa's / Video-ReTalking's value; not stated in the paper). The
   spectral transform: 1x1 conv to half the channels + BN + ReLU, a Fourier unit (real 2-D FFT, "ortho" norm,
   real and imaginary parts stacked as channels, 1x1 conv, BN, ReLU, inverse FFT), the Fourier unit's input added
   back, 1x1 conv to the output channels.
5. Alignment-module residual: out = x + AdaIN(FFC(x), audio). The paper replaces the *second* layer of LaMa's
   residual block, so the block's identity shortcut is kept.
6. AdaIN source: ``adain_mode="audio_statistics"`` (default) is Eq. 2 literally: per-channel mean and standard
   deviation of the 256x6x6 audio feature map give the shift and scale (no parameters; this is why the paper needs
   the audio map to have the visual map's 256 channels). ``adain_mode="audio_mlp"`` is the variant of
   Video-ReTalking's ``ADAIN`` [29], whose "design principles" the paper says it incorporated: the flattened audio
   map -> Linear -> ReLU -> two Linear heads predict (gamma, beta), scale = 1 + gamma, shift = beta. Which one the
   authors' code uses is unknown. Both use the biased variance with eps = 1e-5 inside the square root.
7. One frame per call: the contract's (B, 1, 80, 16) / (B, 6, 96, 96). Training on T = 5 consecutive frames (for
   the sync loss) folds T into the batch outside this module.
8. The FFT runs in float32 with autocast off (cuFFT refuses half precision for sizes that are not powers of two,
   and 6x6 is not); the rest of the network follows the caller's autocast.

Parameters (exact): ``default`` 13,506,623 (face encoder 2,028,788; audio encoder 1,662,720; 9 alignment modules
2,995,776; face decoder 6,796,104; output block 23,235), against Wav2Lip's 36,298,035: the shallower U-Net drops
Wav2Lip's 3x3 and 1x1 stages. With ``adain_mode="audio_mlp"`` 24,719,039 (+1,245,824 per module). ``tiny``
63,688. The paper states no parameter count. PyTorch's default initialisation, as in Wav2Lip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from generation.nets import MASKED_FIRST, Architecture, InputSpec, register
from generation.nets.wav2lip import check_generator_inputs

FACE_SIZE = 96
NUM_MELS = 80
MEL_FRAMES = 16
BOTTLENECK_SIZE = 6  # 96 / 2**4: four stride-2 stages

# Audio encoder geometry (80x16 mel window): the first three stages are Wav2Lip's, 80x16 -> 80x16 -> 27x16 -> 9x6
# (k3 p1 convs with these strides); the fourth stage's conv, k(6,3) p1 s1, takes 9x6 to 6x6 (UNVERIFIED, see 3.).
AUDIO_STRIDES: tuple = (1, (3, 1), 3)
AUDIO_TO_BOTTLENECK_KERNEL = (6, 3)  # (9 + 2 - 6 + 1, 6 + 2 - 3 + 1) = (6, 6)

ADAIN_MODES = ("audio_statistics", "audio_mlp")


@dataclass(frozen=True)
class AttnWav2LipConfig:
    """Every width and count of the LPIPS-AttnWav2Lip generator (defaults: the design described in the docstring).

    face_encoder_channels: output channels of the 5 face-encoder stages (96, 48, 24, 12, 6 px); the last one is
        the bottleneck width (256 in §4.3).
    face_encoder_residuals: residual CBAM blocks after the first conv of each encoder stage.
    audio_encoder_channels: widths of the 4 audio stages (80x16, 27x16, 9x6, 6x6); the last must equal the
        bottleneck width (§4.3: the audio map has the visual map's size).
    audio_encoder_residuals: plain residual convs (Wav2Lip's) in each audio stage.
    face_decoder_channels: output channels of the 4 decoder stages (12, 24, 48, 96 px).
    face_decoder_residuals: residual CBAM blocks after the transposed conv of each decoder stage.
    output_hidden_channels: width of the 3x3 conv in front of the final 1x1 conv to 3 channels.
    cbam_reduction: CBAM channel-attention reduction ratio r (hidden width max(1, C // r)).
    cbam_spatial_kernel: kernel of CBAM's spatial-attention conv.
    num_alignment_modules: cascaded semantic alignment modules (9 in §4.3 and Table 2).
    ffc_global_ratio: share of the bottleneck channels in the FFC's global (spectral) branch.
    ffc_kernel_size: kernel of the FFC's local convs.
    adain_mode: "audio_statistics" (Eq. 2: mean/std of the audio map) or "audio_mlp" (Video-ReTalking's ADAIN).
    adain_mlp_hidden: hidden width of the "audio_mlp" head (128 in Video-ReTalking); unused otherwise.
    adain_eps: added to the variances before the square root.
    """

    face_encoder_channels: tuple = (16, 32, 64, 128, 256)
    face_encoder_residuals: tuple = (0, 2, 3, 2, 2)
    audio_encoder_channels: tuple = (32, 64, 128, 256)
    audio_encoder_residuals: tuple = (2, 2, 2, 1)
    face_decoder_channels: tuple = (384, 256, 128, 64)
    face_decoder_residuals: tuple = (2, 2, 2, 2)
    output_hidden_channels: int = 32
    cbam_reduction: int = 16
    cbam_spatial_kernel: int = 7
    num_alignment_modules: int = 9
    ffc_global_ratio: float = 0.75
    ffc_kernel_size: int = 3
    adain_mode: str = "audio_statistics"
    adain_mlp_hidden: int = 128
    adain_eps: float = 1e-5

    def __post_init__(self) -> None:
        lengths = {
            "face_encoder_channels": 5, "face_encoder_residuals": 5, "audio_encoder_channels": 4,
            "audio_encoder_residuals": 4, "face_decoder_channels": 4, "face_decoder_residuals": 4,
        }
        for name, length in lengths.items():
            if len(getattr(self, name)) != length:
                raise ValueError(f"AttnWav2LipConfig.{name} needs {length} entries, got {getattr(self, name)!r}")
        if self.audio_encoder_channels[-1] != self.face_encoder_channels[-1]:
            raise ValueError("the audio map and the visual bottleneck must have the same width (paper §4.3), got "
                             f"{self.audio_encoder_channels[-1]} and {self.face_encoder_channels[-1]}")
        if self.adain_mode not in ADAIN_MODES:
            raise ValueError(f"adain_mode must be one of {ADAIN_MODES}, not {self.adain_mode!r}")
        global_channels = int(self.bottleneck_channels * self.ffc_global_ratio)
        if not (1 <= self.bottleneck_channels - global_channels and global_channels >= 2):
            raise ValueError(f"ffc_global_ratio {self.ffc_global_ratio} leaves no local channels or fewer than 2 "
                             f"global channels out of {self.bottleneck_channels}")
        if self.num_alignment_modules < 1:
            raise ValueError("num_alignment_modules must be at least 1")

    @property
    def bottleneck_channels(self) -> int:
        return self.face_encoder_channels[-1]


ATTN_WAV2LIP_DEFAULT = AttnWav2LipConfig()
ATTN_WAV2LIP_TINY = AttnWav2LipConfig(
    face_encoder_channels=(4, 8, 8, 16, 16),
    audio_encoder_channels=(4, 8, 8, 16),
    face_decoder_channels=(16, 16, 8, 8),
    output_hidden_channels=8,
    adain_mlp_hidden=8,
)


# ---------------------------------------------------------------------------------------------------------------
# Convolution blocks.
# Same as generation.nets.wav2lip ``Conv2dBlock`` / ``Conv2dTransposeBlock`` (Wav2Lip models/conv.py); duplicated
# on purpose so that this architecture is one self-contained file (diffusers' single-file policy).
# ---------------------------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    """Wav2Lip's ``Conv2d``: conv (bias) -> BatchNorm2d -> (+ input if residual) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, residual: bool = False):
        super().__init__()
        if residual and (cin != cout or stride not in (1, (1, 1))):
            raise ValueError("a residual block keeps its channels and size")
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding)
        self.norm = nn.BatchNorm2d(cout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        if self.residual:
            out = out + x  # before the ReLU, as in Wav2Lip
        return torch.relu(out)


class ConvTransposeBNReLU(nn.Module):
    """Wav2Lip's ``Conv2dTranspose`` with k3 s2 p1 op1: doubles the size; transposed conv (bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


# ---------------------------------------------------------------------------------------------------------------
# CBAM (Woo, Park, Lee, Kweon, ECCV 2018) and the residual CBAM block
# ---------------------------------------------------------------------------------------------------------------


class ChannelAttention(nn.Module):
    """(B, C, H, W) -> channel attention map (B, C, 1, 1) in (0, 1): sigmoid(MLP(avgpool) + MLP(maxpool))."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))  # shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3)))  # (B, C)
        max_ = self.mlp(x.amax(dim=(2, 3)))  # (B, C)
        return torch.sigmoid(avg + max_)[:, :, None, None]  # (B, C, 1, 1)


class SpatialAttention(nn.Module):
    """(B, C, H, W) -> spatial attention map (B, 1, H, W) in (0, 1): sigmoid(BN(conv7x7([mean_c; max_c])))."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.norm(self.conv(pooled)))  # (B, 1, H, W)


class CBAM(nn.Module):
    """Channel attention, then spatial attention, each multiplied onto the features; shape unchanged."""

    def __init__(self, channels: int, reduction: int, spatial_kernel: int):
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction)
        self.spatial_attention = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_attention(x)  # (B, C, H, W) * (B, C, 1, 1)
        return x * self.spatial_attention(x)  # (B, C, H, W) * (B, 1, H, W)


class ResidualCBAMBlock(nn.Module):
    """ReLU(x + CBAM(BN(conv3x3(x)))): Wav2Lip's residual conv with CBAM on the residual branch (UNVERIFIED, 2.)."""

    def __init__(self, channels: int, reduction: int, spatial_kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)
        self.cbam = CBAM(channels, reduction, spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.cbam(self.norm(self.conv(x))))


# ---------------------------------------------------------------------------------------------------------------
# Semantic alignment module: FFC (Chi et al. 2020; LaMa's form) + AdaIN (Huang & Belongie 2017)
# ---------------------------------------------------------------------------------------------------------------


class FourierUnit(nn.Module):
    """A 1x1 conv in the frequency domain: rFFT2 -> [real; imag] as channels -> conv1x1 -> BN -> ReLU -> irFFT2.

    (B, C, H, W) -> (B, C_out, H, W). Every output pixel depends on every input pixel (global receptive field).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(2 * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # float32 and no autocast: cuFFT has no half precision for sizes that are not powers of two (6x6).
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1) complex
            stacked = torch.cat((spectrum.real, spectrum.imag), dim=1)  # (B, 2C, H, W//2+1)
            stacked = torch.relu(self.norm(self.conv(stacked)))  # (B, 2C_out, H, W//2+1)
            real, imag = stacked.chunk(2, dim=1)  # 2 x (B, C_out, H, W//2+1)
            out = torch.fft.irfft2(torch.complex(real, imag), s=(height, width), norm="ortho")  # (B, C_out, H, W)
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """FFC's global->global path (LaMa ``SpectralTransform``, no LFU, stride 1).

    (B, C_in, H, W) -> conv1x1 + BN + ReLU -> (B, C_out/2, H, W) -> (that + FourierUnit(that)) -> conv1x1 ->
    (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = out_channels // 2
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.fourier_unit = FourierUnit(hidden, hidden)
        self.expand = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)  # (B, C_out/2, H, W)
        return self.expand(x + self.fourier_unit(x))  # (B, C_out, H, W)


class FFC(nn.Module):
    """One FFC layer with BN and ReLU (LaMa ``FFC_BN_ACT``), channels unchanged, local channels first.

    x = [x_local (C_l); x_global (C_g)] with C_g = int(C * global_ratio):
      y_local  = ReLU(BN(conv_l2l(x_local) + conv_g2l(x_global)))
      y_global = ReLU(BN(conv_l2g(x_local) + SpectralTransform(x_global)))
    returns [y_local; y_global] (B, C, H, W).
    """

    def __init__(self, channels: int, global_ratio: float, kernel_size: int):
        super().__init__()
        self.global_channels = int(channels * global_ratio)
        self.local_channels = channels - self.global_channels
        local, global_ = self.local_channels, self.global_channels

        def local_conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False, padding_mode="reflect")

        self.local_to_local = local_conv(local, local)
        self.local_to_global = local_conv(local, global_)
        self.global_to_local = local_conv(global_, local)
        self.global_to_global = SpectralTransform(global_, global_)
        self.norm_local = nn.BatchNorm2d(local)
        self.norm_global = nn.BatchNorm2d(global_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_local, x_global = x.split((self.local_channels, self.global_channels), dim=1)  # (B, C_l, ..), (B, C_g, ..)
        y_local = self.local_to_local(x_local) + self.global_to_local(x_global)  # (B, C_l, H, W)
        y_global = self.local_to_global(x_local) + self.global_to_global(x_global)  # (B, C_g, H, W)
        y_local = torch.relu(self.norm_local(y_local))
        y_global = torch.relu(self.norm_global(y_global))
        return torch.cat((y_local, y_global), dim=1)  # (B, C, H, W)


class AdaIN(nn.Module):
    """AdaIN(x, audio) = scale * (x - mean(x)) / std(x) + shift, per sample and channel (paper Eq. 2).

    ``style_parameters(audio)`` gives (scale, shift), each (B, C, 1, 1):
      "audio_statistics": scale = std(audio), shift = mean(audio) over the audio map's 6x6 positions, per channel;
      "audio_mlp": h = ReLU(Linear(flatten(audio))), scale = 1 + Linear_gamma(h), shift = Linear_beta(h).
    The output's per-channel mean is ``shift`` and its per-channel std ``|scale|`` (up to eps), whatever x is.
    """

    def __init__(self, channels: int, audio_shape: tuple, mode: str, mlp_hidden: int, eps: float):
        super().__init__()
        self.mode = mode
        self.eps = eps
        if mode == "audio_mlp":
            audio_features = audio_shape[0] * audio_shape[1] * audio_shape[2]
            self.mlp_shared = nn.Sequential(nn.Linear(audio_features, mlp_hidden), nn.ReLU())
            self.mlp_gamma = nn.Linear(mlp_hidden, channels)
            self.mlp_beta = nn.Linear(mlp_hidden, channels)
        elif mode != "audio_statistics":
            raise ValueError(f"unknown AdaIN mode {mode!r}")

    def style_parameters(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "audio_statistics":
            shift = audio.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
            scale = torch.sqrt(audio.var(dim=(2, 3), unbiased=False, keepdim=True) + self.eps)  # (B, C, 1, 1)
            return scale, shift
        hidden = self.mlp_shared(audio.flatten(1))  # (B, C_a*6*6) -> (B, hidden)
        scale = 1 + self.mlp_gamma(hidden)[:, :, None, None]  # (B, C, 1, 1)
        shift = self.mlp_beta(hidden)[:, :, None, None]  # (B, C, 1, 1)
        return scale, shift

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        std = torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + self.eps)  # (B, C, 1, 1)
        scale, shift = self.style_parameters(audio)
        return scale * (x - mean) / std + shift  # (B, C, H, W)


class SemanticAlignmentModule(nn.Module):
    """x + AdaIN(FFC(x), audio): LaMa's two-FFC residual block with its second FFC replaced by AdaIN (§3.2).

    visual (B, 256, 6, 6), audio (B, 256, 6, 6) -> (B, 256, 6, 6). The identity shortcut is UNVERIFIED (5.).
    """

    def __init__(self, config: AttnWav2LipConfig):
        super().__init__()
        channels = config.bottleneck_channels
        self.ffc = FFC(channels, config.ffc_global_ratio, config.ffc_kernel_size)
        audio_shape = (config.audio_encoder_channels[-1], BOTTLENECK_SIZE, BOTTLENECK_SIZE)
        self.adain = AdaIN(channels, audio_shape, config.adain_mode, config.adain_mlp_hidden, config.adain_eps)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return visual + self.adain(self.ffc(visual), audio)


# ---------------------------------------------------------------------------------------------------------------
# Encoders and generator
# ---------------------------------------------------------------------------------------------------------------


def build_audio_encoder(channels: tuple, residuals: tuple) -> nn.Sequential:
    """(N, 1, 80, 16) -> (N, channels[3], 6, 6).

    Same as generation.nets.wav2lip ``build_audio_encoder`` for the first three stages (80x16 -> 80x16 -> 27x16 ->
    9x6); the fourth stage's conv is k(6,3) p1 s1 (9x6 -> 6x6) instead of Wav2Lip's k3 s(3,2) (-> 3x3), and
    Wav2Lip's 1x1x512 layers are dropped (UNVERIFIED, 3.). Duplicated on purpose (single-file architecture).
    """
    layers: list[nn.Module] = []
    cin = 1
    for width, stride, count in zip(channels[:3], AUDIO_STRIDES, residuals[:3]):
        layers.append(ConvBNReLU(cin, width, 3, stride, 1))
        layers += [ConvBNReLU(width, width, 3, 1, 1, residual=True) for _ in range(count)]
        cin = width
    layers.append(ConvBNReLU(cin, channels[3], AUDIO_TO_BOTTLENECK_KERNEL, 1, 1))  # 9x6 -> 6x6
    layers += [ConvBNReLU(channels[3], channels[3], 3, 1, 1, residual=True) for _ in range(residuals[3])]
    return nn.Sequential(*layers)


class AttnWav2Lip(nn.Module):
    """The LPIPS-AttnWav2Lip generator.

    forward(mel (B, 1, 80, 16), faces (B, 6, 96, 96) [masked target; reference], BGR, in [0, 1])
        -> (B, 3, 96, 96) BGR in [0, 1].
    Face encoder (residual CBAM) -> 256x6x6 -> 9 x SemanticAlignmentModule(., audio 256x6x6) -> face decoder
    (residual CBAM, U-Net skips from the encoder at 12, 24, 48, 96 px) -> output block -> sigmoid.
    """

    input_spec = InputSpec(face_size=FACE_SIZE, mel_frames=MEL_FRAMES, face_order=MASKED_FIRST, color="BGR")

    def __init__(self, config: AttnWav2LipConfig = ATTN_WAV2LIP_DEFAULT):
        super().__init__()
        self.config = config
        enc, dec = config.face_encoder_channels, config.face_decoder_channels

        def cbam_blocks(channels: int, count: int) -> list[nn.Module]:
            return [ResidualCBAMBlock(channels, config.cbam_reduction, config.cbam_spatial_kernel)
                    for _ in range(count)]

        # Face encoder: stage 0 keeps 96x96 (k7), stages 1..4 halve to 48, 24, 12, 6.
        stages = [nn.Sequential(ConvBNReLU(6, enc[0], 7, 1, 3), *cbam_blocks(enc[0], config.face_encoder_residuals[0]))]
        for s in range(1, 5):
            stages.append(nn.Sequential(
                ConvBNReLU(enc[s - 1], enc[s], 3, 2, 1), *cbam_blocks(enc[s], config.face_encoder_residuals[s])
            ))
        self.face_encoder = nn.ModuleList(stages)

        self.audio_encoder = build_audio_encoder(config.audio_encoder_channels, config.audio_encoder_residuals)

        self.alignment_modules = nn.ModuleList(
            [SemanticAlignmentModule(config) for _ in range(config.num_alignment_modules)]
        )

        # Face decoder: stage d doubles the size and is then concatenated with encoder stage 3 - d, so stage d + 1
        # takes dec[d] + enc[3 - d] channels; stage 0 takes the aligned bottleneck alone.
        stages = []
        cin = config.bottleneck_channels
        for d in range(4):
            stages.append(nn.Sequential(
                ConvTransposeBNReLU(cin, dec[d]), *cbam_blocks(dec[d], config.face_decoder_residuals[d])
            ))
            cin = dec[d] + enc[3 - d]
        self.face_decoder = nn.ModuleList(stages)

        self.output_block = nn.Sequential(
            ConvBNReLU(cin, config.output_hidden_channels, 3, 1, 1),
            nn.Conv2d(config.output_hidden_channels, 3, 1),
            nn.Sigmoid(),
        )

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 16) -> (B, 256, 6, 6)."""
        return self.audio_encoder(mel)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        check_generator_inputs(mel, faces)  # same 96x96 faces and 80x16 mel window as Wav2Lip
        audio = self.encode_audio(mel)  # (B, 256, 6, 6)

        skips = []  # (B, 16, 96, 96), (B, 32, 48, 48), (B, 64, 24, 24), (B, 128, 12, 12), (B, 256, 6, 6)
        x = faces
        for stage in self.face_encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck x itself goes through the alignment modules, not through a skip

        for module in self.alignment_modules:
            x = module(x, audio)  # (B, 256, 6, 6); the audio map enters every module

        for stage in self.face_decoder:
            x = stage(x)
            x = torch.cat((x, skips.pop()), dim=1)  # (B, dec_d + enc_{3-d}, 2s, 2s)

        return self.output_block(x)  # (B, 3, 96, 96) in [0, 1], BGR


def build_attn_wav2lip(config: AttnWav2LipConfig = ATTN_WAV2LIP_DEFAULT) -> AttnWav2Lip:
    return AttnWav2Lip(config)


register(Architecture(
    name="attn_wav2lip",
    config_class=AttnWav2LipConfig,
    build_generator=build_attn_wav2lip,
    configs={"default": ATTN_WAV2LIP_DEFAULT, "tiny": ATTN_WAV2LIP_TINY},
    remap_official=None,  # FelixChan9527/LPIPS-AttnWav2Lip: repository unreadable, checkpoints unavailable
    description="LPIPS-AttnWav2Lip generator (Chen et al., Speech Communication 2023): residual-CBAM U-Net, "
                "9 FFC+AdaIN semantic alignment modules on a 256x6x6 bottleneck, 96x96 BGR faces [masked, "
                "reference], 80x16 mel window. Built from the paper alone; no official checkpoint.",
))
