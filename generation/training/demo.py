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

# Families whose demo weights are verified to open the mouth with the audio (tests/generation/training/
# test_demo_weights.py holds them to it): the Pearson r of the generated mouth opening with the true one, on a
# held-out sentence, must exceed this, and beat the same model driven by another sentence's audio.
MIN_SYNCED_CORRELATION: dict[str, float] = {"wav2lip": 0.6}

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
# Metric networks (not generators): exported like the others, listed under "metric_weights" in the manifest so
# they never become demo model conditions. syncnet_v2 is the demo's stand-in for syncnet_python's LSE network.
METRIC_STAGES: tuple[tuple[str, str], ...] = (("syncnet_v2", "syncnet_v2.pt"),)
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
        target, entry = _publish(name, export)
        say(f"   measuring how {name}'s mouth follows held-out audio…")
        entry["architecture"] = architecture
        entry["held_out_lip_sync"] = held_out_lip_sync(target, architecture)
        entries.append(entry)
    metric_entries = [_train_metric_stage(name, export, stages, say) for name, export in METRIC_STAGES]
    MANIFEST.write_text(json.dumps({"corpus": CORPUS, "weights": entries, "metric_weights": metric_entries},
                                   indent=2) + "\n")
    return entries


def _publish(name: str, export: str) -> tuple[Path, dict]:
    from generation.training.config import load_config

    config = load_config(CONFIG_DIR / f"{name}.toml")
    source = Path(config.output_dir) / export
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing: train the {name} stage first")
    if source.stat().st_size > MAX_FILE_BYTES:
        raise RuntimeError(f"{source} is over 5 MB; the demo weights must stay small enough to commit")
    target = WEIGHTS_DIR / f"{name}_tiny.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    final = _read_last_row(Path(config.output_dir) / "metrics.csv")
    return target, {
        "name": f"demo_{name}", "architecture": name, "file": target.name, "sha256": sha256(target),
        "bytes": target.stat().st_size, "config": str((CONFIG_DIR / f"{name}.toml").relative_to(REPO)),
        "iterations": config.iterations, "final_validation": {k: v for k, v in final.items() if k.startswith("val_")},
        "command": COMMAND,
    }


def _train_metric_stage(name: str, export: str, stages, say) -> dict:
    from generation.training.config import load_config
    from generation.training.trainer import train

    if stages is None or name in stages:
        config = load_config(CONFIG_DIR / f"{name}.toml")
        say(f"Training {name} ({config.iterations} iterations)…")
        train(config, progress=lambda row: say(_row_text(row)))
    target, entry = _publish(name, export)
    say(f"   measuring {name}'s LSE on held-out clips, aligned and with the audio 5 frames late…")
    entry["held_out_lse"] = held_out_lse(target)
    return entry


def held_out_lse(path: Path, items=None, *, shift_frames: int = 5) -> dict[str, float]:
    """Mean LSE-D / LSE-C of the demo SyncNet on held-out clips with aligned audio and with the audio
    ``shift_frames`` late, and how often the offset search finds the true offset (0 and -shift)."""
    from generation import media
    from generation.metrics import lse, syncnet_weights
    from generation.metrics.regions import detect_face_boxes

    model = syncnet_weights.load_syncnet(path)
    rows, exact = [], 0
    for item in items or held_out_items():
        frames, _ = media.read_video(item.video_path)
        crops = lse.syncnet_crops(frames, detect_face_boxes(frames), size=model.config.crop_size)
        audio = lse.to_int16_scale(media.read_audio(item.audio_path))
        late = np.concatenate([np.zeros(shift_frames * lse.SAMPLES_PER_FRAME, audio.dtype), audio])[: len(audio)]
        aligned, shifted = lse.lse(crops, audio, model), lse.lse(crops, late, model)
        exact += (aligned.offset_frames == 0) + (shifted.offset_frames == -shift_frames)
        rows.append((aligned.lse_d, aligned.lse_c, shifted.lse_d, shifted.lse_c))
    means = np.mean(rows, axis=0)
    return {"aligned_lse_d": round(float(means[0]), 3), "aligned_lse_c": round(float(means[1]), 3),
            f"late{shift_frames}_lse_d": round(float(means[2]), 3), f"late{shift_frames}_lse_c": round(float(means[3]), 3),
            "offset_exact_rate": round(exact / (2 * len(rows)), 3)}


