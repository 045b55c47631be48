"""SyncNet ``S`` (the network of LSE-D / LSE-C), trained with the contrastive loss of "Out of time".

Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV 2016 workshops: the audio and video
streams are trained jointly so that the Euclidean distance d between the two embeddings is small for genuine
(in-sync) pairs and large for false pairs made by shifting one stream in time, with the contrastive loss

    L = y · d² + (1 − y) · max(margin − d, 0)²,   y = 1 in sync, 0 shifted,

averaged over the batch. The released ``syncnet_v2.model`` (joonson/syncnet_python) was made later by the same
group; its training recipe (data, schedule, margin) is not published, so this family only reproduces the
objective, to give syncmos a tiny ``S`` (``model_config = "tiny"``) for tests and the CPU demo
(``configs/demo/syncnet_v2.toml`` -> ``demo/weights/syncnet_v2_tiny.pt``). Nobody should report LSE numbers
measured with it: they are not comparable with published LSE.

One sample (windows from :class:`generation.training.dataset.LipSyncDataset`: ``video_index``, ``start``): the
video window is the 5 crops of frames start .. start+4 (BGR float 0-255, as LSE feeds them); the genuine audio
window is the 13x20 MFCC block of the same frames (MFCC columns 4·start .. 4·start+19 of the clip's
``audio.wav`` on the int16 scale, :mod:`generation.metrics.mfcc`, exactly LSE's input); the false pairs are the
same video window with ``negatives`` audio windows of the same clip shifted by s frames, |s| uniform in
``min_shift`` .. ``max_shift`` among the shifts whose window lies inside the audio (the paper's false pairs are
shifted audio). This is LSE's offset search in miniature: the same video embedding against the audio around it.
Genuine and false pairs get equal total weight in every batch (L_in_sync and L_shifted averaged separately,
then averaged), as the other sync experts here balance their batches.

Our choices (UNVERIFIED against the paper, which does not give them)
--------------------------------------------------------------------
* ``margin`` 10 (on unnormalised embeddings, so it only sets the scale of the distances; the official model's
  in-sync LSE-D is typically ~6-8);
* shifts 1 .. 15 frames (LSE searches ±15), ``negatives`` = 4 per sample, drawn from
  ``numpy.random.default_rng([seed, iteration, 1])`` so that a resumed run draws the same ones (the validation
  batch uses a fixed stream);
* Adam with torch's default betas (the paper does not say which optimiser the released model used);
* ``crops = "source"`` (default): the face crops are cut from the clip's source video with LSE's own crop
  geometry (:func:`generation.metrics.lse.syncnet_crops`: run_pipeline.py's crop_video on the boxes recorded in
  the clip's ``meta.json``), so the net sees at training time exactly what it is scored on. ``crops =
  "dataset"`` uses the preprocessed face crops (``0.jpg`` …) instead, for data without a source video.
* The MFCC is extended with the MFCC of silence where a window at the very end of a clip needs one more column
  than the audio has (the mel windows the dataset checks end a fraction of a frame later than the MFCC ones).
* Before export, the BatchNorm running statistics are re-estimated over ``bn_batches`` training batches (train
  mode, no gradient, cumulative average instead of the momentum 0.1 average): LSE runs in eval mode, and with a
  demo learning rate the momentum averages lag behind the weights. Measured on the demo run (12 held-out clips of
  the seed-0 corpus): aligned audio got a higher LSE-C than audio 5 frames late on 12/12 clips with the
  re-estimated statistics, 6/12 with the momentum ones (offsets were found exactly either way).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generation import media, weights
from generation.metrics import lse as lse_metric
from generation.metrics.mfcc import mfcc as compute_mfcc
from generation.nets import syncnet
from generation.training.config import ConfigError
from generation.training.dataset import (AUDIO_FILE, META_FILE, DatasetError, LipSyncDataset, WindowSpec,
                                         load_audio, read_face_image)
from generation.training.families import Family, named_config, register, value

CROP_MODES = ("source", "dataset")
EXPORT_FILE = "syncnet_v2.pt"
_PLACEHOLDER_FACE_SIZE = 8  # the dataset's own face images are not used with crops = "source"
VALIDATION_NEGATIVES = 2**31 - 1  # rng stream of the validation batch's negatives (never an iteration number)
BN_STREAM = 2**31 - 2  # rng stream of the batches that re-estimate BatchNorm statistics before export


def contrastive_loss(distance: torch.Tensor, in_sync: torch.Tensor, margin: float) -> torch.Tensor:
    """Chung & Zisserman 2016's loss: mean of y·d² + (1 − y)·max(margin − d, 0)²; (N,), (N,) -> ()."""
    y = in_sync.to(distance.dtype)
    return (y * distance.square() + (1 - y) * F.relu(margin - distance).square()).mean()


def _resolve_source(source: str, root: Path) -> Path | None:
    """The source video a meta.json names (as written at preprocessing: absolute, or relative to the working
    directory then); also looked for next to the repository and in ``<root>/corpus``."""
    path = Path(source)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(__file__).resolve().parents[2] / path]
    candidates.append(root / "corpus" / path.name)
    return next((c for c in candidates if c.is_file()), None)


