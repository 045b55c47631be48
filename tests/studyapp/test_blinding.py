"""Blinding: nothing a participant's browser receives names what made a clip."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from generation.models import Clip, Condition, GenerationJob
from studyapp.blinding import (
    ClipFacts, content_mismatches, find_leaks, find_leaks_in_media, for_binary, forbidden_for_study, participant_clips,
    profile_mismatches, role_markers, trial_skeleton,
)
from studyapp.models import Assignment, ExpectedAnswer, Rating, StudyClip
from tests.fixtures import make_clip

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


# --- what participant_clips, for_binary and the indistinguishability checks add ---------------------


def test_it_forbids_the_reference_a_dcr_trial_shows_though_it_is_no_study_clip(study, clip_files):
    reference = make_clip(5, clip_files)  # "Attention Wav2Lip finetuned": not one of the study's five
    assert "Attention Wav2Lip finetuned" not in forbidden_for_study(study)
    clip = Clip.objects.filter(study_clips__study=study).first()
    clip.reference = reference
    clip.save(update_fields=["reference"])
    forbidden = forbidden_for_study(study)
    assert {"Attention Wav2Lip finetuned", "attn_wav2lip_lrs2", "attn.pth", reference.delivery_name} <= set(forbidden)
    assert reference in participant_clips(study)
    assert any(isinstance(f, re.Pattern) and f.search(f"clip_id={reference.pk}") for f in forbidden)


def test_it_forbids_descriptions_registry_names_and_checkpoint_notes(study):
    condition = Condition.objects.get(name="Wav2Lip GAN checkpoint")
    condition.description = "Official Wav2Lip with the GAN discriminator"
    condition.save()
    checkpoint = condition.checkpoint
    checkpoint.registry_name, checkpoint.notes = "wav2lip-gan-v2", "downloaded from the authors' drive"
    checkpoint.save()
    assert {condition.description, "wav2lip-gan-v2", checkpoint.notes} <= set(forbidden_for_study(study))


def test_it_forbids_the_feedback_of_gold_clips_but_not_that_of_practice_clips(study):
    practice, gold = study.study_clips.all()[:2]
    StudyClip.objects.filter(pk=practice.pk).update(role=StudyClip.ROLE_PRACTICE)
    StudyClip.objects.filter(pk=gold.pk).update(role=StudyClip.ROLE_GOLD)
    scale = study.scales.first()
    ExpectedAnswer.objects.create(study_clip=practice, scale=scale, low=4, high=5, feedback="Lips and speech match.")
    ExpectedAnswer.objects.create(study_clip=gold, scale=scale, low=1, high=1, feedback="The mouth never moves.")
    forbidden = forbidden_for_study(study)
    assert "The mouth never moves." in forbidden and "Lips and speech match." not in forbidden


def test_binary_scans_leave_out_the_short_needles_random_bytes_contain_by_chance(study):
    noise = np.random.default_rng(7).bytes(6 << 20)  # like 6 MB of compressed video
    assert len(find_leaks([noise], ["bob"])) == 2  # a three-letter name turns up by chance …
    assert "bob" not in for_binary(["bob", "bbaf2n"]) and "bbaf2n" in for_binary(["bob", "bbaf2n"])
    forbidden = forbidden_for_study(study)
    binary = for_binary(forbidden)
    assert [f for f in forbidden if isinstance(f, re.Pattern)] == [f for f in binary if isinstance(f, re.Pattern)]
    assert find_leaks_in_media(noise, forbidden) == []  # … the binary needles of a study do not


def test_media_scans_find_what_find_leaks_finds_in_binary_data(study):
    clip = Clip.objects.filter(study_clips__study=study).select_related("condition__checkpoint").first()
    noise = np.random.default_rng(3).bytes(4096)
    planted = [clip.delivery_name.encode(), b"WAV2LIP_GAN.PTH", json.dumps(clip.condition.name).encode(),
               b"title=" + clip.condition.name.replace(" ", "%20").encode(), f"clip_id={clip.pk};".encode(),
               b"xwav2lip_gan official", b"awav2lipb", b"\xff\x00wav2lip\x00"]
    # NUL-separated: next to a byte such as 0xE9 ("é" in Latin-1), the regex sees a word where the fast scan does not.
    data = noise[:100] + b"".join(b"\x00%s\x00%s" % (text, noise[i * 50:][:50]) for i, text in enumerate(planted))
    forbidden = forbidden_for_study(study)
    fast = {(leak.needle, leak.offset, leak.found) for leak in find_leaks_in_media(data, forbidden)}
    slow = {(leak.needle, leak.offset, leak.found) for leak in find_leaks([data], for_binary(forbidden))}
    assert fast == slow
    needles = {needle for needle, _, _ in fast}
    assert {clip.delivery_name, "wav2lip_gan.pth", clip.condition.name, "wav2lip_gan official", "wav2lip"} <= needles
    assert any(isinstance(f, re.Pattern) and f.pattern == needle for f in forbidden for needle in needles)
    assert not any(found.lower() == "wav2lip" and data[offset - 1: offset] == b"a" for _, offset, found in fast)


def facts(label: str, content: str, n_frames: int = 25, duration: float = 1.0, audio: float | None = 1.0,
          **profile) -> ClipFacts:
    defaults = {"video_codec": "h264", "width": 256, "fps": 25.0, "format_tags": {"major_brand": "isom"}}
    return ClipFacts(label, content, n_frames, duration, duration, audio, tuple({**defaults, **profile}.items()))


def test_clips_of_one_content_item_must_have_the_same_frames_and_durations():
    alike = [facts("clip 1 (model A)", "face 1, sentence 1"), facts("clip 2 (model B)", "face 1, sentence 1"),
             facts("clip 3 (model A)", "face 2, sentence 2", n_frames=50, duration=2.0)]
    assert content_mismatches(alike) == []  # other content may last longer
    longer = alike + [facts("clip 4 (control)", "face 1, sentence 1", n_frames=26, duration=1.04)]
    problems = content_mismatches(longer)
    assert len(problems) == 3  # frames, container and video durations; the audio is as long
    assert problems[0] == ("n_frames differs within content «face 1, sentence 1»: clip 1 (model A): 25, "
                           "clip 2 (model B): 25, clip 4 (control): 26")
    shorter_audio = alike + [facts("clip 5 (model C)", "face 2, sentence 2", n_frames=50, duration=2.0, audio=1.9)]
    assert [p.split(" differs")[0] for p in content_mismatches(shorter_audio)] == ["audio_duration"]
    within_a_microsecond = alike + [facts("clip 6", "face 1, sentence 1", duration=1.0000004)]
    assert content_mismatches(within_a_microsecond) == []


def test_every_clip_must_have_the_same_encoding_and_container_tags():
    clips = [facts("clip 1 (model A)", "a"), facts("clip 2 (model B)", "b")]
    assert profile_mismatches(clips) == []
    clips.append(facts("clip 3 (model C)", "a", fps=30.0, format_tags={"major_brand": "isom", "title": "x"}))
    problems = profile_mismatches(clips)
    assert [p.split(" differs")[0] for p in problems] == ["format_tags", "fps"]
    assert "30.0 for clip 3 (model C)" in problems[1] and "25.0 for clip 1 (model A), clip 2 (model B)" in problems[1]


def test_role_markers_find_what_would_announce_a_check_and_nothing_else():
    assert role_markers("<p>Attention check: choose 1</p>") == ["Attention check"]
    assert role_markers('{"passed_check": true}') == ["passed_check"]
    markers = role_markers("A GOLD clip, a trap, a catch trial.")
    assert [m.lower() for m in markers] == ["gold clip", "trap", "catch trial"]
    ordinary = ["Clip 3 of 10", "Practice clip 1 of 2", "How well do the lips match the speech?",
                "Save and continue", "You may play it again.", "Check your set-up", "The questions unlock at the end."]
    assert [role_markers(text) for text in ordinary] == [[]] * len(ordinary)


def test_trial_skeletons_differ_only_where_more_than_tokens_and_numbers_differ():
    page = '<h1>Clip {n} of 10</h1><video src="/m/{token}:1xV4Pg:KiFvahBi0G-gGJ4"></video>{{"assignment": "{token}"}}'
    one = page.format(n=3, token="cNjQH61Z18kp5phCTpiPoA")
    two = page.format(n=7, token="d--ri6bNoT1bQJO3joLbrQ")
    assert trial_skeleton(one) == trial_skeleton(two)
    assert trial_skeleton(one) != trial_skeleton(two.replace("</h1>", "</h1><p>check</p>"))
    assert trial_skeleton(one.encode()) == trial_skeleton(one)
    # The answer to the last trial completes the session, whatever its role.
    last, other = '{"replay": false, "completed": true}', '{"replay":false, "completed":false}'
    assert trial_skeleton(last) == trial_skeleton(other)
    assert trial_skeleton('{"completed": false}') != trial_skeleton('{"completed": false, "passed": false}')
