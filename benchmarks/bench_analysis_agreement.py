"""Speed of the agreement, screening and metric-validity statistics on a study of 100,000 ratings. Run on demand:

    .venv/bin/python benchmarks/bench_analysis_agreement.py [--n-boot 2000] [--reference auto|package|naive]

The synthetic study: 300 participants, 600 clips (10 conditions x 60 sources), 3 scales; every participant
rates 111 random clips on all three scales (99,900 ratings), 1-5 ACR votes from quality + rater bias + noise,
plus three metrics (one monotonic in quality, one lower-is-better, one unrelated).

Krippendorff's alpha is compared, value and time, with a reference computed in the same process: the
``krippendorff`` PyPI package when it can be imported (or installed with pip into a temporary --target
folder), else a straightforward loop over units and pairable values written here. The script prints the
largest absolute difference and the speed ratio, then the wall time of every other public function.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import agreement, metric_validity, screening  # noqa: E402

SCALES = ("sync", "visual", "overall")


def synthetic_study(seed: int = 0, n_participants: int = 300, n_conditions: int = 10, n_sources: int = 60,
                    clips_per_participant: int = 111) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_clips = n_conditions * n_sources
    condition_quality = np.linspace(-1.2, 1.2, n_conditions)
    source_quality = rng.normal(0.0, 0.4, n_sources)
    clip_condition = np.repeat(np.arange(n_conditions), n_sources)
    clip_source = np.tile(np.arange(n_sources), n_conditions)
    quality = condition_quality[clip_condition] + source_quality[clip_source] + rng.normal(0.0, 0.2, n_clips)
    scale_shift = {"sync": 0.0, "visual": 0.2, "overall": 0.1}
    bias = rng.normal(0.0, 0.3, n_participants)
    chosen = np.argsort(rng.random((n_participants, n_clips)), axis=1)[:, :clips_per_participant]
    participant = np.repeat(np.arange(n_participants), clips_per_participant)
    clip = chosen.ravel()
    frames = []
    for scale in SCALES:
        latent = 3.0 + quality[clip] + bias[participant] + scale_shift[scale] + rng.normal(0.0, 0.7, len(clip))
        frames.append(pd.DataFrame({"participant": participant, "clip": clip, "condition": clip_condition[clip],
                                    "content": clip_source[clip], "scale": scale,
                                    "rating": np.clip(np.rint(latent), 1, 5)}))
    data = pd.concat(frames, ignore_index=True)
    metric_noise = rng.normal(0.0, 0.5, n_clips)
    data["lse_c"] = np.exp(quality + metric_noise)[data["clip"]]
    data["fid"] = (40.0 - 8.0 * quality + 8.0 * metric_noise)[data["clip"]]
    data["ssim"] = rng.random(n_clips)[data["clip"]]
    return data


def naive_alpha(matrix: np.ndarray, level: str) -> float:
    """Krippendorff's alpha by counting pairable values unit by unit (the textbook procedure, slow)."""
    coincidence: Counter = Counter()
    for unit in matrix.T:
        values = unit[~np.isnan(unit)]
        m = len(values)
        if m < 2:
            continue
        for i in range(m):
            for j in range(m):
                if i != j:
                    coincidence[(values[i], values[j])] += 1.0 / (m - 1)
    domain = sorted({v for pair in coincidence for v in pair})
    marginal = {v: sum(w for (a, _), w in coincidence.items() if a == v) for v in domain}
    n = sum(marginal.values())

    def delta(a: float, b: float) -> float:
        if level == "nominal":
            return float(a != b)
        if level == "interval":
            return (a - b) ** 2
        if level == "ratio":
            return ((a - b) / (a + b)) ** 2 if a + b else 0.0
        lo, hi = sorted((domain.index(a), domain.index(b)))
        return (sum(marginal[domain[g]] for g in range(lo, hi + 1)) - (marginal[a] + marginal[b]) / 2.0) ** 2

    observed = sum(w * delta(a, b) for (a, b), w in coincidence.items())
    expected = sum(marginal[a] * marginal[b] * delta(a, b) for a in domain for b in domain)
    return 1.0 - (n - 1.0) * observed / expected


NAIVE = "naive pairable-values loop"


