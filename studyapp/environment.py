"""The environment check a participant passes before rating: device, window, face size, sound, fullscreen.

Between consent and the instructions, a participant of a study that asks for any of these checks
sees one page (``studyapp/views/check.py``). Its script reports what the browser knows — window and
screen size, device pixel ratio, touch and pointer kind, ``navigator.userAgentData.mobile`` — and
the rendered size of a player laid out exactly like the trial's; the participant plays a short
sound-check clip and picks the number it speaks. The server decides (``evaluate``, pure):

* a phone (by its User-Agent, or by the client's own signals) is screened out, unless the study
  allows phones;
* a window smaller than ``min_viewport_width`` × ``min_viewport_height`` gets a message and may
  try again;
* the face, as tall as the player's picture × ``face_height_share``, must be at least
  ``min_face_px`` CSS pixels tall, or the participant is asked to enlarge the window and try again;
* the sound check (P.808's "listen and report" idea, with a spoken digit instead of a count of
  tones) allows ``AUDIO_TRIES`` wrong answers in all, then screens out: "could not confirm that
  sound plays". The number is drawn per attempt and stored in ``participant.audio_check_answer``;
  it never reaches the browser: the clip comes from a signed, expiring URL tied to the session
  and to the attempt, its file name is a keyed hash, every check clip lasts the same, carries
  no metadata and is padded to the same size block.

Fullscreen is asked for with the instructions' start button; whether it was granted is recorded,
never a reason to refuse. Every attempt is stored in ``participant.environment``.

UNVERIFIED choices: the phone heuristics (User-Agent tokens; a coarse-only pointer on a screen whose
short side is under ``PHONE_SHORT_SIDE_PX``), the two sound-check attempts, and measuring the face
by dlib's frontal-face box (brows to chin) in ``measure_face_height_share``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studyapp.models import Participant, Study, StudyClip


def needs_environment_check(study: Study) -> bool:
    """Whether participants of ``study`` see the check page (a study with every check off skips it)."""
    return bool(
        not study.allow_phones or study.min_viewport_width or study.min_viewport_height or study.min_face_px
        or study.audio_check or study.request_fullscreen
    )


# ---------------------------------------------------------------------------------------------
# The decision (pure)
# ---------------------------------------------------------------------------------------------

AUDIO_TRIES = 2
# A touch-only device whose screen's short side is below this (CSS px) is a phone; tablets are wider.
PHONE_SHORT_SIDE_PX = 600
# User-Agent tokens of phones ("Mobi" is the one MDN recommends); iPads are tablets even when they say "Mobile".
PHONE_UA_RE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|BlackBerry|Opera Mini", flags=re.ASCII)
MAX_REPORTED_PX = 100_000


class AudioStatus(enum.Enum):
    OFF = "off"  # the study has no sound check
    CONFIRMED = "confirmed"  # the right number, now or in an earlier attempt
    UNANSWERED = "unanswered"  # no answer for the current clip (not counted as a try)
    WRONG = "wrong"  # a wrong number, tries are left (a new number is drawn)
    FAILED = "failed"  # wrong too often


@dataclass(frozen=True)
class Requirements:
    """What the study asks of the participant's set-up."""

    allow_phones: bool
    min_viewport_width: int
    min_viewport_height: int
    min_face_px: int
    face_height_share: float
    clip_aspect: float  # width / height of the study's clips

    @classmethod
    def of(cls, study: Study) -> Requirements:
        width, height = check_clip_size(study)
        return cls(study.allow_phones, study.min_viewport_width, study.min_viewport_height, study.min_face_px,
                   study.face_height_share, width / height)


