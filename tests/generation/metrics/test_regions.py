"""Face and mouth regions for the region metrics: the lip-sync pipeline's own face boxes, found on the reference and
applied to both clips; fixed-size crops; the mouth crop is the lower half of the face crop."""

import dataclasses

import numpy as np
import pytest

from generation import faces, nets
from tests.generation.metrics.conftest import astronaut_clip
from generation.metrics import regions
from generation.metrics.base import ClipPair, MetricUnavailable
from generation.pipeline import LipSyncPipeline

SILENCE = np.zeros(1600, dtype=np.float32)


@pytest.fixture(scope="module")
def face_clip() -> np.ndarray:
    """Three 256 x 256 frames of a real face (skimage's astronaut), the head moving 3 px to the right per frame."""
    return astronaut_clip(3, step_px=3)


@pytest.fixture(scope="module")
def face_boxes(face_clip) -> np.ndarray:
    return regions.detect_face_boxes(face_clip)


def test_the_face_boxes_are_the_ones_the_lip_sync_pipeline_gives_its_generator(face_clip, face_boxes):
    arch = nets.get_architecture("wav2lip")
    pipeline = LipSyncPipeline(arch.build_generator(arch.config("tiny")), faces.DlibFaceDetector())
    assert face_boxes.dtype == np.int64 and face_boxes.shape == (3, 4)
    np.testing.assert_array_equal(face_boxes, pipeline._face_boxes(face_clip))


def test_the_face_box_holds_the_face_with_the_mouth_in_its_lower_half(face_clip, face_boxes):
    mouth = faces.largest_face(face_clip[0]).mouth  # (20, 2) x, y
    x1, y1, x2, y2 = face_boxes[0]
    assert np.all((mouth[:, 0] > x1) & (mouth[:, 0] < x2))
    assert np.all((mouth[:, 1] > (y1 + y2) / 2) & (mouth[:, 1] < y2))


def test_no_face_raises_an_error_that_is_both_face_not_found_and_metric_unavailable():
    flat = np.full((2, 128, 128, 3), 120, dtype=np.uint8)
    with pytest.raises(regions.NoFaceError, match="no face") as caught:
        regions.detect_face_boxes(flat)
    assert isinstance(caught.value, faces.FaceNotFoundError)
    assert isinstance(caught.value, MetricUnavailable)


def test_with_face_boxes_finds_them_on_the_reference_and_keeps_boxes_already_there(face_clip, face_boxes, monkeypatch):
    generated = np.zeros_like(face_clip)  # no face at all: the boxes must come from the reference
    pair = ClipPair(generated, face_clip, SILENCE, 25.0)
    seen = []
    monkeypatch.setattr(regions, "detect_face_boxes", lambda frames, **kw: seen.append(frames) or face_boxes)
    filled = regions.with_face_boxes(pair)
    assert seen[0] is face_clip
    np.testing.assert_array_equal(filled.face_boxes, face_boxes)
    assert regions.with_face_boxes(filled) is filled and len(seen) == 1


def test_a_box_of_the_crop_size_is_cut_out_unchanged():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 100, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 74, 84], [50, 0, 114, 64]])
    crops = regions.face_crops(frames, boxes, size=64)
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], frames[0, 20:84, 10:74])
    np.testing.assert_array_equal(crops[1], frames[1, 0:64, 50:114])


def test_the_mouth_crop_is_the_lower_half_of_the_face_crop(face_clip, face_boxes):
    face = regions.face_crops(face_clip, face_boxes)
    mouth = regions.mouth_crops(face_clip, face_boxes)
    assert face.shape == (3, 128, 128, 3) and mouth.shape == (3, 64, 128, 3)
    np.testing.assert_array_equal(mouth, face[:, 64:])
    assert regions.mouth_rows(128) == slice(64, 128)


def test_enlarging_is_bilinear_with_half_pixel_centres():
    frame = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    frame[0, :, 2:] = 200  # a vertical edge between columns 1 and 2
    crop = regions.face_crops(frame, np.array([[0, 0, 4, 4]]), size=8)[0, 0, :, 0]
    # Output column j samples input x = (j + 0.5) / 2 - 0.5 (clamped to the image): 1.25 is a quarter of the way
    # from column 1 to column 2, 1.75 three quarters.
    np.testing.assert_array_equal(crop, [0, 0, 0, 50, 150, 200, 200, 200])


def test_shrinking_averages_fine_detail_instead_of_aliasing_it():
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    frames = np.repeat(checker[None, :, :, None], 3, axis=3)
    crop = regions.face_crops(frames, np.array([[0, 0, 256, 256]]), size=128)
    assert np.abs(crop.astype(float) - 127.5).max() <= 3  # a plain interpolation would keep 0s and 255s


def test_boxes_are_clipped_to_the_frame_and_an_empty_box_is_refused():
    frames = np.full((1, 50, 50, 3), 7, dtype=np.uint8)
    crops = regions.face_crops(frames, np.array([[-10, -10, 60, 60]]), size=16)
    assert np.all(crops == 7)
    with pytest.raises(ValueError, match="no pixels inside"):
        regions.face_crops(frames, np.array([[60, 0, 80, 20]]), size=16)


def test_both_clips_are_cut_with_the_reference_boxes_so_identical_pixels_give_identical_crops(face_clip, face_boxes):
    generated = face_clip.copy()
    generated[:, :40] = 0  # changed far above the face: not in any crop
    assert face_boxes[:, 1].min() >= 40
    pair = dataclasses.replace(ClipPair(generated, face_clip, SILENCE, 25.0), face_boxes=face_boxes)
    boxes = regions.boxes_of(pair)
    np.testing.assert_array_equal(regions.face_crops(generated, boxes), regions.face_crops(face_clip, boxes))


def test_degenerate_boxes_are_flagged():
    boxes = np.array([[0, 0, 7, 50], [0, 0, 50, 50], [10, 10, 60, 17]])
    np.testing.assert_array_equal(regions.degenerate_boxes(boxes), [True, False, True])
