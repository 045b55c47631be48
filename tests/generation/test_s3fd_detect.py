"""S3FD detection: preprocessing orders, anchors, box coding, NMS, the detector, and loading sfd_face.pth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from generation import s3fd_detect
from generation.nets import s3fd
from generation.s3fd_detect import (
    S3FDDetector,
    decode,
    encode,
    load_s3fd,
    nms,
    preprocess,
    prior_boxes,
    select_detections,
)

FACE_SCORE = 1 / (1 + math.exp(-10))  # softmax([0, 10])[1]


class PlantedFaceNet(nn.Module):
    """Stands in for S3FD: every cell says "background" except one, which says "face" with given offsets.

    Level sizes are ⌈input / stride⌉; the input it saw is kept for inspection.
    """

    def __init__(self, level: int, cell: tuple[int, int], offsets: tuple[float, float, float, float]):
        super().__init__()
        self.config = s3fd.TINY
        self.level, self.cell, self.offsets = level, cell, offsets
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        n, _, height, width = x.shape
        levels = []
        for i, stride in enumerate(self.config.strides):
            h, w = math.ceil(height / stride), math.ceil(width / stride)
            cls = torch.zeros(n, 2, h, w)
            cls[:, 1] = -10.0  # face logit: score ≈ 0.00005
            reg = torch.zeros(n, 4, h, w)
            if i == self.level:
                y, xx = self.cell
                cls[:, 1, y, xx] = 10.0
                reg[:, :, y, xx] = torch.tensor(self.offsets)
            levels.append((cls, reg))
        return levels


def uniform_tiny_net(face_logit: float = 2.0) -> s3fd.S3FD:
    """A tiny S3FD whose heads ignore the image: every anchor scores softmax([0, face_logit])[1] and has
    zero offsets, so its boxes are exactly the anchors."""
    net = s3fd.S3FD(s3fd.TINY)
    with torch.no_grad():
        for name, module in net.named_modules():
            if name.endswith("_mbox_conf") or name.endswith("_mbox_loc"):
                module.weight.zero_()
                module.bias.zero_()
                if name.endswith("_mbox_conf"):
                    module.bias[-1] = face_logit
    return net.eval()


def rgb_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class TestPreprocessing:
    PIXEL = np.array([[[[200, 100, 50]]]], dtype=np.uint8)  # one frame, one pixel: R 200, G 100, B 50

    def test_it_subtracts_the_mean_in_rgb_order_and_feeds_rgb_like_wav2lip(self):
        x = preprocess(self.PIXEL, channel_order="rgb", mean_order="rgb")
        assert x.flatten().tolist() == [200 - 104, 100 - 117, 50 - 123]

    def test_it_subtracts_the_mean_in_bgr_order_and_feeds_rgb_like_syncnet_python(self):
        x = preprocess(self.PIXEL, channel_order="rgb", mean_order="bgr")
        assert x.flatten().tolist() == [200 - 123, 100 - 117, 50 - 104]

    def test_it_feeds_bgr_with_the_bgr_mean_like_face_alignment(self):
        x = preprocess(self.PIXEL, channel_order="bgr", mean_order="bgr")
        assert x.flatten().tolist() == [50 - 104, 100 - 117, 200 - 123]

    def test_it_resizes_by_scale_rounding_sides_like_cv2(self):
        frames = np.full((1, 48, 64, 3), 7, dtype=np.uint8)
        x = preprocess(frames, scale=0.25, mean_order="bgr")
        assert x.shape == (1, 3, 12, 16)
        assert torch.all(x[:, 0] == 7 - 123)  # a flat image stays flat
        assert s3fd_detect.scaled_size(30, 50, 0.25) == (8, 13)  # 7.5 → 8, 12.5 → 13 (round half up)

    def test_it_accepts_grayscale_and_drops_alpha(self):
        gray = np.full((1, 4, 4), 90, dtype=np.uint8)
        rgba = np.concatenate([np.full((1, 4, 4, 3), 90, dtype=np.uint8), np.zeros((1, 4, 4, 1), np.uint8)], axis=-1)
        assert torch.equal(preprocess(gray), preprocess(rgba))

    def test_it_rejects_float_frames_and_unknown_orders(self):
        with pytest.raises(ValueError, match="uint8"):
            preprocess(np.zeros((1, 4, 4, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="mean_order"):
            preprocess(self.PIXEL, mean_order="grb")


class TestPriorBoxes:
    def test_it_centres_one_square_anchor_of_side_four_strides_in_each_cell(self):
        priors = prior_boxes([(2, 3), (1, 1)], strides=(4, 8), anchor_scale=4)
        assert priors.tolist() == [
            [2, 2, 16, 16], [6, 2, 16, 16], [10, 2, 16, 16],  # level 1, row 0
            [2, 6, 16, 16], [6, 6, 16, 16], [10, 6, 16, 16],  # level 1, row 1
            [4, 4, 32, 32],  # level 2
        ]

    def test_it_has_one_anchor_per_cell_of_each_level_the_network_returns(self):
        """A 32×32 frame through the (default-geometry) tiny net: 8², 4², 2², then fc7 = 1 + 4 = 5²,
        conv6_2 = 3², conv7_2 = 2² — 64 + 16 + 4 + 25 + 9 + 4 = 122 anchors."""
        with torch.inference_mode():
            levels = s3fd.S3FD(s3fd.TINY)(torch.zeros(1, 3, 32, 32))
        sizes = [tuple(cls.shape[-2:]) for cls, _ in levels]
        assert sizes == [(8, 8), (4, 4), (2, 2), (5, 5), (3, 3), (2, 2)]
        priors = prior_boxes(sizes, s3fd.TINY.strides)
        assert priors.shape == (122, 4)
        assert priors[64 + 16 + 4 + 25 + 9:, 2].tolist() == [512] * 4  # conv7_2 anchors: 4 · 128
        assert priors[64 + 16 + 4 + 24].tolist() == [16 + 4 * 32, 16 + 4 * 32, 128, 128]  # last fc7 cell (4, 4)


class TestBoxCoding:
    def test_it_decodes_offsets_with_variances_0_1_and_0_2(self):
        priors = torch.tensor([[10.0, 20.0, 16.0, 16.0]])
        loc = torch.tensor([[1.0, -1.0, 0.0, math.log(2) / 0.2]])
        # centre (10 + 1·0.1·16, 20 − 1·0.1·16) = (11.6, 18.4); size (16, 16·2)
        assert torch.allclose(decode(loc, priors), torch.tensor([[3.6, 2.4, 19.6, 34.4]]))

    def test_it_decodes_zero_offsets_to_the_anchor_itself(self):
        priors = prior_boxes([(2, 2)], strides=(4,))
        boxes = decode(torch.zeros(4, 4), priors)
        assert boxes[0].tolist() == [-6, -6, 10, 10]

    def test_it_round_trips_encode_and_decode(self):
        generator = torch.Generator().manual_seed(0)
        centres = torch.rand(50, 2, generator=generator) * 100
        priors = torch.cat([centres, 8 + torch.rand(50, 2, generator=generator) * 60], dim=1)  # (50, 4)
        corners = torch.rand(3, 50, 2, generator=generator) * 100
        boxes = torch.cat([corners, corners + 1 + torch.rand(3, 50, 2, generator=generator) * 80], dim=-1)
        assert torch.allclose(decode(encode(boxes, priors), priors), boxes, atol=1e-4)
        loc = torch.randn(3, 50, 4, generator=generator)
        assert torch.allclose(encode(decode(loc, priors), priors), loc, atol=1e-4)


class TestNMS:
    def test_it_keeps_the_best_box_of_each_overlapping_group_best_first(self):
        boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [21, 20, 31, 30]], dtype=float)
        scores = np.array([0.8, 0.9, 0.7, 0.95])
        # 1 and 0 overlap with IoU 81/119 ≈ 0.68; 3 and 2 with 90/110 ≈ 0.82
        assert nms(boxes, scores, 0.3).tolist() == [3, 1]

    def test_it_keeps_a_box_whose_iou_equals_the_threshold(self):
        boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)  # IoU = 50 / 150 = 1/3
        assert nms(boxes, np.array([0.9, 0.8]), 1 / 3).tolist() == [0, 1]
        assert nms(boxes, np.array([0.9, 0.8]), 0.3).tolist() == [0]

    def test_it_counts_widths_as_x2_minus_x1_plus_one_when_pixel_inclusive(self):
        """face-alignment's convention: IoU = (6·11) / (121 + 121 − 66) = 0.375 instead of 1/3."""
        boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
        assert nms(boxes, np.array([0.9, 0.8]), 0.35).tolist() == [0, 1]
        assert nms(boxes, np.array([0.9, 0.8]), 0.35, pixel_inclusive=True).tolist() == [0]

    def test_it_considers_only_the_top_k_scores(self):
        boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], dtype=float)
        assert nms(boxes, np.array([0.1, 0.9, 0.5]), 0.3, top_k=2).tolist() == [1, 2]

    def test_it_handles_no_boxes_and_degenerate_boxes(self):
        assert nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []
        assert nms(np.zeros((2, 4)), np.array([0.5, 0.4]), 0.3).tolist() == [0, 1]


