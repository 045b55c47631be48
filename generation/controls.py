"""Control conditions of a subjective lip-sync test: known manipulations of real footage.

No Django here, and no model weights. Controls anchor the rating scales and check the raters: a
hidden reference should score high, audio shifted by 8 frames should score low on sync, and a rater
who cannot tell the two apart is not attending (study_platforms.md §4, item 2). Each control turns a
``Stimulus`` (frames + audio) into another; ``normalize`` later brings all of them, and the model
outputs, to the same delivery profile.

A control is a name plus JSON parameters (what ``Condition.params`` stores). ``CONTROLS`` describes
them, ``validate_params`` checks and completes them, ``describe`` labels them for researchers, and
``apply_control`` renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from generation import faces, media


class ControlError(ValueError):
    """A control or its parameters are invalid, or the control cannot be applied to this input."""


@dataclass(frozen=True)
class Stimulus:
    """A clip in the making: video frames and the mono speech that goes with them."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float
    audio: np.ndarray  # (N,) float32 mono in [-1, 1]
    sample_rate: int

    def __post_init__(self) -> None:
        frames, audio = self.frames, self.audio
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
                or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got "
                             f"{getattr(frames, 'shape', None)} {getattr(frames, 'dtype', type(frames).__name__)}")
        if not isinstance(audio, np.ndarray) or audio.dtype != np.float32 or audio.ndim != 1:
            raise ValueError(f"audio must be a (N,) float32 array, got "
                             f"{getattr(audio, 'shape', None)} {getattr(audio, 'dtype', type(audio).__name__)}")
        if not (np.isfinite(self.fps) and self.fps > 0) or int(self.sample_rate) <= 0:
            raise ValueError(f"fps and sample_rate must be positive, got {self.fps} and {self.sample_rate}")

    @property
    def n_video_samples(self) -> int:
        """Audio samples spanning the video: T frames at ``fps``."""
        return int(round(len(self.frames) * self.sample_rate / self.fps))


_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a control: its JSON type, default and allowed values."""

    kind: type  # int, float or str
    default: object = _REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range is (low, high] instead of [low, high]
    nonzero: bool = False
    choices: tuple = ()
    help: str = ""

    def check(self, control: str, name: str, value):
        where = f"{control}.{name}"
        if self.kind is str:
            if value not in self.choices:
                raise ControlError(f"{where} must be one of {', '.join(map(repr, self.choices))}; got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ControlError(f"{where} must be a number, got {value!r}")
        if self.kind is int:
            if value != int(value):
                raise ControlError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            interval = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
            raise ControlError(f"{where} must be in {interval}, got {value!r}")
        if self.nonzero and value == 0:
            raise ControlError(f"{where} must not be 0 (that is the hidden reference)")
        return value


@dataclass(frozen=True)
class ControlSpec:
    description: str
    params: dict[str, Param]
    apply: Callable[[dict, Stimulus, np.ndarray | None], Stimulus] = field(repr=False)
    label: Callable[[dict, float], str] = field(repr=False)


# --- audio controls ------------------------------------------------------------------------------


def _shift_audio(params: dict, stimulus: Stimulus, other_audio: np.ndarray | None) -> Stimulus:
    """Delay (k > 0) or advance (k < 0) the audio by k frame durations, keeping its length.

    k frames are k × sample_rate / fps samples, rounded to the nearest sample when that is not whole
    (at most half a sample, 31 µs at 16 kHz). The gap opened at one end is silence; what is pushed
    past the other end is dropped.
    """
    audio = stimulus.audio
    shift = int(round(params["frames"] * stimulus.sample_rate / stimulus.fps))
    if abs(shift) >= len(audio):
        raise ControlError(f"audio_shift of {params['frames']} frames is longer than the clip's audio")
    out = np.zeros_like(audio)  # (N,)
    if shift > 0:
        out[shift:] = audio[:-shift]
    else:
        out[:shift] = audio[-shift:]
    return Stimulus(stimulus.frames.copy(), stimulus.fps, out, stimulus.sample_rate)


def _label_shift(params: dict, fps: float) -> str:
    frames = params["frames"]
    unit = "frame" if abs(frames) == 1 else "frames"
    ms = abs(frames) * 1000.0 / fps
    return f"audio {frames:+d} {unit} ({ms:.0f} ms {'late' if frames > 0 else 'early'})"


def _mismatch_audio(params: dict, stimulus: Stimulus, other_audio: np.ndarray | None) -> Stimulus:
    """The video with another sentence's audio, cut to the video's length or padded with silence.

    Padding rather than looping: a looped sentence restarts mid-clip, an artefact raters would judge
    on its own. ``other_audio`` is at the stimulus's sample rate.
    """
    if other_audio is None:
        raise ControlError("mismatched_audio needs other_audio: the recording of a different sentence")
    other = np.asarray(other_audio, dtype=np.float32)
    if other.ndim != 1:
        raise ControlError(f"other_audio must be mono (N,), got shape {other.shape}")
    own = stimulus.audio
    overlap = min(len(own), len(other))
    if overlap and np.allclose(own[:overlap], other[:overlap], atol=1e-4):
        raise ControlError("other_audio is the clip's own audio, so nothing would be mismatched")
    n = stimulus.n_video_samples
    out = np.zeros(n, dtype=np.float32)  # (n,)
    out[: min(n, len(other))] = other[:n]
    try:
        media.check_audible(out, stimulus.sample_rate)
    except media.MediaError as exc:
        raise ControlError(f"mismatched_audio: over the video's duration the other {exc}") from exc
    return Stimulus(stimulus.frames.copy(), stimulus.fps, out, stimulus.sample_rate)


# --- visual controls -----------------------------------------------------------------------------

# Landmarks that move with the head but not with speech: the nose bridge and the eye corners. Not the
# nostrils: dlib's predictor drags them along when the lips open (0.5 px here), and a fit that
# follows the mouth would make the frozen mouth wobble.
STABLE_POINTS = np.r_[27:31, 36, 39, 42, 45]
# Outline of the region a talking face moves: the jaw from cheek to cheek under the mouth, closed
# across the bottom of the nose (iBUG indices, in polygon order).
LOWER_FACE = np.r_[2:15, 35, 34, 33, 32, 31]
# Feather σ as a fraction of the outer eye-corner distance: 2.3 px on a 45 px eye span, so the blend
# fades out over ~10 px; 5 px on a 100 px span.
FEATHER = 0.05


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, uniform scale, translation) with dst ≈ src @ A.T + t.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4). ``src``, ``dst``: (K, 2) x, y points. Returns A (2, 2), t (2,).
    """
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean  # (K, 2)
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))  # 2 × 2 cross-covariance
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])  # no reflections
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(axis=0).sum()
    a = scale * rotation
    return a, dst_mean - a @ src_mean


