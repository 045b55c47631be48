"""Walk simulated participants through studies and report anything that could unblind them.

``manage.py audit_blinding --study ID [--study ID …] | --all-open [--participants N] [--json] [--pad]``

For each study, inside one database transaction that is rolled back at the end (nothing the walk
creates stays; media files are only read), N participants are driven through the flow with Django's
test client, as a browser would be: the study link, consent (refused once, then given), whatever
stages the flow offers (environment check, instructions, practice and its feedback, the trials of
the study's method, the end page), following the same-origin links, forms and URLs found in the
HTML and in its JSON blocks (``json_script``), and fetching every static asset, every media URL
(whole, by byte ranges, HEAD, and with a tampered signature), and posting the playback events and
ratings a trial page posts. Plays are backdated inside the transaction instead of waiting for the
clip's length to pass (the server times a clip from its first "play"). Answers fall inside the
expected ranges, except for every second participant, who fails the gold checks (so the screen-out
page is walked too); one more participant returns the study at the first chance (the return pages).
An environment check is passed with a desktop browser's measurements and the sound check's number
(read from the database, as a participant hears it); a stage the walk cannot pass is reported.

Everything received is then checked:

* names: every URL, header, cookie and body, and every clip's bytes and container tags, against
  ``blinding.forbidden_for_study`` (condition, model, checkpoint, file and job names, hashes, ids);
* headers: no per-file validator or name on clip media (ETag, Last-Modified, Content-Disposition,
  Server-Timing, …), and no participant response a shared cache may keep (``private``/``no-store``);
* sizes: every clip's size, as served (Content-Length, Content-Range) and on disk, a multiple of
  the padding block (``generation.media.pad_to_block``);
* durations: within one content item (same face, same audio) every condition's clip has the same
  frame count and durations; and every clip has the same encoding and container tags;
* roles: a gold trial looks exactly like a test trial (its page and answers, tokens and numbers
  masked), and no trial page or answer uses words such as "gold" or "attention check";
* sharing: no clip URL is handed to two participants.

Exit status: 1 when anything leaks, 2 when nothing leaked but the walk could not cover the study
(no trial reached, a clip a trial should show never served, a server error), 0 otherwise.
``--pad`` first pads the studies' clip files to the block (and updates their size and sha256): the
one change this command makes that stays.

UNVERIFIED choices: the form-filling guesses (``FIELD_GUESSES``) and the link words treated as
"leave the study" (``LEAVING_WORDS``) are heuristics; a stage the walk cannot pass by them is
reported, not silently skipped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import tempfile
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from django.conf import settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management.base import BaseCommand, CommandError
from django.core import signals
from django.db import close_old_connections, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from generation import media
from generation.models import Clip
from studyapp import blinding
from studyapp.models import Assignment, ExpectedAnswer, Participant, PlaybackEvent, Study, StudyClip

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) syncmos-blinding-audit/1.0"
# A clip response must carry nothing that is a property of its file or of how it was made.
MEDIA_HEADERS_FORBIDDEN = ("etag", "last-modified", "content-disposition", "content-location", "server-timing",
                           "x-sendfile", "x-accel-redirect", "link")
# Links and buttons the walk does not take: they would end the session it is auditing.
LEAVING_WORDS = re.compile(r"\b(?:return|withdraw|quit|leave|give up|abandon|stop|log ?out|sign ?out|opt ?out)\b",
                           re.IGNORECASE)
# Form fields a page's script fills before submitting: what a desktop browser passing every check sends
# (the keys of environment.js's report), in the order the patterns are tried.
DESKTOP_ENVIRONMENT = {"viewport_width": 1280, "viewport_height": 800, "screen_width": 1920, "screen_height": 1080,
                       "device_pixel_ratio": 1, "max_touch_points": 0, "coarse_pointer": False, "fine_pointer": True,
                       "ua_mobile": False, "player_width": 960, "player_height": 540}
FIELD_GUESSES = [
    (re.compile(r"report|env|measure|result", re.I), json.dumps(DESKTOP_ENVIRONMENT)),
    (re.compile(r"fullscreen", re.I), "granted"),
    (re.compile(r"viewport|window", re.I), "1280x800"),
    (re.compile(r"screen", re.I), "1920x1080"),
    (re.compile(r"width", re.I), "1280"),
    (re.compile(r"height", re.I), "800"),
    (re.compile(r"face", re.I), "320"),
    (re.compile(r"device|platform", re.I), "desktop"),
    (re.compile(r"phone|mobile|touch", re.I), "false"),
    (re.compile(r"audio|sound|played|passed", re.I), "true"),
]
ANSWER_FIELD = re.compile(r"answer|number|digit|heard", re.I)
REDIRECTS = {301, 302, 303, 307, 308}
MEDIA_TYPES = ("video/", "audio/", "image/")
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)""")


# --- what was fetched, and what was found -------------------------------------------------------


@dataclass
class Exchange:
    """One request of a simulated participant and the answer it got."""

    participant: int
    stage: str
    method: str
    url: str
    status: int
    headers: dict[str, str]
    cookies: str
    body: bytes
    trial: int | None = None  # the Assignment pk whose page fetched it
    synthetic: bool = False  # read from disk because the server does not serve it itself (static files)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def is_media(self) -> bool:
        return self.content_type.startswith(MEDIA_TYPES)

    @property
    def is_static(self) -> bool:
        return urlsplit(self.url).path.startswith(settings.STATIC_URL)

    def header_text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.headers.items())

    def total_size(self) -> int | None:
        """The size of the whole file this answer reveals (Content-Range's total, or a whole body's length)."""
        content_range = self.headers.get("content-range", "")
        if "/" in content_range:
            total = content_range.rsplit("/", 1)[1].strip()
            return int(total) if total.isdigit() else None
        if self.status == 200 and self.headers.get("content-length", "").isdigit():
            return int(self.headers["content-length"])
        return None

    def where(self) -> str:
        return f"{self.method} {_short(self.url)} (participant {self.participant}, {self.stage})"


