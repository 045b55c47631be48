"""Blinding: nothing a participant's browser receives names what made a clip."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from generation.models import Clip, Condition, GenerationJob
from studyapp.blinding import find_leaks, forbidden_for_study
from studyapp.models import Assignment, Rating

from .conftest import backdate_plays


STATIC_REF = re.compile(r"""(?:src|href)="(/static/[^"]+)\"""")


class Recorder:
    """Every byte a participant's browser is sent: bodies, headers, cookies, and the URLs it visits."""

    def __init__(self) -> None:
        self.texts: list[str | bytes] = []

    def keep(self, url: str, response) -> None:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = "\n".join(f"{name}: {value}" for name, value in response.items())
        self.texts += [url, headers, response.cookies.output(), body]
        if body.startswith(b"<!doctype html>"):
            for ref in STATIC_REF.findall(body.decode()):
                self.keep_static(ref)

    def keep_static(self, url: str) -> None:
        path = finders.find(url.removeprefix("/static/"))
        assert path, f"{url} is referenced by a page but not found"
        self.texts += [url, Path(path).read_bytes()]


def drive_session(study, recorder: Recorder) -> None:
    client = Client(HTTP_USER_AGENT="blinding-audit/1.0")

    def get(url, **extra):
        response = client.get(url, **extra)
        recorder.keep(url, response)
        return response

    def post(url, data=None, json_body=None):
        if json_body is not None:
            response = client.post(url, data=json.dumps(json_body), content_type="application/json")
        else:
            response = client.post(url, data or {})
        recorder.keep(url, response)
        return response

    entry = reverse("participant:study-entry", args=[study.public_id]) + "?PROLIFIC_PID=abc123def&STUDY_ID=s1&SESSION_ID=x9"
    get(entry)
    post(entry, {"consent": "no"})
    home = post(entry, {"consent": "yes", "viewport": "1280x800"})["Location"]
    get(entry)  # resume redirect
    token = home.strip("/").split("/")[-1]
    get(home)
    post(reverse("participant:begin", args=[token]))
    rate_url, events_url = reverse("participant:rate", args=[token]), reverse("participant:events", args=[token])
    while "Thank you" not in (page := get(home)).content.decode():
        html = page.content.decode()
        config = json.loads(re.search(r'<script id="trial-config" type="application/json">(.*?)</script>', html).group(1))
        video = re.search(r'<video[^>]* src="([^"]+)"', html).group(1)
        get(video)
        get(video, HTTP_RANGE="bytes=0-99")
        get(video, HTTP_RANGE="bytes=999999999-")
        get(video.replace(":", ":x", 1))  # a tampered URL's answer
        answer = {"assignment": config["assignment"], "response_time_ms": 900,
                  "ratings": {k: {"value": 3, "uuid": str(uuid.uuid4())} for k in config["scales"]}}
        post(rate_url, json_body=answer)  # refused: not watched yet
        post(events_url, json_body={"assignment": config["assignment"], "events": [{"kind": "play", "media_time": 0}]})
        backdate_plays(Assignment.objects.get(token=config["assignment"]), 5)  # as if the clip played meanwhile
        post(events_url, json_body={"assignment": config["assignment"], "events": [{"kind": "ended", "media_time": 1.0}]})
        post(rate_url, json_body={**answer, "ratings": {**answer["ratings"], "bogus": {"value": 9, "uuid": "x"}}})
        post(rate_url, json_body=answer)
        post(rate_url, json_body=answer)  # replay
        post(rate_url, json_body={**answer, "ratings": {k: {"value": 1, "uuid": str(uuid.uuid4())} for k in config["scales"]}})
        post(events_url, json_body={"assignment": "nope", "events": [{"kind": "pause"}]})
    get(video)  # media after the end


