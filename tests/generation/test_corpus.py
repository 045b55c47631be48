"""The synthetic GRID-like corpus: grammar, espeak-ng speech with its own phoneme timings, viseme
curves, a real face whose mouth follows the speech, and deterministic files with provenance.

Everything here runs on CPU without Django; the expensive parts (speech, face rigs, two small
builds) are module-scoped fixtures. Frames are 128–192 px to keep the whole file around 30 s.
"""

import json

import numpy as np
import pytest
import soundfile

from generation import corpus, faces, media

pytestmark = pytest.mark.skipif(not media.ffmpeg_available(), reason="ffmpeg is not installed")

SENTENCE = ("bin", "blue", "at", "f", "two", "now")
SMALL = corpus.CorpusConfig(faces=("astronaut",), voices=("en-us", "en+f3"), sentences_per_voice=1,
                            size=128, seed=7)


def inner_lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(T,) mean distance between the three upper/lower inner-lip landmark pairs."""
    return np.linalg.norm(landmarks[:, [61, 62, 63]] - landmarks[:, [67, 66, 65]], axis=2).mean(axis=1)


def frame_at(seconds: float, fps: float) -> int:
    """The frame whose centre is nearest to a time (frame k is sampled at (k + ½)/fps)."""
    return int(round(seconds * fps - 0.5))


@pytest.fixture(scope="module")
def speech():
    audio, phonemes = corpus.synthesize(" ".join(SENTENCE), "en-us")
    return audio, phonemes


@pytest.fixture(scope="module")
def clip(speech):
    """The sentence laid out as a corpus clip: 0.3 s of silence each side, whole 25 fps frames."""
    audio, phonemes = speech
    padding = 0.3
    phonemes = [corpus.PhonemeTiming(p.symbol, p.start + padding, p.duration) for p in phonemes]
    duration = len(audio) / 16000 + 2 * padding
    n_frames = int(np.ceil(duration * 25))
    mouth_open, mouth_width = corpus.mouth_curves(phonemes, n_frames, 25.0)
    return phonemes, n_frames, mouth_open, mouth_width


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    first = corpus.build_corpus(tmp_path_factory.mktemp("first"), SMALL)
    second = corpus.build_corpus(tmp_path_factory.mktemp("second"), SMALL)
    return first, second


# --- grammar -------------------------------------------------------------------------------------

def test_it_draws_six_word_sentences_from_the_grid_slots():
    sentences = corpus.grid_sentences(50, seed=1)
    assert len(sentences) == 50 and len(set(sentences)) == 50
    for words in sentences:
        assert len(words) == 6
        for word, slot in zip(words, corpus.GRID_SLOTS):
            assert word in slot
    assert "w" not in corpus.GRID_LETTERS and len(corpus.GRID_LETTERS) == 25


def test_it_codes_the_content_id_like_grid():
    assert corpus.grid_content_id(SENTENCE) == "bbaf2n"
    assert corpus.grid_content_id(("set", "white", "with", "z", "nine", "soon")) == "swwz9s"
    assert corpus.grid_content_id(("lay", "green", "in", "a", "zero", "please")) == "lgia0p"
    for words in corpus.grid_sentences(20, seed=2):
        content_id = corpus.grid_content_id(words)
        assert len(content_id) == 6 and content_id[3] == words[3]
        assert int(content_id[4]) == corpus.GRID_DIGITS.index(words[4])


def test_it_draws_the_same_sentences_for_a_seed_and_others_for_another():
    assert corpus.grid_sentences(8, seed=5) == corpus.grid_sentences(8, seed=5)
    assert corpus.grid_sentences(8, seed=5) != corpus.grid_sentences(8, seed=6)


def test_it_rejects_words_outside_the_grammar():
    with pytest.raises(ValueError, match="not a GRID word"):
        corpus.grid_content_id(("bin", "purple", "at", "f", "two", "now"))
    with pytest.raises(ValueError, match="6 words"):
        corpus.grid_content_id(("bin", "blue"))
    with pytest.raises(ValueError):
        corpus.grid_sentences(0, seed=0)


def test_it_says_the_letter_a_by_its_name():
    # espeak-ng would read a lone "a" as the article (a schwa); GRID speakers say "ay".
    _, phonemes = corpus.synthesize(corpus.spoken_text(("set", "red", "at", "a", "one", "soon")), "en-us")
    symbols = [p.symbol for p in phonemes]
    assert "eI" in symbols and "@" not in symbols


# --- speech --------------------------------------------------------------------------------------

def test_it_synthesises_16khz_float32_mono_speech(speech):
    audio, _ = speech
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / 16000 < 2.5
    assert np.sqrt(np.mean(audio ** 2)) > 0.02 and np.abs(audio).max() <= 1.0


def test_it_reports_the_phonemes_espeak_spoke(speech):
    _, phonemes = speech
    symbols = [p.symbol for p in phonemes]
    # The event list measured for this sentence in the environment notes (espeak-ng 1.51, en-us).
    assert symbols == ["b", "I", "n", "b", "l", "u:", "a", "t#", "E", "f", "t", "u:", "n", "aU"]


def test_it_times_phonemes_in_order_and_inside_the_audio(speech):
    audio, phonemes = speech
    duration = len(audio) / 16000
    starts = np.array([p.start for p in phonemes])
    ends = np.array([p.end for p in phonemes])
    assert np.all(np.diff(starts) > 0)
    assert np.all(starts[1:] >= ends[:-1] - 1e-9)  # no overlaps
    assert starts[0] >= 0 and ends[-1] <= duration + 1e-9
    assert ends[-1] > duration - 0.03  # the last phoneme runs to the end of the speech


def test_it_puts_the_energy_inside_the_phonemes(speech):
    audio, phonemes = speech
    rate = 16000
    padded = np.concatenate([np.zeros(rate // 4, np.float32), audio, np.zeros(rate // 4, np.float32)])
    inside = np.zeros(len(padded), bool)
    for p in phonemes:
        inside[int((p.start + 0.25) * rate): int((p.end + 0.25) * rate)] = True
    rms_inside = np.sqrt(np.mean(padded[inside] ** 2))
    rms_outside = np.sqrt(np.mean(padded[~inside] ** 2))
    assert rms_inside > 50 * rms_outside
    for p in phonemes:
        if corpus.visemes_of(p.symbol)[0].endswith("vowel"):
            segment = audio[int(p.start * rate): int(p.end * rate)]
            assert np.sqrt(np.mean(segment ** 2)) > 0.3 * rms_inside, p  # vowels are loud where espeak says


def test_it_synthesises_the_same_samples_every_time(speech):
    audio, phonemes = speech
    again, phonemes_again = corpus.synthesize(" ".join(SENTENCE), "en-us")
    assert np.array_equal(audio, again) and phonemes == phonemes_again


def test_it_resamples_to_other_rates_without_moving_the_timings(speech):
    audio, phonemes = speech
    audio_8k, phonemes_8k = corpus.synthesize(" ".join(SENTENCE), "en-us", sample_rate=8000)
    assert phonemes_8k == phonemes
    assert abs(len(audio_8k) / 8000 - len(audio) / 16000) < 1e-3


def test_it_rejects_an_unknown_voice_and_empty_text():
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        corpus.synthesize("bin blue", "xx-no-such-voice")
    with pytest.raises(ValueError, match="empty"):
        corpus.synthesize("  ", "en-us")


# --- visemes -------------------------------------------------------------------------------------

def test_it_makes_one_value_per_frame(clip):
    _, n_frames, mouth_open, mouth_width = clip
    assert mouth_open.shape == mouth_width.shape == (n_frames,)
    assert mouth_open.min() >= 0 and mouth_open.max() <= 1


def test_it_closes_the_lips_on_bilabials_and_in_silence(clip):
    phonemes, n_frames, mouth_open, _ = clip
    bilabials = [p for p in phonemes if p.symbol in ("p", "b", "m")]
    assert len(bilabials) == 2
    for p in bilabials:
        assert mouth_open[frame_at(p.start + p.duration / 2, 25)] < 0.08, p
    assert mouth_open[: frame_at(phonemes[0].start - 0.1, 25)].max() < 0.02
    assert mouth_open[frame_at(phonemes[-1].end + 0.15, 25):].max() < 0.05
    labiodental = next(p for p in phonemes if p.symbol == "f")
    assert mouth_open[frame_at(labiodental.start + labiodental.duration / 2, 25)] < 0.2


def test_it_opens_the_mouth_on_open_vowels(clip):
    phonemes, _, mouth_open, _ = clip
    vowel_a = next(p for p in phonemes if p.symbol == "a")
    diphthong = next(p for p in phonemes if p.symbol == "aU")  # "now": open first, rounded last
    assert mouth_open[frame_at(vowel_a.start + vowel_a.duration / 2, 25)] > 0.55
    assert mouth_open[frame_at(diphthong.start + diphthong.duration / 4, 25)] > 0.6
    assert mouth_open.max() > 0.7


def test_it_rounds_and_spreads_the_lips(clip):
    phonemes, _, _, mouth_width = clip
    rounded = [p for p in phonemes if p.symbol == "u:"]
    spread = next(p for p in phonemes if p.symbol == "I")
    assert all(mouth_width[frame_at(p.start + p.duration / 2, 25)] < 0.9 for p in rounded)
    assert mouth_width[frame_at(spread.start + spread.duration / 2, 25)] > 1.05


def test_it_gives_every_phoneme_a_viseme():
    for symbol in ["b", "u:", "aU", "t#", "w#", "aI2", "Q!", "@"]:
        classes = corpus.visemes_of(symbol)
        assert classes and all(name in corpus.VISEME_TARGETS for name in classes)


# --- faces ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("identity", corpus.FACE_IDENTITIES)
def test_it_starts_from_a_real_face_with_closed_lips(identity):
    face = corpus.load_face(identity, 192)
    assert face.shape == (192, 192, 3) and face.dtype == np.uint8
    landmarks = faces.largest_face(face).landmarks[None]
    mouth_width = np.linalg.norm(landmarks[0, 54] - landmarks[0, 48])
    assert inner_lip_gap(landmarks)[0] < 0.06 * mouth_width


@pytest.mark.parametrize("identity", corpus.FACE_IDENTITIES)
def test_it_moves_the_mouth_with_the_speech(identity, clip):
    """dlib, which knows nothing of the rig, must see the lips part as the curve says."""
    _, _, mouth_open, mouth_width = clip
    frames = corpus.render_talking_face(identity, mouth_open, mouth_width, 192, seed=0, head_motion_px=0)
    gap = inner_lip_gap(faces.track_landmarks(frames))
    assert np.corrcoef(gap, mouth_open)[0, 1] > 0.9
    assert gap[np.argmax(mouth_open)] > 4 * max(gap[0], 1.0)


@pytest.mark.parametrize("identity", corpus.FACE_IDENTITIES)
def test_it_changes_the_lower_face_only(identity):
    size = 192
    neutral = corpus.load_face(identity, size).astype(int)
    frames = corpus.render_talking_face(identity, np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.8, 1.05]), size,
                                        seed=0, head_motion_px=0).astype(int)
    landmarks = faces.largest_face(corpus.load_face(identity, size)).landmarks
    eyes_row = int(landmarks[36:48, 1].mean())
    left, right = [int(v) for v in landmarks[[48, 54], 0]]
    mouth_row = int(landmarks[48:68, 1].mean())
    mouth = (slice(mouth_row - 8, mouth_row + 12), slice(left, right))
    assert np.abs(frames[0] - neutral).max() <= 1  # mouth closed, no motion: the neutral face
    for frame in frames[1:]:
        assert np.abs(frame[:eyes_row] - neutral[:eyes_row]).max() <= 1  # above the eyes: untouched
        assert np.abs(frame[mouth] - neutral[mouth]).mean() > 15  # the mouth region: changed a lot


def test_it_drifts_the_picture_by_the_seed():
    curve = np.zeros(30)
    still = corpus.load_face("astronaut", 128).astype(int)
    drifting = corpus.render_talking_face("astronaut", curve, curve + 1, 128, seed=3, head_motion_px=1.0)
    assert np.array_equal(drifting, corpus.render_talking_face("astronaut", curve, curve + 1, 128, seed=3,
                                                               head_motion_px=1.0))
    assert not np.array_equal(drifting, corpus.render_talking_face("astronaut", curve, curve + 1, 128, seed=4,
                                                                   head_motion_px=1.0))
    differences = np.abs(drifting.astype(int) - still).mean(axis=(1, 2, 3))
    assert differences.max() > 0.5  # it does move ...
    assert differences.max() < 12  # ... by about a pixel, not more


def test_it_rejects_unknown_faces_bad_curves_and_photos_without_a_face(monkeypatch):
    with pytest.raises(ValueError, match="unknown face identity"):
        corpus.load_face("mona-lisa", 128)
    with pytest.raises(ValueError, match="mouth_open"):
        corpus.render_talking_face("astronaut", np.array([0.5, 1.5]), np.ones(2), 128, seed=0)
    with pytest.raises(ValueError, match="same length|one length"):
        corpus.render_talking_face("astronaut", np.zeros(3), np.ones(2), 128, seed=0)
    monkeypatch.setattr(corpus, "_face_photo", lambda identity: (np.full((200, 200, 3), 128, np.uint8), {}))
    with pytest.raises(faces.FaceNotFoundError, match="no face found"):
        corpus.load_face("astronaut", 100)  # a size no other test uses, so nothing is cached


# --- the corpus ----------------------------------------------------------------------------------

def test_it_builds_playable_h264_videos_with_audio(builds):
    items, _ = builds
    assert len(items) == 2
    for item in items:
        info = media.probe(item.video_path)
        assert info.video_codec == "h264" and info.audio_codec == "aac"
        assert (info.width, info.height) == (item.width, item.height) == (128, 128)
        assert info.fps == pytest.approx(25.0) and info.n_frames == item.n_frames
        assert item.n_frames == round(item.duration * item.fps)
        assert abs(info.duration - item.duration) < 0.1
        audio, rate = soundfile.read(item.audio_path, dtype="float32")
        assert rate == 16000 and audio.ndim == 1 and len(audio) / rate == pytest.approx(item.duration)
        assert item.mouth_open.shape == item.mouth_width.shape == (item.n_frames,)


def test_it_names_items_by_face_voice_and_content(builds):
    items, _ = builds
    assert [item.name for item in items] == [f"astronaut_{voice}_{item.content_id}"
                                             for voice, item in zip(["en-us", "en-f3"], items)]
    assert all(item.text == " ".join(item.words) for item in items)
    assert len({item.content_id for item in items}) == 2  # two sentences per face: mismatched-audio controls


def test_it_keeps_silence_outside_the_phonemes_in_the_wav(builds):
    items, _ = builds
    for item in items:
        audio, rate = soundfile.read(item.audio_path, dtype="float32")
        first, last = item.phonemes[0], item.phonemes[-1]
        peak = np.abs(audio).max()
        # Before the first phoneme: the padding, digital silence; after the last one at most a
        # faint echo tail of the voice (en+f3 has a 10 % echo), 40 dB below the peak.
        assert np.abs(audio[: int(first.start * rate) - 10]).max() < 1e-3
        assert np.abs(audio[int((last.end + 0.005) * rate):]).max() < 0.01 * peak
        assert np.sqrt(np.mean(audio[int(first.start * rate): int(last.end * rate)] ** 2)) > 0.02


def test_it_records_json_provenance(builds):
    items, _ = builds
    for item in items:
        provenance = json.loads(json.dumps(item.provenance))
        assert provenance == json.loads((item.video_path.with_suffix(".json")).read_text())
        assert provenance["generator"] == corpus.GENERATOR_NAME
        assert provenance["generator_version"] == corpus.GENERATOR_VERSION
        assert provenance["seed"] == 7 and provenance["config"]["size"] == 128
        assert provenance["voice"] == item.voice and provenance["content_id"] == item.content_id
        assert provenance["words"] == list(item.words)
        assert provenance["identity"]["source"] == "skimage.data.astronaut()"
        assert provenance["tts"]["version"].startswith("1.")
        assert provenance["viseme_table_version"] == corpus.VISEME_TABLE_VERSION
        assert [(p["symbol"], p["start"], p["duration"]) for p in provenance["phonemes"]] == \
            [(p.symbol, round(p.start, 6), round(p.duration, 6)) for p in item.phonemes]
        assert provenance["sha256"]["audio"] == media.sha256_file(item.audio_path)


def test_it_builds_the_same_files_for_the_same_seed(builds):
    first, second = builds
    for a, b in zip(first, second):
        assert a.video_path.parent != b.video_path.parent and a.name == b.name
        frames_a, _ = media.read_video(a.video_path)
        frames_b, _ = media.read_video(b.video_path)
        assert np.array_equal(frames_a, frames_b)
        audio_a, _ = soundfile.read(a.audio_path, dtype="int16")
        audio_b, _ = soundfile.read(b.audio_path, dtype="int16")
        assert np.array_equal(audio_a, audio_b)


def test_it_shares_sentences_between_neighbouring_voices():
    config = corpus.CorpusConfig()
    assignment = corpus.voice_sentences(config)
    assert list(assignment) == list(config.voices)
    spoken = [sentence for sentences in assignment.values() for sentence in sentences]
    assert all(len(sentences) == config.sentences_per_voice for sentences in assignment.values())
    assert len(set(spoken)) == 3  # 3 voices × 2 sentences, each sentence spoken by two voices
    other_seed = corpus.voice_sentences(corpus.CorpusConfig(seed=1))
    assert set(spoken) != {s for sentences in other_seed.values() for s in sentences}


def test_it_rejects_a_bad_config(tmp_path):
    for bad in (corpus.CorpusConfig(faces=("mona-lisa",)), corpus.CorpusConfig(size=127),
                corpus.CorpusConfig(voices=()), corpus.CorpusConfig(sentences_per_voice=0),
                corpus.CorpusConfig(voices=("en+f3", "en-f3"))):
        with pytest.raises(ValueError):
            corpus.build_corpus(tmp_path, bad)
