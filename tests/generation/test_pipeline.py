"""The lip-sync pipeline end to end on CPU, with tiny random-weight models on the synthetic corpus."""

import numpy as np
import pytest
import torch
from torch import nn

from generation import audio as audio_features
from generation import corpus, faces, media, nets, pipeline
from generation.nets import MASKED_FIRST, REFERENCE_FIRST, InputSpec


@pytest.fixture(scope="module")
def talking_face(tmp_path_factory):
    """The first second of one corpus clip: (frames (25, 160, 160, 3), fps 25, 16 kHz audio)."""
    config = corpus.CorpusConfig(faces=("astronaut",), voices=corpus.CorpusConfig().voices[:1],
                                 sentences_per_voice=1, size=160, seed=21)
    item = corpus.build_corpus(tmp_path_factory.mktemp("corpus"), config)[0]
    frames, fps = media.read_video(item.video_path)
    n = int(fps)
    return frames[:n], fps, media.read_audio(item.audio_path)[: round(n / fps * 16000)]


@pytest.fixture(scope="module")
def detector():
    return faces.DlibFaceDetector()


def _outside_boxes(shape, boxes):
    mask = np.ones(shape[:3], bool)  # (T, H, W)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        mask[i, y1:y2, x1:x2] = False
    return mask


@pytest.mark.parametrize("architecture", ["wav2lip", "lipgan", "l1wgan_gp", "attn_wav2lip", "stabsync"])
def test_it_keeps_fps_length_and_every_pixel_outside_the_face(architecture, talking_face, detector):
    frames, fps, wav = talking_face
    arch = nets.get_architecture(architecture)
    torch.manual_seed(0)
    generator = arch.build_generator(arch.config("tiny"))
    out = pipeline.LipSyncPipeline(generator, detector, pipeline.PipelineConfig(batch_size=16))(frames, fps, wav)
    assert out.fps == fps
    assert out.frames.shape == frames.shape  # the corpus audio covers its video exactly
    assert len(out.audio) == round(len(frames) / fps * 16000)
    outside = _outside_boxes(out.frames.shape, out.boxes)
    assert np.array_equal(out.frames[outside], frames[outside])
    assert not np.array_equal(out.frames[~outside], frames[~outside])  # the generated face was pasted


class EchoReference(nn.Module):
    """A stand-in generator that returns its reference half: the pipeline must then give back the video."""

    def __init__(self, face_order, color="BGR"):
        super().__init__()
        self.input_spec = InputSpec(face_order=face_order, color=color)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, mel, faces_in):
        self.calls.append((tuple(mel.shape), tuple(faces_in.shape)))
        reference = faces_in[:, 3:] if self.input_spec.face_order == MASKED_FIRST else faces_in[:, :3]
        return reference + 0 * self.dummy


@pytest.mark.parametrize("face_order", [MASKED_FIRST, REFERENCE_FIRST])
def test_it_hands_the_model_its_halves_and_colours_the_way_it_expects(face_order, talking_face, detector):
    frames, fps, wav = talking_face
    out = pipeline.LipSyncPipeline(EchoReference(face_order), detector)(frames, fps, wav)
    # Echoing the reference returns the original face, up to two resizes and the ×255 truncation.
    inside = ~_outside_boxes(out.frames.shape, out.boxes)
    error = np.abs(out.frames[inside].astype(int) - frames[inside].astype(int)).mean()
    assert error < 6, error


def test_it_zeroes_the_lower_half_of_the_target_only(talking_face, detector):
    frames, fps, wav = talking_face
    seen = {}

    class Inspect(EchoReference):
        def forward(self, mel, faces_in):
            seen["faces"] = faces_in.clone()
            return super().forward(mel, faces_in)

    pipeline.LipSyncPipeline(Inspect(MASKED_FIRST), detector)(frames[:8], fps, wav[:5120])
    masked, reference = seen["faces"][:, :3], seen["faces"][:, 3:]
    assert (masked[:, :, 48:] == 0).all() and torch.equal(masked[:, :, :48], reference[:, :, :48])
    assert reference[:, :, 48:].abs().sum() > 0


