"""LipGAN and L1WGAN-GP training, as 000_41145e614d4b5485.txt describes them (both on LipGAN's generator).

Both: single 96x96 frames, [reference, masked target] input, 80x27 mel windows, Adam lr 1e-4, betas (0.5, 0.9),
seed 10, and L1 reconstruction.

LipGAN (train.py of LipGAN's fully_pythonic branch, the paper's Figures 2-5)
    D sees (face, audio) pairs and outputs the distance of their embeddings; contrastive loss with y = 0 for a
    real, in-sync pair and y = 1 for a generated face (L_face) or a real face with unsynced audio (L_audio; the
    paper's shifted frames S' at ±α). Every iteration D trains on the real pair and on one of the two negatives,
    chosen by a coin flip; the other is only evaluated, and both are logged as the paper does. The two Keras
    ``train_on_batch`` calls become one step on their mean. G then trains on L1 + 0.01 · contrastive(D(G(x), A), 0).

L1WGAN-GP (the paper's Figures 6-9)
    The critic (LipGAN's discriminator without normalisation, unbounded audio-conditioned score) trains every
    iteration on E[C(fake)] − E[C(real)] + λ·R_GP, λ = 10, with the penalty at random interpolates of real and
    fake faces; the generator trains on every 5th iteration on −E[C(G(x), A)] + L_re, L_re the per-sample L1
    norm of Eq. (3).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from generation import nets, weights
from generation.nets import l1wgan_gp as wgan_net
from generation.nets import lipgan as lipgan_net
from generation.nets import REFERENCE_FIRST
from generation.training.dataset import WindowSpec, generator_input
from generation.training.families import Family, image_quality, named_config, register, value

DISCRIMINATOR_CONFIGS = {
    "default": lipgan_net.DISCRIMINATOR_DEFAULT,
    "paper_count": lipgan_net.DISCRIMINATOR_PAPER_COUNT,
    "keras": lipgan_net.DISCRIMINATOR_KERAS,
    "tiny": lipgan_net.DISCRIMINATOR_TINY,
}


class _LipGANGeneratorFamily(Family):
    architecture = "lipgan"
    option_defaults = {
        "discriminator_config": None,  # None: "tiny" with a tiny generator, else "default"
        "frame_mel_offset": 0,  # 0: batch_inference.py's (and syncmos' pipeline's) window start
        "min_shift": 1,
        "max_shift": 6,
    }

    def __init__(self, config, device):
        super().__init__(config, device)
        arch = nets.get_architecture(self.architecture)
        self.generator_config = named_config(arch.configs, arch.config_class, config.model_config)
        self.modules["generator"] = arch.build_generator(self.generator_config).to(device)
        name = self.options["discriminator_config"] or ("tiny" if config.model_config == "tiny" else "default")
        self.discriminator_config = named_config(DISCRIMINATOR_CONFIGS, lipgan_net.LipGANDiscriminatorConfig, name)

    def window_spec(self) -> WindowSpec:
        spec = self.modules["generator"].input_spec
        return WindowSpec(face_size=spec.face_size, frames=1, mel_frames=spec.mel_frames,
                          sync_mel_frames=spec.mel_frames, frame_mel_offset=self.options["frame_mel_offset"],
                          min_shift=self.options["min_shift"], max_shift=self.options["max_shift"], color=spec.color)

    def generate(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(generated, true, mel): (B, 3, S, S), (B, 3, S, S), (B, 1, 80, 27)."""
        target = batch["faces"][:, 0]  # (B, 3, S, S)
        reference = batch["reference"][:, 0]
        mel = batch["frame_mels"][:, 0]  # (B, 1, 80, 27)
        faces = generator_input(target, reference, REFERENCE_FIRST)  # (B, 6, S, S), reference first
        return self.modules["generator"](mel, faces), target, mel

    def step_generator(self, step: int) -> torch.Generator:
        """A torch RNG for this iteration alone, so that a resumed run draws the same numbers."""
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)

    def export(self, output_dir: Path) -> list[Path]:
        path = output_dir / f"{self.name}.pt"
        generator = self.modules["generator"]
        return [weights.save_checkpoint(path, generator, architecture=self.name, config=self.generator_config)]


