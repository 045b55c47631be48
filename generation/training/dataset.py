"""Training windows from Wav2Lip's preprocessed layout: faces, an identity reference, a shifted negative, mels.

No Django here. Reproduces the sampling of Rudrabha/Wav2Lip ``wav2lip_train.py`` / ``color_syncnet_train.py``
(master 5c90fa9; ``shared/research/metrics_models.md`` §2.4, §2.7, §2.10) with the negatives of the LipGAN /
L1WGAN-GP study (``shared/seeds/000_41145e614d4b5485.txt`` §4.1: the face window moved by ±α frames,
α = 1 … 6), and makes every sample a pure function of a ``numpy.random.Generator`` so a resumed run draws
exactly what the interrupted one would have.

The layout (what ``generation.training.preprocess`` writes, and what Wav2Lip's ``preprocess.py`` writes)::

    <root>/<speaker>/<video_id>/0.jpg, 1.jpg, ...   face crops of video frames 0, 1, ... (any size)
    <root>/<speaker>/<video_id>/audio.wav           the video's sound (16 kHz mono; other rates are resampled)
    <root>/<speaker>/<video_id>/meta.json           optional (syncmos' preprocess writes it): checked for fps
    <root>/filelists/train.txt, val.txt             one ``<speaker>/<video_id>`` per line

One sample, for a target window starting at frame i (T = ``WindowSpec.frames``, S = ``face_size``):

* ``faces``          (T, 3, S, S)  frames i … i+T-1, float32 in [0, 1], ``spec.color`` channel order;
* ``reference``      (T, 3, S, S)  another window of the same video, the identity reference (Wav2Lip's "wrong
                                   window"), at least ``min_reference_distance`` frames from i (by default T:
                                   no overlap); only where the video has no such window, any other start;
* ``shifted_faces``  (T, 3, S, S)  frames i+shift … i+shift+T-1: out of sync with ``mel`` by ``shift`` frames;
* ``shift``          ()  int64     signed, |shift| uniform in [min_shift, max_shift], either sign equally likely;
                                   positive: the faces are *later* than the audio;
* ``mel``            (1, 80, sync_mel_frames)   mel[:, s : s + sync_mel_frames], s = int(80 · i / fps) — the
                                   window of the T-frame block (Wav2Lip's ``crop_audio_window``), SyncNet's input;
* ``frame_mels``     (T, 1, 80, mel_frames)     frame j's window starts at mel column int(80 · (j + offset) / fps);
* ``video_index``, ``start``, ``reference_start`` ()  int64: which video (an index into ``dataset.videos``) and
                                   which frames were drawn.

Start frames are only drawn where every window fits: no per-frame window starts before frame 0 or runs past the
end of the mel, the sync window fits, and the shifted window lies inside the video. Wav2Lip draws any frame and
throws away the sample when a window does not fit (``get_segmented_mels`` returns None, the
``mel.shape[0] != syncnet_mel_step_size`` check); drawing only from the valid starts gives the same distribution
of kept samples without retry loops, so the number of random draws per sample is fixed (5).

What is drawn, in this order: the video (uniform over usable videos, as Wav2Lip's ``random.randint`` over
``all_videos``), the shift's sign and magnitude, the start (uniform over the starts where the target and the
shifted window both fit), the reference start (uniform over the far-enough starts).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generation import audio as audio_features
from generation.nets import MASKED_FIRST, REFERENCE_FIRST, face_input, mask_lower_half

log = logging.getLogger(__name__)

AUDIO_FILE = "audio.wav"
META_FILE = "meta.json"
FILELISTS = "filelists"
_FRAME_FILE = re.compile(r"^(0|[1-9][0-9]*)\.jpg$")  # 0.jpg, 1.jpg, ... as Wav2Lip names them
_FPS_TOLERANCE = 0.01


class DatasetError(ValueError):
    """A dataset that cannot be read: a missing list file, a corrupt face image."""


class EmptyDatasetError(DatasetError):
    """No listed video can give a single sample."""


@dataclass(frozen=True)
class WindowSpec:
    """What a sample holds. Defaults are Wav2Lip's (hparams.py, wav2lip_train.py) with the seed paper's shifts."""

    face_size: int = 96
    frames: int = 5  # T consecutive frames per sample (Wav2Lip syncnet_T)
    mel_frames: int = 16  # per-frame mel window (16 Wav2Lip, 27 LipGAN)
    sync_mel_frames: int = 16  # the mel window covering the T-frame block (SyncNet input)
    fps: float = 25.0
    min_shift: int = 1  # negatives: the T-frame window shifted by ±α frames, α uniform in [min_shift, max_shift]
    max_shift: int = 6
    # Frame j's per-frame mel window starts at frame j + offset. 0 is Wav2Lip's inference.py (and syncmos'
    # pipeline): the window starts at the frame's own timestamp. Wav2Lip's training code writes
    # ``crop_audio_window(spec, i - 2)`` on a 1-based frame number (``get_frame_id(...) + 1``), so its effective
    # offset is -1, one frame (40 ms) earlier than its inference (metrics_models.md §2.7; Wav2Lip issue #209).
    # A window centred on the frame, as the seed paper describes LipGAN's 27-column (~340 ms) window, is
    # offset ≈ -round(mel_frames / 2 / (80 / fps)): -4 for 27 columns at 25 fps (centred to within a frame).
    frame_mel_offset: int = 0
    color: str = "BGR"  # channel order of the returned faces ("BGR" as Wav2Lip trains with cv2, or "RGB")
    # The reference window starts at least this many frames from the target's. None: ``frames`` (no overlap,
    # Wav2Lip's "wrong window" made strict); LipGAN's single-frame training took a frame at least 6 away.
    min_reference_distance: int | None = None

    def __post_init__(self) -> None:
        for name in ("face_size", "frames", "mel_frames", "sync_mel_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")
        if not (isinstance(self.min_shift, int) and isinstance(self.max_shift, int)
                and 1 <= self.min_shift <= self.max_shift):
            raise ValueError(f"need 1 <= min_shift <= max_shift (a negative must be shifted), "
                             f"got {self.min_shift!r}, {self.max_shift!r}")
        if not isinstance(self.frame_mel_offset, int) or isinstance(self.frame_mel_offset, bool):
            raise ValueError(f"frame_mel_offset must be an integer number of frames, got {self.frame_mel_offset!r}")
        if self.color not in ("BGR", "RGB"):
            raise ValueError(f"color must be 'BGR' or 'RGB', not {self.color!r}")
        if self.min_reference_distance is not None and (
                not isinstance(self.min_reference_distance, int) or self.min_reference_distance < 1):
            raise ValueError(f"min_reference_distance must be a positive integer or None, "
                             f"got {self.min_reference_distance!r}")

    @property
    def reference_distance(self) -> int:
        return self.frames if self.min_reference_distance is None else self.min_reference_distance


@dataclass(frozen=True)
class CacheConfig:
    """How much decoded data a dataset keeps in memory (per process: each DataLoader worker has its own).

    ``images``: face crops kept, already resized (S·S·3 bytes each: 27 KB at 96 px, so 4096 ≈ 110 MB); least
    recently used first out; None keeps every one (fine for the synthetic corpus), 0 none.
    ``mels``: mel spectrograms kept (80 · 80 floats per second of audio: 25 KB/s); None keeps every one.
    ``preload``: decode every image (if ``images`` can hold them) and compute every mel at construction.
    """

    images: int | None = 4096
    mels: int | None = None
    preload: bool = False

    def __post_init__(self) -> None:
        for name in ("images", "mels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or a non-negative integer, got {value!r}")


class _LRU:
    """A least-recently-used map; capacity None is unbounded, 0 keeps nothing."""

    def __init__(self, capacity: int | None):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if self.capacity == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        if self.capacity is not None:
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# --- image files ------------------------------------------------------------------------------------------
#
# Wav2Lip reads and writes its crops with cv2 (BGR, cv2.resize's INTER_LINEAR). cv2 is used when it is
# installed; otherwise Pillow decodes and encodes (the same libjpeg family) and generation.faces.resize, the
# bilinear resize of syncmos' inference crops (cv2 INTER_LINEAR's half-pixel mapping), resizes.


@functools.lru_cache(maxsize=1)
def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def read_face_image(path: str | os.PathLike, size: int | None = None, color: str = "RGB") -> np.ndarray:
    """A face crop file as (H, W, 3) uint8 in ``color`` order, resized to ``size`` × ``size`` when given."""
    path = str(path)
    cv2 = _cv2()
    if cv2 is not None:
        image = cv2.imread(path, cv2.IMREAD_COLOR)  # (H, W, 3) BGR, None when unreadable
        if image is None:
            raise DatasetError(f"cannot read the face image {path} (missing or corrupt)")
        if size is not None and image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size))  # INTER_LINEAR, as Wav2Lip's get_window
        if color == "RGB":
            image = image[..., ::-1]
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as handle:
                image = np.array(handle.convert("RGB"))  # (H, W, 3) RGB, writable (torch warns otherwise)
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot read the face image {path} (missing or corrupt): {exc}") from exc
        if size is not None and image.shape[:2] != (size, size):
            from generation.faces import resize

            image = resize(image, size, size)
        if color == "BGR":
            image = image[..., ::-1]
    return np.ascontiguousarray(image)


def write_face_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB crop as JPEG (quality 95: cv2.imwrite's default, which Wav2Lip used)."""
    cv2 = _cv2()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if cv2 is not None:
        if not cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
            raise OSError(f"cv2 could not write {path}")
    else:
        from PIL import Image

        Image.fromarray(rgb).save(str(path), format="JPEG", quality=int(quality))


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """A video's audio.wav as (N,) float32 at 16 kHz mono: the samples generation.audio.load_wav gives.

    A 16 kHz mono 16-bit or float WAV (what preprocess writes) is read directly with soundfile, which gives the
    same numbers as load_wav's ffmpeg decode (int16 / 32768) in about a millisecond instead of two ffmpeg
    processes; anything else goes through load_wav, which resamples and downmixes.
    """
    import soundfile

    config = audio_features.DEFAULT_MEL_CONFIG
    info = soundfile.info(str(path))
    if info.samplerate == config.sample_rate and info.channels == 1 and info.subtype in ("PCM_16", "FLOAT"):
        wav, _ = soundfile.read(str(path), dtype="float32", always_2d=False)
        return wav
    return audio_features.load_wav(path, sample_rate=config.sample_rate)


