"""Crossed random-intercept mixed models: the fast engine against statsmodels, closed-form ANOVA and
simulated truth."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.mixed import (
    FIT_COLUMNS,
    _build_design,
    _CrossedLMM,
    fit_mixed_model,
    fit_mixed_model_by_scale,
    holm_adjust,
)

DATA = Path(__file__).parent / "data"


def _crossed_study(seed, *, n_participants=25, clips_per_condition=10, effects=(0.0, 0.5, -0.3), sampled=0.6,
                   sd_participant=0.4, sd_clip=0.5, sd_residual=0.7, sd_content=0.0, intercept=3.0):
    """Clips nested in conditions, participants crossed with clips, a random subset of pairs rated."""
    rng = np.random.default_rng(seed)
    effects = np.asarray(effects)
    n_clips = clips_per_condition * len(effects)
    condition_of_clip = np.repeat(np.arange(len(effects)), clips_per_condition)
    participant_bias = rng.normal(0, sd_participant, n_participants)
    clip_effect = rng.normal(0, sd_clip, n_clips)
    content_effect = rng.normal(0, sd_content, 4)  # source content = clip % 4, shared across conditions
    participant, clip = (a.ravel() for a in np.meshgrid(np.arange(n_participants), np.arange(n_clips), indexing="ij"))
    rated = rng.random(participant.size) < sampled
    participant, clip = participant[rated], clip[rated]
    rating = (intercept + effects[condition_of_clip[clip]] + participant_bias[participant] + clip_effect[clip]
              + content_effect[clip % 4] + rng.normal(0, sd_residual, participant.size))
    names = np.array([f"c{k}" for k in range(len(effects))])
    return pd.DataFrame({"participant": participant, "clip": clip, "condition": names[condition_of_clip[clip]],
                         "content": clip % 4, "rating": rating})


def _statsmodels_gamma(fit_sm_model, fit_sm_result, random_names):
    """statsmodels' vcomp/scale in our factor order (its names are the internal re<i>_ columns)."""
    by_name = {random_names[int(name[2:-1])]: value
               for name, value in zip(fit_sm_model.exog_vc.names, fit_sm_result.vcomp)}
    return np.array([by_name[name] for name in random_names]) / fit_sm_result.scale


@pytest.mark.parametrize("reml", [True, False])
def test_fast_engine_finds_the_statsmodels_fit_on_unbalanced_crossed_data(reml):
    data = _crossed_study(1)
    fast = fit_mixed_model(data, reml=reml)
    reference = fit_mixed_model(data, reml=reml, engine="statsmodels")
    assert fast.converged and reference.converged
    # Both optimise the same criterion; statsmodels stops ~1e-5 short of the optimum, the fast engine
    # never lower.
    assert fast.log_likelihood >= reference.log_likelihood - 1e-8
    assert fast.log_likelihood == pytest.approx(reference.log_likelihood, abs=1e-6)
    assert list(fast.fixed_effects["term"]) == list(reference.fixed_effects["term"])
    np.testing.assert_allclose(fast.fixed_effects["estimate"], reference.fixed_effects["estimate"], atol=1e-4)
    np.testing.assert_allclose(fast.fixed_effects["se"], reference.fixed_effects["se"], rtol=1e-4)
    np.testing.assert_allclose(fast.variance_components["variance"], reference.variance_components["variance"],
                               rtol=1e-3)
    np.testing.assert_allclose(fast.contrasts["p_holm"], reference.contrasts["p_holm"], rtol=1e-3)


@pytest.mark.parametrize(("reml", "random"), [(True, ("participant", "clip")), (False, ("participant", "clip")),
                                              (True, ("participant", "clip", "content"))])
