"""Ratings → one tidy long DataFrame (the only module of analysis/ that touches Django models)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

RATING_COLUMNS = [
    "participant", "participant_state", "assignment", "position", "clip", "condition", "condition_kind",
    "content", "identity", "source", "audio_content", "role", "scale", "rating", "response_time_ms", "rated_at",
]


def ratings_frame(study, *, roles: Sequence[str] = ("test",), exclude_states: Sequence[str] = ("screened_out",)) -> pd.DataFrame:
    """Every stored rating of ``study`` as one row, with the clip's condition and content.

    Researcher-side only: the frame names conditions, so it must never reach a participant.
    Participants in ``exclude_states`` (screened out by default) and clips outside ``roles``
    (practice and gold by default) are left out.
    """
    from studyapp.models import Rating

    rows = (
        Rating.objects.filter(assignment__participant__study=study, assignment__study_clip__role__in=list(roles))
        .exclude(assignment__participant__state__in=list(exclude_states))
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
    return frame
