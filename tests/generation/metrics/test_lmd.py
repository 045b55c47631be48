"""Mouth landmark distance: dlib mouth landmarks inside the reference's face box for both clips, distances in
pixels of a 128-px face crop; zero for identical clips, growing with a known mouth displacement, independent of
the video's resolution; failed frames NaN and counted."""

import numpy as np
import pytest
from skimage import data as skdata

from generation import faces
from generation.metrics import lmd, regions
from generation.metrics.base import ClipPair, MetricUnavailable

SILENCE = np.zeros(1600, dtype=np.float32)


@pytest.fixture(scope="module")
def face_frame() -> np.ndarray:
    """A 256 x 256 frame of a real face (skimage's astronaut)."""
    return skdata.astronaut()[0:256, 96:352].copy()


@pytest.fixture(scope="module")
def face_box(face_frame) -> np.ndarray:
    return regions.detect_face_boxes(face_frame[None])[0]


def with_mouth_moved_down(frame: np.ndarray, k: int) -> np.ndarray:
    """The frame with a rectangle around the lips copied k pixels lower (the mouth drawn k px too low)."""
    mouth = faces.largest_face(frame).mouth
    x1, y1 = np.floor(mouth.min(axis=0)).astype(int) - 6
    x2, y2 = np.ceil(mouth.max(axis=0)).astype(int) + 6
    moved = frame.copy()
    moved[y1 + k:y2 + k, x1:x2] = frame[y1:y2, x1:x2]
    return moved


def clip_pair(generated_frames, reference_frames, box) -> ClipPair:
    generated, reference = np.stack(generated_frames), np.stack(reference_frames)
    return ClipPair(generated, reference, SILENCE, 25.0, face_boxes=np.repeat(box[None], len(generated), axis=0))


def test_the_mean_distance_of_corresponding_points_by_hand():
    reference = np.zeros((2, 20, 2))
    generated = np.zeros((2, 20, 2))
    generated[0, :, 0] = 3  # every point 3 px to the right
    generated[1, :10, 1] = 4  # half the points 4 px lower
    np.testing.assert_allclose(lmd.landmark_distances(generated, reference), [3.0, 2.0])
    np.testing.assert_allclose(lmd.landmark_distances(generated, reference, centred=True), [0.0, 2.0])
    reference[1] = np.nan
    assert np.isnan(lmd.landmark_distances(generated, reference)[1])


def test_the_predictor_gets_dlibs_own_face_rectangle_back(face_frame, face_box):
    native = faces._detector()(face_frame, 1)[0]  # dlib's rectangle, before the pipeline grows and pads it
    x1, y1, x2, y2 = face_box
    size = lmd.LANDMARK_CROP_SIZE
    rx1, ry1, rx2, ry2 = lmd.predictor_rect(x2 - x1, y2 - y1, size)
    to_crop_x, to_crop_y = size / (x2 - x1), size / (y2 - y1)
    expected = [(native.left() - x1) * to_crop_x, (native.top() - y1) * to_crop_y,
                (native.right() - x1) * to_crop_x, (native.bottom() - y1) * to_crop_y]
    np.testing.assert_allclose([rx1, ry1, rx2, ry2], expected, atol=0.015 * size)  # the grown box was rounded


def test_mouth_landmarks_land_on_dlibs_own_landmarks(face_frame, face_box):
    points = lmd.mouth_landmarks(face_frame[None], face_box[None])
    in_frame = lmd._to_frame_pixels(points, face_box[None])[0]
    native = faces.largest_face(face_frame).mouth + 0.5  # pixel indices -> pixel centres
    assert np.abs(in_frame - native).mean() < 1.0


def test_lmd_is_zero_for_identical_frames(face_frame, face_box):
    result = lmd.lmd(clip_pair([face_frame] * 2, [face_frame] * 2, face_box))
    assert result.value == 0 and np.all(result.frames == 0)


def test_lmd_grows_with_the_displacement_of_the_mouth_and_measures_it_in_128_px_face_units(face_frame, face_box):
    shifts = (0, 1, 2, 3, 4)
    generated = [with_mouth_moved_down(face_frame, k) for k in shifts]
    result = lmd.lmd(clip_pair(generated, [face_frame] * len(shifts), face_box))
    units_per_pixel = lmd.LMD_CROP_SIZE / (face_box[3] - face_box[1])  # vertical scale of the face crop
    expected = np.array(shifts) * units_per_pixel
    assert result.frames[0] == 0
    assert np.all(np.diff(result.frames) > 0), result.frames
    # The landmarks follow the moved lips most of the way (the shape model holds them back a little).
    assert np.all(result.frames[1:] > 0.6 * expected[1:]) and np.all(result.frames[1:] < 1.2 * expected[1:])


def test_centred_lmd_sees_the_mouth_shape_not_its_position(face_frame, face_box):
    pair = clip_pair([with_mouth_moved_down(face_frame, 4)], [face_frame], face_box)
    assert lmd.lmd(pair, centred=True).value < 0.3 * lmd.lmd(pair).value


def test_lmd_does_not_depend_on_the_video_resolution_but_lmd_pixels_does(face_frame, face_box):
    generated = with_mouth_moved_down(face_frame, 4)
    small = clip_pair([generated], [face_frame], face_box)
    big = clip_pair([np.repeat(np.repeat(generated, 2, 0), 2, 1)], [np.repeat(np.repeat(face_frame, 2, 0), 2, 1)],
                    face_box * 2)
    assert lmd.lmd(big).value == pytest.approx(lmd.lmd(small).value, abs=0.5)
    assert lmd.lmd_pixels(big).value == pytest.approx(2 * lmd.lmd_pixels(small).value, rel=0.25)


def test_frames_without_usable_landmarks_are_nan_and_counted_and_none_usable_is_unavailable(face_frame, face_box):
    pair = clip_pair([face_frame] * 3, [face_frame] * 3, face_box)
    boxes = pair.face_boxes.copy()
    boxes[1] = [10, 10, 12, 12]  # a degenerate box
    result = lmd.lmd(ClipPair(pair.generated, pair.reference, SILENCE, 25.0, face_boxes=boxes))
    assert np.isnan(result.frames[1]) and int(np.isnan(result.frames).sum()) == 1
    assert result.value == 0
    boxes[:] = [10, 10, 12, 12]
    with pytest.raises(MetricUnavailable, match="no usable mouth landmarks"):
        lmd.lmd(ClipPair(pair.generated, pair.reference, SILENCE, 25.0, face_boxes=boxes))


def test_lmd_needs_the_ground_truth(face_frame, face_box):
    with pytest.raises(MetricUnavailable, match="no hidden reference"):
        lmd.lmd(ClipPair(face_frame[None], None, SILENCE, 25.0, face_boxes=face_box[None]))
