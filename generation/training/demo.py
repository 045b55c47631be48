"""The demo weights: tiny models of every family, trained on the synthetic corpus by one command.

``manage.py train_demo_weights`` (``make demo-weights``) builds the training corpus (held out from the demo
study: another seed, so other sentences), trains every stage of ``configs/demo/`` in dependency order, and
copies the inference checkpoints into ``demo/weights/`` with a ``MANIFEST.json`` giving each file's sha256, the
config and the command that made it. ``generation.weights`` registers the files listed there, so the demo
study gains one model condition per family.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs" / "demo"
WEIGHTS_DIR = REPO / "demo" / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"
CORPUS = dict(sentences_per_voice=8, size=160, seed=7)  # the demo study's corpus uses seed 0
CORPUS_ROOT = REPO / "var" / "train" / "corpus"
COMMAND = "make demo-weights   (= .venv/bin/python manage.py train_demo_weights)"

# (config, the export that becomes a demo checkpoint or None for intermediate stages, architecture)
STAGES: tuple[tuple[str, str | None, str | None], ...] = (
    ("syncnet_color", None, None),
    ("avsyncnet", None, None),
    ("wav2lip", "wav2lip.pt", "wav2lip"),
    ("attn_wav2lip", "attn_wav2lip.pt", "attn_wav2lip"),
    ("lipgan", "lipgan.pt", "lipgan"),
    ("l1wgan_gp", "l1wgan_gp.pt", "l1wgan_gp"),
    ("stabsync_silent", None, None),
    ("stabsync", "stabsync.pt", "stabsync"),
)
MAX_FILE_BYTES = 5 * 1024 * 1024  # committed only when under 5 MB each


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_corpus(say: Callable[[str], None] = print) -> Path:
    from generation import corpus
    from generation.training import preprocess

    say(f"Training corpus (2 faces x 3 voices x {CORPUS['sentences_per_voice']} sentences, seed {CORPUS['seed']})…")
    return preprocess.corpus_dataset(CORPUS_ROOT, corpus.CorpusConfig(**CORPUS))


def train_all(say: Callable[[str], None] = print, *, stages: tuple[str, ...] | None = None) -> list[dict]:
    """Train every stage (or the named ones) and publish the inference checkpoints; returns the manifest."""
    from generation.training.config import load_config
    from generation.training.trainer import train

    build_corpus(say)
    entries = []
    for name, export, architecture in STAGES:
        config = load_config(CONFIG_DIR / f"{name}.toml")
        if stages is None or name in stages:
            say(f"Training {name} ({config.iterations} iterations)…")
            result = train(config, progress=lambda row: say(_row_text(row)))
            say(f"   done in {result.seconds:.0f} s")
        if export is None:
            continue
        source = Path(config.output_dir) / export
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: train the {name} stage first")
        if source.stat().st_size > MAX_FILE_BYTES:
            raise RuntimeError(f"{source} is over 5 MB; the demo weights must stay small enough to commit")
        target = WEIGHTS_DIR / f"{name}_tiny.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        final = _read_last_row(Path(config.output_dir) / "metrics.csv")
        entries.append({
            "name": f"demo_{name}",
            "architecture": architecture,
            "file": target.name,
            "sha256": sha256(target),
            "bytes": target.stat().st_size,
            "config": str((CONFIG_DIR / f"{name}.toml").relative_to(REPO)),
            "iterations": config.iterations,
            "final_validation": {k: v for k, v in final.items() if k.startswith("val_")},
            "command": COMMAND,
        })
    MANIFEST.write_text(json.dumps({"corpus": CORPUS, "weights": entries}, indent=2) + "\n")
    return entries


def _row_text(row: dict) -> str:
    values = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
    return f"   [{row['iteration']}] {values}"


def _read_last_row(path: Path) -> dict:
    import csv

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None) and k != "iteration"} if rows else {}


def manifest_entries() -> list[dict]:
    """The committed demo weights (empty when the manifest is absent or unreadable)."""
    try:
        return json.loads(MANIFEST.read_text())["weights"]
    except (FileNotFoundError, KeyError, ValueError):
        return []
