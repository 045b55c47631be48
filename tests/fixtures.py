"""Real, playable clips and the studies made of them, shared by the studyapp, browser and analysis tests.

The generation rows get deliberately *revealing* names (model, control, checkpoint, file names) so
the blinding tests have something to catch if any of it reached a participant. The session-scoped
``clip_files`` fixture (tests/conftest.py) writes the mp4s once; ``make_clip`` and ``make_study``
turn them into rows.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from generation import media
from generation.models import Audio, Checkpoint, Clip, Condition, Source
from studyapp.models import Study, StudyClip

FPS = 25
SAMPLE_RATE = 16000
SIZE = (288, 352)  # H, W

# (condition name, kind, control, architecture, checkpoint name, checkpoint file) — revealing on purpose.
CONDITIONS = [
    ("Wav2Lip GAN checkpoint", Condition.KIND_MODEL, "", "wav2lip", "wav2lip_gan official", "/weights/wav2lip_gan.pth"),
    ("audio_shift +3 frames", Condition.KIND_CONTROL, "audio_shift", "", None, None),
    ("Hidden reference (ground truth)", Condition.KIND_REFERENCE, "", "", None, None),
    ("LipGAN baseline", Condition.KIND_MODEL, "", "lipgan", "lipgan_residual_v1", "/weights/lipgan_residual_v1.h5"),
    ("frozen_mouth control", Condition.KIND_CONTROL, "frozen_mouth", "", None, None),
    ("Attention Wav2Lip finetuned", Condition.KIND_MODEL, "", "attn_wav2lip", "attn_wav2lip_lrs2", "/weights/attn.pth"),
]
SOURCES = [("astronaut_en-us_bbaf2n.mp4", "astronaut", "bbaf2n"), ("carphone_pristine_lgwm5s.mp4", "carphone", "lgwm5s")]


def face_frames(variant: int, n_frames: int = FPS) -> np.ndarray:
    """A simple cartoon face whose mouth opens and closes; colours differ per variant. (T, H, W, 3) uint8."""
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    hue = np.array([[52, 73, 94], [44, 62, 80], [60, 60, 90], [38, 70, 70], [70, 56, 80], [50, 80, 60]][variant % 6])
    frames = np.empty((n_frames, h, w, 3), dtype=np.uint8)
    face = ((xx - w / 2) / 95) ** 2 + ((yy - h / 2) / 120) ** 2 <= 1
    eyes = (((xx - w / 2 + 35) / 11) ** 2 + ((yy - h / 2 + 30) / 8) ** 2 <= 1) | (
        ((xx - w / 2 - 35) / 11) ** 2 + ((yy - h / 2 + 30) / 8) ** 2 <= 1
    )
    for t in range(n_frames):
        opening = 3 + 14 * abs(np.sin(np.pi * (t / n_frames) * (3 + variant)))
        mouth = ((xx - w / 2) / 30) ** 2 + ((yy - h / 2 - 50) / opening) ** 2 <= 1
        frame = frames[t]
        frame[:] = hue + (yy[..., None] * 0.15).astype(np.uint8)
        frame[face] = (226, 188, 160)
        frame[eyes] = (40, 40, 50)
        frame[mouth] = (130, 40, 50)
    return frames


def tone(variant: int) -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.abs(np.sin(np.pi * t * (3 + variant)))
    return (0.25 * envelope * np.sin(2 * np.pi * (330 + 55 * variant) * t)).astype(np.float32)


@dataclass(frozen=True)
class ClipFile:
    path: Path
    info: media.MediaInfo
    sha256: str


def write_clip_files(folder: Path) -> list[ClipFile]:
    """One real 1-second mp4 (H.264 + AAC) per condition in ``folder``, probed (the ``clip_files`` fixture)."""
    if not media.ffmpeg_available():
        pytest.fail("ffmpeg/ffprobe are required to build the fixture clips (apt-get install ffmpeg)")
    files = []
    for variant in range(len(CONDITIONS)):
        path = folder / f"variant-{variant}.mp4"
        media.write_video(path, face_frames(variant), FPS, tone(variant), SAMPLE_RATE)
        files.append(ClipFile(path, media.probe(path), media.sha256_file(path)))
    return files


def _generation_rows(variant: int) -> tuple[Condition, Source, Audio]:
    name, kind, control, architecture, ckpt_name, ckpt_path = CONDITIONS[variant]
    checkpoint = None
    if ckpt_name:
        checkpoint, _ = Checkpoint.objects.get_or_create(
            name=ckpt_name, defaults={"architecture": architecture, "path": ckpt_path, "sha256": "c0ffee" * 10 + "beef"}
        )
    condition, _ = Condition.objects.get_or_create(
        name=name, defaults={"kind": kind, "control": control, "architecture": architecture, "checkpoint": checkpoint,
                             "params": {"frames": 3} if control == "audio_shift" else {}},
    )
    source_name, identity, content = SOURCES[variant % len(SOURCES)]
    audio, _ = Audio.objects.get_or_create(
        name=f"grid_s1_{content}.wav",
        defaults={"content_id": content, "file": f"audio/grid_s1_{content}.wav", "sample_rate": SAMPLE_RATE,
                  "duration": 1.0},
    )
    source, _ = Source.objects.get_or_create(
        name=source_name,
        defaults={"identity": identity, "content_id": content, "file": f"sources/{source_name}", "own_audio": audio},
    )
    return condition, source, audio


def make_clip(variant: int, clip_files: list[ClipFile], *, status: str = Clip.READY) -> Clip:
    """A Clip row for one fixture variant, its mp4 stored under MEDIA_ROOT/clips/<delivery_name>."""
    condition, source, audio = _generation_rows(variant)
    made, info = clip_files[variant], clip_files[variant].info
    clip = Clip(condition=condition, source=source, audio=audio, status=status, sha256=made.sha256,
                duration=info.duration, fps=info.fps, n_frames=info.n_frames, width=info.width, height=info.height,
                size_bytes=info.size_bytes)
    clip.file.name = f"clips/{clip.delivery_name}"
    target = Path(settings.MEDIA_ROOT) / clip.file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made.path, target)
    clip.save()
    return clip


# The environment check off: the flow tests start rating right after consent (tests of the check turn it on).
NO_ENVIRONMENT_CHECK = dict(
    allow_phones=True, min_viewport_width=0, min_viewport_height=0, min_face_px=0, audio_check=False,
    request_fullscreen=False,
)


def make_study(clip_files: list[ClipFile], *, n_clips: int = 5, per_participant: int = 4, **fields) -> Study:
    fields.setdefault("status", Study.OPEN)
    for name, value in NO_ENVIRONMENT_CHECK.items():
        fields.setdefault(name, value)
    study = Study.objects.create(
        title="How natural do these talking faces look?", clips_per_participant=per_participant,
        instructions="You will see short videos of a talking face.", consent_text="We store your ratings anonymously.",
        **fields,
    )
    study.add_default_scales()
    for variant in range(n_clips):
        StudyClip.objects.create(study=study, clip=make_clip(variant, clip_files))
    return study
