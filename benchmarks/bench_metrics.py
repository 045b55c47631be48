"""Every objective-metric benchmark in one run (``make bench-metrics``): equal values and speed ratios against the
reference implementations, each printed by its own section.

1. PSNR + SSIM (Wang 2004) vs ``skimage.metrics`` frame by frame; per-clip face/mouth metrics, LMD and IFC
   (benchmarks/bench_metrics_image.py).
2. The stable Fréchet distance vs pytorch-fid's ``scipy.linalg.sqrtm`` formula; Inception feature throughput
   (benchmarks/bench_metrics_fid.py).
3. LSE: the one-pass offset search vs a per-offset loop like syncnet_python's ``evaluate``; MFCC vs
   python_speech_features (benchmarks/bench_metrics_lse.py).

Each section accepts its own options when run alone; here they run with their defaults, or with ``--quick``
(smaller inputs, for a first look).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_metrics_fid  # noqa: E402
import bench_metrics_image  # noqa: E402
import bench_metrics_lse  # noqa: E402

QUICK = {
    "image": ["--frames", "30", "--clip-frames", "25"],
    "fid": ["--samples", "500", "--repeats", "1", "--frames", "20"],
    "lse": ["--frames", "60", "--configs", "tiny"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    parser.add_argument("--only", choices=sorted(QUICK), action="append", help="run only these sections")
    args = parser.parse_args()
    sections = [("image", bench_metrics_image.main), ("fid", bench_metrics_fid.main), ("lse", bench_metrics_lse.main)]
    for name, run in sections:
        if args.only and name not in args.only:
            continue
        print(f"\n===== {name} =====", flush=True)
        started = time.perf_counter()
        run(QUICK[name] if args.quick else [])
        print(f"({name}: {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
