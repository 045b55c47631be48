"""Simulated participants that speak the public HTTP API as the browser does, and the real server around them.

Shared by ``benchmarks/bench_load.py`` (hundreds of participants) and ``tests/integration/test_faults.py``
(a few participants and injected faults). Everything runs on loopback.

A ``SimulatedParticipant`` walks the participant flow like a browser with trial.js, through one
``requests.Session`` (cookies, CSRF): the study link with ``PROLIFIC_PID`` → the consent form (its hidden
fields, every checkbox ticked, the viewport) → the instructions form → one trial per page: it reads the
page's ``#trial-config`` JSON, fetches the clip(s) of the page's ``<video>`` elements with a byte range,
posts "play", waits while the clip plays (its duration read from the mp4's ``mvhd`` box), posts "ended"
at the clip's end, then posts the rating with a fresh UUID per scale and follows the answer's ``next``
→ the end page with the completion code. Every request is timed into a ``RequestLog``.

Like trial.js it sends the *same* body again after a network failure or a 5xx, waiting longer each time
(honouring ``Retry-After``); a "not_watched" 409 plays the clip again and resends the same answers.
Pages are recognised by what they contain (a trial config, a POST form, a completion code), not by their
URLs or wording, so small changes to the pages do not break it.

Also here: ``GunicornServer`` (the production web server, started, killed and restarted on one port),
``TcpProxy`` (a cuttable TCP relay, e.g. between gunicorn and PostgreSQL), ``run_participants`` (many
participants in threads, bounded in count and time) and ``check_ratings`` (the database against what
the participants were told was stored: nothing lost, nothing doubled).
"""

from __future__ import annotations

import json
import os
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[2]
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) syncmos-load/1.0 (simulated participant)"
# Connect, read (a browser waits minutes for an answer): a request that takes longer is retried like a dropped
# connection.
REQUEST_TIMEOUT = (5.0, 120.0)


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP exchange. ``status`` 0: no HTTP answer (refused, reset, timed out)."""

    participant: str
    kind: str  # study_link, form, page, media, event, rate, baseline
    method: str
    path: str
    status: int
    seconds: float
    started: float  # time.monotonic() when sent
    error: str = ""  # the JSON "error" code of a refusal, or the exception's class for status 0
    retry_after: str = ""
    content_type: str = ""


class RequestLog:
    """Thread-safe list of ``RequestRecord``s with the summaries the benchmark and the tests need."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def of(self, kind: str | None = None, statuses: Iterable[int] | None = None) -> list[RequestRecord]:
        wanted = None if statuses is None else set(statuses)
        return [r for r in self.records if (kind is None or r.kind == kind) and (wanted is None or r.status in wanted)]

    def server_errors(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status >= 500]

    def latencies(self, kind: str, ok_only: bool = True) -> np.ndarray:
        """Seconds of the requests of one kind (by default only those answered 2xx or 3xx)."""
        return np.array([r.seconds for r in self.of(kind) if not ok_only or 200 <= r.status < 400], dtype=float)


def quantiles_ms(seconds: np.ndarray, qs: Iterable[float] = (50, 99)) -> dict[float, float]:
    """Percentiles (linear interpolation, as numpy) in milliseconds; NaN when there is nothing."""
    if seconds.size == 0:
        return {q: float("nan") for q in qs}
    return {q: float(np.percentile(seconds, q)) * 1000 for q in qs}


