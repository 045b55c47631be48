"""ffmpeg I/O: probe, decode to numpy, encode from numpy. No Django here.

Every failure of ffmpeg/ffprobe on an input becomes a ``MediaError`` whose message says which file
and what went wrong, so a task can store it on the clip and move on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

FFMPEG = os.environ.get("SYNCMOS_FFMPEG", "ffmpeg")
FFPROBE = os.environ.get("SYNCMOS_FFPROBE", "ffprobe")


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

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def _run(cmd: list[str], *, what: str, input_bytes: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(cmd, input=input_bytes, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise MediaError(f"{cmd[0]} is not installed (apt-get install ffmpeg)") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise MediaError(f"{what}: {' | '.join(tail) or f'{cmd[0]} exited with {proc.returncode}'}")
    return proc.stdout


def probe(path: str | os.PathLike) -> MediaInfo:
    """Container and stream facts of a media file; raises MediaError if it cannot be parsed."""
    path = str(path)
    if not os.path.exists(path):
        raise MediaError(f"{path}: file does not exist")
    out = _run(
        [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "-count_packets", path],
        what=f"cannot read {os.path.basename(path)}",
    )
    data = json.loads(out or b"{}")
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    if not fmt or not streams:
        raise MediaError(f"cannot read {os.path.basename(path)}: no media streams found")
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
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
        stream_tags=[dict(s.get("tags") or {}) for s in streams],
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
