"""Workflows over several generation models: register a corpus, plan a job's clips, track progress.

Views, admin actions, management commands and tasks call these; they own the transactions and
enqueue tasks only once the rows they name are committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from generation import media
from generation.models import Audio, Clip, Condition, GenerationJob, Source

MISMATCHED_AUDIO = "mismatched_audio"


# --- corpus --------------------------------------------------------------------------------------


def register_corpus_items(items: Sequence, *, storage_prefix: str = "corpus", name_suffix: str = "") -> list[Source]:
    """Store corpus items (generation.corpus.CorpusItem) as Audio + Source rows.

    Idempotent: an item already registered under the same name with the same content is reused.
    The same name with different content (another size or seed) is refused rather than silently
    mixed up; give such a corpus its own ``name_suffix``. Files are copied into MEDIA_ROOT so the
    database never points at a scratch folder.
    """
    sources = []
    for item in items:
        name = f"{item.name}{name_suffix}"
        video_sha, audio_sha = media.sha256_file(item.video_path), media.sha256_file(item.audio_path)
        with transaction.atomic():
            audio = Audio.objects.filter(name=name).first()
            if audio is None:
                audio = Audio(
                    name=name,
                    content_id=item.content_id,
                    transcript=item.text,
                    sample_rate=16000,
                    duration=item.duration,
                    sha256=audio_sha,
                    provenance={"corpus_item": item.name, "voice": item.voice},
                )
                with open(item.audio_path, "rb") as fh:
                    audio.file.save(f"{storage_prefix}/{name}.wav", File(fh), save=False)
                audio.save()
            elif audio.sha256 != audio_sha:
                raise ValueError(f"an audio named {name!r} with other content is already registered")
            source = Source.objects.filter(name=name).first()
            if source is None:
                source = Source(
                    name=name,
                    kind=Source.KIND_VIDEO,
                    identity=item.identity,
                    content_id=item.content_id,
                    own_audio=audio,
                    fps=item.fps,
                    n_frames=item.n_frames,
                    width=item.width,
                    height=item.height,
                    duration=item.duration,
                    sha256=video_sha,
                    provenance=item.provenance,
                )
                with open(item.video_path, "rb") as fh:
                    source.file.save(f"{storage_prefix}/{name}.mp4", File(fh), save=False)
                source.save()
            elif source.sha256 != video_sha:
                raise ValueError(f"a source named {name!r} with other content is already registered")
        sources.append(source)
    return sources


def get_or_create_conditions(specs: Iterable[dict]) -> list[Condition]:
    """Conditions from specs {name, kind, control, params, description} (e.g. controls.standard_conditions())."""
    conditions = []
    for spec in specs:
        condition = Condition.objects.filter(name=spec["name"]).first()
        if condition is None:
            condition = Condition(
                name=spec["name"],
                kind=spec["kind"],
                control=spec.get("control", ""),
                params=spec.get("params", {}),
                architecture=spec.get("architecture", ""),
                description=spec.get("description", ""),
            )
            condition.full_clean()  # validates the control's parameters before anything is stored
            condition.save()
        conditions.append(condition)
    return conditions


# --- jobs ----------------------------------------------------------------------------------------


def create_job(conditions: Iterable[Condition], sources: Iterable[Source], *, name: str = "", options=None) -> GenerationJob:
    from generation.media import DeliveryProfile

    options = dict(options or {})
    DeliveryProfile.from_options(options)  # refuse a bad profile now, not in a worker later
    with transaction.atomic():
        job = GenerationJob.objects.create(name=name, options=options)
        job.conditions.set(list(conditions))
        job.sources.set(list(sources))
    return job


def start_job(job: GenerationJob) -> None:
    """Queue the job's fan-out once the job row is committed."""
    from generation.tasks import start_job as start_job_task

    job_id = job.pk
    transaction.on_commit(lambda: start_job_task.delay(job_id))


def restart_failed_clips(job: GenerationJob) -> int:
    """Put a finished job's failed clips back in the queue; returns how many."""
    with transaction.atomic():
        n = job.clips.filter(status=Clip.FAILED).update(status=Clip.PENDING, error="", claimed_until=None)
        GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.PENDING, finished_at=None, error="")
    start_job(job)
    return n


def claim_job(job_id: int) -> GenerationJob | None:
    """Mark a pending job running; None if another worker has it or it is gone."""
    now = timezone.now()
    won = GenerationJob.objects.filter(pk=job_id, status=GenerationJob.PENDING).update(
        status=GenerationJob.RUNNING, started_at=now, attempts=F("attempts") + 1
    )
    return GenerationJob.objects.get(pk=job_id) if won else None


def mismatched_audio_for(source: Source, candidates: Sequence[Audio]) -> Audio | None:
    """Another sentence's audio for a mismatched-audio clip, chosen deterministically.

    Prefer the same voice (so only the words differ, not the speaker) and the closest duration.
    """
    own = source.own_audio
    others = [a for a in candidates if own is None or a.content_id != own.content_id]
    if not others:
        return None
    own_voice = (own.provenance or {}).get("voice") if own else None
    own_duration = own.duration if own else 0.0
    return min(
        others,
        key=lambda a: ((a.provenance or {}).get("voice") != own_voice, abs(a.duration - own_duration), a.name),
    )


