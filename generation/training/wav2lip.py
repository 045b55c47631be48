"""Wav2Lip's generator training (wav2lip_train.py / hq_wav2lip_train.py), with the frozen expert SyncNet.

loss = w·L_sync + d·L_disc + (1 − w − d)·L1, where
* L1 is the mean absolute error of the generated 5-frame window against the true frames;
* L_sync = BCE(cosine(SyncNet(mel, lower halves of the generated frames)), 1) with the frozen expert trained by
  the ``syncnet_color`` family (``expert_checkpoint``);
* L_disc = BCE(D(generated), 1) with the visual-quality discriminator, only with ``use_disc`` (hq_wav2lip_train;
  d = ``disc_weight`` = 0.07); D itself is trained on BCE(D(real), 1) + BCE(D(generated), 0).
* w is the official schedule: 0 until the sync loss on the validation batch falls below 0.75, then 0.01
  (wav2lip_train.py) or 0.03 (hq_wav2lip_train.py, with the discriminator). The switch is checked at every
  evaluation and is part of the resumable state.
Adam, lr 1e-4; betas (0.9, 0.999) for wav2lip_train.py, (0.5, 0.999) for the hq variant.

The generator input is Wav2Lip's: [target with the lower half zeroed, reference window] on channels, BGR.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from generation import nets, weights
from generation.nets import wav2lip as wav2lip_net
from generation.nets import wav2lip_syncnet
from generation.training import experts
from generation.nets import MASKED_FIRST
from generation.training.dataset import WindowSpec, generator_input
from generation.training.families import (Family, channels_first_in_time, image_quality,
                                          named_config, register, value)

SYNC_SWITCH_THRESHOLD = 0.75  # "if average_sync_loss < .75" in the official eval


class MaskedGeneratorFamily(Family):
    """Shared by the Wav2Lip-style families: a generator on [masked target, reference] windows and an expert."""

    architecture = ""

    def __init__(self, config, device):
        super().__init__(config, device)
        arch = nets.get_architecture(self.architecture)
        self.generator_config = named_config(arch.configs, arch.config_class, config.model_config)
        self.modules["generator"] = arch.build_generator(self.generator_config).to(device)
        self.expert = self.freeze("expert", experts.load_expert(self.options["expert_checkpoint"],
                                                                kind="wav2lip_syncnet"))

    def window_spec(self) -> WindowSpec:
        spec = self.modules["generator"].input_spec
        return WindowSpec(face_size=spec.face_size, frames=self.expert.config.num_frames, mel_frames=spec.mel_frames,
                          sync_mel_frames=16, frame_mel_offset=self.options["frame_mel_offset"], color=spec.color,
                          min_shift=self.options["min_shift"], max_shift=self.options["max_shift"])

    def generate(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated, true) windows, each (B, 3, T, S, S). Frames go through the generator one by one (folded
        into the batch), so any generator of the contract works, with or without a time axis of its own."""
        b, t = batch["faces"].shape[:2]
        target = batch["faces"].flatten(0, 1)  # (B*T, 3, S, S), row b*T + t
        faces = generator_input(batch["faces"], batch["reference"], MASKED_FIRST)  # (B*T, 6, S, S)
        generated = self.modules["generator"](batch["frame_mels"].flatten(0, 1), faces)  # mels (B*T, 1, 80, 16)
        unfold = lambda x: channels_first_in_time(x.view(b, t, *x.shape[1:]))  # noqa: E731  -> (B, 3, T, S, S)
        return unfold(generated), unfold(target)

    def sync_loss(self, generated: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """``get_sync_loss``: the expert's BCE(cosine, 1) on the generated window's lower halves."""
        audio_emb, video_emb = self.expert(mel, wav2lip_syncnet.sync_face_input(generated))
        return wav2lip_syncnet.sync_loss(audio_emb, video_emb, torch.ones(len(mel), device=mel.device))

    def export(self, output_dir: Path) -> list[Path]:
        path = output_dir / f"{self.architecture}.pt"
        generator = self.modules["generator"]
        return [weights.save_checkpoint(path, generator, architecture=self.architecture, config=self.generator_config)]


@register
class Wav2LipFamily(MaskedGeneratorFamily):
    name = "wav2lip"
    architecture = "wav2lip"
    description = "Wav2Lip generator: L1 + expert sync loss (+ visual-quality discriminator), official schedule"
    required_options = ("expert_checkpoint",)
    option_defaults = {
        "use_disc": False,
        "disc_weight": 0.07,
        "sync_weight_after_switch": None,  # None: 0.01 without the discriminator, 0.03 with it (official)
        "sync_weight": 0.0,  # the weight before the switch (official: 0)
        "frame_mel_offset": 0,  # 0: the window starts at the frame, as inference.py (and syncmos' pipeline) does
        "min_shift": 1,
        "max_shift": 6,
    }

    def __init__(self, config, device):
        super().__init__(config, device)
        use_disc = bool(self.options["use_disc"])
        betas = (0.5, 0.999) if use_disc else (0.9, 0.999)
        self.optimizers["generator"] = self.adam(self.modules["generator"].parameters(), betas)
        if use_disc:
            disc_config = wav2lip_net.DISC_QUAL_TINY if config.model_config == "tiny" else wav2lip_net.DISC_QUAL_DEFAULT
            self.modules["disc"] = wav2lip_net.build_disc_qual(disc_config).to(device)
            self.optimizers["disc"] = self.adam(self.modules["disc"].parameters(), betas)
        after = self.options["sync_weight_after_switch"]
        self.sync_weight_after = after if after is not None else (0.03 if use_disc else 0.01)
        self.sync_weight = float(self.options["sync_weight"])
        self.disc_weight = float(self.options["disc_weight"]) if use_disc else 0.0

    def state(self) -> dict:
        return {"sync_weight": self.sync_weight}

    def load_state(self, state: dict) -> None:
        self.sync_weight = state["sync_weight"]

    def train_step(self, batch, step):
        generated, target = self.generate(batch)
        l1 = F.l1_loss(generated, target)
        sync = self.sync_loss(generated, batch["mel"])
        loss = self.sync_weight * sync + (1 - self.sync_weight - self.disc_weight) * l1
        logs = {"l1": value(l1), "sync_loss": value(sync), "sync_weight": self.sync_weight}
        if "disc" in self.modules:
            disc = self.modules["disc"]
            adversarial = disc.perceptual_forward(generated)
            loss = loss + self.disc_weight * adversarial
            logs["adversarial"] = value(adversarial)
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logs["generator_loss"] = value(loss)

        if "disc" in self.modules:
            real = disc(target)  # (B*T, 1)
            fake = disc(generated.detach())
            disc_loss = (F.binary_cross_entropy(real, torch.ones_like(real))
                         + F.binary_cross_entropy(fake, torch.zeros_like(fake)))
            self.optimizers["disc"].zero_grad(set_to_none=True)
            disc_loss.backward()
            self.optimizers["disc"].step()
            logs["disc_loss"] = value(disc_loss)
        return logs

    @torch.no_grad()
    def evaluate(self, batch):
        generated, target = self.generate(batch)
        sync = value(self.sync_loss(generated, batch["mel"]))
        if sync < SYNC_SWITCH_THRESHOLD and self.sync_weight < self.sync_weight_after:
            self.sync_weight = self.sync_weight_after  # the official switch, once
        return {"l1": value(F.l1_loss(generated, target)), "sync_loss": sync, **image_quality(generated, target)}
