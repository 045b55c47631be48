"""Train a model family from a TOML config: ``manage.py train configs/train/wav2lip_tiny.toml``.

Resumes from the run's checkpoint when one exists (``--restart`` starts afresh); runs on CUDA when present.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from generation.training.config import ConfigError, load_config
from generation.training.trainer import train
from generation.weights import WeightsError


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("config", help="a TOML training config (see docs/training.md)")
        parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
        parser.add_argument("--iterations", type=int, help="override the config's iterations")
        parser.add_argument("--device", help="override the config's device (auto, cpu, cuda)")
        parser.add_argument("--stop-after", type=int, help="stop after this many iterations (resume later)")

    def handle(self, *args, **opts):
        try:
            config = load_config(opts["config"], iterations=opts["iterations"], device=opts["device"])
            self.stdout.write(f"Training {config.family} ({config.model_config}) for {config.iterations} iterations "
                              f"→ {config.output_dir}")
            result = train(config, resume=not opts["restart"], stop_after=opts["stop_after"],
                           progress=self._report)
        except (ConfigError, WeightsError, FileNotFoundError, RuntimeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for path in result.exported:
            self.stdout.write(self.style.SUCCESS(f"  wrote {path}"))
        if not result.exported:
            self.stdout.write(f"  stopped at iteration {result.iterations}; run again to resume")

    def _report(self, row: dict) -> None:
        shown = {k: v for k, v in row.items() if k != "iteration" and isinstance(v, float)}
        text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
        self.stdout.write(f"  [{row['iteration']}] {text}")
