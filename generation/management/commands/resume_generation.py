"""Re-queue generation work whose message was lost (a worker died, the broker restarted).

Safe to run at any time, e.g. from cron every few minutes: claims make duplicate messages no-ops.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand

from generation import services


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, default=None,
                            help="seconds a clip must have waited with raw frames before its encoding is re-queued "
                                 "(default: the claim lease, SYNCMOS_JOB_LEASE_SECONDS)")

    def handle(self, *args, older_than=None, **opts):
        counts = services.resume_stalled(older_than=timedelta(seconds=older_than) if older_than else None)
        self.stdout.write("Re-queued {renders} renders and {encodes} encodes; rechecked {open_jobs} running jobs."
                          .format(**counts))
