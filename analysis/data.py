"""Ratings → one tidy long DataFrame (the only module of analysis/ that touches Django models)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

RATING_COLUMNS = [
    "participant", "participant_state", "assignment", "position", "clip", "condition", "condition_kind",
    "content", "identity", "source", "audio_content", "role", "scale", "rating", "response_time_ms", "rated_at",
]


def ratings_frame(study, *, roles: Sequence[str] = ("test",), exclude_states: Sequence[str] = ("screened_out",),
                  exclude_reviews: Sequence[str] = ("rejected", "accepted"), with_metrics: bool = False) -> pd.DataFrame:
    """Every stored rating of ``study`` as one row, with the clip's condition and content.

    Researcher-side only: the frame names conditions, so it must never reach a participant.
    Participants in ``exclude_states`` (screened out by default), participants whose review is in
    ``exclude_reviews`` (rejected, and accepted for payment but not for use, by default; not yet reviewed
    counts as used) and clips outside ``roles`` (practice and gold by default) are left out. With ``with_metrics`` every objective metric of the
    rated clip is joined as one more column (see :func:`study_clip_metrics`; NaN where unavailable).
    """
    from studyapp.models import Rating

    rows = (
        Rating.objects.filter(assignment__participant__study=study, assignment__study_clip__role__in=list(roles))
        .exclude(assignment__participant__state__in=list(exclude_states))
        .exclude(assignment__participant__review__in=list(exclude_reviews))
        .values_list(
            "assignment__participant_id", "assignment__participant__state", "assignment_id", "assignment__position",
            "assignment__study_clip__clip_id", "assignment__study_clip__clip__condition__name",
            "assignment__study_clip__clip__condition__kind", "assignment__study_clip__clip__source__content_id",
            "assignment__study_clip__clip__source__identity", "assignment__study_clip__clip__source__name",
            "assignment__study_clip__clip__audio__content_id", "assignment__study_clip__role", "scale__key", "value",
            "response_time_ms", "created_at",
        )
        .order_by("assignment__participant_id", "assignment__position", "scale__position")
    )
    frame = pd.DataFrame.from_records(list(rows), columns=RATING_COLUMNS)
    frame["rating"] = frame["rating"].astype(int)
    if with_metrics:
        metrics = study_clip_metrics(study, roles=roles)
        clashing = [c for c in metrics.columns if c != "clip" and c in frame.columns]
        frame = frame.merge(metrics.drop(columns=clashing), on="clip", how="left")
    return frame


def study_clip_metrics(study, *, roles: Sequence[str] = ("test",)) -> pd.DataFrame:
    """One row per clip of ``study`` (in ``roles``): ``clip`` and one column per stored metric.

    Clip-level metrics are the OK values of ``generation.models.ClipMetric``
    (``metric_services.clip_metrics_wide``); condition-level metrics (``ConditionMetric``, e.g. FID) are
    repeated on every clip of their condition, as :mod:`analysis.metric_validity` expects. A metric that is
    unavailable for a clip is NaN.
    """
    from generation import metric_services
    from generation.models import Clip, ConditionMetric

    clips = Clip.objects.filter(study_clips__study=study, study_clips__role__in=list(roles)).distinct()
    wide = metric_services.clip_metrics_wide(clips)
    conditions = pd.DataFrame.from_records(list(clips.values_list("pk", "condition_id")),
                                           columns=["clip", "condition_id"])
    if conditions.empty:
        return pd.DataFrame({"clip": pd.Series(dtype=int)})
    wide = conditions[["clip"]].merge(wide, on="clip", how="left")
    rows = (ConditionMetric.objects.filter(condition_id__in=conditions["condition_id"].unique().tolist(),
                                           status=ConditionMetric.OK)
            .values_list("condition_id", "name", "value"))
    condition_values = pd.DataFrame.from_records(list(rows), columns=["condition_id", "name", "value"])
    if len(condition_values):
        per_condition = condition_values.pivot_table(index="condition_id", columns="name", values="value",
                                                     aggfunc="first")
        per_condition.columns.name = None
        per_clip = conditions.merge(per_condition.reset_index(), on="condition_id", how="left").drop(
            columns="condition_id")
        new = [c for c in per_clip.columns if c != "clip" and c not in wide.columns]
        wide = wide.merge(per_clip[["clip", *new]], on="clip", how="left")
    return wide.sort_values("clip").reset_index(drop=True)
