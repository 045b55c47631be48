"""Practice and gold answers against their expected ranges, and the gold screen-out rule (pure)."""

from __future__ import annotations

import pytest

from studyapp.quality import (
    Expected, ScaleCheck, check_answers, gold_screen_out_reason, gold_screens_out, passed,
)


def test_it_accepts_an_answer_inside_the_range_bounds_included():
    expected = {"sync": Expected(3, 5)}
    for value in (3, 4, 5):
        assert passed(check_answers({"sync": value}, expected))
    for value in (1, 2):
        assert not passed(check_answers({"sync": value}, expected))


def test_it_treats_a_scale_without_an_expected_answer_as_dont_care():
    checks = check_answers({"sync": 1, "visual": 5}, {"visual": Expected(4, 5, "Sharp and clean.")})
    assert [c.scale for c in checks] == ["sync", "visual"]
    free, cared = checks
    assert not free.cares and free.ok and (free.low, free.high) == (None, None)
    assert cared.cares and cared.ok and cared.feedback == "Sharp and clean."
    assert passed(checks)


def test_it_fails_a_trial_when_any_scale_that_cares_is_outside():
    expected = {"sync": Expected(1, 2), "visual": Expected(4, 5), "overall": Expected(1, 5)}
    checks = check_answers({"sync": 1, "visual": 3, "overall": 3}, expected)
    assert [c.ok for c in checks] == [True, False, True]
    assert not passed(checks)


def test_a_clip_without_any_expected_answer_passes():
    assert passed(check_answers({"sync": 2, "visual": 2}, {}))


def test_an_exact_expected_answer_is_a_range_of_one():
    check = ScaleCheck("overall", 4, 4, 4)
    assert check.ok and not ScaleCheck("overall", 3, 4, 4).ok


@pytest.mark.parametrize("failed, allowed, out", [(0, 0, False), (1, 0, True), (1, 1, False), (2, 1, True),
                                                  (3, 5, False)])
def test_it_screens_out_only_past_the_allowance(failed, allowed, out):
    assert gold_screens_out(failed, allowed) is out


def test_it_words_the_reason_for_people():
    assert gold_screen_out_reason(2, 3) == "failed 2 of 3 attention checks"
    assert gold_screen_out_reason(1, 1) == "failed 1 of 1 attention check"
