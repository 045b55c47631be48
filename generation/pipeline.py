"""Lip-sync inference: a face video (or still) + driving audio → frames with a generated mouth.

Follows the official Wav2Lip ``inference.py`` step by step — mel chunks that start at each frame's
timestamp (kept to the audio's full length, see step 2), frames truncated to the chunks or reused
cyclically when the audio is longer, S3FD-style
boxes padded by [0, 10, 0, 0] and smoothed over 5 frames, a masked + reference 6-channel face input, a
hard paste of the resized output — for any generator that satisfies the contract in
``generation.nets``. Components are passed in; nothing here loads weights or touches Django.

Example
-------
>>> pipeline = LipSyncPipeline(generator, DlibFaceDetector())           # doctest: +SKIP
>>> out = pipeline(frames, fps=25.0, audio=wav)                          # doctest: +SKIP
>>> out.frames.shape  # (n_frames, H, W, 3) uint8, same size as the input frames   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from generation import audio as audio_features
from generation import faces
from generation.nets import InputSpec, face_input

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 128  # Wav2Lip's --wav2lip_batch_size
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right (Wav2Lip default)
    smooth: bool = True
    smooth_window: int = 5
    feather: int = 0  # 0: hard paste, as the original; > 0: linear blend over that many pixels
    max_missing_face_frames: int = 12  # a longer run of frames without a face is an error


DETECTORS = ("dlib", "s3fd")


def validate_options(options: dict) -> dict:
    """Check a model condition's pipeline options; returns them with defaults filled in.

    Keys: the :class:`PipelineConfig` fields, plus ``detector`` ("dlib", offline, the default; or
    "s3fd", which needs the user-installed ``sfd_face.pth``).
    """
    options = dict(options)
    detector = options.pop("detector", "dlib")
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, not {detector!r}")
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    unknown = set(options) - set(fields)
    if unknown:
        raise ValueError(f"unknown pipeline options {sorted(unknown)}; known: {sorted([*fields, 'detector'])}")
    config = pipeline_config(options)
    return {"detector": detector, **dataclasses.asdict(config)}


def pipeline_config(options: dict) -> PipelineConfig:
    options = {k: v for k, v in options.items() if k != "detector"}
    if "pads" in options:
        pads = options["pads"]
        if not (isinstance(pads, (list, tuple)) and len(pads) == 4 and all(isinstance(p, int) for p in pads)):
            raise ValueError(f"pads must be four integers (top, bottom, left, right), got {pads!r}")
        options["pads"] = tuple(pads)
    for name in ("batch_size", "smooth_window", "feather", "max_missing_face_frames"):
        if name in options and (not isinstance(options[name], int) or isinstance(options[name], bool)):
            raise ValueError(f"{name} must be an integer, got {options[name]!r}")
    if "smooth" in options and not isinstance(options["smooth"], bool):
        raise ValueError(f"smooth must be true or false, got {options['smooth']!r}")
    config = PipelineConfig(**options)
    if config.batch_size < 1 or config.smooth_window < 1 or config.feather < 0 or config.max_missing_face_frames < 0:
        raise ValueError("batch_size and smooth_window must be ≥ 1; feather and max_missing_face_frames ≥ 0")
    return config


@dataclass
class LipSyncOutput:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float
    audio: np.ndarray  # (N,) float32 at sample_rate, trimmed to the frames
    sample_rate: int
    boxes: np.ndarray  # (T, 4) int x1, y1, x2, y2 of the pasted face
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


class LipSyncPipeline:
    """Run a lip-sync generator over a video; see the module docstring for the steps."""

    def __init__(self, generator: nn.Module, face_detector, config: PipelineConfig = PipelineConfig()):
        self.generator = generator.eval()
        self.face_detector = face_detector
        self.config = config
        self.spec: InputSpec = generator.input_spec

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                 *, on_batch: Callable[[int, int], None] | None = None) -> LipSyncOutput:
        """Lip-sync ``frames`` to ``audio``. ``on_batch(done, total)`` is called after every model batch
        (a long render uses it to keep its claim on the clip alive)."""
        timings: dict[str, float] = {}

        # 1. Check inputs; raise concise errors rather than guessing.
        frames = _check_frames(frames)
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"audio must be {SAMPLE_RATE} Hz mono (resample first), got {sample_rate} Hz")
        audio = np.asarray(audio)
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"audio must be float samples in [-1, 1], got {audio.dtype} (convert int PCM first)")

        # 2. Mel chunks, one per output frame, each starting at its frame's timestamp. The official loop
        #    stops once a window would run past the audio, which drops the last 3 frames at 25 fps; here
        #    those frames reuse the final window, so every condition's clip is as long as its audio (a
        #    shorter clip would tell participants which clips a model made).
        started = time.perf_counter()
        mel = audio_features.melspectrogram(audio.astype(np.float32))  # (80, M)
        chunks = audio_features.mel_chunks(mel, fps, self.spec.mel_frames)  # (T_official, 80, mel_frames)
        n_covered = max(1, int(np.floor(len(audio) / sample_rate * fps + 1e-6)))
        if len(chunks) < n_covered:
            tail = np.repeat(chunks[-1:], n_covered - len(chunks), axis=0)
            chunks = np.concatenate([chunks, tail])  # (T_out, 80, mel_frames)
        chunks = chunks[:n_covered]  # at very low fps the official loop overshoots the audio
        timings["mel"] = time.perf_counter() - started

        # 3. Frames for the chunks: the video is cut to the audio, or reused cyclically when the audio is
        #    longer (a still image is a one-frame video).
        n_out = len(chunks)
        source_index = np.arange(n_out) % len(frames)  # (T_out,)
        used = np.unique(source_index)

        # 4. Face boxes on the frames used: detect, fill short gaps, pad, smooth.
        started = time.perf_counter()
        boxes_by_frame = self._face_boxes(frames[used])
        boxes = boxes_by_frame[np.searchsorted(used, source_index)]  # (T_out, 4)
        timings["face_detection"] = time.perf_counter() - started

        # 5. + 6. Crops → model input → generated faces, in batches.
        generated = self._generate(frames, source_index, boxes, chunks, timings, on_batch)  # (T_out, S, S, 3)

        # 7. Paste each generated face back into its frame; pixels outside the box stay untouched.
        started = time.perf_counter()
        out = np.empty((n_out, *frames.shape[1:]), dtype=np.uint8)
        for i in range(n_out):
            out[i] = faces.paste_back(frames[source_index[i]], generated[i], boxes[i], feather=self.config.feather)
        timings["paste"] = time.perf_counter() - started

        n_samples = int(round(n_out / fps * sample_rate))
        trimmed = np.zeros(n_samples, dtype=np.float32)
        trimmed[: min(n_samples, len(audio))] = audio[:n_samples]
        return LipSyncOutput(out, fps, trimmed, sample_rate, boxes, timings)

    def _face_boxes(self, frames: np.ndarray) -> np.ndarray:
        detections = self.face_detector.detect_batch(frames)  # list of (N, 5), best first
        best = [d[0, :4] if len(d) else None for d in detections]
        filled = faces.fill_missing_boxes(best, max_gap=self.config.max_missing_face_frames)  # (T, 4)
        height, width = frames.shape[1:3]
        boxes = faces.pad_boxes(filled, self.config.pads, width, height)
        if self.config.smooth:
            boxes = faces.smooth_boxes(boxes, self.config.smooth_window)
        too_small = (boxes[:, 2] - boxes[:, 0] < 8) | (boxes[:, 3] - boxes[:, 1] < 8)
        if too_small.any():
            raise faces.FaceNotFoundError(f"the face box is degenerate in frame {int(np.argmax(too_small))}")
        return boxes

    def _model_input(self, crops: np.ndarray) -> torch.Tensor:
        """(B, S, S, 3) uint8 RGB crops → (B, 6, S, S) float in [0, 1]: masked target and reference."""
        if self.spec.color == "BGR":
            crops = crops[..., ::-1]
        reference = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
        return face_input(reference, reference, self.spec.face_order)  # (B, 6, S, S)

    def _generate(self, frames, source_index, boxes, chunks, timings, on_batch) -> np.ndarray:
        """Generated faces (T_out, S, S, 3) uint8 RGB; crops are cut per batch, never for the whole video."""
        size = self.spec.face_size
        out = np.empty((len(chunks), size, size, 3), dtype=np.uint8)
        timings["crop"] = timings["inference"] = 0.0
        batch = self.config.batch_size
        start = 0
        while start < len(chunks):
            stop = min(start + batch, len(chunks))
            started = time.perf_counter()
            rows = source_index[start:stop]
            crops = faces.crop_faces(frames[rows], boxes[start:stop], size)  # (b, S, S, 3)
            timings["crop"] += time.perf_counter() - started
            started = time.perf_counter()
            out_of_memory = False
            try:
                out[start:stop] = self._run_batch(crops, chunks[start:stop])
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                out_of_memory = True
            timings["inference"] += time.perf_counter() - started
            if out_of_memory:
                # As the official face detector does: halve the batch and try again. The cache is emptied
                # outside the except block, once the failed batch's tensors are no longer referenced.
                batch = max(1, batch // 2)
                log.warning("CUDA out of memory; retrying with batch size %d", batch)
                torch.cuda.empty_cache()
                continue
            start = stop
            if on_batch is not None:
                on_batch(start, len(chunks))
        return out

    def _run_batch(self, crops: np.ndarray, chunks: np.ndarray) -> np.ndarray:
        device = self.device
        faces_in = self._model_input(crops).to(device)  # (B, 6, S, S)
        mel_in = torch.from_numpy(np.ascontiguousarray(chunks)).float()[:, None].to(device)  # (B, 1, 80, W)
        autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
        with autocast:
            pred = self.generator(mel_in, faces_in)  # (B, 3, S, S) in [0, 1]
        # × 255 then truncate, as the original's astype(np.uint8).
        pred = (pred.float().clamp(0, 1) * 255.0).permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
        if self.spec.color == "BGR":
            pred = pred[..., ::-1]
        return np.ascontiguousarray(pred)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single still image
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected RGB frames (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    return frames
