"""Train the tiny demo weights of every model family on the synthetic corpus and publish them in demo/weights/.

Reproducible: every stage has a fixed seed and resumes exactly; see generation/training/demo.py.
"""

from django.core.management.base import BaseCommand

from generation.training import demo


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--stage", action="append", choices=[s[0] for s in demo.STAGES],
                            help="train only this stage (repeatable); the others' existing exports are reused")

    def handle(self, *args, stage=None, **opts):
        entries = demo.train_all(self.stdout.write, stages=tuple(stage) if stage else None)
        for entry in entries:
            self.stdout.write(self.style.SUCCESS(f"  {entry['file']}  {entry['sha256'][:16]}…  {entry['bytes']} bytes"))
        self.stdout.write(f"Manifest: {demo.MANIFEST}")
