"""Raw talking-face videos → Wav2Lip's preprocessed layout (face crops + 16 kHz audio + file lists). No Django.

Follows Rudrabha/Wav2Lip ``preprocess.py`` (master 5c90fa9): every frame's face box is cut out at its detected size
and written as ``<out>/<speaker>/<video_id>/<frame>.jpg``, the sound as ``audio.wav`` beside it; the training
dataset (:mod:`generation.training.dataset`) resizes the crops on load. Deliberate differences, so that the
training crops look like the crops syncmos' inference pipeline (:mod:`generation.pipeline`) feeds the models:

* the box of each frame is padded by ``pads`` (default Wav2Lip inference's [0, 10, 0, 0]) and smoothed over 5
  frames as inference.py does; Wav2Lip's preprocess.py does neither;
* frames without a face get the nearest frame's box (short gaps only); preprocess.py leaves them out, and its
  training then never draws a window over the gap. More than ``max_missing_fraction`` of the frames without a
  face, or a gap longer than ``max_missing_run`` frames, and the video is skipped with the reason;
* the audio is resampled to 16 kHz mono (preprocess.py keeps the source's rate; training's load_wav resamples);
* dlib (offline) detects by default; S3FD (what Wav2Lip used, via face-alignment) needs the user's weights;
* a ``meta.json`` records the source, frame rate, boxes and settings (the dataset checks its fps);
* videos at another frame rate than ``fps`` are skipped (Wav2Lip assumes 25 fps without checking).

Every video folder is written under a temporary name and renamed when complete, so a finished folder is never
redone and a half-written one (a crash, a kill) is redone. A video that cannot be used (corrupt, no audio, no
face, wrong frame rate) is skipped with a logged reason and the rest go on. The file lists split the videos into
train and val deterministically by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generation import audio as audio_features
from generation import corpus, faces, media
from generation.training.dataset import AUDIO_FILE, FILELISTS, META_FILE, write_face_image

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".m4v", ".flv")
DETECTORS = ("dlib", "s3fd")
_TMP_MARK = ".tmp-"
CORPUS_MARKER = "corpus.json"


class VideoSkipped(Exception):
    """A video that cannot go into the training layout; the message says why."""


@dataclass(frozen=True)
class PreprocessConfig:
    detector: str = "dlib"  # "dlib" (offline) or "s3fd" (needs s3fd_weights)
    s3fd_weights: str | None = None  # None: sfd_face.pth in the weights folder (SYNCMOS_WEIGHTS_DIR)
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right pixels (Wav2Lip inference default)
    smooth: bool = True
    smooth_window: int = 5
    max_missing_fraction: float = 0.05  # more frames than this without a face: skip the video
    max_missing_run: int = 12  # a longer run of frames without a face (a cut, an occlusion): skip the video
    fps: float | None = 25.0  # the frame rate the dataset windows assume; other rates are skipped (None: any)
    sample_rate: int = 16000
    val_fraction: float = 0.1
    jpeg_quality: int = 95  # cv2.imwrite's default, what Wav2Lip's crops were written with
    min_face_px: int = 8  # a smaller padded box is a detection failure

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, not {self.detector!r}")
        if len(self.pads) != 4 or not all(isinstance(p, int) for p in self.pads):
            raise ValueError(f"pads must be four integers (top, bottom, left, right), got {self.pads!r}")
        if self.smooth_window < 1 or self.max_missing_run < 0 or self.min_face_px < 1:
            raise ValueError("smooth_window and min_face_px must be >= 1 and max_missing_run >= 0")
        if not 0 <= self.max_missing_fraction < 1:
            raise ValueError(f"max_missing_fraction must be in [0, 1), got {self.max_missing_fraction!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive or None, got {self.fps!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality!r}")


@dataclass(frozen=True)
class VideoJob:
    """One source video and its name in the layout, ``<speaker>/<video_id>``."""

    path: Path
    name: str

    def __post_init__(self) -> None:
        parts = Path(self.name).parts
        if not parts or Path(self.name).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
            raise ValueError(f"a video name must be a relative path such as 'speaker/video', got {self.name!r}")


@dataclass
class PreprocessReport:
    root: Path
    written: list[str] = field(default_factory=list)  # preprocessed by this run
    already_done: list[str] = field(default_factory=list)  # finished folders from an earlier run, left alone
    skipped: dict[str, str] = field(default_factory=dict)  # name → reason
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)

    @property
    def usable(self) -> list[str]:
        return sorted([*self.written, *self.already_done])


def find_videos(input_dir: str | os.PathLike) -> list[VideoJob]:
    """Every video file under ``input_dir``, named by its path without the extension.

    ``<input>/<speaker>/<video>.mp4`` (LRS2's ``main/<speaker>/<video>.mp4`` layout with ``main`` as the input)
    becomes ``<speaker>/<video>``; a video directly in ``input_dir`` is filed under the folder's own name as
    speaker. Hidden files and folders are ignored. Sorted by name.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {input_dir}")
    jobs = []
    for dirpath, dirnames, filenames in os.walk(input_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if filename.startswith(".") or path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            parts = path.relative_to(input_dir).with_suffix("").parts
            if len(parts) == 1:
                parts = (input_dir.resolve().name or "videos", *parts)
            jobs.append(VideoJob(path, "/".join(parts)))
    return sorted(jobs, key=lambda job: job.name)


def make_detector(config: PreprocessConfig = PreprocessConfig()):
    """The face detector ``config.detector`` names (the interface of generation.faces.DlibFaceDetector)."""
    if config.detector == "s3fd":
        import torch

        from generation import s3fd_detect, weights

        path = Path(config.s3fd_weights) if config.s3fd_weights else weights.resolve_path(s3fd_detect.SFD_FACE_FILENAME)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # Wav2Lip's preprocess.py detects through the same face-alignment code as its inference.py.
        return s3fd_detect.load_s3fd(path, device=device, **s3fd_detect.WAV2LIP_INFERENCE)
    return faces.DlibFaceDetector()


def is_done(root: str | os.PathLike, name: str) -> bool:
    """Whether ``<root>/<name>`` is a finished video folder (it only ever appears complete, by a rename)."""
    return (Path(root) / name / AUDIO_FILE).is_file()


def preprocess_video(job: VideoJob, root: str | os.PathLike, config: PreprocessConfig = PreprocessConfig(),
                     detector=None) -> Path:
    """Write one video's folder, ``<root>/<job.name>``; returns it. Raises :class:`VideoSkipped` (or a
    ``media.MediaError`` for a file ffmpeg cannot read) when the video cannot be used; nothing is left behind then.
    """
    root = Path(root)
    final = root / job.name
    if is_done(root, job.name):
        return final
    detector = detector if detector is not None else make_detector(config)

    info = media.probe(job.path)  # MediaError for a corrupt or non-media file
    if not info.has_video:
        raise VideoSkipped("no video stream")
    if not info.has_audio:
        raise VideoSkipped("no audio stream")
    wav = media.read_audio(job.path, sample_rate=config.sample_rate)  # (N,) float32 mono
    if wav.size == 0:
        raise VideoSkipped("the audio stream has no samples")
    frames, fps = media.read_video(job.path)  # (T, H, W, 3) uint8 RGB
    if config.fps is not None and abs(fps - config.fps) > 0.01:
        raise VideoSkipped(f"{fps:g} fps, the training windows assume {config.fps:g} fps "
                           f"(convert it first, e.g. ffmpeg -i IN -r {config.fps:g} OUT)")
    boxes, missing = _face_boxes(frames, detector, config)  # (T, 4) int x1, y1, x2, y2

    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_MARK}", dir=final.parent))
    try:
        for k, (frame, (x1, y1, x2, y2)) in enumerate(zip(frames, boxes)):
            write_face_image(tmp / f"{k}.jpg", frame[y1:y2, x1:x2], quality=config.jpeg_quality)
        media.write_wav(tmp / AUDIO_FILE, wav, config.sample_rate)
        meta = {
            "source": str(job.path), "name": job.name, "fps": fps, "n_frames": len(frames),
            "width": int(frames.shape[2]), "height": int(frames.shape[1]),
            "sample_rate": config.sample_rate, "n_samples": int(wav.size),
            "detector": config.detector, "pads": list(config.pads), "smooth": config.smooth,
            "smooth_window": config.smooth_window, "frames_without_face": missing,
            "boxes": boxes.tolist(),
        }
        (tmp / META_FILE).write_text(json.dumps(meta) + "\n")
        try:
            os.rename(tmp, final)  # the folder appears complete, or not at all
        except OSError:
            if not is_done(root, job.name):  # lost a race to another run that finished it: fine
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _face_boxes(frames: np.ndarray, detector, config: PreprocessConfig) -> tuple[np.ndarray, list[int]]:
    """Detected, gap-filled, padded and smoothed boxes (T, 4) int, and the frames that had no face."""
    detections = detector.detect_batch(frames)  # T arrays (N_t, 5), best first
    best = [d[0, :4] if len(d) else None for d in detections]
    missing = [k for k, box in enumerate(best) if box is None]
    if len(missing) == len(frames):
        raise VideoSkipped("no face found in any frame")
    if len(missing) > config.max_missing_fraction * len(frames):
        raise VideoSkipped(f"no face in {len(missing)} of {len(frames)} frames "
                           f"(more than {config.max_missing_fraction:.0%})")
    try:
        filled = faces.fill_missing_boxes(best, max_gap=config.max_missing_run)  # (T, 4) float
    except faces.FaceNotFoundError as exc:
        raise VideoSkipped(str(exc)) from None
    height, width = frames.shape[1:3]
    boxes = faces.pad_boxes(filled, config.pads, width, height)  # (T, 4) int, clipped to the frame
    if config.smooth:
        boxes = faces.smooth_boxes(boxes, config.smooth_window)
    small = (boxes[:, 2] - boxes[:, 0] < config.min_face_px) | (boxes[:, 3] - boxes[:, 1] < config.min_face_px)
    if small.any():
        raise VideoSkipped(f"the face box is degenerate in frame {int(np.argmax(small))}: {boxes[np.argmax(small)]}")
    return boxes, missing


def _remove_stale_temporaries(final: Path) -> None:
    """Half-written folders an interrupted run left for this video."""
    prefix = f".{final.name}{_TMP_MARK}"
    for entry in final.parent.iterdir():
        if entry.is_dir() and entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True)