def test_fast_criterion_estimates_and_standard_errors_equal_statsmodels_at_the_same_parameters(reml, random):
    import statsmodels.formula.api as smf

    data = _crossed_study(2, n_participants=18, clips_per_condition=8, sd_content=0.4)
    frame = data.assign(g=0)
    model = smf.mixedlm("rating ~ C(condition)", frame, groups="g", re_formula=None,
                        vc_formula={f"re{i}_": f"0 + C({name})" for i, name in enumerate(random)})
    result = model.fit(reml=reml)
    gamma = _statsmodels_gamma(model, result, random)

    engine = _CrossedLMM(_build_design(data, "rating", "condition", random, None), reml)
    assert engine.deviance(gamma) == pytest.approx(-2.0 * result.llf, rel=1e-11)
    beta, sigma2, fe_cov, usable = engine.estimates(gamma)
    assert usable
    np.testing.assert_allclose(beta, result.fe_params, rtol=1e-9, atol=1e-10)
    assert sigma2 == pytest.approx(result.scale, rel=1e-9)
    np.testing.assert_allclose(np.sqrt(np.diag(fe_cov)), result.bse_fe, rtol=1e-8)


def test_the_analytic_gradient_equals_finite_differences_inside_and_on_the_boundary():
    engine = _CrossedLMM(_build_design(_crossed_study(3), "rating", "condition", ("participant", "clip"), None), True)
    for gamma in (np.array([0.3, 0.5]), np.array([0.0, 0.5])):
        _, gradient = engine.deviance_and_gradient(gamma)
        step = 1e-6
        numeric = [(engine.deviance(gamma + step * e) - engine.deviance(np.maximum(gamma - step * e, 0)))
                   / (step + min(step, gamma @ e)) for e in np.eye(2)]
        np.testing.assert_allclose(gradient, numeric, rtol=1e-4)


def _balanced_sample_data():
    votes = np.loadtxt(DATA / "sureal_sample_data.csv", delimiter=",")
    return votes[~np.isnan(votes).any(axis=1)]  # 78 complete stimuli × 26 subjects


def test_variance_components_on_balanced_data_equal_the_two_way_anova():
    votes = _balanced_sample_data()
    n_clips, n_participants = votes.shape
    grand = votes.mean()
    ms_clip = n_participants * ((votes.mean(axis=1) - grand) ** 2).sum() / (n_clips - 1)
    ms_participant = n_clips * ((votes.mean(axis=0) - grand) ** 2).sum() / (n_participants - 1)
    interaction = votes - votes.mean(axis=1, keepdims=True) - votes.mean(axis=0, keepdims=True) + grand
    ms_residual = (interaction**2).sum() / ((n_clips - 1) * (n_participants - 1))
    # Expected mean squares: E[MS_clip] = σ²_e + S·σ²_clip, E[MS_participant] = σ²_e + J·σ²_participant.
    expected = {"participant": (ms_participant - ms_residual) / n_clips,
                "clip": (ms_clip - ms_residual) / n_participants, "residual": ms_residual}
    clip, participant = (a.ravel() for a in np.meshgrid(np.arange(n_clips), np.arange(n_participants), indexing="ij"))
    data = pd.DataFrame({"clip": clip, "participant": participant, "rating": votes.ravel(), "condition": "all"})

    fit = fit_mixed_model(data)
    variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
    for name, value in expected.items():
        assert variance[name] == pytest.approx(value, rel=1e-6), name
    intercept = fit.fixed_effects.iloc[0]
    assert intercept.estimate == pytest.approx(grand, rel=1e-12)
    # Var(grand mean) = σ²_clip/J + σ²_participant/S + σ²_e/(JS) = (MS_clip + MS_participant − MS_e)/(JS).
    assert intercept.se == pytest.approx(np.sqrt((ms_clip + ms_participant - ms_residual) / votes.size), rel=1e-6)
    assert fit.contrasts.empty and fit.converged and fit.warnings == ()


