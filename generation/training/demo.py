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

import numpy as np

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


# -- checking that the demo models move their mouths with the audio ------------------------------------------


def inner_lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(T, 68, 2) dlib landmarks -> (T,) mean distance between the upper (61-63) and lower (65-67) inner lip,
    divided by the mouth width (48-54) so that it does not depend on the face's size."""
    upper, lower = landmarks[:, [61, 62, 63]], landmarks[:, [67, 66, 65]]
    gap = np.linalg.norm(upper - lower, axis=2).mean(axis=1)
    width = np.linalg.norm(landmarks[:, 54] - landmarks[:, 48], axis=1)
    return gap / np.maximum(width, 1e-6)


def mouth_motion(generator, frames: np.ndarray, fps: float, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``generator`` through the inference pipeline on (frames, audio); returns (output frames, inner-lip
    gap of every output frame measured by dlib)."""
    from generation import faces
    from generation.pipeline import LipSyncPipeline

    output = LipSyncPipeline(generator, faces.DlibFaceDetector())(frames, fps, audio)
    return output.frames, inner_lip_gap(faces.track_landmarks(output.frames))


def lip_sync_correlation(generator, item, other_audio: np.ndarray) -> dict[str, float]:
    """How the generated mouth follows the audio, on a corpus item the demo models never trained on.

    ``synced``: Pearson r between the generated inner-lip gap and the mouth-opening curve that drove the true
    video (driven by the item's own audio); ``mismatched``: the same r when the model is driven by
    ``other_audio`` instead (a model that only copies the reference, or ignores the audio, scores alike on both).
    """
    from generation import media

    frames, fps = media.read_video(item.video_path)
    own_audio = media.read_audio(item.audio_path)
    n = min(len(frames), len(item.mouth_open))
    truth = np.asarray(item.mouth_open[:n], dtype=float)
    _, synced_gap = mouth_motion(generator, frames[:n], fps, own_audio)
    _, other_gap = mouth_motion(generator, frames[:n], fps, other_audio)
    r = lambda gap: float(np.corrcoef(gap[:n], truth)[0, 1])  # noqa: E731
    return {"synced": r(synced_gap), "mismatched": r(other_gap), "gap_std": float(synced_gap[:n].std())}
