"""Planning a job's clips, counting its progress and claiming rows — the database side of generation."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from generation import services
from generation.models import Audio, Clip, Condition, GenerationJob, Source

pytestmark = pytest.mark.django_db


def _audio(name, content, voice="en-us", duration=1.5):
    return Audio.objects.create(name=name, content_id=content, sample_rate=16000, duration=duration,
                                file=f"audio/{name}.wav", provenance={"voice": voice})


def _source(name, audio):
    return Source.objects.create(name=name, identity="astronaut", content_id=audio.content_id, own_audio=audio,
                                 file=f"sources/{name}.mp4", fps=25)


@pytest.fixture
def corpus_rows():
    a1 = _audio("a-us-bbaf2n", "bbaf2n", duration=1.5)
    a2 = _audio("a-us-lgwk9s", "lgwk9s", duration=1.6)
    a3 = _audio("a-gb-pria4a", "pria4a", voice="en-gb", duration=1.5)
    return [_source("s1", a1), _source("s2", a2), _source("s3", a3)]


@pytest.fixture
def conditions():
    return services.get_or_create_conditions([
        {"name": "Hidden reference", "kind": "reference"},
        {"name": "Audio +3", "kind": "control", "control": "audio_shift", "params": {"frames": 3}},
        {"name": "Mismatched", "kind": "control", "control": "mismatched_audio", "params": {}},
    ])


def test_it_plans_one_clip_per_condition_and_source(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    plan = services.plan_clips(job)
    job.refresh_from_db()
    assert job.n_total == len(plan.to_render) == 9 and plan.to_normalize == []
    assert job.clips.count() == Clip.objects.count() == 9


def test_it_never_duplicates_clips_when_a_job_is_planned_again(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    first = services.plan_clips(job).to_render
    Clip.objects.filter(pk=first[0]).update(status=Clip.READY)
    Clip.objects.filter(pk=first[1]).update(status=Clip.RENDERED)
    second = services.plan_clips(job)
    assert Clip.objects.count() == 9
    assert sorted(second.to_render) == sorted(first[2:])  # the ready clip is not made again…
    assert second.to_normalize == [first[1]]  # …and raw frames waiting for encoding are encoded


def test_it_drives_mismatched_clips_with_another_sentence_of_the_same_voice(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    services.plan_clips(job)
    mismatched = {c.source.name: c.audio for c in Clip.objects.filter(condition__control="mismatched_audio")}
    assert mismatched["s1"].name == "a-us-lgwk9s"
    assert mismatched["s2"].name == "a-us-bbaf2n"
    # s3's voice has no other sentence: another voice is the fallback, never the same sentence.
    assert mismatched["s3"].content_id != "pria4a"


def test_it_links_every_clip_to_the_ground_truth_clip_of_its_source(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    services.plan_clips(job)
    for clip in Clip.objects.exclude(condition__kind="reference"):
        assert clip.reference.condition.kind == "reference"
        assert clip.reference.source == clip.source


def test_it_counts_a_pair_that_cannot_become_a_clip_as_failed_and_says_why(conditions):
    lonely = _source("lonely", _audio("only-one", "bbaf2n"))
    job = services.create_job(conditions, [lonely])
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.RUNNING)
    plan = services.plan_clips(job)
    job.refresh_from_db()
    assert len(plan.to_render) == 2  # reference and audio shift; no other sentence exists for the mismatch
    assert (job.n_total, job.n_failed, job.n_unplanned) == (3, 1, 1)
    assert "no other sentence" in job.error
    Clip.objects.update(status=Clip.READY)
    assert services.refresh_progress(job.pk).status == GenerationJob.PARTIAL


def test_it_counts_progress_from_the_clips_and_closes_the_job(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    ids = services.plan_clips(job).to_render
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.RUNNING)
    Clip.objects.filter(pk__in=ids[:8]).update(status=Clip.READY)
    job = services.refresh_progress(job.pk)
    assert (job.n_done, job.n_failed, job.status) == (8, 0, GenerationJob.RUNNING)
    Clip.objects.filter(pk=ids[8]).update(status=Clip.FAILED)
    job = services.refresh_progress(job.pk)
    job = services.refresh_progress(job.pk)  # counting twice changes nothing
    assert (job.n_done, job.n_failed, job.status) == (8, 1, GenerationJob.PARTIAL)
    assert job.finished_at is not None


def test_it_lets_only_one_worker_claim_a_clip(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    clip = Clip.objects.get(pk=services.plan_clips(job).to_render[0])
    rival = Clip.objects.get(pk=clip.pk)
    assert clip.claim(Clip.PENDING, Clip.RENDERING) == Clip.CLAIMED
    assert rival.claim(Clip.PENDING, Clip.RENDERING) == Clip.BUSY
    assert 0 < rival.lease_left() <= 15 * 60
    assert clip.attempts == 1
    Clip.objects.filter(pk=clip.pk).update(status=Clip.RENDERED)
    assert rival.claim(Clip.PENDING, Clip.RENDERING) == Clip.GONE  # past this step: nothing to do


def test_it_lets_another_worker_take_over_a_claim_whose_lease_ran_out(corpus_rows, conditions):
    job = services.create_job(conditions, corpus_rows)
    clip = Clip.objects.get(pk=services.plan_clips(job).to_render[0])
    assert clip.claim(Clip.PENDING, Clip.RENDERING) == Clip.CLAIMED
    Clip.objects.filter(pk=clip.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    rescuer = Clip.objects.get(pk=clip.pk)
    assert rescuer.claim(Clip.PENDING, Clip.RENDERING) == Clip.CLAIMED
    assert rescuer.attempts == 2


def test_it_refuses_a_job_with_a_bad_delivery_profile(corpus_rows, conditions):
    with pytest.raises(ValueError):
        services.create_job(conditions, corpus_rows, options={"fps": "fast"})
    assert not GenerationJob.objects.exists()


def test_it_validates_control_parameters_when_conditions_are_created():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.get_or_create_conditions([
            {"name": "Bad shift", "kind": "control", "control": "audio_shift", "params": {"frames": "lots"}},
        ])
    assert not Condition.objects.filter(name="Bad shift").exists()


def test_it_registers_a_corpus_once_and_refuses_a_different_one_under_the_same_name(tmp_path):
    from types import SimpleNamespace

    from generation import media

    def item(seed):
        video, audio = tmp_path / f"v{seed}.mp4", tmp_path / f"a{seed}.wav"
        video.write_bytes(bytes([seed]) * 100)
        media.write_wav(audio, np.full(1600, 0.1 * seed, dtype=np.float32), 16000)
        return SimpleNamespace(name="astronaut_en-us_bbaf2n", content_id="bbaf2n", text="bin blue at f two now",
                               voice="en-us", identity="astronaut", fps=25.0, n_frames=3, width=8, height=8,
                               duration=0.1, video_path=video, audio_path=audio, provenance={"seed": seed})

    first = services.register_corpus_items([item(1)])
    again = services.register_corpus_items([item(1)])
    assert [s.pk for s in first] == [s.pk for s in again]
    assert first[0].own_audio.content_id == "bbaf2n" and first[0].provenance == {"seed": 1}
    with pytest.raises(ValueError, match="other content"):
        services.register_corpus_items([item(2)])
    other = services.register_corpus_items([item(2)], name_suffix="@seed2")
    assert other[0].name == "astronaut_en-us_bbaf2n@seed2" and Source.objects.count() == 2


def test_it_shares_an_existing_clip_between_jobs_without_taking_it_away(corpus_rows, conditions):
    first = services.create_job(conditions, corpus_rows[:1])
    services.plan_clips(first)
    second = services.create_job(conditions[:1], corpus_rows[:1])
    services.plan_clips(second)
    shared = second.clips.get()
    assert shared in first.clips.all() and Clip.objects.count() == 3
    GenerationJob.objects.update(status=GenerationJob.RUNNING)
    Clip.objects.update(status=Clip.READY)
    assert services.refresh_progress(first.pk).status == GenerationJob.DONE
    assert services.refresh_progress(second.pk).status == GenerationJob.DONE


def test_it_refuses_to_reuse_a_clip_made_in_another_delivery_profile(corpus_rows, conditions):
    services.plan_clips(services.create_job(conditions[:1], corpus_rows[:1], options={"width": 128, "height": 128}))
    job = services.create_job(conditions[:1], corpus_rows[:1])
    plan = services.plan_clips(job)
    job.refresh_from_db()
    assert plan.to_render == [] and job.n_unplanned == 1
    assert "another delivery profile" in job.error


def test_it_requeues_work_whose_message_was_lost(corpus_rows, conditions, monkeypatch,
                                                 django_capture_on_commit_callbacks):
    from generation import tasks

    sent = []
    monkeypatch.setattr(tasks.render_raw_clip, "delay", lambda clip_id: sent.append(("render", clip_id)))
    monkeypatch.setattr(tasks.normalize_clip, "delay", lambda clip_id: sent.append(("normalize", clip_id)))
    job = services.create_job(conditions, corpus_rows)
    ids = services.plan_clips(job).to_render
    past, future = timezone.now() - timedelta(minutes=1), timezone.now() + timedelta(minutes=5)
    Clip.objects.filter(pk=ids[0]).update(status=Clip.RENDERING, claimed_until=past)   # worker died
    Clip.objects.filter(pk=ids[1]).update(status=Clip.RENDERING, claimed_until=future)  # still at work
    Clip.objects.filter(pk=ids[2]).update(status=Clip.NORMALIZING, claimed_until=past)  # worker died
    Clip.objects.filter(pk=ids[3]).update(status=Clip.RENDERED)  # encoding message lost…
    Clip.objects.filter(pk=ids[3]).update(updated_at=past - timedelta(hours=1))  # …long ago
    Clip.objects.filter(pk=ids[4]).update(status=Clip.RENDERED)  # just rendered: its message is on its way
    with django_capture_on_commit_callbacks(execute=True):
        counts = services.resume_stalled()
    assert sorted(sent) == sorted([("render", ids[0]), ("normalize", ids[2]), ("normalize", ids[3])])
    assert counts == {"renders": 1, "encodes": 2, "open_jobs": 0}