def test_variance_components_on_the_nflx_public_dataset_equal_the_published_anova_values():
    # statistics.md §6 I: closed-form balanced ANOVA on NFLX_dataset_public_raw (79 PVS × 26 raters).
    table = pd.read_csv(DATA / "nflx_public_votes.csv")
    votes = table.melt(id_vars=["asset_id", "content_id"], var_name="participant", value_name="rating")
    fit = fit_mixed_model(votes.assign(condition="all"), clip="asset_id")
    variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
    assert variance["asset_id"] == pytest.approx(1.404031, abs=2e-6)
    assert variance["participant"] == pytest.approx(0.087606, abs=2e-6)
    assert variance["residual"] == pytest.approx(0.394049, abs=2e-6)
    assert fit.fixed_effects.iloc[0].estimate == pytest.approx(3.544791, abs=1e-6)
    assert fit.fixed_effects.iloc[0].se == pytest.approx(0.146061, abs=1e-6)


def test_variance_components_with_clips_nested_in_conditions_equal_the_balanced_anova():
    data = _crossed_study(4, n_participants=12, clips_per_condition=6, sampled=1.0)
    table = data.pivot(index="clip", columns="participant", values="rating").to_numpy()  # (18, 12)
    conditions = data.groupby("clip")["condition"].first().to_numpy()
    n_clips, n_participants = table.shape
    grand = table.mean()
    clip_means, participant_means = table.mean(axis=1), table.mean(axis=0)
    condition_means = pd.Series(clip_means).groupby(conditions).transform("mean").to_numpy()
    n_conditions, per_condition = len(set(conditions)), n_clips // len(set(conditions))
    ms_clip = n_participants * ((clip_means - condition_means) ** 2).sum() / (n_clips - n_conditions)
    ms_participant = n_clips * ((participant_means - grand) ** 2).sum() / (n_participants - 1)
    interaction = table - clip_means[:, None] - participant_means[None, :] + grand
    ms_residual = (interaction**2).sum() / ((n_clips - 1) * (n_participants - 1))

    fit = fit_mixed_model(data)
    variance = dict(zip(fit.variance_components["component"], fit.variance_components["variance"]))
    assert variance["clip"] == pytest.approx((ms_clip - ms_residual) / n_participants, rel=1e-6)
    assert variance["participant"] == pytest.approx((ms_participant - ms_residual) / n_clips, rel=1e-6)
    assert variance["residual"] == pytest.approx(ms_residual, rel=1e-6)
    # Balanced: the EMMs are the raw condition means, and a contrast's SE is √(2·MS_clip/(S·I_c)).
    raw = data.groupby("condition")["rating"].mean()
    np.testing.assert_allclose(fit.emms["emm"], raw.loc[fit.emms["condition"]].to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(fit.contrasts["se"], np.sqrt(2 * ms_clip / (n_participants * per_condition)),
                               rtol=1e-6)


def test_emms_and_contrasts_follow_from_the_fixed_effects():
    fit = fit_mixed_model(_crossed_study(5, effects=(0.0, 0.5, -0.3, 0.2)), reference_condition="c2")
    fixed = fit.fixed_effects.set_index("term")["estimate"]
    assert list(fit.emms["condition"]) == ["c2", "c0", "c1", "c3"]
    emm = fit.emms.set_index("condition")["emm"]
    assert emm["c2"] == pytest.approx(fixed["Intercept"])
    assert emm["c0"] == pytest.approx(fixed["Intercept"] + fixed["condition[T.c0]"])
    assert len(fit.contrasts) == 6
    for row in fit.contrasts.itertuples():
        assert row.estimate == pytest.approx(emm[row.condition_a] - emm[row.condition_b])
        assert row.ci_low < row.estimate < row.ci_high
    assert (fit.contrasts["p_holm"] >= fit.contrasts["p_value"]).all()
    np.testing.assert_allclose(fit.contrasts["p_holm"], holm_adjust(fit.contrasts["p_value"]))
    assert fit.emms["n"].sum() == fit.n_obs


def test_holm_adjustment_equals_statsmodels_multipletests():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for size in (2, 30):
        p = rng.uniform(0, 0.2, size)
        p[: size // 3] = p[0]  # ties
        np.testing.assert_allclose(holm_adjust(p), multipletests(p, method="holm")[1], rtol=1e-14)
    assert np.isnan(holm_adjust([0.01, np.nan, 0.04])[1])
    np.testing.assert_allclose(holm_adjust([0.01, np.nan, 0.04])[[0, 2]], [0.02, 0.04])


@pytest.mark.slow
def test_simulated_condition_effects_and_means_are_covered_at_the_nominal_rate():
    effects = np.array([0.0, 0.4, -0.3])
    truth = {(f"c{a}", f"c{b}"): effects[a] - effects[b] for a in range(3) for b in range(a + 1, 3)}
    contrast_hits, mean_hits = [], []
    for seed in range(60):
        fit = fit_mixed_model(_crossed_study(100 + seed, n_participants=30, clips_per_condition=20, effects=effects))
        assert fit.converged
        for row in fit.contrasts.itertuples():
            contrast_hits.append(row.ci_low <= truth[(row.condition_a, row.condition_b)] <= row.ci_high)
        for row, mean in zip(fit.emms.itertuples(), 3.0 + effects):
            mean_hits.append(row.ci_low <= mean <= row.ci_high)
    low, high = stats.binom.interval(0.998, len(contrast_hits), 0.95)
    assert low <= sum(contrast_hits) <= high
    assert low <= sum(mean_hits) <= high


def test_boundary_estimates_and_failed_optimisation_are_reported_not_hidden():
    data = _crossed_study(6, n_participants=15, clips_per_condition=6, sd_participant=0.0)
    fast = fit_mixed_model(data)
    assert fast.converged
    assert any("'participant'" in text and "boundary" in text for text in fast.warnings)
    assert fast.variance_components.set_index("component").loc["participant", "variance"] < 1e-6
    # statsmodels struggles on this boundary case; every one of its warnings comes back as text.
    reference = fit_mixed_model(data, engine="statsmodels")
    assert any(text.startswith("ConvergenceWarning: ") for text in reference.warnings)
    assert reference.fit_row()["warnings"] == " | ".join(reference.warnings)

    stopped = fit_mixed_model(_crossed_study(7), max_iterations=1)
    assert not stopped.converged
    assert any("did not converge" in text for text in stopped.warnings)
    assert "did not converge" in stopped.fit_row()["warnings"]


def test_by_scale_fits_each_scale_separately_and_stacks_tidy_tables():
    sync = _crossed_study(8).assign(scale="sync")
    visual = _crossed_study(9).assign(scale="visual")
    tables = fit_mixed_model_by_scale(pd.concat([visual, sync], ignore_index=True))
    assert list(tables.fits["scale"]) == ["sync", "visual"]
    assert list(tables.fits.columns) == ["scale", *FIT_COLUMNS]
    for frame in (tables.fixed_effects, tables.variance_components, tables.emms, tables.contrasts):
        assert frame.columns[0] == "scale"
    alone = fit_mixed_model(visual)
    stacked = tables.emms[tables.emms["scale"] == "visual"].drop(columns="scale").reset_index(drop=True)
    pd.testing.assert_frame_equal(stacked, alone.emms)
    assert tables.results["sync"].n_obs == len(sync)


def test_missing_values_are_dropped_and_bad_arguments_refused():
    data = _crossed_study(10)
    with_gaps = data.copy()
    with_gaps.loc[:9, "rating"] = np.nan
    assert fit_mixed_model(with_gaps).n_obs == len(data) - 10
    with pytest.raises(ValueError, match="engine"):
        fit_mixed_model(data, engine="lme4")
    with pytest.raises(KeyError):
        fit_mixed_model(data, clip="stimulus")
    with pytest.raises(ValueError, match="reference_condition"):
        fit_mixed_model(data, reference_condition="nope")