# ---------------------------------------------------------------------------------------------------
# Pages


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class PageParser(HTMLParser):
    """What a participant's page offers: forms (with what a browser would submit), JSON scripts by id,
    the media of its ``<video>`` elements, links and ``<output>`` texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.scripts: dict[str, str] = {}
        self.videos: list[str] = []
        self.links: list[str] = []
        self.outputs: list[str] = []
        self._script_id: str | None = None
        self._script_text: list[str] = []
        self._in_output = False
        self._output_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "get").lower()))
        elif tag in ("input", "button", "select", "textarea") and self.forms and a.get("name"):
            self._form_field(tag, a)
        elif tag == "script" and a.get("id"):
            self._script_id, self._script_text = a["id"], []
        elif tag in ("video", "source") and a.get("src"):
            self.videos.append(a["src"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "output":
            self._in_output, self._output_text = True, []

    def _form_field(self, tag: str, a: dict[str, str]) -> None:
        kind = a.get("type", "text").lower()
        fields = self.forms[-1].fields
        if tag == "button" or kind in ("submit", "button", "reset", "file", "image"):
            return
        if kind in ("checkbox", "radio"):
            # A consenting participant ticks every box; of a radio group, the first option is kept.
            fields.setdefault(a["name"], a.get("value", "on"))
        else:
            fields[a["name"]] = a.get("value", "")

    def handle_data(self, data: str) -> None:
        if self._script_id is not None:
            self._script_text.append(data)
        if self._in_output:
            self._output_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script_id is not None:
            self.scripts[self._script_id] = "".join(self._script_text)
            self._script_id = None
        elif tag == "output" and self._in_output:
            self.outputs.append("".join(self._output_text).strip())
            self._in_output = False


@dataclass
class Page:
    url: str
    status: int
    parsed: PageParser

    @property
    def trial_config(self) -> dict | None:
        text = self.parsed.scripts.get("trial-config")
        return json.loads(text) if text else None

    @property
    def post_form(self) -> Form | None:
        return next((f for f in self.parsed.forms if f.method == "post"), None)

    @property
    def completion_link_code(self) -> str:
        """``cc`` of a link (or redirect) back to the recruiting platform, as Prolific's completion URL has it."""
        for href in self.parsed.links:
            code = parse_qs(urlsplit(href).query).get("cc")
            if code:
                return code[0]
        return ""

    @property
    def shown_code(self) -> str:
        """The text of the page's first non-empty ``<output>`` (the end page shows the code in one)."""
        return next((text for text in self.parsed.outputs if text), "")


