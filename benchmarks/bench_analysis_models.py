"""Speed and memory of the statistics on a synthetic study of ~100,000 ratings. Run on demand:

    .venv/bin/python benchmarks/bench_analysis_models.py [--participants 300] [--clips 600] [--per-participant 111]
        [--statsmodels-budget 150] [--statsmodels-threads 1]

The study: 300 participants, 600 clips (10 conditions × 60 source contents, condition 0 the hidden
reference), each participant rating 111 random clips on 3 scales = 99,900 integer 1–5 ratings generated
from condition effects, participant biases and inconsistencies, and clip effects. Every step prints wall
time and peak traced memory (tracemalloc: Python and numpy allocations). Two comparisons against a
reference run in the same process:

* mixed model (one scale): the fast engine against the plain statsmodels formula call
  ``mixedlm("rating ~ C(condition)", groups=<one group>, vc_formula={participant, clip})``, on growing
  random subsets of participants until a statsmodels fit would exceed ``--statsmodels-budget`` seconds
  (predicted from the last two sizes); equal values (fixed effects, variance components, REML
  log-likelihood) and the speed ratio at every common size, the largest one last;
* subject model (every scale): the vectorised alternating projection against the straightforward loops
  (``fit_subject_model_loops``): equal values and speed ratio.

BLAS runs single-threaded for both mixed-model engines by default (the fast engine always does), so the
ratio compares algorithms, not thread contention.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.mixed import _blas_threads, fit_mixed_model, fit_mixed_model_by_scale  # noqa: E402
from analysis.mos import content_mos_table, dmos_table, mos_table  # noqa: E402
from analysis.planning import pilot_variance_components, plan_sample_size  # noqa: E402
from analysis.subject_model import fit_subject_model, fit_subject_model_loops  # noqa: E402

SCALES = ("sync", "visual", "overall")


def synthetic_study(n_participants: int, n_clips: int, per_participant: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_conditions = 10
    condition_of_clip = np.arange(n_clips) % n_conditions
    content_of_clip = np.arange(n_clips) // n_conditions
    participant = np.repeat(np.arange(n_participants), per_participant)
    clip = np.concatenate([rng.choice(n_clips, per_participant, replace=False) for _ in range(n_participants)])
    frames = []
    for scale in SCALES:
        effect = np.concatenate([[1.2], rng.normal(0.0, 0.6, n_conditions - 1)])  # the reference rates high
        bias = rng.normal(0.0, 0.3, n_participants)
        inconsistency = rng.uniform(0.4, 1.0, n_participants)
        clip_effect = rng.normal(0.0, 0.35, n_clips)
        latent = (3.2 + effect[condition_of_clip[clip]] + bias[participant] + clip_effect[clip]
                  + inconsistency[participant] * rng.normal(size=clip.size))
        frames.append(pd.DataFrame({
            "participant": participant, "clip": clip, "condition": [f"m{k}" for k in condition_of_clip[clip]],
            "condition_kind": np.where(condition_of_clip[clip] == 0, "reference", "model"),
            "content": content_of_clip[clip], "scale": scale, "rating": np.clip(np.rint(latent), 1, 5).astype(int),
        }))
    return pd.concat(frames, ignore_index=True)


def measured(label: str, function, *args, **kwargs):
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"  {label:<58s} {seconds:9.3f} s   peak {peak:8.1f} MiB")
    return result, seconds


def compare_mixed(fast, reference) -> str:
    fe = np.max(np.abs(fast.fixed_effects["estimate"].to_numpy() - reference.fixed_effects["estimate"].to_numpy()))
    se = np.max(np.abs(fast.fixed_effects["se"].to_numpy() / reference.fixed_effects["se"].to_numpy() - 1))
    vc = np.max(np.abs(fast.variance_components["variance"].to_numpy()
                       / reference.variance_components["variance"].to_numpy() - 1))
    ll = fast.log_likelihood - reference.log_likelihood
    text = (f"max|Δβ| {fe:.1e}, max rel ΔSE {se:.1e}, max rel ΔVC {vc:.1e}, "
            f"ΔlogL(fast − sm) {ll:+.1e}, sm converged {reference.converged}")
    if reference.warnings:
        text += "\n    statsmodels warned: " + " | ".join(reference.warnings)
    if fast.warnings:
        text += "\n    fast engine warned: " + " | ".join(fast.warnings)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--per-participant", type=int, default=111, help="clips rated per participant")
    parser.add_argument("--statsmodels-budget", type=float, default=150.0,
                        help="largest predicted seconds for one statsmodels fit")
    parser.add_argument("--statsmodels-threads", type=int, default=1, help="BLAS threads for statsmodels")
    args = parser.parse_args(argv)

    data = synthetic_study(args.participants, args.clips, args.per_participant)
    print(f"Synthetic study: {len(data):,} ratings = {args.participants} participants × {args.per_participant} "
          f"of {args.clips} clips × {len(SCALES)} scales")

    print("\nEstimates (all scales)")
    measured("mos_table (condition × scale)", mos_table, data)
    measured("content_mos_table (condition × content × scale)", content_mos_table, data)
    dmos, _ = measured("dmos_table (viewer pairing, hidden reference m0)", dmos_table, data)
    print(f"    paired {dmos['n'].sum():,} ratings, unpaired {dmos['n_unpaired'].sum():,} (viewer never saw "
          "that content's reference)")

    print("\nMixed model, fast engine")
    tables, _ = measured("fit_mixed_model_by_scale (3 fits)", fit_mixed_model_by_scale, data)
    columns = ["scale", "n_obs", "converged", "n_iterations", "log_likelihood", "warnings"]
    print(tables.fits[columns].to_string(index=False))

    print(f"\nMixed model, fast engine vs plain statsmodels formula call (scale 'sync', growing participant "
          f"subsets, budget {args.statsmodels_budget:.0f} s per statsmodels fit)")
    sync = data[data["scale"] == "sync"]
    rng = np.random.default_rng(1)
    order = rng.permutation(args.participants)
    history = []
    for n_participants in [5, 10, 20, 40, 80, 160, args.participants]:
        if n_participants > args.participants:
            break
        part = sync[sync["participant"].isin(order[:n_participants])]
        if len(history) >= 2:
            (n1, t1), (n2, t2) = history[-2], history[-1]
            exponent = max(1.0, math.log(t2 / t1) / math.log(n2 / n1)) if t2 > t1 else 1.0
            predicted = t2 * (len(part) / n2) ** exponent
            if predicted > args.statsmodels_budget:
                print(f"  stop: statsmodels on {len(part):,} rows predicted {predicted:,.0f} s "
                      f"(time ∝ n^{exponent:.2f} from the last two sizes) > budget; the full scale has "
                      f"{len(sync):,} rows")
                break
        label = f"{n_participants} participants, {len(part):,} rows, q = {n_participants + part['clip'].nunique()}"
        print(f"  {label}")
        fast, fast_seconds = measured("fast engine", fit_mixed_model, part)
        with _blas_threads(args.statsmodels_threads):
            reference, sm_seconds = measured("statsmodels", fit_mixed_model, part, engine="statsmodels")
        history.append((len(part), sm_seconds))
        print(f"    {compare_mixed(fast, reference)}")
        print(f"    speed ratio statsmodels / fast = {sm_seconds / fast_seconds:,.1f}×")
    if history:
        print(f"  largest common size: {history[-1][0]:,} rows")

    print("\nSubject model (P.910 Annex E), vectorised vs straightforward loops, per scale")
    for scale in SCALES:
        part = data[data["scale"] == scale]
        vectorised, v_seconds = measured(f"{scale}: fit_subject_model ({len(part):,} ratings)", fit_subject_model, part)
        loops, l_seconds = measured(f"{scale}: fit_subject_model_loops", fit_subject_model_loops, part)
        dq = np.max(np.abs(vectorised.stimuli["quality"] - loops.stimuli["quality"]))
        db = np.max(np.abs(vectorised.participants["bias"] - loops.participants["bias"]))
        dv = np.max(np.abs(vectorised.participants["inconsistency"] - loops.participants["inconsistency"]))
        print(f"    iterations {vectorised.fit['n_iterations']} vs {loops.fit['n_iterations']}; max|Δ| quality "
              f"{dq:.1e}, bias {db:.1e}, inconsistency {dv:.1e}; speed ratio loops / vectorised = "
              f"{l_seconds / v_seconds:,.1f}×")

    print("\nPlanning from the 'overall' ratings as a pilot")
    components, _ = measured("pilot_variance_components", pilot_variance_components,
                             data[data["scale"] == "overall"])
    plan, _ = measured("plan_sample_size (±0.15, 60 clips per condition)", plan_sample_size, components,
                       n_clips=60, target_half_width=0.15)
    print(f"    components {components}; plan: {plan.iloc[0].to_dict()}")

    print(f"\nProcess peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