def split_train_val(names: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """A deterministic split by video: the round(val_fraction · n) names with the smallest sha256 go to val.

    Ranking by a hash of the name keeps a video's side stable when others are added (mostly) and does not depend
    on the order the names come in. With val_fraction > 0 and at least two videos, val gets one or more and
    train keeps one or more. Both lists are sorted.
    """
    names = sorted(set(names))
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    elif len(names) < 2:
        n_val = 0
    ranked = sorted(names, key=lambda name: hashlib.sha256(name.encode("utf-8")).hexdigest())
    val = set(ranked[:n_val])
    return [n for n in names if n not in val], [n for n in names if n in val]


def write_filelists(root: str | os.PathLike, train: Sequence[str], val: Sequence[str]) -> tuple[Path, Path]:
    """``<root>/filelists/train.txt`` and ``val.txt``, one name per line, each written atomically."""
    folder = Path(root) / FILELISTS
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, names in (("train", train), ("val", val)):
        path = folder / f"{split}.txt"
        tmp = folder / f".{split}.txt{_TMP_MARK}{os.getpid()}"
        tmp.write_text("".join(f"{name}\n" for name in names))
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


def preprocess_videos(videos: str | os.PathLike | Sequence[VideoJob], root: str | os.PathLike,
                      config: PreprocessConfig = PreprocessConfig(), detector=None) -> PreprocessReport:
    """Preprocess every video (a folder, see :func:`find_videos`, or jobs) into ``root`` and write the file lists.

    Finished folders are left as they are; unusable videos are skipped with a logged reason. The file lists name
    every usable video of ``videos`` (this run's and earlier runs'), split by :func:`split_train_val`.
    """
    jobs = find_videos(videos) if isinstance(videos, (str, os.PathLike)) else list(videos)
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two videos would share the names {duplicates[:5]}; rename one of each")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    report = PreprocessReport(root=root)
    for job in jobs:
        if is_done(root, job.name):
            report.already_done.append(job.name)
            continue
        if detector is None:
            detector = make_detector(config)  # only once a video needs it (S3FD loads weights)
        try:
            preprocess_video(job, root, config, detector)
        except (VideoSkipped, media.MediaError, audio_features.AudioError) as exc:
            _skip(report, job, str(exc))
        except Exception as exc:  # noqa: BLE001 — one bad video must not end a long batch; the reason is logged
            log.exception("unexpected error on %s", job.path)
            _skip(report, job, f"unexpected {type(exc).__name__}: {exc}")
        else:
            report.written.append(job.name)
            log.info("preprocessed %s -> %s", job.path, root / job.name)
    report.train, report.val = split_train_val(report.usable, config.val_fraction)
    write_filelists(root, report.train, report.val)
    log.info("%d videos usable (%d written now, %d already done), %d skipped; %d train, %d val",
             len(report.usable), len(report.written), len(report.already_done), len(report.skipped),
             len(report.train), len(report.val))
    return report


def _skip(report: PreprocessReport, job: VideoJob, reason: str) -> None:
    report.skipped[job.name] = reason
    log.warning("skipping video %s (%s): %s", job.name, job.path, reason)


def corpus_dataset(root: str | os.PathLike, config: corpus.CorpusConfig = corpus.CorpusConfig(),
                   preprocess_config: PreprocessConfig = PreprocessConfig(), detector=None) -> Path:
    """Build the synthetic corpus (:func:`generation.corpus.build_corpus`) and preprocess it into ``root``.

    The demo weights are trained on this. The raw clips (mp4, wav, provenance json) stay in ``<root>/corpus``;
    each becomes ``<root>/<face identity>/<voice>_<content id>`` (the face is the visual "speaker"). A finished
    build of the same config is not redone (``<root>/corpus.json`` records it). Frames are kept at the corpus's
    fps. A clip that cannot be preprocessed is logged and left out (and retried by the next call); RuntimeError
    when none can. Returns ``root``.
    """
    root = Path(root)
    preprocess_config = dataclasses.replace(preprocess_config, fps=config.fps)
    record = {"corpus": corpus.jsonable(dataclasses.asdict(config)),
              "preprocess": corpus.jsonable(dataclasses.asdict(preprocess_config))}
    marker = root / CORPUS_MARKER
    if (marker.is_file() and (root / FILELISTS / "train.txt").is_file()
            and json.loads(marker.read_text()) == record):
        return root
    items = corpus.build_corpus(root / "corpus", config)
    jobs = [VideoJob(item.video_path, f"{item.identity}/{item.name.removeprefix(item.identity + '_')}")
            for item in items]
    report = preprocess_videos(jobs, root, preprocess_config, detector)
    if not report.usable:
        raise RuntimeError(f"no corpus clip could be preprocessed: {report.skipped}")
    if not report.skipped:  # with skipped clips, the next call tries them again
        marker.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return root

