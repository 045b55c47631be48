"""Time and peak memory of the full analysis report on a synthetic study of ~100,000 ratings. Run on demand:

    .venv/bin/python benchmarks/bench_analysis_report.py [--participants 300] [--clips 600] [--per-participant 111]
        [--n-boot 1000] [--metrics 10] [--out var/bench-report]

The study is benchmarks/bench_analysis_models.py's ``synthetic_study`` (300 participants each rating 111 of 600
clips — 10 conditions × 60 contents, condition m0 the hidden reference — on 3 scales: 99,900 ratings) plus
``--metrics`` per-clip metrics: half follow the clip's latent quality with noise (some lower-is-better, one
condition-level like FID, one infinite on the reference like PSNR against itself), half are unrelated.

Every step of the report is shown with its wall time and peak traced memory (tracemalloc, reset per step:
Python and numpy allocations): each section of ``build_report``, each figure, the HTML rendering and the zip.
Times come from an untraced run, peaks from a second, traced run of the same steps (tracemalloc slows
Python-heavy steps such as matplotlib and the zip several-fold).
Against a reference run in the same process: the core functions called directly (mos_table, the mixed model and
the subject model per scale) give equal values to the report's tables (max |Δ| printed) and the ratio says what
the report adds around them. The model-vs-statsmodels and subject-model comparisons are in
bench_analysis_models.py and not repeated here.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_analysis_models import SCALES, synthetic_study  # noqa: E402

from analysis import exports, plots  # noqa: E402
from analysis.mixed import fit_mixed_model  # noqa: E402
from analysis.mos import mos_table  # noqa: E402
from analysis.report import ReportOptions, build_report  # noqa: E402
from analysis.subject_model import fit_subject_model  # noqa: E402


def synthetic_metrics(ratings: pd.DataFrame, n_metrics: int, seed: int = 7) -> tuple[pd.DataFrame, dict]:
    """Per clip: half the metrics follow the clip's mean rating (a proxy of its latent quality), half do not."""
    rng = np.random.default_rng(seed)
    clips = ratings.groupby("clip").agg(quality=("rating", "mean"), condition=("condition", "first"),
                                        kind=("condition_kind", "first")).reset_index()
    z = (clips["quality"] - clips["quality"].mean()) / clips["quality"].std()
    out, directions = {"clip": clips["clip"].to_numpy()}, {}
    for k in range(n_metrics):
        name = f"metric_{k:02d}"
        if k % 2 == 0:
            sign = 1.0 if k % 4 == 0 else -1.0
            values = 10.0 + sign * 2.0 * (z + rng.normal(0.0, 0.6 + 0.2 * k, len(z)))
            directions[name] = sign > 0
        else:
            values = rng.normal(0.0, 1.0, len(z))
            directions[name] = True
        out[name] = values
    frame = pd.DataFrame(out)
    if n_metrics >= 2:  # one condition-level metric (FID-like): the condition's mean, repeated on its clips
        frame["metric_01"] = frame.groupby(clips["condition"])["metric_00"].transform("mean").to_numpy()
    if n_metrics >= 4:  # one metric infinite on the hidden reference (PSNR of a clip against itself)
        frame.loc[(clips["kind"] == "reference").to_numpy(), "metric_03"] = np.inf
    return frame, directions


