"""Observer screening, checked against SUREAL's published rejections and on simulated raters with known truth."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.mos import mos_table
from analysis.screening import (
    DECISION_COLUMNS,
    bt500_screening,
    bt1788_correlation_screening,
    cross_scale_straight_lining_screening,
    drop_rejected,
    p913_correlation_screening,
    rejected_participants,
    screen_participants,
    straight_lining_screening,
    z_score_screening,
)

from tests.analysis.datasets import nflx_frame, nflx_votes


def test_the_embedded_nflx_votes_are_sureals():
    # Checksums from SUREAL's own tests: grand MOS of the 26 regular subjects (statistics.md §6A) and the
    # reconstruction statistics of SR_MOS on last4outliers (routine_test, §6B), which use every kept vote.
    votes = nflx_votes()
    assert votes.shape == (79, 30)
    assert votes[:, :26].mean() == pytest.approx(3.544790652385589, abs=1e-12)
    kept = votes[:, [s for s in range(30) if s not in (26, 28, 29)]]
    reconstruction = np.repeat(kept.mean(axis=1, keepdims=True), kept.shape[1], axis=1)
    assert stats.pearsonr(kept.ravel(), reconstruction.ravel())[0] == pytest.approx(0.8464373811744285, abs=1e-10)
    assert stats.spearmanr(kept.ravel(), reconstruction.ravel())[0] == pytest.approx(0.8177055264518673, abs=1e-10)
    assert np.sqrt(((kept - reconstruction) ** 2).mean()) == pytest.approx(0.7245056285684048, abs=1e-10)


# --- BT.500 -------------------------------------------------------------------------------------------------


def test_bt500_rejects_the_subjects_sureal_rejects_on_nflx_last4outliers():
    decisions = bt500_screening(nflx_frame(), by=[])
    assert rejected_participants(decisions) == [26, 28, 29]


def test_bt500_with_the_sample_standard_deviation_rejects_26_and_29():
    # statistics.md §2.1: BT.500's text implies N - 1; that changes the result on this dataset.
    assert rejected_participants(bt500_screening(nflx_frame(), by=[], ddof=1)) == [26, 29]


def test_mos_without_the_bt500_rejected_matches_sureals_sr_mos():
    data = nflx_frame()
    kept = drop_rejected(data, bt500_screening(data, by=[]))
    mos = mos_table(kept, by=["clip"]).set_index("clip")["mos"]
    first, second_last = 9, 78  # quality_scores[0] and [-2] in the file's order
    assert mos[first] == pytest.approx(1.3333333333333333, abs=1e-4)
    assert mos[second_last] == pytest.approx(4.555555555555555, abs=1e-4)
    assert kept["participant"].nunique() == 27


def _bt500_by_the_text(votes: np.ndarray, ddof: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P, Q and the vote count per observer, looping over presentations as BT.500 A1-2.3.1 describes."""
    n_stimuli, n_observers = votes.shape
    p, q, n = np.zeros(n_observers), np.zeros(n_observers), np.zeros(n_observers)
    for stimulus in range(n_stimuli):
        present = ~np.isnan(votes[stimulus])
        u = votes[stimulus, present]
        mean = u.mean()
        s = u.std(ddof=ddof)
        beta2 = stats.kurtosis(u, fisher=False) if u.std() > 0 else np.nan
        bound = (2.0 if 2 <= beta2 <= 4 else np.sqrt(20.0)) * s
        for observer in np.flatnonzero(present):
            n[observer] += 1
            if s == 0:
                continue
            p[observer] += votes[stimulus, observer] >= mean + bound
            q[observer] += votes[stimulus, observer] <= mean - bound
    return p, q, n


