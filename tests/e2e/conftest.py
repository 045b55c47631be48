"""The browser tests use the shared clip fixtures (real mp4 clips, revealing generation rows; tests/conftest.py)."""

import threading

import pytest
from django.db import connection

from tests.e2e.pages import browser  # noqa: F401  (the fixture, shared by every browser test)


@pytest.fixture
def isolated_live_server(live_server):
    """The live server, with requests kept from interleaving inside one shared database connection.

    With an in-memory SQLite test database every request thread of the live server shares the test's
    single connection, so one request can read another's half-done transaction — something no real
    database allows. There, requests are run one at a time (the view, not the streaming of a body).
    With PostgreSQL each thread has its own connection and the app's own locking is what is tested.
    """
    if not (connection.vendor == "sqlite" and connection.is_in_memory_db()):
        yield live_server
        return
    httpd = live_server.thread.httpd
    app, lock = httpd.get_app(), threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return app(environ, start_response)

    httpd.set_app(one_at_a_time)
    yield live_server
    httpd.set_app(app)
