"""Agreement statistics reproduce published values (pingouin, Shrout & Fleiss, Krippendorff, NFLX) and
behave as specified on simulated panels."""

import numpy as np
import pandas as pd
import pingouin
import pytest

from analysis.agreement import (
    ALPHA_LEVELS,
    agreement_summary,
    intraclass_correlations,
    krippendorff_alpha,
    krippendorff_alpha_from_counts,
    krippendorff_alphas,
    normalize_icc_table,
    split_half_reliability,
)
from tests.analysis.datasets import nflx_frame

FORMS = ["icc_1_1", "icc_a_1", "icc_c_1", "icc_1_k", "icc_a_k", "icc_c_k"]
nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", data C: 4 coders x 12 units.
KRIPPENDORFF_C = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                  [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                  [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                  [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
# The 3 x 15 example of the krippendorff package's docstring.
DOCSTRING_3X15 = [[nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
                  [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
                  [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4]]


def _long(matrix, scale="sync"):
    matrix = np.asarray(matrix, dtype=float)
    return pd.DataFrame([(c, u, scale, matrix[c, u]) for c in range(matrix.shape[0]) for u in range(matrix.shape[1])
                         if not np.isnan(matrix[c, u])], columns=["participant", "clip", "scale", "rating"])


# --- ICC ------------------------------------------------------------------------------------------------------


def test_icc_reproduces_pingouins_wine_dataset():
    icc = intraclass_correlations(pingouin.read_dataset("icc"), target="Wine", rater="Judge", rating="Scores", by=[])
    assert icc["form"].tolist() == FORMS
    assert icc["label"].tolist() == ["ICC(1,1)", "ICC(A,1)", "ICC(C,1)", "ICC(1,k)", "ICC(A,k)", "ICC(C,k)"]
    assert icc["shrout_fleiss"].tolist() == ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    np.testing.assert_allclose(icc["icc"], [0.727521, 0.727689, 0.729487, 0.914384, 0.914450, 0.915159], atol=1e-6)
    np.testing.assert_allclose(icc["f"], [11.680, 11.787, 11.787, 11.680, 11.787, 11.787], atol=1e-3)
    assert icc["df1"].tolist() == [7] * 6 and icc["df2"].tolist() == [24, 21, 21, 24, 21, 21]
    np.testing.assert_allclose(icc["p_value"][:2], [2.2e-06, 5.0e-06], rtol=0.05)
    np.testing.assert_allclose(icc[["ci_low", "ci_high"]].round(2).to_numpy(), [[0.43, 0.93]] * 3 + [[0.75, 0.98]] * 3)
    assert (icc["n_targets"] == 8).all() and (icc["n_raters"] == 4).all()


def test_icc_confidence_bounds_are_not_rounded():
    icc = intraclass_correlations(pingouin.read_dataset("icc"), target="Wine", rater="Judge", rating="Scores", by=[])
    assert icc["ci_low"].iloc[0] != round(icc["ci_low"].iloc[0], 2)
    assert pingouin.options.get("round.column.CI95") == 2  # pingouin's own setting is restored


def test_icc_reproduces_shrout_and_fleiss_1979():
    judges = {"J1": [9, 6, 8, 7, 10, 6], "J2": [2, 1, 4, 1, 5, 2], "J3": [5, 3, 6, 2, 6, 4], "J4": [8, 2, 8, 6, 9, 7]}
    data = pd.DataFrame([(t, j, v[t]) for j, v in judges.items() for t in range(6)], columns=["clip", "participant",
                                                                                              "rating"])
    icc = intraclass_correlations(data, by=[])
    np.testing.assert_allclose(icc["icc"], [0.165742, 0.289764, 0.714841, 0.442797, 0.620051, 0.909316], atol=1e-6)
    np.testing.assert_allclose(icc["f"], [1.794678, 11.027248, 11.027248, 1.794678, 11.027248, 11.027248], atol=1e-6)
    assert icc["df2"].tolist() == [18, 15, 15, 18, 15, 15]
    np.testing.assert_allclose(icc["p_value"][:2], [0.16472, 0.00013], atol=1.5e-4)  # pingouin: decimal=4
    np.testing.assert_allclose(icc["ci_low"].round(2), [-0.13, 0.02, 0.34, -0.88, 0.07, 0.68])
    np.testing.assert_allclose(icc["ci_high"].round(2), [0.72, 0.76, 0.95, 0.91, 0.93, 0.99])


def test_icc_drops_targets_with_a_missing_rating():
    data = pingouin.read_dataset("icc")
    data.loc[3, "Scores"] = np.nan
    icc = intraclass_correlations(data, target="Wine", rater="Judge", rating="Scores", by=[])
    np.testing.assert_allclose(icc["icc"].round(2), [0.75, 0.75, 0.75, 0.92, 0.92, 0.92])
    assert (icc["df1"] == 6).all() and (icc["n_targets"] == 7).all()


def test_icc_reproduces_the_balanced_anova_values_of_nflx():
    icc = intraclass_correlations(nflx_frame(26))  # by scale; the frame has one
    np.testing.assert_allclose(icc["icc"], [0.744116, 0.744573, 0.780850, 0.986947, 0.986978, 0.989321], atol=1e-6)
    assert icc["scale"].unique().tolist() == ["overall"]


def test_icc_refuses_a_design_without_complete_targets():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"participant": np.arange(40), "clip": np.arange(40) % 20, "rating": rng.integers(1, 6, 40)})
    with pytest.raises(ValueError, match="complete crossed design"):
        intraclass_correlations(data, by=[])


def test_icc_rows_are_recognised_in_pingouins_old_and_new_labels_and_by_position():
    new_style = pingouin.intraclass_corr(pingouin.read_dataset("icc"), targets="Wine", raters="Judge",
                                         ratings="Scores")
    expected = normalize_icc_table(new_style)
    old_style = new_style.rename(columns={"pval": "p-val", "CI95": "CI95%"})
    old_style["Type"] = ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    old_style.insert(1, "Description", ["Single raters absolute"] * 6)
    shuffled = old_style.iloc[[5, 0, 3, 1, 4, 2]]
    pd.testing.assert_frame_equal(normalize_icc_table(shuffled), expected)
    renamed = new_style.assign(Type=[f"form {i}" for i in range(6)])
    pd.testing.assert_frame_equal(normalize_icc_table(renamed), expected)


# --- Krippendorff's alpha ---------------------------------------------------------------------------------


def naive_alpha(reliability_data, level):
    """Krippendorff's alpha the textbook way: every ordered pair of values of different coders in a unit,
    weighted 1/(m_u - 1), then observed and expected disagreement from pairs of values."""
    data = np.asarray(reliability_data, dtype=float)
    pairs = []
    for unit in data.T:
        values = unit[~np.isnan(unit)]
        m = len(values)
        if m < 2:
            continue
        pairs += [(values[i], values[j], 1.0 / (m - 1)) for i in range(m) for j in range(m) if i != j]
    domain = sorted({a for a, _, _ in pairs})
    marginal = {v: sum(w for a, _, w in pairs if a == v) for v in domain}
    n = sum(marginal.values())

    def delta(a, b):
        if level == "nominal":
            return float(a != b)
        if level == "interval":
            return (a - b) ** 2
        if level == "ratio":
            return ((a - b) / (a + b)) ** 2
        lo, hi = sorted((domain.index(a), domain.index(b)))
        return (sum(marginal[domain[g]] for g in range(lo, hi + 1)) - (marginal[a] + marginal[b]) / 2) ** 2

    observed = sum(w * delta(a, b) for a, b, w in pairs) / n
    expected = sum(marginal[a] * marginal[b] * delta(a, b) for a in domain for b in domain) / (n * (n - 1))
    return 1 - observed / expected


@pytest.mark.parametrize("level, published, full", [("nominal", 0.743, 0.743421), ("ordinal", 0.815, 0.815388),
                                                     ("interval", 0.849, 0.849107), ("ratio", 0.797, 0.797403)])
def test_alpha_reproduces_krippendorffs_published_values(level, published, full):
    alpha = krippendorff_alpha(KRIPPENDORFF_C, level)
    assert round(alpha, 3) == published
    assert alpha == pytest.approx(full, abs=1e-6)


@pytest.mark.parametrize("level, expected", [("nominal", 0.691358), ("ordinal", 0.806721), ("interval", 0.810845)])
def test_alpha_reproduces_the_krippendorff_package_docstring_example(level, expected):
    assert krippendorff_alpha(DOCSTRING_3X15, level) == pytest.approx(expected, abs=1e-6)


def test_alpha_of_nflx_matches_the_reference_values():
    alphas = krippendorff_alphas(nflx_frame(26), by=[], levels=("nominal", "ordinal", "interval"))
    np.testing.assert_allclose(alphas["alpha"], [0.32388, 0.714266, 0.741776], atol=1e-5)
    assert (alphas["n_units"] == 79).all() and (alphas["n_pairable_values"] == 79 * 26).all()


@pytest.mark.parametrize("level", ALPHA_LEVELS)
def test_vectorised_alpha_equals_the_pairable_values_loop_with_missing_data(level):
    rng = np.random.default_rng(11)
    data = rng.integers(1, 6, (7, 25)).astype(float) + np.round(rng.normal(0, 0.7, 25))[None].clip(0, 2)
    data[rng.random(data.shape) < 0.4] = np.nan
    data[:, 3] = np.nan  # a unit nobody rated
    data[1:, 4] = np.nan  # a unit with a single value (not pairable)
    assert krippendorff_alpha(data, level) == pytest.approx(naive_alpha(data, level), abs=1e-12)


def test_long_frame_alpha_is_the_matrix_alpha_per_scale():
    frame = pd.concat([_long(KRIPPENDORFF_C, "sync"), _long(DOCSTRING_3X15, "visual")])
    alphas = krippendorff_alphas(frame, levels=ALPHA_LEVELS).set_index(["scale", "level"])["alpha"]
    for level in ALPHA_LEVELS:
        assert alphas[("sync", level)] == pytest.approx(krippendorff_alpha(KRIPPENDORFF_C, level), abs=1e-12)
        assert alphas[("visual", level)] == pytest.approx(krippendorff_alpha(DOCSTRING_3X15, level), abs=1e-12)


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_variation():
    assert krippendorff_alpha([[1, 2, 3, 4], [1, 2, 3, 4]], "interval") == 1.0
    assert np.isnan(krippendorff_alpha([[3, 3, 3], [3, 3, 3]], "nominal"))
    assert np.isnan(krippendorff_alpha([[1, nan, 3], [nan, 2, nan]], "nominal"))  # nothing pairable


def test_value_domain_fixes_the_order_and_rejects_unknown_values():
    # An unobserved value inside the domain changes nothing for interval or ordinal alpha.
    assert krippendorff_alpha(KRIPPENDORFF_C, "ordinal", value_domain=[1, 2, 3, 4, 5, 6]) == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_C, "ordinal"))
    with pytest.raises(ValueError, match="not in value_domain"):
        krippendorff_alpha(KRIPPENDORFF_C, "ordinal", value_domain=[1, 2, 3])
    counts = np.array([[2, 0], [1, 1]])
    assert krippendorff_alpha_from_counts(counts, [0, 1], "nominal") == pytest.approx(
        krippendorff_alpha([[0, 0], [0, 1]], "nominal"))


# --- split-half reliability ---------------------------------------------------------------------------------


def _complete_panel(seed, n_raters=10, n_items=200, rater_sd=0.5, noise_sd=1.0):
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_items)
    votes = quality[None] + rng.normal(0, rater_sd, (n_raters, 1)) + rng.normal(0, noise_sd, (n_raters, n_items))
    frame = pd.DataFrame({"participant": np.repeat(np.arange(n_raters), n_items),
                          "clip": np.tile(np.arange(n_items), n_raters), "rating": votes.ravel()})
    return frame, quality


