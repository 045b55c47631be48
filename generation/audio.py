"""Wav2Lip's audio front end: the log-mel spectrogram and its alignment with video frames.

Reproduces Rudrabha/Wav2Lip (master, 5c90fa9) ``audio.py`` with the ``hparams.py`` values, and the mel
chunking loop of ``inference.py``; the facts are in ``shared/research/metrics_models.md`` §2.5–2.8.

The mel spectrogram, step by step (``melspectrogram``)
1. pre-emphasis y[n] = x[n] - 0.97 x[n-1] (``scipy.signal.lfilter([1, -0.97], [1], x)``);
2. STFT, n_fft 800, hop 200, window 800 (periodic Hann), ``center=True`` with **reflect** padding; magnitude;
3. 80-band Slaney mel filterbank (area-normalised, htk=False), 55–7600 Hz, applied to the magnitude;
4. amp -> dB: 20·log10(max(1e-5, m)) - 20 (min_level_db -100, ref_level_db 20);
5. symmetric clipped normalisation: clip(8·(S + 100)/100 - 4, -4, 4).
Output: (80, 1 + N // 200) float32, 80 mel frames per second of 16 kHz audio.

Library-version notes (why this is not a line-for-line copy)
* The official code ran on librosa 0.7.0, whose ``stft`` padded the signal with ``pad_mode='reflect'``.
  librosa 0.9 changed the default to zero padding (``'constant'``); we pass ``pad_mode='reflect'`` explicitly, or
  the first and last ~2 mel frames would differ from the official features (a test shows that they do).
* librosa >= 0.10 accepts ``filters.mel`` arguments only by keyword; we pass them by keyword.
* librosa 0.9 also changed ``stft``'s default ``dtype`` from complex64 to "match the input"; we pass complex64.
* ``hparams.rescale`` / ``rescaling_max`` are defined in hparams.py but never applied by audio.py; not applied here.
* ``load_wav`` decodes and resamples with ffmpeg (``generation.media.read_audio``) instead of
  ``librosa.core.load`` (resampy 'kaiser_best' in librosa 0.7): the one deliberate difference; it only
  matters for audio that is not already mono 16 kHz, and then only by resampler rounding.

Numeric types follow the official run: pre-emphasis in float64 (``lfilter`` promotes), the STFT stored as
complex64 (librosa 0.7's default ``dtype``; current librosa would pick complex128 for float64 input), and the
mel, dB and normalisation steps in float32.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

MEL_FPS = 80.0  # mel frames per second at 16 kHz with hop 200 (hard-coded as 80. in inference.py)
MEL_WINDOW = 16  # mel frames per Wav2Lip window (mel_step_size), 0.2 s


class AudioError(ValueError):
    """Audio that Wav2Lip-style models cannot use: empty, not mono, too short, or giving a NaN mel."""


@dataclass(frozen=True)
class MelConfig:
    """hparams.py values used by audio.py (Wav2Lip master)."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop_size: int = 200  # 12.5 ms
    win_size: int = 800  # 50 ms
    num_mels: int = 80
    fmin: float = 55
    fmax: float = 7600
    preemphasis: float = 0.97
    min_level_db: float = -100
    ref_level_db: float = 20
    max_abs_value: float = 4.0

    def __post_init__(self) -> None:
        if self.fmax > self.sample_rate // 2:
            raise ValueError(f"fmax {self.fmax} is above the Nyquist frequency of {self.sample_rate} Hz")


DEFAULT_MEL_CONFIG = MelConfig()


@functools.lru_cache(maxsize=8)
def _mel_basis(config: MelConfig) -> np.ndarray:
    import librosa

    # (num_mels, 1 + n_fft // 2); Slaney scale and area normalisation are librosa's defaults (htk=False,
    # norm='slaney'), the same filters as librosa 0.7's norm=1.
    return librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.num_mels,
                               fmin=config.fmin, fmax=config.fmax)


