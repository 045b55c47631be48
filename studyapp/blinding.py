"""Blinding audit: does anything a participant receives name what made a clip, or tell clips apart?

``find_leaks`` searches texts (HTML, JS, CSS, JSON, headers, URLs, media bytes) for forbidden
strings — each also in its HTML-escaped, URL-quoted and JSON-escaped spelling — and forbidden
patterns (ids in URL or JSON contexts). ``forbidden_for_study`` lists, from the database, everything
that must never reach a participant of a study: condition names, descriptions, control keys,
architectures, checkpoints (name, registry name, file, notes), source and audio names and files,
delivery names, hashes, the names of the generation jobs that made the clips, the feedback written
for gold clips, and the ids of clips, conditions, sources, audios, checkpoints, jobs and study clips
— for the study's clips and the references a DCR trial shows beside them (``participant_clips``).
``for_binary`` drops the needles that random media bytes would match by chance, and
``find_leaks_in_media`` searches megabytes of media for the rest quickly.

Beyond names, clips must not be told apart by what they are: ``content_mismatches`` finds clips of
one content item (same face, same audio) whose frame count or duration differs between conditions
and ``profile_mismatches`` clips whose encoding or container tags differ; ``role_markers`` and
``trial_skeleton`` let an audit check that a gold trial looks exactly like a test trial. The
``audit_blinding`` management command walks simulated participants through a study and applies all
of these to every byte they are sent.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from generation.models import Clip, GenerationJob
from studyapp.models import ExpectedAnswer, Study, StudyClip

Forbidden = str | re.Pattern[str]

# Shorter needles must stand alone (not inside a longer word or token) to count.
SHORT_NEEDLE = 8
# Needles shorter than this are too generic to audit as plain text.
MIN_NEEDLE = 3
# In compressed media bytes a standalone 3-letter needle turns up by chance about once per 4 MB
# (8 case variants / 256**3 per offset, times the odds of non-alphanumeric neighbours), a 4-letter
# one once per 500 MB, a 5-letter one once per 60 GB: binary scans keep the needles at least this long.
MIN_BINARY_NEEDLE = 5
CONTEXT = 40

ID_CONTEXTS = {
    "clip": r"clips?",
    "study clip": r"study[_-]?clips?|studyclips?",
    "condition": r"conditions?",
    "source": r"sources?",
    "audio": r"audios?",
    "checkpoint": r"checkpoints?",
    "job": r"(?:generation[_-]?)?jobs?",
}
# A field named like an internal key, whatever its value.
ID_FIELD = re.compile(
    r"""["']?\b(?:clip|condition|checkpoint|source|audio|study_?clip|job)[_-]?(?:id|pk)\b["']?\s*[:=]""", re.IGNORECASE
)


@dataclass(frozen=True)
class Leak:
    needle: str  # what was forbidden (the string, or the pattern's text)
    found: str  # what matched
    text_index: int  # which of the texts
    offset: int
    context: str

    def __str__(self) -> str:
        return f"text #{self.text_index} @ {self.offset}: {self.needle!r} as {self.found!r} in …{self.context}…"


def _bytes_view(item: str | bytes) -> str:
    """Text and binary alike as one byte per character, so the same needles find both."""
    data = item if isinstance(item, bytes) else item.encode("utf-8")
    return data.decode("latin-1")


def _spellings(needle: str) -> set[str]:
    """How a string may appear in a page, a URL or a JSON document."""
    variants = {needle, html.escape(needle, quote=True), quote(needle, safe=""), quote_plus(needle),
                json.dumps(needle)[1:-1], json.dumps(needle, ensure_ascii=False)[1:-1]}
    return {_bytes_view(v) for v in variants}


def _compile(needle: str) -> re.Pattern[str]:
    spellings = sorted(_spellings(needle), key=len, reverse=True)
    body = "|".join(re.escape(s) for s in spellings)
    if len(needle) < SHORT_NEEDLE:
        body = rf"(?<![A-Za-z0-9])(?:{body})(?![A-Za-z0-9])"
    return re.compile(body, re.IGNORECASE)


def find_leaks(texts: Iterable[str | bytes], forbidden: Iterable[Forbidden]) -> list[Leak]:
    """Every occurrence of a forbidden string or pattern in the texts (case-insensitive)."""
    checks: list[tuple[str, re.Pattern[str]]] = []
    for item in forbidden:
        if isinstance(item, re.Pattern):
            checks.append((item.pattern, item))
        elif len(item.strip()) >= MIN_NEEDLE:
            checks.append((item.strip(), _compile(item.strip())))
    leaks = []
    for index, text in enumerate(texts):
        haystack = _bytes_view(text)
        for needle, pattern in checks:
            for match in pattern.finditer(haystack):
                start, end = max(match.start() - CONTEXT, 0), match.end() + CONTEXT
                leaks.append(Leak(needle, match.group(0), index, match.start(), haystack[start:end]))
    return leaks


# Runs of printable ASCII in a binary file: where a container, an encoder or a muxer writes text.
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\n\r]{4,}")


