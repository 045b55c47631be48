"""Face boxes as the lip-sync models expect them: detection, padding, Wav2Lip's smoothing, crops, paste-back."""

import numpy as np
import pytest
import skimage.data

from generation import faces


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()  # (512, 512, 3), one frontal face


def test_it_finds_the_astronauts_face_with_dlib_and_grows_the_box_towards_s3fd_framing(astronaut):
    boxes = faces.DlibFaceDetector().detect(astronaut)
    assert boxes.shape[1] == 5 and len(boxes) >= 1
    x1, y1, x2, y2, score = boxes[0]
    tight = faces.largest_face(astronaut).box
    assert x1 < tight[0] and y1 < tight[1] and x2 > tight[2] and y2 > tight[3]
    assert 150 < (x1 + x2) / 2 < 300 and 60 < (y1 + y2) / 2 < 200  # the face, not the second false hit


def test_it_finds_no_face_in_a_flat_image():
    assert faces.DlibFaceDetector().detect(np.full((120, 160, 3), 128, np.uint8)).shape == (0, 5)


def test_it_pads_boxes_like_wav2lip_and_clips_them_to_the_image():
    boxes = np.array([[10.0, 20.0, 50.0, 90.0], [0.0, 0.0, 100.0, 95.0]])
    padded = faces.pad_boxes(boxes, (5, 10, 3, 4), width=100, height=100)
    assert padded.tolist() == [[7, 15, 54, 100], [0, 0, 100, 100]]


def test_it_smooths_boxes_with_wav2lips_forward_window_and_integer_truncation():
    boxes = np.array([[10 + 2 * i, 10, 50 + 2 * i, 50] for i in range(7)])
    smoothed = faces.smooth_boxes(boxes, window=5)
    # i=0: mean of boxes 0..4 → x1 = 14; i=3: the last window is the final 5 rows, rows 2..6, of which
    # rows 2 (already smoothed to 18) … → the original's in-place quirk; int truncation throughout.
    assert smoothed[:, 0].tolist() == [14, 16, 18, 18, 19, 19, 19]
    assert smoothed.dtype == np.int64


def test_it_fills_short_gaps_without_a_face_from_the_nearest_frame_and_refuses_long_ones():
    a, b = np.array([1, 2, 3, 4.0]), np.array([5, 6, 7, 8.0])
    filled = faces.fill_missing_boxes([None, a, None, None, b], max_gap=2)
    assert filled[:, 0].tolist() == [1, 1, 1, 5, 5]
    with pytest.raises(faces.FaceNotFoundError, match="frames 1–3"):
        faces.fill_missing_boxes([a, None, None, None, b], max_gap=2)
    with pytest.raises(faces.FaceNotFoundError, match="any frame"):
        faces.fill_missing_boxes([None, None], max_gap=5)


def test_it_crops_and_resizes_faces():
    frames = np.zeros((2, 50, 60, 3), np.uint8)
    frames[:, 10:30, 20:40] = 200
    crops = faces.crop_faces(frames, np.array([[20, 10, 40, 30], [20, 10, 40, 30]]), 96)
    assert crops.shape == (2, 96, 96, 3) and (crops == 200).all()


def test_it_pastes_back_only_inside_the_box():
    frame = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    face = np.full((96, 96, 3), 7, np.uint8)
    out = faces.paste_back(frame, face, np.array([10, 20, 60, 70]))
    assert (out[20:70, 10:60] == 7).all()
    outside = np.ones(frame.shape[:2], bool)
    outside[20:70, 10:60] = False
    assert np.array_equal(out[outside], frame[outside])


def test_it_feathers_the_paste_towards_the_box_edges():
    frame = np.zeros((100, 100, 3), np.uint8)
    face = np.full((40, 40, 3), 200, np.uint8)
    out = faces.paste_back(frame, face, np.array([30, 30, 70, 70]), feather=8)
    assert out[50, 50, 0] == 200  # the centre is the generated face
    assert 0 < out[30, 50, 0] < 60  # the edge is mostly the original frame
    assert out[29, 50, 0] == 0 and out[50, 71, 0] == 0  # nothing outside the box changes
    mask = faces.feather_mask(40, 40, 8)
    assert mask.shape == (40, 40, 1) and mask.max() == 1 and mask.min() > 0


def test_it_smooths_fewer_boxes_than_the_window_exactly_as_the_original_slice_does():
    boxes = np.array([[10, 0, 20, 0], [20, 0, 30, 0], [40, 0, 50, 0]])
    # boxes[3 − 5:] is boxes[-2:] in Python: the last two, not all three.
    assert faces.smooth_boxes(boxes, window=5)[:, 0].tolist() == [30, 30, 35]
