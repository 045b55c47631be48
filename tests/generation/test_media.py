"""Delivery normalization: one profile, no provenance, loudness on target, sync kept, failures clean."""

import hashlib
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from generation import media
from generation.media import DeliveryProfile, MediaError

pytestmark = pytest.mark.skipif(not media.ffmpeg_available(), reason="ffmpeg is not installed")

SR = 16000  # the work sample rate of render steps
NTSC = 30000 / 1001


def speech_like(seconds: float, peak: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: a gliding 120 Hz harmonic tone, 3.7 syllables/s, phrase-level swell."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = np.clip(np.sin(2 * np.pi * 3.7 * t), 0, None) ** 2 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.45 * t))
    noise = 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    x = voice * envelope + noise
    return (peak * x / np.abs(x).max()).astype(np.float32)


def moving_texture(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, height, width, 3) uint8: a smooth random texture drifting one pixel per frame."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.uniform(0, 255, (height, width + n, 3)), (2, 2, 0))
    base = (base - base.min()) / np.ptp(base) * 200 + 28
    return np.stack([base[:, i: i + width] for i in range(n)]).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def top_level_boxes(path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order (ISO/IEC 14496-12 §4.2)."""
    boxes = []
    with open(path, "rb") as fh:
        size_total = os.fstat(fh.fileno()).st_size
        offset = 0
        while offset < size_total:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = size_total - offset
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def ntsc_source(work):
    """A render output named after its model and tagged with it: 29.97 fps, 320 × 240, mono 16 kHz."""
    raw = work / "raw.mkv"
    media.write_intermediate(raw, moving_texture(60, 240, 320), NTSC, speech_like(2.1, 0.3), SR)
    path = work / "wav2lip_gan_secret_run.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(raw), "-c", "copy",
                    "-metadata", "title=model=stabsync", "-metadata", "comment=checkpoint 7",
                    "-metadata:s:v:0", "title=stabsync-video", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def delivered(work, ntsc_source):
    dst = work / "out" / "a91f3c.mp4"
    return dst, media.normalize(ntsc_source, dst, DeliveryProfile())


def test_it_delivers_the_default_profile_from_a_29_97_fps_non_square_input(delivered):
    dst, info = delivered
    assert (info.video_codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 256, 256)
    assert info.fps == 25.0
    assert info.n_frames == 50  # 60 frames at 29.97 fps = 2.002 s → 50 frames at 25 fps
    assert (info.audio_codec, info.sample_rate, info.channels) == ("aac", 48000, 2)
    assert info.video_duration == pytest.approx(2.0, abs=1e-3)
    assert info.audio_duration == pytest.approx(info.video_duration, abs=1e-3)  # audio padded to the video


def test_it_scales_preserving_the_aspect_ratio_and_pads(delivered):
    frames, _ = media.read_video(delivered[0])
    # 4:3 into 256 × 256 → 256 × 192 centred: 32 black rows above and below (limited-range black).
    assert frames[:, :30].max() <= 20 and frames[:, -30:].max() <= 20
    assert frames[:, 40:-40].mean() > 60


def test_it_leaves_no_metadata_or_provenance_in_the_file(delivered, ntsc_source):
    assert "title" in media.probe(ntsc_source).format_tags  # the source did carry tags
    dst, info = delivered
    assert set(info.format_tags) <= {"major_brand", "minor_version", "compatible_brands"}
    for tags in info.stream_tags:
        assert set(tags) <= {"language", "handler_name", "vendor_id"}
        assert not {"encoder", "title", "comment", "creation_time"} & set(tags)
    data = dst.read_bytes()
    for needle in (ntsc_source.stem.encode(), b"wav2lip", b"stabsync", b"checkpoint", b"x264", b"Lavf", b"Lavc",
                   b"normalize"):
        assert needle not in data, needle


def test_it_puts_moov_before_mdat(delivered):
    boxes = top_level_boxes(delivered[0])
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


def test_it_is_deterministic(work, ntsc_source, delivered):
    again = work / "again.mp4"
    media.normalize(ntsc_source, again, DeliveryProfile())
    assert media.sha256_file(again) == media.sha256_file(delivered[0])


def test_it_follows_a_profile_from_job_options(work):
    src = work / "square.mkv"
    media.write_intermediate(src, moving_texture(40, 96, 96), 25.0, speech_like(1.6, 0.5), SR)
    profile = DeliveryProfile.from_options({"fps": 30, "width": 320, "height": 180, "audio_channels": 1,
                                            "audio_sample_rate": 44100, "loudness_lufs": -16})
    info = media.normalize(src, work / "custom.mp4", profile)
    assert (info.width, info.height, info.fps, info.n_frames) == (320, 180, 30.0, 48)
    assert (info.channels, info.sample_rate) == (1, 44100)
    # Peaks 16 dB above the loudness: -16 LUFS needs the limiter to stay under -1 dBTP.
    measured = media.measure_loudness(work / "custom.mp4")
    assert measured["integrated_lufs"] == pytest.approx(-16, abs=1.0)
    assert measured["true_peak_db"] <= -0.5


def test_it_refuses_audio_whose_loudness_lives_in_its_peaks(work):
    # Quiet speech with three loud 4 ms bursts: the bursts carry most of the loudness, so limiting
    # them to the ceiling leaves the clip far below the target.
    audio = speech_like(4.0, 0.08)
    burst = 0.9 * np.sin(2 * np.pi * 1500 * np.arange(64) / SR) * np.hanning(64)
    for start in (SR, 2 * SR, 3 * SR):
        audio[start: start + 64] += burst.astype(np.float32)
    src = work / "bursts.mkv"
    media.write_intermediate(src, moving_texture(100, 48, 64), 25.0, np.clip(audio, -1, 1), SR)
    with pytest.raises(MediaError, match="instead of -23 LUFS"):
        media.normalize(src, work / "bursts.mp4")
    assert not (work / "bursts.mp4").exists()


@pytest.mark.parametrize(("seconds", "peak"), [(4.0, 0.02), (4.0, 0.9), (1.2, 0.2)],
                         ids=["quiet", "loud", "short"])
def test_it_brings_speech_to_the_target_loudness(work, seconds, peak):
    src = work / f"speech-{seconds}-{peak}.mkv"
    media.write_intermediate(src, moving_texture(int(seconds * 25), 48, 64), 25.0, speech_like(seconds, peak), SR)
    dst = work / f"speech-{seconds}-{peak}.mp4"
    media.normalize(src, dst)
    measured = media.measure_loudness(dst)
    assert measured["integrated_lufs"] == pytest.approx(-23.0, abs=1.0)
    assert measured["true_peak_db"] <= -1.0 + 0.5  # the ceiling, plus what AAC coding may add


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_it_brings_synthesized_speech_to_the_target_loudness(work):
    wav = work / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "bin blue at f two now, place red by g nine soon"],
                   check=True)
    audio = media.read_audio(wav, SR) * 0.3  # a quiet recording
    src = work / "espeak.mkv"
    media.write_intermediate(src, moving_texture(int(len(audio) / SR * 25), 48, 64), 25.0, audio, SR)
    media.normalize(src, work / "espeak.mp4")
    assert media.measure_loudness(work / "espeak.mp4")["integrated_lufs"] == pytest.approx(-23.0, abs=1.0)


def test_it_measures_the_bs1770_calibration_tone(work):
    # ITU-R BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS. At -20 dBFS in both
    # channels of a stereo pair: -23.01 + 3.01 = -20.0 LUFS, true peak -20 dBTP.
    import soundfile

    t = np.arange(5 * 48000) / 48000
    tone = 0.1 * np.sin(2 * np.pi * 997 * t)
    soundfile.write(work / "tone.wav", np.stack([tone, tone], axis=1), 48000, subtype="FLOAT")
    measured = media.measure_loudness(work / "tone.wav")
    assert measured["integrated_lufs"] == pytest.approx(-20.0, abs=0.1)
    assert measured["true_peak_db"] == pytest.approx(-20.0, abs=0.1)


def _flash_and_beep(n_frames: int, fps: float, flash_at: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames that flash white at ``flash_at`` (3 frames) and audio that beeps at that instant."""
    frames = np.full((n_frames, 48, 64, 3), 40, np.uint8)
    frames[flash_at: flash_at + 3] = 230
    audio = 0.003 * np.random.default_rng(1).standard_normal(int(n_frames / fps * SR))
    start = int(round(flash_at / fps * SR))
    audio[start: start + 3200] += 0.5 * np.sin(2 * np.pi * 1000 * np.arange(3200) / SR)  # 200 ms
    return frames, audio.astype(np.float32)


def _flash_and_beep_frames(path) -> tuple[int, float]:
    """(first bright frame, beep onset in frames) of a delivered clip."""
    frames, fps = media.read_video(path)
    audio = np.abs(media.read_audio(path, 48000))
    flash = int(np.argmax(frames.mean(axis=(1, 2, 3)) > 128))
    onset = int(np.argmax(audio > 0.5 * audio.max()))
    return flash, onset / 48000 * fps


def test_it_keeps_audio_and_video_in_sync_across_a_frame_rate_change(work):
    frames, audio = _flash_and_beep(90, NTSC, flash_at=45)  # flash at 1.5015 s
    media.write_intermediate(work / "beep.mkv", frames, NTSC, audio, SR)
    flash, beep = _flash_and_beep_frames(media.normalize(work / "beep.mkv", work / "beep.mp4").path)
    assert beep == pytest.approx(1.5015 * 25, abs=0.1)
    assert abs(flash - beep) < 1.0  # frame-rate conversion samples the flash at the next 40 ms tick


def test_it_keeps_an_audio_stream_that_starts_late_late(work):
    frames, audio = _flash_and_beep(75, 25.0, flash_at=30)
    media.write_intermediate(work / "beep25.mkv", frames, 25.0, audio, SR)
    late = work / "late.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(work / "beep25.mkv"), "-itsoffset", "0.2",
                    "-i", str(work / "beep25.mkv"), "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)], check=True)
    flash, beep = _flash_and_beep_frames(media.normalize(late, work / "late.mp4").path)
    assert flash == 30
    assert beep == pytest.approx(35.0, abs=0.1)  # 200 ms = 5 frames after the flash


@pytest.mark.parametrize("audio", [np.zeros(SR * 2, np.float32),
                                   1e-5 * np.random.default_rng(0).standard_normal(SR * 2).astype(np.float32)],
                         ids=["digital-silence", "near-silence"])
def test_it_refuses_silent_audio_and_writes_nothing(work, audio):
    src = work / "silent.mkv"
    media.write_intermediate(src, moving_texture(50, 48, 64), 25.0, audio, SR)
    dst = work / "refused" / "silent.mp4"
    dst.parent.mkdir(exist_ok=True)
    with pytest.raises(MediaError, match="audio is silent"):
        media.normalize(src, dst)
    assert not dst.exists()
    assert os.listdir(dst.parent) == []  # no temporary left behind either


def test_it_refuses_a_clip_without_audio(work):
    src = work / "mute.mkv"
    media.write_video(src, moving_texture(25, 48, 64), 25.0)
    with pytest.raises(MediaError, match="no audio stream"):
        media.normalize(src, work / "mute.mp4")
    assert not (work / "mute.mp4").exists()


def test_it_refuses_corrupt_input_and_keeps_the_previous_file(work, ntsc_source):
    random_bytes = work / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(50_000))
    truncated = work / "truncated.mkv"
    truncated.write_bytes(ntsc_source.read_bytes()[: ntsc_source.stat().st_size // 2])
    dst = work / "kept" / "clip.mp4"
    dst.parent.mkdir()
    dst.write_bytes(b"the clip delivered last time")
    for bad in (random_bytes, truncated):
        with pytest.raises(MediaError, match=bad.name):
            media.normalize(bad, dst)
        assert dst.read_bytes() == b"the clip delivered last time"
    assert os.listdir(dst.parent) == ["clip.mp4"]


def test_it_checks_audibility():
    speech = speech_like(1.0, 0.3)
    media.check_audible(speech, SR)
    media.check_audible(np.stack([speech, speech], axis=1), SR)  # (N, C) too
    with pytest.raises(MediaError, match="audio is silent"):
        media.check_audible(np.zeros(SR, np.float32), SR)
    with pytest.raises(MediaError, match="audio is silent"):
        media.check_audible(np.full(SR, 0.4, np.float32), SR)  # a DC offset is not sound
    with pytest.raises(MediaError, match="audio is silent"):
        media.check_audible(speech * 1e-3, SR, min_rms_dbfs=-50)
    with pytest.raises(MediaError, match="too short"):
        media.check_audible(speech[: SR // 10], SR)


def test_it_writes_a_lossless_intermediate(work):
    frames = moving_texture(10, 32, 48)
    path = work / "lossless.mkv"
    media.write_intermediate(path, frames, 25.0, speech_like(0.4, 0.3), SR)
    info = media.probe(path)
    assert (info.video_codec, info.audio_codec) == ("ffv1", "pcm_s16le")
    decoded, fps = media.read_video(path)
    assert fps == 25.0 and np.array_equal(decoded, frames)
    with pytest.raises(ValueError, match="mkv"):
        media.write_intermediate(work / "lossless.mp4", frames, 25.0, speech_like(0.4, 0.3), SR)


def test_it_builds_profiles_from_job_options():
    assert DeliveryProfile.from_options({}) == DeliveryProfile() == DeliveryProfile.from_options(None)
    profile = DeliveryProfile.from_options({"width": 512.0, "height": 288, "fps": 30, "crf": 20})
    assert (profile.width, profile.fps) == (512, 30.0) and isinstance(profile.width, int)
    assert DeliveryProfile.from_options(profile.as_dict()) == profile
    assert profile.as_dict()["audio_bitrate"] == "128k"
    bad = [{"with": 512}, {"width": 255}, {"width": True}, {"fps": "25"}, {"fps": 0}, {"crf": 52},
           {"crf": 18.5}, {"preset": "turbo"}, {"audio_bitrate": "128"}, {"audio_channels": 6},
           {"audio_sample_rate": 47000}, {"loudness_lufs": 0}, {"true_peak_db": 1}]
    for options in bad:
        with pytest.raises(ValueError):
            DeliveryProfile.from_options(options)
    with pytest.raises(ValueError, match="unknown delivery option"):
        DeliveryProfile.from_options({"with": 512})
    with pytest.raises(ValueError):
        DeliveryProfile.from_options([("width", 256)])


def test_it_hashes_files(work):
    path = work / "abc.bin"
    path.write_bytes(b"abc")
    assert media.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = work / "big.bin"
    big.write_bytes(np.random.default_rng(0).bytes(3 << 20))  # spans several read chunks
    assert media.sha256_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_it_degrades_monotonically_with_crf():
    frames = moving_texture(12, 45, 63)  # odd size: padded for yuv420p and cropped back
    ladder = [psnr(frames, media.compress_roundtrip(frames, 25.0, crf)) for crf in (20, 30, 40, 51)]
    assert all(a > b for a, b in zip(ladder, ladder[1:])), ladder
    assert media.compress_roundtrip(frames, 25.0, 30).shape == frames.shape
    with pytest.raises(ValueError):
        media.compress_roundtrip(frames, 25.0, 60)


# --- size rounding (blinding: a clip's size must not tell it apart) -------------------------------


def _box(kind: bytes, payload_size: int) -> bytes:
    return (8 + payload_size).to_bytes(4, "big") + kind + bytes(payload_size)


def test_it_pads_delivery_files_to_a_whole_number_of_blocks(delivered):
    dst, info = delivered
    assert info.size_bytes == os.path.getsize(dst)
    assert info.size_bytes % media.DELIVERY_SIZE_BLOCK == 0
    boxes = top_level_boxes(dst)
    assert boxes[-1] == "free" and boxes.index("moov") < boxes.index("mdat")


def test_padding_keeps_every_frame_sample_and_duration(work, ntsc_source, delivered):
    plain = work / "unpadded.mp4"
    plain_info = media.normalize(ntsc_source, plain, DeliveryProfile(), size_block=None)
    padded, padded_info = delivered
    assert plain_info.size_bytes % media.DELIVERY_SIZE_BLOCK != 0  # the padding did something
    assert padded.read_bytes()[: plain_info.size_bytes] == plain.read_bytes()  # appended, nothing else changed
    frames, fps = media.read_video(plain)
    padded_frames, padded_fps = media.read_video(padded)
    assert fps == padded_fps and np.array_equal(frames, padded_frames)
    assert np.array_equal(media.read_audio(plain, 48000), media.read_audio(padded, 48000))
    for name in ("duration", "n_frames", "video_duration", "audio_duration", "format_tags", "stream_tags"):
        assert getattr(plain_info, name) == getattr(padded_info, name), name
    decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(padded), "-f", "null", "-"],
                            capture_output=True, check=True)
    assert decode.stderr == b""  # not even a warning about the trailing box


def test_padding_an_already_padded_file_changes_nothing(work, delivered):
    copy = work / "padded-again.mp4"
    shutil.copyfile(delivered[0], copy)
    before = os.stat(copy)
    assert media.pad_to_block(copy) == before.st_size
    after = os.stat(copy)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert media.sha256_file(copy) == media.sha256_file(delivered[0])


def test_padding_to_another_block_replaces_the_earlier_padding(work, delivered):
    copy = work / "repadded.mp4"
    shutil.copyfile(delivered[0], copy)
    boxes = media.top_level_boxes(copy)
    content_end = boxes[-1][1]  # where the trailing free box starts
    assert media.pad_to_block(copy, 100_000) % 100_000 == 0
    repadded = media.top_level_boxes(copy)
    assert [kind for kind, _, _ in repadded].count(b"free") == [kind for kind, _, _ in boxes].count(b"free")
    assert repadded[-1][1] == content_end
    assert copy.read_bytes()[:content_end] == delivered[0].read_bytes()[:content_end]


@pytest.mark.parametrize("short_of_block", [1, 7, 8, 9, 4000])
def test_padding_always_leaves_room_for_a_box_header(tmp_path, short_of_block):
    block = 4096
    path = tmp_path / "boxes.mp4"
    path.write_bytes(_box(b"ftyp", 16) + _box(b"mdat", block - 24 - 8 - short_of_block + 3 * block))
    content = path.read_bytes()
    size = media.pad_to_block(path, block)
    expected = 4 * block if short_of_block >= 8 else 5 * block
    assert size == os.path.getsize(path) == expected
    assert path.read_bytes()[: len(content)] == content
    assert media.top_level_boxes(path)[-1] == (b"free", len(content), expected - len(content))


def test_padding_refuses_what_is_not_an_mp4_and_leaves_it_alone(tmp_path):
    for name, data in [("noise.mp4", bytes(range(256)) * 7), ("open_ended.mp4", _box(b"ftyp", 8) + bytes(4) + b"mdat"),
                       ("truncated.mp4", _box(b"ftyp", 8) + (5000).to_bytes(4, "big") + b"mdat" + bytes(10))]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(MediaError, match=name):
            media.pad_to_block(path, 1024)
        assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.mp4", "open_ended.mp4", "truncated.mp4"]
