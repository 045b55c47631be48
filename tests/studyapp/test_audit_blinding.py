"""The blinding audit (manage.py audit_blinding): a study of each method, built from the fixture clips whose
conditions, checkpoints and files have revealing names, leaks nothing; and every kind of leak planted in one
is caught and named."""

from __future__ import annotations

import json
import re
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.core.management.base import CommandError

from generation import media
from generation.models import Clip, GenerationJob
from studyapp.blinding import forbidden_for_study
from studyapp.management.commands.audit_blinding import pad_study_clips
from studyapp.models import Assignment, ExpectedAnswer, Participant, PlaybackEvent, Rating, Study, StudyClip
from tests.fixtures import FPS, SAMPLE_RATE, face_frames, make_clip, make_study, tone

pytestmark = pytest.mark.skipif(not media.ffmpeg_available(), reason="ffmpeg is not installed")

ENVIRONMENT_CHECK = dict(allow_phones=False, min_viewport_width=800, min_viewport_height=500, min_face_px=150,
                         audio_check=True, request_fullscreen=True)
TRIAL_CONFIG = re.compile(rb'<script id="trial-config" type="application/json">(.*?)</script>', re.S)


def audit(study: Study, *options: str, expect: int = 0) -> dict:
    """Run the command on one study with --json; check its exit status; the study's part of the report."""
    out, err = StringIO(), StringIO()
    try:
        call_command("audit_blinding", "--study", str(study.pk), "--json", *options, stdout=out, stderr=err)
        status = 0
    except CommandError as exc:
        status = exc.returncode
    report = json.loads(out.getvalue())
    (result,) = report["studies"]
    assert status == expect, json.dumps({"leaks": result["leaks"], "problems": result["problems"]}, indent=1)
    return result


def kinds(result: dict) -> set[str]:
    return {leak["kind"] for leak in result["leaks"]}


def file_digests(study: Study) -> dict[int, str]:
    return {c.pk: media.sha256_file(c.file.path) for c in Clip.objects.filter(study_clips__study=study)}


def stages(result: dict) -> str:
    return " | ".join(" → ".join(walk["stages"]) + f" [{walk['end_state']}]" for walk in result["walks"])


def with_practice_and_gold(study: Study, clip_files, practice_variant: int, gold_variant: int) -> None:
    """A practice clip with feedback and a gold clip (a frozen mouth: sync 1–2), both with expected answers."""
    practice = StudyClip.objects.create(study=study, clip=make_clip(practice_variant, clip_files),
                                        role=StudyClip.ROLE_PRACTICE)
    gold = StudyClip.objects.create(study=study, clip=make_clip(gold_variant, clip_files), role=StudyClip.ROLE_GOLD)
    for scale in study.scales.all():
        ExpectedAnswer.objects.create(study_clip=practice, scale=scale, low=3, high=5,
                                      feedback="Most people give this clip a 4.")
        ExpectedAnswer.objects.create(study_clip=gold, scale=scale, low=1, high=2)


def dcr_study(clip_files, **fields) -> Study:
    """Two clips of the astronaut content, each shown after its reference (the reference is no study clip)."""
    study = make_study(clip_files, n_clips=0, per_participant=2, method=Study.METHOD_DCR, **fields)
    reference = make_clip(2, clip_files)
    for variant in (0, 4):
        clip = make_clip(variant, clip_files)
        clip.reference = reference
        clip.save(update_fields=["reference"])
        StudyClip.objects.create(study=study, clip=clip)
    return study


# --- a study of each method leaks nothing --------------------------------------------------------


