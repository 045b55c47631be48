"""The raw-frames step of a clip: load a source and its driving audio, apply the condition, write a
lossless intermediate. No Django here; generation/tasks.py calls these functions with file paths.

Model conditions run through the inference pipeline of the bundled lip-sync models; until a
condition's architecture has one, rendering it fails with a clear error instead of a fake clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generation import controls, media

KIND_REFERENCE = "reference"
KIND_CONTROL = "control"
KIND_MODEL = "model"

# Speech is rendered and analysed at 16 kHz everywhere in syncmos (Wav2Lip, SyncNet and the corpus).
WORK_SAMPLE_RATE = 16000


class RenderError(Exception):
    """The condition cannot be rendered for this input; the message is stored on the clip."""


@dataclass(frozen=True)
class RenderRequest:
    condition_kind: str
    control: str
    params: dict
    source_path: Path
    source_is_still: bool
    audio_path: Path
    output_path: Path
    fps: float
    architecture: str = ""
    other_audio_path: Path | None = None


def load_stimulus(source_path: Path, audio_path: Path, *, source_is_still: bool, fps: float) -> controls.Stimulus:
    """Frames of the face source and the driving audio, trimmed to a common duration.

    A still image becomes a constant video as long as the audio (the model then animates it); a
    video keeps its own frame rate, and video and audio are cut to the shorter of the two.
    """
    audio = media.read_audio(audio_path, sample_rate=WORK_SAMPLE_RATE)  # (N,) float32
    media.check_audible(audio, WORK_SAMPLE_RATE)
    if source_is_still:
        image = media.read_image(source_path)  # (H, W, 3)
        n_frames = max(1, int(round(len(audio) / WORK_SAMPLE_RATE * fps)))
        frames = np.repeat(image[None], n_frames, axis=0)  # (T, H, W, 3)
        video_fps = fps
    else:
        frames, video_fps = media.read_video(source_path)  # (T, H, W, 3)
    n_frames = min(len(frames), int(np.floor(len(audio) / WORK_SAMPLE_RATE * video_fps + 1e-6)))
    if n_frames < 1:
        raise RenderError("the audio is shorter than one video frame")
    n_samples = int(round(n_frames / video_fps * WORK_SAMPLE_RATE))
    return controls.Stimulus(
        frames=frames[:n_frames], fps=video_fps, audio=audio[:n_samples], sample_rate=WORK_SAMPLE_RATE
    )


def render(request: RenderRequest) -> Path:
    """Make the raw clip of one condition and write it to ``request.output_path`` (.mkv, lossless)."""
    stimulus = load_stimulus(
        request.source_path, request.audio_path, source_is_still=request.source_is_still, fps=request.fps
    )
    if request.condition_kind == KIND_REFERENCE:
        result = controls.hidden_reference(stimulus)
    elif request.condition_kind == KIND_CONTROL:
        other_audio = None
        if request.other_audio_path is not None:
            other_audio = media.read_audio(request.other_audio_path, sample_rate=WORK_SAMPLE_RATE)
        result = controls.apply_control(request.control, request.params, stimulus, other_audio=other_audio)
    elif request.condition_kind == KIND_MODEL:
        raise RenderError(
            f"no inference pipeline is installed for architecture {request.architecture!r} yet; "
            "model conditions cannot be rendered"
        )
    else:
        raise RenderError(f"unknown condition kind {request.condition_kind!r}")
    media.write_intermediate(request.output_path, result.frames, result.fps, result.audio, result.sample_rate)
    return request.output_path
