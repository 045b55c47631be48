"""Inter-frame consistency (seed 002, eq. (G)): the literal equation, exactly; the normalised clip value the platform
reports; zero for clips that change like their ground truth, growing with temporal jitter."""

import math

import numpy as np
import pytest

from tests.generation.metrics.conftest import astronaut_clip
from generation.metrics import ifc, regions
from generation.metrics.base import ClipPair, MetricUnavailable

SILENCE = np.zeros(1600, dtype=np.float32)




@pytest.fixture(scope="module")
def face_clip() -> np.ndarray:
    """Eight 256 x 256 frames of a real face (skimage's astronaut) drifting 1 px per frame."""
    return astronaut_clip(8, step_px=1, x0=100)


@pytest.fixture(scope="module")
def face_boxes(face_clip) -> np.ndarray:
    return regions.detect_face_boxes(face_clip)


def jittered(frames: np.ndarray, amplitude: float, seed: int) -> np.ndarray:
    """Each frame shifted by a random whole number of pixels in [-amplitude, amplitude] (a shaking generator)."""
    rng = np.random.default_rng(seed)
    shifts = rng.integers(-amplitude, amplitude + 1, size=(len(frames), 2)) if amplitude else np.zeros((len(frames), 2))
    return np.stack([np.roll(frame, tuple(shift), axis=(0, 1)) for frame, shift in zip(frames, shifts.astype(int))])


def test_equation_g_equals_a_hand_computation_on_a_tiny_clip():
    reference = np.array([[[0, 10]], [[5, 10]], [[5, 30]]], dtype=np.uint8)  # (T=3, 1, 2)
    generated = np.array([[[1, 10]], [[1, 10]], [[9, 40]]], dtype=np.uint8)
    # t=2: ref change (5, 0), generated change (0, 0) -> (5, 0), norm 5
    # t=3: ref change (0, 20), generated change (8, 30) -> (-8, -10), norm sqrt(164)
    expected = 5 + math.sqrt(164)
    assert ifc.ifc_equation_g(generated, reference) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(ifc.change_difference_norms(generated, reference), [5, math.sqrt(164)], atol=1e-12)
    # The same numbers as floats go through the float path and agree.
    assert ifc.ifc_equation_g(generated.astype(np.float32), reference.astype(np.float64)) == pytest.approx(expected)


def test_the_normalised_value_is_equation_g_on_0_1_pixels_as_an_rms_averaged_over_steps():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    result = ifc.ifc_per_frame(generated, reference)
    literal = ifc.ifc_equation_g(generated / 255.0, reference / 255.0)
    assert result.value == pytest.approx(literal / (math.sqrt(9 * 7 * 3) * 5), rel=1e-12)
    assert math.isnan(result.frames[0]) and result.frames.shape == (6,)
    assert result.value == pytest.approx(np.mean(result.frames[1:]))


def test_chunks_of_frames_give_the_same_norms(monkeypatch):
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    whole = ifc.change_difference_norms(generated, reference)
    monkeypatch.setattr(ifc, "CHUNK_VALUES", 1)  # two frames per chunk
    np.testing.assert_array_equal(ifc.change_difference_norms(generated, reference), whole)


def test_ifc_is_zero_for_identical_clips_and_for_an_error_that_stays_the_same(face_clip, face_boxes):
    pair = ClipPair(face_clip, face_clip, SILENCE, 25.0, face_boxes=face_boxes)
    assert ifc.ifc(pair).value == 0 and ifc.ifc_full(pair).value == 0
    reference = face_clip // 2  # a moving clip with room above it
    brighter = reference + 9  # wrong in every pixel of every frame, by the same amount
    assert ifc.ifc_full(ClipPair(brighter, reference, SILENCE, 25.0)).value == 0
    assert ifc.ifc_full(ClipPair(reference * 2, reference, SILENCE, 25.0)).value > 0  # moves twice as much: not 0


def test_ifc_grows_with_the_temporal_jitter_of_the_generated_clip(face_clip, face_boxes):
    values = []
    for amplitude in (0, 1, 3, 6):
        generated = jittered(face_clip, amplitude, seed=2)
        pair = ClipPair(generated, face_clip, SILENCE, 25.0, face_boxes=face_boxes)
        values.append(ifc.ifc(pair).value)
    assert values[0] == 0
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_on_the_whole_frame_a_face_only_flicker_is_diluted_by_the_background(face_clip, face_boxes):
    generated = face_clip.astype(np.int64)
    for t, (x1, y1, x2, y2) in enumerate(face_boxes):  # the face box 10 levels darker in every other frame
        generated[t, y1:y2, x1:x2] -= 10 * (t % 2)
    generated = np.clip(generated, 0, 255).astype(np.uint8)
    pair = ClipPair(generated, face_clip, SILENCE, 25.0, face_boxes=face_boxes)
    face, full = ifc.ifc(pair).value, ifc.ifc_full(pair).value
    box_share = np.mean([(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in face_boxes]) / (256 * 256)
    assert face == pytest.approx(10 / 255, rel=0.02)  # every crop pixel flickers by 10 levels
    assert full == pytest.approx(face * math.sqrt(box_share), rel=0.05)  # the same flicker, RMS over the frame


def test_ifc_needs_two_frames_and_the_ground_truth(face_clip, face_boxes):
    with pytest.raises(MetricUnavailable, match="fewer than 2"):
        ifc.ifc(ClipPair(face_clip[:1], face_clip[:1], SILENCE, 25.0, face_boxes=face_boxes[:1]))
    with pytest.raises(MetricUnavailable, match="no hidden reference"):
        ifc.ifc(ClipPair(face_clip, None, SILENCE, 25.0))