def metric_manifest_entries() -> list[dict]:
    """The committed demo metric networks (empty when none are listed)."""
    try:
        return json.loads(MANIFEST.read_text()).get("metric_weights", [])
    except (FileNotFoundError, ValueError):
        return []


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
    """Run ``generator`` through the inference pipeline on a still face (frames all equal) and ``audio``;
    returns (output frames, inner-lip gap of every output frame). The landmarks are placed in the still's dlib
    face box, which a generated frame keeps (a blurry generated face need not be detectable on its own)."""
    from generation import faces
    from generation.pipeline import LipSyncPipeline

    box = faces.largest_face(frames[0]).box
    output = LipSyncPipeline(generator, faces.DlibFaceDetector())(frames, fps, audio)
    landmarks = np.stack([faces.landmarks_in_box(frame, box) for frame in output.frames])  # (T, 68, 2)
    return output.frames, inner_lip_gap(landmarks)


def lip_sync_correlation(generator, item, other_audio: np.ndarray) -> dict[str, float]:
    """Whether the generated mouth follows the audio, on a corpus item the demo models never trained on.

    The model animates a *still* (the item's first frame, mouth closed in the leading silence), as
    000_41145e614d4b5485.txt animates still images: with a video source the reference frame is the frame itself,
    and a model that merely copies the reference's mouth would look in sync. ``synced``: Pearson r between the
    generated inner-lip gap (dlib) and the mouth-opening curve that drove the true video, with the item's own
    audio; ``mismatched``: the same r when the still is driven by ``other_audio`` (another sentence): a model
    that ignores the audio scores alike on both. ``gap_std``: how much the generated mouth moves at all.
    """
    from generation import media

    frames, fps = media.read_video(item.video_path)
    n = min(len(frames), len(item.mouth_open))
    still = np.repeat(frames[:1], n, axis=0)  # (n, H, W, 3)
    truth = np.asarray(item.mouth_open[:n], dtype=float)
    own_audio = media.read_audio(item.audio_path)
    _, synced_gap = mouth_motion(generator, still, fps, own_audio)
    other_audio = np.resize(np.asarray(other_audio, dtype=np.float32), len(own_audio))  # cut, or repeated to length
    _, other_gap = mouth_motion(generator, still, fps, other_audio)
    r = lambda gap: float(np.corrcoef(gap[:n], truth)[0, 1]) if gap[:n].std() > 0 else 0.0  # noqa: E731
    return {"synced": r(synced_gap), "mismatched": r(other_gap), "gap_std": float(synced_gap[:n].std())}


def held_out_items(folder: Path | None = None):
    """Two sentences of the demo study's corpus (seed 0; the demo weights trained on seed 7), astronaut face."""
    import tempfile

    from generation import corpus

    config = corpus.CorpusConfig(faces=("astronaut",), voices=("en-us", "en+f3"), sentences_per_voice=1,
                                 size=160, seed=0)
    folder = folder or Path(tempfile.mkdtemp(prefix="syncmos-held-out-"))
    return corpus.build_corpus(folder, config)


def held_out_lip_sync(path: Path, architecture: str, items=None) -> dict[str, float]:
    """:func:`lip_sync_correlation` of a demo checkpoint on the first held-out item, rounded for the manifest."""
    from generation import media, weights

    import torch

    item, other = items or held_out_items()
    model = weights.build_and_load(Path(path), architecture=architecture, layout=weights.LAYOUT_SYNCMOS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float sums on every machine: a near-still mouth makes r sensitive to them
    try:
        result = lip_sync_correlation(model, item, media.read_audio(other.audio_path))
    finally:
        torch.set_num_threads(threads)
    return {k: round(v, 4) for k, v in result.items()}