def test_bt500_statistics_equal_a_loop_over_presentations_on_a_partial_design():
    rng = np.random.default_rng(3)
    votes = np.clip(np.rint(3 + rng.normal(0, 1, (40, 1)) + rng.normal(0, 0.9, (40, 25))), 1, 5)
    votes[:, 24] = rng.integers(1, 6, 40)  # a random voter
    votes[rng.random(votes.shape) < 0.3] = np.nan
    frame = pd.DataFrame([(s, e, "sync", votes[e, s]) for e in range(40) for s in range(25)
                          if not np.isnan(votes[e, s])], columns=["participant", "clip", "scale", "rating"])
    decisions = bt500_screening(frame).set_index("participant")
    p, q, n = _bt500_by_the_text(votes)
    np.testing.assert_allclose(decisions["statistic"].to_numpy(), (p + q) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(decisions["secondary_statistic"].to_numpy(), np.abs(p - q) / (p + q))
    np.testing.assert_array_equal(decisions["n_ratings"].to_numpy(), n)
    expected = ((p + q) / n > 0.05) & (np.abs(p - q) / np.where(p + q > 0, p + q, np.nan) < 0.3)
    np.testing.assert_array_equal(decisions["rejected"].to_numpy(), expected)
    assert decisions.loc[24, "rejected"]


def test_bt500_counts_unanimous_presentations_as_outliers_only_in_sureals_mode():
    # Ten presentations everybody scores 5 and one voter's outlier vote elsewhere.
    rows = [(s, f"same{e}", 5.0) for e in range(10) for s in range(6)]
    rows += [(s, f"varied{e}", float(3 + (s % 2))) for e in range(10) for s in range(6)]
    frame = pd.DataFrame(rows, columns=["participant", "clip", "rating"])
    default = bt500_screening(frame, by=[])
    sureal = bt500_screening(frame, by=[], zero_spread_counts_as_outlier=True)
    assert (default.loc[default["participant"] == 0, "statistic"] == 0).all()
    # SUREAL's loop: with S = 0 each unanimous vote is both >= and <= the mean: 10 P and 10 Q out of 20 votes.
    assert sureal.loc[sureal["participant"] == 0, "statistic"].item() == pytest.approx(20 / 20)
    assert rejected_participants(default) == []


def test_bt500_keeps_everyone_when_everyone_would_be_rejected():
    # 20 observers, 40 presentations. On each, one observer votes 5 and one votes 1, ten vote 2 or 4 and eight
    # vote 3: mean 3, S = √0.9, β2 = 2.1/0.81 ∈ [2, 4], so the bounds are 3 ± 1.90 and exactly those two votes
    # are outside. Rotating the roles gives every observer 2 high and 2 low votes out of 40: 10 % > 5 %,
    # perfectly balanced, so the rule would reject everybody.
    rows = []
    for e in range(40):
        high, low = (e % 20, (e + 10) % 20) if e < 20 else ((e + 10) % 20, e % 20)
        others = [s for s in range(20) if s not in (high, low)]
        votes = {high: 5.0, low: 1.0}
        for k, s in enumerate(np.roll(others, e)):
            votes[s] = (2.0, 4.0)[k % 2] if k < 10 else 3.0
        rows += [(s, e, v) for s, v in votes.items()]
    frame = pd.DataFrame(rows, columns=["participant", "clip", "rating"])
    raw = bt500_screening(frame, by=[], keep_all_if_all_rejected=False)
    assert raw["rejected"].all()
    assert raw["statistic"].tolist() == [0.1] * 20 and (raw["secondary_statistic"] == 0).all()
    kept = bt500_screening(frame, by=[])
    assert not kept["rejected"].any()
    assert "none is rejected" in kept["reason"].iloc[0]


# --- correlation rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("correlation, threshold", [("pearson", 0.5117), ("spearman", 0.4991)])
def test_bt1788_rule_reproduces_sureals_thresholds_and_rejections(correlation, threshold):
    decisions = bt1788_correlation_screening(nflx_frame(), by=[], correlation=correlation)
    assert decisions["threshold"].iloc[0] == pytest.approx(threshold, abs=5e-5)
    assert rejected_participants(decisions) == [26, 27, 28, 29]


def test_bt1788_rule_uses_the_maximum_threshold_and_rejects_nobody_on_plain_nflx():
    decisions = bt1788_correlation_screening(nflx_frame(26), by=[])
    assert (decisions["threshold"] == 0.7).all()
    assert rejected_participants(decisions) == []


def test_bt1788_correlations_equal_scipy_per_subject():
    votes = nflx_votes()
    decisions = bt1788_correlation_screening(nflx_frame(), by=[], correlation="spearman")
    expected = [stats.spearmanr(votes[:, s], votes.mean(axis=1))[0] for s in range(30)]
    np.testing.assert_allclose(decisions["statistic"], expected, atol=1e-12)


# --- simulated raters with known truth ------------------------------------------------------------------------


def simulated_panel(seed: int, n_consistent: int = 20, n_conditions: int = 6, clips_per_condition: int = 8,
                    random_raters: int = 1, biased_raters: int = 0, scales=("sync",)) -> pd.DataFrame:
    """Consistent raters (quality + small bias + noise, rounded to 1-5), then uniformly random raters
    (ids 100, 101, ...), then raters with a +1.5 bias (ids 200, ...)."""
    rng = np.random.default_rng(seed)
    quality = np.repeat(np.linspace(-1.6, 1.6, n_conditions), clips_per_condition)
    quality = quality + rng.normal(0, 0.3, len(quality))
    clips = [f"clip{i}" for i in range(len(quality))]
    conditions = [f"model{i // clips_per_condition}" for i in range(len(quality))]
    rows = []
    raters = [(r, "consistent") for r in range(n_consistent)] + [(100 + r, "random") for r in range(random_raters)]
    raters += [(200 + r, "biased") for r in range(biased_raters)]
    for rater, kind in raters:
        bias = rng.normal(0, 0.2) + (1.5 if kind == "biased" else 0.0)
        for scale in scales:
            if kind == "random":
                votes = rng.integers(1, 6, len(quality)).astype(float)
            else:
                votes = np.clip(np.rint(3 + quality + bias + rng.normal(0, 0.5, len(quality))), 1, 5)
            rows += [(rater, c, k, scale, v) for c, k, v in zip(clips, conditions, votes)]
    return pd.DataFrame(rows, columns=["participant", "clip", "condition", "scale", "rating"])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rule", [p913_correlation_screening, bt1788_correlation_screening, z_score_screening])
def test_a_planted_random_rater_is_rejected_and_consistent_raters_are_kept(rule, seed):
    decisions = rule(simulated_panel(seed))
    assert rejected_participants(decisions) == [100]


def test_bt500_rejects_a_planted_random_rater_often_and_consistent_raters_rarely():
    # BT.500 only looks at votes beyond ±2S (or √20·S): on 48 clips a uniformly random voter is caught in about
    # 60 % of panels (62 of 100 seeds), an honest voter in well under 1 % (3 of 2000 honest raters).
    caught, false_alarms, seeds = 0, 0, range(20)
    for seed in seeds:
        rejected = rejected_participants(bt500_screening(simulated_panel(seed)))
        caught += 100 in rejected
        false_alarms += len([r for r in rejected if r != 100])
    assert caught >= 8
    assert false_alarms <= 3  # out of 20 x 20 honest raters


def test_p913_rule_reports_both_correlations_and_needs_both_low():
    data = simulated_panel(4)
    decisions = p913_correlation_screening(data).set_index("participant")
    consistent = decisions.loc[0]
    assert consistent["statistic"] > 0.75 and consistent["secondary_statistic"] > 0.8
    assert decisions.loc[100, "statistic"] < 0.75 and decisions.loc[100, "secondary_statistic"] < 0.8
    assert "r1 = " in decisions.loc[100, "reason"] and "r2 = " in decisions.loc[100, "reason"]
    # r1 by hand: the participant's votes against the clip MOS (own votes included).
    mos = data.groupby("clip")["rating"].mean()
    own = data[data["participant"] == 0].set_index("clip")["rating"]
    assert consistent["statistic"] == pytest.approx(stats.pearsonr(own, mos[own.index])[0], abs=1e-12)
    per_condition = data[data["participant"] == 0].groupby("condition")["rating"].mean()
    condition_mos = data.groupby("condition")["rating"].mean()
    assert consistent["secondary_statistic"] == pytest.approx(
        stats.pearsonr(per_condition, condition_mos[per_condition.index])[0], abs=1e-12)


def test_p913_rule_keeps_a_rater_whose_conditions_are_right_though_clips_are_noisy():
    # Votes = the condition's level only (no clip detail): r1 is modest, r2 is high, so the rule keeps them.
    data = simulated_panel(5)
    levels = {f"model{i}": v for i, v in enumerate([1, 2, 2, 4, 4, 5])}
    mine = data[data["participant"] == 0].copy()
    mine["participant"] = 300
    mine["rating"] = mine["condition"].map(levels).astype(float)
    decisions = p913_correlation_screening(pd.concat([data, mine])).set_index("participant")
    assert decisions.loc[300, "secondary_statistic"] > 0.8
    assert not decisions.loc[300, "rejected"]


def test_z_score_rule_reports_bias_and_rejects_it_only_when_asked():
    data = simulated_panel(6, random_raters=0, biased_raters=1)
    default = z_score_screening(data).set_index("participant")
    assert default.loc[200, "secondary_statistic"] > 1.0
    assert "bias" in default.loc[200, "reason"]
    assert not default["rejected"].any()
    strict = z_score_screening(data, reject_bias=True)
    assert rejected_participants(strict) == [200]


# --- straight-lining ------------------------------------------------------------------------------------------


def _answers(participant, values, scale="sync"):
    return [(participant, f"clip{i}", scale, float(v)) for i, v in enumerate(values)]


def test_straight_lining_rejects_constant_low_variance_and_modal_answerers():
    # On an integer 1-5 scale an SD below 0.25 implies > 93 % one answer; low variance matters for finer scales.
    low_variance = [4.0, 4.1, 3.9, 4.05, 3.95, 4.2, 3.8, 4.0, 4.15, 3.85, 4.1, 3.9]
    rows = (_answers("constant", [4] * 12) + _answers("low_var", low_variance) + _answers("modal", [5] * 11 + [1])
            + _answers("varied", [1, 2, 3, 4, 5, 2, 3, 4, 5, 1, 3, 4]) + _answers("few", [3, 3, 3]))
    frame = pd.DataFrame(rows, columns=["participant", "clip", "scale", "rating"])
    decisions = straight_lining_screening(frame).set_index("participant")
    assert decisions.loc["constant", "rejected"] and "same answer (4) to all 12" in decisions.loc["constant", "reason"]
    assert decisions.loc["low_var", "rejected"] and "low variance" in decisions.loc["low_var", "reason"]
    assert decisions.loc["modal", "rejected"] and "92%" in decisions.loc["modal", "reason"]
    assert not decisions.loc["varied", "rejected"]
    assert not decisions.loc["few", "rejected"] and "not judged" in decisions.loc["few", "reason"]
    assert decisions.loc["low_var", "statistic"] == pytest.approx(np.std(low_variance))
    assert decisions.loc["modal", "secondary_statistic"] == pytest.approx(11 / 12)


def test_identical_answers_on_every_scale_are_flagged_across_scales():
    varied = [1, 2, 3, 4, 5, 2, 3, 4, 5, 1, 3, 4]
    rows = []
    for scale in ("sync", "visual", "overall"):
        rows += _answers("copier", varied, scale)
        rows += _answers("honest", varied if scale == "sync" else [min(5, v + (i % 2)) for i, v in enumerate(varied)],
                         scale)
    frame = pd.DataFrame(rows, columns=["participant", "clip", "scale", "rating"])
    decisions = cross_scale_straight_lining_screening(frame).set_index("participant")
    assert decisions.loc["copier", "rejected"] and decisions.loc["copier", "statistic"] == 1.0
    assert not decisions.loc["honest", "rejected"]


# --- running rules and dropping -------------------------------------------------------------------------------


def test_screen_participants_stacks_rules_with_one_schema_and_says_why():
    data = simulated_panel(7, scales=("sync", "visual"))
    decisions = screen_participants(data)
    assert list(decisions.columns) == ["scale", *DECISION_COLUMNS]
    assert set(decisions["rule"]) == {"bt500", "p913_correlation", "z_score", "straight_lining"}
    assert len(decisions) == 4 * 2 * data["participant"].nunique()
    assert decisions["reason"].str.len().gt(10).all()
    assert rejected_participants(decisions) == [100]


def test_drop_rejected_removes_the_participant_everywhere_or_only_in_the_group():
    data = simulated_panel(8, scales=("sync", "visual"))
    decisions = screen_participants(data, rules=("bt500",))
    decisions.loc[(decisions["participant"] == 100) & (decisions["scale"] == "visual"), "rejected"] = False
    everywhere = drop_rejected(data, decisions)
    assert 100 not in set(everywhere["participant"])
    per_scale = drop_rejected(data, decisions, per_group=("scale",))
    assert set(per_scale.loc[per_scale["participant"] == 100, "scale"]) == {"visual"}
    assert len(drop_rejected(data, decisions, rules=("z_score",))) == len(data)
