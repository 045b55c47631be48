"""A database out of reach answers 503 with Retry-After (JSON for the trial page's POSTs), never 500.

The outage itself (a real PostgreSQL cut off from a real gunicorn) is in tests/integration/test_faults.py;
here each path into the middleware is driven with the errors Django raises.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import DatabaseError, InterfaceError, OperationalError, ProgrammingError
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings

from studyapp.middleware import DatabaseUnavailableMiddleware, wants_json
from tests.studyapp.conftest import mark_ended, start_session


def raising(error: Exception):
    def view(request):
        raise error

    return view


def through_middleware(request, error: Exception):
    """What Django does with a view's exception: ask the middleware's process_exception."""
    middleware = DatabaseUnavailableMiddleware(lambda r: HttpResponse("ok"))
    return middleware.process_exception(request, error)


@pytest.mark.parametrize("error", [OperationalError("server closed the connection unexpectedly"),
                                   InterfaceError("connection already closed")])
def test_a_lost_database_connection_answers_json_503_with_retry_after_to_json_requests(error):
    request = RequestFactory().post("/p/x/rate", data="{}", content_type="application/json")
    response = through_middleware(request, error)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "2"
    assert response["Cache-Control"] == "no-store"
    body = json.loads(response.content)
    assert body["error"] == "unavailable" and body["retry_after"] == 2 and body["message"]


def test_pages_get_a_short_html_503_that_reloads_itself():
    request = RequestFactory().get("/p/x/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    response = through_middleware(request, OperationalError("could not connect to server"))
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "2"
    html = response.content.decode()
    assert '<meta http-equiv="refresh" content="2">' in html and "Back in a moment" in html
    assert "OperationalError" not in html and "could not connect" not in html  # nothing about the server leaks


@override_settings(SYNCMOS_DATABASE_RETRY_AFTER=7)
def test_retry_after_follows_the_setting():
    request = RequestFactory().post("/p/x/events", data="{}", content_type="application/json")
    response = through_middleware(request, OperationalError("gone"))
    assert response["Retry-After"] == "7" and json.loads(response.content)["retry_after"] == 7


@pytest.mark.parametrize("error", [ProgrammingError("syntax error"), DatabaseError("other"), ValueError("bug")])
def test_other_errors_are_left_to_django_as_500s(error):
    request = RequestFactory().post("/p/x/rate", data="{}", content_type="application/json")
    assert through_middleware(request, error) is None


@pytest.mark.parametrize(("content_type", "accept", "expected"), [
    ("application/json", "*/*", True),
    ("text/plain", "application/json", True),
    ("application/x-www-form-urlencoded", "text/html,application/json", False),
    ("text/plain", "*/*", False),
])
def test_json_clients_are_recognised_by_what_they_send_or_ask_for(content_type, accept, expected):
    request = RequestFactory().post("/x", data="{}", content_type=content_type, HTTP_ACCEPT=accept)
    assert wants_json(request) is expected


def test_the_middleware_sits_before_the_session_middleware():
    from django.conf import settings

    order = settings.MIDDLEWARE
    assert order.index("studyapp.middleware.DatabaseUnavailableMiddleware") < order.index(
        "django.contrib.sessions.middleware.SessionMiddleware")


def test_a_rating_post_that_loses_the_database_gets_503_json_and_writes_nothing(study):
    session = start_session(study)
    session.begin()
    assignment = session.participant.assignments.order_by("position").first()
    mark_ended(assignment)
    with mock.patch("studyapp.views.participant.save_ratings", side_effect=OperationalError("terminating connection")):
        response = session.rate(assignment)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable" and response["Retry-After"]
    assert not assignment.ratings.exists()
    assert session.rate(assignment).status_code == 201  # the page's retry, once the database is back


def test_a_page_whose_session_cannot_be_saved_gets_503_not_500(study):
    """The error comes from SessionMiddleware after the view answered: Django has made it a 500 already."""
    client = Client(raise_request_exception=False)
    url = f"/s/{study.public_id}/"
    with mock.patch.object(SessionStore, "save", side_effect=OperationalError("the database system is shutting down")):
        response = client.post(url, {"consent": "yes", "viewport": "1280x800"}, HTTP_ACCEPT="text/html")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html") and response["Retry-After"] == "2"


def test_an_error_raised_outside_any_view_that_is_not_the_database_stays_a_500(study):
    client = Client(raise_request_exception=False)
    with mock.patch.object(SessionStore, "save", side_effect=RuntimeError("a bug")):
        response = client.post(f"/s/{study.public_id}/", {"consent": "yes", "viewport": "1280x800"})
    assert response.status_code == 500