class ClipBank:
    """Every listed clip's crops (T, S, S, 3) uint8 RGB and MFCC (13, M) float32, indexed like the dataset."""

    def __init__(self, root: Path, list_file: Path, spec: WindowSpec, crop_size: int, crops: str):
        self.root = root
        self.names = LipSyncDataset(root, list_file, spec).videos  # the order ``video_index`` refers to
        self.crops: list[np.ndarray] = []
        self.mfccs: list[torch.Tensor] = []
        silence = compute_mfcc(np.zeros(400, dtype=np.int16))[0]  # (13,): log(eps) fbank, as a zero frame gives
        for name in self.names:
            folder = root / name
            self.crops.append(self._crops(folder, crop_size, crops))
            audio = lse_metric.to_int16_scale(load_audio(folder / AUDIO_FILE))
            cc = compute_mfcc(audio)  # (M, 13) float64
            needed = lse_metric.MFCC_PER_FRAME * len(self.crops[-1]) + lse_metric.MFCC_WINDOW
            if len(cc) < needed:
                cc = np.concatenate([cc, np.repeat(silence[None], needed - len(cc), axis=0)])
            self.mfccs.append(torch.from_numpy(cc.T.astype(np.float32)))  # (13, M')

    @staticmethod
    def _crops(folder: Path, crop_size: int, mode: str) -> np.ndarray:
        n_frames = 1 + max(int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit())
        if mode == "dataset":
            return np.stack([read_face_image(folder / f"{k}.jpg", crop_size, "RGB") for k in range(n_frames)])
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{folder}: crops = 'source' needs {META_FILE} (source video and boxes); "
                               f"use crops = 'dataset' for data without it")
        meta = json.loads(meta_path.read_text())
        source = _resolve_source(str(meta.get("source", "")), folder.parent.parent)
        if source is None:
            raise DatasetError(f"{folder}: the source video {meta.get('source')!r} named in {META_FILE} is not found")
        frames, _ = media.read_video(source)  # (T, H, W, 3) RGB
        boxes = np.asarray(meta["boxes"], dtype=np.float64)  # (T, 4)
        if len(frames) < n_frames or len(boxes) < n_frames:
            raise DatasetError(f"{folder}: {len(frames)} source frames and {len(boxes)} boxes for {n_frames} crops")
        return lse_metric.syncnet_crops(frames[:n_frames], boxes[:n_frames], crop_size)

    def video_windows(self, video_index: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B, 3, 5, S, S) float32 BGR 0-255: frames start .. start+4 of each clip."""
        windows = [self.crops[int(v)][int(s):int(s) + syncnet.NUM_FRAMES] for v, s in zip(video_index, start)]
        stacked = torch.from_numpy(np.ascontiguousarray(np.stack(windows)[..., ::-1]))  # (B, 5, S, S, 3) BGR
        return stacked.permute(0, 4, 1, 2, 3).float()  # (B, 3, 5, S, S)

    def audio_windows(self, video_index: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B, 1, 13, 20): MFCC columns 4·start .. 4·start+19 of each clip."""
        per_frame, width = lse_metric.MFCC_PER_FRAME, lse_metric.MFCC_WINDOW
        return torch.stack([self.mfccs[int(v)][:, per_frame * int(s):per_frame * int(s) + width]
                            for v, s in zip(video_index, start)])[:, None]


def valid_shifts(start: int, n_audio_frames: int, min_shift: int, max_shift: int) -> np.ndarray:
    """Signed shifts s, min_shift <= |s| <= max_shift, whose audio window (frames start+s .. start+s+4) lies
    inside ``n_audio_frames`` frames of audio."""
    magnitudes = np.arange(min_shift, max_shift + 1)
    shifts = np.concatenate([-magnitudes[::-1], magnitudes])
    first = start + shifts
    return shifts[(first >= 0) & (first + syncnet.NUM_FRAMES <= n_audio_frames)]


