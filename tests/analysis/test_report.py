"""The report: every section's tables come from the tested statistics, failures become notes, blind by default."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.mixed import fit_mixed_model
from analysis.mos import mos_table
from analysis.planning import plan_from_pilot
from analysis.report import (
    COMPUTE_ORDER,
    SECTION_KEYS,
    ReportOptions,
    blind_labels,
    build_report,
    compact_letters,
    observed_design,
)
from analysis.screening import screen_participants
from analysis.subject_model import fit_subject_model
from tests.analysis.datasets import NAMES, SCALES, synthetic_metrics, synthetic_ratings

FAST = dict(n_boot=200, n_splits=100)


@pytest.fixture(scope="module")
def ratings():
    return synthetic_ratings()


@pytest.fixture(scope="module")
def report(ratings):
    return build_report(ratings, synthetic_metrics(ratings),
                        options=ReportOptions(condition_order=NAMES, metric_labels={"fid": "FID"}, **FAST))


def test_blind_labels_follow_the_given_order_and_sort_as_text():
    labels = blind_labels(["b", "a", "c"], order=["c", "a", "gone"])
    assert labels == {"c": "C1", "a": "C2", "gone": "C3", "b": "C4"}
    many = blind_labels([f"m{i}" for i in range(12)])
    assert sorted(many.values()) == [many[name] for name in sorted(many, key=lambda n: list(many).index(n))]
    assert many["m0"] == "C01" and len(set(many.values())) == 12


def test_compact_letters_separate_exactly_the_significant_pairs():
    rng = np.random.default_rng(3)
    for _ in range(30):
        levels = [f"L{i}" for i in range(rng.integers(2, 8))]
        pairs = [pair for pair in itertools.combinations(levels, 2) if rng.random() < 0.4]
        letters = compact_letters(levels, pairs)
        significant = {frozenset(pair) for pair in pairs}
        for a, b in itertools.combinations(levels, 2):
            share = bool(set(letters[a]) & set(letters[b]))
            assert share == (frozenset((a, b)) not in significant), (levels, pairs, letters)


def test_compact_letters_give_one_letter_when_nothing_differs_and_start_at_the_best():
    assert compact_letters(["best", "mid", "worst"], []) == {"best": "a", "mid": "a", "worst": "a"}
    assert compact_letters(["best", "mid", "worst"], [("best", "mid"), ("best", "worst"), ("mid", "worst")]) == {
        "best": "a", "mid": "b", "worst": "c"}


def test_the_report_has_every_section_in_order_with_tidy_tables(report):
    assert list(report.sections) == list(SECTION_KEYS)
    for section in report.sections.values():
        assert section.status == "ok", (section.key, section.notes)
        for name, table in section.tables.items():
            assert isinstance(table, pd.DataFrame) and len(table), (section.key, name)
            assert section.captions[name], (section.key, name)
    assert {"mos/mos", "mixed_model/emms", "mixed_model/letters", "dmos/dmos", "subject_model/participants",
            "agreement/summary", "agreement/icc_model", "metrics/summary", "metrics/p1401_condition",
            "planning/plans"} <= set(report.all_tables())
    assert [row["step"] for row in report.timings][: len(SECTION_KEYS)] == [f"section: {k}" for k in COMPUTE_ORDER]
    assert all(row["seconds"] >= 0 for row in report.timings)


def test_every_table_equals_the_statistic_it_comes_from(report):
    analysed = report.analysed
    pd.testing.assert_frame_equal(report.table("mos/mos"), mos_table(analysed))
    sync = analysed[analysed["scale"] == "sync"]
    fit = fit_mixed_model(sync, reference_condition="C1")
    emms = report.table("mixed_model/emms")
    np.testing.assert_allclose(emms.loc[emms["scale"] == "sync", "emm"].to_numpy(), fit.emms["emm"].to_numpy())
    subject = fit_subject_model(sync)
    table = report.table("subject_model/participants")
    np.testing.assert_allclose(table.loc[table["scale"] == "sync", "bias"].to_numpy(),
                               subject.participants["bias"].to_numpy())
    decisions = screen_participants(report.ratings.drop(columns="rejected"))
    pd.testing.assert_frame_equal(report.table("screening/decisions"), decisions)


def test_the_fixed_effects_take_the_hidden_reference_as_baseline(report):
    fixed = report.table("mixed_model/fixed_effects")
    assert set(fixed["term"]) == {"Intercept", "condition[T.C2]", "condition[T.C3]", "condition[T.C4]"}


def test_a_blind_report_names_no_condition_anywhere(ratings, report):
    text = " ".join(table.to_csv() for table in report.all_tables().values())
    text += report.ratings.to_csv() + " ".join(report.highlights)
    text += " ".join(note for s in report.sections.values() for note in s.notes)
    for name in NAMES:
        assert name not in text
    assert set(report.ratings["condition"]) == {"C1", "C2", "C3", "C4"}
    assert report.condition_labels == dict(zip(NAMES, ["C1", "C2", "C3", "C4"]))
    assert "blind_label" not in report.table("overview/conditions")


def test_revealing_conditions_keeps_the_names_and_shows_the_blind_key(ratings):
    report = build_report(ratings, None, options=ReportOptions(condition_order=NAMES, reveal_conditions=True, **FAST))
    conditions = report.table("overview/conditions").set_index("condition")
    assert set(conditions.index) == set(NAMES)
    assert conditions.loc["Wav2Lip GAN checkpoint", "blind_label"] == "C2"
    assert set(report.table("mos/user_study")["Method"]) == set(NAMES)


def test_the_primary_analysis_leaves_out_rejected_participants_and_shows_both(ratings):
    data = synthetic_ratings(straight_liners=2)
    liars = {112, 113}
    without = build_report(data, None, options=ReportOptions(**FAST))
    rejected = set(without.table("screening/participants").query("rejected")["participant"])
    assert liars <= rejected
    assert not rejected & set(without.analysed["participant"])
    assert set(without.ratings.loc[without.ratings["rejected"], "participant"]) == rejected
    kept = build_report(data, None, options=ReportOptions(exclude_rejected=False, **FAST))
    assert set(kept.analysed["participant"]) == set(data["participant"])
    sensitivity = without.table("screening/sensitivity")
    expected = mos_table(data.assign(condition=data["condition"].map(without.condition_labels)))
    np.testing.assert_allclose(sensitivity["mos_all"], expected["mos"])
    np.testing.assert_allclose(sensitivity["difference"], sensitivity["mos_without_rejected"] - sensitivity["mos_all"])
    pd.testing.assert_frame_equal(without.table("mos/mos"), mos_table(without.analysed))


def test_screening_that_would_leave_too_few_participants_is_reported_not_applied():
    data = synthetic_ratings(n_participants=4, straight_liners=2)
    report = build_report(data, None, options=ReportOptions(**FAST))
    section = report.section("screening")
    assert section.status == "partial"
    assert any("not applied" in note for note in section.notes)
    assert report.analysed["participant"].nunique() == 4


def test_too_few_participants_become_notes_never_exceptions():
    data = synthetic_ratings(n_participants=1, per_participant=8)
    report = build_report(data, synthetic_metrics(data), options=ReportOptions(**FAST))
    assert report.section("mos").tables["mos"]["n"].min() >= 1
    notes = " ".join(note for s in report.sections.values() for note in s.notes)
    assert "ICC" in notes
    assert all(s.status in ("ok", "partial", "failed", "skipped") for s in report.sections.values())
    assert report.highlights


def test_an_empty_study_reports_why_every_section_is_empty():
    data = synthetic_ratings().iloc[0:0]
    report = build_report(data, None, options=ReportOptions(**FAST))
    assert report.section("overview").status == "failed"
    assert report.section("screening").status == "skipped"
    assert report.section("mixed_model").status == "failed"
    assert any("Could not be computed" in line for line in report.highlights)


def test_without_metrics_or_a_hidden_reference_the_sections_say_so(ratings):
    no_reference = ratings[ratings["condition_kind"] != "reference"]
    report = build_report(no_reference, None, options=ReportOptions(**FAST))
    assert report.section("metrics").status == "skipped"
    assert "No objective metrics" in report.section("metrics").notes[0]
    assert report.section("dmos").status == "skipped"
    assert "no hidden reference" in report.section("dmos").notes[0]


def test_a_missing_required_column_is_the_one_error_raised(ratings):
    with pytest.raises(KeyError, match="participant"):
        build_report(ratings.drop(columns="participant"), None)


def test_the_metric_that_tracks_quality_predicts_mos_and_noise_does_not(report):
    summary = report.table("metrics/summary")
    for scale in SCALES:
        part = summary[summary["scale"] == scale].set_index("metric")
        assert part.loc["tracker", "verdict"] == "predicts MOS"
        assert part.loc["fid", "verdict"] == "predicts MOS"  # lower is better: negated, so it agrees
        assert part.loc["noise", "verdict"] == "no evidence"
        assert part.index[0] in ("tracker", "fid")
    assert any("predicts MOS best" in line for line in report.highlights)
    notes = " ".join(report.section("metrics").notes)
    assert "non-finite" in notes  # psnr of the hidden reference against itself


def test_the_seeds_tables_have_the_papers_columns(report):
    assert list(report.table("mos/user_study").columns) == ["Method", "Sync", "Visual", "Overall"]
    assert list(report.table("metrics/metric_table").columns) == ["Method", "SSIM", "PSNR", "FID", "IFC", "LMD",
                                                                   "LSE-C", "LSE-D"]
    user = report.table("mos/user_study").set_index("Method")
    mos = report.table("mos/mos")
    expected = mos[(mos["condition"] == "C2") & (mos["scale"] == "visual")]["mos"].iloc[0]
    assert user.loc["C2", "Visual"] == expected
    metric = report.table("metrics/metric_table").set_index("Method")
    analysed_clips = report.analysed.drop_duplicates("clip")
    fid = synthetic_metrics(synthetic_ratings()).set_index("clip")["fid"]
    c3 = analysed_clips[analysed_clips["condition"] == "C3"]["clip"]
    assert metric.loc["C3", "FID"] == pytest.approx(fid[c3].mean())
    assert metric["SSIM"].isna().all()


def test_planning_uses_the_variance_components_plan_from_pilot_estimates(report):
    analysed = report.analysed
    overall = analysed[analysed["scale"] == "overall"]
    design = observed_design(overall)
    plan = plan_from_pilot(overall, n_clips=design["n_clips"], target_half_width=0.2,
                           clips_per_participant=design["clips_per_participant"])
    components = report.table("planning/components").set_index("scale").loc["overall"]
    assert components["sigma2_clip"] == pytest.approx(plan["sigma2_clip"].iloc[0], rel=1e-6)
    plans = report.table("planning/plans")
    row = plans[(plans["scale"] == "overall") & (plans["target"] == "half_width")].iloc[0]
    assert row["plateau"] == pytest.approx(plan["plateau"].iloc[0], rel=1e-6)
    if plan["feasible"].iloc[0]:
        assert row["ratings_per_clip"] == plan["ratings_per_clip"].iloc[0]


def test_the_model_based_icc_is_the_variance_share_of_the_clips(report):
    icc = report.table("agreement/icc_model").set_index("scale").loc["sync"]
    sync = report.analysed[report.analysed["scale"] == "sync"]
    fit = fit_mixed_model(sync.assign(one="x"), condition="one")
    variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
    total = variance["clip"] + variance["participant"] + variance["residual"]
    assert icc["icc_a_1"] == pytest.approx(variance["clip"] / total)
    counts = sync.groupby("clip").size()
    k = len(counts) / (1.0 / counts).sum()
    assert icc["k_harmonic"] == pytest.approx(k)
    assert icc["icc_a_k"] > icc["icc_a_1"]


def test_trace_memory_records_a_peak_for_every_step(ratings):
    report = build_report(ratings, None, options=ReportOptions(trace_memory=True, **FAST))
    peaks = report.timings_frame()["peak_mib"]
    assert peaks.notna().all() and (peaks > 0).all()


def test_the_highlights_say_which_condition_is_best_per_scale(report):
    emms = report.table("mixed_model/letters")
    for scale, label in zip(SCALES, ("Sync", "Visual", "Overall")):
        best = emms[emms["scale"] == scale].iloc[0]["condition"]
        assert any(line.startswith(f"{label}: {best} rates highest") for line in report.highlights)


def test_every_figure_is_an_embedded_png_and_a_failing_one_becomes_a_note(ratings, monkeypatch):
    from analysis import plots

    report = build_report(ratings, synthetic_metrics(ratings),
                          options=ReportOptions(condition_order=NAMES, max_metric_figures=1, **FAST))

    def broken(*args, **kwargs):
        raise ValueError("no axes")

    monkeypatch.setattr(plots, "subject_figure", broken)
    plots.render_figures(report)
    keys = {section: [f.key for f in s.figures] for section, s in report.sections.items() if s.figures}
    assert keys == {"mos": ["mos"], "screening": ["screening"], "planning": ["planning"],
                    "metrics": ["metric_overview", f"metric_{report.table('metrics/summary')['metric'].iloc[0]}"]}
    for figure in (f for s in report.sections.values() for f in s.figures):
        data = plots.data_uri_bytes(figure.data_uri)
        assert figure.data_uri.startswith("data:image/png;base64,") and data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 300 < width < 3000 and 200 < height < 3000, figure.key
        assert figure.caption and figure.title
    assert any("Figure 'subject' could not be drawn" in note for note in report.section("subject_model").notes)
    assert {row["step"] for row in report.timings} >= {"figure: mos", "figure: planning"}


def test_a_figure_can_be_svg(report):
    from analysis import plots

    figure = plots.mos_figure(report.table("mos/mos"), scales=list(SCALES), options=report.options, fmt="svg")
    assert figure.data_uri.startswith("data:image/svg+xml;charset=utf-8,")
    assert plots.data_uri_bytes(figure.data_uri).lstrip().startswith(b"<?xml")


def test_a_screening_that_rejects_nobody_says_so(ratings):
    report = build_report(ratings, None, options=ReportOptions(screening_rules=("bt500",), **FAST))
    section = report.section("screening")
    participants = report.table("screening/participants")
    assert section.status == "ok"
    assert section.notes == [f"No participant was rejected ({len(participants)} participants)."]
    assert (participants["rejected_by"] == "").all()
    assert report.analysed["participant"].nunique() == ratings["participant"].nunique()
