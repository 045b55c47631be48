"""Control conditions: parameters checked, and each manipulation measured on its output."""

import numpy as np
import pytest
from scipy import ndimage, signal

from generation import controls, media
from generation.controls import ControlError, Stimulus

SR = 16000
FPS = 25.0


def noise_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-modulated noise: speech-like bursts whose autocorrelation has one sharp peak."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.random.default_rng(seed).standard_normal(len(t)) * (0.2 + np.clip(np.sin(2 * np.pi * 3.7 * t), 0, None))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def texture(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, height, width, 3) uint8 with detail at every scale (noise, lightly smoothed)."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.uniform(0, 255, (height, width + n, 3)), (1, 1, 0))
    base = (base - base.min()) / np.ptp(base) * 220 + 16
    return np.stack([base[:, i: i + width] for i in range(n)]).astype(np.uint8)


def talking_face(n_frames: int = 16, size: int = 144, phase: float = 0.0) -> tuple[np.ndarray, list]:
    """The astronaut's face (skimage.data) with the jaw opening and closing and the head drifting.

    The lower lip and chin are pulled down by up to 5 px (a vertical warp below the lip line,
    period 8 frames, closed where (t + phase) is a multiple of 8); the whole face moves by whole
    pixels, up to 3 px, so that the true head motion of each frame is known. Returns frames
    (T, size, size, 3) uint8 and the per-frame (dx, dy) shift of the content.
    """
    from skimage import data, transform

    canvas = transform.resize(data.astronaut()[10:250, 100:340], (192, 192), anti_aliasing=True) * 255
    rows, cols = np.mgrid[0:192, 0:192].astype(np.float64)
    # Face landmarks on this canvas: lip line y ≈ 109, mouth x 80–116, chin y ≈ 135.
    below_lips = np.clip((rows - 109) / 4, 0, 1) * np.clip((150 - rows) / 15, 0, 1)
    across_mouth = np.where(np.abs(cols - 98) < 28, 0.5 * (1 + np.cos(np.pi * (cols - 98) / 28)), 0.0)
    frames, shifts = [], []
    for t in range(n_frames):
        opening = 5.0 * 0.5 * (1 - np.cos(2 * np.pi * (t + phase) / 8))
        src_rows = rows - opening * below_lips * across_mouth
        warped = np.stack([ndimage.map_coordinates(canvas[..., c], [src_rows, cols], order=1) for c in range(3)],
                          axis=-1)  # (192, 192, 3)
        dx, dy = int(round(3 * np.sin(2 * np.pi * t / n_frames))), int(round(2 * np.sin(2 * np.pi * t / 11)))
        frames.append(warped[24 - dy: 24 - dy + size, 24 - dx: 24 - dx + size])  # content moves by (dx, dy)
        shifts.append((dx, dy))
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), shifts


def mouth_crops(frames: np.ndarray, shifts: list) -> np.ndarray:
    """(T, 28, 40, 3) float: the mouth and chin in head coordinates (canvas y 100–128, x 78–118)."""
    return np.stack([f[100 - 24 + dy: 128 - 24 + dy, 78 - 24 + dx: 118 - 24 + dx] for f, (dx, dy) in
                     zip(frames, shifts)]).astype(float)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.fixture
def stimulus():
    return Stimulus(frames=texture(20, 48, 64), fps=FPS, audio=noise_speech(20 / FPS), sample_rate=SR)


@pytest.fixture(scope="module")
def face():
    frames, shifts = talking_face(phase=4.0)  # frame 0 wide open, frame 4 closed
    return Stimulus(frames=frames, fps=FPS, audio=noise_speech(len(frames) / FPS), sample_rate=SR), shifts


# --- parameters ----------------------------------------------------------------------------------


def test_it_fills_defaults_and_normalizes_types():
    assert controls.validate_params("frozen_mouth", {}) == {"reference": "closed"}
    assert controls.validate_params("compression", {"crf": 40}) == {"crf": 40, "preset": "medium"}
    assert controls.validate_params("audio_shift", {"frames": 3.0}) == {"frames": 3}
    assert controls.validate_params("blur", {"sigma": 2}) == {"sigma": 2.0}
    assert controls.validate_params("mismatched_audio", None) == {}