@register
class SyncNetV2Family(Family):
    name = "syncnet_v2"
    option_defaults = {"min_shift": 1, "max_shift": 15, "margin": 10.0, "negatives": 4, "crops": "source",
                       "bn_batches": 20}
    description = "SyncNet S of syncnet_python (LSE's network): contrastive loss on in-sync vs shifted audio"

    def __init__(self, config, device):
        super().__init__(config, device)
        if self.options["crops"] not in CROP_MODES:
            raise ConfigError(f"options.crops must be one of {CROP_MODES}, not {self.options['crops']!r}")
        if not float(self.options["margin"]) > 0:
            raise ConfigError(f"options.margin must be positive, got {self.options['margin']!r}")
        if not (isinstance(self.options["negatives"], int) and self.options["negatives"] >= 1):
            raise ConfigError(f"options.negatives must be a positive integer, got {self.options['negatives']!r}")
        model_config = named_config(syncnet.SYNCNET_V2_CONFIGS, syncnet.SyncNetV2Config, config.model_config)
        self.modules["syncnet"] = syncnet.build_syncnet_v2(model_config).to(device)
        self.optimizers["syncnet"] = self.adam(self.modules["syncnet"].parameters(), betas=(0.9, 0.999))
        root = Path(config.data_root)
        spec = self.window_spec()
        self.banks = {split: ClipBank(root, root / list_file, spec, model_config.crop_size, self.options["crops"])
                      for split, list_file in (("train", config.train_list), ("val", config.val_list))}

    def window_spec(self) -> WindowSpec:
        crop_size = self.modules["syncnet"].config.crop_size
        face_size = crop_size if self.options["crops"] == "dataset" else _PLACEHOLDER_FACE_SIZE
        return WindowSpec(face_size=face_size, frames=syncnet.NUM_FRAMES, mel_frames=16, sync_mel_frames=16,
                          min_shift=self.options["min_shift"], max_shift=self.options["max_shift"], color="BGR")

    def negative_starts(self, batch, bank: ClipBank, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(video_index (B·K,), audio start (B·K,)): K shifted audio windows per sample (module docstring)."""
        k = self.options["negatives"]
        indices, starts = [], []
        for v, s in zip(batch["video_index"].tolist(), batch["start"].tolist()):
            n_audio_frames = (bank.mfccs[v].shape[1] - lse_metric.MFCC_WINDOW) // lse_metric.MFCC_PER_FRAME + 5
            shifts = valid_shifts(s, min(n_audio_frames, len(bank.crops[v])), self.options["min_shift"],
                                  self.options["max_shift"])
            chosen = shifts[rng.integers(len(shifts), size=k)]  # never empty: the dataset drew s so that one fits
            indices += [v] * k
            starts += (s + chosen).tolist()
        return torch.tensor(indices), torch.tensor(starts)

    def distances(self, batch, bank: ClipBank, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances of the B genuine pairs (B,), of the B·K shifted pairs (B·K,)), Euclidean as LSE's."""
        model = self.modules["syncnet"]
        index, start = batch["video_index"].cpu(), batch["start"].cpu()
        negative_index, negative_start = self.negative_starts(batch, bank, rng)
        audio = torch.cat([bank.audio_windows(index, start), bank.audio_windows(negative_index, negative_start)])
        audio_emb = model.forward_aud(audio.to(self.device))  # (B + B·K, D)
        video_emb = model.forward_lip(bank.video_windows(index, start).to(self.device))  # (B, D)
        b, k = len(index), self.options["negatives"]
        genuine = F.pairwise_distance(video_emb, audio_emb[:b])  # (B,)
        shifted = F.pairwise_distance(video_emb.repeat_interleave(k, dim=0), audio_emb[b:])  # (B·K,), row b·K + j
        return genuine, shifted

    def losses(self, batch, bank: ClipBank, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        genuine, shifted = self.distances(batch, bank, rng)
        margin = float(self.options["margin"])
        in_sync_loss = contrastive_loss(genuine, torch.ones_like(genuine), margin)
        shifted_loss = contrastive_loss(shifted, torch.zeros_like(shifted), margin)
        loss = (in_sync_loss + shifted_loss) / 2
        nearest_shifted = shifted.view(len(genuine), -1).min(dim=1).values  # (B,)
        return loss, {"contrastive_loss": value(loss), "dist_in_sync": value(genuine.mean()),
                      "dist_shifted": value(shifted.mean()),
                      "pair_accuracy": value((genuine[:, None] < shifted.view(len(genuine), -1)).float().mean()),
                      "window_accuracy": value((genuine < nearest_shifted).float().mean())}

    def train_step(self, batch, step):
        rng = np.random.default_rng([self.config.seed, step, 1])
        loss, logs = self.losses(batch, self.banks["train"], rng)
        optimizer = self.optimizers["syncnet"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return logs

    @torch.no_grad()
    def evaluate(self, batch):
        rng = np.random.default_rng([self.config.seed, VALIDATION_NEGATIVES, 1])  # the same negatives every time
        return self.losses(batch, self.banks["val"], rng)[1]

    @torch.no_grad()
    def recalibrate_batchnorm(self) -> None:
        """Running statistics as the plain average over ``bn_batches`` training batches (module docstring)."""
        model = self.modules["syncnet"]
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        model.train()
        bank = self.banks["train"]
        rng = np.random.default_rng([self.config.seed, BN_STREAM, 0])
        for _ in range(int(self.options["bn_batches"])):
            v = rng.integers(len(bank.names), size=self.config.batch_size)
            start = np.array([rng.integers(len(bank.crops[i]) - syncnet.NUM_FRAMES + 1) for i in v])
            index, start = torch.from_numpy(v), torch.from_numpy(start)
            model.forward_aud(bank.audio_windows(index, start).to(self.device))
            model.forward_lip(bank.video_windows(index, start).to(self.device))
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()

    def export(self, output_dir: Path) -> list[Path]:
        if int(self.options["bn_batches"]) > 0:
            self.recalibrate_batchnorm()
        model = self.modules["syncnet"]
        return [weights.save_checkpoint(output_dir / EXPORT_FILE, model, architecture=syncnet.ARCHITECTURE_NAME,
                                        config=model.config)]
