"""The MFCC front end of SyncNet / LSE: ``python_speech_features.mfcc(signal, 16000)`` (package 0.6), vectorised.

syncnet_python's ``SyncNetInstance.evaluate`` (and Wav2Lip's LSE copy of it) reads the clip's 16 kHz mono
16-bit WAV with ``scipy.io.wavfile.read`` and passes the **raw int16 samples** (not scaled to [-1, 1]) to
``python_speech_features.mfcc`` with all library defaults; the (T, 13) result, transposed, is cut into 13x20
windows. Facts: shared/research/metrics_models.md §1.4.

Faithful (checked against python_speech_features 0.6 in tests/generation/metrics/test_mfcc.py)
---------------------------------------------------------------------------------------------
* winlen 0.025 s (400 samples), winstep 0.01 s (160 samples), rounded half-up as the library does; frame count
  1 + ceil((N - 400) / 160) (1 for N <= 400), the last frame zero-padded; rectangular window.
* Pre-emphasis y[0] = x[0], y[n] = x[n] - 0.97 x[n-1] (in float64).
* Power spectrum |rfft(frame, 512)|^2 / 512; energy = its row sum; 26 triangular mel filters between 0 Hz and
  8 kHz on fft bins floor((nfft + 1) * mel2hz(points) / samplerate) (the library's bin rounding).
* Zero energies / filterbank energies are replaced by machine eps (float64) before the log, exactly as the
  library does (so silence gives log(eps) = -36.04, not -inf).
* DCT-II (orthonormal) of the log filterbank energies, first 13 kept, lifter 1 + 11 sin(pi n / 22), and c0
  replaced by log(frame energy) (appendEnergy).

Not from the reference: the framing is a strided view instead of an index-array gather, and the filterbank is
built with array operations and cached per configuration. Both give the same numbers (see the tests); the
speed-up is measured in benchmarks/bench_metrics_lse.py.
"""

from __future__ import annotations

import decimal
import functools

import numpy as np
from scipy.fftpack import dct

SAMPLE_RATE = 16000
WINLEN = 0.025
WINSTEP = 0.01
NUMCEP = 13
NFILT = 26
NFFT = 512
PREEMPH = 0.97
CEPLIFTER = 22


def _round_half_up(number: float) -> int:
    """python_speech_features.sigproc.round_half_up (decimal ROUND_HALF_UP)."""
    return int(decimal.Decimal(number).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def frame_count(n_samples: int, sample_rate: int = SAMPLE_RATE, winlen: float = WINLEN,
                winstep: float = WINSTEP) -> int:
    """Number of MFCC frames for ``n_samples`` samples: 1 + ceil((N - 400) / 160), at least 1."""
    frame_len = _round_half_up(winlen * sample_rate)
    frame_step = _round_half_up(winstep * sample_rate)
    if n_samples <= frame_len:
        return 1
    return 1 + -(-(n_samples - frame_len) // frame_step)


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=8)
def mel_filterbank(nfilt: int = NFILT, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE, lowfreq: float = 0.0,
                   highfreq: float | None = None) -> np.ndarray:
    """(nfilt, nfft // 2 + 1) float64 triangular filters, python_speech_features.get_filterbanks' values.

    Filter j rises over bins [b_j, b_{j+1}) as (i - b_j) / (b_{j+1} - b_j) and falls over [b_{j+1}, b_{j+2}) as
    (b_{j+2} - i) / (b_{j+2} - b_{j+1}); read-only (cached).
    """
    highfreq = highfreq or sample_rate / 2
    if highfreq > sample_rate / 2:
        raise ValueError(f"highfreq {highfreq} is above the Nyquist frequency {sample_rate / 2}")
    melpoints = np.linspace(_hz2mel(lowfreq), _hz2mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(melpoints) / sample_rate)  # (nfilt + 2,)
    left, centre, right = bins[:-2, None], bins[1:-1, None], bins[2:, None]  # (nfilt, 1) each
    i = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]  # (1, nfft/2 + 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # empty ramps (equal bins) select no bin anyway
        rising = np.where((i >= left) & (i < centre), (i - left) / (centre - left), 0.0)
        falling = np.where((i >= centre) & (i < right), (right - i) / (right - centre), 0.0)
    bank = rising + falling  # the two ramps never overlap
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=8)
def _lifter(numcep: int, ceplifter: int) -> np.ndarray:
    n = np.arange(numcep)
    return 1 + (ceplifter / 2.0) * np.sin(np.pi * n / ceplifter)


def mfcc(signal: np.ndarray, sample_rate: int = SAMPLE_RATE, *, winlen: float = WINLEN, winstep: float = WINSTEP,
         numcep: int = NUMCEP, nfilt: int = NFILT, nfft: int = NFFT, preemph: float = PREEMPH,
         ceplifter: int = CEPLIFTER, append_energy: bool = True) -> np.ndarray:
    """MFCCs of a mono signal, equal to ``python_speech_features.mfcc(signal, sample_rate)`` (0.6 defaults).

    Parameters
    ----------
    signal : (N,) array
        Samples on whatever scale the caller uses; syncnet_python passes raw int16 values (-32768 .. 32767).
    sample_rate : int
        16000 for SyncNet.

    Returns
    -------
    (T, numcep) float64 array, T = :func:`frame_count` (N); row t covers samples 160 t .. 160 t + 399.

    References
    ----------
    James Lyons, python_speech_features 0.6 (``base.mfcc``, ``base.fbank``, ``sigproc``); Chung & Zisserman 2016
    (SyncNet's 13 MFCCs at 100 Hz).
    """
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise ValueError(f"signal must be one-dimensional (mono), got shape {signal.shape}")
    if len(signal) == 0:
        raise ValueError("signal is empty: no MFCC frame can be computed")
    x = signal.astype(np.float64)
    emphasised = np.empty_like(x)  # (N,)
    emphasised[0] = x[0]
    emphasised[1:] = x[1:] - preemph * x[:-1]

    frame_len = _round_half_up(winlen * sample_rate)
    frame_step = _round_half_up(winstep * sample_rate)
    n_frames = frame_count(len(x), sample_rate, winlen, winstep)
    padded_len = (n_frames - 1) * frame_step + frame_len
    padded = np.zeros(max(padded_len, len(x)))
    padded[:len(x)] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded[:padded_len], frame_len)[::frame_step]  # (T, 400)

    power = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft  # (T, nfft/2 + 1)
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)  # (T,)
    energy = np.where(energy == 0, eps, energy)
    feat = power @ mel_filterbank(nfilt, nfft, sample_rate).T  # (T, nfilt)
    feat = np.where(feat == 0, eps, feat)
    cepstra = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]  # (T, numcep)
    if ceplifter > 0:
        cepstra = cepstra * _lifter(numcep, ceplifter)
    if append_energy:
        cepstra[:, 0] = np.log(energy)
    return cepstra
