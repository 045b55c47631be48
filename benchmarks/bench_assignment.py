"""Speed and balance of the assignment planner on a large study. Run on demand:

    .venv/bin/python benchmarks/bench_assignment.py [--conditions 20] [--items 500] [--participants 300] [--k 12]

The study: ``conditions`` × ``items`` ready test clips (condition 0 is the hidden reference; an item is one
face saying one sentence, ``items / 10`` sentences), no database. For every method (ACR, ACR-HR, DCR,
pairwise) and content limit, ``participants`` plan their trials one after another, each plan added to the
coverage the next one sees (as ``admit`` does inside the Study row lock). Printed per case: the design
build time, the planning time per participant (median and max), and the coverage spread (max − min
assignments per unit) at the end.

Reference in the same run: the plain least-covered pick with a seeded shuffle (``plan_assignments``, the
planner's ACR core without content limits, order repair or references) on the same ACR coverage; the
ratio says what the researcher's constraints cost per participant.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import os  # noqa: E402

import django  # noqa: E402

# The planner is pure, but its module imports the models (the settings only name the apps; no database is used).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from studyapp.assignment import ClipRow, Rules, build_design, plan_assignments, plan_trials  # noqa: E402
from studyapp.models import Study  # noqa: E402

METHODS = [Study.METHOD_ACR, Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE]
LIMITS = [Study.LIMIT_NONE, Study.LIMIT_ONCE, Study.LIMIT_ONCE_PER_CONDITION]


def synthetic_rows(conditions: int, items: int) -> list[ClipRow]:
    rows = []
    for item in range(items):
        for condition in range(conditions):
            rows.append(ClipRow(
                study_clip=item * conditions + condition + 1, role="test", condition=condition, source=item % 7,
                audio=item, sentence=f"s{item % max(items // 10, 1)}", is_reference=condition == 0,
                reference_ready=True,
            ))
    return rows


def unit_of(trial):
    """The coverage key of a planned trial (a study clip, or the sorted pair for pairwise)."""
    if trial.paired_study_clip is None:
        return trial.study_clip
    return tuple(sorted((trial.study_clip, trial.paired_study_clip)))


def run_case(rows, method: str, limit: str, participants: int, k: int) -> dict:
    rules = Rules(method=method, clips_per_participant=k, content_key=Study.CONTENT_SENTENCE, content_limit=limit)
    started = time.perf_counter()
    design = build_design(rows, rules)
    build_s = time.perf_counter() - started
    coverage = Counter({unit.key: 0 for unit in design.units})
    times = []
    for participant in range(participants):
        started = time.perf_counter()
        trials = plan_trials(design, coverage, study_seed=1, participant_seed=participant)
        times.append(time.perf_counter() - started)
        for trial in trials:
            key = unit_of(trial)
            if key in coverage:
                coverage[key] += 1
    values = list(coverage.values())
    return {"build_s": build_s, "median_ms": 1e3 * statistics.median(times), "max_ms": 1e3 * max(times),
            "spread": max(values) - min(values), "units": len(values)}


def run_reference(rows, participants: int, k: int) -> float:
    coverage = dict.fromkeys((r.study_clip for r in rows), 0)
    times = []
    for participant in range(participants):
        started = time.perf_counter()
        picked = plan_assignments(coverage, k, 1, participant)
        times.append(time.perf_counter() - started)
        for key in picked:
            coverage[key] += 1
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conditions", type=int, default=20)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--k", type=int, default=12, help="clips per participant")
    args = parser.parse_args()

    rows = synthetic_rows(args.conditions, args.items)
    print(f"{len(rows)} ready test clips ({args.conditions} conditions x {args.items} items), "
          f"{args.participants} participants x {args.k} clips")
    reference_ms = run_reference(rows, args.participants, args.k)
    print(f"reference: plain least-covered pick + shuffle, median {reference_ms:.2f} ms per participant\n")
    print(f"{'method':<9} {'limit':<19} {'units':>7} {'build s':>8} {'median ms':>10} {'max ms':>8} "
          f"{'x reference':>12} {'spread':>7}")
    for method in METHODS:
        for limit in LIMITS:
            result = run_case(rows, method, limit, args.participants, args.k)
            print(f"{method:<9} {limit:<19} {result['units']:>7} {result['build_s']:>8.3f} "
                  f"{result['median_ms']:>10.2f} {result['max_ms']:>8.1f} "
                  f"{result['median_ms'] / reference_ms:>12.1f} {result['spread']:>7}")


if __name__ == "__main__":
    main()
