"""Model conditions make real clips through the generation tasks, and bad input fails only its own clip.

Tiny random-weight checkpoints stand in for trained ones (the training issue makes real demo weights).
"""

import numpy as np
import pytest
import skimage.data
import skimage.io
import torch
from django.core.files.base import ContentFile
from django.db import transaction

from generation import corpus, media, nets, services, weights
from generation.models import Audio, Checkpoint, Clip, Condition, GenerationJob, Source

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROFILE = {"width": 160, "height": 160}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.fixture(scope="module")
def corpus_items(tmp_path_factory):
    config = corpus.CorpusConfig(faces=("astronaut",), voices=corpus.CorpusConfig().voices[:1],
                                 sentences_per_voice=1, size=160, seed=31)
    return corpus.build_corpus(tmp_path_factory.mktemp("corpus"), config)


def _tiny_checkpoint(weights_dir, architecture, filename):
    arch = nets.get_architecture(architecture)
    torch.manual_seed(0)
    model = arch.build_generator(arch.config("tiny"))
    weights.save_checkpoint(weights_dir / filename, model, architecture=architecture, config=arch.config("tiny"))


def _model_condition(name, architecture, path):
    checkpoint = Checkpoint(name=name, architecture=architecture, path=path, layout="syncmos")
    checkpoint.full_clean()
    checkpoint.save()
    condition = Condition(name=name, kind="model", architecture=architecture, checkpoint=checkpoint)
    condition.full_clean()
    condition.save()
    return condition


def _still_source(name, image, audio_wav_bytes, content="still"):
    audio = Audio(name=f"{name}-audio", content_id=content, sample_rate=44100, duration=1.6)
    audio.file.save(f"{name}.wav", ContentFile(audio_wav_bytes), save=False)
    audio.save()
    source = Source(name=name, kind=Source.KIND_STILL, content_id=content, own_audio=audio)
    png = skimage.io.imsave  # writes grayscale and RGBA PNGs as given
    path = f"/tmp/{name}.png"
    png(path, image, check_contrast=False)
    source.file.save(f"{name}.png", ContentFile(open(path, "rb").read()), save=False)
    source.save()
    return source


def _wav_bytes(tmp_path, wav, sample_rate, channels=1):
    path = tmp_path / "a.wav"
    import soundfile

    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    soundfile.write(str(path), data, sample_rate, subtype="PCM_16")
    return path.read_bytes()


def _run(conditions, sources):
    with transaction.atomic():
        job = services.create_job(conditions, sources, options=PROFILE)
        services.start_job(job)
    job.refresh_from_db()
    return job


def test_it_makes_model_clips_as_long_as_the_ground_truth(weights_dir, corpus_items):
    _tiny_checkpoint(weights_dir, "wav2lip", "tiny_wav2lip.pth")
    sources = services.register_corpus_items(corpus_items)
    reference = services.get_or_create_conditions([{"name": "Hidden reference", "kind": "reference"}])[0]
    model = _model_condition("Wav2Lip (tiny, random)", "wav2lip", "tiny_wav2lip.pth")
    job = _run([reference, model], sources)
    assert job.status == GenerationJob.DONE, list(job.clips.values_list("error", flat=True))
    model_clip = job.clips.get(condition=model)
    assert (model_clip.n_frames, model_clip.fps) == (model_clip.reference.n_frames, model_clip.reference.fps)
    assert media.probe(model_clip.file.path).video_codec == "h264"


