"""Training speed of every family, tiny and full size. Run on demand:

    .venv/bin/python benchmarks/bench_training.py [--device cuda] [--batch-size 4] [--steps 3] [--sizes tiny default]

Iterations per second of one training step (forward, losses, backward, optimizer) on random batches of the
family's own window shapes, with random-weight experts and random perceptual backbones. Each figure is also
given as a ratio to the tiny SyncNet_color measured first in the same process, so runs compare across machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyapp.settings")
os.environ.setdefault("DEBUG", "1")
django.setup()

from generation.nets import avsyncnet, stabsync, wav2lip_syncnet  # noqa: E402
from generation.training import experts  # noqa: E402
from generation.training.config import TrainConfig  # noqa: E402
from generation.training.families import get_family  # noqa: E402

FAMILIES = ["syncnet_color", "avsyncnet", "wav2lip", "attn_wav2lip", "lipgan", "l1wgan_gp", "stabsync_silent",
            "stabsync"]
SYNCNET_CONFIGS = {"tiny": wav2lip_syncnet.SYNCNET_COLOR_TINY, "default": wav2lip_syncnet.SYNCNET_COLOR_DEFAULT}
AVSYNC_CONFIGS = {"tiny": avsyncnet.AVSYNCNET_TINY, "default": avsyncnet.AVSYNCNET_DEFAULT}
STABSYNC_CONFIGS = {"tiny": stabsync.STABSYNC_TINY, "default": stabsync.STABSYNC_DEFAULT}


def expert_files(size: str, folder: Path) -> dict[str, str]:
    sync = wav2lip_syncnet.build_syncnet_color(SYNCNET_CONFIGS[size])
    av = avsyncnet.build_avsyncnet(AVSYNC_CONFIGS[size])
    silent = stabsync.TalkingFaceGenerator(STABSYNC_CONFIGS[size])
    return {
        "expert_checkpoint": str(experts.save_expert(folder / f"sync_{size}.pt", sync, kind="wav2lip_syncnet",
                                                     config=sync.config)),
        "avsyncnet_checkpoint": str(experts.save_expert(folder / f"av_{size}.pt", av, kind="avsyncnet",
                                                        config=av.config)),
        "silent_checkpoint": str(experts.save_expert(folder / f"gs_{size}.pt", silent,
                                                     kind="stabsync_silent_generator", config=silent.config)),
    }


def options_for(name: str, files: dict[str, str]) -> dict:
    needs = {"wav2lip": ["expert_checkpoint"], "attn_wav2lip": ["expert_checkpoint"],
             "stabsync_silent": ["avsyncnet_checkpoint"], "stabsync": ["avsyncnet_checkpoint", "silent_checkpoint"]}
    options = {k: files[k] for k in needs.get(name, [])}
    if name in ("attn_wav2lip", "stabsync_silent", "stabsync"):
        options["perceptual_backbone"] = "random"
    return options


def random_batch(spec, batch: int, device) -> dict[str, torch.Tensor]:
    t, s = spec.frames, spec.face_size
    faces = lambda: torch.rand(batch, t, 3, s, s, device=device)  # noqa: E731
    return {
        "faces": faces(), "reference": faces(), "shifted_faces": faces(),
        "mel": torch.rand(batch, 1, 80, spec.sync_mel_frames, device=device) * 8 - 4,
        "frame_mels": torch.rand(batch, t, 1, 80, spec.mel_frames, device=device) * 8 - 4,
        "shift": torch.ones(batch, dtype=torch.long, device=device),
    }


def iterations_per_second(name: str, size: str, files: dict, batch: int, steps: int, device) -> float:
    config = TrainConfig(family=name, data_root=".", output_dir=".", model_config=size, batch_size=batch,
                         options=options_for(name, files))
    torch.manual_seed(0)
    family = get_family(name)(config, device)
    data = random_batch(family.window_spec(), batch, device)
    family.train_mode()
    family.train_step(data, 0)  # warm-up
    best = float("inf")
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for step in range(1, steps + 1):
            family.train_step(data, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return steps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "default"])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} "
          f"windows (5 frames each, 1 for LipGAN/L1WGAN-GP)")
    with tempfile.TemporaryDirectory() as tmp:
        files = {size: expert_files(size, Path(tmp)) for size in args.sizes}
        reference = iterations_per_second("syncnet_color", "tiny", files.get("tiny") or expert_files("tiny", Path(tmp)),
                                          args.batch_size, args.steps, device)
        print(f"{'family':<18}{'size':<9}{'it/s':>9}{'x ref':>9}")
        for size in args.sizes:
            for name in args.families:
                rate = iterations_per_second(name, size, files[size], args.batch_size, args.steps, device)
                print(f"{name:<18}{size:<9}{rate:>9.2f}{rate / reference:>9.3f}", flush=True)
    print(f"(ref = syncnet_color tiny: {reference:.2f} it/s)")


if __name__ == "__main__":
    main()
