"""The production topology on loopback: PostgreSQL + Redis (scripts/services.sh, started by
`make test`) and real Celery workers, started here with the very commands docker-compose.yml runs.

Without those servers the integration tests skip; with SYNCMOS_REQUIRE_SERVICES=1 (as `make test`
sets) a missing server is a failure, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "test-artifacts"


def compose_worker_command(service: str) -> list[str]:
    """The worker command of a docker-compose service, as argv."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return list(compose["services"][service]["command"])


def _require(reason: str) -> None:
    if os.environ.get("SYNCMOS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"integration services required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def loopback_services():
    if connection.vendor != "postgresql":
        _require("DATABASE_URL does not point at PostgreSQL (run `make test` or scripts/services.sh start)")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        _require("CELERY_BROKER_URL does not point at Redis")
    return settings.CELERY_BROKER_URL


class Workers:
    """Celery worker processes for the duration of a test, killed afterwards."""

    def __init__(self, broker_url: str, database_name: str):
        self.broker_url = broker_url
        self.database_name = database_name
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, **overrides: str) -> dict[str, str]:
        db = connection.settings_dict
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="studyapp.settings",
            SECRET_KEY="integration-test-secret",
            DEBUG="0",
            DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{self.database_name}",
            CELERY_BROKER_URL=self.broker_url,
            SYNCMOS_MEDIA_ROOT=str(settings.MEDIA_ROOT),
            SYNCMOS_METRICS_AFTER_GENERATION="0",  # a metrics test turns it on
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    def start(self, service: str, name: str, *, host: str = "itest", **env_overrides: str) -> subprocess.Popen:
        argv = compose_worker_command(service)
        assert argv[0] == "celery"
        argv = [str(Path(sys.executable).parent / "celery"), *argv[1:]]
        argv = [a.replace("%h", host) for a in argv]
        LOG_DIR.mkdir(exist_ok=True)
        log = open(LOG_DIR / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env(**env_overrides), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (LOG_DIR / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout: float = 60.0) -> None:
        """Wait until a worker's log shows ``text`` (e.g. a task id's "succeeded" line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not in test-artifacts/{name}.log after {timeout} s")

    def kill(self, name: str) -> None:
        """SIGKILL a whole worker (parent and pool): nothing gets to acknowledge or requeue."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def pool_children(self, name: str) -> list[int]:
        """Pids of a worker's prefork pool processes (where tasks actually run)."""
        out = subprocess.run(["pgrep", "-P", str(self.procs[name].pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def wait_ready(self, app, names: list[str], timeout: float = 60.0, host: str = "itest") -> None:
        deadline = time.monotonic() + timeout
        wanted = {f"{n}@{host}" for n in names}
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited early; see test-artifacts/{name}.log")
            replies = app.control.ping(timeout=1.0) or []
            if wanted <= {host for reply in replies for host in reply}:
                return
        raise TimeoutError(f"workers {sorted(wanted)} did not answer a ping within {timeout} s")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def worker_pool(loopback_services, transactional_db):
    """Start-your-own workers bound to the test database; the test process publishes to Redis."""
    from studyapp.celery import app

    if shutil.which("redis-cli") is None or shutil.which("pgrep") is None:
        _require("redis-cli and pgrep are needed")
    app.conf.task_always_eager = False
    app.control.purge()  # messages left by an earlier, interrupted run must not leak into this one
    workers = Workers(loopback_services, connection.settings_dict["NAME"])
    try:
        yield workers
    finally:
        workers.stop()
        app.conf.task_always_eager = True


@pytest.fixture
def celery_workers(worker_pool):
    """A real gpu and a real cpu worker, started with docker-compose.yml's commands."""
    from studyapp.celery import app

    worker_pool.start("worker-gpu", "gpu")
    worker_pool.start("worker-cpu", "cpu")
    worker_pool.wait_ready(app, ["gpu", "cpu"])
    return worker_pool