def test_it_leaks_nothing_during_a_whole_session(study):
    job = GenerationJob.objects.create(name="wav2lip+lipgan on astronaut GRID")
    job.clips.add(*Clip.objects.filter(study_clips__study=study))
    recorder = Recorder()
    drive_session(study, recorder)
    for path in sorted(Path(finders.find("studyapp/trial.js")).parent.iterdir()):
        recorder.keep_static(f"/static/studyapp/{path.name}")
    forbidden = forbidden_for_study(study)
    assert job.name in forbidden
    assert Rating.objects.count() == 4 * 3  # the session really ran
    assert len(recorder.texts) > 150
    leaks = find_leaks(recorder.texts, forbidden)
    assert leaks == [], "\n".join(str(leak) for leak in leaks[:20])


def test_it_lists_everything_that_could_reveal_a_clip(study):
    forbidden = forbidden_for_study(study)
    strings = {f for f in forbidden if isinstance(f, str)}
    clip = Clip.objects.filter(study_clips__study=study).select_related("condition__checkpoint", "source", "audio").first()
    assert {"Wav2Lip GAN checkpoint", "audio_shift +3 frames", "audio_shift", "wav2lip", "wav2lip_gan official",
            "wav2lip_gan.pth", "astronaut_en-us_bbaf2n.mp4", "grid_s1_bbaf2n.wav", "bbaf2n"} <= strings
    assert {clip.delivery_name, Path(clip.delivery_name).stem, clip.sha256} <= strings
    patterns = [f for f in forbidden if isinstance(f, re.Pattern)]
    assert any(p.search(f"/clips/{clip.pk}/") for p in patterns)
    assert any(p.search(f'"condition": {clip.condition_id}') for p in patterns)


def test_it_catches_leaks_in_every_spelling(study):
    clip = Clip.objects.filter(study_clips__study=study).select_related("condition", "source").first()
    condition = Condition.objects.get(name="audio_shift +3 frames")
    leaky = [
        f"<p>{clip.condition.name}</p>",
        "<span>audio_shift +3 frames</span>".replace("+", "&#43;").replace("&#43;", "+"),
        f"/m/?name={condition.name.replace(' ', '+').replace('+3', '%2B3')}",
        json.dumps({"clip_id": clip.pk}),
        json.dumps({"x": f"clips/{clip.delivery_name}"}),
        f"<video src=\"/media/{clip.source.name}\">".encode(),
        f"data-condition=\"{clip.condition_id}\"",
        b"\x00\x01binary" + clip.delivery_name.encode() + b"\xff",
        'ARCH = "WAV2LIP";',
    ]
    found = find_leaks(leaky, forbidden_for_study(study))
    assert {leak.text_index for leak in found} == set(range(len(leaky))), [str(x) for x in found]


def test_it_does_not_flag_ordinary_participant_text(study):
    ordinary = ["Clip 2 of 4", "Please play the clip to its end.", '{"scales": ["sync", "visual", "overall"]}',
                "How well do the lip movements match the speech?", "audio: on", "a source of joy"]
    assert find_leaks(ordinary, forbidden_for_study(study)) == []


def test_it_matches_short_needles_standalone_and_long_ones_anywhere():
    texts = ["x Wav2Lip y", "weights/wav2lip_gan.pth", "wav2lipgan", "xxLIPGAN BASELINEyy"]
    leaks = find_leaks(texts, ["wav2lip", "LipGAN baseline"])
    assert sorted((leak.text_index, leak.needle) for leak in leaks) == [
        (0, "wav2lip"), (1, "wav2lip"), (3, "LipGAN baseline"),
    ]


def test_it_forbids_the_names_and_ids_of_the_jobs_that_made_the_clips(study):
    job = GenerationJob.objects.create(name="Wav2Lip vs LipGAN on GRID, pilot 3")
    unrelated = GenerationJob.objects.create(name="SadTalker sweep for another study")
    job.clips.add(*Clip.objects.filter(study_clips__study=study))
    forbidden = forbidden_for_study(study)
    assert job.name in forbidden and unrelated.name not in forbidden
    leaky = [f"<title>{job.name}</title>", json.dumps({"job_id": job.pk}), f"/jobs/{job.pk}/"]
    assert {leak.text_index for leak in find_leaks(leaky, forbidden)} == {0, 1, 2}
    assert find_leaks([study.title], forbidden) == []