@dataclass(frozen=True)
class Finding:
    kind: str  # name | metadata | header | caching | size | duration | encoding | role | sharing
    where: str
    what: str
    context: str = ""


@dataclass
class Trial:
    participant: int
    assignment: int
    role: str
    page: str  # the trial page's skeleton (tokens and numbers masked)
    answers: list[str] = field(default_factory=list)  # skeletons of the JSON answers to its posts
    texts: list[tuple[str, bytes]] = field(default_factory=list)  # (where, body) of its page and answers
    expected_clips: set[int] = field(default_factory=set)


@dataclass
class Walk:
    index: int
    stages: list[str] = field(default_factory=list)
    end_state: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class StudyAudit:
    study_id: int
    title: str
    method: str
    participants: int
    walks: list[Walk] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    clips_served: dict[int, str] = field(default_factory=dict)  # clip pk → label
    served_by_trial: dict[int, set[int]] = field(default_factory=dict)  # assignment pk → clip pks served whole
    clips_checked: int = 0
    block: int = media.DELIVERY_SIZE_BLOCK

    def as_dict(self) -> dict:
        return {
            "study": self.study_id, "title": self.title, "method": self.method, "participants": self.participants,
            "requests": len(self.exchanges), "clips_checked": self.clips_checked,
            "clips_served": sorted(self.clips_served.values()), "block": self.block,
            "walks": [asdict(w) for w in self.walks], "trials": Counter(t.role for t in self.trials),
            "leaks": [asdict(f) for f in _deduplicated(self.findings)], "problems": self.problems, "notes": self.notes,
        }


def _short(url: str) -> str:
    """A URL with its long opaque tokens shortened, for a readable report."""
    return re.sub(r"([A-Za-z0-9_\-:]{10})[A-Za-z0-9_\-:]{14,}", r"\1…", url)