class TestSelection:
    BOXES = np.array([[0, 0, 10, 10], [6, 0, 16, 10], [40, 40, 50, 50], [100, 100, 110, 110]], dtype=float)
    SCORES = np.array([0.99, 0.95, 0.6, 0.04])

    def test_it_keeps_confident_survivors_of_nms_best_first(self):
        out = select_detections(self.BOXES, self.SCORES, score_threshold=0.5, pixel_inclusive_nms=False)
        assert out.dtype == np.float32 and out.shape == (3, 5)
        assert out[:, 4].tolist() == pytest.approx([0.99, 0.95, 0.6])
        assert select_detections(self.BOXES, self.SCORES, score_threshold=0.9).shape == (2, 5)

    def test_it_drops_candidates_at_or_below_the_candidate_threshold(self):
        out = select_detections(self.BOXES, self.SCORES, score_threshold=0.0, candidate_threshold=0.05)
        assert len(out) == 3 and out[:, 4].min() > 0.05
        assert len(select_detections(self.BOXES, self.SCORES, score_threshold=0.0, candidate_threshold=0.6)) == 2

    def test_it_runs_syncnet_pythons_second_nms(self):
        """Boxes 0 and 1 overlap with IoU 40/160 = 0.25: kept at 0.3, removed by the second NMS at 0.1."""
        out = select_detections(self.BOXES, self.SCORES, score_threshold=0.5, final_nms_iou=0.1)
        assert out[:, 4].tolist() == pytest.approx([0.99, 0.6])

    def test_it_caps_the_survivors_of_the_first_nms(self):
        out = select_detections(self.BOXES, self.SCORES, score_threshold=0.0, post_nms_top_k=1)
        assert out.shape == (1, 5)


