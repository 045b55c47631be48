"""Practice and gold answers against their expected ranges, and the rule that screens raters out. No Django.

A practice or gold clip has, per scale, an expected range (``ExpectedAnswer``: low–high on the 1–5
scale, e.g. P.808's gold "±1" around the reference answer); a scale without one is "don't care".
A trial passes its check when every answer it gave on a scale that cares lies inside the range
(the P.808/P.910 crowd toolkits' gold rule; "_" there = don't care here). A participant who fails
more gold trials than the study allows is screened out; practice trials never screen anyone out,
they only produce feedback.

UNVERIFIED choice: the screen-out rule counts failed gold trials against a fixed allowance
(``failures > allowed``) rather than a pass rate, so it can act as soon as the allowance is used up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    """What one scale of a practice or gold clip should get: an inclusive range, and what to tell the rater."""

    low: int
    high: int
    feedback: str = ""


@dataclass(frozen=True)
class ScaleCheck:
    """One answer against its expected range; ``low``/``high`` are None when the scale does not care."""

    scale: str
    given: int
    low: int | None = None
    high: int | None = None
    feedback: str = ""

    @property
    def cares(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def ok(self) -> bool:
        return not self.cares or self.low <= self.given <= self.high


def check_answers(given: Mapping[str, int], expected: Mapping[str, Expected]) -> list[ScaleCheck]:
    """Each given answer (in the order given) against the expected range of its scale, if it has one."""
    checks = []
    for scale, value in given.items():
        rule = expected.get(scale)
        if rule is None:
            checks.append(ScaleCheck(scale, value))
        else:
            checks.append(ScaleCheck(scale, value, rule.low, rule.high, rule.feedback))
    return checks


def passed(checks: Iterable[ScaleCheck]) -> bool:
    """Whether every answer that cares is inside its range (a clip without any expected answer passes)."""
    return all(check.ok for check in checks)


def gold_screens_out(failed: int, allowed: int) -> bool:
    """Whether ``failed`` gold trials are more than the ``allowed`` ones."""
    return failed > allowed


def gold_screen_out_reason(failed: int, answered: int) -> str:
    """The reason stored on the participant and shown to them, e.g. "failed 2 of 3 attention checks"."""
    noun = "attention check" if answered == 1 else "attention checks"
    return f"failed {failed} of {answered} {noun}"
