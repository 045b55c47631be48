"""Metrics against MOS: correlations with crossed-bootstrap CIs, rm_corr, P.1401 and ranking agreement, checked
against scipy, pingouin's published example, SUREAL's sanity values and simulated studies with a known truth."""

import numpy as np
import pandas as pd
import pingouin
import pytest
from scipy import stats

from analysis.metric_validity import (
    CORRELATION_COLUMNS,
    condition_rankings,
    epsilon_insensitive_rmse,
    fit_monotonic_polynomial,
    metric_correlations,
    metric_orientation,
    metric_rm_correlations,
    outlier_ratio,
    p1401_evaluation,
    ranking_agreement,
    repeated_measures_correlation,
    rmse,
    weighted_kendall_tau_b,
    weighted_midranks,
    weighted_pearson,
    weighted_spearman,
)


def crossed_study(seed, n_raters=10, n_clips=40, n_conditions=4, metric_noise=0.75, noise=1.0):
    """Every rater rates every clip once: rating = q_clip + b_rater + e (continuous). Metrics: lse_c = exp(q + u)
    (monotonic in a noisy copy of q), fid = −(q + u) (lower is better), junk = unrelated to q."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_clips)
    votes = quality[None] + rng.normal(0, 0.5, (n_raters, 1)) + rng.normal(0, noise, (n_raters, n_clips))
    noisy_copy = quality + rng.normal(0, metric_noise, n_clips)
    junk = rng.normal(0, 1, n_clips)
    clip = np.tile(np.arange(n_clips), n_raters)
    return pd.DataFrame({"participant": np.repeat(np.arange(n_raters), n_clips), "clip": clip,
                         "condition": clip % n_conditions, "content": clip // n_conditions, "scale": "sync",
                         "rating": votes.ravel(), "lse_c": np.exp(noisy_copy)[clip], "fid": -noisy_copy[clip],
                         "junk": junk[clip]})


def clip_table(data, metric):
    mos = data.groupby("clip")["rating"].mean()
    return mos, data.groupby("clip")[metric].first()[mos.index]


# --- weighted correlations ----------------------------------------------------------------------------------


def test_weighted_correlations_equal_scipy_on_the_expanded_sample():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, (25, 15)).astype(float)
    y = rng.integers(0, 4, (25, 15)) + 0.3 * x
    w = rng.integers(0, 3, (25, 15)).astype(float)
    pearson, spearman = weighted_pearson(x, y, w), weighted_spearman(x, y, w)
    kendall_dense = weighted_kendall_tau_b(x, y, w)
    kendall_shared = weighted_kendall_tau_b(x[0], y, w, algorithm="blocked")
    kendall_shared_dense = weighted_kendall_tau_b(x[0], y, w, algorithm="dense")
    for b in range(25):
        xe, ye, x0e = (np.repeat(v, w[b].astype(int)) for v in (x[b], y[b], x[0]))
        assert pearson[b] == pytest.approx(stats.pearsonr(xe, ye)[0], abs=1e-12)
        assert spearman[b] == pytest.approx(stats.spearmanr(xe, ye)[0], abs=1e-12)
        assert kendall_dense[b] == pytest.approx(stats.kendalltau(xe, ye)[0], abs=1e-12)
        assert kendall_shared[b] == pytest.approx(stats.kendalltau(x0e, ye)[0], abs=1e-12)
        assert kendall_shared_dense[b] == pytest.approx(kendall_shared[b], abs=1e-12)


def test_blocked_kendall_handles_many_items_and_ties_in_x():
    rng = np.random.default_rng(2)
    x = np.round(rng.normal(size=300), 1)  # many ties
    y = np.round(x[None] + rng.normal(size=(4, 300)), 1)
    w = rng.integers(0, 3, (4, 300)).astype(float)
    blocked = weighted_kendall_tau_b(x, y, w)
    for b in range(4):
        assert blocked[b] == pytest.approx(stats.kendalltau(np.repeat(x, w[b].astype(int)),
                                                            np.repeat(y[b], w[b].astype(int)))[0], abs=1e-12)


def test_midranks_match_scipy_and_ignore_zero_weight_items():
    values = np.array([[3.0, 1.0, 3.0, 2.0, 5.0]])
    np.testing.assert_allclose(weighted_midranks(values, np.ones_like(values)), [stats.rankdata(values[0])])
    ranks = weighted_midranks(values, np.array([[1.0, 0.0, 1.0, 2.0, 1.0]]))
    np.testing.assert_allclose(ranks[0, [0, 2, 3, 4]], [3.5, 3.5, 1.5, 5.0])


def test_correlations_reproduce_sureals_perf_metric_values():
    ones = np.ones((1, 4))
    assert rmse([1, 2, 3, 4], [1, 2, 3, 5]) == 0.5
    assert weighted_pearson(np.array([[1, 2, 3, 4.0]]), np.array([[1, 2, 3, 5.0]]), ones)[0] == pytest.approx(
        0.98270762982399085, abs=1e-12)
    assert weighted_spearman(np.array([[1, 2, 3, 4.0]]), np.array([[1, 2, 5, 3.0]]), ones)[0] == pytest.approx(0.8)
    assert weighted_kendall_tau_b(np.array([1, 2, 3, 4.0]), np.array([[1, 2, 3, 5.0]]), ones)[0] == 1.0


# --- metric_correlations ---------------------------------------------------------------------------------------


def test_point_estimates_equal_scipy_at_clip_and_condition_level():
    data = crossed_study(0)
    table = metric_correlations(data, ["lse_c", "junk"], n_boot=0).set_index(["metric", "method"])
    assert list(metric_correlations(data, ["junk"], n_boot=0).columns) == ["scale", *CORRELATION_COLUMNS]
    mos, lse = clip_table(data, "lse_c")
    assert table.loc[("lse_c", "pearson"), "correlation"] == pytest.approx(stats.pearsonr(lse, mos)[0], abs=1e-12)
    assert table.loc[("lse_c", "spearman"), "correlation"] == pytest.approx(stats.spearmanr(lse, mos)[0], abs=1e-12)
    assert table.loc[("lse_c", "kendall"), "correlation"] == pytest.approx(stats.kendalltau(lse, mos)[0], abs=1e-12)
    assert table.loc[("lse_c", "kendall"), "p_value"] == pytest.approx(stats.kendalltau(lse, mos).pvalue, abs=1e-12)
    assert (table["n_items"] == 40).all() and (table["n_participants"] == 10).all()
    by_condition = metric_correlations(data, ["lse_c"], level="condition", n_boot=0).set_index("method")
    condition_mos = data.groupby("condition")["rating"].mean()
    condition_lse = data.groupby("clip")[["condition", "lse_c"]].first().groupby("condition")["lse_c"].mean()
    assert by_condition.loc["pearson", "correlation"] == pytest.approx(
        stats.pearsonr(condition_lse, condition_mos)[0], abs=1e-12)
    assert by_condition.loc["pearson", "n_items"] == 4


def test_lower_is_better_metrics_are_negated_and_say_so():
    assert metric_orientation(["fid", "lse_d", "lmd", "ifc", "lpips", "lse_c", "ssim"]) == {
        "fid": False, "lse_d": False, "lmd": False, "ifc": False, "lpips": False, "lse_c": True, "ssim": True}
    assert metric_orientation(["fid"], {"fid": True}) == {"fid": True}
    data = crossed_study(1)
    table = metric_correlations(data, ["fid"], methods=["pearson"], n_boot=0).iloc[0]
    mos, fid = clip_table(data, "fid")
    assert not table["higher_is_better"] and table["sign"] == -1
    assert table["correlation"] == pytest.approx(-stats.pearsonr(fid, mos)[0], abs=1e-12)
    assert table["correlation"] > 0.5


def test_bootstrap_is_reproducible_and_resampling_both_ways_is_widest():
    data = crossed_study(2)
    kwargs = dict(methods=["pearson"], n_boot=400)
    crossed = metric_correlations(data, ["lse_c"], seed=5, **kwargs).iloc[0]
    assert crossed.equals(metric_correlations(data, ["lse_c"], seed=5, **kwargs).iloc[0])
    raters_only = metric_correlations(data, ["lse_c"], seed=5, resample=["participant"], **kwargs).iloc[0]
    clips_only = metric_correlations(data, ["lse_c"], seed=5, resample=["clip"], **kwargs).iloc[0]
    assert crossed["n_boot_valid"] == 400
    assert raters_only["boot_se"] < clips_only["boot_se"] < crossed["boot_se"]
    assert crossed["ci_low"] < crossed["correlation"] < crossed["ci_high"]


def test_a_clip_nobody_rated_in_a_replicate_drops_out_instead_of_breaking_it():
    rng = np.random.default_rng(3)
    rows = [(p, c, c % 3, "sync", float(rng.integers(1, 6))) for c in range(30) for p in ((c % 6), (c % 6) + 1)]
    data = pd.DataFrame(rows, columns=["participant", "clip", "condition", "scale", "rating"])
    data["ssim"] = data["clip"] * 0.01
    table = metric_correlations(data, ["ssim"], n_boot=200)
    assert (table["n_boot_valid"] == 200).all() and table["ci_low"].notna().all()


def test_a_metric_that_varies_within_a_clip_is_refused():
    data = crossed_study(4)
    data.loc[0, "lse_c"] = 123.0
    with pytest.raises(ValueError, match="constant within a clip"):
        metric_correlations(data, ["lse_c"], n_boot=0)


@pytest.mark.slow
def test_cis_cover_the_true_correlation_at_about_the_nominal_rate_and_cover_zero_for_an_unrelated_metric():
    # (metric, MOS of 10 raters) is bivariate normal across clips with ρ = 1/√((1 + 0.75²)(1 + 1/10));
    # Spearman and Kendall of a monotonic transform follow from ρ (Pearson/Kendall/Spearman for the normal).
    rho = 1.0 / np.sqrt((1 + 0.75**2) * (1 + 1.0 / 10))
    truth = {("fid", "pearson"): rho, ("lse_c", "spearman"): 6 / np.pi * np.arcsin(rho / 2),
             ("lse_c", "kendall"): 2 / np.pi * np.arcsin(rho)}
    covered = dict.fromkeys(truth, 0)
    zero_covered, widths, seeds = 0, [], range(40)
    for seed in seeds:
        table = metric_correlations(crossed_study(100 + seed), ["fid", "lse_c", "junk"], n_boot=300,
                                    seed=seed).set_index(["metric", "method"])
        for key, value in truth.items():
            covered[key] += table.loc[key, "ci_low"] <= value <= table.loc[key, "ci_high"]
        zero_covered += table.loc[("junk", "spearman"), "ci_low"] <= 0 <= table.loc[("junk", "spearman"), "ci_high"]
        widths.append(table.loc[("fid", "pearson"), "ci_high"] - table.loc[("fid", "pearson"), "ci_low"])
    for key, count in covered.items():
        assert count / len(seeds) >= 0.85, key
    assert zero_covered / len(seeds) >= 0.85
    # Not covering by being uselessly wide: the Fisher-z interval for n = 40 is about 0.27 wide at this ρ.
    assert np.mean(widths) < 0.45


# --- repeated-measures correlation ----------------------------------------------------------------------------


def test_rm_corr_reproduces_pingouins_bland_altman_example():
    result = repeated_measures_correlation(pingouin.read_dataset("rm_corr"), "pH", "PacO2", "Subject").iloc[0]
    assert result["r"] == pytest.approx(-0.5067697, abs=1e-6)
    assert result["dof"] == 38
    assert result["p_value"] == pytest.approx(0.0008471, abs=1e-6)
    assert (round(result["ci_low"], 2), round(result["ci_high"], 2)) == (-0.71, -0.23)
    assert result["power"] == pytest.approx(0.929579, abs=1e-6)


def test_rm_corr_is_the_pearson_correlation_after_removing_each_sources_mean():
    data = crossed_study(5)
    table = metric_rm_correlations(data, ["fid"]).iloc[0]
    mos, fid = clip_table(data, "fid")
    content = data.groupby("clip")["content"].first()[mos.index]
    x = -fid - (-fid).groupby(content).transform("mean")
    y = mos - mos.groupby(content).transform("mean")
    assert table["r"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-10)
    assert table["dof"] == 40 - 10 - 1 and table["n_subjects"] == 10 and table["sign"] == -1


# --- P.1401 -------------------------------------------------------------------------------------------------


def test_p1401_error_figures_by_hand():
    mos = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    predicted = np.array([1.5, 2.0, 2.0, 4.2, 5.0])
    ci = np.array([0.2, 0.1, 0.3, 0.1, 0.1])
    # errors 0.5, 0, 1, 0.2, 0 → beyond ci: 0.3, 0, 0.7, 0.1, 0
    assert rmse(mos, predicted, n_params=4) == pytest.approx(np.sqrt((0.25 + 1 + 0.04) / 1))
    assert rmse(mos, predicted, n_params=2) == pytest.approx(np.sqrt(1.29 / 3))
    assert epsilon_insensitive_rmse(mos, predicted, ci, n_params=2) == pytest.approx(np.sqrt((0.09 + 0.49 + 0.01) / 3))
    assert outlier_ratio(mos, predicted, ci) == pytest.approx(3 / 5)


def test_monotonic_fit_equals_least_squares_when_the_cubic_is_monotonic():
    x = np.linspace(0, 10, 40)
    y = 0.1 * x**3 - x**2 + 4 * x + np.random.default_rng(0).normal(0, 0.1, 40)
    fit = fit_monotonic_polynomial(x, y)
    np.testing.assert_allclose(fit.coef, np.polyfit(x, y, 3)[::-1], atol=1e-8)
    assert fit.min_slope > 0


def test_monotonic_fit_is_monotonic_everywhere_on_the_range_and_optimal():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(-3, 7, 50))
    y = np.where(x < 2, x, 4 - 0.5 * x) + rng.normal(0, 0.2, 50)  # rises then falls
    fit = fit_monotonic_polynomial(x, y)
    grid = np.linspace(x.min(), x.max(), 20001)
    assert np.diff(fit(grid)).min() >= -1e-9
    assert fit.min_slope >= -1e-9
    sse = np.sum((fit(x) - y) ** 2)
    assert sse > np.sum((np.polyval(np.polyfit(x, y, 3), x) - y) ** 2)  # the constraint binds
    assert sse <= np.sum((np.polyval(np.polyfit(x, y, 1), x) - y) ** 2)  # an increasing line is feasible
    # Independent solution: when the constraint binds, f' touches 0 at an end of the range or has a double root
    # (f' = f'' = 0) inside it. Solve the equality-constrained least squares for each case (inner touch points
    # on a fine grid) and keep the best monotonic one.
    assert sse == pytest.approx(_best_touching_cubic_sse(x, y), rel=1e-5)


def _best_touching_cubic_sse(x, y):
    design = np.vander(x, 4, increasing=True)

    def slope(t):
        return np.array([0.0, 1.0, 2 * t, 3 * t**2])

    def curvature(t):
        return np.array([0.0, 0.0, 2.0, 6 * t])

    def constrained_fit(rows):
        constraints = np.array(rows)
        kkt = np.block([[2 * design.T @ design, constraints.T], [constraints, np.zeros((len(rows), len(rows)))]])
        rhs = np.concatenate([2 * design.T @ y, np.zeros(len(rows))])
        return np.linalg.solve(kkt, rhs)[:4]

    low, high = x.min(), x.max()
    cases = [[slope(low)], [slope(high)], [slope(low), slope(high)]]
    cases += [[slope(t), curvature(t)] for t in np.linspace(low, high, 2001)[1:-1]]
    grid = np.linspace(low, high, 2001)
    best = np.inf
    for rows in cases:
        coef = constrained_fit(rows)
        if (np.polynomial.Polynomial(coef).deriv()(grid) >= -1e-9).all():
            best = min(best, float(np.sum((design @ coef - y) ** 2)))
    return best


def test_monotonic_fit_of_decreasing_data_is_flat_and_decreasing_fits_mirror():
    x = np.linspace(0, 10, 30)
    y = -x + np.random.default_rng(2).normal(0, 0.1, 30)
    flat = fit_monotonic_polynomial(x, y)
    np.testing.assert_allclose(flat(x), y.mean(), atol=1e-7)
    mirrored = fit_monotonic_polynomial(x, -y, increasing=False)
    np.testing.assert_allclose(mirrored(x), -y.mean(), atol=1e-7)
    decreasing = fit_monotonic_polynomial(x, y, increasing=False)
    np.testing.assert_allclose(decreasing.coef, np.polyfit(x, y, 3)[::-1], atol=1e-6)


def test_p1401_evaluation_matches_a_hand_computation_with_linear_mapping():
    data = crossed_study(6, n_conditions=8)
    table = p1401_evaluation(data, ["lse_c"], mapping="linear").iloc[0]
    per_condition = data.groupby("condition")["rating"].agg(["mean", "std", "count"])
    lse = data.groupby("clip")[["condition", "lse_c"]].first().groupby("condition")["lse_c"].mean()
    slope, intercept = np.polyfit(lse, per_condition["mean"], 1)
    predicted = intercept + slope * lse
    error = per_condition["mean"] - predicted
    ci = stats.t.ppf(0.975, per_condition["count"] - 1) * per_condition["std"] / np.sqrt(per_condition["count"])
    assert table["n_items"] == 8 and table["n_params"] == 2
    assert table["rmse"] == pytest.approx(np.sqrt(np.sum(error**2) / 6), rel=1e-6)
    assert table["rmse_star"] == pytest.approx(np.sqrt(np.sum(np.maximum(0, np.abs(error) - ci) ** 2) / 6), rel=1e-6)
    assert table["outlier_ratio"] == pytest.approx(np.mean(np.abs(error) > ci))
    assert (table["coef_1"], table["coef_0"]) == pytest.approx((slope, intercept), rel=1e-6)
    assert table["pearson_mapped"] == pytest.approx(abs(stats.pearsonr(lse, per_condition["mean"])[0]), abs=1e-9)
    assert table["spearman"] == pytest.approx(stats.spearmanr(lse, per_condition["mean"])[0], abs=1e-12)


def test_p1401_cubic_mapping_uses_four_parameters_and_two_se_bound_on_request():
    data = crossed_study(7, n_conditions=8)
    cubic = p1401_evaluation(data, ["fid", "junk"], level="clip").set_index("metric")
    assert (cubic["n_params"] == 4).all() and (cubic["n_items"] == 40).all()
    assert cubic.loc["fid", "rmse"] < cubic.loc["junk", "rmse"]
    assert cubic.loc["fid", "min_slope"] >= -1e-9
    two_se = p1401_evaluation(data, ["fid"], level="clip", outlier_bound="two_se").iloc[0]
    assert two_se["outlier_bound"] == "two_se" and 0 <= two_se["outlier_ratio"] <= 1
    few = p1401_evaluation(crossed_study(8, n_conditions=4), ["fid"]).iloc[0]
    assert np.isnan(few["rmse"]) and "too few" in few["note"]


# --- ranking agreement ------------------------------------------------------------------------------------------


def _ordered_study(seed, n_conditions=6):
    rng = np.random.default_rng(seed)
    rows = []
    for condition in range(n_conditions):
        for clip in range(5):
            for rater in range(12):
                rows.append((rater, f"m{condition}c{clip}", f"m{condition}", "sync",
                             float(np.clip(np.rint(1 + 0.8 * condition + rng.normal(0, 0.7)), 1, 5))))
    data = pd.DataFrame(rows, columns=["participant", "clip", "condition", "scale", "rating"])
    level = data["condition"].str[1:].astype(int)
    data["lse_c"] = level + 0.01 * data["clip"].str[-1].astype(int)  # orders conditions as quality does
    data["lse_d"] = 10 - level  # lower is better, also right
    data["ssim"] = -level  # higher is better but ordered backwards: wrong
    return data


def test_ranking_agreement_of_right_wrong_and_reversed_metrics():
    summary, distribution = ranking_agreement(_ordered_study(0), ["lse_c", "lse_d", "ssim"], n_boot=300,
                                              return_distribution=True)
    summary = summary.set_index("metric")
    assert summary.loc["lse_c", "kendall_tau"] == pytest.approx(1.0)
    assert summary.loc["lse_d", "kendall_tau"] == pytest.approx(1.0) and summary.loc["lse_d", "sign"] == -1
    assert summary.loc["ssim", "kendall_tau"] == pytest.approx(-1.0)
    assert summary.loc["lse_c", "top_agrees"] and not summary.loc["ssim", "top_agrees"]
    assert summary.loc["lse_c", "p_value"] == pytest.approx(stats.kendalltau(range(6), range(6)).pvalue)
    assert summary.loc["lse_c", "ci_low"] > 0.5 and summary.loc["ssim", "ci_high"] < -0.5
    assert 0.5 < summary.loc["lse_c", "boot_top_agreement"] <= 1.0
    assert summary.loc["ssim", "boot_top_agreement"] == 0.0
    assert list(distribution.columns) == ["scale", "metric", "replicate", "kendall_tau"]
    assert len(distribution) == 3 * 300
    lse = distribution[distribution["metric"] == "lse_c"]["kendall_tau"]
    assert summary.loc["lse_c", "boot_mean"] == pytest.approx(lse.mean())
    assert summary.loc["lse_c", "ci_low"] == pytest.approx(lse.quantile(0.025))


def test_condition_rankings_rank_one_is_best_for_both():
    ranks = condition_rankings(_ordered_study(1), ["lse_d"]).set_index("condition")
    assert ranks.loc["m5", "mos_rank"] == 1 and ranks.loc["m5", "metric_rank"] == 1
    assert ranks.loc["m0", "metric_value"] == 10  # raw value, not negated
    assert (ranks["mos_rank"] == ranks["metric_rank"]).all()