def _boxes(data: bytes, start: int, end: int):
    """(type, body start, body end) of the ISO-BMFF boxes in ``data[start:end]``."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at: at + 8])
        header = 8
        if size == 1 and at + 16 <= end:
            size, header = struct.unpack(">Q", data[at + 8: at + 16])[0], 16
        elif size == 0:
            size = end - at
        if size < header:
            return
        yield kind, at + header, min(at + size, end)
        at += size


def mp4_duration(data: bytes) -> float | None:
    """The duration of an mp4 from its movie header (``moov/mvhd``), or None when ``data`` lacks it."""
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for inner, body, body_end in _boxes(data, start, end):
            if inner != b"mvhd" or body_end - body < 20:
                continue
            if data[body] == 1:  # version 1: 64-bit times and duration
                timescale, duration = struct.unpack(">IQ", data[body + 20: body + 32])
            else:
                timescale, duration = struct.unpack(">II", data[body + 12: body + 20])
            return duration / timescale if timescale else None
    return None


# ---------------------------------------------------------------------------------------------------
# One participant


class ParticipantFailed(Exception):
    """The participant could not go on (a refusal the flow does not expect, or out of time)."""


@dataclass
class ParticipantResult:
    external_id: str
    token: str = ""
    completion_code: str = ""
    # What the server confirmed as stored: assignment token → scale key → {"value", "uuid"}.
    confirmed: dict[str, dict[str, dict]] = field(default_factory=dict)
    trials: int = 0
    error: str = ""
    seconds: float = 0.0

    @property
    def completed(self) -> bool:
        return bool(self.completion_code) and not self.error


@dataclass
class Retry:
    """How requests are repeated after a network failure or a 5xx: exponential backoff, bounded."""

    first_wait: float = 0.25
    max_wait: float = 4.0
    max_attempts: int = 40

    def wait(self, attempt: int, retry_after: str = "") -> float:
        wait = min(self.first_wait * 2**attempt, self.max_wait)
        if retry_after.isdigit():
            wait = max(wait, min(float(retry_after), self.max_wait))
        return wait


class SimulatedParticipant:
    """One participant's browser (see the module docstring). ``run()`` does the whole session; the
    steps (``open_study``, ``step``, ``watch``, ``rating_body``, ``send_rating``, …) are public so
    that a test can put a fault between any two of them."""

    def __init__(
        self, base_url: str, study_public_id: str, log: RequestLog, *, external_id: str | None = None,
        rng: random.Random | None = None, deadline: float | None = None, retry: Retry | None = None,
        fetch_media: bool = True, watch_share: float = 1.0, default_duration: float = 1.0,
        think_seconds: tuple[float, float] = (0.0, 0.0), baseline_path: str = "", viewport: str = "1280x800",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.study_public_id = study_public_id
        self.log = log
        self.external_id = external_id or f"load-{uuid.uuid4().hex[:12]}"
        self.rng = rng or random.Random()
        self.deadline = deadline if deadline is not None else time.monotonic() + 300
        self.retry = retry or Retry()
        self.fetch_media = fetch_media
        self.watch_share = watch_share
        self.default_duration = default_duration
        self.think_seconds = think_seconds
        self.baseline_path = baseline_path
        self.viewport = viewport
        self.http = requests.Session()
        self.http.headers["User-Agent"] = USER_AGENT
        self.result = ParticipantResult(self.external_id)

    # ---- HTTP ----

    def _record(self, kind: str, method: str, url: str, started: float, response: requests.Response | None,
                error: str = "") -> None:
        status = response.status_code if response is not None else 0
        retry_after, content_type = "", ""
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            content_type = response.headers.get("Content-Type", "")
            if status >= 400 and content_type.startswith("application/json"):
                try:
                    error = str(response.json().get("error", ""))
                except ValueError:
                    error = "unparsable_json"
        self.log.add(RequestRecord(self.external_id, kind, method, urlsplit(url).path, status,
                                   time.monotonic() - started, started, error, retry_after, content_type))

    def request_once(self, kind: str, method: str, url: str, **kwargs) -> requests.Response | None:
        """One attempt, recorded; None when no HTTP answer came (the exception class is recorded)."""
        url = urljoin(self.base_url + "/", url)
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        started = time.monotonic()
        try:
            response = self.http.request(method, url, **kwargs)
        except requests.RequestException as exc:
            self._record(kind, method, url, started, None, exc.__class__.__name__)
            return None
        self._record(kind, method, url, started, response)
        return response

    def request(self, kind: str, method: str, url: str, **kwargs) -> requests.Response:
        """Send until an answer below 500 comes, with backoff; the very same request every time."""
        for attempt in range(self.retry.max_attempts):
            self._check_time()
            response = self.request_once(kind, method, url, **kwargs)
            if response is not None and response.status_code < 500:
                return response
            retry_after = response.headers.get("Retry-After", "") if response is not None else ""
            time.sleep(min(self.retry.wait(attempt, retry_after), max(self.deadline - time.monotonic(), 0)))
        raise ParticipantFailed(f"{kind} {method} {url}: no answer below 500 after {self.retry.max_attempts} tries")

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ParticipantFailed("out of time")

    def json_headers(self, csrf: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-CSRFToken": csrf, "Origin": self.base_url}

    def post_json(self, kind: str, url: str, body: bytes, csrf: str) -> requests.Response:
        return self.request(kind, "POST", url, data=body, headers=self.json_headers(csrf))

    # ---- pages ----

    def get_page(self, url: str, kind: str = "page") -> Page:
        """GET a page, following redirects on this server. A link elsewhere (Prolific's completion URL) is
        never fetched, everything stays on loopback: it is the last page, its code in its query."""
        for _ in range(10):
            url = urljoin(self.base_url + "/", url)
            if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
                parsed = PageParser()
                parsed.links.append(url)
                return Page(url, 200, parsed)
            response = self.request(kind, "GET", url)
            if response.is_redirect:
                url, kind = urljoin(url, response.headers["Location"]), "page"
                continue
            parsed = PageParser()
            parsed.feed(response.text)
            return Page(url, response.status_code, parsed)
        raise ParticipantFailed(f"too many redirects from {url}")

    def submit(self, page: Page, form: Form) -> Page:
        """Submit a form as a browser does (its fields, the viewport filled in) and land on the next page."""
        fields = dict(form.fields)
        if "viewport" in fields and not fields["viewport"]:
            fields["viewport"] = self.viewport
        url = urljoin(page.url, form.action or page.url)
        headers = {"Origin": self.base_url, "Referer": page.url}
        response = self.request("form", "POST", url, data=fields, headers=headers)
        if response.is_redirect:
            return self.get_page(urljoin(url, response.headers["Location"]))
        parsed = PageParser()
        parsed.feed(response.text)
        return Page(url, response.status_code, parsed)

    def study_link(self) -> str:
        query = urlencode({"PROLIFIC_PID": self.external_id, "STUDY_ID": "load-study",
                           "SESSION_ID": f"session-{self.external_id}"})
        return f"/s/{self.study_public_id}/?{query}"

    def open_study(self) -> Page:
        return self.get_page(self.study_link(), kind="study_link")

    def _remember_token(self, url: str) -> None:
        match = re.search(r"/p/([^/]+)/", urlsplit(url).path)
        if match and not self.result.token:
            self.result.token = match.group(1)

    # ---- a trial ----

    def fetch_clips(self, page: Page) -> float:
        """Load the page's clips as the video element does (a byte range from 0); the longest duration."""
        durations = []
        for src in page.parsed.videos:
            response = self.request("media", "GET", urljoin(page.url, src), headers={"Range": "bytes=0-"})
            if response.status_code not in (200, 206):
                raise ParticipantFailed(f"clip {urlsplit(src).path}: HTTP {response.status_code}")
            durations.append(mp4_duration(response.content) or self.default_duration)
        return max(durations, default=self.default_duration)

    def event(self, config: dict, kind: str, media_time: float) -> requests.Response:
        body = json.dumps({"assignment": config["assignment"], "events": [
            {"kind": kind, "media_time": media_time, "client_time": int(time.time() * 1000), "detail": ""}]})
        response = self.post_json("event", config["eventsUrl"], body.encode(), config["csrf"])
        if response.status_code != 201:
            raise ParticipantFailed(f"{kind} event: HTTP {response.status_code} {response.text[:200]}")
        return response

    def watch(self, config: dict, duration: float) -> None:
        """Play the clip to its end: "play" at once, the clip's length of waiting, "ended" at its end."""
        self.event(config, "play", 0.0)
        played = time.monotonic()
        time.sleep(max(played + self.watch_share * duration - time.monotonic(), 0))
        self.event(config, "ended", duration)

    def rating_body(self, config: dict, values: dict[str, int] | None = None) -> bytes:
        """The answer as trial.js sends it: one value and one fresh UUID per scale."""
        values = values or {key: self.rng.randint(1, 5) for key in config["scales"]}
        body = {"assignment": config["assignment"],
                "ratings": {key: {"value": value, "uuid": str(uuid.uuid4())} for key, value in values.items()},
                "response_time_ms": self.rng.randint(600, 4000)}
        return json.dumps(body).encode()

    def send_rating(self, config: dict, body: bytes, duration: float = 0.0, rewatch: int = 2) -> requests.Response:
        """Deliver one answer: the same body until a definite answer; a "not_watched" plays the clip again."""
        for _ in range(rewatch + 1):
            response = self.post_json("rate", config["rateUrl"], body, config["csrf"])
            data = _json(response)
            if response.status_code in (200, 201):
                self.result.confirmed[config["assignment"]] = data["ratings"]
                return response
            if response.status_code == 409 and data.get("error") == "already_rated":
                self.result.confirmed[config["assignment"]] = data["ratings"]  # what stands: the other tab's
                return response
            if response.status_code == 409 and data.get("error") == "not_watched":
                self.watch(config, duration or self.default_duration)
                continue
            return response
        return response

    def do_trial(self, page: Page, config: dict) -> Page:
        duration = self.fetch_clips(page) if self.fetch_media else self.default_duration
        if not config.get("watched"):
            self.watch(config, duration)
        low, high = self.think_seconds
        if high > 0:
            time.sleep(self.rng.uniform(low, high))
        response = self.send_rating(config, self.rating_body(config), duration)
        if response.status_code not in (200, 201) and _json(response).get("error") != "already_rated":
            raise ParticipantFailed(f"rating: HTTP {response.status_code} {response.text[:200]}")
        self.result.trials += 1
        if self.baseline_path:  # the trivial view, at the same moments and on the same connection pool
            self.request_once("baseline", "GET", self.baseline_path)
        return self.get_page(urljoin(page.url, _json(response).get("next") or config["nextUrl"]))

    # ---- the whole session ----

    def step(self, page: Page) -> Page | None:
        """Act on a page; None once the completion code is shown."""
        self._remember_token(page.url)
        if page.status >= 400:
            raise ParticipantFailed(f"{page.url}: HTTP {page.status}")
        config = page.trial_config
        if config is not None:
            return self.do_trial(page, config)
        code = page.completion_link_code
        form = page.post_form
        if not code and form is not None:
            return self.submit(page, form)
        code = code or page.shown_code
        if code:
            self.result.completion_code = code
            return None
        raise ParticipantFailed(f"{page.url}: a page with no trial, no form and no completion code")

    def run(self, max_pages: int = 200) -> ParticipantResult:
        started = time.monotonic()
        try:
            page: Page | None = self.open_study()
            for _ in range(max_pages):
                if page is None:
                    break
                page = self.step(page)
            else:
                raise ParticipantFailed(f"no end after {max_pages} pages")
        except (ParticipantFailed, requests.RequestException, ValueError, KeyError) as exc:
            self.result.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            self.result.seconds = time.monotonic() - started
            self.http.close()
        return self.result


def _json(response: requests.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def run_participants(
    base_url: str, study_public_id: str, n: int, log: RequestLog, *, time_limit: float = 300.0,
    ramp_seconds: float = 0.0, seed: int = 0, max_participants: int = 2000,
    **participant_options,
) -> list[ParticipantResult]:
    """``n`` participants at once, each in its own thread, started evenly over ``ramp_seconds``.

    Bounded: at most ``max_participants``, and every participant gives up ``time_limit`` seconds after the
    start (a request in flight then still ends within its own timeout).
    """
    if not 0 < n <= max_participants:
        raise ValueError(f"n={n} participants: give 1 to {max_participants}")
    deadline = time.monotonic() + time_limit

    def one(i: int) -> ParticipantResult:
        time.sleep(ramp_seconds * i / n)
        participant = SimulatedParticipant(base_url, study_public_id, log, external_id=f"load-{seed}-{i:05d}",
                                           rng=random.Random(f"{seed}:{i}"), deadline=deadline,
                                           **participant_options)
        return participant.run()

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="participant") as pool:
        return list(pool.map(one, range(n)))


# ---------------------------------------------------------------------------------------------------
# The database against what the participants were told


def check_ratings(study, results: list[ParticipantResult], expect_completed: bool = True) -> list[str]:
    """Problems (empty = none): ratings lost or doubled, participants not completed, codes that differ.

    Lost: an answer the server confirmed (2xx, or the stored answer of a 409) that the database does not
    hold with the same value and UUID. Doubled: more than one rating per (assignment, scale), or ratings
    the participants were never told about. Needs Django (import inside: this module is also used before
    Django is set up).
    """
    from django.db.models import Count

    from studyapp.models import Assignment, Participant, Rating

    problems: list[str] = []
    scales = study.scales.count()
    ratings = Rating.objects.filter(assignment__participant__study=study).select_related("assignment", "scale")
    stored = {(r.assignment.token, r.scale.key): (r.value, str(r.client_uuid)) for r in ratings}
    told = {(assignment, key): (answer["value"], answer["uuid"])
            for result in results for assignment, answers in result.confirmed.items()
            for key, answer in answers.items()}
    lost = sorted(key for key, answer in told.items() if stored.get(key) != answer)
    unconfirmed = sorted(set(stored) - set(told))
    if lost:
        problems.append(f"{len(lost)} confirmed ratings lost or changed, e.g. {lost[:3]}")
    if unconfirmed:
        problems.append(f"{len(unconfirmed)} stored ratings no participant was told about, e.g. {unconfirmed[:3]}")
    doubled = (Rating.objects.filter(assignment__participant__study=study).values("assignment", "scale")
               .annotate(n=Count("id")).filter(n__gt=1).count())
    if doubled:
        problems.append(f"{doubled} (assignment, scale) pairs rated more than once")
    participants = Participant.objects.filter(study=study)
    if participants.count() != len(results):
        problems.append(f"{participants.count()} participants in the database, {len(results)} simulated")
    assignments = Assignment.objects.filter(participant__study=study).count()
    if expect_completed:
        expected = assignments * scales
        if len(stored) != expected:
            problems.append(f"{len(stored)} ratings stored, {expected} expected "
                            f"({assignments} assignments × {scales} scales)")
        not_done = participants.exclude(state=Participant.COMPLETED).count()
        if not_done:
            problems.append(f"{not_done} participants not completed")
        codes = dict(participants.values_list("external_id", "completion_code"))
        wrong = [r.external_id for r in results if codes.get(r.external_id) != r.completion_code]
        if wrong:
            problems.append(f"{len(wrong)} participants shown another completion code than stored, e.g. {wrong[:3]}")
        failed = [f"{r.external_id}: {r.error}" for r in results if not r.completed]
        if failed:
            problems.append(f"{len(failed)} participants did not finish, e.g. {failed[:3]}")
    return problems


# ---------------------------------------------------------------------------------------------------
# The server and a cuttable TCP relay


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    """``gunicorn studyapp.wsgi`` on loopback, multi-process with threads, as production runs it.

    ``start()`` binds a free port (chosen by the OS on the first start, the same one on a restart) and
    returns once ``/healthz`` answers 200. ``kill()`` SIGKILLs the master and every worker at once:
    requests in flight get no answer and their transactions are rolled back by PostgreSQL.
    """

    def __init__(self, env: dict[str, str], *, workers: int = 2, threads: int = 4, log_path: Path | None = None,
                 preload: bool = True, extra_args: Iterable[str] = ()) -> None:
        self.env = env
        self.workers = workers
        self.threads = threads
        # The app (Django, and torch through the generation app: ~5-10 s) is imported once and forked,
        # instead of once per worker on a 2-core machine; requests are served the same way either way.
        self.preload = preload
        self.log_path = log_path or REPO / "test-artifacts" / "gunicorn.log"
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        argv = [gunicorn, "studyapp.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(self.workers),
                "-k", "gthread", "--threads", str(self.threads), "--timeout", "60", "--graceful-timeout", "5",
                "--error-logfile", "-", "--no-control-socket", *(["--preload"] if self.preload else []),
                *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.port:
            self._alive_or_raise(deadline)
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log(offset))
            if found:
                self.port = int(found.group(1))
            time.sleep(0.05)
        while True:
            self._alive_or_raise(deadline)
            try:
                if requests.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)

    def _alive_or_raise(self, deadline: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited early; see {self.log_path}:\n{self.log()[-3000:]}")
        if time.monotonic() > deadline:
            self.kill()
            raise TimeoutError(f"gunicorn did not answer /healthz in time; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its live workers so far (Linux /proc)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        total = 0
        for pid in [str(self.proc.pid), *children]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / os.sysconf("SC_CLK_TCK")

    def log(self, offset: int = 0) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Quick shutdown (SIGINT): nothing is in flight when the tests and the benchmark stop it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


class TcpProxy:
    """A TCP relay on a loopback port to ``upstream`` that can be cut: ``cut()`` closes every relayed
    connection and answers new ones by closing them at once (as a database that went away), until
    ``restore()``. One thread accepts, two threads per connection copy bytes."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        while not self._closed.is_set():
            if not selector.select(timeout=0.2):
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                self._pairs.add(pair)
            for source, sink in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._drop(pair)

    def _drop(self, pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)

    def restore(self) -> None:
        self._cut.clear()

    def restore_after(self, seconds: float) -> threading.Thread:
        """Restore in ``seconds``, from a background thread (returned, already started)."""
        def later() -> None:
            time.sleep(seconds)
            self.restore()

        thread = threading.Thread(target=later, name="tcp-proxy-restore", daemon=True)
        thread.start()
        return thread

    def cut_for(self, seconds: float, after: float = 0.0) -> threading.Thread:
        """Cut after ``after`` seconds for ``seconds``, in a background thread (returned, already started)."""
        def outage() -> None:
            time.sleep(after)
            self.cut()
            time.sleep(seconds)
            self.restore()

        thread = threading.Thread(target=outage, name="tcp-proxy-outage", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)


def server_env(
    database_url: str, media_root: str, static_root: str, secret_key: str, **overrides: str
) -> dict[str, str]:
    """The environment of a production-like web server on plain-HTTP loopback."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="studyapp.settings", DEBUG="0", SECRET_KEY=secret_key, DATABASE_URL=database_url,
        SYNCMOS_MEDIA_ROOT=media_root, SYNCMOS_STATIC_ROOT=static_root, ALLOWED_HOSTS="127.0.0.1,localhost",
        CELERY_BROKER_URL="",
        # Loopback is plain HTTP: the Secure cookie flag (on behind the production TLS proxy) would keep
        # the client from sending them back.
        SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


def send_concurrently(calls: list[Callable[[], requests.Response | None]]) -> list[requests.Response | None]:
    """Start the calls together (a barrier), one thread each; their answers in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[requests.Response | None] = [None] * len(calls)

    def go(i: int) -> None:
        barrier.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers
