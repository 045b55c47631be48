"""Training windows from the preprocessed layout (generation/training/dataset.py).

Two kinds of data: the preprocessed synthetic corpus (session fixture ``training_corpus``) for the real thing —
mel alignment, crops read back from the jpgs — and small hand-made layouts whose frame k is a flat colour that
encodes k, so that which frames a sample holds can be read off its pixels exactly.
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from generation import audio as audio_features
from generation import faces
from generation.nets import MASKED_FIRST, REFERENCE_FIRST
from generation.training.dataset import (
    CacheConfig,
    DatasetError,
    EmptyDatasetError,
    LipSyncDataset,
    WindowSpec,
    generator_input,
    masked,
    read_names,
    write_face_image,
)

REPO = Path(__file__).resolve().parents[3]


def corpus_names(root):
    return read_names(root / "filelists" / "train.txt") + read_names(root / "filelists" / "val.txt")


@pytest.fixture(scope="module")
def corpus_dataset(training_corpus):
    return LipSyncDataset(training_corpus, corpus_names(training_corpus), WindowSpec())


@pytest.fixture(scope="module")
def corpus_mels(training_corpus):
    """name → the full mel spectrogram of its audio.wav, computed as inference does."""
    return {name: audio_features.melspectrogram(audio_features.load_wav(training_corpus / name / "audio.wav"))
            for name in corpus_names(training_corpus)}


# --- hand-made layouts ---------------------------------------------------------------------------------------


def colour_of(k):
    """Frame k's flat RGB colour: R and G step by 16 (JPEG moves a flat colour by a few levels at most)."""
    return np.array([24 + 16 * (k % 13), 24 + 16 * (k // 13), 200], dtype=np.uint8)


def frame_numbers(window, color="BGR"):
    """The frame numbers a (T, 3, S, S) window in [0, 1] shows."""
    means = window.mean(dim=(2, 3)).numpy() * 255  # (T, 3)
    rgb = means[:, ::-1] if color == "BGR" else means
    return [int(round((r - 24) / 16)) + 13 * int(round((g - 24) / 16)) for r, g, _ in rgb]


def write_video_folder(root, name, n_frames, *, seconds=None, missing=(), size=24, sample_rate=16000, fps=None):
    """A video folder of flat-colour frames (frame k shows colour_of(k)) and a noise audio.wav.

    ``seconds``: audio length (default: the video's, n_frames / 25); ``missing``: frame numbers left out.
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_frames):
        if k not in missing:
            write_face_image(folder / f"{k}.jpg", np.broadcast_to(colour_of(k), (size, size, 3)))
    seconds = n_frames / 25 if seconds is None else seconds
    noise = np.random.default_rng(n_frames).uniform(-0.3, 0.3, int(round(seconds * sample_rate)))
    soundfile.write(str(folder / "audio.wav"), noise.astype(np.float32), sample_rate, subtype="PCM_16")
    if fps is not None:
        (folder / "meta.json").write_text(f'{{"fps": {fps}}}')
    return folder


@pytest.fixture(scope="module")
def flat_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat-layout")
    write_video_folder(root, "spk/long", 80)
    write_video_folder(root, "spk/gappy", 60, missing={30})
    return root


# --- what a sample holds -------------------------------------------------------------------------------------


def test_a_sample_holds_the_documented_tensors(corpus_dataset):
    sample = corpus_dataset.sample(np.random.default_rng(0))
    shapes = {key: tuple(value.shape) for key, value in sample.items()}
    assert shapes == {
        "faces": (5, 3, 96, 96), "reference": (5, 3, 96, 96), "shifted_faces": (5, 3, 96, 96),
        "shift": (), "mel": (1, 80, 16), "frame_mels": (5, 1, 80, 16),
        "video_index": (), "start": (), "reference_start": (),
    }
    for key in ("faces", "reference", "shifted_faces", "mel", "frame_mels"):
        assert sample[key].dtype == torch.float32
    for key in ("shift", "video_index", "start", "reference_start"):
        assert sample[key].dtype == torch.int64
    for key in ("faces", "reference", "shifted_faces"):
        assert 0 <= sample[key].min() and sample[key].max() <= 1
    assert -4 <= sample["mel"].min() and sample["mel"].max() <= 4


def test_a_batch_stacks_samples_drawn_one_after_another(corpus_dataset):
    batch = corpus_dataset.batch(np.random.default_rng(5), 3)
    rng = np.random.default_rng(5)
    one_by_one = [corpus_dataset.sample(rng) for _ in range(3)]
    assert batch["faces"].shape == (3, 5, 3, 96, 96) and batch["shift"].shape == (3,)
    for key, value in batch.items():
        assert torch.equal(value, torch.stack([s[key] for s in one_by_one])), key


def test_the_sync_mel_is_wav2lips_crop_audio_window_at_the_target_start(corpus_dataset, corpus_mels):
    rng = np.random.default_rng(1)
    for _ in range(12):
        sample = corpus_dataset.sample(rng)
        mel = corpus_mels[corpus_dataset.videos[int(sample["video_index"])]]
        start = int(80 * int(sample["start"]) / 25)
        assert torch.equal(sample["mel"][0], torch.from_numpy(mel[:, start:start + 16]))


def test_each_frame_gets_the_mel_window_starting_at_its_own_timestamp_by_default(corpus_dataset, corpus_mels):
    rng = np.random.default_rng(2)
    for _ in range(6):
        sample = corpus_dataset.sample(rng)
        mel = corpus_mels[corpus_dataset.videos[int(sample["video_index"])]]
        for t in range(5):
            s = int(80 * (int(sample["start"]) + t) / 25)
            assert torch.equal(sample["frame_mels"][t, 0], torch.from_numpy(mel[:, s:s + 16]))


def test_wav2lips_training_offset_moves_the_per_frame_windows_one_frame_earlier(training_corpus, corpus_mels):
    names = corpus_names(training_corpus)
    dataset = LipSyncDataset(training_corpus, names, WindowSpec(frame_mel_offset=-1))
    rng = np.random.default_rng(3)
    starts = []
    for _ in range(40):
        sample = dataset.sample(rng)
        start = int(sample["start"])
        starts.append(start)
        mel = corpus_mels[dataset.videos[int(sample["video_index"])]]
        for t in range(5):
            s = int(80 * (start + t - 1) / 25)
            assert torch.equal(sample["frame_mels"][t, 0], torch.from_numpy(mel[:, s:s + 16]))
    assert min(starts) >= 1  # frame 0 would need a window before the audio: never drawn (Wav2Lip rejects it)


def test_no_window_runs_past_the_end_of_the_mel(training_corpus, corpus_mels):
    dataset = LipSyncDataset(training_corpus, corpus_names(training_corpus), WindowSpec(mel_frames=27))
    rng = np.random.default_rng(4)
    for _ in range(200):
        sample = dataset.sample(rng)
        columns = corpus_mels[dataset.videos[int(sample["video_index"])]].shape[1]
        last = int(80 * (int(sample["start"]) + 4) / 25)
        assert last + 27 <= columns
        assert sample["frame_mels"].shape == (5, 1, 80, 27)


def test_the_faces_are_the_jpgs_of_the_target_and_the_shifted_window(corpus_dataset, training_corpus):
    def jpg(name, k):  # read independently of the dataset: Pillow + the inference crops' resize, as BGR
        from PIL import Image

        rgb = np.array(Image.open(training_corpus / name / f"{k}.jpg").convert("RGB"))
        return torch.from_numpy(faces.resize(rgb, 96, 96)[..., ::-1].copy()).permute(2, 0, 1).float() / 255

    rng = np.random.default_rng(6)
    for _ in range(4):
        sample = corpus_dataset.sample(rng)
        name = corpus_dataset.videos[int(sample["video_index"])]
        start, shift = int(sample["start"]), int(sample["shift"])
        for t in range(5):
            # cv2, where installed, decodes and resizes within a level or two of Pillow + faces.resize
            assert (sample["faces"][t] - jpg(name, start + t)).abs().max() <= 3 / 255
            assert (sample["shifted_faces"][t] - jpg(name, start + shift + t)).abs().max() <= 3 / 255
            assert (sample["reference"][t] - jpg(name, int(sample["reference_start"]) + t)).abs().max() <= 3 / 255


def test_the_shifted_window_is_moved_by_the_reported_shift_within_1_to_6_frames_either_way(flat_root):
    dataset = LipSyncDataset(flat_root, ["spk/long"], WindowSpec(face_size=16))
    rng = np.random.default_rng(7)
    shifts = []
    for _ in range(300):
        sample = dataset.sample(rng)
        start, shift = int(sample["start"]), int(sample["shift"])
        assert frame_numbers(sample["faces"]) == list(range(start, start + 5))
        assert frame_numbers(sample["shifted_faces"]) == list(range(start + shift, start + shift + 5))
        shifts.append(shift)
    assert set(shifts) == {-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6}


def test_the_reference_is_another_window_of_the_same_video_not_overlapping_the_target(flat_root):
    dataset = LipSyncDataset(flat_root, ["spk/long", "spk/gappy"], WindowSpec(face_size=16))
    rng = np.random.default_rng(8)
    for _ in range(200):
        sample = dataset.sample(rng)
        start, reference = int(sample["start"]), int(sample["reference_start"])
        assert abs(reference - start) >= 5
        assert frame_numbers(sample["reference"]) == list(range(reference, reference + 5))
        assert not torch.equal(sample["reference"], sample["faces"])


def test_a_video_too_short_for_separate_windows_still_gets_a_different_reference(tmp_path):
    write_video_folder(tmp_path, "spk/short", 11, seconds=2.0)  # T + max_shift frames: the fewest usable
    dataset = LipSyncDataset(tmp_path, ["spk/short"], WindowSpec(face_size=16))
    rng = np.random.default_rng(9)
    for _ in range(50):
        sample = dataset.sample(rng)
        assert int(sample["reference_start"]) != int(sample["start"])


def test_lipgans_reference_distance_can_be_asked_for(flat_root):
    spec = WindowSpec(face_size=16, frames=1, mel_frames=27, sync_mel_frames=27, min_reference_distance=6)
    dataset = LipSyncDataset(flat_root, ["spk/long"], spec)
    rng = np.random.default_rng(10)
    assert all(abs(int(s["reference_start"]) - int(s["start"])) >= 6 for s in (dataset.sample(rng) for _ in range(100)))


def test_windows_never_cover_a_missing_frame(flat_root):
    dataset = LipSyncDataset(flat_root, ["spk/gappy"], WindowSpec(face_size=16))
    rng = np.random.default_rng(11)
    for _ in range(200):
        sample = dataset.sample(rng)
        for first in ("start", "reference_start"):
            assert not int(sample[first]) <= 30 < int(sample[first]) + 5
        shifted_start = int(sample["start"]) + int(sample["shift"])
        assert not shifted_start <= 30 < shifted_start + 5


def test_the_colour_order_and_face_size_follow_the_spec(tmp_path):
    write_video_folder(tmp_path, "spk/v", 30, size=40)  # crops of any size are resized on load
    bgr = LipSyncDataset(tmp_path, ["spk/v"], WindowSpec(face_size=32)).sample(np.random.default_rng(0))
    rgb = LipSyncDataset(tmp_path, ["spk/v"], WindowSpec(face_size=32, color="RGB")).sample(np.random.default_rng(0))
    assert bgr["faces"].shape == (5, 3, 32, 32)
    assert torch.equal(bgr["faces"], rgb["faces"].flip(1))
    assert frame_numbers(rgb["faces"], color="RGB") == frame_numbers(bgr["faces"], color="BGR")


def test_audio_at_another_rate_is_resampled_to_16_khz_first(tmp_path):
    write_video_folder(tmp_path, "spk/v", 40, sample_rate=22050)
    sample = LipSyncDataset(tmp_path, ["spk/v"], WindowSpec(face_size=16)).sample(np.random.default_rng(0))
    mel = audio_features.melspectrogram(audio_features.load_wav(tmp_path / "spk" / "v" / "audio.wav"))
    s = int(80 * int(sample["start"]) / 25)
    assert torch.equal(sample["mel"][0], torch.from_numpy(mel[:, s:s + 16]))


# --- determinism ---------------------------------------------------------------------------------------------


def test_the_same_rng_state_gives_the_same_samples_whatever_is_cached(training_corpus, corpus_dataset):
    first = corpus_dataset.batch(np.random.default_rng(42), 4)
    again = corpus_dataset.batch(np.random.default_rng(42), 4)  # now from the caches
    fresh = LipSyncDataset(training_corpus, corpus_names(training_corpus), WindowSpec(),
                           cache=CacheConfig(images=0, mels=0)).batch(np.random.default_rng(42), 4)
    for key in first:
        assert torch.equal(first[key], again[key]) and torch.equal(first[key], fresh[key]), key
    other = corpus_dataset.batch(np.random.default_rng(43), 4)
    assert not torch.equal(first["faces"], other["faces"])


def batch_digest(root, names, rng):
    dataset = LipSyncDataset(root, names, WindowSpec())
    batch = dataset.batch(rng, 3)
    digest = hashlib.sha256()
    for key in sorted(batch):
        digest.update(key.encode() + batch[key].numpy().tobytes())
    return digest.hexdigest()


def test_a_resumed_run_in_another_process_draws_the_same_samples(training_corpus):
    names = corpus_names(training_corpus)
    rng = np.random.default_rng(2024)
    rng.random(17)  # a run part-way through: its generator state is what a checkpoint saves
    state = rng.bit_generator.state
    here = batch_digest(training_corpus, names, rng)
    script = (
        "import json, sys, numpy as np\n"
        "from tests.generation.training.test_dataset import batch_digest\n"
        "rng = np.random.default_rng(); rng.bit_generator.state = json.loads(sys.argv[1])\n"
        "print(batch_digest(sys.argv[2], sys.argv[3:], rng))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    there = subprocess.run([sys.executable, "-c", script, json.dumps(state), str(training_corpus), *names],
                           cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert there == here


# --- what is left out ----------------------------------------------------------------------------------------


class Recorded(logging.Handler):
    """The dataset's log records (the suite runs with -p no:logging, so without caplog)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("generation.training.dataset").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("generation.training.dataset").removeHandler(self)


def test_videos_too_short_for_a_window_and_the_shift_range_are_skipped_with_the_reason(tmp_path):
    write_video_folder(tmp_path, "spk/enough", 11, seconds=2.0)  # T + max_shift = 11 frames, long audio
    write_video_folder(tmp_path, "spk/short", 10, seconds=2.0)
    write_video_folder(tmp_path, "spk/quiet", 40, seconds=0.5)  # frames enough, the audio ends too soon
    with Recorded() as log:
        dataset = LipSyncDataset(tmp_path, ["spk/enough", "spk/short", "spk/quiet"], WindowSpec(face_size=16))
    assert len(dataset) == 1 and dataset.videos == ["spk/enough"]
    assert set(dataset.skipped) == {"spk/short", "spk/quiet"}
    assert "too short" in dataset.skipped["spk/short"] and "too short" in dataset.skipped["spk/quiet"]
    assert any("spk/short" in m and "too short" in m for m in log.messages)
    assert any("spk/quiet" in m and "too short" in m for m in log.messages)


def test_missing_or_incomplete_folders_and_another_frame_rate_are_skipped(tmp_path):
    write_video_folder(tmp_path, "spk/ok", 30)
    write_video_folder(tmp_path, "spk/no_audio", 30).joinpath("audio.wav").unlink()
    write_video_folder(tmp_path, "spk/thirty_fps", 30, fps=30)
    (tmp_path / "spk" / "no_frames").mkdir()
    names = ["spk/ok", "spk/no_audio", "spk/thirty_fps", "spk/no_frames", "spk/absent"]
    dataset = LipSyncDataset(tmp_path, names, WindowSpec(face_size=16))
    assert dataset.videos == ["spk/ok"]
    assert "audio.wav" in dataset.skipped["spk/no_audio"]
    assert "30 fps" in dataset.skipped["spk/thirty_fps"]
    assert "no face images" in dataset.skipped["spk/no_frames"]
    assert "no folder" in dataset.skipped["spk/absent"]


def test_a_dataset_with_no_usable_video_is_an_error_that_says_why(tmp_path):
    write_video_folder(tmp_path, "spk/short", 8)
    with pytest.raises(EmptyDatasetError, match="spk/short: too short"):
        LipSyncDataset(tmp_path, ["spk/short"], WindowSpec(face_size=16))
    with pytest.raises(EmptyDatasetError, match="0 listed"):
        LipSyncDataset(tmp_path, [], WindowSpec(face_size=16))


def test_names_come_from_a_file_list_or_a_split_name(flat_root):
    (flat_root / "filelists").mkdir(exist_ok=True)
    (flat_root / "filelists" / "train.txt").write_text("spk/long\n\n# a comment\nspk/gappy extra-field\n")
    by_split = LipSyncDataset(flat_root, "train", WindowSpec(face_size=16))
    by_path = LipSyncDataset(flat_root, flat_root / "filelists" / "train.txt", WindowSpec(face_size=16))
    assert by_split.videos == by_path.videos == ["spk/long", "spk/gappy"]
    with pytest.raises(DatasetError, match="does not exist"):
        LipSyncDataset(flat_root, "val", WindowSpec(face_size=16))


def test_a_corrupt_jpg_is_an_error_naming_the_file(tmp_path):
    folder = write_video_folder(tmp_path, "spk/v", 12, seconds=2.0)
    for k in range(12):
        (folder / f"{k}.jpg").write_bytes(b"not a jpeg")
    dataset = LipSyncDataset(tmp_path, ["spk/v"], WindowSpec(face_size=16))
    with pytest.raises(DatasetError, match=r"spk/v/\d+\.jpg"):
        dataset.sample(np.random.default_rng(0))


def test_the_caches_stay_within_their_bounds(flat_root):
    dataset = LipSyncDataset(flat_root, ["spk/long", "spk/gappy"], WindowSpec(face_size=16),
                             cache=CacheConfig(images=20, mels=1))
    rng = np.random.default_rng(12)
    for _ in range(30):
        dataset.sample(rng)
    assert len(dataset._images) == 20 and len(dataset._mels) == 1
    preloaded = LipSyncDataset(flat_root, ["spk/long"], WindowSpec(face_size=16),
                               cache=CacheConfig(images=None, preload=True))
    assert len(preloaded._images) == 80 and len(preloaded._mels) == 1


def test_the_spec_refuses_windows_that_cannot_work():
    with pytest.raises(ValueError, match="min_shift"):
        WindowSpec(min_shift=0)
    with pytest.raises(ValueError, match="min_shift"):
        WindowSpec(min_shift=4, max_shift=3)
    with pytest.raises(ValueError, match="color"):
        WindowSpec(color="YUV")
    with pytest.raises(ValueError, match="frames"):
        WindowSpec(frames=0)


# --- model inputs --------------------------------------------------------------------------------------------


def test_masked_zeroes_rows_from_the_middle_down_and_leaves_the_input_alone():
    faces_in = torch.rand(2, 5, 3, 96, 96) + 0.1
    out = masked(faces_in)
    assert torch.equal(out[..., :48, :], faces_in[..., :48, :])
    assert (out[..., 48:, :] == 0).all()
    assert (faces_in[..., 48:, :] > 0).all()
    odd = masked(torch.ones(3, 7, 7))
    assert odd[:, :3].eq(1).all() and odd[:, 3:].eq(0).all()  # rows S//2 onward, as Wav2Lip's window[:, :, S//2:]


@pytest.mark.parametrize("face_order", [MASKED_FIRST, REFERENCE_FIRST])
def test_generator_input_folds_time_into_the_batch_and_orders_the_halves(face_order):
    target, reference = torch.rand(2, 5, 3, 16, 16), torch.rand(2, 5, 3, 16, 16)
    stacked = generator_input(target, reference, face_order)
    assert stacked.shape == (10, 6, 16, 16)
    masked_half, reference_half = (stacked[:, :3], stacked[:, 3:]) if face_order == MASKED_FIRST \
        else (stacked[:, 3:], stacked[:, :3])
    assert torch.equal(reference_half, reference.reshape(10, 3, 16, 16))
    assert torch.equal(masked_half, masked(target).reshape(10, 3, 16, 16))
    b, t = 1, 3  # row b*T + t is sample b's frame t
    halves = (masked(target[b, t]), reference[b, t]) if face_order == MASKED_FIRST \
        else (reference[b, t], masked(target[b, t]))
    assert torch.equal(stacked[b * 5 + t], torch.cat(halves))
    single = generator_input(target[:, 0], reference[:, 0], face_order)
    assert single.shape == (2, 6, 16, 16)
    with pytest.raises(ValueError, match="face_order"):
        generator_input(target, reference, "sideways")


def test_audio_wav_is_read_exactly_as_load_wav_reads_it(training_corpus, tmp_path):
    from generation.training.dataset import load_audio

    for name in corpus_names(training_corpus):
        path = training_corpus / name / "audio.wav"
        assert np.array_equal(load_audio(path), audio_features.load_wav(path))
    write_video_folder(tmp_path, "spk/v", 30, sample_rate=22050)  # resampled through load_wav
    path = tmp_path / "spk" / "v" / "audio.wav"
    assert np.array_equal(load_audio(path), audio_features.load_wav(path))