@pytest.mark.slow
def test_an_acr_study_with_every_stage_leaks_nothing_and_keeps_nothing(db, clip_files):
    study = make_study(clip_files, n_clips=4, per_participant=3, gold_per_participant=1, status=Study.DRAFT,
                       **ENVIRONMENT_CHECK)
    with_practice_and_gold(study, clip_files, practice_variant=5, gold_variant=4)
    job = GenerationJob.objects.create(name="wav2lip+lipgan on astronaut GRID")
    job.clips.add(*Clip.objects.filter(study_clips__study=study))
    assert job.name in forbidden_for_study(study)
    call_command("audit_blinding", "--study", str(study.pk), "--pad", "--json", stdout=StringIO(), stderr=StringIO())
    before = file_digests(study)

    result = audit(study, "--participants", "2")

    assert result["leaks"] == [] and result["problems"] == []
    walked = stages(result)
    for stage in ("Information and consent", "Check your set-up", "Instructions", "trial (practice)", "Feedback",
                  "trial (test)", "trial (gold)", "Thank you", "[completed]", "[screened_out]", "[returned]"):
        assert stage in walked, walked
    trials = result["trials"]
    assert trials["practice"] == 2 and trials["gold"] == 2 and trials["test"] >= 3, trials  # participant 2 fails gold
    assert result["requests"] > 150 and len(result["clips_served"]) >= 5  # practice, gold, 3 of the 4 test clips
    # Rolled back: no participant, trial, answer, event or session is left; the study is still a draft.
    assert not Participant.objects.exists() and not Assignment.objects.exists() and not Rating.objects.exists()
    assert not PlaybackEvent.objects.exists() and not Session.objects.exists()
    assert Study.objects.get(pk=study.pk).status == Study.DRAFT
    assert file_digests(study) == before
    assert "opened for the audit only" in " ".join(result["notes"])


@pytest.mark.slow
@pytest.mark.parametrize("method", [Study.METHOD_ACR_HR, Study.METHOD_DCR, Study.METHOD_PAIRWISE])
def test_a_study_of_each_method_leaks_nothing_and_serves_every_clip_its_trials_show(db, clip_files, method):
    if method == Study.METHOD_DCR:
        study = dcr_study(clip_files)
    else:
        study = make_study(clip_files, n_clips=6, per_participant=2, method=method)
    make_study(clip_files, n_clips=0, status=Study.DRAFT)  # --all-open leaves it out

    out = StringIO()
    call_command("audit_blinding", "--all-open", "--pad", "--json", "--participants", "1", stdout=out,
                 stderr=StringIO())
    report = json.loads(out.getvalue())

    assert [s["study"] for s in report["studies"]] == [study.pk]
    (result,) = report["studies"]
    assert result["leaks"] == [] and result["problems"] == [], result
    assert result["trials"] == {"test": 2}, stages(result)
    if method == Study.METHOD_DCR:  # both trials showed the reference, which is no study clip
        assert any("Hidden reference" in label for label in result["clips_served"]), result["clips_served"]
        assert len(result["clips_served"]) == 3
    if method == Study.METHOD_PAIRWISE:  # both clips of each pair (no problem says one was not served); two pairs
        assert len(result["clips_served"]) >= 3


# --- planted leaks are caught --------------------------------------------------------------------


def test_it_catches_a_condition_name_in_the_instructions(db, clip_files):
    study = make_study(clip_files, n_clips=2, per_participant=2)
    study.instructions += "\nToday we compare the Wav2Lip GAN checkpoint with its rivals."
    study.save(update_fields=["instructions"])

    result = audit(study, "--pad", "--participants", "1", expect=1)

    assert kinds(result) == {"name"}
    leak = result["leaks"][0]
    assert "Wav2Lip GAN checkpoint" in leak["what"] and "Instructions" in leak["where"]
    assert "we compare the Wav2Lip GAN checkpoint with" in leak["context"]