# --- the dataset ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Video:
    name: str
    folder: Path
    n_frames: int  # 1 + the highest frame number on disk
    window_ok: np.ndarray  # (n_frames,) bool: frames i … i+T-1 are all on disk
    target_ok: np.ndarray  # (n_frames,) bool: window_ok, and every mel window of a sample starting at i fits
    mel_columns: int


def read_names(list_file: str | os.PathLike) -> list[str]:
    """The ``<speaker>/<video_id>`` names of a Wav2Lip file list (first field of each line; blanks and # skipped)."""
    path = Path(list_file)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"the file list {path} does not exist") from None
    names = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])  # Wav2Lip's get_image_list keeps the first field
    return names


class LipSyncDataset:
    """Samples of :class:`WindowSpec` windows from the listed videos of a preprocessed root (see module docs).

    ``names``: the ``<speaker>/<video_id>`` names, or a file list (a path; a bare split name such as ``"train"``
    that is not a file means ``<root>/filelists/train.txt``). Videos that cannot give a sample (missing folder or
    audio, too few frames for the window plus the shift range, audio too short for the mel windows, another frame
    rate) are left out, each with a logged reason, kept in ``skipped``; ``videos`` lists the usable ones, which
    ``video_index`` indexes. Raises :class:`EmptyDatasetError` when none is usable.

    A corrupt face image inside a usable video raises :class:`DatasetError` when a sample needs it, rather than
    being skipped: skipping would make the draws depend on what happened to be read before (and so break exact
    resumption); re-run the preprocessing for that video.
    """

    def __init__(self, root: str | os.PathLike, names: Sequence[str] | str | os.PathLike,
                 spec: WindowSpec = WindowSpec(), *, cache: CacheConfig = CacheConfig()):
        self.root = Path(root)
        self.spec = spec
        self.cache = cache
        if isinstance(names, (str, os.PathLike)):
            names = read_names(self._list_path(names))
        self.skipped: dict[str, str] = {}
        self._videos: list[_Video] = []
        self._mels = _LRU(cache.mels)
        self._images = _LRU(cache.images)
        for name in names:
            video, reason = self._scan(str(name))
            if video is None:
                self.skipped[str(name)] = reason
                log.warning("skipping video %s: %s", name, reason)
            else:
                self._videos.append(video)
        if not self._videos:
            listed = len(self.skipped)
            reasons = "; ".join(f"{n}: {r}" for n, r in list(self.skipped.items())[:5])
            more = f" (and {listed - 5} more)" if listed > 5 else ""
            why = f", none usable — {reasons}{more}" if listed else ""
            raise EmptyDatasetError(f"no usable video in {self.root}: {listed} listed{why}")
        if cache.preload:
            self._preload()

    @property
    def videos(self) -> list[str]:
        """The usable videos' names, in list order; ``video_index`` indexes this list."""
        return [video.name for video in self._videos]

    def __len__(self) -> int:
        return len(self._videos)

    def n_frames(self, video_index: int) -> int:
        return self._videos[video_index].n_frames

    # -- drawing ---------------------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One sample (see the module docstring); a deterministic function of ``rng``'s state, which it advances."""
        spec = self.spec
        v = int(rng.integers(len(self._videos)))
        video = self._videos[v]
        sign = 1 if int(rng.integers(2)) else -1
        shift = sign * int(rng.integers(spec.min_shift, spec.max_shift + 1))
        starts = np.flatnonzero(video.target_ok & _shifted(video.window_ok, shift))  # never empty for a usable video
        start = int(starts[rng.integers(len(starts))])
        reference_start = self._reference_start(video, start, rng)

        mel = self._mel(v)  # (80, M)
        sync_start = audio_features.mel_window_start(start, spec.fps)
        block_mel = mel[:, sync_start:sync_start + spec.sync_mel_frames]  # (80, sync_mel_frames)
        frame_mels = np.stack([mel[:, s:s + spec.mel_frames] for s in self._frame_mel_starts(start)])  # (T, 80, W)
        return {
            "faces": self._window(v, start),  # (T, 3, S, S)
            "reference": self._window(v, reference_start),  # (T, 3, S, S)
            "shifted_faces": self._window(v, start + shift),  # (T, 3, S, S)
            "shift": torch.tensor(shift, dtype=torch.int64),
            # Copies, so that a caller changing a sample in place cannot change the cached mel.
            "mel": torch.from_numpy(block_mel.copy())[None],  # (1, 80, sync_mel_frames) float32
            "frame_mels": torch.from_numpy(frame_mels)[:, None],  # (T, 1, 80, W) float32 (np.stack copied)
            "video_index": torch.tensor(v, dtype=torch.int64),
            "start": torch.tensor(start, dtype=torch.int64),
            "reference_start": torch.tensor(reference_start, dtype=torch.int64),
        }

    def batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """``batch_size`` samples drawn one after another from ``rng``, stacked: (B, ...) per key."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        samples = [self.sample(rng) for _ in range(batch_size)]
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def _reference_start(self, video: _Video, start: int, rng: np.random.Generator) -> int:
        starts = np.arange(video.n_frames)
        far = np.flatnonzero(video.window_ok & (np.abs(starts - start) >= self.spec.reference_distance))
        if len(far) == 0:
            # A video too short for a separate window: any other start (there is one: the shifted window's).
            far = np.flatnonzero(video.window_ok & (starts != start))
        return int(far[rng.integers(len(far))])

    def _frame_mel_starts(self, start: int) -> list[int]:
        spec = self.spec
        return [audio_features.mel_window_start(j + spec.frame_mel_offset, spec.fps)
                for j in range(start, start + spec.frames)]

    # -- reading ---------------------------------------------------------------------------------------------

    def _list_path(self, names: str | os.PathLike) -> Path:
        path = Path(names)
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            return self.root / FILELISTS / f"{path.name}.txt"
        return path

    def _scan(self, name: str) -> tuple[_Video | None, str]:
        """The video's frame and mel bookkeeping, or None and why it cannot give a sample."""
        spec = self.spec
        folder = self.root / name
        if not folder.is_dir():
            return None, f"no folder {folder}"
        meta_path = folder / META_FILE
        if meta_path.is_file():
            try:
                fps = float(json.loads(meta_path.read_text()).get("fps", spec.fps))
            except (ValueError, TypeError, AttributeError) as exc:
                return None, f"unreadable {META_FILE}: {exc}"
            if abs(fps - spec.fps) > _FPS_TOLERANCE:
                return None, f"its frames are at {fps:g} fps, the windows expect {spec.fps:g} fps"
        numbers = [int(m.group(1)) for m in map(_FRAME_FILE.match, os.listdir(folder)) if m]
        if not numbers:
            return None, "no face images (0.jpg, 1.jpg, ...)"
        audio_path = folder / AUDIO_FILE
        if not audio_path.is_file():
            return None, f"no {AUDIO_FILE}"
        try:
            mel_columns = self._mel_columns(name, audio_path)
        except Exception as exc:  # noqa: BLE001 — a bad file leaves this video out, with the reason
            return None, f"{AUDIO_FILE} unusable: {type(exc).__name__}: {exc}"

        n = max(numbers) + 1
        present = np.zeros(n + 1, dtype=bool)
        present[numbers] = True
        runs = np.concatenate([[0], np.cumsum(present)])  # runs[k] = frames on disk among 0 … k-1
        t = spec.frames
        index = np.arange(n)
        window_ok = np.zeros(n, dtype=bool)
        fits = index + t <= n
        window_ok[fits] = (runs[index[fits] + t] - runs[index[fits]]) == t

        # The mel windows of a sample starting at i: the block window, and T per-frame windows, the last of
        # which (frame i+T-1) ends latest, the first (frame i) starts earliest; mel_window_start is monotone.
        sync_ends = np.array([audio_features.mel_window_start(i, spec.fps) for i in range(n)]) + spec.sync_mel_frames
        first_frame = index + spec.frame_mel_offset
        last_ends = np.array([audio_features.mel_window_start(i + t - 1 + spec.frame_mel_offset, spec.fps)
                              for i in range(n)]) + spec.mel_frames
        target_ok = window_ok & (first_frame >= 0) & (sync_ends <= mel_columns) & (last_ends <= mel_columns)

        video = _Video(name=name, folder=folder, n_frames=n, window_ok=window_ok, target_ok=target_ok,
                       mel_columns=mel_columns)
        shifts = [sign * m for m in range(spec.min_shift, spec.max_shift + 1) for sign in (-1, 1)]
        for shift in shifts:  # every shift that can be drawn needs a start (gaps can rule out some)
            if not (target_ok & _shifted(window_ok, shift)).any():
                return None, (f"too short: {n} frames ({int(present.sum())} on disk) and {mel_columns} mel columns "
                              f"leave no {t}-frame window with its mel windows and a {shift:+d}-frame shifted window")
        if (~present[:n]).any():
            log.info("video %s: frames %s are missing; windows avoid them", name,
                     _ranges(np.flatnonzero(~present[:n])))
        return video, ""

    def _mel_columns(self, name: str, audio_path: Path) -> int:
        """Columns of the video's mel spectrogram, from the WAV header when it is 16 kHz mono (no decoding)."""
        import soundfile

        config = audio_features.DEFAULT_MEL_CONFIG
        info = soundfile.info(str(audio_path))
        if info.samplerate == config.sample_rate and info.channels == 1:
            columns = 1 + info.frames // config.hop_size  # melspectrogram's 1 + N // hop (center=True)
            if columns < audio_features.MEL_WINDOW:
                raise audio_features.AudioError(f"{info.frames / info.samplerate:.3f} s of audio: {columns} mel "
                                                f"columns, fewer than melspectrogram's {audio_features.MEL_WINDOW}")
            return columns
        # Another rate or channel count (Wav2Lip's own preprocess.py keeps the source's): decode and resample now.
        mel = self._compute_mel(audio_path)
        self._mels.put(name, mel)
        return mel.shape[1]

    @staticmethod
    def _compute_mel(audio_path: Path) -> np.ndarray:
        return audio_features.melspectrogram(load_audio(audio_path))  # (80, M) float32

    def _mel(self, v: int) -> np.ndarray:
        video = self._videos[v]
        mel = self._mels.get(video.name)
        if mel is None:
            mel = self._compute_mel(video.folder / AUDIO_FILE)
            if mel.shape[1] != video.mel_columns:
                raise DatasetError(f"{video.folder / AUDIO_FILE} changed while training: {mel.shape[1]} mel columns, "
                                   f"{video.mel_columns} when the dataset was opened")
            self._mels.put(video.name, mel)
        return mel

    def _face(self, v: int, frame: int) -> np.ndarray:
        """(S, S, 3) uint8 in spec.color order."""
        key = (v, frame)
        image = self._images.get(key)
        if image is None:
            image = read_face_image(self._videos[v].folder / f"{frame}.jpg", self.spec.face_size, self.spec.color)
            self._images.put(key, image)
        return image

    def _window(self, v: int, start: int) -> torch.Tensor:
        frames = np.stack([self._face(v, k) for k in range(start, start + self.spec.frames)])  # (T, S, S, 3)
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, S, S)

    def _preload(self) -> None:
        for v, video in enumerate(self._videos):
            self._mel(v)
            if self.cache.images is None:
                # Every frame of some window: frame k is in the windows starting at k-T+1 … k.
                in_window = np.convolve(video.window_ok, np.ones(self.spec.frames, dtype=int))[:video.n_frames] > 0
                for frame in np.flatnonzero(in_window):
                    self._face(v, int(frame))

    def __repr__(self) -> str:
        return (f"LipSyncDataset({str(self.root)!r}, {len(self)} videos, {len(self.skipped)} skipped, "
                f"{dataclasses.asdict(self.spec)})")


