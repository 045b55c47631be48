"""Raw videos → Wav2Lip's training layout (generation/training/preprocess.py).

The synthetic corpus (one face, one voice, two sentences at 128 px; the session fixture ``training_corpus``) is
the real input; the failure cases use small hand-made videos and a stand-in detector, so they cost no detection.
"""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile
from django.core.management import call_command

from generation import media
from generation.training import preprocess
from generation.training.dataset import read_face_image, read_names

FPS = 25
SAMPLES_PER_FRAME = 16000 // FPS  # 640
AAC_FRAME = 1024  # the decoded AAC stream ends on a whole AAC frame, padded with silence


def corpus_clips(root):
    """(layout name, raw mp4, raw wav, provenance) of each corpus clip under ``root/corpus``."""
    clips = []
    for meta_path in sorted((root / "corpus").glob("*.json")):
        provenance = json.loads(meta_path.read_text())
        identity = provenance["identity"]["name"]
        stem = meta_path.stem
        clips.append((f"{identity}/{stem.removeprefix(identity + '_')}", meta_path.with_suffix(".mp4"),
                      meta_path.with_suffix(".wav"), provenance))
    return clips


class FixedBox:
    """A stand-in detector: the same box in every frame, none in the frames listed in ``without``."""

    def __init__(self, box=(8, 6, 40, 44), without=()):
        self.box = np.array([[*box, 1.0]], dtype=np.float32)
        self.without = set(without)

    def detect_batch(self, frames):
        return [np.zeros((0, 5), np.float32) if k in self.without else self.box for k in range(len(frames))]


def write_clip(path, n_frames=30, size=48, with_audio=True):
    """A small mp4 whose frames differ (a moving bar) with a tone, or without sound."""
    frames = np.full((n_frames, size, size, 3), 90, np.uint8)
    for k in range(n_frames):
        frames[k, :, k % size] = 250
    audio = (0.2 * np.sin(2 * np.pi * 220 * np.arange(n_frames * SAMPLES_PER_FRAME) / 16000)).astype(np.float32)
    media.write_video(path, frames, FPS, audio if with_audio else None, 16000 if with_audio else None)
    return path


# --- the corpus, preprocessed -------------------------------------------------------------------------------


def test_every_corpus_clip_becomes_one_face_jpg_per_video_frame(training_corpus):
    clips = corpus_clips(training_corpus)
    assert len(clips) == 2
    for name, video, _, provenance in clips:
        folder = training_corpus / name
        jpgs = sorted(p.name for p in folder.glob("*.jpg"))
        assert jpgs == sorted(f"{k}.jpg" for k in range(provenance["n_frames"]))
        assert media.probe(video).n_frames == provenance["n_frames"]


