"""Wav2Lip's mel features and frame <-> mel alignment (generation/audio.py).

The reference values come from independent re-implementations written here from the facts in
metrics_models.md §2.5–2.7 (Rudrabha/Wav2Lip audio.py, hparams.py and the inference.py chunk loop).
"""

import shutil

import librosa
import numpy as np
import pytest
import soundfile

from generation.audio import (
    AudioError,
    MelConfig,
    load_wav,
    mel_chunks,
    mel_window_start,
    melspectrogram,
)


def speech_like(seconds: float = 1.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, amplitude-modulated test signal with some noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    wav = 0.2 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    return (wav / np.abs(wav).max() * 0.8).astype(np.float32)


def reference_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """Straightforward numpy version of audio.melspectrogram with hparams.py values: pre-emphasis 0.97,
    n_fft/2 padding on both sides, periodic Hann frames of 800 every 200 samples, |rfft|, Slaney mel
    (80 bands, 55-7600 Hz), 20·log10(max(1e-5, ·)) - 20, clip(8·(S + 100)/100 - 4, -4, 4)."""
    x = wav.astype(np.float64)
    emphasized = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(emphasized, 400, mode=pad_mode)
    n_frames = 1 + (padded.size - 800) // 200
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)
    frames = np.stack([padded[i * 200: i * 200 + 800] * window for i in range(n_frames)], axis=1)  # (800, T)
    magnitude = np.abs(np.fft.rfft(frames, axis=0))  # (401, T)
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ magnitude  # (80, T)
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def inference_py_chunks(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """The chunk loop of Wav2Lip inference.py, as written there."""
    mel_step_size = 16
    chunks = []
    mel_idx_multiplier = 80.0 / fps
    i = 0
    while 1:
        start_idx = int(i * mel_idx_multiplier)
        if start_idx + mel_step_size > len(mel[0]):
            chunks.append(mel[:, len(mel[0]) - mel_step_size:])
            break
        chunks.append(mel[:, start_idx: start_idx + mel_step_size])
        i += 1
    return chunks


# --- the mel spectrogram ---------------------------------------------------------------------------------------


def test_it_gives_80_mel_frames_per_second_plus_one():
    mel = melspectrogram(speech_like(1.0))
    assert mel.shape == (80, 81)  # 1 + 16000 // 200
    assert mel.dtype == np.float32
    assert mel.min() >= -4.0 and mel.max() <= 4.0
    assert melspectrogram(np.zeros(16123, dtype=np.float32)).shape == (80, 1 + 16123 // 200)


def test_it_matches_a_straightforward_numpy_implementation():
    for seconds, seed in ((1.0, 0), (2.37, 1)):
        wav = speech_like(seconds, seed=seed)
        ours = melspectrogram(wav)
        reference = reference_mel(wav)
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
        assert reference.std() > 0.5  # a real spectrogram, not a clipped constant


def test_it_pads_by_reflection_as_librosa_0_7_did_not_with_zeros_as_current_librosa_does():
    """librosa >= 0.9 pads the STFT with zeros by default; the official features (librosa 0.7) used reflection.
    Only the first and last frames, whose windows reach into the padding, can differ."""
    wav = speech_like(1.0)
    ours = melspectrogram(wav)
    zero_padded = reference_mel(wav, pad_mode="constant")
    edge_difference = np.abs(ours[:, [0, 1, -2, -1]] - zero_padded[:, [0, 1, -2, -1]]).max(axis=0)
    assert (edge_difference > 1e-2).all()
    np.testing.assert_allclose(ours[:, 2:-2], zero_padded[:, 2:-2], atol=1e-5, rtol=0)

    # A naive port that keeps the official stft call but runs it on current librosa gets the zero padding:
    emphasized = np.concatenate([wav[:1], wav[1:] - 0.97 * wav[:-1]]).astype(np.float64)
    default_stft = np.abs(librosa.stft(y=emphasized, n_fft=800, hop_length=200, win_length=800))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ default_stft
    naive = np.clip(8 * (20 * np.log10(np.maximum(1e-5, mel)) - 20 + 100) / 100 - 4, -4, 4)
    np.testing.assert_allclose(naive, zero_padded, atol=1e-5, rtol=0)


def test_it_maps_silence_to_the_floor_without_nan():
    mel = melspectrogram(np.zeros(8000, dtype=np.float32))
    assert (mel == -4.0).all()


def test_it_rejects_audio_it_cannot_use():
    wav = speech_like(1.0)
    with pytest.raises(AudioError, match="empty"):
        melspectrogram(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="mono"):
        melspectrogram(np.stack([wav, wav]))  # (2, N)
    with pytest.raises(AudioError, match="mono"):
        melspectrogram(np.stack([wav, wav], axis=1))  # (N, 2)
    with pytest.raises(AudioError, match="float"):
        melspectrogram((wav * 32767).astype(np.int16))
    broken = wav.copy()
    broken[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        melspectrogram(broken)
    assert issubclass(AudioError, ValueError)


def test_it_needs_at_least_one_16_frame_mel_window_of_audio():
    """16 mel frames need 1 + N // 200 >= 16, i.e. N >= 3000 samples (0.1875 s at 16 kHz)."""
    with pytest.raises(AudioError, match="too short"):
        melspectrogram(speech_like(1.0)[:2999])
    assert melspectrogram(speech_like(1.0)[:3000]).shape == (80, 16)


def test_it_rejects_a_mel_config_above_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        MelConfig(sample_rate=8000)


# --- frame <-> mel alignment -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [25, 29.97, 30000 / 1001, 30, 50, 24])
def test_it_chunks_the_mel_exactly_like_inference_py(fps):
    for n_frames in (16, 17, 81, 200, 803):
        mel = np.arange(80 * n_frames, dtype=np.float32).reshape(80, n_frames)
        expected = inference_py_chunks(mel, fps)
        chunks = mel_chunks(mel, fps)
        assert chunks.shape == (len(expected), 80, 16)
        for ours, theirs in zip(chunks, expected):
            np.testing.assert_array_equal(ours, theirs)


def test_it_starts_chunk_i_at_int_3_2_i_at_25_fps():
    n_frames = 401  # 5 s of audio
    mel = np.tile(np.arange(n_frames, dtype=np.float32), (80, 1))  # each column holds its own index
    chunks = mel_chunks(mel, 25)
    starts = chunks[:, 0, 0].astype(int)
    assert list(starts[:-1]) == [int(3.2 * i) for i in range(len(chunks) - 1)]
    assert list(starts[:6]) == [0, 3, 6, 9, 12, 16]
    assert starts[-1] == n_frames - 16  # the tail chunk: the last 16 columns
    assert [mel_window_start(i, 25) for i in range(6)] == [0, 3, 6, 9, 12, 16]
    assert mel_window_start(7, 30) == int(7 * (80 / 30)) == 18


def test_it_gives_one_chunk_per_covered_frame_plus_the_tail_chunk():
    """1 s of audio -> 81 mel frames; at 25 fps chunks start at int(3.2 i) while that + 16 <= 81, i.e. i <= 20,
    then one tail chunk: 22 chunks, so inference.py would use 22 of the 25 video frames."""
    mel = melspectrogram(speech_like(1.0))
    assert len(mel_chunks(mel, 25)) == 22


def test_it_rejects_a_mel_shorter_than_the_window():
    with pytest.raises(AudioError, match="too short"):
        mel_chunks(np.zeros((80, 15), dtype=np.float32), 25)
    with pytest.raises(AudioError, match="too short"):
        mel_chunks(np.zeros((80, 20), dtype=np.float32), 25, mel_frames=27)  # LipGAN's 80x27 window
    with pytest.raises(ValueError, match="fps"):
        mel_window_start(3, 0)


# --- loading ---------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_it_loads_any_rate_and_layout_as_mono_16_khz_float32(tmp_path):
    wav = speech_like(1.0, sample_rate=44100)
    path = tmp_path / "stereo_44k.wav"
    soundfile.write(str(path), np.stack([wav, 0.5 * wav], axis=1), 44100, subtype="PCM_16")
    loaded = load_wav(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(loaded.size - 16000) <= 2
    assert melspectrogram(loaded).shape == (80, 1 + loaded.size // 200)

    mono_16k = tmp_path / "mono_16k.wav"
    original = speech_like(0.5)
    soundfile.write(str(mono_16k), original, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_wav(mono_16k), original, atol=1e-6)  # no resampling: the same samples