class PlantedMediaHeaders:
    """Test middleware: clip responses named after their file, with a validator, and cacheable by anyone."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("video/"):
            clip = Clip.objects.order_by("pk").first()
            response["Content-Disposition"] = f'inline; filename="{Path(clip.file.name).name}"'
            response["ETag"] = '"v1"'
            response["Cache-Control"] = "public, max-age=3600"
        return response


def test_it_catches_a_clip_file_name_a_validator_and_public_caching_in_media_headers(db, clip_files, settings):
    study = make_study(clip_files, n_clips=2, per_participant=1)
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.PlantedMediaHeaders"]

    result = audit(study, "--pad", "--participants", "1", expect=1)

    assert kinds(result) == {"name", "header", "caching"}
    named = [leak for leak in result["leaks"] if leak["kind"] == "name"]
    assert named and all(re.match(r"headers of (GET|HEAD) /m/", leak["where"]) for leak in named)
    headers = " ".join(leak["what"] for leak in result["leaks"] if leak["kind"] == "header")
    assert "content-disposition" in headers and "etag" in headers


def test_it_catches_a_metadata_tag_left_in_a_clip(db, clip_files):
    study = make_study(clip_files, n_clips=2, per_participant=1)
    clip = Clip.objects.get(study_clips__study=study, condition__name="audio_shift +3 frames")
    tagged = Path(clip.file.path).with_suffix(".tagged.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", clip.file.path, "-map", "0", "-c", "copy",
                    "-metadata", "comment=made by wav2lip", str(tagged)], check=True)
    tagged.replace(clip.file.path)

    result = audit(study, "--pad", "--participants", "1", expect=1)

    metadata = [leak for leak in result["leaks"] if leak["kind"] == "metadata"]
    assert len(metadata) == 1 and "wav2lip" in metadata[0]["what"] and "audio_shift +3 frames" in metadata[0]["where"]
    assert any(leak["kind"] == "name" and "the file served for it" in leak["where"] for leak in result["leaks"])
    encoding = [leak for leak in result["leaks"] if leak["kind"] == "encoding"]
    assert encoding and "format_tags differs" in encoding[0]["what"]  # a tag only one clip has tells it apart


def test_it_catches_unpadded_sizes_and_pad_fixes_them_once(db, clip_files):
    study = make_study(clip_files, n_clips=2, per_participant=1)
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("audit_blinding", "--study", str(study.pk), "--participants", "1", stdout=out,
                     stderr=StringIO())
    assert failed.value.returncode == 1
    report = out.getvalue()
    for clip in Clip.objects.filter(study_clips__study=study).select_related("condition"):
        assert f"[size] clip {clip.pk} ({clip.condition.name})" in report
        assert f"{clip.size_bytes} bytes is not a multiple of {media.DELIVERY_SIZE_BLOCK}" in report
    assert "LEAKS (2)" in report

    errors = StringIO()
    call_command("audit_blinding", "--study", str(study.pk), "--participants", "1", "--pad", stdout=StringIO(),
                 stderr=errors)
    assert errors.getvalue().count("padded clip") == 2
    for clip in Clip.objects.filter(study_clips__study=study):
        assert clip.size_bytes == Path(clip.file.path).stat().st_size
        assert clip.size_bytes % media.DELIVERY_SIZE_BLOCK == 0 and clip.sha256 == media.sha256_file(clip.file.path)
    assert pad_study_clips(study, media.DELIVERY_SIZE_BLOCK) == []  # already padded: nothing to do


def test_it_catches_a_condition_whose_clip_is_a_frame_longer(db, clip_files):
    study = make_study(clip_files, n_clips=5, per_participant=1)
    longer = Clip.objects.get(study_clips__study=study, condition__name="frozen_mouth control")
    media.write_video(longer.file.path, face_frames(4, n_frames=FPS + 1), FPS, tone(4), SAMPLE_RATE)

    result = audit(study, "--pad", "--participants", "1", expect=1)

    durations = " ".join(leak["what"] for leak in result["leaks"] if leak["kind"] == "duration")
    content = "«source astronaut_en-us_bbaf2n.mp4, audio grid_s1_bbaf2n.wav»"
    assert f"n_frames differs within content {content}" in durations
    assert "frozen_mouth control): 26" in durations and "Wav2Lip GAN checkpoint): 25" in durations
    assert "carphone" not in durations  # the other content item's clips are alike


class PlantedGoldMarker:
    """Test middleware: a gold trial's page gives itself away."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        config = TRIAL_CONFIG.search(response.content) if not response.streaming else None
        if config and Assignment.objects.filter(token=json.loads(config.group(1))["assignment"],
                                                role=StudyClip.ROLE_GOLD).exists():
            response.content = response.content.replace(b"</main>", b'<p class="hint">Attention check</p></main>')
        return response


def test_it_catches_a_gold_trial_that_looks_different(db, clip_files, settings):
    study = make_study(clip_files, n_clips=3, per_participant=2, gold_per_participant=1)
    StudyClip.objects.create(study=study, clip=make_clip(4, clip_files), role=StudyClip.ROLE_GOLD)
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.PlantedGoldMarker"]

    result = audit(study, "--pad", "--participants", "1", expect=1)

    assert kinds(result) == {"role"}
    what = " ".join(leak["what"] for leak in result["leaks"])
    assert "the word 'Attention check' on a gold trial" in what
    assert "differs from every test trial page" in what and "Attention check" in what


def test_it_needs_studies_to_audit(db):
    with pytest.raises(CommandError, match="--study ID, or use --all-open"):
        call_command("audit_blinding", stdout=StringIO())
    with pytest.raises(CommandError, match="no study with id 999"):
        call_command("audit_blinding", "--study", "999", stdout=StringIO())