def test_it_animates_a_still_image_for_the_whole_audio(talking_face, detector):
    frames, fps, wav = talking_face
    two_seconds = np.concatenate([wav, wav])
    out = pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)(frames[0], 25.0, two_seconds)
    assert out.frames.shape == (50, *frames.shape[1:])


def test_it_loops_the_video_when_the_audio_is_longer_and_cuts_it_when_shorter(talking_face, detector):
    frames, fps, wav = talking_face
    short_video = frames[:10]
    two_seconds = np.concatenate([wav, wav])
    out = pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)(short_video, fps, two_seconds)
    assert len(out.frames) == 50
    outside = _outside_boxes(out.frames.shape, out.boxes)
    looped = short_video[np.arange(50) % 10]
    assert np.array_equal(out.frames[outside], looped[outside])
    out = pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)(frames, fps, wav[:9600])
    assert len(out.frames) == 15


def test_it_feeds_each_frame_the_mel_window_that_starts_at_its_timestamp(talking_face, detector):
    frames, fps, wav = talking_face
    seen = []

    class Inspect(EchoReference):
        def forward(self, mel, faces_in):
            seen.append(mel.clone())
            return super().forward(mel, faces_in)

    pipeline.LipSyncPipeline(Inspect(MASKED_FIRST), detector)(frames, fps, wav)
    mel = audio_features.melspectrogram(wav)
    fed = torch.cat(seen)[:, 0].numpy()  # (T, 80, 16)
    for i in (0, 7, 20):
        start = audio_features.mel_window_start(i, fps)
        assert np.array_equal(fed[i], mel[:, start:start + 16])


def test_it_refuses_audio_shorter_than_one_mel_window(talking_face, detector):
    frames, fps, wav = talking_face
    with pytest.raises(audio_features.AudioError):
        pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)(frames, fps, wav[:1000])


def test_it_refuses_a_video_without_a_face_and_bridges_a_short_gap(talking_face, detector):
    frames, fps, wav = talking_face
    blank = np.full_like(frames[:20], 90)
    with pytest.raises(faces.FaceNotFoundError, match="any frame"):
        pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)(blank, fps, wav[:12800])
    gappy = frames[:20].copy()
    gappy[5:8] = 90  # three frames without a face: filled from their neighbours
    out = pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)(gappy, fps, wav[:12800])
    assert len(out.frames) == 20


def test_it_halves_the_batch_when_cuda_runs_out_of_memory(talking_face, detector):
    frames, fps, wav = talking_face

    class Greedy(EchoReference):
        def forward(self, mel, faces_in):
            if len(mel) > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(mel, faces_in)

    model = Greedy(MASKED_FIRST)
    out = pipeline.LipSyncPipeline(model, detector, pipeline.PipelineConfig(batch_size=32))(frames, fps, wav)
    assert len(out.frames) == len(frames)
    assert max(call[0][0] for call in model.calls) == 4


def test_it_wants_16khz_audio_and_uint8_rgb_frames(talking_face, detector):
    frames, fps, wav = talking_face
    run = pipeline.LipSyncPipeline(EchoReference(MASKED_FIRST), detector)
    with pytest.raises(ValueError, match="16000"):
        run(frames, fps, wav, sample_rate=44100)
    with pytest.raises(ValueError, match="uint8"):
        run(frames.astype(np.float32), fps, wav)


def test_it_validates_a_model_conditions_options():
    assert pipeline.validate_options({})["pads"] == (0, 10, 0, 0)
    assert pipeline.validate_options({"feather": 6, "detector": "s3fd"})["feather"] == 6
    for bad in ({"pads": [1, 2]}, {"batch_size": 0}, {"detector": "mtcnn"}, {"unknown": 1}, {"smooth": "yes"}):
        with pytest.raises(ValueError):
            pipeline.validate_options(bad)
