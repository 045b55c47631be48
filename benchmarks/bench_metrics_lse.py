"""Speed of LSE (generation/metrics/lse.py) and its MFCC front end against the reference computations. On demand:

    .venv/bin/python benchmarks/bench_metrics_lse.py [--frames 100] [--device cpu] [--configs tiny default]

Part 1, per SyncNet config (random weights): one clip of ``--frames`` frames through
* ``lse`` (the fast path: windows embedded once, the lip stream run over runs of frames, all 31 offsets in one
  broadcast) and
* ``lse_reference_loop`` (syncnet_python's SyncNetInstance.evaluate + calc_pdist, loop for loop),
printing both results (they must agree) and the speed ratio, end to end and for the offset search alone.
Part 2: MFCC of 10 s of audio, ``generation.metrics.mfcc.mfcc`` against ``python_speech_features.mfcc``.
Times are the best of three runs in the same process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.metrics import lse as lse_module  # noqa: E402
from generation.metrics.mfcc import mfcc  # noqa: E402
from generation.nets.syncnet import SYNCNET_V2_CONFIGS, SyncNetV2  # noqa: E402


def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def random_model(config_name: str, device: str) -> SyncNetV2:
    torch.manual_seed(0)
    model = SyncNetV2(SYNCNET_V2_CONFIGS[config_name])
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # running statistics that make eval-mode outputs depend on the input
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.to(device).eval()


def random_clip(n_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8)
    audio = np.clip(rng.normal(0, 4000, n_frames * 640), -32768, 32767).astype(np.int16)
    return crops, audio


def bench_lse(config_name: str, n_frames: int, device: str) -> None:
    model = random_model(config_name, device)
    crops, audio = random_clip(n_frames, model.config.crop_size)
    lse_module.lse(crops[:10], audio[:6400], model)  # warm-up
    fast_s, fast = best_of(lambda: lse_module.lse(crops, audio, model))
    loop_s, loop = best_of(lambda: lse_module.lse_reference_loop(crops, audio, model))
    print(f"[{config_name}] {n_frames} frames, {fast.n_windows} windows, crop {model.config.crop_size}, {device}")
    for label, seconds, r in (("fast:     ", fast_s, fast), ("reference:", loop_s, loop)):
        print(f"   {label} LSE-D {r.lse_d:.6f}  LSE-C {r.lse_c:.6f}  offset {r.offset_frames:+d}  {seconds:.3f} s")
    print(f"   max |mean_dists difference| {np.abs(fast.mean_dists - loop.mean_dists).max():.2e}; "
          f"end-to-end speed-up x{loop_s / fast_s:.2f}")

    video_emb, audio_emb = lse_module.embed_windows(crops, audio, model)
    search_s, _ = best_of(lambda: lse_module.offset_distances(video_emb, audio_emb, lse_module.VSHIFT), 5)
    loop_search_s, _ = best_of(lambda: lse_module._calc_pdist(video_emb, audio_emb, lse_module.VSHIFT), 5)
    print(f"   offset search alone: broadcast {search_s * 1e3:.2f} ms, calc_pdist loop {loop_search_s * 1e3:.2f} ms "
          f"(x{loop_search_s / search_s:.1f})")


def bench_mfcc(seconds: float = 10.0) -> None:
    try:
        import python_speech_features
    except ImportError:
        print("MFCC: python_speech_features is not installed (pip install python_speech_features==0.6); skipped")
        return
    rng = np.random.default_rng(0)
    audio = np.clip(rng.normal(0, 4000, int(seconds * 16000)), -32768, 32767).astype(np.int16)
    ours_s, ours = best_of(lambda: mfcc(audio, 16000))
    ref_s, ref = best_of(lambda: python_speech_features.mfcc(audio, 16000))
    print(f"MFCC of {seconds:g} s: ours {ours_s * 1e3:.1f} ms, python_speech_features {ref_s * 1e3:.1f} ms "
          f"(x{ref_s / ours_s:.2f}); max |difference| {np.abs(ours - ref).max():.2e} on values up to "
          f"{np.abs(ref).max():.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["tiny", "default"], choices=sorted(SYNCNET_V2_CONFIGS))
    args = parser.parse_args(argv)
    for name in args.configs:
        bench_lse(name, args.frames, args.device)
    bench_mfcc()


if __name__ == "__main__":
    main()
