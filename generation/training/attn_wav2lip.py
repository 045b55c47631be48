"""LPIPS-AttnWav2Lip's training objective (seed 003, Eq. (4)):

    L = (1 − α − β)·L_recon + α·L_sync + β·L_LPIPS,   α = 0.03, β = 0.07 ("empirically set")

L_recon is Wav2Lip's L1, L_sync Wav2Lip's expert sync loss (the frozen ``syncnet_color`` expert), and L_LPIPS the
LPIPS distance (AlexNet backbone, v0.1 linear heads, as the paper's reference [26]) between generated and true
faces; LPIPS replaces Wav2Lip's visual-quality discriminator, so there is no adversarial term. The paper keeps
Wav2Lip's other settings (Adam, lr 1e-4). It does not say whether α is switched on late as in Wav2Lip; syncmos
uses the constant weights of Eq. (4) from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from generation.training import perceptual
from generation.training.families import image_quality, register, value
from generation.training.wav2lip import MaskedGeneratorFamily


@register
class AttnWav2LipFamily(MaskedGeneratorFamily):
    name = "attn_wav2lip"
    architecture = "attn_wav2lip"
    description = "LPIPS-AttnWav2Lip: (1-α-β)·L1 + α·L_sync + β·LPIPS"
    required_options = ("expert_checkpoint",)
    option_defaults = {
        "sync_weight": 0.03,  # α
        "lpips_weight": 0.07,  # β
        "lpips_net": "alex",
        "perceptual_backbone": "pretrained",  # "random": an untrained backbone, for offline demos only
        "frame_mel_offset": 0,
        "min_shift": 1,
        "max_shift": 6,
    }

    def __init__(self, config, device):
        super().__init__(config, device)
        alpha, beta = float(self.options["sync_weight"]), float(self.options["lpips_weight"])
        if alpha < 0 or beta < 0 or alpha + beta >= 1:
            from generation.training.config import ConfigError

            raise ConfigError(f"sync_weight α and lpips_weight β must be ≥ 0 with α + β < 1, got {alpha}, {beta}")
        self.alpha, self.beta = alpha, beta
        self.lpips = self.freeze("lpips", perceptual.lpips_network(
            self.options["lpips_net"], backbone=self.options["perceptual_backbone"]))
        self.optimizers["generator"] = self.adam(self.modules["generator"].parameters(), (0.9, 0.999))

    def lpips_loss(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bgr = self.modules["generator"].input_spec.color == "BGR"
        return perceptual.lpips_distance(self.lpips, generated, target, bgr=bgr).mean()

    def train_step(self, batch, step):
        generated, target = self.generate(batch)
        l1 = F.l1_loss(generated, target)
        sync = self.sync_loss(generated, batch["mel"])
        lpips = self.lpips_loss(generated, target)
        loss = (1 - self.alpha - self.beta) * l1 + self.alpha * sync + self.beta * lpips
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"generator_loss": value(loss), "l1": value(l1), "sync_loss": value(sync), "lpips": value(lpips)}

    @torch.no_grad()
    def evaluate(self, batch):
        generated, target = self.generate(batch)
        return {"l1": value(F.l1_loss(generated, target)), "sync_loss": value(self.sync_loss(generated, batch["mel"])),
                "lpips": value(self.lpips_loss(generated, target)), **image_quality(generated, target)}