def _alphanumeric_at(data: bytes, index: int) -> bool:
    return 0 <= index < len(data) and chr(data[index]).isascii() and chr(data[index]).isalnum()


def find_leaks_in_media(data: bytes, forbidden: Iterable[Forbidden]) -> list[Leak]:
    """``find_leaks`` for one large binary (a clip file), at the speed of ``bytes.find``.

    Strings of ``MIN_BINARY_NEEDLE`` characters or more, in every spelling, are searched in the
    whole file (case-insensitively for ASCII letters; a short one must stand alone, as in
    ``find_leaks``); patterns in its runs of printable text only, where a muxer or an encoder
    would have written an id. A regex pass per needle over megabytes of video, as ``find_leaks``
    would make, takes seconds per file; this takes milliseconds.
    """
    lowered = data.lower()
    found: dict[tuple[str, int], Leak] = {}
    for item in forbidden:
        if isinstance(item, re.Pattern) or len(item.strip()) < MIN_BINARY_NEEDLE:
            continue
        needle = item.strip()
        for spelling in _spellings(needle):
            probe = spelling.encode("latin-1").lower()
            start = lowered.find(probe)
            while start >= 0:
                end = start + len(probe)
                standalone = not (_alphanumeric_at(lowered, start - 1) or _alphanumeric_at(lowered, end))
                if (len(needle) >= SHORT_NEEDLE or standalone) and (needle, start) not in found:
                    context = data[max(start - CONTEXT, 0): end + CONTEXT].decode("latin-1")
                    found[(needle, start)] = Leak(needle, data[start:end].decode("latin-1"), 0, start, context)
                start = lowered.find(probe, start + 1)
    patterns = [item for item in forbidden if isinstance(item, re.Pattern)]
    for run in _PRINTABLE_RUN.finditer(data) if patterns else ():
        text = run.group(0).decode("latin-1")
        for pattern in patterns:
            for match in pattern.finditer(text):
                offset = run.start() + match.start()
                context = text[max(match.start() - CONTEXT, 0): match.end() + CONTEXT]
                found[(pattern.pattern, offset)] = Leak(pattern.pattern, match.group(0), 0, offset, context)
    return sorted(found.values(), key=lambda leak: leak.offset)


def _file_names(*names: str) -> set[str]:
    """A stored path's base name and stem (``clips/ab12.mp4`` → ``ab12.mp4``, ``ab12``)."""
    out = set()
    for name in filter(None, names):
        base = os.path.basename(name)
        out |= {base, os.path.splitext(base)[0]}
    return out


def _strings_of(clip: Clip) -> set[str]:
    condition, source, audio = clip.condition, clip.source, clip.audio
    strings = {condition.name, condition.description, condition.control, condition.architecture, clip.delivery_name,
               clip.sha256, source.name, source.identity, source.content_id, source.sha256,
               audio.name, audio.content_id, audio.sha256}
    strings |= _file_names(clip.delivery_name, clip.file.name, source.file.name, audio.file.name)
    if condition.checkpoint is not None:
        checkpoint = condition.checkpoint
        strings |= {checkpoint.name, checkpoint.registry_name, checkpoint.architecture, checkpoint.sha256,
                    checkpoint.notes} | _file_names(checkpoint.path)
    return strings


def participant_clips(study: Study) -> list[Clip]:
    """Every clip a participant of ``study`` can be served: its study clips and their references.

    A DCR trial shows each clip beside its reference, which need not be a study clip itself.
    """
    related = ("condition__checkpoint", "source", "audio")
    clips = {c.pk: c for c in Clip.objects.filter(study_clips__study=study).select_related(*related)}
    reference_ids = {c.reference_id for c in clips.values() if c.reference_id} - set(clips)
    clips |= {c.pk: c for c in Clip.objects.filter(pk__in=reference_ids).select_related(*related)}
    return sorted(clips.values(), key=lambda c: c.pk)


def for_binary(forbidden: Iterable[Forbidden]) -> list[Forbidden]:
    """The needles worth searching in media bytes: patterns, and strings of ``MIN_BINARY_NEEDLE`` or more.

    Shorter strings are still searched in the container's metadata as ffprobe prints it.
    """
    return [f for f in forbidden if isinstance(f, re.Pattern) or len(f.strip()) >= MIN_BINARY_NEEDLE]


def _id_pattern(kind: str, ids: Iterable[int]) -> re.Pattern[str]:
    alternatives = "|".join(str(i) for i in sorted(set(ids)))
    return re.compile(
        rf"""\b(?:{ID_CONTEXTS[kind]})(?:[_-]?(?:id|pk))?["']?\s*(?:[:=/]|%3D|%2F)\s*["']?(?:{alternatives})(?![0-9A-Za-z_])""",
        re.IGNORECASE,
    )


