"""MOS, per-content MOS and DMOS with Student-t confidence intervals, checked against hand-computed values."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.mos import DMOS_COLUMNS, content_mos_table, dmos_table, mos_table


def _frame(rows):
    return pd.DataFrame(rows, columns=["condition", "scale", "rating"])


def test_it_matches_hand_computed_values():
    # Ratings 2, 4, 4, 5 → mean 3.75, sd = sqrt((1.75² + 0.25² + 0.25² + 1.25²) / 3) = 1.2583057,
    # se = sd / 2 = 0.6291529, t(0.975, 3) = 3.1824463 → half-width 2.0022452.
    df = _frame([("A", "sync", v) for v in (2, 4, 4, 5)])
    row = mos_table(df).iloc[0]
    assert row.n == 4
    assert row.mos == pytest.approx(3.75)
    assert row.sd == pytest.approx(1.2583057, abs=1e-6)
    assert row.se == pytest.approx(0.6291529, abs=1e-6)
    assert row.ci_half_width == pytest.approx(3.1824463 * 0.6291529, abs=1e-6)
    assert (row.ci_low, row.ci_high) == pytest.approx((3.75 - 2.0022452, 3.75 + 2.0022452), abs=1e-6)


def test_it_groups_by_condition_and_scale():
    df = _frame([("A", "sync", 5), ("A", "sync", 4), ("A", "visual", 1), ("A", "visual", 3), ("B", "sync", 2),
                 ("B", "sync", 2)])
    table = mos_table(df)
    assert list(table[["condition", "scale"]].itertuples(index=False, name=None)) == [
        ("A", "sync"), ("A", "visual"), ("B", "sync")]
    assert list(table["mos"]) == [4.5, 2.0, 2.0]
    # Identical ratings: zero spread, a zero-width interval (not NaN).
    assert table.iloc[2].sd == 0 and table.iloc[2].ci_half_width == 0


def test_it_leaves_spread_undefined_for_a_single_rating():
    row = mos_table(_frame([("A", "sync", 3)])).iloc[0]
    assert row.n == 1 and row.mos == 3
    assert np.isnan(row.sd) and np.isnan(row.ci_low) and np.isnan(row.ci_high)


def test_it_widens_the_interval_with_the_confidence_level():
    df = _frame([("A", "sync", v) for v in (1, 3, 3, 4, 5, 2)])
    narrow = mos_table(df, confidence=0.90).iloc[0].ci_half_width
    wide = mos_table(df, confidence=0.99).iloc[0].ci_half_width
    assert narrow < mos_table(df).iloc[0].ci_half_width < wide


def test_it_accepts_other_groupings_and_column_names():
    df = pd.DataFrame({"model": ["m"] * 4, "sentence": ["s1", "s1", "s2", "s2"], "score": [1, 2, 3, 5]})
    table = mos_table(df, dv="score", by=["model", "sentence"])
    assert list(table.columns[:2]) == ["model", "sentence"]
    assert list(table["mos"]) == [1.5, 4.0]


def test_it_refuses_bad_arguments():
    df = _frame([("A", "sync", 3)])
    with pytest.raises(KeyError):
        mos_table(df, dv="score")
    with pytest.raises(ValueError):
        mos_table(df, confidence=1.5)


def test_it_returns_the_stable_columns_for_no_data():
    assert list(mos_table(_frame([])).columns) == [
        "condition", "scale", "n", "mos", "sd", "se", "ci_low", "ci_high", "ci_half_width"]


def test_content_mos_splits_each_condition_by_source_content():
    df = pd.DataFrame({"condition": ["A"] * 4, "content": ["s1", "s1", "s2", "s2"], "scale": ["sync"] * 4,
                       "rating": [5, 3, 2, 2]})
    table = content_mos_table(df)
    assert list(table[["condition", "content", "scale"]].itertuples(index=False, name=None)) == [
        ("A", "s1", "sync"), ("A", "s2", "sync")]
    assert list(table["mos"]) == [4.0, 2.0]


def _acr_hr():
    """Two viewers, two contents, the hidden reference and one model, one scale."""
    rows = [
        # participant, content, condition, kind, rating
        (1, "s1", "ref", "reference", 5), (1, "s1", "A", "model", 3),
        (1, "s2", "ref", "reference", 4), (1, "s2", "A", "model", 4),
        (2, "s1", "ref", "reference", 4), (2, "s1", "A", "model", 1),
        (2, "s2", "ref", "reference", 5), (2, "s2", "A", "model", 3),
    ]
    frame = pd.DataFrame(rows, columns=["participant", "content", "condition", "condition_kind", "rating"])
    return frame.assign(scale="sync")


def test_dmos_is_the_mean_of_each_viewers_rating_minus_their_reference_plus_five():
    # DV = V(PVS) − V(REF) + 5: 3−5+5 = 3, 4−4+5 = 5, 1−4+5 = 2, 3−5+5 = 3 → mean 3.25, sd 1.2583057.
    row = dmos_table(_acr_hr()).iloc[0]
    assert list(dmos_table(_acr_hr()).columns) == ["condition", "scale", *DMOS_COLUMNS]
    assert (row.condition, row.n, row.n_unpaired) == ("A", 4, 0)
    assert row.dmos == pytest.approx(3.25)
    assert row.sd == pytest.approx(1.2583057, abs=1e-6)
    assert row.ci_half_width == pytest.approx(3.1824463 * 1.2583057 / 2, abs=1e-6)


def test_sureal_pairing_subtracts_the_reference_mos_of_the_same_content():
    # SUREAL DmosModel: rating + 5 − MOS_ref(content): s1 ref MOS 4.5, s2 4.5 → (3.5, 4.5, 1.5, 3.5).
    row = dmos_table(_acr_hr(), pairing="mos").iloc[0]
    assert row.dmos == pytest.approx(3.25)
    assert row.sd == pytest.approx(np.std([3.5, 4.5, 1.5, 3.5], ddof=1))


def test_both_pairings_give_the_same_dmos_when_every_viewer_rated_every_reference():
    rng = np.random.default_rng(0)
    rows = [(p, c, cond, "reference" if cond == "ref" else "model", scale, int(rng.integers(1, 6)))
            for p in range(7) for c in ("s1", "s2", "s3") for cond in ("ref", "A", "B") for scale in ("sync", "visual")]
    df = pd.DataFrame(rows, columns=["participant", "content", "condition", "condition_kind", "scale", "rating"])
    viewer, by_mos = dmos_table(df), dmos_table(df, pairing="mos")
    np.testing.assert_allclose(viewer["dmos"], by_mos["dmos"])
    assert list(viewer["condition"]) == ["A", "A", "B", "B"]
    per_content = dmos_table(df, by=("condition", "content", "scale"))
    assert len(per_content) == 12 and (per_content["n"] == 7).all()


def test_ratings_whose_viewer_skipped_the_reference_are_counted_not_scored():
    df = _acr_hr()
    df = df[~((df.participant == 2) & (df.content == "s2") & (df.condition == "ref"))]
    row = dmos_table(df).iloc[0]
    assert (row.n, row.n_unpaired) == (3, 1)
    assert row.dmos == pytest.approx((3 + 5 + 2) / 3)
    # With the reference MOS instead, every rating with a rated reference content is scored.
    assert dmos_table(df, pairing="mos").iloc[0].n_unpaired == 0


def test_the_reference_can_be_named_and_reported():
    df = _acr_hr().drop(columns="condition_kind")
    with_reference = dmos_table(df, reference="ref", include_reference=True)
    assert list(with_reference["condition"]) == ["A", "ref"]
    reference_row = with_reference.iloc[1]
    assert reference_row.dmos == 5.0 and reference_row.sd == 0.0
    with pytest.raises(KeyError):
        dmos_table(df)  # no condition_kind column and no reference named
    with pytest.raises(ValueError, match="no hidden-reference"):
        dmos_table(df, reference="missing")
    with pytest.raises(ValueError, match="pairing"):
        dmos_table(_acr_hr(), pairing="content")


def test_per_clip_mos_on_the_nflx_public_dataset_matches_sureal_and_the_notes():
    # SUREAL test_mos_subjective_model: mean MOS 3.544790652385589, mean std/√n 0.12986637295658307, mean
    # per-PVS SD 0.6621911698651353; statistics.md §6 I: mean t-based half-width 0.26746.
    table = pd.read_csv(Path(__file__).parent / "data" / "nflx_public_votes.csv")
    votes = table.melt(id_vars=["asset_id", "content_id"], var_name="participant", value_name="rating")
    per_clip = mos_table(votes, by=["asset_id"])
    assert len(per_clip) == 79 and (per_clip["n"] == 26).all()
    assert per_clip["mos"].mean() == pytest.approx(3.544790652385589, abs=1e-12)
    assert per_clip["se"].mean() == pytest.approx(0.12986637295658307, abs=1e-12)
    assert per_clip["sd"].mean() == pytest.approx(0.6621911698651353, abs=1e-12)
    assert per_clip["ci_half_width"].mean() == pytest.approx(0.26746, abs=5e-6)
    assert per_clip.set_index("asset_id").loc[0, "mos"] == pytest.approx(4.884615384615385, abs=1e-12)