def test_split_half_estimates_the_reliability_of_the_full_panels_mos():
    # Reliability of a k-rater mean = var(q) / (var(q) + σ²_e / k); the rater bias is common to all items.
    frame, quality = _complete_panel(0)
    result = split_half_reliability(frame, item="clip", by=[], n_splits=300).iloc[0]
    truth = quality.var(ddof=1) / (quality.var(ddof=1) + 1.0 / 10)
    assert result["spearman_brown_mean"] == pytest.approx(truth, abs=0.02)
    assert result["spearman_brown_split_low"] < result["spearman_brown_mean"] < result["spearman_brown_split_high"]
    assert result["n_participants"] == 10 and result["n_items"] == 200 and result["n_splits"] == 300
    # The mean over random splits is Cronbach's alpha in disguise, i.e. the consistency ICC of the mean.
    icc_c_k = intraclass_correlations(frame, by=[]).set_index("form").at["icc_c_k", "icc"]
    assert result["spearman_brown_mean"] == pytest.approx(icc_c_k, abs=0.01)


def test_split_half_is_reproducible_and_low_for_pure_noise():
    frame, _ = _complete_panel(1)
    first = split_half_reliability(frame, item="clip", by=[], n_splits=50, seed=7)
    again = split_half_reliability(frame, item="clip", by=[], n_splits=50, seed=7)
    pd.testing.assert_frame_equal(first, again)
    noise = frame.assign(rating=np.random.default_rng(2).normal(size=len(frame)))
    assert abs(split_half_reliability(noise, item="clip", by=[], n_splits=50).iloc[0]["spearman_brown_mean"]) < 0.2


