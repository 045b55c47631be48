"""Which participants this browser session is: the study link resumes them, clip media checks them."""

from __future__ import annotations

from django.http import HttpRequest

from studyapp.models import Participant, Study

SESSION_KEY = "syncmos_participants"  # {study public id: participant token}


def remember(request: HttpRequest, participant: Participant) -> None:
    known = dict(request.session.get(SESSION_KEY, {}))
    if known.get(participant.study.public_id) != participant.token:
        known[participant.study.public_id] = participant.token
        request.session[SESSION_KEY] = known


def remembered(request: HttpRequest, study: Study) -> Participant | None:
    token = request.session.get(SESSION_KEY, {}).get(study.public_id)
    return Participant.objects.filter(token=token, study=study).first() if token else None


def is_remembered(request: HttpRequest, participant_token: str) -> bool:
    return participant_token in request.session.get(SESSION_KEY, {}).values()