def _shifted(window_ok: np.ndarray, shift: int) -> np.ndarray:
    """(n,) bool: whether the window starting at i + shift is on disk (False where i + shift is outside)."""
    out = np.zeros_like(window_ok)
    n = len(window_ok)
    if abs(shift) >= n:
        return out
    if shift >= 0:
        out[:max(0, n - shift)] = window_ok[shift:]
    else:
        out[-shift:] = window_ok[:n + shift]
    return out


def _ranges(indices: np.ndarray) -> str:
    parts, first = [], None
    for k, i in enumerate(indices):
        if first is None:
            first = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(f"{first}" if first == i else f"{first}–{i}")
            first = None
    return ", ".join(parts)


# --- model inputs -----------------------------------------------------------------------------------------


def masked(faces: torch.Tensor) -> torch.Tensor:
    """A copy of (..., 3, S, S) faces with the lower half (rows S//2 …) zeroed: Wav2Lip's masked target."""
    return mask_lower_half(faces)


def generator_input(faces: torch.Tensor, reference: torch.Tensor, face_order: str) -> torch.Tensor:
    """The generator's 6-channel face input from target and reference windows.

    faces, reference: (B, T, 3, S, S) as :meth:`LipSyncDataset.batch` gives them, or (B, 3, S, S).
    Returns (B*T, 6, S, S) (row b*T + t is sample b's frame t, so ``.reshape(B, T, ...)`` undoes it; Wav2Lip's
    own forward folds time first instead) or (B, 6, S, S): the masked target and the reference stacked in
    ``face_order`` — ``MASKED_FIRST`` (Wav2Lip: [masked, reference]) or ``REFERENCE_FIRST`` (LipGAN).
    """
    if face_order not in (MASKED_FIRST, REFERENCE_FIRST):
        raise ValueError(f"face_order must be {MASKED_FIRST!r} or {REFERENCE_FIRST!r}, not {face_order!r}")
    if faces.shape != reference.shape:
        raise ValueError(f"faces {tuple(faces.shape)} and reference {tuple(reference.shape)} differ in shape")
    if faces.dim() == 5:
        faces = faces.flatten(0, 1)  # (B*T, 3, S, S)
        reference = reference.flatten(0, 1)
    elif faces.dim() != 4:
        raise ValueError(f"expected (B, T, 3, S, S) or (B, 3, S, S) faces, got {tuple(faces.shape)}")
    if faces.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got {faces.shape[1]}")
    return face_input(faces, reference, face_order)  # (N, 6, S, S)
