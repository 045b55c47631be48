"""Preprocess talking-face videos into Wav2Lip's training layout (face crops, 16 kHz audio.wav, file lists).

    manage.py preprocess_videos INPUT_DIR OUTPUT_DIR [--val-fraction 0.1] [--detector dlib|s3fd] [--pads 0 10 0 0]
    manage.py preprocess_videos OUTPUT_DIR --synthetic-corpus N

INPUT_DIR holds <speaker>/<video>.mp4 files (or videos directly in it). With --synthetic-corpus, the synthetic
GRID-like corpus (N sentences per voice) is built and preprocessed into OUTPUT_DIR instead. Re-running skips
finished videos. See generation/training/preprocess.py.
"""

from django.core.management.base import BaseCommand, CommandError

from generation import corpus
from generation.training import preprocess


class Command(BaseCommand):
    help = ("Preprocess talking-face videos (INPUT_DIR OUTPUT_DIR), or the synthetic corpus (OUTPUT_DIR "
            "--synthetic-corpus N), into Wav2Lip's training layout: face crops, 16 kHz audio.wav, file lists.")

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="DIR", help="INPUT_DIR OUTPUT_DIR, or OUTPUT_DIR alone "
                                                                    "with --synthetic-corpus")
        parser.add_argument("--val-fraction", type=float, default=0.1,
                            help="share of the videos listed in filelists/val.txt (default 0.1)")
        parser.add_argument("--detector", choices=preprocess.DETECTORS, default="dlib",
                            help="face detector: dlib (offline, default) or s3fd (needs the weights)")
        parser.add_argument("--s3fd-weights", default=None,
                            help="S3FD checkpoint (default: sfd_face.pth in SYNCMOS_WEIGHTS_DIR)")
        parser.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0],
                            metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                            help="pixels added to each face box (default 0 10 0 0, Wav2Lip's)")
        parser.add_argument("--no-smooth", action="store_true", help="do not smooth the boxes over 5 frames")
        parser.add_argument("--synthetic-corpus", type=int, metavar="N", default=None,
                            help="build the synthetic corpus with N sentences per voice into OUTPUT_DIR")
        parser.add_argument("--corpus-size", type=int, default=256, help="synthetic corpus frame size in pixels")
        parser.add_argument("--corpus-seed", type=int, default=0,
                            help="synthetic corpus seed (the demo study uses 0; train on another to hold it out)")

    def handle(self, *args, paths, val_fraction, detector, s3fd_weights, pads, no_smooth, synthetic_corpus,
               corpus_size, corpus_seed, **options):
        try:
            config = preprocess.PreprocessConfig(detector=detector, s3fd_weights=s3fd_weights, pads=tuple(pads),
                                                 smooth=not no_smooth, val_fraction=val_fraction)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if synthetic_corpus is not None:
            if len(paths) != 1:
                raise CommandError("with --synthetic-corpus, give only OUTPUT_DIR")
            if synthetic_corpus < 1:
                raise CommandError("--synthetic-corpus needs at least 1 sentence per voice")
            corpus_config = corpus.CorpusConfig(sentences_per_voice=synthetic_corpus, size=corpus_size,
                                                seed=corpus_seed)
            root = preprocess.corpus_dataset(paths[0], corpus_config, config)
            self.stdout.write(f"Synthetic corpus preprocessed into {root} (file lists in {root / 'filelists'}).")
            return
        if len(paths) != 2:
            raise CommandError("give INPUT_DIR and OUTPUT_DIR")
        try:
            report = preprocess.preprocess_videos(paths[0], paths[1], config)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for name, reason in report.skipped.items():
            self.stderr.write(f"skipped {name}: {reason}")
        self.stdout.write(f"{len(report.written)} videos preprocessed, {len(report.already_done)} already done, "
                          f"{len(report.skipped)} skipped; {len(report.train)} train / {len(report.val)} val "
                          f"in {report.root / 'filelists'}.")