def _polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: inside the polygon through ``points`` (K, 2) x, y."""
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    rows, cols = polygon(points[:, 1], points[:, 0], shape)
    mask[rows, cols] = True
    return mask


def _feathered(hard: np.ndarray, sigma: float) -> np.ndarray:
    """A soft (h, w) float mask: 1 on ``hard``, a Gaussian shoulder outside it, exactly 0 beyond ~5σ.

    The region is grown by 2σ and then blurred by σ, so the blend weight is already ≈ 0.97 where the
    region ends (no step there) and fades over the next few σ. The faint tail below 1/255 is cut so
    the frame away from the region stays bit-identical.
    """
    if not hard.any():
        return np.zeros(hard.shape, dtype=np.float32)
    grown = ndimage.distance_transform_edt(~hard) <= 2.0 * sigma  # (h, w) bool
    soft = ndimage.gaussian_filter(grown.astype(np.float32), sigma)
    soft[hard] = 1.0
    soft[soft < 1.0 / 255.0] = 0.0
    return soft


def _freeze_mouth(params: dict, stimulus: Stimulus, other_audio: np.ndarray | None) -> Stimulus:
    """Replace the lower face of every frame with that of one reference frame, following the head.

    1. Track 68 landmarks; no face → ControlError (the message of FaceNotFoundError, prefixed).
    2. Reference frame: the one with the smallest inner-lip gap relative to the eye span ("closed"),
       or frame 0 ("first").
    3. Per frame, fit a similarity transform reference → frame on the stable points (nose bridge,
       eye corners) and warp the reference frame with it (bilinear).
    4. Mask: the lower-face polygon of the frame united with the warped one of the reference (an open
       jaw reaches lower than a closed one), feathered so there is no seam; blend.
    """
    frames = stimulus.frames
    try:
        landmarks = faces.track_landmarks(frames)  # (T, 68, 2) x, y
    except faces.FaceNotFoundError as exc:
        raise ControlError(f"frozen_mouth needs a face in the video: {exc}") from exc
    eye_span = np.linalg.norm(landmarks[:, 45] - landmarks[:, 36], axis=1)  # (T,)
    if params["reference"] == "closed":
        gap = np.linalg.norm(landmarks[:, [61, 62, 63]] - landmarks[:, [67, 66, 65]], axis=2).mean(axis=1)  # (T,)
        ref = int(np.argmin(gap / eye_span))
    else:
        ref = 0
    reference = frames[ref].astype(np.float32)  # (H, W, 3)
    height, width = frames.shape[1:3]
    out = frames.copy()
    for t in range(len(frames)):
        a, shift = _similarity(landmarks[ref, STABLE_POINTS], landmarks[t, STABLE_POINTS])
        outlines = [landmarks[t, LOWER_FACE], landmarks[ref, LOWER_FACE] @ a.T + shift]  # 2 × (K, 2) x, y
        sigma = FEATHER * float(eye_span[t])
        # Work in a window around the region: the feather reaches at most ~5σ beyond it.
        margin = int(np.ceil(6 * sigma)) + 2
        corners = np.concatenate(outlines)  # (2K, 2)
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - margin, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + margin, [width, height])
        if x1 <= x0 or y1 <= y0:
            continue  # the face has left the picture
        hard = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for outline in outlines:
            hard |= _polygon_mask(outline - [x0, y0], hard.shape)
        mask = _feathered(hard, sigma)  # (h, w)
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        weight = mask[rows, cols][:, None]  # (P, 1)
        rows, cols = rows + y0, cols + x0
        # Inverse warp, only where the mask is non-zero: frame-t pixel → reference coordinates.
        xy = np.stack([cols, rows], axis=1).astype(np.float64)  # (P, 2) x, y
        src = (xy - shift) @ np.linalg.inv(a).T  # (P, 2)
        warped = np.stack([ndimage.map_coordinates(reference[..., c], [src[:, 1], src[:, 0]], order=1,
                                                   mode="nearest") for c in range(3)], axis=1)  # (P, 3)
        blended = frames[t, rows, cols] * (1.0 - weight) + warped * weight  # (P, 3)
        out[t, rows, cols] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return Stimulus(out, stimulus.fps, stimulus.audio.copy(), stimulus.sample_rate)


FROZEN_REFERENCE_LABELS = {"closed": "closed-lip", "first": "first"}


def _blur(params: dict, stimulus: Stimulus, other_audio: np.ndarray | None) -> Stimulus:
    """Gaussian blur of every frame (σ in pixels of the stimulus, per axis); audio untouched."""
    sigma = params["sigma"]
    blurred = ndimage.gaussian_filter(stimulus.frames.astype(np.float32), sigma=(0, sigma, sigma, 0),
                                      mode="reflect")  # (T, H, W, 3)
    frames = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    return Stimulus(frames, stimulus.fps, stimulus.audio.copy(), stimulus.sample_rate)


def _compress(params: dict, stimulus: Stimulus, other_audio: np.ndarray | None) -> Stimulus:
    """H.264 encode and decode at a high CRF (blocking, ringing, smeared motion); audio untouched."""
    frames = media.compress_roundtrip(stimulus.frames, stimulus.fps, params["crf"], params["preset"])
    return Stimulus(frames, stimulus.fps, stimulus.audio.copy(), stimulus.sample_rate)


def _label_compression(params: dict, fps: float) -> str:
    preset = "" if params["preset"] == "medium" else f", preset {params['preset']}"
    return f"H.264 compression CRF {params['crf']}{preset}"


CONTROLS: dict[str, ControlSpec] = {
    "audio_shift": ControlSpec(
        description="Audio shifted against the video by whole frames (positive: audio late).",
        params={"frames": Param(int, low=-25, high=25, nonzero=True,
                                help="frames of offset; positive = audio lags the video")},
        apply=_shift_audio,
        label=_label_shift,
    ),
    "mismatched_audio": ControlSpec(
        description="The video with the audio of a different sentence (cut or padded with silence).",
        params={},
        apply=_mismatch_audio,
        label=lambda params, fps: "mismatched audio (another sentence)",
    ),
    "frozen_mouth": ControlSpec(
        description="Lower face frozen to one reference frame, following the head; speech unchanged.",
        params={"reference": Param(str, default="closed", choices=("closed", "first"),
                                   help="closed = the frame with the most closed lips; first = frame 0")},
        apply=_freeze_mouth,
        label=lambda params, fps: f"frozen mouth ({FROZEN_REFERENCE_LABELS[params['reference']]} frame)",
    ),
    "blur": ControlSpec(
        description="Gaussian blur of every frame; audio untouched.",
        params={"sigma": Param(float, low=0.0, high=20.0, low_open=True, help="standard deviation in pixels")},
        apply=_blur,
        label=lambda params, fps: f"blur sigma {params['sigma']:g} px",
    ),
    "compression": ControlSpec(
        description="Strong H.264 compression (encode and decode); audio untouched.",
        params={"crf": Param(int, low=30, high=51, help="x264 constant rate factor; higher is worse"),
                "preset": Param(str, default="medium", choices=media.X264_PRESETS)},
        apply=_compress,
        label=_label_compression,
    ),
}


def _spec(control: str) -> ControlSpec:
    if control not in CONTROLS:
        raise ControlError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)}")
    return CONTROLS[control]


def validate_params(control: str, params: dict) -> dict:
    """The complete parameters of a control: defaults filled in, types and ranges checked.

    Raises
    ------
    ControlError
        Unknown control, unknown or missing parameter, wrong type, value out of range.
    """
    spec = _spec(control)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ControlError(f"{control} parameters must be a JSON object, got {type(params).__name__}")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        known = ", ".join(spec.params) or "none"
        raise ControlError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for {control}; known: {known}")
    out = {}
    for name, param in spec.params.items():
        if name in params:
            out[name] = param.check(control, name, params[name])
        elif param.default is _REQUIRED:
            raise ControlError(f"{control} needs {name!r} ({param.help})")
        else:
            out[name] = param.default
    return out


def describe(control: str, params: dict, *, fps: float = 25.0) -> str:
    """Researcher-facing label, e.g. "audio +3 frames (120 ms late)".

    Offsets in milliseconds are at ``fps``, the frame rate of the clips (the delivery profile's by
    default).
    """
    return _spec(control).label(validate_params(control, params), fps)


def apply_control(control: str, params: dict, stimulus: Stimulus, *,
                  other_audio: np.ndarray | None = None) -> Stimulus:
    """Render a control condition from a stimulus; the input is never modified.

    ``other_audio`` (N,) float32 at the stimulus's sample rate is used by ``mismatched_audio`` only.

    Raises
    ------
    ControlError
        Bad parameters, or a control that cannot be applied to this input (no face for
        ``frozen_mouth``, no or silent ``other_audio`` for ``mismatched_audio``, a shift longer than
        the clip).
    """
    spec = _spec(control)
    return spec.apply(validate_params(control, params), stimulus, other_audio)


def hidden_reference(stimulus: Stimulus) -> Stimulus:
    """The unmanipulated clip (ACR-HR's hidden reference): a copy, so nothing downstream aliases it."""
    return Stimulus(stimulus.frames.copy(), stimulus.fps, stimulus.audio.copy(), stimulus.sample_rate)


# The demo ladder. Audio offsets follow ITU-R BT.1359-1 (1998): viewers detect sound leading the
# picture from about 45 ms and sound lagging from about 125 ms, and find more than 90 ms lead or
# 185 ms lag unacceptable. At 25 fps, -3 frames (120 ms early) is well past the lead threshold,
# +3 frames (120 ms late) sits at the lag threshold, and +8 frames (320 ms late) is clearly off.
_LADDER = [
    ("audio_shift", {"frames": -3}, "Audio leads by 120 ms: past the ~45 ms detectability threshold for sound "
                                    "early (ITU-R BT.1359); a sync-scale anchor."),
    ("audio_shift", {"frames": 3}, "Audio lags by 120 ms: near the ~125 ms detectability threshold for sound "
                                   "late (ITU-R BT.1359); tests the sync scale's sensitivity."),
    ("audio_shift", {"frames": 8}, "Audio lags by 320 ms: far beyond the 185 ms acceptability limit; a low "
                                   "anchor and attention check for sync."),
    ("mismatched_audio", {}, "Another sentence's audio: no sync at all; the lowest sync anchor."),
    ("frozen_mouth", {"reference": "closed"}, "Mouth frozen shut while speech plays: a natural-looking face "
                                              "that does not talk."),
    ("blur", {"sigma": 1.5}, "Mild blur: a visual-quality anchor that leaves sync intact."),
    ("blur", {"sigma": 4.0}, "Strong blur: a low visual-quality anchor."),
    ("compression", {"crf": 38}, "Visible H.264 artefacts: a visual-quality anchor."),
    ("compression", {"crf": 46}, "Heavy H.264 artefacts: a low visual-quality anchor."),
]


def standard_conditions() -> list[dict]:
    """The demo's condition ladder: the hidden reference and the control anchors.

    Returns dicts {name, kind, control, params, description} ready for ``Condition`` rows; names
    (unique) are the ``describe`` labels at 25 fps.
    """
    conditions = [{
        "name": "hidden reference",
        "kind": "reference",
        "control": "",
        "params": {},
        "description": "The real clip, unmanipulated (ACR-HR hidden reference); the high anchor.",
    }]
    for control, params, why in _LADDER:
        params = validate_params(control, params)
        conditions.append({
            "name": describe(control, params),
            "kind": "control",
            "control": control,
            "params": params,
            "description": why,
        })
    return conditions