def test_split_half_leaves_out_items_missing_from_a_half():
    frame, _ = _complete_panel(3, n_raters=8, n_items=30)
    frame = frame[~((frame["clip"] == 0) & (frame["participant"] > 0))]  # clip 0 rated by one participant only
    result = split_half_reliability(frame, item="clip", by=[], n_splits=20).iloc[0]
    assert np.isfinite(result["spearman_brown_mean"]) and result["n_items"] == 30


# --- summary ----------------------------------------------------------------------------------------------------


def test_agreement_summary_reports_icc_alpha_and_split_half_per_scale():
    frame = nflx_frame(26)
    frame["condition"] = frame["clip"] % 5
    summary = agreement_summary(frame, n_splits=50).iloc[0]
    assert summary["scale"] == "overall" and summary["icc_note"] == ""
    assert summary["icc_a_1"] == pytest.approx(0.744573, abs=1e-6)
    assert summary["icc_a_k"] == pytest.approx(0.986978, abs=1e-6)
    assert summary["icc_a_1_ci_low"] < summary["icc_a_1"] < summary["icc_a_1_ci_high"]
    assert summary["alpha_ordinal"] == pytest.approx(0.714266, abs=1e-6)
    assert summary["alpha_interval"] == pytest.approx(0.741776, abs=1e-6)
    assert 0 < summary["split_half_spearman_brown"] <= 1


def test_agreement_summary_explains_a_missing_icc_for_a_partial_design():
    rng = np.random.default_rng(0)
    rows = [(p, c, c % 4, "sync", float(rng.integers(1, 6))) for p in range(12) for c in range(24) if (p + c) % 3]
    frame = pd.DataFrame(rows, columns=["participant", "clip", "condition", "scale", "rating"])
    frame = frame[~((frame["participant"] == 0) & (frame["clip"] % 2 == 0))]
    summary = agreement_summary(frame, n_splits=20).iloc[0]
    assert np.isnan(summary["icc_a_1"]) and "complete crossed design" in summary["icc_note"]
    assert np.isfinite(summary["alpha_interval"])