@pytest.mark.parametrize(("control", "params", "message"), [
    ("warp_drive", {}, "unknown control 'warp_drive'"),
    ("audio_shift", {}, "needs 'frames'"),
    ("audio_shift", {"frames": 0}, "must not be 0"),
    ("audio_shift", {"frames": 26}, r"in \[-25, 25\]"),
    ("audio_shift", {"frames": 2.5}, "whole number"),
    ("audio_shift", {"frames": True}, "must be a number"),
    ("audio_shift", {"frames": "3"}, "must be a number"),
    ("audio_shift", {"frames": 3, "ms": 120}, "unknown parameter"),
    ("audio_shift", [("frames", 3)], "JSON object"),
    ("blur", {"sigma": 0}, r"in \(0, 20\]"),
    ("blur", {"sigma": 20.5}, r"in \(0, 20\]"),
    ("compression", {"crf": 29}, r"in \[30, 51\]"),
    ("compression", {"crf": 40, "preset": "turbo"}, "must be one of"),
    ("frozen_mouth", {"reference": "open"}, "must be one of"),
    ("mismatched_audio", {"frames": 1}, "unknown parameter"),
])
def test_it_refuses_bad_parameters(control, params, message):
    with pytest.raises(ControlError, match=message):
        controls.validate_params(control, params)


def test_it_describes_conditions_for_researchers():
    assert controls.describe("audio_shift", {"frames": 3}) == "audio +3 frames (120 ms late)"
    assert controls.describe("audio_shift", {"frames": -3}) == "audio -3 frames (120 ms early)"
    assert controls.describe("audio_shift", {"frames": 1}) == "audio +1 frame (40 ms late)"
    assert controls.describe("audio_shift", {"frames": 3}, fps=30) == "audio +3 frames (100 ms late)"
    assert controls.describe("mismatched_audio", {}) == "mismatched audio (another sentence)"
    assert controls.describe("frozen_mouth", {}) == "frozen mouth (closed-lip frame)"
    assert controls.describe("frozen_mouth", {"reference": "first"}) == "frozen mouth (first frame)"
    assert controls.describe("blur", {"sigma": 1.5}) == "blur sigma 1.5 px"
    assert controls.describe("compression", {"crf": 38}) == "H.264 compression CRF 38"
    assert controls.describe("compression", {"crf": 38, "preset": "fast"}) == "H.264 compression CRF 38, preset fast"
    with pytest.raises(ControlError):
        controls.describe("audio_shift", {"frames": 0})


def test_it_offers_a_standard_ladder_that_validates():
    ladder = controls.standard_conditions()
    names = [c["name"] for c in ladder]
    assert len(names) == len(set(names))
    assert ladder[0] == {"name": "hidden reference", "kind": "reference", "control": "", "params": {},
                         "description": ladder[0]["description"]}
    for condition in ladder[1:]:
        assert condition["kind"] == "control"
        assert controls.validate_params(condition["control"], condition["params"]) == condition["params"]
        assert condition["name"] == controls.describe(condition["control"], condition["params"])
    assert all(c["description"] for c in ladder)
    kinds = [(c["control"], tuple(sorted(c["params"].items()))) for c in ladder[1:]]
    assert {frames for control, p in kinds if control == "audio_shift" for _, frames in p} >= {-3, 3, 8}
    counts = {control: sum(1 for c, _ in kinds if c == control) for control in controls.CONTROLS}
    assert counts["mismatched_audio"] >= 1 and counts["frozen_mouth"] >= 1
    assert counts["blur"] >= 2 and counts["compression"] >= 2


def test_it_refuses_malformed_stimuli():
    with pytest.raises(ValueError, match="uint8"):
        Stimulus(frames=np.zeros((2, 8, 8, 3), np.float32), fps=FPS, audio=np.zeros(10, np.float32), sample_rate=SR)
    with pytest.raises(ValueError, match="float32"):
        Stimulus(frames=np.zeros((2, 8, 8, 3), np.uint8), fps=FPS, audio=np.zeros((10, 2), np.float32),
                 sample_rate=SR)


