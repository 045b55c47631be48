"""Sample-size planning: worked numbers, simulated studies and pilot estimates."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.mixed import fit_mixed_model
from analysis.planning import (
    PLAN_COLUMNS,
    VarianceComponents,
    ci_half_width,
    minimum_detectable_difference,
    mos_variance,
    pilot_variance_components,
    plan_from_pilot,
    plan_sample_size,
    power_for_difference,
)

NOTES = VarianceComponents(participant=0.088, clip=0.20, residual=0.394)  # statistics.md §5 (NFLX ANOVA)


def test_it_reproduces_the_worked_numbers_of_the_research_notes():
    assert round(ci_half_width(NOTES, n_participants=15, n_clips=20), 2) == 0.26
    assert round(ci_half_width(NOTES, n_participants=30, n_clips=30), 2) == 0.20
    assert round(ci_half_width(NOTES, n_participants=100, n_clips=40), 2) == 0.15
    assert round(minimum_detectable_difference(NOTES, n_participants=15, n_clips=20), 2) == 0.42
    assert round(minimum_detectable_difference(NOTES, n_participants=50, n_clips=40), 2) == 0.29
    # One stimulus: n = ⌈(1.96·σ/h)²⌉ ratings.
    expected = {0.66: (168, 42, 19), 0.8: (246, 62, 28), 1.0: (385, 97, 43)}
    for sigma, counts in expected.items():
        single = VarianceComponents(participant=0.0, clip=0.0, residual=sigma**2)
        planned = [int(plan_sample_size(single, n_clips=1, target_half_width=h).ratings_per_clip.iloc[0])
                   for h in (0.1, 0.2, 0.3)]
        assert tuple(planned) == counts, sigma


def _simulated_condition_means(components, *, n_participants, n_clips, ratings_per_clip, replications, rng):
    """MOS of one condition in many simulated studies; participant p rates clips p·k … p·k + k − 1 (mod I)."""
    per_participant = n_clips * ratings_per_clip // n_participants
    pairs = [(p, (p * per_participant + t) % n_clips) for p in range(n_participants) for t in range(per_participant)]
    participant, clip = np.array(pairs).T
    assert np.all(np.bincount(clip, minlength=n_clips) == ratings_per_clip)
    u = rng.normal(0, np.sqrt(components.participant), (replications, n_participants))
    v = rng.normal(0, np.sqrt(components.clip), (replications, n_clips))
    e = rng.normal(0, np.sqrt(components.residual), (replications, len(pairs)))
    return (u[:, participant] + v[:, clip] + e).mean(axis=1)


@pytest.mark.parametrize(("n_participants", "ratings_per_clip"), [(12, 12), (30, 6)])
def test_the_mos_variance_formula_matches_simulated_studies(n_participants, ratings_per_clip):
    components = VarianceComponents(participant=0.15, clip=0.1, residual=0.6)
    means = _simulated_condition_means(components, n_participants=n_participants, n_clips=20,
                                       ratings_per_clip=ratings_per_clip, replications=6000,
                                       rng=np.random.default_rng(0))
    planned = mos_variance(components, n_participants=n_participants, n_clips=20, ratings_per_clip=ratings_per_clip)
    # SD of 6000 draws is known to ±0.9 % (1σ).
    assert np.std(means, ddof=1) == pytest.approx(np.sqrt(planned), rel=0.035)


@pytest.mark.slow
def test_a_planned_study_detects_the_planned_difference_at_the_planned_power():
    components = VarianceComponents(participant=0.1, clip=0.15, residual=0.5)
    plan = plan_sample_size(components, n_clips=20, difference=0.4)
    m = int(plan.ratings_per_clip.iloc[0])
    assert (m, int(plan.n_participants.iloc[0])) == (10, 10)
    expected_power = power_for_difference(components, 0.4, n_participants=m, n_clips=20)
    assert 0.8 <= expected_power < 0.85

    rng = np.random.default_rng(1)
    rejections = 0
    simulations = 150
    for _ in range(simulations):
        clip_condition = np.repeat([0, 1], 20)
        participant, clip = (a.ravel() for a in np.meshgrid(np.arange(m), np.arange(40), indexing="ij"))
        rating = (3.0 + 0.4 * clip_condition[clip] + rng.normal(0, np.sqrt(components.participant), m)[participant]
                  + rng.normal(0, np.sqrt(components.clip), 40)[clip]
                  + rng.normal(0, np.sqrt(components.residual), clip.size))
        data = pd.DataFrame({"participant": participant, "clip": clip, "condition": clip_condition[clip],
                             "rating": rating})
        rejections += fit_mixed_model(data).contrasts["p_value"].iloc[0] < 0.05
    low, high = stats.binom.interval(0.998, simulations, expected_power)
    assert low <= rejections <= high


def _pilot(seed, truth, *, n_participants=60, clips_per_condition=20):
    rng = np.random.default_rng(seed)
    n_clips = 3 * clips_per_condition
    condition = np.repeat([0, 1, 2], clips_per_condition)
    participant, clip = (a.ravel() for a in np.meshgrid(np.arange(n_participants), np.arange(n_clips), indexing="ij"))
    rating = (3.0 + 0.3 * condition[clip] + rng.normal(0, np.sqrt(truth.participant), n_participants)[participant]
              + rng.normal(0, np.sqrt(truth.clip), n_clips)[clip] + rng.normal(0, np.sqrt(truth.residual), clip.size))
    return pd.DataFrame({"participant": participant, "clip": clip, "condition": condition[clip], "rating": rating})


def test_pilot_variance_components_recover_the_simulated_truth():
    truth = VarianceComponents(participant=0.1, clip=0.15, residual=0.5)
    estimate = pilot_variance_components(_pilot(2, truth))
    # About 3 standard errors: √(2/59)·0.1, √(2/57)·0.15 (+ residual share), √(2/3481)·0.5.
    assert estimate.participant == pytest.approx(truth.participant, abs=0.06)
    assert estimate.clip == pytest.approx(truth.clip, abs=0.09)
    assert estimate.residual == pytest.approx(truth.residual, abs=0.04)
    plan = plan_from_pilot(_pilot(2, truth), n_clips=30, target_half_width=0.2)
    assert list(plan.columns) == [*PLAN_COLUMNS, "sigma2_participant", "sigma2_clip", "sigma2_residual"]
    assert plan.sigma2_residual.iloc[0] == pytest.approx(estimate.residual)
    assert plan.feasible.iloc[0] and plan.achieved.iloc[0] <= 0.2


def test_unreachable_targets_are_reported_with_the_plateau():
    plan = plan_sample_size(NOTES, n_clips=5, target_half_width=0.2)
    assert not plan.feasible.iloc[0]
    assert plan.ratings_per_clip.isna().iloc[0] and plan.n_participants.isna().iloc[0]
    # However many raters: 1.96·√(σ²_clip/I).
    assert plan.plateau.iloc[0] == pytest.approx(stats.norm.ppf(0.975) * np.sqrt(0.20 / 5))
    assert plan.plateau.iloc[0] > 0.2


def test_partial_designs_need_more_participants_and_fewer_ratings_per_clip():
    full = plan_sample_size(NOTES, n_clips=30, target_half_width=0.2)
    partial = plan_sample_size(NOTES, n_clips=30, target_half_width=0.2, clips_per_participant=10)
    assert int(full.ratings_per_clip.iloc[0]) == int(full.n_participants.iloc[0]) == 27
    assert int(partial.ratings_per_clip.iloc[0]) == 12 and int(partial.n_participants.iloc[0]) == 36
    assert partial.achieved.iloc[0] == pytest.approx(
        ci_half_width(NOTES, n_participants=36, n_clips=30, ratings_per_clip=12))
    # Different raters for the two conditions: their bias no longer cancels.
    shared = minimum_detectable_difference(NOTES, n_participants=20, n_clips=20)
    separate = minimum_detectable_difference(NOTES, n_participants=20, n_clips=20, shared_participants=False)
    assert separate > shared


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="exactly one"):
        plan_sample_size(NOTES, n_clips=10)
    with pytest.raises(ValueError, match="exactly one"):
        plan_sample_size(NOTES, n_clips=10, target_half_width=0.2, difference=0.3)
    with pytest.raises(ValueError):
        mos_variance(NOTES, n_participants=5, n_clips=10, ratings_per_clip=6)
    with pytest.raises(ValueError):
        VarianceComponents(participant=-0.1, clip=0.1, residual=0.5)
