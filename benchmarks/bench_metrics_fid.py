"""Speed of FID: the Fréchet distance and the Inception features. Run on demand:

    .venv/bin/python benchmarks/bench_metrics_fid.py [--samples 500 3000] [--dim 2048] [--frames 100] [--device cpu]

Part 1: the Fréchet distance between two realistic 2048-d Gaussians (non-negative, correlated features, as pool3
features are; covariances from N samples per side, rank-deficient when N < 2048): syncmos' stable
``frechet_distance`` (pivoted Cholesky + symmetric eigenvalues) against pytorch-fid's algorithm
(``frechet_distance_reference``: scipy ``sqrtm``) in the same process: both values, their relative difference and
the speed ratio.
Part 2: pool3-feature throughput of the FID Inception (released layout, the golden tests' seeded random weights:
the speed does not depend on them) at batch 50 on 96x96 face crops, in frames per second; with
``PYTHONPATH=/tmp/fidoracle`` (see scripts/golden/make_fid_golden.py) also pytorch-fid's own network on the same
weights and frames, its features compared with ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "golden"))

from generation.metrics.fid import frechet_distance, frechet_distance_reference, inception_features  # noqa: E402
from generation.nets import inception_fid  # noqa: E402
from make_fid_golden import seeded_state_dict  # noqa: E402


def realistic_gaussians(dim: int, samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    sides = []
    for scale, shift in ((1.0, 0.3), (1.1, 0.35)):
        features = np.maximum(rng.standard_normal((samples, dim)) @ mixing * scale + shift, 0).astype(np.float32)
        sides += [features.mean(0, dtype=np.float64), np.cov(features, rowvar=False)]
    return sides


def best_time(function, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return value, best


def frechet_part(dim: int, samples: list[int], repeats: int) -> None:
    print(f"Fréchet distance, {dim}-d (best of {repeats} for ours, one reference run)")
    print(f"{'samples/side':>12s} {'ours':>18s} {'reference':>18s} {'rel. diff':>10s} {'ours s':>8s} "
          f"{'ref s':>8s} {'speed-up':>9s}")
    for n in samples:
        stats = realistic_gaussians(dim, n)
        ours, ours_s = best_time(lambda: frechet_distance(*stats), repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sqrtm's LinAlgWarning on rank-deficient products
            reference, reference_s = best_time(lambda: frechet_distance_reference(*stats), 1)
        print(f"{n:12d} {ours:18.10f} {reference:18.10f} {abs(ours - reference) / abs(reference):10.2e} "
              f"{ours_s:8.2f} {reference_s:8.2f} {reference_s / ours_s:8.1f}×")


def _pytorch_fid_network(state: dict):
    """pytorch-fid's InceptionV3([3]) with ``state`` instead of the download, or None without the oracle."""
    if importlib.util.find_spec("pytorch_fid") is None:
        return None
    library = torch.library.Library("torchvision", "DEF")  # torchvision's CUDA ops cannot load with CPU torch
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _pytorch_fid_network.library = library
    from pytorch_fid import inception

    inception.load_state_dict_from_url = lambda *args, **kwargs: dict(state)
    return inception.InceptionV3([3]).eval()


def features_part(n_frames: int, batch_size: int, size: int, device: str) -> None:
    model = inception_fid.build_inception_fid("default")
    model.load_state_dict(seeded_state_dict(inception_fid.official_layout()))  # features of a useful scale
    model = model.to(device).eval()
    frames = np.random.default_rng(0).integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8)
    inception_features(model, frames[:2], batch_size, device)  # warm-up
    oracle = _pytorch_fid_network(model.state_dict())
    if oracle is None:
        ours, ours_s = best_time(lambda: inception_features(model, frames, batch_size, device), 2)
        print(f"\nInception pool3 features, {n_frames} frames of {size}x{size} (resized to 299), batch {batch_size}, "
              f"{device}, {torch.get_num_threads()} threads: {n_frames / ours_s:.1f} frames/s")
        print("  (pytorch-fid not importable: no reference run; see scripts/golden/make_fid_golden.py)")
        return
    oracle = oracle.to(device)

    def run_oracle():
        outputs = []
        with torch.inference_mode():
            for start in range(0, n_frames, batch_size):
                batch = torch.from_numpy(frames[start:start + batch_size]).to(device)
                batch = batch.permute(0, 3, 1, 2).contiguous().float().div(255)  # as ToTensor
                outputs.append(oracle(batch)[0].flatten(1).double().cpu().numpy())
        return np.concatenate(outputs)

    ours_s = reference_s = float("inf")
    for _ in range(3):  # alternating, so that a busy moment of the machine does not favour one side
        ours, seconds = best_time(lambda: inception_features(model, frames, batch_size, device), 1)
        ours_s = min(ours_s, seconds)
        reference, seconds = best_time(run_oracle, 1)
        reference_s = min(reference_s, seconds)
    print(f"\nInception pool3 features, {n_frames} frames of {size}x{size} (resized to 299), batch {batch_size}, "
          f"{device}, {torch.get_num_threads()} threads: {n_frames / ours_s:.1f} frames/s")
    print(f"  pytorch-fid 0.3.0 on the same weights: {n_frames / reference_s:.1f} frames/s "
          f"(ours {reference_s / ours_s:.2f}× its speed); max |difference| of the features "
          f"{np.abs(ours - reference).max():.2e} (features up to {np.abs(reference).max():.2f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, nargs="+", default=[500, 3000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--size", type=int, default=96, help="side of the (square) input frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-frechet", action="store_true")
    parser.add_argument("--skip-features", action="store_true")
    args = parser.parse_args(argv)
    print(f"torch={torch.__version__} numpy={np.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    if not args.skip_frechet:
        frechet_part(args.dim, args.samples, args.repeats)
    if not args.skip_features:
        features_part(args.frames, args.batch_size, args.size, args.device)


if __name__ == "__main__":
    main()
