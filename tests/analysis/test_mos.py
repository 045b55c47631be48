"""MOS with Student-t confidence intervals, checked against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from analysis.mos import mos_table


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
