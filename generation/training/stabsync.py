"""The stabilized-sync model's two generator stages (seed 001 §3.3-3.5, Eq. (1)-(5)).

Training order, as the paper's: AVSyncNet (family ``avsyncnet``), then G_S (``stabsync_silent``), then G_L
(``stabsync``); the audio encoder E_A is AVSyncNet's, frozen in both generator stages.

Both generator stages minimise Eq. (5),

    L = L_GAN + λ1·L_pixel + λ2·L_per + λ3·L_ss + λ4·L_at,   (λ1, λ2, λ3, λ4) = (10, 1, 2, 0.5),

with λ3 = λ4 = 0 for G_S ("we set λ3 = λ4 = 0" — G_S learns no synchronization at all). L_pixel is the L1
distance, L_per Eq. (1) over five VGG-19 layers (relu1_1 ... relu5_1 with c_i = 1/32, 1/16, 1/8, 1/4, 1, the
weights of the pix2pixHD perceptual loss the paper cites — UNVERIFIED which [31] uses), L_GAN the non-saturating
BCE of the spectral-norm discriminator. For G_L, the identity reference is first silenced by the frozen G_S
(silent audio), L_ss (Eq. (3)) compares AVSyncNet similarities of generated (x), true (y) and silenced reference
(d) lips with the same audio, and L_at (Eq. (2)) compares VGG-19 features of generated, true and reference faces.
Adam, lr 1e-4, betas (0.5, 0.999) (§3.5).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from generation import weights
from generation.nets import avsyncnet as avsync_net
from generation.nets import stabsync as stabsync_net
from generation.training import experts, perceptual
from generation.training.config import ConfigError
from generation.training.dataset import WindowSpec
from generation.training.families import Family, image_quality, named_config, register, value

BETAS = (0.5, 0.999)
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class _StabSyncStage(Family):
    option_defaults = {
        "pixel_weight": 10.0,  # λ1
        "perceptual_weight": 1.0,  # λ2
        "perceptual_backbone": "pretrained",  # "random": an untrained VGG-19, for offline demos only
        "frame_mel_offset": 0,
        "min_shift": 1,
        "max_shift": 6,
    }

    def __init__(self, config, device):
        super().__init__(config, device)
        self.model_config = named_config({"default": stabsync_net.STABSYNC_DEFAULT, "tiny": stabsync_net.STABSYNC_TINY},
                                         stabsync_net.StabSyncConfig, config.model_config)
        syncnet = experts.load_expert(self.options["avsyncnet_checkpoint"], kind="avsyncnet")
        if syncnet.config.audio_config != self.model_config.audio_config:
            raise ConfigError(f"the AVSyncNet in {self.options['avsyncnet_checkpoint']} has another audio encoder "
                              f"({syncnet.config.audio_config}) than this model config needs "
                              f"({self.model_config.audio_config}); train AVSyncNet with the matching config")
        self.syncnet = self.freeze("avsyncnet", syncnet)
        self.vgg = None
        if self.uses_vgg():  # a recipe that weights both VGG terms 0 never pays for VGG-19
            self.vgg = self.freeze("vgg19", perceptual.vgg19_features(VGG_LAYERS,
                                                                      backbone=self.options["perceptual_backbone"]))
        self.modules["discriminator"] = stabsync_net.StabSyncDiscriminator(self.model_config).to(device)
        self.optimizers["discriminator"] = self.adam(self.modules["discriminator"].parameters(), BETAS)

    def uses_vgg(self) -> bool:
        return self.options["perceptual_weight"] > 0 or self.options.get("triplet_weight", 0) > 0

    def window_spec(self) -> WindowSpec:
        c = self.model_config
        return WindowSpec(face_size=c.face_size, frames=self.syncnet.config.num_frames, mel_frames=c.mel_frames,
                          sync_mel_frames=c.mel_frames, frame_mel_offset=self.options["frame_mel_offset"],
                          min_shift=self.options["min_shift"], max_shift=self.options["max_shift"], color="BGR")

    def vgg_features(self, faces: torch.Tensor) -> list[torch.Tensor]:
        return perceptual.vgg_taps(self.vgg, faces, VGG_LAYERS, bgr=True)

    def perceptual_loss(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. (1): Σ c_i ‖VGG_i(I') − VGG_i(I^GT)‖_1 (mean absolute difference per layer)."""
        if self.options["perceptual_weight"] == 0:
            return generated.new_zeros(())
        fake_features, true_features = self.vgg_features(generated), self.vgg_features(target)
        return sum(c * F.l1_loss(f, t.detach()) for c, f, t in zip(VGG_WEIGHTS, fake_features, true_features))

    def discriminator_step(self, generated: torch.Tensor, target: torch.Tensor) -> float:
        disc = self.modules["discriminator"]
        real, fake = disc(target), disc(generated.detach())  # logits (N,)
        loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["discriminator"].step()
        return value(loss)

    def adversarial_loss(self, generated: torch.Tensor) -> torch.Tensor:
        logits = self.modules["discriminator"](generated)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def frames(self, batch) -> dict[str, torch.Tensor]:
        """The batch's windows as single frames, batch-major (row b*T + t)."""
        return {
            "target": batch["faces"].flatten(0, 1),  # (B*T, 3, S, S)
            "reference": batch["reference"].flatten(0, 1),
            "audio": self.syncnet.audio_encoder(batch["frame_mels"].flatten(0, 1)),  # (B*T, 512, 1, 1), frozen
        }


