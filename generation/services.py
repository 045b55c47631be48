"""Workflows over several generation models: register a corpus, plan a job's clips, track progress.

Views, admin actions, management commands and tasks call these; they own the transactions and
enqueue tasks only once the rows they name are committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from generation import media
from generation.models import Audio, Clip, Condition, GenerationJob, Source
from generation.render import CheckpointRef, RenderError, RenderRequest

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


@dataclass(frozen=True)
class Plan:
    """What a job still has to do: clips to render from scratch, clips whose raw frames wait for encoding."""

    to_render: list[int] = field(default_factory=list)
    to_normalize: list[int] = field(default_factory=list)


def create_job(conditions: Iterable[Condition], sources: Iterable[Source], *, name: str = "", options=None) -> GenerationJob:
    options = dict(options or {})
    media.DeliveryProfile.from_options(options)  # refuse a bad profile now, not in a worker later
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


def release_job(job_id: int) -> None:
    """Hand a job back to the queue (before a retry of its fan-out)."""
    GenerationJob.objects.filter(pk=job_id, status=GenerationJob.RUNNING).update(status=GenerationJob.PENDING)


def fail_job(job_id: int, error: str) -> None:
    GenerationJob.objects.filter(pk=job_id).update(
        status=GenerationJob.FAILED, error=error[:4000], finished_at=timezone.now()
    )


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


def plan_clips(job: GenerationJob) -> Plan:
    """Make or reuse the job's clips (conditions × sources) and say which still need work.

    Idempotent: an existing clip of the same condition, source and audio joins the job instead of
    being made again, so re-running a job never duplicates stimuli. A pair that cannot become a clip
    (no audio to drive the source, no other sentence for a mismatched-audio control, an existing clip
    in another delivery profile) is counted as failed, with the reason in ``job.error``.
    """
    profile = media.DeliveryProfile.from_options(job.options).as_dict()
    conditions = sorted(job.conditions.all(), key=lambda c: (c.kind != Condition.KIND_REFERENCE, c.pk))
    sources = list(job.sources.select_related("own_audio"))
    all_audio = list(Audio.objects.all())
    problems: list[str] = []
    plan = Plan()
    with transaction.atomic():
        for source in sources:
            for condition in conditions:
                audio, problem = _driving_audio(condition, source, all_audio)
                if audio is not None:
                    clip, _ = Clip.objects.get_or_create(
                        condition=condition, source=source, audio=audio, defaults={"profile": profile}
                    )
                    if clip.profile != profile:
                        problem = "a clip of this pair already exists in another delivery profile"
                if problem:
                    problems.append(f"{condition} × {source}: {problem}")
                    continue
                job.clips.add(clip)
                if clip.status in (Clip.PENDING, Clip.RENDERING):
                    plan.to_render.append(clip.pk)
                elif clip.status in (Clip.RENDERED, Clip.NORMALIZING):
                    plan.to_normalize.append(clip.pk)
            _link_references(source)
        GenerationJob.objects.filter(pk=job.pk).update(n_unplanned=len(problems), error="\n".join(problems))
    refresh_progress(job.pk)
    return plan


def _driving_audio(condition: Condition, source: Source, all_audio: Sequence[Audio]) -> tuple[Audio | None, str]:
    if condition.kind == Condition.KIND_CONTROL and condition.control == MISMATCHED_AUDIO:
        audio = mismatched_audio_for(source, all_audio)
        return audio, "" if audio else "no other sentence is available for a mismatched-audio clip"
    if source.own_audio is None:
        return None, "the source has no audio of its own to drive it"
    return source.own_audio, ""


def _link_references(source: Source) -> None:
    """Point every clip of a source at its hidden-reference clip (the ground truth), if one exists."""
    reference = Clip.objects.filter(
        source=source, audio=source.own_audio, condition__kind=Condition.KIND_REFERENCE
    ).order_by("pk").first()
    if reference is not None:
        # Same face video with its own speech, or with another sentence on purpose (mismatched audio).
        same_footage = Q(audio=source.own_audio) | Q(condition__control=MISMATCHED_AUDIO)
        Clip.objects.filter(same_footage, source=source).exclude(pk=reference.pk).update(reference=reference)


def refresh_progress(job_id: int) -> GenerationJob | None:
    """Recount a job's clips and close it when none is left in flight.

    Counts are derived from the clips rather than incremented, so a task that runs twice (a
    redelivery after a worker died) can never count a clip twice.
    """
    job = GenerationJob.objects.filter(pk=job_id).first()
    if job is None:
        return None
    counts = job.clips.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status=Clip.READY)),
        failed=Count("id", filter=Q(status=Clip.FAILED)),
    )
    total, done = counts["total"] + job.n_unplanned, counts["done"]
    failed = counts["failed"] + job.n_unplanned
    GenerationJob.objects.filter(pk=job_id).update(n_total=total, n_done=done, n_failed=failed)
    if done + failed == total:
        final = (
            GenerationJob.DONE if failed == 0
            else GenerationJob.FAILED if done == 0
            else GenerationJob.PARTIAL
        )
        finished_now = GenerationJob.objects.filter(pk=job_id, status=GenerationJob.RUNNING).update(
            status=final, finished_at=timezone.now()
        )
        if finished_now and done and settings.SYNCMOS_METRICS_AFTER_GENERATION:
            from generation.metric_services import request_for_jobs

            request_for_jobs([job_id])
    job.refresh_from_db()
    return job


def refresh_jobs_of(clip_id: int) -> None:
    for job_id in GenerationJob.objects.filter(clips__id=clip_id).values_list("pk", flat=True):
        refresh_progress(job_id)


def resume_stalled(*, older_than: timedelta | None = None) -> dict[str, int]:
    """Re-queue work whose message was lost: expired claims, raw frames never encoded, open jobs.

    Safe to run at any time (e.g. from cron or after an outage): claims make a duplicate message
    a no-op. Pending clips are left alone, since their messages may simply be waiting in a long queue.
    """
    from generation.tasks import normalize_clip, render_raw_clip

    now = timezone.now()
    stale_before = now - (older_than or timedelta(seconds=settings.SYNCMOS_JOB_LEASE_SECONDS))
    expired = Q(claimed_until__lt=now)
    renders = list(Clip.objects.filter(expired, status=Clip.RENDERING).values_list("pk", flat=True))
    encodes = list(
        Clip.objects.filter(
            (expired & Q(status=Clip.NORMALIZING)) | Q(status=Clip.RENDERED, updated_at__lt=stale_before)
        ).values_list("pk", flat=True)
    )
    for clip_id in renders:
        transaction.on_commit(lambda clip_id=clip_id: render_raw_clip.delay(clip_id))
    for clip_id in encodes:
        transaction.on_commit(lambda clip_id=clip_id: normalize_clip.delay(clip_id))
    open_jobs = list(GenerationJob.objects.filter(status=GenerationJob.RUNNING).values_list("pk", flat=True))
    for job_id in open_jobs:
        refresh_progress(job_id)
    return {"renders": len(renders), "encodes": len(encodes), "open_jobs": len(open_jobs)}


# --- clips ---------------------------------------------------------------------------------------


def media_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def raw_path(clip: Clip) -> Path:
    return media_path(clip.work_dir) / "raw.mkv"


def render_request(clip: Clip) -> RenderRequest:
    """The Django-free description of what the render step must do for this clip."""
    condition = clip.condition
    source = clip.source
    is_mismatched = condition.kind == Condition.KIND_CONTROL and condition.control == MISMATCHED_AUDIO
    own_audio = source.own_audio
    if is_mismatched and own_audio is None:
        raise RenderError("a mismatched-audio clip needs the source's own audio to set its length")
    checkpoint = None
    if condition.checkpoint_id:
        row = condition.checkpoint
        checkpoint = CheckpointRef(path=row.file_path, architecture=row.architecture, layout=row.layout,
                                   config=row.config or "default", sha256=row.sha256)
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
        checkpoint=checkpoint,
    )


def fail_clip(clip_id: int, error: str) -> None:
    Clip.objects.filter(pk=clip_id).exclude(status=Clip.READY).update(
        status=Clip.FAILED, error=error[:2000], claimed_until=None
    )


def release_clip(clip_id: int, *, held: str, back_to: str) -> None:
    """Hand a claimed clip back (before a retry) so the retried task can claim it again."""
    Clip.objects.filter(pk=clip_id, status=held).update(status=back_to, claimed_until=None)


def extend_claim(clip_id: int, status: str) -> None:
    """Push a live claim's lease forward while long work goes on (so no other worker takes it over)."""
    lease = timezone.now() + timedelta(seconds=settings.SYNCMOS_JOB_LEASE_SECONDS)
    Clip.objects.filter(pk=clip_id, status=status).update(claimed_until=lease)


