"""SyncNet's MFCC front end (generation/metrics/mfcc.py) against python_speech_features 0.6 itself."""

import numpy as np
import pytest

from generation.metrics import mfcc as mfcc_module
from generation.metrics.mfcc import frame_count, mel_filterbank, mfcc

psf = pytest.importorskip("python_speech_features")


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced bursts (a 120-180 Hz harmonic series with formant-like weights) and fricative noise, with pauses,
    on the int16 scale syncnet_python passes (raw samples from scipy.io.wavfile)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voiced = sum(np.sin(k * phase) / k * (1 + 2 * np.exp(-((k * 150 - 700) / 300) ** 2)) for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 2.3 * t), 0, None) ** 2  # syllables with silent gaps
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 0.9 * t) > 0.8)
    signal = 6000 * envelope * voiced + 1500 * noise
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def assert_same_as_reference(signal: np.ndarray) -> None:
    ours = mfcc(signal, 16000)
    reference = psf.mfcc(signal, 16000)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())


@pytest.mark.parametrize("seed", [0, 1])
def test_speech_like_int16_signals_match_python_speech_features(seed):
    assert_same_as_reference(speech_like(2.0, seed))


def test_full_scale_and_clipped_signals_match():
    signal = np.full(8000, 32767, dtype=np.int16)
    signal[::7] = -32768
    assert_same_as_reference(signal)


def test_silence_matches_the_reference_log_eps_floor():
    silence = np.zeros(16000, dtype=np.int16)
    assert_same_as_reference(silence)
    ours = mfcc(silence)
    assert np.allclose(ours[:, 0], np.log(np.finfo(float).eps))  # c0 = log(energy), energy floored at eps
    assert np.all(np.isfinite(ours))


@pytest.mark.parametrize("n", [1, 2, 160, 399, 400, 401, 559, 560, 561, 641, 16000 + 17])
def test_short_and_odd_lengths_match_frames_and_values(n):
    signal = speech_like(1.1, 3)[:n]
    assert_same_as_reference(signal)
    assert len(mfcc(signal)) == frame_count(n) == len(psf.mfcc(signal, 16000))


def test_frame_count_is_one_plus_ceil_of_the_remaining_samples_over_the_step():
    assert frame_count(1) == frame_count(400) == 1
    assert frame_count(401) == frame_count(560) == 2
    assert frame_count(561) == 3
    assert frame_count(16000) == 1 + int(np.ceil((16000 - 400) / 160)) == 99


def test_float_input_on_any_scale_matches_too():
    signal = speech_like(0.5, 4).astype(np.float32) / 32768.0
    assert_same_as_reference(signal)


def test_the_filterbank_is_the_reference_filterbank():
    np.testing.assert_array_equal(mel_filterbank(26, 512, 16000), psf.get_filterbanks(26, 512, 16000))
    np.testing.assert_array_equal(mel_filterbank(40, 1024, 16000), psf.get_filterbanks(40, 1024, 16000))


def test_empty_or_multichannel_signals_are_refused():
    with pytest.raises(ValueError, match="empty"):
        mfcc(np.zeros(0, dtype=np.int16))
    with pytest.raises(ValueError, match="mono"):
        mfcc(np.zeros((100, 2), dtype=np.int16))


def test_defaults_are_the_0_6_defaults():
    assert (mfcc_module.WINLEN, mfcc_module.WINSTEP, mfcc_module.NUMCEP, mfcc_module.NFILT, mfcc_module.NFFT,
            mfcc_module.PREEMPH, mfcc_module.CEPLIFTER) == (0.025, 0.01, 13, 26, 512, 0.97, 22)