def plan_clips(job: GenerationJob) -> list[int]:
    """Create the job's Clip rows (conditions × sources) and return the ids still to render.

    Idempotent: an existing clip of the same condition, source and audio is reused, so re-running
    a job never duplicates stimuli. Clips that cannot be planned (no audio for a source, no other
    sentence for a mismatched-audio control) are created as failed with the reason.
    """
    conditions = list(job.conditions.all())
    sources = list(job.sources.select_related("own_audio"))
    all_audio = list(Audio.objects.all())
    to_render: list[int] = []
    with transaction.atomic():
        for source in sources:
            reference_clip = None
            for condition in sorted(conditions, key=lambda c: c.kind != Condition.KIND_REFERENCE):
                audio = source.own_audio
                error = "" if audio is not None else "the source has no audio of its own to drive it"
                if condition.kind == Condition.KIND_CONTROL and condition.control == MISMATCHED_AUDIO:
                    audio = mismatched_audio_for(source, all_audio)
                    if audio is None:
                        error = "no other sentence is available for a mismatched-audio clip"
                if audio is None:
                    _record_unplannable(job, condition, source, error)
                    continue
                clip, _ = Clip.objects.get_or_create(
                    condition=condition, source=source, audio=audio, defaults={"job": job}
                )
                if clip.job_id != job.pk:
                    Clip.objects.filter(pk=clip.pk).update(job=job)
                if condition.kind == Condition.KIND_REFERENCE and audio == source.own_audio:
                    reference_clip = clip
                if clip.status != Clip.READY:
                    to_render.append(clip.pk)
            if reference_clip is not None:
                Clip.objects.filter(source=source, audio=source.own_audio).exclude(pk=reference_clip.pk).update(
                    reference=reference_clip
                )
                # Mismatched-audio clips show the same face video: their reference is the same GT clip.
                Clip.objects.filter(source=source, condition__control=MISMATCHED_AUDIO).update(reference=reference_clip)
        GenerationJob.objects.filter(pk=job.pk).update(n_total=job.clips.count())
    refresh_progress(job.pk)
    return to_render


def _record_unplannable(job: GenerationJob, condition: Condition, source: Source, error: str) -> None:
    job.error = (job.error + "\n" if job.error else "") + f"{condition} × {source}: {error}"
    GenerationJob.objects.filter(pk=job.pk).update(error=job.error)


def refresh_progress(job_id: int) -> GenerationJob | None:
    """Recount a job's clips and close it when none is left in flight.

    Counts are derived from the clips rather than incremented, so a task that runs twice (a
    redelivery after a worker died) can never count a clip twice.
    """
    counts = Clip.objects.filter(job_id=job_id).aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status=Clip.READY)),
        failed=Count("id", filter=Q(status=Clip.FAILED)),
    )
    GenerationJob.objects.filter(pk=job_id).update(
        n_total=counts["total"], n_done=counts["done"], n_failed=counts["failed"]
    )
    if counts["done"] + counts["failed"] == counts["total"]:
        final = (
            GenerationJob.DONE if counts["failed"] == 0
            else GenerationJob.FAILED if counts["done"] == 0
            else GenerationJob.PARTIAL
        )
        GenerationJob.objects.filter(pk=job_id, status=GenerationJob.RUNNING).update(
            status=final, finished_at=timezone.now()
        )
    return GenerationJob.objects.filter(pk=job_id).first()


# --- clips ---------------------------------------------------------------------------------------


def media_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def raw_path(clip: Clip) -> Path:
    return media_path(clip.work_dir) / "raw.mkv"


def render_request(clip: Clip):
    """The Django-free description of what the render step must do for this clip."""
    from generation.render import RenderRequest

    condition = clip.condition
    source = clip.source
    is_mismatched = condition.kind == Condition.KIND_CONTROL and condition.control == MISMATCHED_AUDIO
    own_audio = source.own_audio
    if is_mismatched and own_audio is None:
        from generation.render import RenderError

        raise RenderError("a mismatched-audio clip needs the source's own audio to set its length")
    return RenderRequest(
        condition_kind=condition.kind,
        control=condition.control,
        params=condition.params,
        source_path=Path(source.file.path),
        source_is_still=source.kind == Source.KIND_STILL,
        audio_path=Path(own_audio.file.path if is_mismatched else clip.audio.file.path),
        other_audio_path=Path(clip.audio.file.path) if is_mismatched else None,
        output_path=raw_path(clip),
        fps=source.fps or 25.0,
        architecture=condition.architecture,
    )


def fail_clip(clip_id: int, error: str) -> None:
    Clip.objects.filter(pk=clip_id).update(status=Clip.FAILED, error=error[:2000], claimed_until=None)


def release_clip(clip_id: int, back_to: str) -> None:
    """Hand a claimed clip back (before a retry) so the retried task can claim it again."""
    Clip.objects.filter(pk=clip_id).exclude(status__in=[Clip.READY, Clip.FAILED]).update(
        status=back_to, claimed_until=None
    )


def mark_rendered(clip_id: int, worker: str) -> None:
    Clip.objects.filter(pk=clip_id).update(status=Clip.RENDERED, claimed_until=None, rendered_by=worker, error="")


def finish_clip(clip: Clip, info: media.MediaInfo, sha256: str, worker: str) -> None:
    Clip.objects.filter(pk=clip.pk).update(
        status=Clip.READY,
        file=f"clips/{clip.delivery_name}",
        sha256=sha256,
        duration=info.duration,
        fps=info.fps,
        n_frames=info.n_frames,
        width=info.width,
        height=info.height,
        size_bytes=info.size_bytes,
        claimed_until=None,
        normalized_by=worker,
        error="",
    )