def mark_rendered(clip_id: int, worker: str) -> bool:
    """Record the raw frames; False if the clip is no longer ours (another worker took over)."""
    return bool(Clip.objects.filter(pk=clip_id, status=Clip.RENDERING).update(
        status=Clip.RENDERED, claimed_until=None, rendered_by=worker, error=""
    ))


def finish_clip(clip: Clip, info: media.MediaInfo, sha256: str, worker: str) -> bool:
    """Record the delivery file; False if the clip is no longer ours."""
    return bool(Clip.objects.filter(pk=clip.pk, status=Clip.NORMALIZING).update(
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
    ))


def installed_model_conditions() -> list[Condition]:
    """A model condition for every registered checkpoint whose file is installed (the demo uses these)."""
    from generation import weights
    from generation.models import Checkpoint

    conditions = []
    for spec in weights.REGISTRY.values():
        if not weights.is_installed(spec):
            continue
        checkpoint = Checkpoint.objects.filter(registry_name=spec.name).first()
        if checkpoint is None:
            checkpoint = Checkpoint(name=spec.name, registry_name=spec.name, notes=spec.description)
            checkpoint.full_clean()
            checkpoint.save()
        name = f"{spec.architecture}: {spec.name}"
        condition = Condition.objects.filter(name=name).first()
        if condition is None:
            condition = Condition(name=name, kind=Condition.KIND_MODEL, architecture=spec.architecture,
                                  checkpoint=checkpoint, description=spec.description)
            condition.full_clean()
            condition.save()
        conditions.append(condition)
    return conditions