@dataclass(frozen=True)
class ClientReport:
    """What the check page's script measured (CSS pixels)."""

    viewport_width: int
    viewport_height: int
    screen_width: int
    screen_height: int
    device_pixel_ratio: float
    max_touch_points: int
    coarse_pointer: bool  # the primary pointer is coarse (a finger)
    fine_pointer: bool  # some pointer is fine (a mouse or a trackpad)
    ua_mobile: bool | None  # navigator.userAgentData.mobile, where the browser has it
    player_width: float  # the width the trial's player may take
    player_height: float  # the height of the trial's video box

    @classmethod
    def parse(cls, raw: str) -> ClientReport:
        """The report from the page's JSON; ValueError for anything missing or malformed."""
        try:
            data = json.loads(raw, parse_constant=lambda name: float("nan"))
        except (TypeError, ValueError):
            raise ValueError("the report is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("the report is not an object")

        def number(key: str, whole: bool = True) -> float:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{key} is not a number")
            if not 0 <= value <= MAX_REPORTED_PX:
                raise ValueError(f"{key} is out of range")
            return round(value) if whole else float(value)

        def flag(key: str, optional: bool = False) -> bool | None:
            value = data.get(key)
            if optional and value is None:
                return None
            if not isinstance(value, bool):
                raise ValueError(f"{key} is not true or false")
            return value

        ratio = number("device_pixel_ratio", whole=False)
        if not 0 < ratio <= 20:
            raise ValueError("device_pixel_ratio is out of range")
        return cls(
            number("viewport_width"), number("viewport_height"), number("screen_width"), number("screen_height"),
            ratio, number("max_touch_points"), flag("coarse_pointer"), flag("fine_pointer"),
            flag("ua_mobile", optional=True), number("player_width", whole=False), number("player_height", whole=False),
        )


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one attempt: ``reasons`` are sentences for the participant; a refusal that may
    not be retried screens them out with ``screen_out_reason``."""

    passed: bool
    reasons: tuple[str, ...] = ()
    may_retry: bool = True
    face_px: float | None = None
    phone: bool = False
    screen_out_reason: str = ""


def is_phone(user_agent: str, report: ClientReport | None) -> bool:
    """A phone by its User-Agent, by ``userAgentData.mobile``, or by a touch-only, phone-sized screen."""
    if PHONE_UA_RE.search(user_agent or "") and "iPad" not in (user_agent or ""):
        return True
    if report is None:
        return False
    if report.ua_mobile:
        return True
    touch_only = report.coarse_pointer and not report.fine_pointer and report.max_touch_points > 0
    return touch_only and min(report.screen_width, report.screen_height) < PHONE_SHORT_SIDE_PX


def shown_face_px(report: ClientReport, rules: Requirements) -> float:
    """How tall (CSS px) the face would be in the trial's player: the video box keeps its height and a
    picture wider than the room for it is letterboxed, so the picture is as tall as the smaller of the
    box's height and the available width over the clip's aspect ratio."""
    picture_height = min(report.player_height, report.player_width / rules.clip_aspect)
    return picture_height * rules.face_height_share


PHONE_MESSAGE = "This study cannot be done on a phone. Please use a computer (a laptop or a desktop)."
PHONE_REASON = "used a phone (this study does not allow phones)"
AUDIO_FAILED_MESSAGE = "We could not confirm that sound plays on your device."
AUDIO_FAILED_REASON = "could not confirm that sound plays"
NO_REPORT_MESSAGE = ("We could not measure your browser window. Please make sure JavaScript is turned on, "
                     "reload the page and try again.")
AUDIO_UNANSWERED_MESSAGE = "Please play the sound check to its end and choose the number you heard."


def _audio_wrong_message(tries_left: int) -> str:
    left = f"{tries_left} more {'try' if tries_left == 1 else 'tries'}"
    return ("That was not the number in the sound check. A new sound check with a new number is ready: "
            f"play it with the sound on and choose the number you hear ({left}).")


def evaluate(report: ClientReport | None, user_agent: str, rules: Requirements, audio: AudioStatus,
             audio_tries_left: int = AUDIO_TRIES) -> CheckResult:
    """Decide one attempt of the environment check.

    Parameters
    ----------
    report : what the page measured, or None when it sent nothing usable
    user_agent : the request's User-Agent header
    rules : the study's requirements
    audio : the sound check's status after this attempt's answer was judged
    audio_tries_left : wrong answers still allowed (for the message)

    Returns
    -------
    CheckResult
        Passed when nothing is wrong. A phone (unless allowed) and a failed sound check end the
        session (``may_retry`` False); a small window, a small face, a missing report or a
        sound check not answered (or answered wrongly with tries left) may be tried again.
    """
    phone = is_phone(user_agent, report)
    if phone and not rules.allow_phones:
        return CheckResult(False, (PHONE_MESSAGE,), may_retry=False, phone=True, screen_out_reason=PHONE_REASON)
    if audio is AudioStatus.FAILED:
        return CheckResult(False, (AUDIO_FAILED_MESSAGE,), may_retry=False, phone=phone,
                           screen_out_reason=AUDIO_FAILED_REASON)
    reasons: list[str] = []
    face_px = None
    if report is None:
        reasons.append(NO_REPORT_MESSAGE)
    else:
        width, height = report.viewport_width, report.viewport_height
        if width < rules.min_viewport_width or height < rules.min_viewport_height:
            reasons.append(
                f"Your browser window is {width} × {height} pixels; this study needs at least "
                f"{rules.min_viewport_width} × {rules.min_viewport_height}. Please maximise the window "
                "(or make it larger), then press “Check again”."
            )
        face_px = shown_face_px(report, rules)
        if face_px < rules.min_face_px:
            reasons.append(
                f"In this window the videos would be too small: the face would be about {math.floor(face_px)} "
                f"pixels tall, and it needs at least {rules.min_face_px}. Please make the browser window larger "
                "(especially taller), then press “Check again”."
            )
    if audio is AudioStatus.UNANSWERED:
        reasons.append(AUDIO_UNANSWERED_MESSAGE)
    elif audio is AudioStatus.WRONG:
        reasons.append(_audio_wrong_message(audio_tries_left))
    return CheckResult(not reasons, tuple(reasons), may_retry=True, face_px=face_px, phone=phone)


# ---------------------------------------------------------------------------------------------
# The sound-check clip
# ---------------------------------------------------------------------------------------------

CHECK_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
CHECK_VOICE = "en-us"
CHECK_SECONDS = 3.5  # every check clip lasts this long, whatever its number
CHECK_LEAD_SECONDS = 0.5  # silence before the voice, so a slow audio start loses nothing
CHECK_FPS = 10
CHECK_PEAK = 0.5  # about −6 dBFS
CHECK_CLIP_VERSION = "1"  # bump to remake cached clips after changing how they are made
DEFAULT_CLIP_SIZE = (640, 360)


def check_clip_size(study: Study) -> tuple[int, int]:
    """(width, height) of the study's clips (its first ready test clip), so the check's player has their shape."""
    from generation.models import Clip

    size = (
        StudyClip.objects.filter(study=study, role=StudyClip.ROLE_TEST, clip__status=Clip.READY, clip__width__gt=1,
                                 clip__height__gt=1)
        .order_by("id").values_list("clip__width", "clip__height").first()
    )
    width, height = size or DEFAULT_CLIP_SIZE
    return width - width % 2, height - height % 2  # yuv420p needs even sizes


def check_clip_path(number: int, width: int, height: int) -> Path:
    """Where the clip for ``number`` at this size is cached: a keyed hash, so the name says nothing."""
    key = f"syncmos.audio-check:{CHECK_CLIP_VERSION}:{number}:{width}x{height}".encode()
    name = hmac.new(settings.SECRET_KEY.encode(), key, hashlib.sha256).hexdigest()[:32]
    return Path(settings.MEDIA_ROOT) / "checks" / f"{name}.mp4"


def speak(text: str, voice: str = CHECK_VOICE) -> tuple[np.ndarray, int]:
    """``text`` spoken by the espeak-ng command line: (mono float32 samples, sample rate)."""
    with tempfile.TemporaryDirectory(prefix="syncmos-speak-") as tmp:
        path = os.path.join(tmp, "speech.wav")
        proc = subprocess.run(["espeak-ng", "-v", voice, "-w", path, text], capture_output=True, check=False)
        if proc.returncode != 0 or not os.path.exists(path):
            raise RuntimeError(f"espeak-ng failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
        with wave.open(path, "rb") as wav:
            rate, data = wav.getframerate(), wav.readframes(wav.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, rate


def check_picture(width: int, height: int) -> np.ndarray:
    """A neutral frame: a dark stage with a light speaker and two sound waves. (H, W, 3) uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = (27, 33, 43)
    unit = min(width, height) / 12.0
    cx, cy = width / 2 - 1.5 * unit, height / 2
    light = (214, 222, 235)
    box = (np.abs(xx - (cx - 1.2 * unit)) <= 0.6 * unit) & (np.abs(yy - cy) <= 0.8 * unit)
    cone = (xx >= cx - 0.6 * unit) & (xx <= cx + 0.8 * unit) & (np.abs(yy - cy) <= 0.8 * unit + (xx - cx + 0.6 * unit))
    frame[box | cone] = light
    radius = np.hypot(xx - cx, yy - cy)
    in_front = (xx > cx + 1.2 * unit) & (np.abs(yy - cy) < (xx - cx) * 0.9)
    for r in (2.2 * unit, 3.4 * unit):
        frame[in_front & (np.abs(radius - r) <= 0.22 * unit)] = light
    return frame


def make_check_clip(path: Path, number: int, width: int, height: int) -> None:
    """Write the sound-check clip for ``number``: the voice saying it twice over the neutral picture.

    Every clip lasts ``CHECK_SECONDS``; metadata, x264's settings message and encoder tags are left out,
    and the file is padded to the delivery size block, so no clip differs from another but by its sound.
    """
    from generation import media

    word = CHECK_WORDS[number]
    speech, rate = speak(f"The number is {word}. Again: {word}.")
    total = int(round(CHECK_SECONDS * rate))
    lead = int(round(CHECK_LEAD_SECONDS * rate))
    if lead + speech.size > total:
        raise RuntimeError(f"the spoken check for {number} is longer than {CHECK_SECONDS} s")
    sound = np.zeros(total, dtype=np.float32)
    sound[lead:lead + speech.size] = speech * (CHECK_PEAK / max(float(np.abs(speech).max()), 1e-6))
    frames = np.repeat(check_picture(width, height)[None], int(round(CHECK_SECONDS * CHECK_FPS)), axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".check-", suffix=".mp4")
    os.close(fd)
    try:
        media.write_video(
            tmp, frames, CHECK_FPS, sound, rate,
            video_args=["-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-tune", "stillimage",
                        "-pix_fmt", "yuv420p", "-bsf:v", "filter_units=remove_types=6", "-flags:v", "+bitexact",
                        "-fflags", "+bitexact", "-map_chapters", "-1", "-movflags", "+faststart"],
            audio_args=["-c:a", "aac", "-b:a", "96k", "-flags:a", "+bitexact"],
        )
        media.pad_to_block(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_check_clip(number: int, width: int, height: int) -> Path:
    """The cached clip for ``number`` at this size, made on first use."""
    path = check_clip_path(number, width, height)
    if not path.exists():
        make_check_clip(path, number, width, height)
    return path


# ---------------------------------------------------------------------------------------------
# A participant's check, stored in participant.environment
# ---------------------------------------------------------------------------------------------

MAX_RECORDED_ATTEMPTS = 50  # the most recent ones are kept; "attempts_total" counts all
FULLSCREEN_OUTCOMES = ("granted", "denied", "unsupported")


def check_passed(participant: Participant) -> bool:
    return bool((participant.environment or {}).get("passed_at"))


def last_attempt(participant: Participant) -> dict | None:
    attempts = (participant.environment or {}).get("attempts") or []
    return attempts[-1] if attempts else None


def audio_state(participant: Participant) -> dict:
    """``{"nonce", "tries", "served", "passed"}`` of the participant's sound check (empty before the first)."""
    return dict((participant.environment or {}).get("audio") or {})


def _draw(previous: int | None) -> int:
    """A number 1–9, never the one just asked (a participant who heard it must not be confused)."""
    choices = [n for n in CHECK_WORDS if n != previous]
    return choices[secrets.randbelow(len(choices))]


def _new_audio_attempt(participant: Participant, audio: dict) -> dict:
    participant.audio_check_answer = _draw(participant.audio_check_answer)
    return {**audio, "nonce": secrets.token_urlsafe(12), "served": False}


def prepare_check(participant: Participant) -> dict:
    """Make sure a started participant of a study with a sound check has a number and an attempt nonce;
    returns their audio state. Reloading the page keeps the attempt (no fresh tries by reloading)."""
    with transaction.atomic():
        locked = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
        audio = audio_state(locked)
        if (locked.study.audio_check and locked.state == Participant.STARTED and not audio.get("passed")
                and not audio.get("nonce")):
            audio = _new_audio_attempt(locked, {"tries": 0, "passed": False, **audio})
            locked.environment = {**(locked.environment or {}), "audio": audio}
            locked.save(update_fields=["environment", "audio_check_answer"])
    participant.refresh_from_db()
    return audio


def serve_check_clip(participant_token: str, nonce: str) -> Path | None:
    """The clip of the participant's current attempt (noted as served: an answer needs it), or None when
    the participant is not taking the check or the attempt is not the current one."""
    with transaction.atomic():
        locked = (Participant.objects.select_for_update(of=("self",)).select_related("study")
                  .filter(token=participant_token).first())
        if locked is None or locked.state != Participant.STARTED or not locked.study.audio_check:
            return None
        audio = audio_state(locked)
        if audio.get("passed") or not audio.get("nonce") or not hmac.compare_digest(audio["nonce"], nonce):
            return None
        if not audio.get("served"):
            locked.environment = {**locked.environment, "audio": {**audio, "served": True}}
            locked.save(update_fields=["environment"])
        number, study = locked.audio_check_answer, locked.study
    return ensure_check_clip(number, *check_clip_size(study))


def _judge_audio(participant: Participant, audio: dict, answer: str | None, nonce: str | None) -> AudioStatus:
    """Judge this attempt's answer, updating ``audio`` (tries, a new number after a wrong one)."""
    if audio.get("passed"):
        return AudioStatus.CONFIRMED
    current = audio.get("nonce")
    # A stale or forged attempt (an old form sent again, a guess without the clip) is not counted.
    if not current or not isinstance(nonce, str) or not hmac.compare_digest(current, nonce):
        return AudioStatus.UNANSWERED
    if not audio.get("served") or answer is None or not re.fullmatch(r"[1-9]", answer, flags=re.ASCII):
        return AudioStatus.UNANSWERED
    if int(answer) == participant.audio_check_answer:
        audio.update(passed=True, nonce="")
        return AudioStatus.CONFIRMED
    audio["tries"] = int(audio.get("tries", 0)) + 1
    if audio["tries"] >= AUDIO_TRIES:
        audio["nonce"] = ""
        return AudioStatus.FAILED
    audio.update(_new_audio_attempt(participant, audio))
    return AudioStatus.WRONG


def run_check(participant: Participant, *, report: str | None, user_agent: str, answer: str | None,
              nonce: str | None) -> CheckResult | None:
    """Judge one submitted attempt and store it; a refusal that may not be retried screens the
    participant out. Returns None (and stores nothing) when the participant is not taking the check."""
    now = timezone.now()
    with transaction.atomic():
        locked = Participant.objects.select_for_update(of=("self",)).select_related("study").get(pk=participant.pk)
        if locked.state != Participant.STARTED or check_passed(locked):
            return None
        study = locked.study
        environment = dict(locked.environment or {})
        audio = audio_state(locked)
        expected = locked.audio_check_answer
        status = _judge_audio(locked, audio, answer, nonce) if study.audio_check else AudioStatus.OFF
        try:
            client = ClientReport.parse(report) if report else None
        except ValueError:
            client = None
        result = evaluate(client, user_agent, Requirements.of(study), status,
                          AUDIO_TRIES - int(audio.get("tries", 0)))
        attempt: dict[str, Any] = {
            "at": now.isoformat(), "client": asdict(client) if client else None, "phone": result.phone,
            "face_px": None if result.face_px is None else round(result.face_px, 1),
            "audio": {"status": status.value, "expected": expected if study.audio_check else None,
                      "answer": answer if answer and len(answer) <= 4 else None},
            "passed": result.passed, "reasons": list(result.reasons), "may_retry": result.may_retry,
        }
        attempts = (environment.get("attempts") or []) + [attempt]
        environment.update(attempts=attempts[-MAX_RECORDED_ATTEMPTS:],
                           attempts_total=int(environment.get("attempts_total", 0)) + 1)
        if study.audio_check:
            environment["audio"] = audio
        fields = ["environment", "audio_check_answer"]
        if result.passed:
            environment["passed_at"] = now.isoformat()
        elif not result.may_retry:
            locked.state, locked.screened_out_reason, locked.ended_at = (
                Participant.SCREENED_OUT, result.screen_out_reason, now)
            fields += ["state", "screened_out_reason", "ended_at"]
        locked.environment = environment
        locked.save(update_fields=fields)
    participant.refresh_from_db()
    return result


def record_fullscreen(participant: Participant, outcome: str) -> None:
    """Store whether the browser granted fullscreen when the ratings started (never a reason to refuse)."""
    if outcome not in FULLSCREEN_OUTCOMES:
        return
    with transaction.atomic():
        locked = Participant.objects.select_for_update(of=("self",)).get(pk=participant.pk)
        locked.environment = {**(locked.environment or {}), "fullscreen": outcome,
                              "fullscreen_at": timezone.now().isoformat()}
        locked.save(update_fields=["environment"])


# ---------------------------------------------------------------------------------------------
# The face's share of the picture, measured from the study's clips (for the admin's open action)
# ---------------------------------------------------------------------------------------------

FACE_SHARE_CLIPS = 5


def middle_frame(path: str | os.PathLike, duration: float | None) -> np.ndarray:
    """The frame in the middle of a video, as (H, W, 3) uint8 RGB."""
    from generation import media

    with tempfile.TemporaryDirectory(prefix="syncmos-frame-") as tmp:
        still = os.path.join(tmp, "middle.png")
        # The recorded duration may overshoot the last frame: then the first frame will do.
        for at in (max((duration or 0.0) / 2.0, 0.0), 0.0):
            subprocess.run(
                [media.FFMPEG, "-nostdin", "-v", "error", "-y", "-ss", f"{at:.3f}", "-i", str(path), "-frames:v", "1",
                 still],
                capture_output=True, check=False,
            )
            if os.path.exists(still):
                return media.read_image(still)
    raise media.MediaError(f"cannot take the middle frame of {os.path.basename(str(path))}")


def face_height_share_of(frame: np.ndarray) -> float | None:
    """The largest face's height (dlib's frontal-face box, clipped to the frame) over the frame's height;
    a small face is looked for again in the frame upsampled twice. None when there is no face."""
    from generation import faces

    for upsample in (1, 2):
        boxes = faces.DlibFaceDetector(upsample=upsample, grow=(0.0, 0.0, 0.0, 0.0)).detect(frame)  # (N, 5)
        if len(boxes):
            _, top, _, bottom, _ = boxes[0]
            height = frame.shape[0]
            return float(min(bottom, height) - max(top, 0.0)) / height
    return None


def measure_face_height_share(study: Study) -> float | None:
    """The median share of the picture's height the face takes, over up to ``FACE_SHARE_CLIPS`` ready
    test clips of the study (their middle frames); None when no clip shows a detectable face."""
    from generation.models import Clip

    study_clips = (StudyClip.objects.filter(study=study, role=StudyClip.ROLE_TEST, clip__status=Clip.READY)
                   .exclude(clip__file="").select_related("clip").order_by("id"))[:FACE_SHARE_CLIPS]
    shares = []
    for study_clip in study_clips:
        clip = study_clip.clip
        if os.path.isfile(clip.file.path):
            share = face_height_share_of(middle_frame(clip.file.path, clip.duration))
            if share is not None:
                shares.append(share)
    return float(np.median(shares)) if shares else None
