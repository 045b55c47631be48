"""Build a study's analysis report and write it to a folder: report.html and report-tables.zip.

Examples::

    manage.py study_report 3                               # blind labels, rejected participants left out
    manage.py study_report 3 -o var/reports/pilot --reveal-conditions --with-rejected
    manage.py study_report 3 --n-boot 200 --store          # also store it as the study's latest report

Runs in this process (for big studies the admin action runs the same build on a "cpu" worker). The zip holds
every table as CSV and JSON, the raw ratings, a SUREAL dataset per scale and the HTML.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from analysis import services
from analysis.models import StudyReport
from studyapp.models import Study


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("study", type=int, help="study id")
        parser.add_argument("-o", "--output", default="", help="folder to write to (default: ./study-<id>-report)")
        rejected = parser.add_mutually_exclusive_group()
        rejected.add_argument("--without-rejected", dest="exclude_rejected", action="store_true", default=True,
                              help="analyse without the participants screening rejects (default)")
        rejected.add_argument("--with-rejected", dest="exclude_rejected", action="store_false",
                              help="analyse every participant (screening is still reported)")
        parser.add_argument("--reveal-conditions", action="store_true",
                            help="real condition names instead of blind labels (researcher only)")
        parser.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates (default 1000)")
        parser.add_argument("--seed", type=int, default=None, help="seed of the bootstrap and splits (default 0)")
        parser.add_argument("--store", action="store_true",
                            help="also keep it under MEDIA_ROOT/reports/ as the study's latest report in the admin")

    def handle(self, *args, **opts):
        study = Study.objects.filter(pk=opts["study"]).first()
        if study is None:
            raise CommandError(f"no study with id {opts['study']}")
        overrides = {key: opts[key] for key in ("n_boot", "seed") if opts[key] is not None}
        if opts["n_boot"] is not None and opts["n_boot"] < 0:
            raise CommandError("--n-boot must be at least 0")
        folder = Path(opts["output"] or f"study-{study.pk}-report")
        if opts["store"]:
            stored = StudyReport.objects.create(study=study, reveal_conditions=opts["reveal_conditions"],
                                                exclude_rejected=opts["exclude_rejected"], options=overrides)
            try:
                stored = services.produce_report(services.claim_report(stored.pk), worker="study_report command")
            except Exception as exc:
                services.fail_report(stored.pk, f"{exc.__class__.__name__}: {exc}")
                raise CommandError(f"report failed: {exc}") from exc
            folder.mkdir(parents=True, exist_ok=True)
            paths = {}
            for kind, name in services.REPORT_FILES.items():
                paths[kind] = folder / name
                shutil.copyfile(services.report_file(stored, kind), paths[kind])
            highlights, statuses = stored.summary.get("highlights", []), stored.summary.get("sections", {})
            notes = {}
        else:
            report = services.build_study_report(study, reveal_conditions=opts["reveal_conditions"],
                                                 exclude_rejected=opts["exclude_rejected"], **overrides)
            paths = services.write_report(report, folder, study=study)
            highlights = report.highlights
            statuses = {s.key: s.status for s in report.sections.values()}
            notes = {s.key: " ".join(s.notes) for s in report.sections.values()}
        for line in highlights:
            self.stdout.write(f"  {line}")
        for key, status in statuses.items():
            if status != "ok":
                self.stdout.write(f"  [{status}] {key}: {notes.get(key, '')[:300]}")
        self.stdout.write(f"Wrote {paths['html']} and {paths['zip']}"
                          + (f" (stored as report {stored.pk})" if opts["store"] else ""))
