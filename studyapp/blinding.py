"""Blinding audit: does anything a participant receives name what made a clip?

``find_leaks`` searches texts (HTML, JS, CSS, JSON, headers, URLs, media bytes) for forbidden
strings — each also in its HTML-escaped, URL-quoted and JSON-escaped spelling — and forbidden
patterns (ids in URL or JSON contexts). ``forbidden_for_study`` lists, from the database, everything
that must never reach a participant of a study: condition names, control keys, architectures,
checkpoints, source and audio names and files, delivery names, hashes, the names of the generation
jobs that made the clips, and the ids of clips, conditions, sources, audios, checkpoints, jobs and
study clips.
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
from studyapp.models import Study

Forbidden = str | re.Pattern[str]

# Shorter needles must stand alone (not inside a longer word or token) to count.
SHORT_NEEDLE = 8
# Needles shorter than this are too generic to audit as plain text.
MIN_NEEDLE = 3
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


def _file_names(*names: str) -> set[str]:
    """A stored path's base name and stem (``clips/ab12.mp4`` → ``ab12.mp4``, ``ab12``)."""
    out = set()
    for name in filter(None, names):
        base = os.path.basename(name)
        out |= {base, os.path.splitext(base)[0]}
    return out


def _strings_of(clip: Clip) -> set[str]:
    condition, source, audio = clip.condition, clip.source, clip.audio
    strings = {condition.name, condition.control, condition.architecture, clip.delivery_name, clip.sha256,
               source.name, source.identity, source.content_id, source.sha256,
               audio.name, audio.content_id, audio.sha256}
    strings |= _file_names(clip.delivery_name, clip.file.name, source.file.name, audio.file.name)
    if condition.checkpoint is not None:
        checkpoint = condition.checkpoint
        strings |= {checkpoint.name, checkpoint.architecture, checkpoint.sha256} | _file_names(checkpoint.path)
    return strings


def _id_pattern(kind: str, ids: Iterable[int]) -> re.Pattern[str]:
    alternatives = "|".join(str(i) for i in sorted(set(ids)))
    return re.compile(
        rf"""\b(?:{ID_CONTEXTS[kind]})(?:[_-]?(?:id|pk))?["']?\s*(?:[:=/]|%3D|%2F)\s*["']?(?:{alternatives})(?![0-9A-Za-z_])""",
        re.IGNORECASE,
    )


def forbidden_for_study(study: Study) -> list[Forbidden]:
    """Everything that must never reach a participant of ``study`` (strings first, then id patterns)."""
    clips = list(
        Clip.objects.filter(study_clips__study=study).select_related("condition__checkpoint", "source", "audio")
    )
    strings = set().union(*(_strings_of(clip) for clip in clips)) if clips else set()
    # A researcher names a job after what it makes ("wav2lip vs sadtalker, GRID"): as revealing as a condition.
    jobs = list(GenerationJob.objects.filter(clips__in=clips).distinct().values_list("pk", "name"))
    strings |= {name for _, name in jobs}
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
