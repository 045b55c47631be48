"""Build the demo study: synthetic corpus → control clips through the task code → an open study and
a researcher login. Safe to run twice: an existing, complete demo is reused (its login renewed)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path

from celery.signals import task_postrun
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.urls import reverse

from generation import controls, corpus, metric_services, services
from generation.models import Clip, GenerationJob
from studyapp.design import create_study_from_clips
from studyapp.models import Study

DEMO_TITLE = "syncmos demo: lip-sync quality of talking heads"
DEMO_USERNAME = "researcher"
DEMO_CONSENT = (
    "This is a demonstration of syncmos. You will watch short talking-head videos and rate them. "
    "Your ratings are stored anonymously with a random participant code; no personal data is collected. "
    "You may stop at any time by closing the page."
)
DEMO_INSTRUCTIONS = (
    "You will see short videos of a talking face. Watch and listen to each video to the end (use headphones "
    "or speakers), then rate it on three questions: how well the lips match the speech, the visual quality of "
    "the face, and your overall impression. Use the whole scale from Bad to Excellent. There are no right or "
    "wrong answers."
)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--rebuild", action="store_true", help="make a new corpus, clips and study")
        parser.add_argument("--size", type=int, default=256, help="corpus frame size in pixels")
        parser.add_argument("--sentences-per-voice", type=int, default=2)
        parser.add_argument("--voices", type=int, default=2, help="how many corpus voices to use")
        parser.add_argument("--clips-per-participant", type=int, default=10)
        parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the clips")

    def handle(self, *args, **opts):
        study = Study.objects.filter(title=DEMO_TITLE, status=Study.OPEN).first()
        if study is None or opts["rebuild"]:
            study = self._build(opts)
        else:
            self.stdout.write(f"Reusing the demo study built earlier ({study.study_clips.count()} clips).")
        password = self._researcher_login()
        self._print_urls(study, password)

    def _build(self, opts) -> Study:
        config = corpus.CorpusConfig(
            voices=corpus.CorpusConfig().voices[: opts["voices"]],
            sentences_per_voice=opts["sentences_per_voice"],
            size=opts["size"],
        )
        started = time.monotonic()
        self.stdout.write(f"1/4 Building the synthetic corpus ({len(config.faces)} faces × {len(config.voices)} "
                          f"voices × {config.sentences_per_voice} sentences)…")
        Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.MEDIA_ROOT, prefix=".corpus-") as tmp:
            items = corpus.build_corpus(Path(tmp), config)
            sources = services.register_corpus_items(
                items, storage_prefix="demo-corpus", name_suffix=f"@{config.size}px-seed{config.seed}"
            )
        conditions = services.get_or_create_conditions(controls.standard_conditions())
        models = services.installed_model_conditions()
        conditions += models
        if not models:
            self.stdout.write("   (no model weights installed under SYNCMOS_WEIGHTS_DIR: control conditions only)")
        self.stdout.write(f"2/4 Making {len(sources) * len(conditions)} clips ({len(conditions)} conditions) "
                          f"through the generation tasks…")
        # In-process, the tasks run when this block commits; with workers, they only get queued. The metrics are
        # requested below as a step of their own, so that their progress is shown.
        with self._progress_report(), self._no_automatic_metrics(), transaction.atomic():
            job = services.create_job(conditions, sources, name="demo clips")
            services.start_job(job)
        job.refresh_from_db()
        if settings.CELERY_TASK_ALWAYS_EAGER and job.status in (GenerationJob.PENDING, GenerationJob.RUNNING):
            raise CommandError("the in-process generation stopped before the job finished; see the log above")
        job = self._wait(job, opts["timeout"])
        if job.n_done == 0:
            raise CommandError(f"no clip could be made: {job.error or 'see the failed clips in the admin'}")
        failed = job.clips.filter(status=Clip.FAILED)
        for clip in failed:
            self.stderr.write(f"   failed: {clip.condition} / {clip.source}: {clip.error}")
        self._compute_metrics(job)
        self.stdout.write("3/4 Creating the demo study…")
        Study.objects.filter(title=DEMO_TITLE, status=Study.OPEN).update(status=Study.CLOSED)
        study = create_study_from_clips(
            title=DEMO_TITLE,
            clips=job.clips.filter(status=Clip.READY),
            consent_text=DEMO_CONSENT,
            instructions=DEMO_INSTRUCTIONS,
            clips_per_participant=opts["clips_per_participant"],
            ratings_per_clip=15,
            status=Study.OPEN,
        )
        self.stdout.write(f"   {job.n_done} clips ready, {job.n_failed} failed, in {time.monotonic() - started:.0f} s.")
        return study

    @contextlib.contextmanager
    def _progress_report(self, task_prefix: str = "generation.normalize_clip", every: int = 10,
                         what: str = "clips encoded"):
        """Print progress while in-process tasks run (workers report through the job row instead)."""
        done = []

        def report(sender=None, **kwargs):
            if sender is not None and sender.name.startswith(task_prefix):
                done.append(1)
                if len(done) % every == 0:
                    self.stdout.write(f"   {len(done)} {what}…")

        trace_logger = logging.getLogger("celery.app.trace")
        level = trace_logger.level
        trace_logger.setLevel(logging.WARNING)  # one line per task would drown the progress
        task_postrun.connect(report)
        try:
            yield
        finally:
            task_postrun.disconnect(report)
            trace_logger.setLevel(level)

    @contextlib.contextmanager
    def _no_automatic_metrics(self):
        automatic = settings.SYNCMOS_METRICS_AFTER_GENERATION
        settings.SYNCMOS_METRICS_AFTER_GENERATION = False
        try:
            yield
        finally:
            settings.SYNCMOS_METRICS_AFTER_GENERATION = automatic

    def _compute_metrics(self, job: GenerationJob) -> None:
        """Objective metrics of the demo clips: computed here in the embedded mode, queued with workers."""
        clips = job.clips.filter(status=Clip.READY).select_related("condition", "reference")
        self.stdout.write(f"   Objective metrics of {clips.count()} clips "
                          f"({'computing now' if settings.CELERY_TASK_ALWAYS_EAGER else 'queued to the workers'})…")
        started = time.monotonic()
        with self._progress_report("generation.compute_", every=50, what="metric runs done"):
            summary = metric_services.request_metrics(clips)
        self.stdout.write(f"   {summary} ({time.monotonic() - started:.0f} s).")
        if settings.CELERY_TASK_ALWAYS_EAGER:
            table = metric_services.seeds_table(clips)
            self.stdout.write(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    def _wait(self, job: GenerationJob, timeout: float) -> GenerationJob:
        # In the embedded mode the tasks already ran in this process; with a broker, workers run them.
        deadline = time.monotonic() + timeout
        last = None
        while True:
            job.refresh_from_db()
            progress = (job.n_done, job.n_failed, job.n_total)
            if progress != last:
                self.stdout.write(f"   {job.n_done + job.n_failed}/{job.n_total} clips processed")
                last = progress
            if job.status not in (GenerationJob.PENDING, GenerationJob.RUNNING):
                return job
            if time.monotonic() > deadline:
                raise CommandError(f"the clips were not ready after {timeout:.0f} s (are the workers running?)")
            time.sleep(1.0)

    def _researcher_login(self) -> str:
        self.stdout.write("4/4 Creating the researcher login…")
        password = secrets.token_urlsafe(9)
        user, _ = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

    def _print_urls(self, study: Study, password: str) -> None:
        base = f"http://{os.environ.get('SYNCMOS_DEMO_HOST', '127.0.0.1')}:{os.environ.get('SYNCMOS_DEMO_PORT', '8000')}"
        entry = reverse("participant:study-entry", args=[study.public_id])
        self.stdout.write(self.style.SUCCESS("\nThe demo is ready.\n"))
        self.stdout.write(f"  Participant link : {base}{entry}")
        self.stdout.write(f"  Researcher admin : {base}{reverse('admin:index')}")
        self.stdout.write(f"  Login            : {DEMO_USERNAME} / {password}")
        self.stdout.write(f"  MOS table        : {base}{reverse('admin:studyapp_study_mos', args=[study.pk])}\n")
