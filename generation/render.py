"""The raw-frames step of a clip: load a source and its driving audio, apply the condition, write a
lossless intermediate. No Django here; generation/tasks.py calls these functions with file paths.

Model conditions run the lip-sync pipeline (generation.pipeline) with the condition's checkpoint on
CUDA when present (``SYNCMOS_DEVICE`` overrides), else on the CPU.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generation import controls, faces, media, weights

KIND_REFERENCE = "reference"
KIND_CONTROL = "control"
KIND_MODEL = "model"

# Speech is rendered and analysed at 16 kHz everywhere in syncmos (Wav2Lip, SyncNet and the corpus).
WORK_SAMPLE_RATE = 16000


class RenderError(Exception):
    """The condition cannot be rendered for this input; the message is stored on the clip."""


@dataclass(frozen=True)
class CheckpointRef:
    path: Path
    architecture: str
    layout: str
    config: dict | str = "default"
    sha256: str = ""


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
    checkpoint: CheckpointRef | None = None


def load_stimulus(source_path: Path, audio_path: Path, *, source_is_still: bool, fps: float,
                  trim: bool = True) -> controls.Stimulus:
    """Frames of the face source and the driving audio, by default trimmed to a common duration.

    A still image becomes a constant video as long as the audio (the model then animates it); a
    video keeps its own frame rate. With ``trim`` video and audio are cut to the shorter of the two;
    without it both stay whole (the lip-sync pipeline cuts or loops the video to the audio itself).
    """
    audio = media.read_audio(audio_path, sample_rate=WORK_SAMPLE_RATE)  # (N,) float32
    media.check_audible(audio, WORK_SAMPLE_RATE)
    if source_is_still:
        image = media.read_image(source_path)  # (H, W, 3)
        if not trim:  # the pipeline loops a one-frame video over the audio (and detects the face once)
            return controls.Stimulus(frames=image[None], fps=fps, audio=audio, sample_rate=WORK_SAMPLE_RATE)
        n_frames = max(1, int(round(len(audio) / WORK_SAMPLE_RATE * fps)))
        frames = np.repeat(image[None], n_frames, axis=0)  # (T, H, W, 3)
        video_fps = fps
    else:
        frames, video_fps = media.read_video(source_path)  # (T, H, W, 3)
    if not trim:
        return controls.Stimulus(frames=frames, fps=video_fps, audio=audio, sample_rate=WORK_SAMPLE_RATE)
    n_frames = min(len(frames), int(np.floor(len(audio) / WORK_SAMPLE_RATE * video_fps + 1e-6)))
    if n_frames < 1:
        raise RenderError("the audio is shorter than one video frame")
    n_samples = int(round(n_frames / video_fps * WORK_SAMPLE_RATE))
    return controls.Stimulus(
        frames=frames[:n_frames], fps=video_fps, audio=audio[:n_samples], sample_rate=WORK_SAMPLE_RATE
    )


def render(request: RenderRequest, *, heartbeat: Callable[[], None] | None = None) -> Path:
    """Make the raw clip of one condition and write it to ``request.output_path`` (.mkv, lossless).

    ``heartbeat`` is called now and then during long work (the task uses it to extend its claim).
    """
    stimulus = load_stimulus(
        request.source_path, request.audio_path, source_is_still=request.source_is_still, fps=request.fps,
        trim=request.condition_kind != KIND_MODEL,
    )
    if request.condition_kind == KIND_REFERENCE:
        result = controls.hidden_reference(stimulus)
    elif request.condition_kind == KIND_CONTROL:
        other_audio = None
        if request.other_audio_path is not None:
            other_audio = media.read_audio(request.other_audio_path, sample_rate=WORK_SAMPLE_RATE)
        result = controls.apply_control(request.control, request.params, stimulus, other_audio=other_audio)
    elif request.condition_kind == KIND_MODEL:
        result = render_model(request, stimulus, heartbeat=heartbeat)
    else:
        raise RenderError(f"unknown condition kind {request.condition_kind!r}")
    media.write_intermediate(request.output_path, result.frames, result.fps, result.audio, result.sample_rate)
    return request.output_path


def inference_device() -> str:
    return os.environ.get("SYNCMOS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=2)
def face_detector(name: str, device: str):
    """The condition's face detector, kept per worker: dlib (offline, default), or S3FD with the user's
    sfd_face.pth run as Wav2Lip's inference runs it."""
    if name == "s3fd":
        from generation import s3fd_detect

        path = weights.resolve_path("sfd_face.pth")
        try:
            return s3fd_detect.load_s3fd(path, device=device, **s3fd_detect.WAV2LIP_INFERENCE)
        except FileNotFoundError as exc:
            raise weights.WeightsMissingError(str(exc)) from exc
        except ValueError as exc:
            raise weights.WeightsMismatchError(str(exc)) from exc
    return faces.DlibFaceDetector()


def render_model(request: RenderRequest, stimulus: controls.Stimulus, *,
                 heartbeat: Callable[[], None] | None = None) -> controls.Stimulus:
    """Lip-sync the source to the driving audio with the condition's checkpoint."""
    from generation import pipeline

    if request.checkpoint is None:
        raise RenderError("this model condition has no checkpoint")
    ref = request.checkpoint
    if ref.architecture != request.architecture:
        raise RenderError(f"the checkpoint is for {ref.architecture!r}, the condition for {request.architecture!r}")
    device = inference_device()
    generator = weights.load_cached(ref.path, architecture=ref.architecture, layout=ref.layout, config=ref.config,
                                    sha256=ref.sha256, device=device)
    options = pipeline.validate_options(request.params)
    run = pipeline.LipSyncPipeline(generator, face_detector(options["detector"], device),
                                   pipeline.pipeline_config(options))
    on_batch = (lambda done, total: heartbeat()) if heartbeat is not None else None
    out = run(stimulus.frames, stimulus.fps, stimulus.audio, stimulus.sample_rate, on_batch=on_batch)
    return controls.Stimulus(frames=out.frames, fps=out.fps, audio=out.audio, sample_rate=out.sample_rate)