class TestDetector:
    def test_it_finds_a_planted_face_where_its_anchor_and_offsets_put_it(self):
        """Level 2 (stride 8, anchor 32), cell (y 3, x 5): anchor centre (4 + 5·8, 4 + 3·8) = (44, 28);
        offsets (0.5, −0.5, 0, 0) move it by ±0.5·0.1·32 = 1.6 → [29.6, 10.4, 61.6, 42.4]."""
        net = PlantedFaceNet(level=1, cell=(3, 5), offsets=(0.5, -0.5, 0.0, 0.0))
        detections = S3FDDetector(net).detect(rgb_image(96, 96))
        assert detections.shape == (1, 5) and detections.dtype == np.float32
        assert detections[0].tolist() == pytest.approx([29.6, 10.4, 61.6, 42.4, FACE_SCORE], abs=1e-4)

    def test_it_returns_boxes_in_original_pixels_when_it_downscales(self):
        net = PlantedFaceNet(level=1, cell=(3, 5), offsets=(0.5, -0.5, 0.0, 0.0))
        detections = S3FDDetector(net, scale=0.5).detect(rgb_image(192, 192))
        assert net.seen[-1].shape == (1, 3, 96, 96)
        assert detections[0].tolist() == pytest.approx([59.2, 20.8, 123.2, 84.8, FACE_SCORE], abs=1e-4)

    def test_it_feeds_the_network_the_preprocessed_frame(self):
        net = PlantedFaceNet(level=0, cell=(0, 0), offsets=(0, 0, 0, 0))
        image = rgb_image(32, 48)
        S3FDDetector(net, mean_order="bgr").detect(image)
        assert torch.equal(net.seen[-1], preprocess(image[None], mean_order="bgr"))

    def test_it_reproduces_nms_over_anchors_by_hand(self):
        """Every anchor scores the same and decodes to itself. Stable order puts level 1's first anchor
        [−6, −6, 10, 10] first; the next anchors along the row (centres x = 6, 10) overlap it with IoU
        > 0.3 (0.6, and 0.36 with the +1 convention), the one at x = 14 ([6, −6, 22, 10], IoU 0.14)
        survives. Boxes are clipped to the image."""
        detections = S3FDDetector(uniform_tiny_net(face_logit=2.0)).detect(rgb_image(64, 64))
        score = 1 / (1 + math.exp(-2))
        assert detections[0].tolist() == pytest.approx([0, 0, 10, 10, score], abs=1e-5)
        assert detections[1].tolist() == pytest.approx([6, 0, 22, 10, score], abs=1e-5)

    def test_it_returns_well_formed_detections_from_a_random_tiny_net(self):
        torch.manual_seed(0)
        detector = S3FDDetector(s3fd.S3FD(s3fd.TINY), score_threshold=0.0)
        image = rgb_image(72, 100)
        detections = detector.detect(image)
        assert detections.ndim == 2 and detections.shape[1] == 5 and len(detections) > 0
        assert detections.dtype == np.float32 and np.isfinite(detections).all()
        scores = detections[:, 4]
        assert np.all(np.diff(scores) <= 0)
        assert np.all(scores > 0.05)
        x1, y1, x2, y2 = detections[:, :4].T
        assert np.all((0 <= x1) & (x1 <= x2) & (x2 <= 100)) and np.all((0 <= y1) & (y1 <= y2) & (y2 <= 72))

    def test_it_returns_an_empty_array_when_nothing_is_a_face(self):
        detections = S3FDDetector(uniform_tiny_net(face_logit=-10.0)).detect(rgb_image(64, 64))
        assert detections.shape == (0, 5) and detections.dtype == np.float32

    def test_it_detects_a_batch_like_frame_by_frame_in_chunks(self):
        torch.manual_seed(1)
        detector = S3FDDetector(s3fd.S3FD(s3fd.TINY), score_threshold=0.3, batch_size=2)
        frames = np.stack([rgb_image(48, 64, seed) for seed in range(5)])
        batch = detector.detect_batch(frames)
        assert len(batch) == 5
        for frame, detections in zip(frames, batch):
            np.testing.assert_allclose(detections, detector.detect(frame), rtol=1e-5, atol=1e-4)

    def test_it_rejects_bad_settings(self):
        with pytest.raises(ValueError, match="mean_order"):
            S3FDDetector(s3fd.S3FD(s3fd.TINY), mean_order="brg")
        with pytest.raises(ValueError, match="scale"):
            S3FDDetector(s3fd.S3FD(s3fd.TINY), scale=0)

    def test_it_names_the_reference_settings(self):
        assert S3FDDetector(s3fd.S3FD(s3fd.TINY)).selection == {
            k: v for k, v in s3fd_detect.WAV2LIP_INFERENCE.items() if k not in ("channel_order", "mean_order", "scale")
        }
        syncnet = s3fd_detect.SYNCNET_PIPELINE
        thresholds = (syncnet["scale"], syncnet["score_threshold"], syncnet["nms_iou"], syncnet["final_nms_iou"])
        assert thresholds == (0.25, 0.9, 0.3, 0.1)
        assert (syncnet["channel_order"], syncnet["mean_order"]) == ("rgb", "bgr")


