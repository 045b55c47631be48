"""(Re)compute objective metrics for a set of clips, and print or export them.

Examples::

    manage.py compute_metrics --job 3                 # queue what is missing or stale for a job's clips
    manage.py compute_metrics --study 1 --now         # compute here, now, and print the seeds' table
    manage.py compute_metrics --condition wav2lip --groups lse,frame_quality --force
    manage.py compute_metrics --all --csv var/metrics.csv
    manage.py compute_metrics --resume                # re-queue runs whose worker died or message was lost

Without ``--now`` the runs go to the Celery queues ("gpu" for network metrics, "cpu" for the rest); with no
broker configured (the embedded demo) they run in this process anyway. Up-to-date values (same metric version,
same clip files) are not recomputed unless ``--force``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from generation import metric_services
from generation.metrics import catalog
from generation.models import Clip, MetricRun


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def add_arguments(self, parser):
        target = parser.add_argument_group("which clips")
        target.add_argument("--clip", type=int, action="append", default=[], help="clip id (repeatable)")
        target.add_argument("--job", type=int, action="append", default=[], help="generation job id (repeatable)")
        target.add_argument("--study", type=int, action="append", default=[], help="study id (repeatable)")
        target.add_argument("--condition", action="append", default=[], help="condition name or id (repeatable)")
        target.add_argument("--all", action="store_true", help="every ready clip")
        parser.add_argument("--groups", default="", help=f"comma-separated metric groups (default all: "
                                                         f"{','.join(catalog.GROUPS)})")
        parser.add_argument("--force", action="store_true", help="recompute even up-to-date values")
        parser.add_argument("--now", action="store_true", help="compute in this process and wait")
        parser.add_argument("--csv", default="", help="write every clip metric of the selection to this CSV file")
        parser.add_argument("--resume", action="store_true", help="re-queue stalled runs and exit")

    def handle(self, *args, **opts):
        if opts["resume"]:
            self.stdout.write(f"Re-queued {metric_services.resume_stalled_runs()} stalled metric runs.")
            return
        clips = self._clips(opts)
        groups = [g for g in opts["groups"].split(",") if g] or None
        try:
            metric_services.selected_groups(groups)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        eager = settings.CELERY_TASK_ALWAYS_EAGER
        if opts["now"]:
            settings.CELERY_TASK_ALWAYS_EAGER = True
            from studyapp.celery import app

            app.conf.task_always_eager = True
        try:
            summary = metric_services.request_metrics(clips, groups, force=opts["force"])
        finally:
            settings.CELERY_TASK_ALWAYS_EAGER = eager
        self.stdout.write(str(summary))
        if opts["now"] or eager:
            self._report_runs(summary.queued)
            table = metric_services.seeds_table(clips)
            if len(table):
                self.stdout.write("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if opts["csv"]:
            metric_services.clip_metrics_frame(clips).to_csv(opts["csv"], index=False)
            self.stdout.write(f"Wrote {opts['csv']}")

    def _clips(self, opts):
        if not (opts["clip"] or opts["job"] or opts["study"] or opts["condition"] or opts["all"]):
            raise CommandError("say which clips: --clip, --job, --study, --condition or --all")
        query = Q(status=Clip.READY)
        if not opts["all"]:
            chosen = Q(pk__in=opts["clip"]) | Q(jobs__in=opts["job"]) | Q(study_clips__study__in=opts["study"])
            for condition in opts["condition"]:
                chosen |= Q(condition__pk=int(condition)) if condition.isdigit() else Q(condition__name=condition)
            query &= chosen
        clips = Clip.objects.filter(query).distinct().select_related("condition", "reference").order_by("pk")
        if not clips.exists():
            raise CommandError("no ready clip matches")
        return clips

    def _report_runs(self, run_ids):
        runs = MetricRun.objects.filter(pk__in=run_ids)
        failed = runs.filter(status=MetricRun.FAILED)
        self.stdout.write(f"{runs.filter(status=MetricRun.DONE).count()} runs done, {failed.count()} failed")
        for run in failed[:20]:
            self.stdout.write(f"  {run}: {run.error}")
