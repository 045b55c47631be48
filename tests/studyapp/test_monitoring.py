"""Researcher monitoring: the figures of the monitor and top-up pages on constructed ratings."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pandas as pd
import pytest
from django.utils import timezone
from scipy import stats

from analysis.mos import mos_table
from studyapp import monitoring
from studyapp.models import Assignment, Participant, PlaybackEvent, Rating, Study, StudyClip
from tests.fixtures import make_clip, make_study

pytestmark = pytest.mark.django_db

SCALES = ("sync", "visual", "overall")
# The "true" quality of the five test clips (one condition each), per scale.
QUALITY = {"sync": [4, 2, 5, 3, 1], "visual": [3, 1, 5, 4, 2], "overall": [4, 2, 5, 3, 1]}
# Small, different deviations of six careful raters (one row per rater, one column per clip).
GOOD_OFFSETS = [
    [0, 0, 0, 0, 0], [1, 0, 0, -1, 0], [0, 1, 0, 0, 1], [-1, 0, -1, 0, 0], [0, 0, 0, 1, 1], [0, -1, 0, 0, 1],
]


def clamp(value: int) -> int:
    return min(max(value, 1), 5)


def good_values(rater: int) -> list[dict[str, int]]:
    offsets = GOOD_OFFSETS[rater % len(GOOD_OFFSETS)]
    return [{s: clamp(QUALITY[s][i] + offsets[i]) for s in SCALES} for i in range(5)]


def add_participant(study: Study, clips: list[StudyClip], values: list[dict[str, int]], *,
                    state: str = Participant.COMPLETED, review: str = "", response_ms: int = 3000,
                    first_choice_ms: int | None = 1200, external_id: str = "") -> Participant:
    """A participant who rated ``clips`` (in this order) with ``values`` (one dict of scale → value per clip)."""
    participant = Participant.objects.create(study=study, state=state, review=review, external_id=external_id)
    scales = {s.key: s for s in study.scales.all()}
    now = timezone.now()
    for position, (study_clip, answer) in enumerate(zip(clips, values)):
        assignment = Assignment.objects.create(participant=participant, study_clip=study_clip, role=study_clip.role,
                                               position=position, started_at=now, completed_at=now,
                                               first_choice_ms=first_choice_ms)
        Rating.objects.bulk_create([Rating(assignment=assignment, scale=scales[key], value=value,
                                           client_uuid=uuid.uuid4(), response_time_ms=response_ms)
                                    for key, value in answer.items()])
    return participant


def add_gold(study: Study, participant: Participant, gold: StudyClip, passed: bool) -> Assignment:
    position = participant.assignments.count()
    return Assignment.objects.create(participant=participant, study_clip=gold, role=StudyClip.ROLE_GOLD,
                                     position=position, completed_at=timezone.now(), passed_check=passed)


@pytest.fixture
def monitored(clip_files):
    """Five test clips (five conditions), a gold clip (a sixth), six careful raters and the troublemakers."""
    study = make_study(clip_files, n_clips=5, per_participant=5, ratings_per_clip=8)
    clips = list(study.study_clips.order_by("pk"))
    gold = StudyClip.objects.create(study=study, clip=make_clip(5, clip_files), role=StudyClip.ROLE_GOLD)
    good = [add_participant(study, clips, good_values(i), response_ms=2500 + 150 * i, external_id=f"good{i}")
            for i in range(6)]
    for participant in good:
        add_gold(study, participant, gold, passed=True)
    people = {
        "good": good,
        "straight": add_participant(study, clips, [dict.fromkeys(SCALES, 3)] * 5, external_id="straight"),
        "fast": add_participant(study, clips, good_values(1), response_ms=400, external_id="fast"),
        "gold_failer": add_participant(study, clips, good_values(2), external_id="gold"),
        "tab_hider": add_participant(study, clips, good_values(3), external_id="tabs"),
        # Their ratings must not count: rejected, set aside, timed out, screened out.
        "rejected": add_participant(study, clips, [dict.fromkeys(SCALES, 1)] * 5, review=Participant.REVIEW_REJECTED),
        "set_aside": add_participant(study, clips, [dict.fromkeys(SCALES, 5)] * 5, review=Participant.REVIEW_ACCEPTED),
        "timed_out": add_participant(study, clips[:2], [dict.fromkeys(SCALES, 1)] * 2, state=Participant.TIMED_OUT),
        "screened": add_participant(study, clips[:1], [dict.fromkeys(SCALES, 5)], state=Participant.SCREENED_OUT),
    }
    add_gold(study, people["gold_failer"], gold, passed=False)
    first = people["tab_hider"].assignments.order_by("position").first()
    PlaybackEvent.objects.bulk_create([PlaybackEvent(assignment=first, kind=PlaybackEvent.VISIBILITY, detail="hidden")
                                       for _ in range(4)])
    return study, clips, gold, people


def expected_frame(study: Study, clips: list[StudyClip], raters: list[list[dict[str, int]]]) -> pd.DataFrame:
    """The valid ratings written out by hand: condition, scale, rating."""
    names = [c.clip.condition.name for c in clips]
    return pd.DataFrame([{"condition": names[i], "scale": s, "rating": answer[s]}
                         for values in raters for i, answer in enumerate(values) for s in SCALES])


def valid_values():
    return [good_values(i) for i in range(6)] + [[dict.fromkeys(SCALES, 3)] * 5, good_values(1), good_values(2),
                                                 good_values(3)]


# --------------------------------------------------------------------------------------------------
# Live MOS and closing


def test_live_mos_is_analysis_mos_of_the_valid_test_ratings_only(monitored):
    study, clips, _, _ = monitored
    live = monitoring.live_mos(study).sort_values(["condition", "scale"]).reset_index(drop=True)
    want = mos_table(expected_frame(study, clips, valid_values())).sort_values(["condition", "scale"])
    want = want.reset_index(drop=True)
    assert list(live["n"]) == list(want["n"]) == [10] * 15
    np.testing.assert_allclose(live["mos"], want["mos"])
    np.testing.assert_allclose(live["ci_half_width"], want["ci_half_width"])
    np.testing.assert_allclose(live["ci_low"], want["ci_low"])


def test_ready_to_close_turns_true_just_above_the_widest_interval(monitored):
    study, _, _, _ = monitored
    assert not monitoring.ready_to_close(study)  # no target yet
    widest = float(monitoring.live_mos(study)["ci_half_width"].max())
    study.target_ci_half_width = widest
    study.save()
    ready, reasons = monitoring.close_readiness(study)
    assert not ready and len(reasons) >= 1 and all("is not under" in r for r in reasons)
    study.target_ci_half_width = widest + 1e-6
    study.save()
    assert monitoring.ready_to_close(study)


def test_a_condition_without_ratings_keeps_the_study_open(monitored):
    study, _, gold, _ = monitored
    study.target_ci_half_width = 10.0
    study.save()
    assert monitoring.ready_to_close(study)
    # The gold clip's condition becomes a sixth test condition, which nobody has rated yet.
    StudyClip.objects.filter(pk=gold.pk).update(role=StudyClip.ROLE_TEST)
    unrated = gold
    ready, reasons = monitoring.close_readiness(study)
    assert not ready
    assert any(unrated.clip.condition.name in r and "0 valid rating" in r for r in reasons)


def test_ratings_for_half_width_matches_the_student_t_table():
    # t(0.975, 17) = 2.110: 2.110/√18 = 0.497 < 0.5, while t(0.975, 16)/√17 = 0.514.
    assert monitoring.ratings_for_half_width(1.0, 0.5) == 18
    for sd, target in [(0.7, 0.1), (1.3, 0.25), (0.2, 0.5)]:
        n = monitoring.ratings_for_half_width(sd, target)
        width = lambda k: stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)  # noqa: E731
        assert width(n) < target and (n == 2 or width(n - 1) >= target)
    assert monitoring.ratings_for_half_width(0.0, 0.1) == 2
    assert monitoring.ratings_for_half_width(float("nan"), 0.1) is None


def test_top_up_estimates_the_participants_each_condition_still_needs(monitored):
    study, clips, _, _ = monitored
    study.target_ci_half_width = 0.3
    study.save()
    precision = monitoring.precision_table(study)
    live = monitoring.live_mos(study).set_index(["condition", "scale"])
    assert len(precision) == 5 * 3
    for row in precision.itertuples(index=False):
        found = live.loc[(row.unit, row.scale)]
        assert row.n == found["n"] and row.ci_half_width == pytest.approx(found["ci_half_width"])
        needed = monitoring.ratings_for_half_width(found["sd"], 0.3)
        assert row.ratings_needed == needed and row.more_ratings == max(needed - row.n, 0)
        # Five clips, one per condition, five per participant: one rating of each condition per participant.
        assert row.ratings_per_participant == pytest.approx(1.0)
        assert row.more_participants == max(needed - row.n, 0)
        assert row.met == (found["ci_half_width"] < 0.3)
    top = monitoring.top_up(study)
    assert top["participants_for_target"] == int(precision["more_participants"].max())
    assert not top["ready"]


def test_the_hidden_reference_of_acr_hr_counts_towards_closing(clip_files):
    study = make_study(clip_files, n_clips=5, per_participant=5, method=Study.METHOD_ACR_HR, target_ci_half_width=5.0)
    clips = list(study.study_clips.order_by("pk"))
    for i in range(3):
        add_participant(study, clips, good_values(i))
    precision = monitoring.precision_table(study)
    reference = next(c.clip.condition.name for c in clips if c.clip.condition.kind == "reference")
    units = {r["unit"] for r in monitoring.coverage(study)["rows"]}
    # The reference is no unit of its own (it comes with its item's units) but is rated and judged.
    assert reference not in units and reference in set(precision["unit"])
    row = precision[(precision["unit"] == reference) & (precision["scale"] == "sync")].iloc[0]
    assert row.n == 3 and row.ratings_per_participant == pytest.approx(1.0)
    assert monitoring.ready_to_close(study)


# --------------------------------------------------------------------------------------------------
# Coverage


def test_coverage_counts_completed_valid_ratings_per_clip(monitored):
    study, clips, _, _ = monitored
    cover = monitoring.coverage(study)
    test_rows = {r["study_clip_id"]: r for r in cover["rows"] if r["role"] == StudyClip.ROLE_TEST}
    assert set(test_rows) == {c.pk for c in clips}
    # 10 valid participants rated every clip; the rejected, set-aside, timed-out and screened-out do not count.
    for clip in clips:
        row = test_rows[clip.pk]
        assert (row["completed"], row["in_progress"], row["target"], row["missing"]) == (10, 0, 8, 0)
        assert row["unit"] == clip.clip.condition.name
    histogram = {b["completed"]: b["units"] for b in cover["histogram"]}
    assert histogram[10] == 5 and sum(histogram.values()) == 5
    assert cover["summary"]["full"] == 5 and cover["summary"]["participants_needed"] == 0


def test_coverage_histogram_counts_units_per_number_of_ratings():
    bars = monitoring.coverage_histogram([0, 2, 2, 3, 5], target=3)
    assert [(b["completed"], b["units"], b["full"]) for b in bars] == [
        (0, 1, False), (1, 0, False), (2, 2, False), (3, 1, True), (4, 0, True), (5, 1, True)]
    assert max(b["share"] for b in bars) == 1.0


# --------------------------------------------------------------------------------------------------
# Times and gold


def test_rating_times_summarise_each_answer_once(monitored):
    study, _, _, people = monitored
    times = monitoring.rating_times(study)
    # Everyone but the screened-out participant, one time per rated clip (not per scale).
    answers = [2500 + 150 * i for i in range(6) for _ in range(5)] + [3000] * 5 + [400] * 5 + [3000] * 10 \
        + [3000] * 5 * 2 + [3000] * 2
    sync = next(r for r in times["per_scale"] if r["scale"] == "sync")
    assert sync["n"] == len(answers)
    assert sync["median"] == pytest.approx(np.median(answers))
    assert sync["p10"] == pytest.approx(np.percentile(answers, 10))
    assert sync["p90"] == pytest.approx(np.percentile(answers, 90))
    assert sum(b["count"] for b in times["histogram"]) == len(answers)
    assert next(b["count"] for b in times["histogram"] if b["label"] == "0–1 s") == 5
    fast = next(r for r in times["per_participant"] if r["participant"] == people["fast"].pk)
    assert (fast["answers"], fast["median"], fast["first_choice_median"]) == (5, 400, 1200)


def test_gold_pass_rates_per_clip_and_per_participant(monitored):
    study, _, gold, people = monitored
    rates = monitoring.gold_pass_rates(study)
    assert [(r["study_clip_id"], r["checked"], r["passed"]) for r in rates["per_clip"]] == [(gold.pk, 7, 6)]
    assert rates["per_clip"][0]["rate"] == pytest.approx(6 / 7)
    failer = next(r for r in rates["per_participant"] if r["participant"] == people["gold_failer"].pk)
    assert (failer["gold_checked"], failer["gold_passed"], failer["gold_rate"]) == (1, 0, 0.0)


# --------------------------------------------------------------------------------------------------
# Flags


def test_flags_fire_for_troublemakers_and_never_for_careful_raters(monitored):
    study, _, _, people = monitored
    flags = {f.participant_id: f for f in monitoring.participant_flags(study)}
    assert "straight_lining" in flags[people["straight"].pk].kinds
    assert any("the same answer (3) to all 5 ratings" in r for r in flags[people["straight"].pk].reasons)
    assert "fast" in flags[people["fast"].pk].kinds
    assert flags[people["gold_failer"].pk].kinds == ["gold"]
    assert flags[people["gold_failer"].pk].reasons == ["failed 1 of 1 gold clips"]
    assert "tab_hidden" in flags[people["tab_hider"].pk].kinds
    assert flags[people["screened"].pk].kinds == ["screened_out"]
    for participant in people["good"]:
        assert participant.pk not in flags, flags[participant.pk].reasons


def test_screening_rules_flag_an_inverted_rater_with_their_reason(monitored):
    study, clips, _, _ = monitored
    inverted = add_participant(study, clips, [{s: 6 - v for s, v in answer.items()} for answer in good_values(0)])
    flags = {f.participant_id: f for f in monitoring.participant_flags(study)}
    assert "p913_correlation" in flags[inverted.pk].kinds
    assert any(r.startswith("sync: P.913: r1 = -") for r in flags[inverted.pk].reasons)


def test_practice_misses_and_fullscreen_exits_are_flagged(monitored):
    study, _, gold, people = monitored
    participant = people["good"][0]
    # Their checked clip becomes a missed practice trial.
    Assignment.objects.filter(participant=participant, study_clip=gold).update(
        role=StudyClip.ROLE_PRACTICE, passed_check=False)
    first = participant.assignments.order_by("position").first()
    PlaybackEvent.objects.bulk_create([PlaybackEvent(assignment=first, kind=PlaybackEvent.FULLSCREEN, detail=d)
                                       for d in ("enter", "exit", "enter", "exit", "enter", "exit")])
    flags = {f.participant_id: f for f in monitoring.participant_flags(study)}
    assert set(flags[participant.pk].kinds) == {"practice", "fullscreen_exits"}
    assert "missed 1 of 1 practice clips" in flags[participant.pk].reasons
    assert "left fullscreen 3 times during trials" in flags[participant.pk].reasons


# --------------------------------------------------------------------------------------------------
# Pairwise


def test_preference_table_orients_pairs_and_counts_wins_and_ties():
    rows = (
        # X shown as A: 1 and 2 are wins of X, 3 a tie, 4 and 5 wins of Y.
        [("X", "Y", v) for v in (1, 1, 2, 3, 5)]
        # Y shown as A: 4 and 5 are wins of X (the B side).
        + [("Y", "X", v) for v in (5, 4, 4, 3, 2)]
    )
    data = pd.DataFrame(rows, columns=["condition", "paired_condition", "rating"]).assign(scale="sync")
    table = monitoring.preference_table(data)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.condition_a, row.condition_b, row.n, row.a_wins, row.b_wins, row.ties) == ("X", "Y", 10, 6, 2, 2)
    assert row.a_share == pytest.approx(6 / 8)
    # Clopper–Pearson from the beta quantiles.
    assert row.ci_low == pytest.approx(stats.beta.ppf(0.025, 6, 3))
    assert row.ci_high == pytest.approx(stats.beta.ppf(0.975, 7, 2))
    assert row.p_value == pytest.approx(stats.binomtest(6, 8).pvalue)
    # Oriented answers: 5 = X much better.
    oriented = [5, 5, 4, 3, 1, 5, 4, 4, 3, 2]
    assert row.mean_score == pytest.approx(np.mean(oriented))
    assert row.score_ci_half_width == pytest.approx(
        stats.t.ppf(0.975, 9) * np.std(oriented, ddof=1) / math.sqrt(10))


def test_preference_table_without_decisive_answers_has_no_share():
    data = pd.DataFrame({"condition": ["X", "Y"], "paired_condition": ["Y", "X"], "rating": [3, 3], "scale": "sync"})
    row = monitoring.preference_table(data).iloc[0]
    assert (row.ties, row.a_wins, row.b_wins) == (2, 0, 0) and math.isnan(row.a_share) and math.isnan(row.ci_low)


def test_a_pairwise_study_shows_preferences_of_valid_answers(clip_files):
    study = make_study(clip_files, n_clips=0, method=Study.METHOD_PAIRWISE)
    # Variants 0 and 2 share their face and sentence: the pair.
    first, second = (StudyClip.objects.create(study=study, clip=make_clip(v, clip_files)) for v in (0, 2))
    scales = {s.key: s for s in study.scales.all()}
    for i, (a, b, value, state) in enumerate([
        (first, second, 1, Participant.COMPLETED), (first, second, 2, Participant.COMPLETED),
        (second, first, 5, Participant.COMPLETED), (second, first, 3, Participant.COMPLETED),
        (second, first, 1, Participant.COMPLETED), (first, second, 5, Participant.SCREENED_OUT),
    ]):
        participant = Participant.objects.create(study=study, state=state)
        assignment = Assignment.objects.create(participant=participant, study_clip=a, paired_study_clip=b,
                                               position=0, completed_at=timezone.now())
        Rating.objects.create(assignment=assignment, scale=scales["overall"], value=value, client_uuid=uuid.uuid4())
    table = monitoring.live_preferences(study)
    row = table[table["scale"] == "overall"].iloc[0]
    names = sorted([first.clip.condition.name, second.clip.condition.name])
    assert (row.condition_a, row.condition_b) == tuple(names)
    first_is_a = first.clip.condition.name == names[0]
    first_wins, second_wins = 3, 1  # the screened-out answer is left out
    assert (row.a_wins, row.b_wins) == ((first_wins, second_wins) if first_is_a else (second_wins, first_wins))
    assert (row.n, row.ties) == (5, 1)


# --------------------------------------------------------------------------------------------------
# Review


def test_set_review_records_the_decision_note_and_time(monitored):
    _, _, _, people = monitored
    participant = people["fast"]
    assert monitoring.set_review([participant.pk], Participant.REVIEW_REJECTED, note="answers in 0.4 s") == 1
    participant.refresh_from_db()
    assert (participant.review, participant.review_note) == ("rejected", "answers in 0.4 s")
    assert participant.reviewed_at is not None
    with pytest.raises(ValueError):
        monitoring.set_review([participant.pk], "maybe")