def best_of(repeat: int, function):
    """(result, best wall time in seconds) of ``repeat`` calls."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def load_reference(choice: str):
    """(name, alpha(matrix, level)) of the reference implementation."""
    if choice in ("auto", "package"):
        try:
            package = importlib.import_module("krippendorff")
        except ImportError:
            target = Path(tempfile.mkdtemp(prefix="krippendorff_"))
            result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                     str(target), "krippendorff"], capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                sys.path.insert(0, str(target))
                package = importlib.import_module("krippendorff")
            elif choice == "package":
                raise SystemExit(f"could not install krippendorff: {result.stderr.strip()[-400:]}")
            else:
                package = None
        if package is not None:
            try:
                version = importlib.metadata.version("krippendorff")
            except importlib.metadata.PackageNotFoundError:
                version = "?"
            return f"krippendorff {version} (PyPI)", lambda m, level: float(
                package.alpha(reliability_data=m, level_of_measurement=level))
    return NAIVE, naive_alpha


def timed(label: str, function, *args, repeat: int = 1, **kwargs):
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    print(f"  {label:<62} {best * 1000:10.1f} ms")
    return result, best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--reference", choices=("auto", "package", "naive"), default="auto")
    args = parser.parse_args(argv)

    data = synthetic_study()
    print(f"study: {len(data):,} ratings, {data['participant'].nunique()} participants, "
          f"{data['clip'].nunique()} clips, {data['condition'].nunique()} conditions, {data['scale'].nunique()} scales")

    print("\nKrippendorff's alpha (per scale, coders x units = 300 x 600, 81.5 % missing; best of 3 runs)")
    name, reference = load_reference(args.reference)
    times = {"ours (long frame)": 0.0, "ours (matrix)": 0.0, "reference": 0.0}
    worst = 0.0
    for scale in SCALES:
        subset = data[data["scale"] == scale]
        matrix = subset.pivot_table(index="participant", columns="clip", values="rating").to_numpy()
        for level in ("nominal", "ordinal", "interval", "ratio"):
            from_frame, t_frame = best_of(3, lambda: agreement.krippendorff_alphas(subset, by=[], levels=[level])
                                          ["alpha"].iloc[0])
            from_matrix, t_matrix = best_of(3, lambda: agreement.krippendorff_alpha(matrix, level))
            theirs, t_reference = best_of(3 if name != NAIVE else 1, lambda: reference(matrix, level))
            times["ours (long frame)"] += t_frame
            times["ours (matrix)"] += t_matrix
            times["reference"] += t_reference
            worst = max(worst, abs(from_frame - theirs), abs(from_matrix - theirs))
            print(f"  {scale:<8} {level:<9} ours {from_frame:.12f}   reference {theirs:.12f}")
    print(f"  reference: {name}")
    print(f"  largest |difference| {worst:.2e}")
    for label, seconds in times.items():
        ratio = "" if label == "reference" else f"   reference / ours = {times['reference'] / seconds:.1f}x"
        print(f"  total time {label:<18} {seconds * 1000:9.1f} ms{ratio}")
    if name != NAIVE:
        subset = data[data["scale"] == "sync"]
        matrix = subset.pivot_table(index="participant", columns="clip", values="rating").to_numpy()
        naive, t_naive = best_of(1, lambda: naive_alpha(matrix, "interval"))
        ours, t_ours = best_of(3, lambda: agreement.krippendorff_alpha(matrix, "interval"))
        print(f"  and against the naive pairable-values loop (sync, interval): |difference| {abs(naive - ours):.2e}, "
              f"{t_naive * 1000:.0f} ms vs {t_ours * 1000:.1f} ms, {t_naive / t_ours:.0f}x")

    print("\nagreement")
    timed("krippendorff_alphas (3 scales x ordinal+interval)", agreement.krippendorff_alphas, data)
    timed("split_half_reliability (condition MOS, 1000 splits, 3 scales)", agreement.split_half_reliability, data)
    rng = np.random.default_rng(1)
    block = pd.DataFrame({"participant": np.repeat(np.arange(50), 200), "clip": np.tile(np.arange(200), 50),
                          "rating": rng.integers(1, 6, 50 * 200).astype(float)})
    timed("intraclass_correlations (complete 50 raters x 200 clips)", agreement.intraclass_correlations, block,
          by=[])

    print("\nscreening (per scale)")
    for label, rule in (("bt500_screening", screening.bt500_screening),
                        ("bt1788_correlation_screening", screening.bt1788_correlation_screening),
                        ("p913_correlation_screening", screening.p913_correlation_screening),
                        ("z_score_screening", screening.z_score_screening),
                        ("straight_lining_screening", screening.straight_lining_screening)):
        timed(label, rule, data)
    decisions, _ = timed("screen_participants (default rules)", screening.screen_participants, data)
    timed("drop_rejected", screening.drop_rejected, data, decisions)

    print(f"\nmetric validity (3 metrics, crossed bootstrap n_boot={args.n_boot})")
    metrics = ["lse_c", "fid", "ssim"]
    for level in ("clip", "condition"):
        for methods in (("pearson", "spearman"), ("kendall",)):
            timed(f"metric_correlations level={level} {'+'.join(methods)}", metric_validity.metric_correlations,
                  data, metrics, level=level, methods=methods, n_boot=args.n_boot)
    timed("metric_rm_correlations (content as subject)", metric_validity.metric_rm_correlations, data, metrics)
    timed("p1401_evaluation (condition level, cubic)", metric_validity.p1401_evaluation, data, metrics)
    timed("p1401_evaluation (clip level, cubic)", metric_validity.p1401_evaluation, data, metrics, level="clip")
    summary, _ = timed("ranking_agreement (conditions)", metric_validity.ranking_agreement, data, metrics,
                       n_boot=args.n_boot)
    print("\n" + summary.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
