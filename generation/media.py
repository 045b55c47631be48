"""ffmpeg I/O: probe, decode to numpy, encode from numpy, and normalize clips to one delivery profile.

No Django here. Every failure of ffmpeg/ffprobe on an input becomes a ``MediaError`` whose message
says which file and what went wrong, so a task can store it on the clip and move on.

Why a delivery profile: if the clips of one model arrive as 30 fps VP9 and another's as 25 fps H.264,
raters judge the encodings as much as the models, and a file's tags or codec settings can tell a
curious participant which system made it. ``normalize`` therefore re-encodes every stimulus to one
frame rate, size, codec, loudness and duration alignment, and strips everything that could identify
where it came from (study_platforms.md §4, items 8 and 13). It also rounds the file's size up to a
whole number of ``DELIVERY_SIZE_BLOCK`` bytes (``pad_to_block``): the size of a clip, visible in every
HTTP response, would otherwise tell clips of one content item apart and, across items, hint at the
condition (a frozen mouth compresses better than a talking one).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import numpy as np

FFMPEG = os.environ.get("SYNCMOS_FFMPEG", "ffmpeg")
FFPROBE = os.environ.get("SYNCMOS_FFPROBE", "ffprobe")

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# Rates ffmpeg's native AAC encoder accepts (ISO 14496-3 sampling frequency table).
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# Shorter than this, nobody can judge speech against a mouth (and loudness gating has nothing to gate).
MIN_AUDIO_SECONDS = 0.2
# A delivered clip's integrated loudness must be this close to the profile's target (EBU R128 allows
# ±1 LU for live programmes; a 1 LU step is about the smallest loudness difference listeners notice).
LOUDNESS_TOLERANCE_LU = 1.0
# H.264 SEI NAL units (type 6): x264 writes its version and full settings string into one of them.
_SEI_NAL_TYPE = 6
# Delivery files are padded to a whole number of these (64 KiB): clips of one content item differ by
# a few kilobytes between conditions, far less than a block, so their served sizes mostly coincide.
# UNVERIFIED choice: no published value; large enough to hide encoder-level differences of short
# talking-head clips (a few hundred kB), small enough to add at most 64 KiB to each download.
DELIVERY_SIZE_BLOCK = 64 * 1024
# ISO/IEC 14496-12 §8.1.2: a top-level "free" (or "skip") box holds bytes every reader ignores.
_FREE_BOX_TYPES = (b"free", b"skip")
_BOX_HEADER = 8


class MediaError(Exception):
    """A media file is unreadable, corrupt, silent or otherwise unusable; the message says why."""


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format_name: str
    duration: float
    size_bytes: int
    video_codec: str | None = None
    pix_fmt: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    n_frames: int | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    format_tags: dict = field(default_factory=dict)
    stream_tags: list = field(default_factory=list)
    video_duration: float | None = None  # seconds, of the first video stream alone
    audio_duration: float | None = None  # seconds, of the first audio stream alone

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


@dataclass(frozen=True)
class DeliveryProfile:
    """The single encoding in which every stimulus of a study reaches participants.

    Defaults suit browser playback of talking heads: H.264 yuv420p (plays everywhere), 25 fps (the
    frame rate of the lip-sync corpora, so audio offsets are whole frames), 256 × 256, stereo AAC at
    48 kHz, and EBU R128 loudness (-23 LUFS integrated, -1 dBTP ceiling) so no clip is louder than
    another. Values are checked on construction; a bad value raises ``ValueError``.
    """

    fps: float = 25.0
    width: int = 256
    height: int = 256
    crf: int = 18
    preset: str = "medium"
    audio_sample_rate: int = 48000
    audio_bitrate: str = "128k"
    audio_channels: int = 2  # stereo AAC plays everywhere; a mono source is duplicated
    loudness_lufs: float = -23.0  # EBU R128 integrated
    true_peak_db: float = -1.0

    def __post_init__(self) -> None:
        # Coerce JSON numbers (25 for 25.0, 256.0 for 256) so as_dict() round-trips with stable types.
        object.__setattr__(self, "fps", _number("fps", self.fps, float, 1.0, 120.0))
        for name in ("width", "height"):
            value = _number(name, getattr(self, name), int, 16, 4096)
            if value % 2:
                raise ValueError(f"{name} must be even (yuv420p halves the chroma planes), got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "crf", _number("crf", self.crf, int, 0, 51))
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {self.preset!r}")
        rate = _number("audio_sample_rate", self.audio_sample_rate, int, 8000, 96000)
        if rate not in AAC_SAMPLE_RATES:
            raise ValueError(f"audio_sample_rate must be one of {AAC_SAMPLE_RATES}; got {rate}")
        object.__setattr__(self, "audio_sample_rate", rate)
        bitrate = re.fullmatch(r"(\d+)k", self.audio_bitrate) if isinstance(self.audio_bitrate, str) else None
        if bitrate is None or not 32 <= int(bitrate.group(1)) <= 512:
            raise ValueError(f"audio_bitrate must look like '128k' (32k to 512k); got {self.audio_bitrate!r}")
        channels = _number("audio_channels", self.audio_channels, int, 1, 2)
        object.__setattr__(self, "audio_channels", channels)
        # The ranges of ffmpeg's EBU R128 filters.
        object.__setattr__(self, "loudness_lufs", _number("loudness_lufs", self.loudness_lufs, float, -70.0, -5.0))
        object.__setattr__(self, "true_peak_db", _number("true_peak_db", self.true_peak_db, float, -9.0, 0.0))

    @classmethod
    def from_options(cls, options: Mapping | None) -> DeliveryProfile:
        """The profile of a generation job: defaults overridden by ``options`` (a job's JSON field).

        Unknown keys raise ``ValueError`` rather than being ignored: a typo such as ``"with": 512``
        would otherwise silently deliver the default size.
        """
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise ValueError(f"delivery options must be a mapping, got {type(options).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown delivery option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return cls(**options)

    def as_dict(self) -> dict:
        return asdict(self)


def _number(name: str, value, kind: type, low: float, high: float):
    """``value`` as ``kind`` (int or float) within [low, high]; bools and non-integral ints refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def _run(
    cmd: list[str], *, what: str, input_bytes: bytes | None = None, want_stderr: bool = False, strict: bool = False
) -> bytes:
    """Run ffmpeg/ffprobe; stdout (or stderr, for filters that report there) on success, MediaError otherwise.

    ``strict``: with ``-v error``, anything on stderr is an error ffmpeg chose to survive (a truncated
    file, a damaged frame it concealed); a stimulus built from such input is refused, not delivered.
    """
    try:
        proc = subprocess.run(cmd, input=input_bytes, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise MediaError(f"{cmd[0]} is not installed (apt-get install ffmpeg)") from exc
    # "[matroska,webm @ 0x55d2…] File ended prematurely" → "File ended prematurely"
    stderr = proc.stderr.decode("utf-8", "replace").splitlines()
    lines = [re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", line) for line in stderr]
    tail = [line for line in lines if line.strip()][-3:]
    if proc.returncode != 0:
        raise MediaError(f"{what}: {' | '.join(tail) or f'{cmd[0]} exited with {proc.returncode}'}")
    if strict and tail:
        raise MediaError(f"{what}: {' | '.join(tail)}")
    return proc.stderr if want_stderr else proc.stdout


def _probe_json(path: str | os.PathLike) -> dict:
    """ffprobe's format and streams of a file as parsed JSON; MediaError if it is missing or unparsable."""
    path = str(path)
    if not os.path.exists(path):
        raise MediaError(f"{path}: file does not exist")
    out = _run(
        [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "-count_packets", path],
        what=f"cannot read {os.path.basename(path)}",
    )
    try:
        data = json.loads(out or b"{}")
    except json.JSONDecodeError as exc:
        raise MediaError(f"cannot read {os.path.basename(path)}: ffprobe gave no usable answer") from exc
    if not data.get("format") or not data.get("streams"):
        raise MediaError(f"cannot read {os.path.basename(path)}: no media streams found")
    return data


def _first_stream(data: dict, codec_type: str) -> dict | None:
    return next((s for s in data["streams"] if s.get("codec_type") == codec_type), None)


def _stream_duration(stream: dict | None) -> float | None:
    """A stream's own duration; Matroska keeps it in a DURATION tag (HH:MM:SS.fraction)."""
    if stream is None:
        return None
    if stream.get("duration") not in (None, "N/A"):
        return float(stream["duration"])
    tag = (stream.get("tags") or {}).get("DURATION")
    if tag:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _stream_start(stream: dict) -> float:
    start = stream.get("start_time")
    return float(start) if start not in (None, "N/A") else 0.0


def probe(path: str | os.PathLike) -> MediaInfo:
    """Container and stream facts of a media file; raises MediaError if it cannot be parsed."""
    path = str(path)
    data = _probe_json(path)
    fmt = data["format"]
    video = _first_stream(data, "video")
    audio = _first_stream(data, "audio")
    fps = None
    n_frames = None
    if video is not None:
        rate = video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/0"
        num, _, den = rate.partition("/")
        if den and int(den) != 0 and int(num) != 0:
            fps = float(Fraction(int(num), int(den)))
        packets = video.get("nb_read_packets") or video.get("nb_frames")
        n_frames = int(packets) if packets not in (None, "N/A") else None
    return MediaInfo(
        path=path,
        format_name=fmt.get("format_name", ""),
        duration=float(fmt.get("duration") or 0.0),
        size_bytes=int(fmt.get("size") or os.path.getsize(path)),
        video_codec=video.get("codec_name") if video else None,
        pix_fmt=video.get("pix_fmt") if video else None,
        width=int(video["width"]) if video and video.get("width") else None,
        height=int(video["height"]) if video and video.get("height") else None,
        fps=fps,
        n_frames=n_frames,
        audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        format_tags=dict(fmt.get("tags") or {}),
        stream_tags=[dict(s.get("tags") or {}) for s in data["streams"]],
        video_duration=_stream_duration(video),
        audio_duration=_stream_duration(audio),
    )


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB. Returns (frames (T, H, W, 3) uint8, fps)."""
    info = probe(path)
    if not info.has_video or not info.width or not info.height:
        raise MediaError(f"{os.path.basename(str(path))}: no video stream")
    raw = _run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        what=f"cannot decode the video of {os.path.basename(str(path))}",
    )
    frame_bytes = info.width * info.height * 3
    if len(raw) < frame_bytes:
        raise MediaError(f"{os.path.basename(str(path))}: the video stream holds no decodable frame")
    n = len(raw) // frame_bytes
    frames = np.frombuffer(raw[: n * frame_bytes], dtype=np.uint8).reshape(n, info.height, info.width, 3)
    return frames.copy(), float(info.fps or 25.0)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A still image as (H, W, 3) uint8 RGB; grayscale is expanded and alpha dropped."""
    frames, _ = read_video(path)
    return frames[0]


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream to mono float32 in [-1, 1] at ``sample_rate`` (ffmpeg resamples)."""
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{os.path.basename(str(path))}: no audio stream")
    raw = _run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate),
         "-f", "f32le", "-"],
        what=f"cannot decode the audio of {os.path.basename(str(path))}",
    )
    return np.frombuffer(raw, dtype="<f4").copy()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV."""
    import soundfile

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (N,), got shape {audio.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    *,
    video_args: list[str] | None = None,
    audio_args: list[str] | None = None,
) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames, optionally muxed with mono float audio.

    The container follows the extension. Defaults: H.264 CRF 12 yuv420p + AAC for .mp4, FFV1 + PCM
    for .mkv (lossless intermediate). The file appears atomically (written beside, then renamed).
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {frames.shape}")
    _, h, w, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lossless = path.suffix.lower() == ".mkv"
    if video_args is None:
        video_args = (["-c:v", "ffv1", "-level", "3", "-pix_fmt", "rgb24"] if lossless
                      else ["-c:v", "libx264", "-preset", "medium", "-crf", "12", "-pix_fmt", "yuv420p"])
    if audio_args is None:
        audio_args = ["-c:a", "pcm_s16le"] if lossless else ["-c:a", "aac", "-b:a", "128k"]
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
        cmd = [FFMPEG, "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", _rate(fps), "-i", "-"]
        if audio is not None:
            if sample_rate is None:
                raise ValueError("sample_rate is required with audio")
            wav = os.path.join(tmp, "audio.wav")
            write_wav(wav, audio, sample_rate)
            cmd += ["-i", wav, "-map", "0:v:0", "-map", "1:a:0", *audio_args]
        cmd += [*video_args, "-map_metadata", "-1"]
        out = os.path.join(tmp, "out" + path.suffix)
        cmd += [out]
        _run(cmd, what=f"cannot encode {path.name}", input_bytes=frames.tobytes())
        os.replace(out, path)


def write_intermediate(
    path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int
) -> None:
    """The lossless hand-over from a render step to ``normalize``: FFV1 RGB video + 16-bit PCM in .mkv.

    Lossless so that the only lossy encode a stimulus ever sees is the delivery one, identical for
    every condition. ``frames`` (T, H, W, 3) uint8 RGB; ``audio`` (N,) mono float in [-1, 1].
    """
    if Path(path).suffix.lower() != ".mkv":
        raise ValueError(f"an intermediate is a Matroska file (.mkv), got {Path(path).name}")
    if audio is None or np.asarray(audio).size == 0:
        raise ValueError("an intermediate needs its audio: a stimulus without speech cannot be rated for sync")
    write_video(path, frames, fps, audio, sample_rate)


def _rate(fps: float) -> str:
    """An exact ffmpeg rate string (29.97 → 30000/1001)."""
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ffmpeg_available() -> bool:
    return shutil.which(FFMPEG) is not None and shutil.which(FFPROBE) is not None


# --- delivery normalization ----------------------------------------------------------------------


def check_audible(audio: np.ndarray, sample_rate: int, *, min_rms_dbfs: float = -60.0) -> None:
    """Refuse audio nobody could hear: digital silence, near silence, or less than 0.2 s.

    A lip-sync stimulus without audible speech cannot be rated for sync, and loudness normalization
    would amplify its noise floor by 40 dB or more. The level is the RMS of the signal with its DC
    offset removed, in dB relative to full scale (a full-scale square wave is 0 dBFS, speech at a
    normal recording level sits around -20 to -30 dBFS).

    Parameters
    ----------
    audio : (N,) or (N, C) float array in [-1, 1]
    sample_rate : samples per second
    min_rms_dbfs : level below which the audio counts as silent

    Raises
    ------
    MediaError
        With "audio is silent" or "audio is too short" in the message.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise MediaError("audio is empty")
    duration = audio.shape[0] / sample_rate
    if duration < MIN_AUDIO_SECONDS:
        raise MediaError(f"audio is too short ({duration:.3f} s; at least {MIN_AUDIO_SECONDS} s is needed)")
    if not np.all(np.isfinite(audio)):
        raise MediaError("audio holds NaN or infinite samples")
    centred = audio - audio.mean(axis=0)  # (N,) or (N, C): a DC offset is not sound
    rms = float(np.sqrt(np.mean(centred**2)))
    level = 20.0 * math.log10(rms) if rms > 0 else -math.inf
    if level < min_rms_dbfs:
        raise MediaError(f"audio is silent (RMS {level:.1f} dBFS, below the {min_rms_dbfs:g} dBFS floor)")


def measure_loudness(path: str | os.PathLike) -> dict:
    """EBU R128 measurement of a file's first audio stream (ffmpeg loudnorm, analysis only).

    Returns
    -------
    dict
        ``integrated_lufs`` (integrated loudness), ``true_peak_db`` (dBTP, 4× oversampled),
        ``lra_lu`` (loudness range) and ``threshold_lufs`` (relative gate). The first two set the
        gain of ``normalize``'s second pass. Silence measures ``-inf``.
    """
    name = os.path.basename(str(path))
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{name}: no audio stream to measure")
    log = _run(
        [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-v", "info", "-i", str(path), "-map", "0:a:0",
         "-af", "loudnorm=print_format=json", "-f", "null", "-"],
        what=f"cannot measure the loudness of {name}",
        want_stderr=True,
    ).decode("utf-8", "replace")
    start, end = log.rfind("{"), log.rfind("}")
    if start < 0 or end < start:
        raise MediaError(f"cannot measure the loudness of {name}: loudnorm printed no report")
    report = json.loads(log[start: end + 1])
    return {
        "integrated_lufs": float(report["input_i"]),
        "true_peak_db": float(report["input_tp"]),
        "lra_lu": float(report["input_lra"]),
        "threshold_lufs": float(report["input_thresh"]),
    }


def normalize(src_path: str | os.PathLike, dst_path: str | os.PathLike,
              profile: DeliveryProfile | None = None, *, size_block: int | None = DELIVERY_SIZE_BLOCK) -> MediaInfo:
    """Re-encode a clip into the delivery profile, with nothing left that says where it came from.

    Steps:

    1. Probe; refuse a file without a video or an audio stream.
    2. Decode the audio at the profile's rate and channel count, align it to the first video frame
       (a stream that starts later is padded with silence), refuse it if silent.
    3. Encode the video: constant frame rate (``fps`` filter), scaled to fit and padded to
       width × height with square pixels, BT.709 yuv420p, x264 on one thread (x264's output depends on
       its thread count, and determinism must not depend on the worker's core count); drop the SEI
       unit in which x264 writes its version and settings.
    4. Trim or pad the audio to exactly the video's duration, check it again, measure its loudness.
    5. Mux: copy the video, bring the audio to the target loudness (one static gain; a true-peak
       limiter only where that gain would cross the ceiling), encode AAC, write no tags, no chapters,
       no encoder names (bitexact), and put ``moov`` first (fast start).
    6. Measure the delivered loudness; refuse the clip if it missed the target by more than
       ``LOUDNESS_TOLERANCE_LU`` (audio whose peaks leave no room under the ceiling).
    7. Pad the file to a whole number of ``size_block`` bytes with a trailing ``free`` box
       (``pad_to_block``; ``None`` leaves the size as encoded), so its size says little about it.
    8. Rename into ``dst_path``: everything is written in a temporary folder beside it, so a failure
       never leaves a partial clip there and an older file at ``dst_path`` survives a failed run.

    The same input and profile give byte-identical output on this ffmpeg build.

    Returns
    -------
    MediaInfo
        ``probe(dst_path)``; its ``size_bytes`` is the padded size (hash the file after this call).

    Raises
    ------
    MediaError
        Unreadable or corrupt input, no audio, silent audio, loudness target out of reach; the
        message names the source file.
    """
    profile = profile or DeliveryProfile()
    src, dst = Path(src_path), Path(dst_path)
    name = src.name
    data = _probe_json(src)
    video = _first_stream(data, "video")
    audio = _first_stream(data, "audio")
    if video is None or not video.get("width"):
        raise MediaError(f"{name}: no video stream")
    if audio is None:
        raise MediaError(f"{name}: no audio stream; a lip-sync stimulus needs its speech")

    sound = _decode_audio(src, audio, profile)  # (N, C) float32 at the profile rate
    lead = round((_stream_start(audio) - _stream_start(video)) * profile.audio_sample_rate)
    sound = _fit_samples(sound, -lead, len(sound) - lead)  # sample 0 is now the first video frame
    try:
        check_audible(sound, profile.audio_sample_rate)
    except MediaError as exc:
        raise MediaError(f"{name}: {exc}") from exc

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".normalize-") as tmp:
        video_path = os.path.join(tmp, "video.mp4")
        _encode_video(src, video, video_path, profile)
        n_frames = probe(video_path).n_frames or 0
        if n_frames < 1:
            raise MediaError(f"{name}: the video stream holds no decodable frame")

        n_samples = round(n_frames * profile.audio_sample_rate / profile.fps)
        sound = _fit_samples(sound, 0, n_samples)  # (n_samples, C)
        try:
            check_audible(sound, profile.audio_sample_rate)
        except MediaError as exc:
            raise MediaError(f"{name}: within the video's {n_frames} frames, {exc}") from exc
        wav_path = os.path.join(tmp, "audio.wav")
        _write_float_wav(wav_path, sound, profile.audio_sample_rate)
        loudness = measure_loudness(wav_path)
        if not math.isfinite(loudness["integrated_lufs"]):
            raise MediaError(f"{name}: audio is silent (no loudness above the EBU R128 gate)")

        out_path = os.path.join(tmp, "out.mp4")
        _mux(video_path, wav_path, out_path, loudness, n_samples, profile, what=f"cannot normalize {name}")
        reached = measure_loudness(out_path)["integrated_lufs"]
        if not abs(reached - profile.loudness_lufs) <= LOUDNESS_TOLERANCE_LU:
            peak_to_loudness = loudness["true_peak_db"] - loudness["integrated_lufs"]
            raise MediaError(
                f"{name}: the audio reaches {reached:.1f} LUFS instead of {profile.loudness_lufs:g} LUFS "
                f"(its peaks stand {peak_to_loudness:.0f} dB above its loudness and the ceiling is "
                f"{profile.true_peak_db:g} dBTP); lower loudness_lufs for this job or clean the recording"
            )
        if size_block:
            pad_to_block(out_path, size_block)
        os.replace(out_path, dst)
    return probe(dst)


def _decode_audio(src: Path, stream: dict, profile: DeliveryProfile) -> np.ndarray:
    """The first audio stream as (N, C) float32 at the profile's rate; mono is duplicated, not panned."""
    channels = min(int(stream.get("channels") or 1), profile.audio_channels)
    raw = _run(
        [FFMPEG, "-nostdin", "-v", "error", "-xerror", "-i", str(src), "-map", "0:a:0", "-vn",
         "-ac", str(channels), "-ar", str(profile.audio_sample_rate), "-f", "f32le", "-"],
        what=f"cannot decode the audio of {src.name}",
        strict=True,
    )
    sound = np.frombuffer(raw, dtype="<f4").reshape(-1, channels)  # (N, channels)
    if channels < profile.audio_channels:
        sound = np.repeat(sound, profile.audio_channels, axis=1)  # (N, C): the same signal in both ears
    return sound


def _fit_samples(sound: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``sound[start:stop]`` where indices outside the signal read as silence (start may be negative)."""
    n, channels = sound.shape
    out = np.zeros((stop - start, channels), dtype=np.float32)  # (stop - start, C)
    lo, hi = max(start, 0), min(stop, n)
    if hi > lo:
        out[lo - start: hi - start] = sound[lo:hi]
    return out


def _write_float_wav(path: str, sound: np.ndarray, sample_rate: int) -> None:
    import soundfile

    soundfile.write(path, sound, sample_rate, subtype="FLOAT")


def _display_size(stream: dict) -> tuple[float, float]:
    """Width and height as the viewer sees them: sample aspect ratio applied, rotation honoured."""
    width, height = float(stream["width"]), float(stream["height"])
    num, _, den = (stream.get("sample_aspect_ratio") or "1:1").partition(":")
    if num.isdigit() and den.isdigit() and int(num) > 0 and int(den) > 0:
        width *= int(num) / int(den)
    rotation = next((s.get("rotation") for s in stream.get("side_data_list") or [] if "rotation" in s), 0)
    if round(float(rotation)) % 180 == 90:  # ffmpeg auto-rotates on decode
        width, height = height, width
    return width, height


def _video_filter(stream: dict, profile: DeliveryProfile) -> str:
    """fps → fit inside the frame (even size) → BT.709 limited-range yuv420p → square pixels → centred pad."""
    width, height = _display_size(stream)
    scale = min(profile.width / width, profile.height / height)
    scaled_w = min(profile.width, max(2, 2 * round(width * scale / 2)))
    scaled_h = min(profile.height, max(2, 2 * round(height * scale / 2)))
    return ",".join([
        "setpts=PTS-STARTPTS",  # the first frame is time zero; the audio is aligned to it separately
        f"fps={_rate(profile.fps)}",
        f"scale={scaled_w}:{scaled_h}:flags=lanczos+accurate_rnd+full_chroma_int"
        ":out_color_matrix=bt709:out_range=tv",
        "format=yuv420p",
        "setsar=1",
        f"pad={profile.width}:{profile.height}:{(profile.width - scaled_w) // 2}:{(profile.height - scaled_h) // 2}"
        ":color=black",
    ])


_NO_METADATA = ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact"]


def _encode_video(src: Path, stream: dict, out: str, profile: DeliveryProfile) -> None:
    _run(
        [FFMPEG, "-nostdin", "-v", "error", "-xerror", "-i", str(src), "-map", "0:v:0", "-an", "-sn", "-dn",
         "-vf", _video_filter(stream, profile),
         "-c:v", "libx264", "-preset", profile.preset, "-crf", str(profile.crf), "-pix_fmt", "yuv420p",
         "-threads", "1",
         # Tagged, so players convert with the matrix we encoded with (untagged means "guess").
         "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
         "-bsf:v", f"filter_units=remove_types={_SEI_NAL_TYPE}",
         *_NO_METADATA, "-flags:v", "+bitexact", out],
        what=f"cannot decode or encode the video of {src.name}",
        strict=True,
    )


def _mux(video_path: str, wav_path: str, out: str, loudness: dict, n_samples: int, profile: DeliveryProfile,
         *, what: str) -> None:
    """Video copied; audio brought to the target loudness, cut to exactly ``n_samples``, encoded AAC.

    Loudness, second pass: one static gain, target minus the measured integrated loudness, so the
    speech keeps its dynamics. Where that gain would lift the true peak over the ceiling, a
    look-ahead limiter at 192 kHz (4× oversampled, where sample peaks approximate true peaks)
    shaves only the peaks; it compensates its look-ahead delay, so lip sync is kept.

    Why not loudnorm's second pass: its ``linear=true`` refuses to be linear whenever the loudness
    range measures 0 (any clip under 3 s, or steady sound), and its dynamic mode missed the target
    by 8 to 14 LU on short test clips. ``normalize`` checks the loudness reached either way.

    The video is stream-copied, which also leaves the encoder's name out of the sample description
    (the ``encoder`` tag of an encoded stream ends up in the mp4 compressor name).
    """
    gain_db = profile.loudness_lufs - loudness["integrated_lufs"]
    audio_filter = [f"volume={gain_db:.4f}dB"]
    if loudness["true_peak_db"] + gain_db > profile.true_peak_db:
        # 0.5 dB under the ceiling: resampling back and AAC coding add a little overshoot.
        ceiling = 10.0 ** ((profile.true_peak_db - 0.5) / 20.0)
        audio_filter = ["aresample=192000", *audio_filter,
                        f"alimiter=limit={ceiling:.6f}:attack=5:release=50:level=false:latency=true",
                        f"aresample={profile.audio_sample_rate}"]
    audio_filter += [f"apad=whole_len={n_samples}", f"atrim=end_sample={n_samples}"]
    _run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", video_path, "-i", wav_path, "-map", "0:v:0", "-map", "1:a:0",
         "-c:v", "copy", "-af", ",".join(audio_filter), "-c:a", "aac", "-b:a", profile.audio_bitrate,
         "-ar", str(profile.audio_sample_rate), "-ac", str(profile.audio_channels),
         *_NO_METADATA, "-flags:a", "+bitexact", "-movflags", "+faststart", out],
        what=what,
    )


# --- size rounding of delivery files -------------------------------------------------------------


def top_level_boxes(path: str | os.PathLike) -> list[tuple[bytes, int, int]]:
    """The top-level boxes of an ISO-BMFF (MP4) file as ``(type, offset, size)``, in file order.

    Raises ``MediaError`` unless the boxes tile the file exactly (ISO/IEC 14496-12 §4.2: a 32-bit
    size, or 1 and a 64-bit size after the type; 0, "up to the end of the file", is refused because
    nothing could be appended after such a box).
    """
    path = Path(path)
    total = path.stat().st_size
    boxes, offset = [], 0
    with open(path, "rb") as fh:
        while offset < total:
            fh.seek(offset)
            header = fh.read(_BOX_HEADER)
            if len(header) < _BOX_HEADER:
                raise MediaError(f"{path.name}: not an MP4 file (a truncated box header at byte {offset})")
            size, kind = int.from_bytes(header[:4], "big"), header[4:]
            if size == 1:
                size = int.from_bytes(fh.read(8), "big")
            elif size == 0:
                raise MediaError(f"{path.name}: the {kind!r} box runs to the end of the file; it cannot be padded")
            if size < _BOX_HEADER or offset + size > total:
                raise MediaError(f"{path.name}: not an MP4 file (box {kind!r} at byte {offset} has size {size})")
            boxes.append((kind, offset, size))
            offset += size
    return boxes


def pad_to_block(path: str | os.PathLike, block: int = DELIVERY_SIZE_BLOCK) -> int:
    """Round an MP4 file's size up to a multiple of ``block`` bytes with a trailing top-level ``free`` box.

    Every MP4 reader skips ``free`` boxes, so the padded file decodes to the same frames and samples
    and keeps its ``moov``-first layout. A file whose size is already a multiple of ``block`` is left
    untouched (so padding twice changes nothing); otherwise trailing ``free``/``skip`` boxes (an earlier
    padding to another block) are replaced by one that reaches the next multiple at least a box
    header away. The new file is written beside the old one and renamed over it, so a reader never
    sees a half-padded file.

    Parameters
    ----------
    path : the MP4 file, padded in place
    block : the size quantum in bytes (at least 64)

    Returns
    -------
    int
        The file's size afterwards.

    Raises
    ------
    MediaError
        The file is not a well-formed ISO-BMFF file.
    """
    block = _number("block", block, int, 64, 2**30)
    path = Path(path)
    size = path.stat().st_size
    if size % block == 0:
        return size
    boxes = top_level_boxes(path)
    content_end = size
    for kind, offset, _ in reversed(boxes):
        if kind not in _FREE_BOX_TYPES:
            break
        content_end = offset
    if content_end == 0:
        raise MediaError(f"{path.name}: not an MP4 file (nothing but free boxes)")
    target = content_end if content_end % block == 0 else -(-(content_end + _BOX_HEADER) // block) * block
    filler = target - content_end
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pad-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            remaining = content_end
            while remaining > 0:
                chunk = src.read(min(1 << 20, remaining))
                if not chunk:
                    raise MediaError(f"{path.name}: the file shrank while it was being padded")
                out.write(chunk)
                remaining -= len(chunk)
            if filler:
                out.write(filler.to_bytes(4, "big") + b"free" + bytes(filler - _BOX_HEADER))
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def compress_roundtrip(frames: np.ndarray, fps: float, crf: int, preset: str = "medium") -> np.ndarray:
    """Frames after an H.264 encode and decode at ``crf``: the compression-artifact degradation.

    Parameters
    ----------
    frames : (T, H, W, 3) uint8 RGB
    fps : frame rate (x264's rate control depends on it)
    crf : 0 (visually lossless) … 51 (worst)
    preset : an x264 preset

    Returns
    -------
    (T, H, W, 3) uint8 RGB. Odd sizes are edge-padded for yuv420p and cropped back.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected frames (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    crf = _number("crf", crf, int, 0, 51)
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {preset!r}")
    n, h, w, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # (T, H', W', 3), even
    with tempfile.TemporaryDirectory(prefix="syncmos-crf-") as tmp:
        path = os.path.join(tmp, "roundtrip.mp4")
        write_video(path, padded, fps, video_args=["-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                                                    "-pix_fmt", "yuv420p", "-threads", "1"])
        decoded, _ = read_video(path)  # (T, H', W', 3)
    if len(decoded) != n:
        raise MediaError(f"H.264 round trip returned {len(decoded)} frames for {n}")
    return decoded[:, :h, :w]