def melspectrogram(wav: np.ndarray, config: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
    """Official Wav2Lip log-mel features of mono float audio at ``config.sample_rate``.

    wav: (N,) float in [-1, 1]. Returns (num_mels, 1 + N // hop_size) float32 in [-max_abs, max_abs].
    Raises :class:`AudioError` for non-mono, non-float or empty input, for audio shorter than one 16-frame mel
    window (N < 15 hops = 3000 samples ≈ 0.19 s at 16 kHz), and for NaN/inf samples or a mel containing NaN
    (the official inference.py's "Mel contains nan" error).
    """
    import librosa
    from scipy import signal

    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"expected mono audio of shape (N,), got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"expected float audio in [-1, 1], got dtype {wav.dtype}")
    if wav.size == 0:
        raise AudioError("the audio is empty")
    n_frames = 1 + wav.size // config.hop_size
    if n_frames < MEL_WINDOW:
        seconds = wav.size / config.sample_rate
        raise AudioError(f"the audio is too short ({seconds:.3f} s): it gives {n_frames} mel frames, fewer than one "
                         f"{MEL_WINDOW}-frame window (about {MEL_WINDOW / MEL_FPS:.1f} s)")

    if not np.isfinite(wav).all():
        # The official code only noticed this as NaN in the mel (inference.py, "Mel contains nan!");
        # current librosa refuses non-finite input outright, so check here and say what is wrong.
        raise AudioError(f"the audio contains {np.count_nonzero(~np.isfinite(wav))} NaN or infinite samples, "
                         "which would make the mel spectrogram NaN")

    emphasized = signal.lfilter([1.0, -config.preemphasis], [1.0], wav.astype(np.float64))  # (N,)
    # complex64 and pad_mode='reflect' were librosa 0.7's defaults, which the official call relied on.
    spectrum = librosa.stft(y=emphasized, n_fft=config.n_fft, hop_length=config.hop_size,
                            win_length=config.win_size, window="hann", center=True, dtype=np.complex64,
                            pad_mode="reflect")  # (1 + n_fft/2, n_frames) complex64
    mel = _mel_basis(config) @ np.abs(spectrum)  # (num_mels, n_frames) float32, as in the official code

    min_level = float(np.exp(config.min_level_db / 20 * np.log(10)))  # 1e-5; a Python float keeps float32
    db = 20 * np.log10(np.maximum(min_level, mel)) - config.ref_level_db
    top = config.max_abs_value
    normalized = np.clip(2 * top * ((db - config.min_level_db) / -config.min_level_db) - top, -top, top)
    if np.isnan(normalized).any():
        raise AudioError("the mel spectrogram contains NaN (is the audio finite? the official code suggests adding "
                         "a small noise to synthetic voices)")
    return normalized.astype(np.float32)


def mel_window_start(frame_index: int, fps: float, mel_fps: float = MEL_FPS) -> int:
    """First mel frame of video frame ``frame_index``'s window: int(frame_index · mel_fps / fps).

    Computed as inference.py does, ``int(i * (80. / fps))`` (the multiplier first), so that the truncation
    matches bit for bit. At 25 fps this is int(3.2 · i). The window starts at the frame's own timestamp and
    covers it and the next ~4 frames (training used a window one frame earlier; see metrics_models.md §2.7).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return int(frame_index * (mel_fps / fps))


def mel_chunks(mel: np.ndarray, fps: float, mel_frames: int = MEL_WINDOW) -> np.ndarray:
    """The per-video-frame mel windows of inference.py: (n_chunks, num_mels, mel_frames).

    Chunk i is ``mel[:, s : s + mel_frames]`` with s = :func:`mel_window_start` (i, fps), for as long as that
    fits; the first chunk that would run past the end is replaced by the last ``mel_frames`` columns and the
    loop stops. So there is one chunk per video frame that the audio covers, plus the tail chunk. The caller
    trims or cycles the video frames to the number of chunks (as inference.py does).
    """
    mel = np.asarray(mel)
    if mel.ndim != 2:
        raise AudioError(f"expected a (num_mels, T) mel spectrogram, got shape {mel.shape}")
    total = mel.shape[1]
    if total < mel_frames:
        raise AudioError(f"the audio is too short: {total} mel frames, fewer than one {mel_frames}-frame window")
    chunks = []
    i = 0
    while True:
        start = mel_window_start(i, fps)
        if start + mel_frames > total:
            chunks.append(mel[:, total - mel_frames:])
            break
        chunks.append(mel[:, start:start + mel_frames])
        i += 1
    return np.stack(chunks)  # (n_chunks, num_mels, mel_frames)


def load_wav(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode any audio (or video with audio) file to mono float32 at ``sample_rate``.

    Uses ffmpeg (``generation.media.read_audio``: downmix to mono, resample) where the official code used
    ``librosa.core.load`` (resampy); see the module docstring. Container errors surface as
    ``generation.media.MediaError``; an audio stream with no samples raises :class:`AudioError`.
    """
    from generation.media import read_audio

    wav = read_audio(path, sample_rate=sample_rate)
    if wav.size == 0:
        raise AudioError(f"{os.path.basename(str(path))}: the audio stream has no samples")
    return wav
