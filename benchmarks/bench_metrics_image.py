"""Speed of the per-clip image metrics, against scikit-image run frame by frame in the same process. Run on demand:

    .venv/bin/python benchmarks/bench_metrics_image.py [--frames 100] [--size 256] [--threads N] [--device cpu]

Part 1: PSNR + SSIM (Wang 2004) of the whole frame on ``--frames`` RGB frames of ``--size`` px: our batched torch
implementation (:func:`generation.metrics.frame_quality.frame_quality`) vs ``skimage.metrics`` per frame; prints
the largest difference of the per-frame values and the speed ratio.
Part 2: one talking-face clip (the synthetic corpus' animated astronaut, two different mouth curves, so the mouths
differ): face detection, PSNR/SSIM on face + mouth crops, LMD and IFC, seconds per clip and per frame.

Timings are the best of three runs. torch uses ``--threads`` intra-op threads (default: torch's own choice); on a
machine shared with other work, fewer threads than cores is often faster, because every small torch op waits for
all its threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation import corpus  # noqa: E402
from generation.metrics import frame_quality, ifc, lmd, regions  # noqa: E402
from generation.metrics.base import ClipPair  # noqa: E402

SILENCE = np.zeros(16000, dtype=np.float32)


def best_of(function, repeats: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def test_frames(n_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Real image content: crops of skimage's astronaut sliding across the photo, and a noisy copy of them."""
    from skimage import data

    photo = data.astronaut()
    span = photo.shape[1] - size
    reference = np.stack([photo[:size, (3 * t) % span:(3 * t) % span + size] for t in range(n_frames)])
    rng = np.random.default_rng(0)
    generated = np.clip(np.rint(reference + rng.normal(0, 8, reference.shape)), 0, 255).astype(np.uint8)
    return generated, reference


def bench_psnr_ssim(n_frames: int, size: int, device: str) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    generated, reference = test_frames(n_frames, size)
    pair = ClipPair(generated, reference, SILENCE, 25.0)

    def ours():
        values = frame_quality.frame_quality(pair, ("psnr", "ssim"), device=device)
        return values["psnr"].frames, values["ssim"].frames

    def skimage():
        ssim = [structural_similarity(g, r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255, channel_axis=-1) for g, r in zip(generated, reference)]
        psnr = [peak_signal_noise_ratio(r, g, data_range=255) for g, r in zip(generated, reference)]
        return np.array(psnr), np.array(ssim)

    ours()  # warm-up
    t_ours, (psnr_ours, ssim_ours) = best_of(ours)
    t_ref, (psnr_ref, ssim_ref) = best_of(skimage)
    print(f"PSNR + SSIM, {n_frames} frames {size}x{size} RGB (whole frame)")
    print(f"  max |ours - skimage|: SSIM {np.abs(ssim_ours - ssim_ref).max():.2e}, "
          f"PSNR {np.abs(psnr_ours - psnr_ref).max():.2e} dB")
    print(f"  skimage per frame : {t_ref:7.3f} s  ({1000 * t_ref / n_frames:6.2f} ms/frame)")
    print(f"  ours, batched     : {t_ours:7.3f} s  ({1000 * t_ours / n_frames:6.2f} ms/frame)  "
          f"speed ratio {t_ref / t_ours:.2f}x")


def talking_clip(n_frames: int, size: int) -> ClipPair:
    t = np.arange(n_frames)
    reference = corpus.render_talking_face("astronaut", 0.5 + 0.5 * np.sin(t / 3.0) ** 2 * 0.8, np.ones(n_frames),
                                           size, seed=0)
    generated = corpus.render_talking_face("astronaut", 0.3 * np.abs(np.sin(t / 5.0)), np.ones(n_frames),
                                           size, seed=0)
    return ClipPair(generated, reference, SILENCE, 25.0)


def bench_clip_metrics(n_frames: int, size: int, device: str) -> None:
    pair = talking_clip(n_frames, size)
    t_detect, boxed = best_of(lambda: regions.with_face_boxes(pair), repeats=1)
    region_names = ("psnr_face", "ssim_face", "psnr_mouth", "ssim_mouth")
    frame_quality.frame_quality(boxed, region_names, device=device)  # warm-up
    timings = {
        "face boxes (dlib, pipeline protocol)": (t_detect, None),
        "PSNR+SSIM face+mouth crops": best_of(lambda: frame_quality.frame_quality(boxed, region_names, device=device)),
        "LMD (mouth, 128-px face units)": best_of(lambda: lmd.lmd(boxed)),
        "IFC (face crop)": best_of(lambda: ifc.ifc(boxed)),
        "IFC (whole frame)": best_of(lambda: ifc.ifc_full(boxed)),
    }
    print(f"\nOne talking-face clip, {n_frames} frames {size}x{size} (synthetic corpus, astronaut)")
    for name, (seconds, result) in timings.items():
        value = "" if result is None else (
            f"   value {result['ssim_mouth'].value:.4f} (SSIM mouth)" if isinstance(result, dict) else
            f"   value {result.value:.4f}")
        print(f"  {name:38s}: {seconds:7.3f} s/clip  ({1000 * seconds / n_frames:6.2f} ms/frame){value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--clip-frames", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device {args.device}\n")
    bench_psnr_ssim(args.frames, args.size, args.device)
    bench_clip_metrics(args.clip_frames, args.size, args.device)


if __name__ == "__main__":
    main()
