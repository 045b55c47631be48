"""P.910 Annex E / SUREAL subject model: published outputs, the loop reference, the likelihood and
simulated truth."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis.subject_model import (
    FIT_COLUMNS,
    PARTICIPANT_COLUMNS,
    STIMULUS_COLUMNS,
    fit_subject_model,
    fit_subject_model_by_scale,
    fit_subject_model_loops,
)

DATA = Path(__file__).parent / "data"


def _long(matrix):
    """SUREAL's [stimulus, subject] vote matrix (NaN = missing) as the long frame."""
    stimulus, subject = (a.ravel() for a in np.meshgrid(*map(np.arange, matrix.shape), indexing="ij"))
    frame = pd.DataFrame({"clip": stimulus, "participant": subject, "rating": matrix.ravel()})
    return frame.dropna().reset_index(drop=True)


@pytest.fixture(scope="module")
def demo():
    votes = np.loadtxt(DATA / "sureal_sample_data.csv", delimiter=",")
    expected = json.loads((DATA / "sureal_p910_demo_expected.json").read_text())
    return _long(votes), expected


@pytest.mark.parametrize("fit", [fit_subject_model, fit_subject_model_loops])
def test_it_reproduces_the_published_p910_annex_e_demo_output(demo, fit):
    # 79 PVS × 26 subjects with one missing vote; expected lists from SUREAL's itut_p910_demo/README.md.
    data, expected = demo
    result = fit(data)
    assert result.converged
    np.testing.assert_allclose(result.stimuli["quality"], expected["mos_j"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.stimuli["quality_std"], expected["sos_j"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.participants["bias"], expected["bias_i"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.participants["inconsistency"], expected["inconsistency_i"], rtol=0, atol=1e-10)
    assert result.stimuli["quality"].sum() == pytest.approx(279.99834321763217, abs=1e-9)
    assert result.participants["inconsistency"].sum() == pytest.approx(21.029373725721822, abs=1e-9)


def test_it_reproduces_sureal_on_its_toy_dictionary_dataset():
    # test/resource/test_dataset_os_as_dict.py: Tom, Jerry and Pinokio on three PVS (statistics.md §6 D).
    data = pd.DataFrame({"clip": [0, 0, 0, 1, 1, 1, 2, 2, 2], "participant": ["Tom", "Jerry", "Pinokio"] * 3,
                         "rating": [3, 4, 1, 2, 1, 3, 4, 1, 3]})
    result = fit_subject_model(data)
    quality, bias = result.stimuli["quality"], result.participants["bias"]
    inconsistency = result.participants["inconsistency"]
    assert result.stimuli["mos"].iloc[0] == pytest.approx(2.6667, abs=1e-4)
    assert result.stimuli["mos"].iloc[1] == pytest.approx(2.0, abs=1e-4)
    assert quality.iloc[0] == pytest.approx(2.444444, abs=1e-4)
    assert quality.sum() == pytest.approx(7.333333, abs=1e-4)
    assert np.var(quality) == pytest.approx(0.6666667, abs=1e-4)
    assert np.var(bias) == pytest.approx(0.1728395, abs=1e-4)
    assert inconsistency.sum() == pytest.approx(2.8802123, abs=1e-4)
    assert np.var(inconsistency) == pytest.approx(0.4856715, abs=1e-4)


def _nflx():
    table = pd.read_csv(DATA / "nflx_public_votes.csv")
    votes = table.melt(id_vars=["asset_id", "content_id"], var_name="participant", value_name="rating")
    return votes.assign(participant=votes["participant"].str[1:].astype(int)).rename(columns={"asset_id": "clip"})


def test_it_reproduces_sureals_mle_co_figures_on_the_nflx_public_dataset():
    # SUREAL test/subjective_model_test.py (MLE_CO, ...nocontent) and routine_test.py (AP quality of
    # asset 0), statistics.md §6 A; SUREAL asserts 4 places (6 for dof, log-likelihood, AIC, BIC).
    votes = _nflx()
    assert votes["rating"].mean() == pytest.approx(3.544790652385589, abs=1e-12)
    result = fit_subject_model(votes, quality_std="subject")
    quality = result.stimuli.set_index("clip")["quality"]
    people = result.participants
    assert np.var(quality) == pytest.approx(1.4355485462027884, abs=1e-6)
    assert np.var(people["bias"]) == pytest.approx(0.089032585621095048, abs=1e-6)
    assert people["inconsistency"].sum() == pytest.approx(15.681766163430936, abs=1e-6)
    assert np.var(people["inconsistency"]) == pytest.approx(0.01256558483297778, abs=1e-6)
    assert result.stimuli["quality_std"].sum() == pytest.approx(8.907545016644042, abs=1e-6)
    assert result.fit["dof"] == pytest.approx(0.06377799415774099, abs=1e-12)
    assert result.fit["log_likelihood"] == pytest.approx(-0.8967394355890235, abs=1e-9)
    assert result.fit["aic"] == pytest.approx(1.921034859493529, abs=1e-9)
    assert result.fit["bic"] == pytest.approx(2.2799483527525326, abs=1e-9)
    assert quality[0] == pytest.approx(4.918072566018977, abs=1e-9)
    # With the mean bias moved into ψ, Σψ is ΣMOS (statistics.md §6 A).
    assert quality.sum() == pytest.approx(280.0384615, abs=1e-6)


def test_the_subject_weighted_quality_std_is_sureal_mle_co_ap(demo):
    data, _ = demo
    p910 = fit_subject_model(data)
    subject = fit_subject_model(data, quality_std="subject")
    pd.testing.assert_series_equal(p910.stimuli["quality"], subject.stimuli["quality"])
    # MLE_CO_AP: 1/√(Σ over the stimulus's ratings of 1/υ_s²).
    upsilon = p910.participants.set_index("participant")["inconsistency"]
    expected = data.groupby("clip")["participant"].apply(lambda s: 1 / np.sqrt((1 / upsilon[s] ** 2).sum()))
    np.testing.assert_allclose(subject.stimuli["quality_std"], expected.to_numpy(), rtol=1e-6)
    assert not np.allclose(subject.stimuli["quality_std"], p910.stimuli["quality_std"])


def test_vectorised_and_loop_solvers_agree_on_partial_data_with_repetitions():
    rng = np.random.default_rng(3)
    rows = [(j, s, float(rng.integers(1, 6))) for j in range(25) for s in range(12) if rng.random() < 0.7]
    repeats = [rows[i] for i in rng.choice(len(rows), 30, replace=False)]
    data = pd.DataFrame(rows + [(j, s, float(rng.integers(1, 6))) for j, s, _ in repeats],
                        columns=["clip", "participant", "rating"])
    fast, loops = fit_subject_model(data), fit_subject_model_loops(data)
    assert fast.fit["n_iterations"] == loops.fit["n_iterations"]
    pd.testing.assert_frame_equal(fast.stimuli, loops.stimuli, rtol=1e-10, atol=1e-12)
    pd.testing.assert_frame_equal(fast.participants, loops.participants, rtol=1e-10, atol=1e-12)
    assert fast.fit["dof"] == pytest.approx((25 + 2 * 12 * 2) / len(data))  # repetitions: R = 2


def test_the_fixed_point_maximises_the_gaussian_likelihood(demo):
    data, _ = demo
    result = fit_subject_model(data)
    j = data["clip"].to_numpy()
    s = data["participant"].to_numpy()
    x = data["rating"].to_numpy()
    n_stimuli, n_subjects = j.max() + 1, s.max() + 1

    def negative_loglik(params):
        quality, bias = params[:n_stimuli], params[n_stimuli:n_stimuli + n_subjects]
        upsilon = np.exp(params[n_stimuli + n_subjects:])
        bias = bias - bias.mean()  # the likelihood only sees ψ + Δ
        residual = x - quality[j] - bias[s]
        value = -stats.norm.logpdf(residual, 0.0, upsilon[s]).sum()
        score = residual / upsilon[s] ** 2
        d_bias = -np.bincount(s, score, minlength=n_subjects)
        gradient = np.concatenate([-np.bincount(j, score, minlength=n_stimuli), d_bias - d_bias.mean(),
                                   np.bincount(s, 1.0 - residual * score, minlength=n_subjects)])
        return value, gradient

    start = np.concatenate([result.stimuli["quality"], result.participants["bias"],
                            np.log(result.participants["inconsistency"])])
    nudged = start + np.random.default_rng(0).normal(0, 0.05, start.size)
    direct = optimize.minimize(negative_loglik, nudged, jac=True, method="L-BFGS-B",
                               options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    at_fixed_point = negative_loglik(start)[0]
    assert direct.fun >= at_fixed_point - 1e-6
    assert result.fit["log_likelihood"] * len(x) == pytest.approx(-at_fixed_point, rel=1e-12)
    np.testing.assert_allclose(direct.x[:n_stimuli], start[:n_stimuli], atol=1e-4)
    np.testing.assert_allclose(np.exp(direct.x[n_stimuli + n_subjects:]), result.participants["inconsistency"],
                               atol=1e-4)


def test_planted_quality_bias_and_inconsistency_are_recovered_within_their_intervals():
    hits = {"p910": [], "subject": [], "bias": [], "inconsistency": []}
    for seed in range(10):
        rng = np.random.default_rng(seed)
        quality = rng.uniform(1.5, 4.5, 60)
        bias = rng.normal(0, 0.3, 40)
        bias -= bias.mean()  # the model identifies Δ up to its mean, reported as zero
        upsilon = rng.uniform(0.3, 1.0, 40)
        j, s = (a.ravel() for a in np.meshgrid(np.arange(60), np.arange(40), indexing="ij"))
        rated = rng.random(j.size) < 0.8
        j, s = j[rated], s[rated]
        data = pd.DataFrame({"clip": j, "participant": s,
                             "rating": quality[j] + bias[s] + upsilon[s] * rng.normal(size=j.size)})
        for kind in ("p910", "subject"):
            stimuli = fit_subject_model(data, quality_std=kind).stimuli
            hits[kind] += list((stimuli["ci_low"] <= quality) & (quality <= stimuli["ci_high"]))
        people = fit_subject_model(data).participants
        hits["bias"] += list((people["bias_ci_low"] <= bias) & (bias <= people["bias_ci_high"]))
        hits["inconsistency"] += list((people["inconsistency_ci_low"] <= upsilon)
                                      & (upsilon <= people["inconsistency_ci_high"]))
    rate = {key: np.mean(value) for key, value in hits.items()}
    # Over 60 such seeds: P.910 quality 0.969 (υ_j/√n mixes the subjects' υ: conservative), bias 0.940,
    # SUREAL's subject-weighted quality SE 0.922 and the χ² inconsistency interval 0.920 (both ignore
    # the degrees of freedom used by ψ and Δ, so υ̂ is biased low).
    assert 0.93 <= rate["p910"] <= 0.99
    assert 0.91 <= rate["bias"] <= 0.98
    assert 0.88 <= rate["subject"] <= 0.96
    assert 0.88 <= rate["inconsistency"] <= 0.96


def test_by_scale_returns_tidy_tables_with_stable_columns(demo):
    data, _ = demo
    both = pd.concat([data.assign(scale="visual"), data.assign(scale="sync", rating=6 - data["rating"])])
    tables = fit_subject_model_by_scale(both)
    assert list(tables.stimuli.columns) == ["scale", "clip", *STIMULUS_COLUMNS]
    assert list(tables.participants.columns) == ["scale", "participant", *PARTICIPANT_COLUMNS]
    assert list(tables.fits.columns) == ["scale", *FIT_COLUMNS]
    assert list(tables.fits["scale"]) == ["sync", "visual"]
    flipped = tables.results["sync"].stimuli["quality"].to_numpy()
    np.testing.assert_allclose(flipped, 6 - tables.results["visual"].stimuli["quality"].to_numpy(), atol=1e-7)


def test_stopping_early_is_reported_and_bad_arguments_refused(demo):
    data, _ = demo
    stopped = fit_subject_model(data, max_iterations=2)
    assert not stopped.converged and stopped.fit["n_iterations"] == 2
    with pytest.raises(ValueError, match="quality_std"):
        fit_subject_model(data, quality_std="bt500")
    with pytest.raises(KeyError):
        fit_subject_model(data, stimulus="pvs")