def measured(label, function, *args, **kwargs):
    tracemalloc.start()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"  {label:<58s} {seconds:9.3f} s   peak {peak:8.1f} MiB")
    return result, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--per-participant", type=int, default=111)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--out", default="", help="also write report.html and the zip here")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from analysis.services import render_report_html

    wall = time.perf_counter()
    data = synthetic_study(args.participants, args.clips, args.per_participant)
    metrics, directions = synthetic_metrics(data, args.metrics)
    print(f"Synthetic study: {len(data):,} ratings = {args.participants} participants × {args.per_participant} of "
          f"{args.clips} clips × {len(SCALES)} scales; {args.metrics} clip metrics; n_boot {args.n_boot}")

    def run(trace: bool):
        options = ReportOptions(title="Synthetic benchmark study", n_boot=args.n_boot, higher_is_better=directions,
                                trace_memory=trace, reveal_conditions=True)
        report = build_report(data, metrics, options=options)
        plots.render_figures(report)
        html = render_report_html(report)
        with report.step("zip (every table as CSV + JSON, ratings, SUREAL)"):
            archive = exports.report_zip(report, html=html)
        return report, html, archive

    # Times come from an untraced run: tracemalloc slows Python-heavy steps (matplotlib, the zip) up to 10x.
    # Peak memory per step comes from a second, traced run of the same steps.
    report, html, archive = run(trace=False)
    total = time.perf_counter() - wall
    traced, _, _ = run(trace=True)
    peaks = {row["step"]: row["peak_mib"] for row in traced.timings}
    traced_seconds = {row["step"]: row["seconds"] for row in traced.timings}

    print("\nEvery step: wall time (untraced run) and peak traced memory (traced run)")
    print(f"  {'step':<58s} {'seconds':>9s}   {'peak MiB':>8s}   {'(traced s)':>10s}")
    for row in report.timings:
        print(f"  {row['step']:<58s} {row['seconds']:9.3f}   {peaks.get(row['step'], float('nan')):8.1f}   "
              f"{traced_seconds.get(row['step'], float('nan')):10.3f}")
    timings = report.timings_frame()
    sections = timings[timings["step"].str.startswith("section")]["seconds"].sum()
    figure_rows = timings["step"].str.startswith("figure")
    section_peak = max(v for k, v in peaks.items() if k.startswith("section"))
    print(f"  {'all sections (build_report)':<58s} {sections:9.3f}   {section_peak:8.1f}")
    print(f"  {f'all figures ({int(figure_rows.sum())})':<58s} {timings[figure_rows]['seconds'].sum():9.3f}")
    print(f"  {'whole report: data to HTML and zip':<58s} {timings['seconds'].sum():9.3f}   "
          f"{max(peaks.values()):8.1f}")
    print(f"  HTML {len(html) / 2**20:.1f} MiB, zip {len(archive) / 2**20:.1f} MiB, "
          f"{len(report.all_tables())} tables")
    for section in report.sections.values():
        if section.status != "ok":
            print(f"  [{section.status}] {section.key}: {' | '.join(section.notes)[:300]}")

    print("\nReference: the core functions called directly on the analysed ratings (untraced) vs the report's tables")
    analysed = report.analysed
    reference_mos, mos_seconds = measured("mos_table", mos_table, analysed)
    delta = np.max(np.abs(reference_mos["mos"].to_numpy() - report.table("mos/mos")["mos"].to_numpy()))
    print(f"    max|Δ MOS| {delta:.1e}")
    fits, fit_seconds = {}, 0.0
    for scale in SCALES:
        part = analysed[analysed["scale"] == scale]
        fits[scale], seconds = measured(f"fit_mixed_model ({scale})", fit_mixed_model, part, reference_condition="m0")
        fit_seconds += seconds
    emms = report.table("mixed_model/emms")
    delta = max(np.max(np.abs(fits[s].emms["emm"].to_numpy() - emms.loc[emms["scale"] == s, "emm"].to_numpy()))
                for s in SCALES)
    print(f"    max|Δ EMM| {delta:.1e}")
    subject_seconds = 0.0
    participants = report.table("subject_model/participants")
    worst = 0.0
    for scale in SCALES:
        fit, seconds = measured(f"fit_subject_model ({scale})", fit_subject_model, analysed[analysed["scale"] == scale])
        subject_seconds += seconds
        mine = participants.loc[participants["scale"] == scale, "bias"].to_numpy()
        worst = max(worst, float(np.max(np.abs(fit.participants["bias"].to_numpy() - mine))))
    print(f"    max|Δ bias| {worst:.1e}")
    sections = {row["step"]: row["seconds"] for row in report.timings}
    for key, direct in (("mos", mos_seconds), ("mixed_model", fit_seconds), ("subject_model", subject_seconds)):
        print(f"    section {key}: {sections[f'section: {key}']:.3f} s in the report vs direct {direct:.3f} s: ratio "
              f"{sections[f'section: {key}'] / direct:.2f}×")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.html").write_text(html)
        (out / "report-tables.zip").write_bytes(archive)
        print(f"\nWrote {out / 'report.html'} and {out / 'report-tables.zip'}")
    print(f"\nWall time of the untraced run, data to zip: {total:,.1f} s; process peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
