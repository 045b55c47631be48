"""The stabilized-synchronization model: silent-lip generator G_S, talking-face generator G_L, discriminator, losses.

Yaman, Eyiokur, Bärmann, Ekenel, Waibel, "Audio-driven Talking Face Generation with Stabilized Synchronization
Loss", ECCV 2024 (seed 001: §3.1 "Talking Face Generation", §3.2 "Silent-Lip Generator", §3.3 "Video
Generation", §3.4 "Learning Synchronization", §3.5 "Implementation Details"; seed 002: the appendix). The
authors released **no code and no weights**, so ``remap_official`` is None; every width below is ours.

What the paper states (faithful)
--------------------------------
* G_L is a U-Net (§3.3, Fig. 2a) with an audio encoder E_A, an **identity encoder** (silent identity reference)
  and a **pose encoder** (pose reference = the target with its lower half masked) of the same architecture.
* Both face encoders are consecutive **face-encoding (FE) blocks**: a strided conv followed by two non-strided
  convs, each with BatchNorm + ReLU, and a residual connection "summing the input and output of each block".
* The identity and pose embeddings are concatenated along depth and reduced by a **1×1 conv**, then concatenated
  with the audio embedding F_A = E_A(A) ∈ R^{1×1×512} and fed to the face generator.
* The face generator is consecutive **face-decoding (FD) blocks** (Fig. 2b): a transposed conv followed by two convs
  with BatchNorm + ReLU, with **skip connections** from the reciprocal layers of the face encoders.
* E_A is **pretrained and frozen**: the audio encoder of AVSyncNet (generation/nets/avsyncnet.py), trained first,
  then frozen and used to train G_S and G_L (§3.1, §3.5).
* "we use the same architecture for G_S and G_L" (§3.2). G_S is trained first, as a talking-face generator without
  any synchronization loss (§3.5: λ3 = λ4 = 0), then "incorporate[d] into the training of G_L without further
  finetuning"; "we then only pass silent audio to G_S, so that it modifies given identity references to have silent
  lips" (§3.2, Fig. 3a, App. C); the result goes to G_L's identity encoder (§3.3). Hence in the composed model G_S
  is frozen by default, like the audio encoder.
* Discriminator (§3.3 "GAN Loss"): a plain CNN binary classifier, "balanced ... with our face encoders", of
  consecutive strided convs with LeakyReLU and spectral normalisation.
* 96×96 faces, 5-frame sequences, a 16×80 mel window from 16 kHz audio with window 800 and hop 200 (§3.5).
* The losses L_ss (Eq. 3, 4) and L_at (Eq. 2) below, term for term.

What we chose where the paper is silent (UNVERIFIED)
----------------------------------------------------
* Widths and depth follow Wav2Lip's U-Net (the paper's input geometry, mel window and training recipe are
  Wav2Lip's): each face encoder is a 7×7 stem conv (16 channels, 96×96; gives the decoder a full-resolution skip)
  and six FE blocks to 32, 64, 128, 256, 512, 512 channels at 48, 24, 12, 6, 3, 1 px. The last FE block reduces
  3×3 to 1×1 (strided 3×3 conv without padding) and, its map being 1×1, uses 1×1 kernels for its two non-strided
  convs (3×3 kernels there would only add dead weights).
* The FE residual: the block's "input" of the sum is the strided conv's output (the first tensor in the block
  with the block's output shape), so ``out = ReLU(s + BN(conv(ReLU(BN(conv(s))))))`` with ``s`` the strided conv's
  output: a parameter-free identity shortcut; as in Wav2Lip/ResNet the sum comes before the last ReLU.
* Convs carry a bias and are followed by BatchNorm (Wav2Lip's ``Conv2d`` convention). The 1×1 fusion conv is
  conv → BN → ReLU, 1024 → 512.
* Decoder: six FD blocks to 512, 512, 384, 256, 128, 64 channels at 3, 6, 12, 24, 48, 96 px (the first a 3×3
  transposed conv 1 → 3 px, the others stride 2); no residual inside FD blocks (the paper names none). After
  each, the features of **both** encoders at that size are concatenated (identity, pose); at 96 px the two stem
  outputs. Output head as Wav2Lip's: 3×3 conv → BN → ReLU (32 ch), 1×1 conv to 3 channels, sigmoid → [0, 1].
* Discriminator: on the whole 96×96 face (the paper does not say "lower half"), six spectrally normalised strided
  3×3 convs with the widths of the FE blocks (32 ... 512, 96 → 1 px), LeakyReLU(0.2), and a spectrally normalised
  1×1 conv to one logit. It returns logits (use BCE-with-logits).
* G_S's pose input at inference: the **masked identity reference**, so G_S re-renders the reference itself with
  closed lips (§3.2: "we reconstruct the input face with closed, flat lips"; App. C: G_S preserves "texture, pose,
  eyes" of the image it silences). ``silent_pose_input = "masked_target"`` gives G_S the target's masked frame.
* Silent audio: the mel of digital silence under Wav2Lip's normalisation is **-4 everywhere**: |STFT| = 0, so
  20·log10(max(1e-5, 0)) - 20 = -120 dB, and clip(8·(-120 + 100)/100 - 4, -4, 4) = clip(-5.6) = -4. G_S is fed
  this constant window (``silent_mel_value``).
* The composed model takes the pipeline's colour order (BGR, Wav2Lip's cv2 pipeline, which the paper's
  LRS2/FAN preprocessing follows).

Parameter counts (the paper publishes none; arithmetic in tests/generation/nets/test_stabsync.py)
-------------------------------------------------------------------------------------------------
Default: G_L = G_S = 53,085,315 each (two face encoders 10,756,160 each, fusion 525,824, decoder 31,019,328, output
head 27,843); the composed inference model G_S + G_L + frozen audio encoder (1,700,758) = 107,871,388; the
discriminator 3,928,897. Tiny: G 222,483, composed model 497,951, discriminator 18,217.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from generation.nets import MASKED_FIRST, Architecture, InputSpec, mask_lower_half, register
from generation.nets.avsyncnet import AVSYNCNET_TINY, AudioEncoder, AudioEncoderConfig
from generation.nets.wav2lip import fold_time, unfold_time

# The mel of digital silence under Wav2Lip's normalisation (see the module docstring): every bin clips to -4.
SILENT_MEL_VALUE = -4.0
SILENT_POSE_INPUTS = ("masked_reference", "masked_target")


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StabSyncConfig:
    """One config builds G_S, G_L (same architecture), the discriminator and the frozen audio encoder.

    face_size: crop size S; the encoders halve it down to 3 px and then go to 1 px, so S = 3 * 2**(stages - 1).
    num_mels, mel_frames: the mel window (80 x 16).
    encoder_channels: stem output, then the output of each FE block (96, 48, 24, 12, 6, 3, 1 px for S = 96).
    stem_kernel: kernel of the stem conv (stride 1, same padding).
    fused_channels: output of the 1x1 conv that reduces the concatenated identity + pose embeddings.
    decoder_channels: output of each FD block (3, 6, 12, 24, 48, 96 px); one fewer than ``encoder_channels``.
    output_hidden_channels: width of the 3x3 conv of the output head.
    audio_widths, audio_blocks, se_reduction, audio_variant, audio_embedding_dim: the frozen audio encoder, i.e.
        AVSyncNet's ResNetSE34 (must equal the AVSyncNet config whose audio encoder is loaded; ``audio_config``).
    discriminator_channels: output of each strided conv of the discriminator (96 -> 1 px for S = 96).
    discriminator_negative_slope: LeakyReLU slope of the discriminator.
    silent_mel_value: the constant mel window fed to G_S (silence = -4).
    silent_pose_input: G_S's pose reference: "masked_reference" or "masked_target".
    """

    face_size: int = 96
    num_mels: int = 80
    mel_frames: int = 16
    encoder_channels: tuple = (16, 32, 64, 128, 256, 512, 512)
    stem_kernel: int = 7
    fused_channels: int = 512
    decoder_channels: tuple = (512, 512, 384, 256, 128, 64)
    output_hidden_channels: int = 32
    audio_widths: tuple = (16, 32, 64, 128)
    audio_blocks: tuple = (3, 4, 6, 3)
    se_reduction: int = 8
    audio_variant: str = "ResNetSE34"
    audio_embedding_dim: int = 512
    discriminator_channels: tuple = (32, 64, 128, 256, 512, 512)
    discriminator_negative_slope: float = 0.2
    silent_mel_value: float = SILENT_MEL_VALUE
    silent_pose_input: str = "masked_reference"

    def __post_init__(self) -> None:
        stages = len(self.encoder_channels) - 1  # FE blocks
        if stages < 2 or self.face_size != 3 * 2 ** (stages - 1):
            raise ValueError(f"face_size {self.face_size} does not reduce to 1 px with {stages} FE blocks "
                             f"(needs face_size = 3 * 2**{stages - 1})")
        if len(self.decoder_channels) != stages:
            raise ValueError(f"decoder_channels needs {stages} entries (one per FE block), got {self.decoder_channels}")
        if len(self.discriminator_channels) != stages:
            raise ValueError(f"discriminator_channels needs {stages} entries, got {self.discriminator_channels}")
        if self.silent_pose_input not in SILENT_POSE_INPUTS:
            raise ValueError(f"silent_pose_input must be one of {SILENT_POSE_INPUTS}, not {self.silent_pose_input!r}")
        self.audio_config  # validates the audio fields

    @property
    def audio_config(self) -> AudioEncoderConfig:
        """The config of the frozen audio encoder, equal to ``AVSyncNetConfig.audio_config`` of its AVSyncNet."""
        return AudioEncoderConfig(
            num_mels=self.num_mels, mel_frames=self.mel_frames, widths=tuple(self.audio_widths),
            blocks=tuple(self.audio_blocks), se_reduction=self.se_reduction, embedding_dim=self.audio_embedding_dim,
            variant=self.audio_variant,
        )


STABSYNC_DEFAULT = StabSyncConfig()
STABSYNC_TINY = StabSyncConfig(
    encoder_channels=(4, 8, 8, 16, 16, 32, 32),
    fused_channels=32,
    decoder_channels=(32, 32, 16, 16, 8, 8),
    output_hidden_channels=8,
    audio_widths=AVSYNCNET_TINY.audio_widths,
    audio_blocks=AVSYNCNET_TINY.audio_blocks,
    audio_embedding_dim=AVSYNCNET_TINY.embedding_dim,
    discriminator_channels=(8, 8, 16, 16, 32, 32),
)


# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------


class ConvBN(nn.Sequential):
    """conv (bias) -> BatchNorm2d, keys ``0.*`` (conv) and ``1.*`` (BN)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))