# --- audio controls ------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [-3, 3, 8])
def test_it_shifts_the_audio_by_exactly_k_frames(stimulus, frames):
    before = stimulus.audio.copy()
    shifted = controls.apply_control("audio_shift", {"frames": frames}, stimulus)
    assert len(shifted.audio) == len(stimulus.audio)
    # Lag of the output against the input: positive = the output is late.
    xcorr = signal.correlate(shifted.audio, stimulus.audio, mode="full", method="fft")
    lag = int(np.argmax(xcorr)) - (len(stimulus.audio) - 1)
    assert lag == frames * SR // 25  # 640 samples per frame at 16 kHz and 25 fps
    gap = slice(0, lag) if lag > 0 else slice(lag, None)
    assert not shifted.audio[gap].any()  # the opened gap is silence
    assert np.array_equal(shifted.frames, stimulus.frames)
    assert np.array_equal(stimulus.audio, before)  # the input is untouched


def test_it_rounds_shifts_that_are_not_whole_samples():
    stim = Stimulus(frames=texture(30, 8, 8), fps=30.0, audio=noise_speech(1.0), sample_rate=SR)
    shifted = controls.apply_control("audio_shift", {"frames": -1}, stim)  # 533.3 samples
    assert np.array_equal(shifted.audio[:-533], stim.audio[533:])


def test_it_refuses_a_shift_longer_than_the_clip():
    stim = Stimulus(frames=texture(4, 8, 8), fps=FPS, audio=noise_speech(4 / FPS), sample_rate=SR)
    with pytest.raises(ControlError, match="longer than the clip"):
        controls.apply_control("audio_shift", {"frames": 5}, stim)


def test_it_swaps_in_other_audio_fitted_to_the_video(stimulus):
    n = 20 * SR // 25
    longer = noise_speech(2.0, seed=1)
    out = controls.apply_control("mismatched_audio", {}, stimulus, other_audio=longer)
    assert np.array_equal(out.audio, longer[:n])  # trimmed
    shorter = noise_speech(0.5, seed=2)
    out = controls.apply_control("mismatched_audio", {}, stimulus, other_audio=shorter)
    assert len(out.audio) == n
    assert np.array_equal(out.audio[: len(shorter)], shorter) and not out.audio[len(shorter):].any()  # padded
    assert np.array_equal(out.frames, stimulus.frames)


def test_it_refuses_missing_silent_or_identical_other_audio(stimulus):
    with pytest.raises(ControlError, match="needs other_audio"):
        controls.apply_control("mismatched_audio", {}, stimulus)
    with pytest.raises(ControlError, match="audio is silent"):
        controls.apply_control("mismatched_audio", {}, stimulus, other_audio=np.zeros(SR, np.float32))
    with pytest.raises(ControlError, match="own audio"):
        controls.apply_control("mismatched_audio", {}, stimulus, other_audio=stimulus.audio.copy())


# --- visual controls -----------------------------------------------------------------------------


def high_frequency_energy(frames: np.ndarray) -> float:
    """Mean squared Laplacian over the picture: the energy of fine detail."""
    return float(np.mean(ndimage.laplace(frames.astype(float), mode="reflect") ** 2))


def test_it_blurs_more_with_a_larger_sigma(stimulus):
    energies = [high_frequency_energy(stimulus.frames)]
    for sigma in (0.5, 1.0, 2.0, 4.0):
        out = controls.apply_control("blur", {"sigma": sigma}, stimulus)
        assert out.frames.dtype == np.uint8 and out.frames.shape == stimulus.frames.shape
        assert np.array_equal(out.audio, stimulus.audio)
        energies.append(high_frequency_energy(out.frames))
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.05 * energies[0]