def test_it_fails_only_the_clips_whose_input_or_checkpoint_is_bad(weights_dir, corpus_items, tmp_path):
    _tiny_checkpoint(weights_dir, "wav2lip", "tiny_wav2lip.pth")
    _tiny_checkpoint(weights_dir, "attn_wav2lip", "tiny_attn.pth")
    good = services.register_corpus_items(corpus_items)[0]
    rng = np.random.default_rng(0)
    speech = media.read_audio(corpus_items[0].audio_path, sample_rate=44100)
    stereo_44k = _wav_bytes(tmp_path, speech, 44100, channels=2)
    face = skimage.data.astronaut()[30:290, 110:340]  # (260, 230, 3), one face
    gray = _still_source("gray-still", (skimage.color.rgb2gray(face) * 255).astype(np.uint8), stereo_44k)
    rgba = _still_source("rgba-still", np.dstack([face, np.full(face.shape[:2], 255, np.uint8)]), stereo_44k,
                         content="rgba")
    faceless = _still_source("no-face", np.full((200, 200, 3), 120, np.uint8), stereo_44k, content="flat")
    blip = _still_source("too-short", face, _wav_bytes(tmp_path, speech[:2000], 44100), content="blip")
    corrupt = Source(name="corrupt", content_id="c", own_audio=good.own_audio, fps=25)
    corrupt.file.save("corrupt.mp4", ContentFile(rng.bytes(5000)), save=False)
    corrupt.save()

    works = _model_condition("Wav2Lip tiny", "wav2lip", "tiny_wav2lip.pth")
    wrong_file = _model_condition("Wav2Lip with an AttnWav2Lip file", "wav2lip", "tiny_attn.pth")
    missing = _model_condition("Wav2Lip not installed", "wav2lip", "not_there.pth")
    job = _run([works, wrong_file, missing], [good, gray, rgba, faceless, blip, corrupt])

    def error(condition, source):
        clip = Clip.objects.get(condition=condition, source=source)
        return clip.status, clip.error

    assert job.status == GenerationJob.PARTIAL
    # Grayscale and alpha stills, stereo 44.1 kHz audio: converted (RGB, mono 16 kHz), documented fallbacks.
    for source in (good, gray, rgba):
        assert error(works, source)[0] == Clip.READY, error(works, source)
    assert Clip.objects.get(condition=works, source=gray).fps == 25.0
    assert "no face found in any frame" in error(works, faceless)[1]
    assert "too short" in error(works, blip)[1]
    assert "cannot read" in error(works, corrupt)[1] or "cannot decode" in error(works, corrupt)[1]
    for source in (good, gray):
        assert "is a 'attn_wav2lip' checkpoint, not 'wav2lip'" in error(wrong_file, source)[1]
        assert "checkpoint file not found" in error(missing, source)[1]
    # A failed clip never has a delivery file.
    for clip in job.clips.filter(status=Clip.FAILED):
        assert not services.media_path(f"clips/{clip.delivery_name}").exists()


def test_it_refuses_a_model_condition_without_a_matching_checkpoint(weights_dir):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="needs the checkpoint"):
        Condition(name="no ckpt", kind="model", architecture="wav2lip").full_clean()
    checkpoint = Checkpoint.objects.create(name="attn", architecture="attn_wav2lip", path="x.pth")
    with pytest.raises(ValidationError, match="is a attn_wav2lip checkpoint"):
        Condition(name="mixed", kind="model", architecture="wav2lip", checkpoint=checkpoint).full_clean()
    with pytest.raises(ValidationError, match="pads"):
        Condition(name="bad options", kind="model", architecture="attn_wav2lip", checkpoint=checkpoint,
                  params={"pads": [1]}).full_clean()


def test_it_fills_a_registered_checkpoint_row_from_the_registry(weights_dir):
    row = Checkpoint(name="Wav2Lip GAN", registry_name="wav2lip_gan")
    row.full_clean()
    assert (row.architecture, row.path, row.layout) == ("wav2lip", "wav2lip_gan.pth", "official")
    assert not row.installed and str(row.file_path).startswith(str(weights_dir))


def test_it_turns_every_installed_registered_checkpoint_into_a_model_condition(weights_dir, monkeypatch):
    spec = weights.WeightsSpec(name="demo_tiny_wav2lip", architecture="wav2lip", filename="demo_tiny.pth")
    monkeypatch.setattr(weights, "REGISTRY", {spec.name: spec})  # only this spec (not the committed demo weights)
    assert services.installed_model_conditions() == []  # not installed yet
    _tiny_checkpoint(weights_dir, "wav2lip", "demo_tiny.pth")
    conditions = services.installed_model_conditions()
    assert [(c.name, c.kind, c.architecture, c.checkpoint.registry_name) for c in conditions] == [
        ("wav2lip: demo_tiny_wav2lip", "model", "wav2lip", "demo_tiny_wav2lip")]
    assert services.installed_model_conditions() == conditions  # idempotent