class ConvBNReLU(nn.Sequential):
    """conv (bias) -> BatchNorm2d -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout), nn.ReLU())


class FaceEncodingBlock(nn.Module):
    """FE block (§3.3): strided 3x3 conv, then two non-strided convs, BN + ReLU each, residual sum.

    (N, cin, H, W) -> (N, cout, H', W') with H' = (H + 2*padding - 3) // 2 + 1 (padding 1 halves, padding 0 takes
    3 px to 1 px). ``s = ReLU(BN(strided(x)))``; ``out = ReLU(s + BN(conv2(ReLU(BN(conv1(s))))))``.
    ``inner_kernel`` is 3, or 1 for the 1x1 bottleneck block.
    """

    def __init__(self, cin: int, cout: int, padding: int = 1, inner_kernel: int = 3):
        super().__init__()
        self.down = ConvBNReLU(cin, cout, 3, stride=2, padding=padding)
        self.conv1 = ConvBNReLU(cout, cout, inner_kernel, 1, inner_kernel // 2)
        self.conv2 = ConvBN(cout, cout, inner_kernel, 1, inner_kernel // 2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.down(x)  # (N, cout, H', W')
        return self.relu(s + self.conv2(self.conv1(s)))  # residual: block input (after the stride) + output


class FaceDecodingBlock(nn.Module):
    """FD block (§3.3, Fig. 2b): 3x3 transposed conv, then two 3x3 convs, BN + ReLU each.

    ``stride=1, padding=0, output_padding=0`` takes 1 px to 3 px; ``stride=2, padding=1, output_padding=1``
    doubles the size.
    """

    def __init__(self, cin: int, cout: int, stride: int = 2, padding: int = 1, output_padding: int = 1):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 3, stride, padding, output_padding), nn.BatchNorm2d(cout), nn.ReLU()
        )
        self.conv1 = ConvBNReLU(cout, cout, 3, 1, 1)
        self.conv2 = ConvBNReLU(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.up(x)))


class FaceEncoder(nn.Module):
    """Identity or pose encoder: stem conv + FE blocks. (N, 3, S, S) -> list of features, finest first.

    For S = 96: (N, 16, 96, 96), (N, 32, 48, 48), (N, 64, 24, 24), (N, 128, 12, 12), (N, 256, 6, 6),
    (N, 512, 3, 3), (N, 512, 1, 1).
    """

    def __init__(self, config: StabSyncConfig):
        super().__init__()
        ch = config.encoder_channels
        self.stem = ConvBNReLU(3, ch[0], config.stem_kernel, 1, config.stem_kernel // 2)
        blocks = [FaceEncodingBlock(ch[i - 1], ch[i]) for i in range(1, len(ch) - 1)]  # halve: S -> 3 px
        blocks.append(FaceEncodingBlock(ch[-2], ch[-1], padding=0, inner_kernel=1))  # 3 px -> 1 px
        self.blocks = nn.ModuleList(blocks)

    def forward(self, face: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(face)
        features = [x]
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


# ---------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------


class TalkingFaceGenerator(nn.Module):
    """G_L (and, as a separate instance with the same architecture, G_S), without its audio encoder.

    forward(audio_embedding F_A (B, 512, 1, 1), identity (B, 3, S, S), pose (B, 3, S, S)) -> (B, 3, S, S) in [0, 1].
    ``identity`` is the (silent) identity reference, ``pose`` the target with its lower half zeroed. The audio
    encoder is shared and frozen, so it lives in :class:`StabSyncModel`, not here.
    """

    def __init__(self, config: StabSyncConfig = STABSYNC_DEFAULT):
        super().__init__()
        self.config = config
        enc, dec = config.encoder_channels, config.decoder_channels
        self.identity_encoder = FaceEncoder(config)
        self.pose_encoder = FaceEncoder(config)
        self.fusion = ConvBNReLU(2 * enc[-1], config.fused_channels, 1)  # the 1x1 depth reduction

        # FD block i outputs decoder_channels[i] at the size of encoder level L - 1 - i (L = len(enc) - 1, the
        # 1x1 level), then both encoders' features of that level are concatenated: 2 * enc[L - 1 - i] channels.
        levels = len(enc) - 1
        blocks = [FaceDecodingBlock(config.fused_channels + config.audio_embedding_dim, dec[0], 1, 0, 0)]  # 1 -> 3
        for i in range(1, len(dec)):
            blocks.append(FaceDecodingBlock(dec[i - 1] + 2 * enc[levels - i], dec[i]))  # doubles the size
        self.decoder = nn.ModuleList(blocks)
        self.output_block = nn.Sequential(
            ConvBNReLU(dec[-1] + 2 * enc[0], config.output_hidden_channels, 3, 1, 1),
            nn.Conv2d(config.output_hidden_channels, 3, 1),
            nn.Sigmoid(),
        )

    def forward(self, audio_embedding: torch.Tensor, identity: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        c = self.config
        face_shape = (3, c.face_size, c.face_size)
        if tuple(identity.shape[1:]) != face_shape or tuple(pose.shape[1:]) != face_shape:
            raise ValueError(f"identity and pose must be (B, {face_shape[0]}, {face_shape[1]}, {face_shape[2]}), "
                             f"got {tuple(identity.shape)} and {tuple(pose.shape)}")
        if tuple(audio_embedding.shape[1:]) != (c.audio_embedding_dim, 1, 1):
            raise ValueError(f"audio_embedding must be (B, {c.audio_embedding_dim}, 1, 1), "
                             f"got {tuple(audio_embedding.shape)}")

        identity_features = self.identity_encoder(identity)  # finest first, last (B, 512, 1, 1)
        pose_features = self.pose_encoder(pose)
        x = torch.cat((identity_features.pop(), pose_features.pop()), dim=1)  # (B, 1024, 1, 1)
        x = self.fusion(x)  # (B, 512, 1, 1)
        x = torch.cat((x, audio_embedding), dim=1)  # (B, 512 + 512, 1, 1)
        for block in self.decoder:
            x = block(x)  # (B, dec_i, s, s)
            x = torch.cat((x, identity_features.pop(), pose_features.pop()), dim=1)  # (B, dec_i + 2 enc_l, s, s)
        return self.output_block(x)  # (B, 3, S, S) in [0, 1]


def silent_mel_window(batch: int, config: StabSyncConfig = STABSYNC_DEFAULT, *, device=None,
                      dtype=torch.float32) -> torch.Tensor:
    """The mel window of digital silence, (batch, 1, 80, 16), every value ``config.silent_mel_value`` (-4)."""
    return torch.full((batch, 1, config.num_mels, config.mel_frames), config.silent_mel_value,
                      device=device, dtype=dtype)


class StabSyncModel(nn.Module):
    """The inference model of the paper (§3.3): G_S makes a silent identity reference, G_L the talking face.

    forward(mel (B, 1, 80, 16), faces (B, 6, S, S) = [masked target, reference] in [0, 1], BGR) -> (B, 3, S, S):

    1. F_silent = E_A(silent mel window), F_A = E_A(mel), with the frozen audio encoder;
    2. silent identity = G_S(F_silent, identity=reference, pose=masked reference (or masked target));
    3. frame = G_L(F_A, identity=silent identity, pose=masked target).

    With a time axis, mel (B, T, 1, 80, 16) and faces (B, 6, T, S, S) give (B, 3, T, S, S) (T folded into the
    batch). The audio encoder is frozen: no parameter of it requires a gradient, and :meth:`train` keeps it in
    eval mode (its BatchNorm statistics never move). G_S is frozen the same way unless
    ``freeze_silent_generator=False``: the paper trains G_S on its own first (a :class:`TalkingFaceGenerator` with
    the audio encoder, λ3 = λ4 = 0) and uses it in G_L's training "without further finetuning"; so training this
    composed model trains G_L only.
    """

    def __init__(self, g_silent: TalkingFaceGenerator, g_talking: TalkingFaceGenerator, audio_encoder: AudioEncoder,
                 *, freeze_silent_generator: bool = True):
        super().__init__()
        if g_silent is g_talking:
            raise ValueError("G_S and G_L must be separate instances (same architecture, separate weights)")
        if g_silent.config != g_talking.config:
            raise ValueError("G_S and G_L must be built from the same config")
        if audio_encoder.config != g_talking.config.audio_config:
            raise ValueError(f"the audio encoder's config {audio_encoder.config} does not match the generators' "
                             f"{g_talking.config.audio_config}")
        self.config = g_talking.config
        self.input_spec = InputSpec(face_size=self.config.face_size, mel_frames=self.config.mel_frames,
                                    face_order=MASKED_FIRST, color="BGR")
        self.g_silent = g_silent
        self.g_talking = g_talking
        self.audio_encoder = audio_encoder
        self.freeze_silent_generator = freeze_silent_generator
        for frozen in self._frozen_modules():
            frozen.requires_grad_(False)
            frozen.eval()

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.audio_encoder, self.g_silent] if self.freeze_silent_generator else [self.audio_encoder]

    def train(self, mode: bool = True) -> StabSyncModel:
        super().train(mode)
        for frozen in self._frozen_modules():
            frozen.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """F_A = E_A(mel): (N, 1, 80, 16) -> (N, 512, 1, 1), with no graph (the encoder is frozen)."""
        with torch.no_grad():
            return self.audio_encoder(mel)

    def silent_identity(self, reference: torch.Tensor, masked_target: torch.Tensor) -> torch.Tensor:
        """G_S(silence): (N, 3, S, S) identity reference -> (N, 3, S, S) the same face with closed lips."""
        n = reference.shape[0]
        silent = silent_mel_window(1, self.config, device=reference.device, dtype=reference.dtype)  # (1, 1, 80, 16)
        silent_embedding = self.encode_audio(silent).expand(n, -1, -1, -1)  # (1, 512, 1, 1) -> (N, 512, 1, 1)
        pose = mask_lower_half(reference) if self.config.silent_pose_input == "masked_reference" else masked_target
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_silent_generator):
            return self.g_silent(silent_embedding, reference, pose)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        batch = mel.shape[0]
        with_time = faces.dim() == 5
        if with_time:
            if mel.dim() != 5 or mel.shape[1] != faces.shape[2]:
                raise ValueError(f"with a time axis, mel must be (B, T, 1, 80, 16) and faces (B, 6, T, S, S); "
                                 f"got {tuple(mel.shape)} and {tuple(faces.shape)}")
            mel = fold_time(mel, 1)  # (B, T, 1, 80, 16) -> (T*B, 1, 80, 16)
            faces = fold_time(faces, 2)  # (B, 6, T, S, S) -> (T*B, 6, S, S)
        self._check_inputs(mel, faces)

        masked_target, reference = faces[:, :3], faces[:, 3:]  # (N, 3, S, S) each, MASKED_FIRST
        silent_reference = self.silent_identity(reference, masked_target)  # (N, 3, S, S)
        frames = self.g_talking(self.encode_audio(mel), silent_reference, masked_target)  # (N, 3, S, S)
        if with_time:
            frames = unfold_time(frames, batch, 2)  # (T*B, 3, S, S) -> (B, 3, T, S, S)
        return frames

    def _check_inputs(self, mel: torch.Tensor, faces: torch.Tensor) -> None:
        c = self.config
        if mel.dim() != 4 or tuple(mel.shape[1:]) != (1, c.num_mels, c.mel_frames):
            raise ValueError(f"mel must be (B, 1, {c.num_mels}, {c.mel_frames}), got {tuple(mel.shape)}")
        if faces.dim() != 4 or tuple(faces.shape[1:]) != (6, c.face_size, c.face_size):
            raise ValueError(f"faces must be (B, 6, {c.face_size}, {c.face_size}), got {tuple(faces.shape)}")
        if mel.shape[0] != faces.shape[0]:
            raise ValueError(f"mel and faces have different batch sizes: {mel.shape[0]} and {faces.shape[0]}")


def build_stabsync(config: StabSyncConfig = STABSYNC_DEFAULT) -> StabSyncModel:
    """G_S, G_L (two instances of one architecture) and the frozen audio encoder, composed for inference."""
    return StabSyncModel(
        g_silent=TalkingFaceGenerator(config),
        g_talking=TalkingFaceGenerator(config),
        audio_encoder=AudioEncoder(config.audio_config),
    )


# ---------------------------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------------------------


class StabSyncDiscriminator(nn.Module):
    """The GAN discriminator (§3.3 "GAN Loss"): spectrally normalised strided convs + LeakyReLU, one logit.

    forward(faces (N, 3, S, S) or (B, 3, T, S, S), values in [0, 1]) -> (N,) or (T*B,) logits (real > 0).
    For S = 96: 48, 24, 12, 6, 3 px (3x3 stride-2 convs, padding 1), then 1 px (padding 0), then a 1x1 conv.
    Every conv is wrapped in ``torch.nn.utils.parametrizations.spectral_norm`` (Miyato et al. 2018).
    """

    def __init__(self, config: StabSyncConfig = STABSYNC_DEFAULT):
        super().__init__()
        self.config = config
        ch, slope = config.discriminator_channels, config.discriminator_negative_slope
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(ch):
            padding = 0 if i == len(ch) - 1 else 1  # the last strided conv takes 3 px to 1 px
            layers += [spectral_norm(nn.Conv2d(cin, cout, 3, 2, padding)), nn.LeakyReLU(slope)]
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.classifier = spectral_norm(nn.Conv2d(cin, 1, 1))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() == 5:
            faces = fold_time(faces, 2)  # (B, 3, T, S, S) -> (T*B, 3, S, S)
        s = self.config.face_size
        if faces.dim() != 4 or tuple(faces.shape[1:]) != (3, s, s):
            raise ValueError(f"faces must be (N, 3, {s}, {s}) or (B, 3, T, {s}, {s}), got {tuple(faces.shape)}")
        return self.classifier(self.blocks(faces)).flatten()  # (N, 1, 1, 1) -> (N,)


# ---------------------------------------------------------------------------------------------------------------
# The paper's two losses
# ---------------------------------------------------------------------------------------------------------------


def stabilized_sync_loss(x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, eps: float = 1e-6,
                         reduction: str = "mean") -> torch.Tensor:
    r"""The stabilized synchronization loss L_ss, main paper Eq. (3)-(4):

        L_ss = -log( 1 - (|x - y| + ε) / (|x - y| + |y - d| + ε) )
        x = AVSIM(I', A),  y = AVSIM(I^GT, A),  d = AVSIM(I^R, A)

    "where I', I^GT, and I^R are generated, GT, and identity reference lips, respectively, while A is their
    corresponding audio"; AVSIM is AVSyncNet's cosine similarity (``AVSyncNet.similarity``). x, y, d: (B,).

    The loss is 0 when the generated lips score like the GT (x = y, ε = 0) and grows as |x - y| grows relative to
    |y - d|; the closer the identity reference's score d is to the GT's y, the larger the loss for the same |x - y|.
    When d = y the ratio is 1 and -log(0) = +∞ for any x; as ``torch.nn.BCELoss`` does (the paper computes the
    lip-sync loss with BCE), the log is clamped at -100, so that case gives 100 (with a finite gradient).
    The value of ε is not given in the paper (UNVERIFIED: 1e-6); with ε = 0, x = y = d is 0/0.
    """
    dxy = (x - y).abs()
    ratio = (dxy + eps) / (dxy + (y - d).abs() + eps)  # in (0, 1]
    p = 1.0 - ratio  # the "sync probability" inside the log
    return F.binary_cross_entropy(p, torch.ones_like(p), reduction=reduction)  # -log(p), log clamped at -100


def adaptive_triplet_loss(generated: torch.Tensor, target: torch.Tensor, reference: torch.Tensor, alpha: float = 1.0,
                          eps: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    r"""The adaptive triplet loss L_at, main paper Eq. (2):

        L_at = [ D(VGG(I'), VGG(I^GT)) - D(VGG(I'), VGG(I^R)) / D(VGG(I^GT), VGG(I^R)) + α ]_+

    "where [·]_+ = max(·, ε), D represents the L2 distance, and we empirically choose α = 1". Arguments are the
    VGG features of the generated image I', the target I^GT and the identity reference I^R, (B, ...) each (which
    VGG layers is not stated; pass any, flattened per sample). D is the Euclidean norm of the difference per
    sample (not squared).

    Degenerate case: when I^R equals I^GT in feature space the denominator is 0; the bracket's limit is -∞ (for
    D(I', I^R) > 0), so the loss is the floor ε, with zero gradient; we return that (also for the 0/0 case
    I' = I^GT = I^R). ε is not given in the paper (UNVERIFIED: 1e-6).
    """
    distance = lambda a, b: torch.linalg.vector_norm((a - b).flatten(1), dim=1)  # noqa: E731  (B,)
    d_generated_target = distance(generated, target)
    d_generated_reference = distance(generated, reference)
    d_target_reference = distance(target, reference)
    defined = d_target_reference > 0
    safe_denominator = torch.where(defined, d_target_reference, torch.ones_like(d_target_reference))
    bracket = d_generated_target - d_generated_reference / safe_denominator + alpha  # (B,)
    bracket = torch.where(defined, bracket, torch.full_like(bracket, float("-inf")))
    loss = bracket.clamp_min(eps)  # [·]_+ = max(·, ε)
    return _reduce(loss, reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


register(Architecture(
    name="stabsync",
    config_class=StabSyncConfig,
    build_generator=build_stabsync,
    configs={"default": STABSYNC_DEFAULT, "tiny": STABSYNC_TINY},
    remap_official=None,  # the authors released neither code nor weights
    description="Stabilized-synchronization model (Yaman et al., ECCV 2024): silent-lip generator G_S in front of "
                "the talking-face generator G_L (identity + pose encoders of residual FE blocks, FD decoder with "
                "skips), frozen AVSyncNet audio encoder (ResNetSE34). 96x96 BGR faces [masked, reference], 80x16 "
                "mel. No official checkpoint exists.",
))