def test_it_compresses_along_a_monotonic_psnr_ladder(stimulus):
    ladder = []
    for crf in (30, 38, 46, 51):
        out = controls.apply_control("compression", {"crf": crf}, stimulus)
        assert out.frames.shape == stimulus.frames.shape
        assert np.array_equal(out.audio, stimulus.audio)
        ladder.append(psnr(stimulus.frames, out.frames))
    assert all(a > b for a, b in zip(ladder, ladder[1:])), ladder


def test_it_freezes_the_mouth_on_the_closed_lip_frame(face):
    stim, shifts = face
    out = controls.apply_control("frozen_mouth", {}, stim)
    before, after = mouth_crops(stim.frames, shifts), mouth_crops(out.frames, shifts)
    # The mouth stops moving: its temporal variance (in head coordinates) collapses...
    assert after.var(axis=0).mean() < 0.25 * before.var(axis=0).mean()
    # ...onto the closed mouth of frame 4, not the open one of frame 0.
    assert np.abs(after - before[4]).mean() < 4.0
    assert np.abs(after - before[0]).mean() > 3 * np.abs(after - before[4]).mean()
    # Away from the lower face the frames are bit-identical (eyes at y ≥ 44 in every frame).
    assert np.array_equal(out.frames[:, :40], stim.frames[:, :40])
    assert np.array_equal(out.frames[:, :, :15], stim.frames[:, :, :15])
    assert np.array_equal(out.audio, stim.audio)


def test_it_can_freeze_the_mouth_on_the_first_frame(face):
    stim, shifts = face
    out = controls.apply_control("frozen_mouth", {"reference": "first"}, stim)
    before, after = mouth_crops(stim.frames, shifts), mouth_crops(out.frames, shifts)
    assert np.abs(after - before[0]).mean() < 4.0  # open, as in frame 0


def test_it_feathers_the_mouth_mask_so_there_is_no_seam():
    hard = np.zeros((80, 80), bool)
    hard[20:60, 20:60] = True
    soft = controls._feathered(hard, sigma=2.0)
    assert (soft[hard] == 1).all()  # the region itself is replaced completely
    steps = max(np.abs(np.diff(soft, axis=0)).max(), np.abs(np.diff(soft, axis=1)).max())
    assert steps < 0.3  # a hard paste would step by 1
    assert 0.9 < soft[40, 60] < 1 and 0 < soft[40, 66] < soft[40, 63] < soft[40, 60]  # a gradual shoulder
    assert (soft[:, :10] == 0).all() and (soft[:10] == 0).all()  # and ~5σ out, exactly nothing


def test_it_blends_the_frozen_mouth_gradually(face):
    stim, _ = face
    out = controls.apply_control("frozen_mouth", {}, stim).frames.astype(float)
    change = np.abs(out - stim.frames).max(axis=-1)  # (T, H, W)
    # Rows below the eyes through the chin: the change fades out towards the cheeks instead of
    # stopping at a hard edge, so some pixels are changed only partly (by a few levels).
    assert ((change > 0) & (change < 4)).sum() > 0.1 * (change > 0).sum()


def test_it_needs_a_face_to_freeze(stimulus):
    with pytest.raises(ControlError, match="no face"):
        controls.apply_control("frozen_mouth", {}, stimulus)


def test_it_returns_the_hidden_reference_as_an_identical_copy(stimulus):
    reference = controls.hidden_reference(stimulus)
    assert np.array_equal(reference.frames, stimulus.frames) and np.array_equal(reference.audio, stimulus.audio)
    assert (reference.fps, reference.sample_rate) == (stimulus.fps, stimulus.sample_rate)
    reference.frames[0] = 0
    assert stimulus.frames[0].any()  # a copy, not a view


def test_it_renders_every_standard_condition(stimulus):
    other = noise_speech(1.0, seed=5)
    for condition in controls.standard_conditions()[1:]:
        if condition["control"] == "frozen_mouth":
            continue  # needs a face; covered above
        out = controls.apply_control(condition["control"], condition["params"], stimulus, other_audio=other)
        assert out.frames.shape == stimulus.frames.shape and len(out.audio) == len(stimulus.audio)
        media.check_audible(out.audio, SR)