def forbidden_for_study(study: Study) -> list[Forbidden]:
    """Everything that must never reach a participant of ``study`` (strings first, then id patterns)."""
    clips = participant_clips(study)
    strings = set().union(*(_strings_of(clip) for clip in clips)) if clips else set()
    # A researcher names a job after what it makes ("wav2lip vs sadtalker, GRID"): as revealing as a condition.
    jobs = list(GenerationJob.objects.filter(clips__in=clips).distinct().values_list("pk", "name"))
    strings |= {name for _, name in jobs}
    # Feedback is shown after practice clips only; on a gold clip it would say the clip was a check.
    feedback = ExpectedAnswer.objects.filter(study_clip__study=study).exclude(feedback="")
    strings |= set(feedback.filter(study_clip__role=StudyClip.ROLE_GOLD).values_list("feedback", flat=True)) - set(
        feedback.exclude(study_clip__role=StudyClip.ROLE_GOLD).values_list("feedback", flat=True)
    )
    ids = {
        "clip": [c.pk for c in clips],
        "study clip": list(study.study_clips.values_list("pk", flat=True)),
        "condition": [c.condition_id for c in clips],
        "source": [c.source_id for c in clips],
        "audio": [c.audio_id for c in clips],
        "checkpoint": [c.condition.checkpoint_id for c in clips if c.condition.checkpoint_id],
        "job": [pk for pk, _ in jobs],
    }
    patterns = [_id_pattern(kind, values) for kind, values in ids.items() if values]
    return sorted(s for s in strings if s and len(s.strip()) >= MIN_NEEDLE) + patterns + [ID_FIELD]


# --- telling clips apart without a name ---------------------------------------------------------

# What would mark a trial as a check rather than a clip to judge. Practice trials may say "practice".
ROLE_MARKERS = re.compile(
    r"\b(?:gold(?:en)?(?:[ _-]?(?:clip|item|standard|trial|check))?|traps?|catch[ _-]?trials?|attention[ _-]?checks?"
    r"|quality[ _-]?checks?|sanity[ _-]?checks?|passed[ _-]?check|expected[ _-]?answers?)\b",
    re.IGNORECASE,
)
# Opaque tokens (assignment and participant tokens, signed URLs, CSRF tokens), numbers and JSON flags
# differ from one trial to the next by design (the counter, "completed" after the last one); what is
# left must be the same for a gold and a test trial.
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{16,}(?::[A-Za-z0-9_\-]+)*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_JSON_FLAG = re.compile(r"(?<=[:\[,]) ?\b(?:true|false|null)\b")


def trial_skeleton(text: str | bytes) -> str:
    """A trial page or JSON answer with its tokens, numbers and JSON flags masked: equal for trials that look alike."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return _JSON_FLAG.sub(" <flag>", _NUMBER.sub("0", _TOKEN.sub("<token>", text)))


def role_markers(text: str | bytes) -> list[str]:
    """Words that would tell a participant a trial is a check (gold, trap, attention check, …)."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [m.group(0) for m in ROLE_MARKERS.finditer(text)]


@dataclass(frozen=True)
class ClipFacts:
    """What a participant's player can measure of one clip (``generation.media.probe`` of the file)."""

    label: str  # how the audit names it to the researcher, e.g. "clip 12 (LipGAN baseline)"
    content: str  # clips of equal content (same face, same audio) must be indistinguishable; names it
    n_frames: int | None
    duration: float
    video_duration: float | None
    audio_duration: float | None
    profile: tuple  # encoding and container tags, as ((name, value), …)


# ffprobe prints durations in microseconds; anything above a millisecond is a real difference.
DURATION_TOLERANCE_S = 1e-3


def content_mismatches(clips: Iterable[ClipFacts]) -> list[str]:
    """One sentence per content item whose clips differ in frame count or duration (video, audio or container).

    A participant's player shows a clip's duration; if one condition's clips are a frame longer,
    the duration names the condition as surely as a file name would.
    """
    groups: dict[str, list[ClipFacts]] = {}
    for facts in clips:
        groups.setdefault(facts.content, []).append(facts)
    problems = []
    for content, members in groups.items():
        for name in ("n_frames", "duration", "video_duration", "audio_duration"):
            values = [getattr(m, name) for m in members]
            known = [v for v in values if v is not None]
            if not known:
                continue
            unequal = len(known) != len(values) or (
                max(known) - min(known) > (0 if name == "n_frames" else DURATION_TOLERANCE_S)
            )
            if unequal:
                listing = ", ".join(f"{m.label}: {getattr(m, name)}" for m in members)
                problems.append(f"{name} differs within content «{content}»: {listing}")
    return problems


def profile_mismatches(clips: Iterable[ClipFacts]) -> list[str]:
    """One sentence per encoding property or container tag whose value is not the same for every clip."""
    clips = list(clips)
    names = sorted({name for facts in clips for name, _ in facts.profile})
    problems = []
    for name in names:
        by_value: dict[str, list[str]] = {}
        for facts in clips:
            value = dict(facts.profile).get(name)
            by_value.setdefault(json.dumps(value, sort_keys=True, default=str), []).append(facts.label)
        if len(by_value) > 1:
            listing = "; ".join(f"{value} for {', '.join(labels)}" for value, labels in sorted(by_value.items()))
            problems.append(f"{name} differs between clips: {listing}")
    return problems