@register
class SilentLipGeneratorFamily(_StabSyncStage):
    name = "stabsync_silent"
    description = "G_S: a talking-face generator without any sync loss (λ3 = λ4 = 0)"
    required_options = ("avsyncnet_checkpoint",)

    def __init__(self, config, device):
        super().__init__(config, device)
        self.modules["generator"] = stabsync_net.TalkingFaceGenerator(self.model_config).to(device)
        self.optimizers["generator"] = self.adam(self.modules["generator"].parameters(), BETAS)

    def generate(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.frames(batch)
        pose = stabsync_net.mask_lower_half(f["target"])
        return self.modules["generator"](f["audio"], f["reference"], pose), f["target"]

    def train_step(self, batch, step):
        generated, target = self.generate(batch)
        adversarial = self.adversarial_loss(generated)
        pixel = F.l1_loss(generated, target)
        per = self.perceptual_loss(generated, target)
        loss = adversarial + self.options["pixel_weight"] * pixel + self.options["perceptual_weight"] * per
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["generator"].step()
        disc_loss = self.discriminator_step(generated, target)
        return {"generator_loss": value(loss), "adversarial": value(adversarial), "pixel": value(pixel),
                "perceptual": value(per), "disc_loss": disc_loss}

    @torch.no_grad()
    def evaluate(self, batch):
        generated, target = self.generate(batch)
        return {"pixel": value(F.l1_loss(generated, target)), **image_quality(generated, target)}

    def export(self, output_dir: Path) -> list[Path]:
        generator = self.modules["generator"]
        return [experts.save_expert(output_dir / "stabsync_silent_generator.pt", generator,
                                    kind="stabsync_silent_generator", config=self.model_config)]


@register
class TalkingFaceGeneratorFamily(_StabSyncStage):
    name = "stabsync"
    description = "G_L: L_GAN + 10·L_pixel + 1·L_per + 2·L_ss + 0.5·L_at, silent references from the frozen G_S"
    required_options = ("avsyncnet_checkpoint", "silent_checkpoint")
    option_defaults = {**_StabSyncStage.option_defaults, "sync_weight": 2.0, "triplet_weight": 0.5,
                       "triplet_margin": 1.0}

    def __init__(self, config, device):
        super().__init__(config, device)
        g_silent = experts.load_expert(self.options["silent_checkpoint"], kind="stabsync_silent_generator")
        if g_silent.config != self.model_config:
            raise ConfigError(f"G_S in {self.options['silent_checkpoint']} was trained with another config than "
                              "this run's model_config")
        audio_encoder = avsync_net.AudioEncoder(self.model_config.audio_config)
        audio_encoder.load_state_dict(self.syncnet.audio_encoder.state_dict())
        self.model = stabsync_net.StabSyncModel(g_silent, stabsync_net.TalkingFaceGenerator(self.model_config),
                                                audio_encoder).to(device)
        self.frozen["g_silent"] = self.model.g_silent
        self.modules["generator"] = self.model.g_talking
        self.optimizers["generator"] = self.adam(self.model.g_talking.parameters(), BETAS)

    def generate(self, batch) -> dict[str, torch.Tensor]:
        f = self.frames(batch)
        pose = stabsync_net.mask_lower_half(f["target"])
        with torch.no_grad():
            silent_reference = self.model.silent_identity(f["reference"], pose)  # (B*T, 3, S, S), frozen G_S
        generated = self.model.g_talking(f["audio"], silent_reference, pose)
        return {"generated": generated, "target": f["target"], "silent_reference": silent_reference}

    def lip_similarity(self, frames: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """AVSIM of (B*T, 3, S, S) frames, batch-major, with the block's mel (B, 1, 80, 16): (B,)."""
        b = mel.shape[0]
        window = frames.view(b, -1, *frames.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
        c = self.syncnet.config
        return self.syncnet.similarity(mel, avsync_net.avsync_face_input(window, (c.face_height, c.face_width)))

    def sync_losses(self, out: dict, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.lip_similarity(out["generated"], mel)
        with torch.no_grad():
            y = self.lip_similarity(out["target"], mel)
            d = self.lip_similarity(out["silent_reference"], mel)
        l_ss = stabsync_net.stabilized_sync_loss(x, y, d)
        if self.options["triplet_weight"] == 0:
            return l_ss, x.new_zeros(())
        # L_at on each frame's VGG-19 features (all five layers, flattened and concatenated per frame)
        flat = lambda faces: torch.cat([t.flatten(1) for t in self.vgg_features(faces)], dim=1)  # noqa: E731
        with torch.no_grad():
            target_features, reference_features = flat(out["target"]), flat(out["silent_reference"])
        l_at = stabsync_net.adaptive_triplet_loss(flat(out["generated"]), target_features, reference_features,
                                                  alpha=self.options["triplet_margin"])
        return l_ss, l_at

    def train_step(self, batch, step):
        out = self.generate(batch)
        generated, target = out["generated"], out["target"]
        adversarial = self.adversarial_loss(generated)
        pixel = F.l1_loss(generated, target)
        per = self.perceptual_loss(generated, target)
        l_ss, l_at = self.sync_losses(out, batch["mel"])
        o = self.options
        loss = (adversarial + o["pixel_weight"] * pixel + o["perceptual_weight"] * per
                + o["sync_weight"] * l_ss + o["triplet_weight"] * l_at)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["generator"].step()
        disc_loss = self.discriminator_step(generated, target)
        return {"generator_loss": value(loss), "adversarial": value(adversarial), "pixel": value(pixel),
                "perceptual": value(per), "stabilized_sync": value(l_ss), "adaptive_triplet": value(l_at),
                "disc_loss": disc_loss}

    @torch.no_grad()
    def evaluate(self, batch):
        out = self.generate(batch)
        l_ss, l_at = self.sync_losses(out, batch["mel"])
        x = self.lip_similarity(out["generated"], batch["mel"]).mean()
        y = self.lip_similarity(out["target"], batch["mel"]).mean()
        return {"pixel": value(F.l1_loss(out["generated"], out["target"])), "stabilized_sync": value(l_ss),
                "adaptive_triplet": value(l_at), "avsim_generated": value(x), "avsim_true": value(y),
                **image_quality(out["generated"], out["target"])}

    def export(self, output_dir: Path) -> list[Path]:
        return [weights.save_checkpoint(output_dir / "stabsync.pt", self.model, architecture="stabsync",
                                        config=self.model_config)]
