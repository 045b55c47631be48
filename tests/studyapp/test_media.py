"""Clip media per side of a trial (the clip, the DCR reference, pairwise clip B): one signed, expiring,
session-bound URL per side whose file the server resolves; a side the trial does not have does not
exist; byte ranges per side; and nothing in a URL or a response tells the sides apart."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core import signing
from django.test import Client

from studyapp.models import Participant, Study, StudyClip
from studyapp.views import media
from studyapp.views.media import B, MAIN, REFERENCE, clip_url

from .test_trial_views import REFERENCE_VARIANT, method_study, participant_with_trials, remembering_client

TEST = StudyClip.ROLE_TEST


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def file_of(study_clip: StudyClip) -> bytes:
    return (Path(settings.MEDIA_ROOT) / study_clip.clip.file.name).read_bytes()


@pytest.fixture
def dcr(db, clip_files):
    """A DCR participant rating clip 0 (its reference: the hidden reference clip) and the reference itself."""
    study, clips = method_study(clip_files, Study.METHOD_DCR)
    participant = participant_with_trials(study, [(clips[0], None, TEST), (clips[REFERENCE_VARIANT], None, TEST)])
    return remembering_client(participant), participant, clips


@pytest.fixture
def pairwise(db, clip_files):
    """A pairwise participant comparing clips 1 (A) and 3 (B): the other face, so it can sit beside ``dcr``."""
    study, clips = method_study(clip_files, Study.METHOD_PAIRWISE, variants=(1, 3))
    participant = participant_with_trials(study, [(clips[1], clips[3], TEST)])
    return remembering_client(participant), participant, clips


def token_of(participant: Participant, position: int = 0) -> str:
    return participant.assignments.get(position=position).token


# ---- each side its own file ----

def test_a_dcr_trial_serves_the_clip_and_its_reference_under_their_own_urls(dcr):
    client, participant, clips = dcr
    token = token_of(participant)
    main, reference = client.get(clip_url(token, MAIN)), client.get(clip_url(token, REFERENCE))
    assert main.status_code == reference.status_code == 200
    assert body_of(main) == file_of(clips[0]) and body_of(reference) == file_of(clips[REFERENCE_VARIANT])
    assert file_of(clips[0]) != file_of(clips[REFERENCE_VARIANT])


def test_the_hidden_reference_in_a_dcr_trial_is_its_own_reference(dcr):
    client, participant, clips = dcr
    token = token_of(participant, 1)
    expected = file_of(clips[REFERENCE_VARIANT])
    assert body_of(client.get(clip_url(token, MAIN))) == body_of(client.get(clip_url(token, REFERENCE))) == expected


def test_a_pairwise_trial_serves_a_and_b_under_their_own_urls(pairwise):
    client, participant, clips = pairwise
    token = token_of(participant)
    assert body_of(client.get(clip_url(token, MAIN))) == file_of(clips[1])
    assert body_of(client.get(clip_url(token, B))) == file_of(clips[3])


@pytest.mark.parametrize("side", [MAIN, REFERENCE])
def test_every_side_serves_byte_ranges(dcr, side):
    client, participant, clips = dcr
    url = clip_url(token_of(participant), side)
    data = file_of(clips[0] if side == MAIN else clips[REFERENCE_VARIANT])
    middle = client.get(url, HTTP_RANGE="bytes=100-299")
    assert middle.status_code == 206 and body_of(middle) == data[100:300]
    assert middle["Content-Range"] == f"bytes 100-299/{len(data)}" and middle["Content-Length"] == "200"
    tail = client.get(url, HTTP_RANGE="bytes=-50")
    assert tail.status_code == 206 and body_of(tail) == data[-50:]
    beyond = client.get(url, HTTP_RANGE=f"bytes={len(data)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(data)}"


def test_b_serves_byte_ranges(pairwise):
    client, participant, clips = pairwise
    data = file_of(clips[3])
    part = client.get(clip_url(token_of(participant), B), HTTP_RANGE="bytes=10-19")
    assert part.status_code == 206 and body_of(part) == data[10:20]


# ---- sides that do not apply ----

@pytest.mark.parametrize(("method", "missing"), [
    (Study.METHOD_ACR, REFERENCE), (Study.METHOD_ACR, B), (Study.METHOD_ACR_HR, REFERENCE),
    (Study.METHOD_ACR_HR, B), (Study.METHOD_DCR, B), (Study.METHOD_PAIRWISE, REFERENCE),
])
def test_a_side_the_trial_does_not_have_is_not_found(db, clip_files, method, missing):
    study, clips = method_study(clip_files, method)
    paired = clips[4] if method == Study.METHOD_PAIRWISE else None
    participant = participant_with_trials(study, [(clips[0], paired, TEST)])
    client = remembering_client(participant)
    token = token_of(participant)
    assert client.get(clip_url(token, MAIN)).status_code == 200
    response = client.get(clip_url(token, missing))
    assert response.status_code == 404 and response.content == b"Not found."
    assert response["Content-Type"].startswith("text/plain")


def test_a_reference_that_is_not_ready_is_not_found(dcr):
    client, participant, clips = dcr
    reference = clips[REFERENCE_VARIANT].clip
    type(reference).objects.filter(pk=reference.pk).update(status="failed")
    assert client.get(clip_url(token_of(participant), REFERENCE)).status_code == 404


def test_it_refuses_to_sign_an_unknown_side():
    with pytest.raises(ValueError):
        clip_url("some-token", "ground-truth")


# ---- what a URL and a response tell ----

def test_the_urls_of_the_sides_look_alike_and_name_no_side(dcr, pairwise):
    urls = [clip_url(token_of(dcr[1]), MAIN), clip_url(token_of(dcr[1]), REFERENCE),
            clip_url(token_of(pairwise[1]), MAIN), clip_url(token_of(pairwise[1]), B)]
    shape = re.compile(r"/m/[A-Za-z0-9_-]{16,40}\.[0-9a-f]{16}:[0-9A-Za-z]+:[A-Za-z0-9_-]+")
    for url in urls:
        assert shape.fullmatch(url), url
        assert not re.search(r"main|reference|side", url, flags=re.IGNORECASE)
    tags = [url.split(".")[1].split(":")[0] for url in urls]
    assert len(set(tags)) == 4  # no tag repeats: a side's tag differs between trials


def test_the_tags_of_one_side_differ_between_trials(dcr):
    _, participant, _ = dcr
    first, second = (clip_url(token_of(participant, position), REFERENCE) for position in (0, 1))
    assert first.split(".")[1].split(":")[0] != second.split(".")[1].split(":")[0]


def test_every_side_answers_with_the_same_private_headers(dcr, pairwise):
    answers = [dcr[0].get(clip_url(token_of(dcr[1]), side)) for side in (MAIN, REFERENCE)]
    answers += [pairwise[0].get(clip_url(token_of(pairwise[1]), side)) for side in (MAIN, B)]
    for response in answers:
        assert response.status_code == 200 and response["Content-Type"] == "video/mp4"
        assert response["Cache-Control"] == "private, no-store" and response["X-Content-Type-Options"] == "nosniff"
        assert response["Accept-Ranges"] == "bytes"
        for header in ("Content-Disposition", "ETag", "Last-Modified", "Vary"):
            assert header not in response or header == "Vary" and "Cookie" in response[header]


# ---- refusals, per side ----

@pytest.mark.parametrize("side", [MAIN, REFERENCE])
def test_a_tampered_url_is_not_found(dcr, side):
    client, participant, _ = dcr
    signed = clip_url(token_of(participant), side).removeprefix("/m/")
    value, stamp, signature = signed.rsplit(":", 2)
    token, tag = value.split(".")
    other_tag = media.side_tag(token, B if side == MAIN else MAIN)
    for forged in (f"{token}.{other_tag}:{stamp}:{signature}", f"{value}:{stamp}:{signature[:-2]}xx",
                   f"{token}:{stamp}:{signature}", value, "x"):
        response = client.get(f"/m/{forged}")
        assert response.status_code == 404, forged
        assert response.content == b"Not found."


def test_a_signed_tag_that_names_no_side_is_not_found(dcr):
    client, participant, _ = dcr
    signed = signing.TimestampSigner(salt=media.CLIP_URL_SALT).sign(f"{token_of(participant)}.{'0' * 16}")
    assert media.unsign_clip_url(signed)[1] is None
    assert client.get(f"/m/{signed}").status_code == 404


def test_a_bare_token_is_the_main_clip(dcr):
    client, participant, clips = dcr
    signed = signing.TimestampSigner(salt=media.CLIP_URL_SALT).sign(token_of(participant))
    assert media.unsign_clip_url(signed) == (token_of(participant), MAIN)
    assert body_of(client.get(f"/m/{signed}")) == file_of(clips[0])


@pytest.mark.parametrize("side", [MAIN, REFERENCE])
def test_an_expired_url_is_refused(dcr, settings, side):
    client, participant, _ = dcr
    settings.SYNCMOS_CLIP_URL_MAX_AGE = 60
    signer = signing.TimestampSigner(salt=media.CLIP_URL_SALT)
    token = token_of(participant)
    value = f"{token}.{media.side_tag(token, side)}:{signing.b62_encode(int(time.time()) - 3600)}"
    expired = f"/m/{value}:{signer.signature(value)}"
    response = client.get(expired)
    assert response.status_code == 403 and b"expired" in response.content
    fresh = clip_url(token, side)
    assert client.get(fresh).status_code == 200


@pytest.mark.parametrize("side", [MAIN, B])
def test_another_session_is_refused(pairwise, db, clip_files, side):
    _, participant, clips = pairwise
    url = clip_url(token_of(participant), side)
    eve = participant_with_trials(participant.study, [(clips[3], clips[1], TEST)])
    assert remembering_client(eve).get(url).status_code == 403
    assert Client().get(url).status_code == 403  # no session at all


def test_no_side_is_served_once_the_participant_is_done(pairwise):
    client, participant, _ = pairwise
    Participant.objects.filter(pk=participant.pk).update(state=Participant.COMPLETED)
    for side in (MAIN, B):
        assert client.get(clip_url(token_of(participant), side)).status_code == 404