def _deduplicated(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, what, place with its tokens masked), the count of repeats in ``context``."""
    counts: Counter = Counter()
    first: dict[tuple, Finding] = {}
    for finding in findings:
        key = (finding.kind, finding.what, blinding.trial_skeleton(finding.where))
        counts[key] += 1
        first.setdefault(key, finding)
    out = []
    for key, finding in first.items():
        suffix = f" (×{counts[key]})" if counts[key] > 1 else ""
        out.append(Finding(finding.kind, finding.where + suffix, finding.what, finding.context))
    return out


# --- reading pages -------------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str, str, bool]] = field(default_factory=list)  # (tag/type, name, value, checked)
    buttons: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, label)
    options: dict[str, list[str]] = field(default_factory=dict)  # select name → option values
    label: str = ""


class PageParser(HTMLParser):
    """Same-origin references, JSON blocks, forms, the stage's heading and the inline scripts of a page."""

    URL_ATTRIBUTES = {"src", "href", "poster", "data-src", "action", "formaction", "data-url"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.references: list[tuple[str, str]] = []  # (url, link text or tag)
        self.json_blocks: list[tuple[str, object]] = []
        self.forms: list[Form] = []
        self.heading = ""
        self.subheading = ""
        self.title = ""
        self._script: dict | None = None
        self._capture: str | None = None  # "h1" | "title" | "button" | "a" | "option" | "textarea"
        self._text: list[str] = []
        self._anchor: str | None = None
        self._button: tuple[str, str] | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name in self.URL_ATTRIBUTES and value:
                self.references.append((value, tag))
            if name == "srcset" and value:
                self.references += [(part.strip().split(" ")[0], tag) for part in value.split(",") if part.strip()]
        if tag == "script":
            self._script = {"type": (attributes.get("type") or "").lower(), "id": attributes.get("id") or "",
                            "text": []}
        elif tag == "form":
            self.forms.append(Form(attributes.get("action") or "", (attributes.get("method") or "get").lower()))
        elif tag in ("input", "textarea", "select") and self.forms:
            kind = (attributes.get("type") or tag).lower()
            name = attributes.get("name") or ""
            if kind in ("submit", "image"):
                self.forms[-1].buttons.append((name, attributes.get("value") or "", attributes.get("value") or ""))
            elif kind not in ("button", "reset", "file") and name:
                checked = "checked" in attributes or "selected" in attributes
                self.forms[-1].fields.append((kind, name, attributes.get("value") or "", checked))
                if tag == "select":
                    self._select = name
                    self.forms[-1].options[name] = []
        elif tag == "option" and self._select and self.forms:
            self.forms[-1].options[self._select].append(attributes.get("value") or "")
        elif tag == "button" and self.forms and (attributes.get("type") or "submit").lower() == "submit":
            self._button = (attributes.get("name") or "", attributes.get("value") or "")
            self._start_capture("button")
        elif tag == "a":
            self._anchor = attributes.get("href")
            self._start_capture("a")
        elif tag in ("h1", "h2", "title") and not getattr(self, {"h1": "heading", "h2": "subheading"}.get(tag, tag)):
            self._start_capture(tag)

    def _start_capture(self, what: str) -> None:
        self._capture, self._text = what, []

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            text = "".join(self._script["text"])
            if self._script["type"] == "application/json" or self._script["type"].endswith("+json"):
                try:
                    self.json_blocks.append((self._script["id"], json.loads(text)))
                except json.JSONDecodeError:
                    pass
            self._script = None
        elif tag == "select":
            self._select = None
        elif tag == self._capture:
            text = " ".join("".join(self._text).split())
            if tag == "h1":
                self.heading = text
            elif tag == "h2":
                self.subheading = text
            elif tag == "title":
                self.title = text
            elif tag == "button" and self._button is not None and self.forms:
                self.forms[-1].buttons.append((*self._button, text))
                self._button = None
            elif tag == "a" and self._anchor:
                self.references = [(url, text if url == self._anchor and kind == "a" else kind)
                                   for url, kind in self.references]
            self._capture = None

    def handle_data(self, data):
        if self._script is not None:
            self._script["text"].append(data)
        if self._capture:
            self._text.append(data)


def _json_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _audit_host() -> str:
    for host in settings.ALLOWED_HOSTS:
        if host == "*":
            return "testserver"
        if not any(c in host for c in "*?"):
            return host.lstrip(".")
    return "testserver"


# --- one simulated participant -------------------------------------------------------------------


class ParticipantWalker:
    """A participant's browser: follows the study's pages to their end and records every answer."""

    def __init__(self, audit: StudyAudit, study: Study, index: int, *, fail_checks: bool = False,
                 leave: bool = False, static_cache: dict):
        self.audit, self.study, self.index, self.fail_checks = audit, study, index, fail_checks
        self.leave, self.left = leave, False  # a participant who returns the study at the first chance
        self.host = _audit_host()
        self.client = Client(HTTP_USER_AGENT=USER_AGENT, HTTP_HOST=self.host, raise_request_exception=False)
        self.static_cache = static_cache  # url → Exchange, shared by the walkers of an audit
        self.fetched: set[str] = set()
        self.probed: set[str] = set()  # digests of the media files whose URL was probed beyond a plain GET
        self.walk = Walk(index)
        self.stage = "study link"
        self.trial: Trial | None = None
        self.external_id = f"audit{index}x{secrets.token_hex(6)}"

    # ---- HTTP ----

    def request(self, method: str, url: str, *, data=None, json_body=None, headers=None) -> Exchange:
        kwargs = {"secure": True, "headers": headers or {}}
        if method == "GET":
            response = self.client.get(url, **kwargs)
        elif method == "HEAD":
            response = self.client.head(url, **kwargs)
        elif json_body is not None:
            response = self.client.post(url, data=json.dumps(json_body), content_type="application/json", **kwargs)
        else:
            response = self.client.post(url, data=data or {}, **kwargs)
        # Reading a streamed body to its end closes the response, as the test client's WSGI emulation does.
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = {name.lower(): value for name, value in response.items()}
        exchange = Exchange(self.index, self.stage, method, url, response.status_code, headers,
                            response.cookies.output(), body, trial=self.trial.assignment if self.trial else None)
        self.audit.exchanges.append(exchange)
        if exchange.status >= 500:
            self.audit.problems.append(f"server error {exchange.status} for {exchange.where()}")
        return exchange

    def same_origin(self, url: str, base: str) -> str | None:
        """The local path (with query) of a URL on this server, or None for another origin or scheme."""
        parts = urlsplit(urljoin(f"https://{self.host}{base}", url))
        if parts.scheme not in ("http", "https") or parts.netloc != self.host:
            return None
        return urlunsplit(("", "", parts.path, parts.query, ""))

    def navigate(self, url: str) -> Exchange | None:
        """GET a page, following same-origin redirects; None when it sends the participant elsewhere."""
        exchange = self.request("GET", url)
        for _ in range(10):
            if exchange.status not in REDIRECTS:
                return exchange
            target = self.same_origin(exchange.headers.get("location", ""), urlsplit(url).path)
            if target is None:
                self.walk.stages.append(f"sent away ({exchange.status})")
                return None
            url = target
            exchange = self.request("GET", url)
        self.audit.problems.append(f"redirect loop at {exchange.where()}")
        return None

    # ---- assets ----

    def fetch_static(self, path: str) -> None:
        if path in self.static_cache:
            return
        exchange = self.request("GET", path)
        if exchange.status in REDIRECTS or exchange.status >= 400:
            name = urlsplit(path).path.removeprefix(settings.STATIC_URL)
            found = finders.find(name) or (staticfiles_storage.exists(name) and staticfiles_storage.path(name))
            if not found:
                self.audit.problems.append(f"static file {path} is referenced but can be neither fetched nor found")
                self.static_cache[path] = exchange
                return
            self.audit.exchanges.remove(exchange)
            exchange = Exchange(self.index, self.stage, "GET", path, 200, {"content-type": _static_type(name)}, "",
                                Path(found).read_bytes(), synthetic=True)
            self.audit.exchanges.append(exchange)
        self.static_cache[path] = exchange
        if exchange.content_type == "text/css":
            for ref in CSS_URL.findall(exchange.body.decode("utf-8", "replace")):
                local = self.same_origin(ref, path)
                if local:
                    self.fetch(local, path)
        if exchange.content_type in ("text/javascript", "application/javascript"):
            quoted = re.findall(rf"""["'`]({re.escape(settings.STATIC_URL)}[^"'`\s]+)["'`]""",
                                exchange.body.decode("utf-8", "replace"))
            for ref in quoted:
                self.fetch_static(ref)

    def fetch(self, path: str, base: str) -> None:
        """GET a referenced same-origin URL once (a media URL also by ranges, HEAD and tampered)."""
        if path.startswith(settings.STATIC_URL):
            self.fetch_static(path)
            return
        if path in self.fetched:
            return
        self.fetched.add(path)
        exchange = self.request("GET", path)
        if exchange.is_media:
            # Ranges, HEAD and a tampered URL once per file and participant: the same file answers alike.
            digest = hashlib.sha256(exchange.body).hexdigest()
            if digest not in self.probed:
                self.probed.add(digest)
                self.probe_media(path)
        elif exchange.status == 200 and exchange.content_type == "application/json":
            try:
                document = json.loads(exchange.body)
            except json.JSONDecodeError:
                return
            for text in _json_strings(document):
                local = self.same_origin(text, path) if text.startswith(("/", "http")) else None
                if local and local not in self.fetched:
                    self.fetch(local, path)

    def probe_media(self, path: str) -> None:
        """What a player (Safari, seeking) and a curious participant ask of a clip URL."""
        for headers in ({"Range": "bytes=0-1"}, {"Range": "bytes=-1024"}, {"Range": "bytes=999999999-"}):
            self.request("GET", path, headers=headers)
        self.request("HEAD", path)
        parts = urlsplit(path)
        segments = parts.path.rstrip("/").split("/")
        last = segments[-1]
        if len(last) > 8:
            tampered = last[:-1] + ("A" if last[-1] != "A" else "B")
            self.request("GET", urlunsplit(("", "", "/".join([*segments[:-1], tampered]), parts.query, "")))

    def fetch_references(self, page: Exchange, parser: PageParser) -> None:
        base = urlsplit(page.url).path
        urls = [(url, text) for url, text in parser.references if not url.startswith(("#", "data:", "javascript:"))]
        for _, document in parser.json_blocks:
            urls += [(s, "json") for s in _json_strings(document) if s.startswith(("/", "http"))]
        for url, text in urls:
            local = self.same_origin(url, base)
            if local is None or local == urlsplit(page.url).path:
                continue
            self.fetch(local, base)

    # ---- the walk ----

    def run(self, max_steps: int) -> Walk:
        entry = reverse("participant:study-entry", args=[self.study.public_id])
        entry += "?" + urlencode({"PROLIFIC_PID": self.external_id, "STUDY_ID": "audit", "SESSION_ID": self.index})
        page = self.navigate(entry)
        refused_once = False
        last_skeleton, repeats = None, 0
        for _ in range(max_steps):
            if page is None:
                break
            parser = PageParser()
            if "html" in page.content_type:
                parser.feed(page.body.decode("utf-8", "replace"))
            config = next((doc for _, doc in parser.json_blocks if _is_trial_config(doc)), None)
            self.trial = self.start_trial(config, page) if config else None
            self.stage = self.trial_stage() if self.trial else _stage_name(page, parser, self.study)
            page.stage = self.stage
            self.walk.stages.append(self.stage)
            self.fetch_references(page, parser)
            # Trial pages look alike by design (that is checked later): a trial is known by its assignment.
            shown = self.trial.assignment if self.trial else blinding.trial_skeleton(page.body)
            skeleton = (urlsplit(page.url).path, shown)
            repeats = repeats + 1 if skeleton == last_skeleton else 0
            last_skeleton = skeleton
            if repeats >= 2 and not self.unstick():
                where = _short(page.url)
                self.audit.problems.append(f"participant {self.index} is stuck at «{self.stage}» ({where})")
                break
            if config:
                page = self.do_trial(config, page)
                continue
            if self.leave and not self.left:
                leaving = self.leave_from(page, parser)
                if leaving is not None:
                    page = leaving
                    continue
            form = _form_to_submit(parser.forms)
            if form is None:
                break
            if not refused_once and any(kind == "checkbox" for kind, *_ in form.fields):
                refused_once = True
                self.submit(form, page, tick_boxes=False)  # the refusal page is reachable too
            page = self.submit(form, page)
        else:
            self.audit.problems.append(f"participant {self.index} did not finish within {max_steps} pages")
        self.trial = None
        participant = Participant.objects.filter(study=self.study, external_id=self.external_id).first()
        self.walk.end_state = participant.state if participant else "not enrolled"
        return self.walk

    def leave_from(self, page: Exchange, parser: PageParser) -> Exchange | None:
        """Take the page's way out of the study (a form, else a link), if it has one."""
        for form in parser.forms:
            labels = " ".join(label or value for _, value, label in form.buttons)
            if form.method == "post" and LEAVING_WORDS.search(labels):
                self.left = True
                return self.submit(form, page)
        for url, text in parser.references:
            local = self.same_origin(url, urlsplit(page.url).path)
            if local and LEAVING_WORDS.search(text) and not local.startswith(settings.STATIC_URL):
                return self.navigate(local)  # a confirmation page, whose form is taken next
        return None

    def unstick(self) -> bool:
        """A stage the walk could not pass by its forms: an environment check driven by script alone.

        The audit admits the participant directly (its page and assets were fetched and scanned).
        """
        from studyapp.assignment import StudyNotReady, admit

        participant = Participant.objects.filter(study=self.study, external_id=self.external_id).first()
        if participant is None or participant.state != Participant.STARTED:
            return False
        try:
            admit(participant)
        except StudyNotReady:
            return False
        self.walk.notes.append(f"«{self.stage}» passed by the audit itself (its page gives no form to submit)")
        return True

    def submit(self, form: Form, page: Exchange, *, tick_boxes: bool = True) -> Exchange | None:
        participant = Participant.objects.filter(study=self.study, external_id=self.external_id).first()
        data: dict[str, list[str]] = defaultdict(list)
        for kind, name, value, checked in form.fields:
            if kind == "checkbox":
                if tick_boxes:
                    data[name].append(value or "on")
            elif kind == "radio":
                if name not in data:
                    data[name].append(self.guess(name, value, participant) if ANSWER_FIELD.search(name) else value)
            elif kind == "select":
                options = form.options.get(name) or [""]
                data[name].append(self.guess(name, "", participant) if ANSWER_FIELD.search(name) else options[0])
            else:
                data[name].append(value or self.guess(name, value, participant))
        button = next((b for b in form.buttons if not LEAVING_WORDS.search(b[2] or b[1])), None)
        if button and button[0]:
            data[button[0]].append(button[1])
        action = self.same_origin(form.action or page.url, urlsplit(page.url).path) or page.url
        if form.method == "get":
            return self.navigate(f"{urlsplit(action).path}?{urlencode(data, doseq=True)}")
        exchange = self.request("POST", action, data=dict(data))
        if exchange.status in REDIRECTS:
            target = self.same_origin(exchange.headers.get("location", ""), urlsplit(action).path)
            return self.navigate(target) if target else None
        return exchange

    def guess(self, name: str, value: str, participant: Participant | None) -> str:
        if ANSWER_FIELD.search(name) and participant is not None and participant.audio_check_answer is not None:
            return str(participant.audio_check_answer)
        return next((guess for pattern, guess in FIELD_GUESSES if pattern.search(name)), value)

    # ---- trials ----

    def start_trial(self, config: dict, page: Exchange) -> Trial | None:
        assignment = (Assignment.objects.select_related("study_clip__clip", "paired_study_clip__clip")
                      .filter(token=config.get("assignment"), participant__study=self.study).first())
        if assignment is None:
            self.audit.problems.append(f"a trial page names no assignment of this study: {page.where()}")
            return None
        trial = next((t for t in self.audit.trials if t.assignment == assignment.pk), None)
        if trial is None:
            main = assignment.study_clip.clip
            expected = {main.pk}
            if assignment.paired_study_clip is not None:
                expected.add(assignment.paired_study_clip.clip_id)
            if self.study.method == Study.METHOD_DCR and main.reference_id:
                expected.add(main.reference_id)
            trial = Trial(self.index, assignment.pk, assignment.role, blinding.trial_skeleton(page.body),
                          expected_clips=expected)
            self.audit.trials.append(trial)
        trial.texts.append((page.where(), page.body))
        return trial

    def trial_stage(self) -> str:
        return f"trial ({self.trial.role})"

    def answer_values(self, assignment: Assignment, scales: list[str]) -> dict[str, int]:
        expected = {e.scale.key: e for e in ExpectedAnswer.objects.filter(study_clip=assignment.study_clip)
                    .select_related("scale")}
        values = {}
        for key in scales:
            answer = expected.get(key)
            if answer is None:
                values[key] = 3
            elif self.fail_checks and (answer.low > 1 or answer.high < 5):
                values[key] = 1 if answer.low > 1 else 5
            else:
                values[key] = (answer.low + answer.high) // 2
        return values

    def do_trial(self, config: dict, page: Exchange) -> Exchange | None:
        """Play the trial's clips to their end (plays backdated), answer, and follow ``next``."""
        trial = self.trial
        if trial is None:
            return None
        home = self.same_origin(str(_config_url(config, "next") or page.url), urlsplit(page.url).path)
        assignment = Assignment.objects.select_related("study_clip__clip", "paired_study_clip__clip").get(
            pk=trial.assignment)
        rate_url, events_url = _config_url(config, "rate"), _config_url(config, "event")
        scales = config.get("scales") or []
        scales = [s if isinstance(s, str) else s.get("key") for s in scales]
        durations = [c.duration or 1.0 for c in Clip.objects.filter(pk__in=trial.expected_clips)]
        duration = max(durations or [1.0])
        token = config["assignment"]
        values = self.answer_values(assignment, scales)
        answer = {"assignment": token, "response_time_ms": 1800, "first_choice_ms": 900,
                  "ratings": {key: {"value": value, "uuid": str(uuid.uuid4())} for key, value in values.items()}}
        if not (rate_url and events_url):
            self.audit.problems.append(f"trial page without rate/events URLs in its config: {page.where()}")
            return None
        early = self.request("POST", rate_url, json_body=answer)  # before watching: refused, and scanned
        trial.answers.append(blinding.trial_skeleton(early.body))
        now_ms = int(timezone.now().timestamp() * 1000)
        self.request("POST", events_url, json_body={"assignment": token, "events": [
            {"kind": "play", "media_time": 0.0, "client_time": now_ms, "detail": ""}]})
        PlaybackEvent.objects.filter(assignment=assignment, kind=PlaybackEvent.PLAY).update(
            created_at=timezone.now() - timedelta(seconds=duration + 1))
        self.request("POST", events_url, json_body={"assignment": token, "events": [
            {"kind": "ended", "media_time": duration, "client_time": now_ms + int(duration * 1000), "detail": ""}]})
        saved = self.request("POST", rate_url, json_body=answer)
        if saved.status == 400 and b"first_choice" in saved.body:
            answer.pop("first_choice_ms")
            saved = self.request("POST", rate_url, json_body=answer)
        replay = self.request("POST", rate_url, json_body=answer)
        for exchange in (early, saved, replay):
            trial.texts.append((exchange.where(), exchange.body))
        try:
            outcome = json.loads(saved.body)
        except json.JSONDecodeError:
            outcome = {}
        if saved.status >= 400:
            self.audit.problems.append(f"the rating of a {trial.role} trial was refused ({saved.status}: "
                                       f"{outcome.get('error', saved.body[:80])}) at {saved.where()}")
            return None
        if not outcome.get("screened_out"):
            trial.answers.append(blinding.trial_skeleton(saved.body))
        target = outcome.get("next") or home
        local = self.same_origin(str(target), urlsplit(rate_url).path) if target else None
        self.trial = None
        return self.navigate(local) if local else None


def _static_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _is_trial_config(document: object) -> bool:
    return isinstance(document, dict) and "assignment" in document and _config_url(document, "rate") is not None


def _config_url(config: dict, word: str) -> str | None:
    """The URL in a page's JSON config whose key names ``word`` (``rateUrl``, ``rate_url``, ``eventsUrl``…)."""
    for key, value in config.items():
        if word in key.lower() and isinstance(value, str) and value.startswith(("/", "http")):
            return value
    return None


def _stage_name(page: Exchange, parser: PageParser, study: Study) -> str:
    name = parser.heading or parser.title or page.content_type or "page"
    if name == study.title and parser.subheading:
        name = parser.subheading  # the consent page is headed by the study's title
    return name[:60] if page.status < 400 else f"{name[:60]} ({page.status})"


def _form_to_submit(forms: list[Form]) -> Form | None:
    for form in forms:
        labels = " ".join(label or value for _, value, label in form.buttons)
        if form.method == "post" and not (labels and LEAVING_WORDS.search(labels) and len(form.buttons) == 1):
            return form
    return None


# --- the audit of one study ----------------------------------------------------------------------


def audit_study(study: Study, *, participants: int | None = None, block: int = media.DELIVERY_SIZE_BLOCK) -> StudyAudit:
    """Walk ``participants`` simulated participants through ``study`` and check what they were sent.

    Runs in a transaction that is rolled back: the study, its clips and their files are as before.
    """
    request_log = logging.getLogger("django.request")
    level = request_log.level
    request_log.setLevel(logging.ERROR)  # the walk asks for refusals on purpose (4xx): no warnings for those
    # At the end of a request Django closes a connection that is not in autocommit mode, which this one,
    # inside the audit's transaction, is not: the walk's requests must leave the connection alone.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        with transaction.atomic():
            audit = _walk(study, participants, block)
            transaction.set_rollback(True)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
        request_log.setLevel(level)
    _check(audit, study, block)
    return audit


def _default_participants(study: Study) -> int:
    units = study.study_clips.filter(role=StudyClip.ROLE_TEST).count()
    return max(2, min(20, -(-units // max(study.clips_per_participant, 1))))


def _walk(study: Study, participants: int | None, block: int) -> StudyAudit:
    study = Study.objects.get(pk=study.pk)
    n = participants or _default_participants(study)
    audit = StudyAudit(study.pk, study.title, study.method, n, block=block)
    if study.status != Study.OPEN:
        audit.notes.append(f"the study is {study.status}: opened for the audit only (rolled back)")
        Study.objects.filter(pk=study.pk).update(status=Study.OPEN)
        study.status = Study.OPEN
    has_checks = ExpectedAnswer.objects.filter(study_clip__study=study, study_clip__role=StudyClip.ROLE_GOLD).exists()
    per_participant = study.clips_per_participant + study.study_clips.filter(role=StudyClip.ROLE_PRACTICE).count()
    static_cache: dict[str, Exchange] = {}
    for index in range(1, n + 1):
        # Every second participant fails the gold checks, so the screened-out stage is walked too.
        walker = ParticipantWalker(audit, study, index, fail_checks=has_checks and index % 2 == 0,
                                   static_cache=static_cache)
        walk = walker.run(max_steps=4 * per_participant + 30)
        audit.walks.append(walk)
        if not any(stage.startswith("trial") for stage in walk.stages) and walk.end_state != Participant.COMPLETED:
            audit.problems.append(f"participant {index} never reached a trial (ended {walk.end_state})")
    # One more participant returns the study at the first chance, so the return pages are walked too.
    leaver = ParticipantWalker(audit, study, n + 1, leave=True, static_cache=static_cache)
    walk = leaver.run(max_steps=30)
    if not leaver.left:
        walk.notes.append("the flow offered no way to return the study")
    audit.walks.append(walk)
    leaver.stage = "error page"
    for url in _error_probes():
        leaver.request("GET", url)
    return audit


def _error_probes() -> list[str]:
    """Pages anyone can reach with a wrong link: an unknown participant, an unknown study."""
    return [reverse("participant:home", args=["x" * 32]), reverse("participant:study-entry", args=["nostudy"])]


# --- checks --------------------------------------------------------------------------------------


def _clip_label(clip: Clip) -> str:
    return f"clip {clip.pk} ({clip.condition.name})"


def _check(audit: StudyAudit, study: Study, block: int) -> None:
    forbidden = blinding.forbidden_for_study(study)
    clips = blinding.participant_clips(study)
    by_hash: dict[str, list[Clip]] = defaultdict(list)  # two clips may be one file's copies (a gold twin)
    facts = []
    with_files = []
    for clip in clips:
        if clip.file and Path(clip.file.path).is_file():
            with_files.append(clip)
        else:
            audit.problems.append(f"{_clip_label(clip)} has no file to check")
    with ThreadPoolExecutor(max_workers=4) as pool:  # ffprobe runs are independent processes
        probes = list(pool.map(_probe_or_error, [clip.file.path for clip in with_files]))
    for clip, info in zip(with_files, probes):
        path = Path(clip.file.path)
        data = path.read_bytes()
        by_hash[hashlib.sha256(data).hexdigest()].append(clip)
        where = f"{_clip_label(clip)}, the file served for it"
        audit.findings += [Finding("name", where, f"{leak.needle!r} as {leak.found!r}", _printable(leak.context))
                           for leak in blinding.find_leaks_in_media(data, forbidden)]
        if isinstance(info, media.MediaError):
            audit.problems.append(f"{_clip_label(clip)}: {info}")
            continue
        audit.findings += _tag_leaks(where, info, forbidden)
        if len(data) % block:
            audit.findings.append(Finding("size", where, f"{len(data)} bytes is not a multiple of {block} "
                                          "(manage.py audit_blinding --pad pads it)"))
        facts.append(blinding.ClipFacts(
            _clip_label(clip), f"source {clip.source.name}, audio {clip.audio.name}", info.n_frames,
            info.duration, info.video_duration, info.audio_duration,
            tuple((name, getattr(info, name)) for name in (
                "format_name", "video_codec", "pix_fmt", "width", "height", "fps", "audio_codec", "sample_rate",
                "channels", "format_tags", "stream_tags")),
        ))
    audit.clips_checked = len(facts)
    audit.findings += [Finding("duration", "clips of one content item", text)
                       for text in blinding.content_mismatches(facts)]
    audit.findings += [Finding("encoding", "the study's clips", text) for text in blinding.profile_mismatches(facts)]
    _check_exchanges(audit, forbidden, by_hash, block)
    _check_trials(audit)


def _probe_or_error(path: str) -> media.MediaInfo | media.MediaError:
    try:
        return media.probe(path)
    except media.MediaError as exc:
        return exc


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "·" for c in text)


def _tag_leaks(where: str, info: media.MediaInfo, forbidden) -> list[Finding]:
    tags = json.dumps({"format": info.format_tags, "streams": info.stream_tags}, ensure_ascii=False)
    return [Finding("metadata", where + " (container tags)", f"{leak.needle!r} as {leak.found!r}", leak.context)
            for leak in blinding.find_leaks([tags], forbidden)]


def _check_exchanges(audit: StudyAudit, forbidden, by_hash: dict[str, list[Clip]], block: int) -> None:
    digests = [hashlib.sha256(exchange.body).hexdigest() for exchange in audit.exchanges]
    file_sizes = {clip.pk: Path(clip.file.path).stat().st_size for clips in by_hash.values() for clip in clips}
    # A URL's clip, known from its whole answer, also names what its ranges and HEAD answers were of.
    clips_of_path = {urlsplit(e.url).path: by_hash[d] for e, d in zip(audit.exchanges, digests)
                     if e.status == 200 and e.is_media and d in by_hash}
    texts: list[tuple[str, str | bytes]] = []
    scanned_bodies: set[str] = set()
    media_users: dict[str, set[int]] = defaultdict(set)
    for exchange, digest in zip(audit.exchanges, digests):
        where = exchange.where()
        path = urlsplit(exchange.url).path
        texts += [(f"URL of {where}", exchange.url), (f"headers of {where}", exchange.header_text()),
                  (f"cookies of {where}", exchange.cookies)]
        if digest not in scanned_bodies:
            scanned_bodies.add(digest)
            if not exchange.is_media:
                texts.append((f"body of {where}", exchange.body))
            elif digest not in by_hash and exchange.status == 200:
                audit.findings += _unknown_media_leaks(where, exchange.body, forbidden)
        if exchange.is_static:
            continue
        clips = clips_of_path.get(path, [])
        clip = clips[0] if clips else None
        if exchange.is_media or "content-range" in exchange.headers:
            media_users[path].add(exchange.participant)
            for name in MEDIA_HEADERS_FORBIDDEN:
                if name in exchange.headers:
                    audit.findings.append(Finding("header", where, f"{name}: {exchange.headers[name]} on clip media "
                                                  "(a property of the file, the same for every participant)"))
            total = exchange.total_size()
            # Served as stored: the clip file's own finding says it. Served otherwise: the answer's own.
            if clip is not None and total is not None and total % block and total != file_sizes.get(clip.pk):
                audit.findings.append(Finding("size", where, f"the clip's size {total} is not a multiple of {block}"))
            if exchange.trial is not None:
                for served in clips:
                    audit.clips_served[served.pk] = _clip_label(served)
                    audit.served_by_trial.setdefault(exchange.trial, set()).add(served.pk)
        if "server-timing" in exchange.headers and not exchange.is_media:
            audit.findings.append(Finding("header", where, f"server-timing: {exchange.headers['server-timing']}"))
        if exchange.method in ("GET", "HEAD") and 200 <= exchange.status < 400:
            cache = exchange.headers.get("cache-control", "").lower()
            if "no-store" not in cache and "private" not in cache:
                audit.findings.append(Finding("caching", where, f"Cache-Control {cache or 'missing'!r}: a shared "
                                              "cache may hand this participant's answer to another"))
    leaks = blinding.find_leaks([text for _, text in texts], forbidden)
    audit.findings += [Finding("name", texts[leak.text_index][0], f"{leak.needle!r} as {leak.found!r}",
                               _printable(leak.context)) for leak in leaks]
    for path, users in media_users.items():
        if len(users) > 1:
            audit.findings.append(Finding("sharing", _short(path), f"the same clip URL was given to participants "
                                          f"{sorted(users)}: participants can compare notes"))


def _unknown_media_leaks(where: str, body: bytes, forbidden) -> list[Finding]:
    """A served media file that is none of the study's clips (the audio check's clip, a poster image)."""
    found = [Finding("name", f"body of {where}", f"{leak.needle!r} as {leak.found!r}", _printable(leak.context))
             for leak in blinding.find_leaks_in_media(body, forbidden)]
    with tempfile.NamedTemporaryFile(suffix=".media") as handle:
        handle.write(body)
        handle.flush()
        try:
            info = media.probe(handle.name)
        except media.MediaError:
            return found
    return found + _tag_leaks(f"body of {where}", info, forbidden)


def _check_trials(audit: StudyAudit) -> None:
    for trial in audit.trials:
        missing = trial.expected_clips - audit.served_by_trial.get(trial.assignment, set())
        if missing:
            audit.problems.append(f"a {trial.role} trial of participant {trial.participant} never served "
                                  f"{len(missing)} of the clips it should show (clips {sorted(missing)})")
        if trial.role != StudyClip.ROLE_PRACTICE:
            for where, text in trial.texts:
                for marker in set(blinding.role_markers(text)):
                    audit.findings.append(Finding("role", where, f"the word {marker!r} on a {trial.role} trial"))
    tests = [t for t in audit.trials if t.role == StudyClip.ROLE_TEST]
    test_pages = {t.page for t in tests}
    test_answers = {a for t in tests for a in t.answers}
    for gold in (t for t in audit.trials if t.role == StudyClip.ROLE_GOLD):
        if tests and gold.page not in test_pages:
            audit.findings.append(Finding("role", f"the trial page of a gold clip (participant {gold.participant})",
                                          "differs from every test trial page: " + _difference(gold.page, test_pages)))
        for answer in gold.answers:
            if test_answers and answer not in test_answers:
                audit.findings.append(Finding("role", f"an answer to a gold trial (participant {gold.participant})",
                                              "differs from the answers to test trials: "
                                              + _difference(answer, test_answers)))


def _difference(text: str, others: set[str]) -> str:
    closest = max(others, key=lambda other: difflib.SequenceMatcher(None, text, other).quick_ratio())
    lines = [line for line in difflib.unified_diff(closest.splitlines(), text.splitlines(), lineterm="", n=0)
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return " | ".join(line.strip()[:100] for line in lines[:4]) or "(whitespace)"


# --- padding existing clips ----------------------------------------------------------------------


def pad_study_clips(study: Study, block: int) -> list[str]:
    """Pad every clip file a participant of ``study`` can be served; update their size and sha256."""
    lines = []
    for clip in blinding.participant_clips(study):
        if not clip.file or not Path(clip.file.path).is_file():
            continue
        before = Path(clip.file.path).stat().st_size
        size = media.pad_to_block(clip.file.path, block)
        if size != before or clip.size_bytes != size:
            Clip.objects.filter(pk=clip.pk).update(size_bytes=size, sha256=media.sha256_file(clip.file.path))
            lines.append(f"{_clip_label(clip)}: {before} → {size} bytes")
    return lines


# --- the report ----------------------------------------------------------------------------------


def _collapsed(stages: list[str]) -> str:
    out: list[list] = []
    for stage in stages:
        if out and out[-1][0] == stage:
            out[-1][1] += 1
        else:
            out.append([stage, 1])
    return " → ".join(f"{stage} ×{count}" if count > 1 else stage for stage, count in out)


def format_report(audit: StudyAudit) -> str:
    method = dict(Study.METHOD_CHOICES).get(audit.method, audit.method)
    roles = Counter(t.role for t in audit.trials)
    lines = [
        f"Study {audit.study_id} «{audit.title}» — {method}",
        f"  {audit.participants} simulated participant(s) and one who returns the study, {len(audit.exchanges)} "
        "requests, "
        f"trials walked: {', '.join(f'{n} {role}' for role, n in sorted(roles.items())) or 'none'}; "
        f"{len(audit.clips_served)} distinct clips served, {audit.clips_checked} clip files checked",
    ]
    for walk in audit.walks:
        lines.append(f"  participant {walk.index} [{walk.end_state}]: {_collapsed(walk.stages)}")
        lines += [f"      note: {note}" for note in dict.fromkeys(walk.notes)]
    lines += [f"  note: {note}" for note in audit.notes]
    lines.append(f"  checked: names and ids in every URL, header, cookie and body; clip bytes and container tags; "
                 f"media headers; caching; sizes (block {audit.block} bytes); durations per content item; encoding; "
                 f"gold vs test trials; clip URLs per participant")
    findings = _deduplicated(audit.findings)
    if findings:
        lines.append(f"  LEAKS ({len(findings)}):")
        for finding in findings:
            lines.append(f"    [{finding.kind}] {finding.where}: {finding.what}")
            if finding.context:
                lines.append(f"        …{finding.context}…")
    else:
        lines.append("  no leaks")
    if audit.problems:
        lines.append(f"  INCOMPLETE ({len(audit.problems)}):")
        lines += [f"    {problem}" for problem in dict.fromkeys(audit.problems)]
    return "\n".join(lines)


class Command(BaseCommand):
    help = ("Walk simulated participants through studies (rolled back afterwards) and report anything they can "
            "fetch that names a condition, model or file, or tells clips apart by size, duration or role.")

    def add_arguments(self, parser):
        parser.add_argument("--study", type=int, action="append", default=[], metavar="ID", help="a study to audit")
        parser.add_argument("--all-open", action="store_true", help="audit every open study")
        parser.add_argument("--participants", type=int, default=None, metavar="N",
                            help="simulated participants per study (default: enough to see every clip, 2 to 20)")
        parser.add_argument("--json", action="store_true", help="print the findings as JSON")
        parser.add_argument("--pad", action="store_true",
                            help="first pad the studies' clip files to the block (kept) and record size and sha256")
        parser.add_argument("--block", type=int, default=media.DELIVERY_SIZE_BLOCK, metavar="BYTES",
                            help="the padding block clip sizes must be a multiple of (default %(default)s)")

    def handle(self, *args, **options):
        studies = list(Study.objects.filter(pk__in=options["study"]).order_by("pk"))
        missing = set(options["study"]) - {s.pk for s in studies}
        if missing:
            raise CommandError(f"no study with id {', '.join(map(str, sorted(missing)))}")
        if options["all_open"]:
            studies += [s for s in Study.objects.filter(status=Study.OPEN).order_by("pk") if s not in studies]
        if not studies:
            raise CommandError("name the studies to audit with --study ID, or use --all-open")
        if options["participants"] is not None and options["participants"] < 1:
            raise CommandError("--participants must be at least 1")
        audits = []
        for study in studies:
            if options["pad"]:
                for line in pad_study_clips(study, options["block"]):
                    self.stderr.write(f"padded {line}")
            audits.append(audit_study(study, participants=options["participants"], block=options["block"]))
        leaks = sum(len(_deduplicated(a.findings)) for a in audits)
        incomplete = sum(len(a.problems) for a in audits)
        if options["json"]:
            self.stdout.write(json.dumps({"leaks": leaks, "incomplete": incomplete,
                                          "studies": [a.as_dict() for a in audits]}, indent=2, default=str))
        else:
            for audit in audits:
                self.stdout.write(format_report(audit) + "\n")
            self.stdout.write(f"{len(audits)} studies audited: {leaks} leaks, {incomplete} coverage problems")
        if leaks:
            raise CommandError(f"{leaks} blinding leak(s) found", returncode=1)
        if incomplete:
            raise CommandError(f"the audit could not cover everything ({incomplete} problem(s))", returncode=2)
