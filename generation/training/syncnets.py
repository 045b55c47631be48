"""The sync experts, trained before the generators that use them.

* ``syncnet_color`` — Wav2Lip's expert lip-sync discriminator (color_syncnet_train.py): 5 consecutive lower
  halves + the 16-frame mel window of their start, BCE on the cosine similarity of the two embeddings, in-sync
  pairs labelled 1 and off-sync pairs 0. Adam, lr 1e-4 (its default betas).
* ``avsyncnet`` — AVSyncNet of the stabilized-sync paper (seed 001 §3.4, appendix Eq. (B)): the same objective
  on 112x224 lower halves, Adam with betas (0.5, 0.999) (§3.5 "for all models").

Negatives: the official code draws the off-sync window anywhere in the clip; 000_41145e614d4b5485.txt shifts it
by ±α frames, α = 1..6, which makes the task harder near the true offset. syncmos uses the paper's ±α (the
dataset's ``shifted_faces``) and balances every batch: even rows in sync, odd rows shifted.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generation.nets import avsyncnet, wav2lip_syncnet
from generation.training import experts
from generation.training.dataset import WindowSpec
from generation.training.families import (Family, alternating_labels, channels_first_in_time, named_config, register,
                                          value)


class _SyncExpertFamily(Family):
    option_defaults = {"min_shift": 1, "max_shift": 6}
    kind = ""

    def build(self, config):
        raise NotImplementedError

    def face_input(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        faces = batch["faces"]  # (B, T, 3, S, S)
        labels = alternating_labels(faces.shape[0], faces.device)  # (B,)
        chosen = torch.where(labels.view(-1, 1, 1, 1, 1) > 0, faces, batch["shifted_faces"])
        audio_emb, video_emb = self.modules["syncnet"](batch["mel"], self.face_input(channels_first_in_time(chosen)))
        return audio_emb, video_emb, labels

    def losses(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        audio_emb, video_emb, labels = self.embed(batch)
        loss = self.loss(audio_emb, video_emb, labels)
        similarity = torch.nn.functional.cosine_similarity(audio_emb, video_emb)  # (B,)
        accuracy = ((similarity > 0.5).float() == labels).float().mean()
        return loss, {"sync_loss": value(loss), "sync_accuracy": value(accuracy)}

    def train_step(self, batch, step):
        loss, logs = self.losses(batch)
        optimizer = self.optimizers["syncnet"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return logs

    @torch.no_grad()
    def evaluate(self, batch):
        _, logs = self.losses(batch)
        return logs

    def export(self, output_dir: Path) -> list[Path]:
        syncnet = self.modules["syncnet"]
        return [experts.save_expert(output_dir / f"{self.kind}.pt", syncnet, kind=self.kind, config=syncnet.config)]


@register
class SyncNetColorFamily(_SyncExpertFamily):
    name = "syncnet_color"
    kind = "wav2lip_syncnet"
    description = "Wav2Lip's expert SyncNet_color (BCE on cosine similarity, ±α-frame negatives)"

    def __init__(self, config, device):
        super().__init__(config, device)
        model_config = named_config(wav2lip_syncnet.SYNCNET_COLOR_CONFIGS, wav2lip_syncnet.SyncNetColorConfig,
                              config.model_config)
        self.modules["syncnet"] = wav2lip_syncnet.build_syncnet_color(model_config).to(device)
        # color_syncnet_train.py: Adam([...], lr=hparams.syncnet_lr), torch's default betas
        self.optimizers["syncnet"] = self.adam(self.modules["syncnet"].parameters(), betas=(0.9, 0.999))

    def window_spec(self) -> WindowSpec:
        return WindowSpec(frames=self.modules["syncnet"].config.num_frames, mel_frames=16, sync_mel_frames=16,
                          min_shift=self.options["min_shift"], max_shift=self.options["max_shift"], color="BGR")

    def face_input(self, frames):
        return wav2lip_syncnet.sync_face_input(frames)  # (B, 3T, 48, 96)

    def loss(self, audio_emb, video_emb, labels):
        return wav2lip_syncnet.sync_loss(audio_emb, video_emb, labels)


@register
class AVSyncNetFamily(_SyncExpertFamily):
    name = "avsyncnet"
    kind = "avsyncnet"
    description = "AVSyncNet of the stabilized-sync paper (BCE on cosine similarity, ±α-frame negatives)"

    def __init__(self, config, device):
        super().__init__(config, device)
        model_config = named_config(avsyncnet.AVSYNCNET_CONFIGS, avsyncnet.AVSyncNetConfig, config.model_config)
        self.modules["syncnet"] = avsyncnet.build_avsyncnet(model_config).to(device)
        self.optimizers["syncnet"] = self.adam(self.modules["syncnet"].parameters(), betas=(0.5, 0.999))

    def window_spec(self) -> WindowSpec:
        c = self.modules["syncnet"].config
        return WindowSpec(frames=c.num_frames, mel_frames=c.mel_frames, sync_mel_frames=c.mel_frames,
                          min_shift=self.options["min_shift"], max_shift=self.options["max_shift"], color="BGR")

    def face_input(self, frames):
        c = self.modules["syncnet"].config
        return avsyncnet.avsync_face_input(frames, (c.face_height, c.face_width))  # (B, 3T, 112, 224)

    def loss(self, audio_emb, video_emb, labels):
        return avsyncnet.sync_loss(audio_emb, video_emb, labels)