def test_the_crops_are_the_padded_smoothed_face_boxes_at_their_own_size(training_corpus):
    for name, _, _, _ in corpus_clips(training_corpus):
        meta = json.loads((training_corpus / name / "meta.json").read_text())
        assert meta["detector"] == "dlib" and meta["pads"] == [0, 10, 0, 0] and meta["frames_without_face"] == []
        for k in (0, meta["n_frames"] // 2, meta["n_frames"] - 1):
            x1, y1, x2, y2 = meta["boxes"][k]
            crop = read_face_image(training_corpus / name / f"{k}.jpg")  # no resize: as written
            assert crop.shape == (y2 - y1, x2 - x1, 3)
            # The corpus face fills the middle of its 128 px frame; a face box is a good part of it.
            assert 40 <= x2 - x1 <= 128 and 40 <= y2 - y1 <= 128


def test_audio_wav_is_the_clips_sound_at_16_khz_mono_aligned_and_as_long_as_the_video(training_corpus):
    for name, _, raw_wav, provenance in corpus_clips(training_corpus):
        info = soundfile.info(str(training_corpus / name / "audio.wav"))
        assert (info.samplerate, info.channels) == (16000, 1)
        video_samples = provenance["n_frames"] * SAMPLES_PER_FRAME
        # The audio stream decoded from the mp4 (AAC) ends on a whole AAC frame: the video's length, plus padding.
        assert video_samples <= info.frames < video_samples + AAC_FRAME
        extracted, _ = soundfile.read(str(training_corpus / name / "audio.wav"), dtype="float32")
        original, _ = soundfile.read(str(raw_wav), dtype="float32")
        assert len(original) == video_samples
        lags = range(-40, 41)
        core = slice(2000, video_samples - 2000)
        scores = [np.dot(extracted[core.start + lag:core.stop + lag], original[core]) for lag in lags]
        assert lags[int(np.argmax(scores))] == 0  # no delay between the frames and the sound
        assert np.abs(extracted[video_samples:]).max(initial=0) < 1e-3  # the padding is silence


def test_the_file_lists_name_every_video_once_split_into_train_and_val(training_corpus):
    names = {name for name, *_ in corpus_clips(training_corpus)}
    train = read_names(training_corpus / "filelists" / "train.txt")
    val = read_names(training_corpus / "filelists" / "val.txt")
    assert set(train) | set(val) == names
    assert not set(train) & set(val)
    assert len(train) == len(val) == 1  # val_fraction 0.1 of two videos: one each, so both sides exist


def test_a_finished_corpus_is_not_rebuilt(training_corpus):
    stamp = os.stat(training_corpus / "corpus.json").st_mtime_ns
    config = json.loads((training_corpus / "corpus.json").read_text())["corpus"]
    from generation import corpus

    again = preprocess.corpus_dataset(training_corpus, corpus.CorpusConfig(**{
        **config, "faces": tuple(config["faces"]), "voices": tuple(config["voices"])}))
    assert again == training_corpus
    assert os.stat(training_corpus / "corpus.json").st_mtime_ns == stamp


# --- idempotence ---------------------------------------------------------------------------------------------


def test_a_finished_video_is_not_redone_and_a_half_written_one_is(tmp_path):
    source = write_clip(tmp_path / "in" / "spk" / "clip.mp4")
    out = tmp_path / "out"
    first = preprocess.preprocess_videos(tmp_path / "in", out, detector=FixedBox())
    assert first.written == ["spk/clip"] and first.skipped == {}
    stamp = os.stat(out / "spk" / "clip" / "0.jpg").st_mtime_ns

    second = preprocess.preprocess_videos(tmp_path / "in", out, detector=FixedBox(box=(0, 0, 10, 10)))
    assert second.written == [] and second.already_done == ["spk/clip"]
    assert os.stat(out / "spk" / "clip" / "0.jpg").st_mtime_ns == stamp

    # A run killed half-way leaves only a hidden temporary folder: the video counts as not done.
    shutil.copy(source, tmp_path / "in" / "spk" / "other.mp4")
    stale = out / "spk" / ".other.tmp-killed"
    stale.mkdir()
    (stale / "0.jpg").write_bytes(b"half")
    third = preprocess.preprocess_videos(tmp_path / "in", out, detector=FixedBox())
    assert third.written == ["spk/other"] and third.already_done == ["spk/clip"]
    assert not stale.exists()
    assert len(list((out / "spk" / "other").glob("*.jpg"))) == 30
    assert sorted(os.listdir(out / "spk")) == ["clip", "other"]  # no temporary folder left behind


# --- what gets skipped ----------------------------------------------------------------------------------------


def test_a_corrupt_or_faceless_video_is_skipped_with_its_reason_and_the_rest_go_on(tmp_path, training_corpus):
    inputs = tmp_path / "in"
    (inputs / "broken").mkdir(parents=True)
    (inputs / "broken" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    write_clip(inputs / "empty" / "no_face.mp4")  # a bar on grey: dlib finds no face
    write_clip(inputs / "mute" / "silent.mp4", with_audio=False)
    _, video, _, _ = corpus_clips(training_corpus)[0]
    (inputs / "astronaut").mkdir()
    shutil.copy(video, inputs / "astronaut" / "talk.mp4")

    report = preprocess.preprocess_videos(inputs, tmp_path / "out")  # the real dlib detector

    assert report.written == ["astronaut/talk"]
    assert set(report.skipped) == {"broken/corrupt", "empty/no_face", "mute/silent"}
    assert "no face" in report.skipped["empty/no_face"]
    assert "no audio" in report.skipped["mute/silent"]
    assert report.skipped["broken/corrupt"]  # ffprobe's complaint
    assert not (tmp_path / "out" / "broken").exists() or not any((tmp_path / "out" / "broken").iterdir())
    assert read_names(tmp_path / "out" / "filelists" / "train.txt") == ["astronaut/talk"]
    assert read_names(tmp_path / "out" / "filelists" / "val.txt") == []  # one video: nothing to hold out


def test_a_few_frames_without_a_face_take_the_neighbours_box(tmp_path):
    write_clip(tmp_path / "in" / "spk" / "clip.mp4", n_frames=40)
    report = preprocess.preprocess_videos(tmp_path / "in", tmp_path / "out", detector=FixedBox(without={7}))
    assert report.written == ["spk/clip"]
    meta = json.loads((tmp_path / "out" / "spk" / "clip" / "meta.json").read_text())
    assert meta["frames_without_face"] == [7]
    assert meta["boxes"][7] == meta["boxes"][6]
    assert len(list((tmp_path / "out" / "spk" / "clip").glob("*.jpg"))) == 40


def test_more_than_a_small_fraction_of_faceless_frames_skips_the_video(tmp_path):
    write_clip(tmp_path / "in" / "spk" / "clip.mp4", n_frames=40)
    report = preprocess.preprocess_videos(tmp_path / "in", tmp_path / "out", detector=FixedBox(without={3, 9, 20}))
    assert report.written == [] and "no face in 3 of 40 frames" in report.skipped["spk/clip"]


def test_a_video_at_another_frame_rate_is_skipped(tmp_path):
    frames = np.full((12, 48, 48, 3), 90, np.uint8)
    media.write_video(tmp_path / "in" / "spk" / "fast.mp4", frames, 30, np.zeros(6400, np.float32), 16000)
    report = preprocess.preprocess_videos(tmp_path / "in", tmp_path / "out", detector=FixedBox())
    assert "30 fps" in report.skipped["spk/fast"]


def test_s3fd_needs_the_users_weights_and_says_which_file(tmp_path):
    config = preprocess.PreprocessConfig(detector="s3fd", s3fd_weights=str(tmp_path / "sfd_face.pth"))
    with pytest.raises(FileNotFoundError, match="sfd_face.pth"):
        preprocess.make_detector(config)


# --- file lists and naming ------------------------------------------------------------------------------------


def test_the_split_is_by_video_deterministic_and_independent_of_order():
    names = [f"spk{k % 3}/video{k:02d}" for k in range(20)]
    train, val = preprocess.split_train_val(names, 0.1)
    assert len(val) == 2 and len(train) == 18 and not set(train) & set(val)
    assert preprocess.split_train_val(list(reversed(names)), 0.1) == (train, val)
    # Adding a video moves no old one from train to val (while the val count stays the same).
    _, bigger_val = preprocess.split_train_val(names + ["spk9/new"], 0.1)
    assert len(bigger_val) == 2 and set(bigger_val) - {"spk9/new"} <= set(val)
    assert preprocess.split_train_val(names, 0.0) == (sorted(names), [])


def test_videos_are_named_speaker_slash_video_from_the_folder_layout(tmp_path):
    for relative in ("spk1/a.mp4", "spk2/b.MOV", "loose.mkv", "spk1/notes.txt", ".hidden/c.mp4"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    names = [job.name for job in preprocess.find_videos(tmp_path)]
    assert names == sorted([f"{tmp_path.name}/loose", "spk1/a", "spk2/b"])


# --- the management command ----------------------------------------------------------------------------------


def test_the_command_preprocesses_a_folder_and_reports_what_it_skipped(tmp_path, training_corpus, capsys):
    _, video, _, _ = corpus_clips(training_corpus)[0]
    (tmp_path / "in" / "spk").mkdir(parents=True)
    shutil.copy(video, tmp_path / "in" / "spk" / "talk.mp4")
    (tmp_path / "in" / "spk" / "junk.mp4").write_bytes(b"not a video")
    call_command("preprocess_videos", str(tmp_path / "in"), str(tmp_path / "out"), "--pads", "0", "5", "0", "0",
                 "--val-fraction", "0.5")
    out, err = capsys.readouterr()
    assert "1 videos preprocessed" in out and "1 skipped" in out
    assert "skipped spk/junk" in err
    assert json.loads((tmp_path / "out" / "spk" / "talk" / "meta.json").read_text())["pads"] == [0, 5, 0, 0]