def write_state(path, state):
    torch.save(state, path)
    return path


def renamed_to_sfd_face(state: dict) -> dict:
    inverse = {new: old for old, new in s3fd.SFD_FACE_MODULES.items()}
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[f"{inverse[module]}.{param}"] = value
    return out


class TestLoading:
    def test_it_explains_how_to_install_a_missing_sfd_face_pth(self, tmp_path):
        with pytest.raises(FileNotFoundError) as error:
            load_s3fd(tmp_path / "sfd_face.pth")
        message = str(error.value)
        assert "sfd_face.pth" in message and "never downloads" in message
        assert "syncnet_python" in message and "face-alignment" in message
        assert str(tmp_path / "sfd_face.pth") in message

    def test_it_loads_a_full_size_sfd_face_pth_strictly(self, tmp_path):
        torch.manual_seed(0)
        reference = s3fd.S3FD(s3fd.SFD_FACE).state_dict()
        path = write_state(tmp_path / "sfd_face.pth", renamed_to_sfd_face(reference))
        detector = load_s3fd(path)
        assert detector.config == s3fd.SFD_FACE
        assert (detector.channel_order, detector.mean_order) == ("rgb", "bgr")
        loaded = detector.net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.items())

    def test_it_loads_a_face_alignment_layout_with_wav2lips_preprocessing(self, tmp_path):
        torch.manual_seed(0)
        path = write_state(tmp_path / "s3fd.pth", s3fd.S3FD(s3fd.TINY).state_dict())
        detector = load_s3fd(path, config=s3fd.TINY)
        assert (detector.channel_order, detector.mean_order) == ("rgb", "rgb")
        assert detector.detect(rgb_image(32, 32)).shape[1] == 5

    def test_it_passes_detector_options_through(self, tmp_path):
        path = write_state(tmp_path / "sfd_face.pth", renamed_to_sfd_face(s3fd.S3FD(s3fd.TINY).state_dict()))
        detector = load_s3fd(path, config=s3fd.TINY, **s3fd_detect.SYNCNET_PIPELINE)
        assert detector.scale == 0.25 and detector.selection["final_nms_iou"] == 0.1

    def test_it_refuses_a_checkpoint_of_another_network_naming_the_keys(self, tmp_path):
        path = write_state(tmp_path / "sfd_face.pth", {"audio_encoder.0.weight": torch.zeros(2, 2)})
        with pytest.raises(ValueError, match="not an S3FD checkpoint") as error:
            load_s3fd(path)
        assert "audio_encoder.0.weight" in str(error.value) and "conv1_1.weight" in str(error.value)

    def test_it_refuses_an_s3fd_layout_with_missing_keys(self, tmp_path):
        state = s3fd.S3FD(s3fd.TINY).state_dict()
        del state["fc7_mbox_loc.bias"]
        with pytest.raises(ValueError, match="missing keys: fc7_mbox_loc.bias"):
            load_s3fd(write_state(tmp_path / "s3fd.pth", state), config=s3fd.TINY)

    def test_it_refuses_wrong_shapes_naming_them(self, tmp_path):
        path = write_state(tmp_path / "sfd_face.pth", s3fd.S3FD(s3fd.TINY).state_dict())
        with pytest.raises(ValueError, match="expected shapes") as error:
            load_s3fd(path)  # tiny widths against the published config
        assert "(4, 3, 3, 3) ≠ (64, 3, 3, 3)" in str(error.value)

    def test_it_refuses_a_file_that_is_not_a_state_dict(self, tmp_path):
        garbage = tmp_path / "sfd_face.pth"
        garbage.write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="not a readable PyTorch state dict"):
            load_s3fd(garbage)
        with pytest.raises(ValueError, match="flat state dict of tensors"):
            load_s3fd(write_state(tmp_path / "other.pth", {"epoch": 3}))
