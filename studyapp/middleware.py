"""A database that is briefly out of reach answers 503 "try again", never 500.

When PostgreSQL restarts, fails over or drops connections for a moment, Django raises
``django.db.OperationalError`` (or ``InterfaceError`` on a connection that is already closed). Left
alone, that becomes a 500 page, and a participant's page cannot tell "the server has a bug" from
"ask again in a second". ``DatabaseUnavailableMiddleware`` turns those errors into:

- for JSON requests (the trial page's rating and telemetry POSTs): ``503`` with
  ``{"error": "unavailable", "message": …, "retry_after": N}``;
- for everything else: ``503`` with a short, self-contained HTML page (no template, no database);

both with ``Retry-After: N`` (``settings.SYNCMOS_DATABASE_RETRY_AFTER``) and ``Cache-Control:
no-store``. Nothing was written: the failed request's transaction is rolled back by the database
when its connection drops, and a write that did commit before the connection dropped is found again
by its idempotency keys when the page retries (``studyapp.ratings``), so the retry is safe.

Two paths lead here. An error raised by a view reaches ``process_exception``. An error raised by a
middleware further in (the session being saved after the view answered) has already been turned into
a 500 response by Django when it comes back out; ``got_request_exception`` is sent while that error is
being handled, so a receiver marks the request, and ``__call__`` replaces that 500 with the 503 (Django has
logged it as an internal error with its traceback by then; the client sees only the 503). Put the
middleware before ``SessionMiddleware`` in ``MIDDLEWARE`` so that every database user is inside it.

UNVERIFIED choice: every ``OperationalError`` counts as transient. Besides lost connections that class
also holds deadlocks, serialization failures and statement timeouts, for which a retry is also the
right answer; a bug (bad SQL) raises ``ProgrammingError`` instead and stays a 500.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.conf import settings
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
_MARK = "_syncmos_database_unavailable"
UNAVAILABLE_MESSAGE = "The service is briefly unavailable. Please try again in a moment; nothing you sent was lost."
UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{seconds}"><title>Back in a moment</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem">
<h1>Back in a moment</h1>
<p>The study is briefly unavailable. This page reloads by itself in a few seconds; your answers so far are saved.</p>
</body></html>
"""


def retry_after_seconds() -> int:
    return int(getattr(settings, "SYNCMOS_DATABASE_RETRY_AFTER", 2))


def wants_json(request: HttpRequest) -> bool:
    """Whether the client speaks JSON: it sent JSON, or asks for JSON and not for a page."""
    if request.content_type == "application/json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """The 503 for a request that could not reach the database."""
    seconds = retry_after_seconds()
    if wants_json(request):
        response: HttpResponse = JsonResponse(
            {"error": "unavailable", "message": UNAVAILABLE_MESSAGE, "retry_after": seconds}, status=503
        )
    else:
        response = HttpResponse(UNAVAILABLE_PAGE.format(seconds=seconds), status=503,
                                content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(seconds)
    response["Cache-Control"] = "no-store"
    return response


def _mark_database_error(sender, request: HttpRequest | None = None, **kwargs) -> None:
    # Sent from inside Django's `except` block, so the error being handled is still sys.exc_info().
    error = sys.exc_info()[1]
    if request is not None and isinstance(error, DATABASE_ERRORS):
        setattr(request, _MARK, error)


class DatabaseUnavailableMiddleware:
    """Answer 503 + Retry-After instead of 500 when the database cannot be reached (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        got_request_exception.connect(_mark_database_error, dispatch_uid="syncmos.database-unavailable")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        error = getattr(request, _MARK, None)
        if response.status_code == 500 and error is not None:
            self._log(request, error)
            return unavailable_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_ERRORS):
            return None
        self._log(request, exception)
        return unavailable_response(request)

    @staticmethod
    def _log(request: HttpRequest, error: BaseException) -> None:
        logger.warning("database unavailable, answered 503: %s %s: %s: %s", request.method, request.path,
                       error.__class__.__name__, str(error).strip().splitlines()[0] if str(error).strip() else "")