@register
class LipGANFamily(_LipGANGeneratorFamily):
    name = "lipgan"
    description = "LipGAN: L1 + 0.01·contrastive loss of an audio-conditioned discriminator"

    def __init__(self, config, device):
        super().__init__(config, device)
        self.modules["discriminator"] = lipgan_net.LipGANDiscriminator(self.discriminator_config).to(device)
        betas = lipgan_net.ADAM_BETAS
        self.optimizers["generator"] = self.adam(self.modules["generator"].parameters(), betas)
        self.optimizers["discriminator"] = self.adam(self.modules["discriminator"].parameters(), betas)

    def train_step(self, batch, step):
        disc = self.modules["discriminator"]
        generated, target, mel = self.generate(batch)
        unsynced = batch["shifted_faces"][:, 0]  # a real face ±α frames away from the audio's frame
        real_loss = lipgan_net.contrastive_loss(disc(target, mel), torch.zeros(len(mel), device=mel.device))
        face_loss = lipgan_net.contrastive_loss(disc(generated.detach(), mel), torch.ones(len(mel), device=mel.device))
        audio_loss = lipgan_net.contrastive_loss(disc(unsynced, mel), torch.ones(len(mel), device=mel.device))
        train_on_face = bool(torch.rand((), generator=self.step_generator(step)) < 0.5)
        disc_loss = 0.5 * (real_loss + (face_loss if train_on_face else audio_loss))
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        disc_loss.backward()
        self.optimizers["discriminator"].step()

        l1 = F.l1_loss(generated, target)  # Keras 'mae'
        adversarial = lipgan_net.contrastive_loss(disc(generated, mel), torch.zeros(len(mel), device=mel.device))
        w_l1, w_adv = lipgan_net.GENERATOR_LOSS_WEIGHTS
        generator_loss = w_l1 * l1 + w_adv * adversarial
        self.optimizers["generator"].zero_grad(set_to_none=True)
        generator_loss.backward()
        self.optimizers["generator"].step()
        return {"generator_loss": value(generator_loss), "disc_loss": value(disc_loss), "l1": value(l1),
                "loss_real": value(real_loss), "loss_face": value(face_loss), "loss_audio": value(audio_loss)}

    @torch.no_grad()
    def evaluate(self, batch):
        disc = self.modules["discriminator"]
        generated, target, mel = self.generate(batch)
        zeros, ones = torch.zeros(len(mel), device=mel.device), torch.ones(len(mel), device=mel.device)
        return {
            "l1": value(F.l1_loss(generated, target)),
            "loss_face": value(lipgan_net.contrastive_loss(disc(generated, mel), ones)),
            "loss_audio": value(lipgan_net.contrastive_loss(disc(batch["shifted_faces"][:, 0], mel), ones)),
            "loss_real": value(lipgan_net.contrastive_loss(disc(target, mel), zeros)),
            **image_quality(generated, target),
        }


@register
class L1WGANGPFamily(_LipGANGeneratorFamily):
    name = "l1wgan_gp"
    architecture = "l1wgan_gp"
    description = "L1WGAN-GP: WGAN-GP critic every step (λ = 10), generator every 5th step with L1"
    option_defaults = {**_LipGANGeneratorFamily.option_defaults, "lambda_gp": wgan_net.LAMBDA_GP,
                       "generator_every": wgan_net.GENERATOR_EVERY, "reconstruction_weight": 1.0}

    def __init__(self, config, device):
        super().__init__(config, device)
        self.modules["critic"] = wgan_net.L1WGANGPCritic(self.discriminator_config).to(device)
        betas = wgan_net.ADAM_BETAS
        self.optimizers["generator"] = self.adam(self.modules["generator"].parameters(), betas)
        self.optimizers["critic"] = self.adam(self.modules["critic"].parameters(), betas)

    def train_step(self, batch, step):
        critic = self.modules["critic"]
        generated, target, mel = self.generate(batch)
        wasserstein = critic(generated.detach(), mel).mean() - critic(target, mel).mean()
        penalty = wgan_net.gradient_penalty(critic, target, generated, mel, self.options["lambda_gp"],
                                            generator=self.step_generator(step))
        critic_loss = wasserstein + penalty
        self.optimizers["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        self.optimizers["critic"].step()
        logs = {"critic_loss": value(critic_loss), "gradient_penalty": value(penalty),
                "wasserstein": value(wasserstein)}

        if (step + 1) % self.options["generator_every"] == 0:  # iterations 5, 10, ... (1-based)
            generator_loss = wgan_net.generator_loss(critic, generated, target, mel,
                                                     self.options["reconstruction_weight"])
            self.optimizers["generator"].zero_grad(set_to_none=True)
            generator_loss.backward()
            self.optimizers["generator"].step()
            logs["generator_loss"] = value(generator_loss)
        logs["l1"] = value(F.l1_loss(generated.detach(), target))
        return logs

    @torch.no_grad()
    def evaluate(self, batch):
        critic = self.modules["critic"]
        generated, target, mel = self.generate(batch)
        return {"l1": value(F.l1_loss(generated, target)),
                "wasserstein": value(critic(generated, mel).mean() - critic(target, mel).mean()),
                **image_quality(generated, target)}
