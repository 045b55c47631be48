"""Settings come from environment variables with safe defaults and fail loudly on bad values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from studyapp import settings as app_settings

REPO = Path(__file__).resolve().parents[1]


def _import_settings(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"}}
    clean.update(env)
    code = "import studyapp.settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER)"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True)


def test_it_requires_a_secret_key_outside_debug():
    result = _import_settings(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_it_defaults_to_sqlite_and_in_process_tasks():
    result = _import_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "True"]


def test_it_uses_real_workers_when_a_broker_is_configured():
    result = _import_settings(SECRET_KEY="x", CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
                              DATABASE_URL="postgres://u:p@db:5432/syncmos")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "False"]


@pytest.mark.parametrize("env", [
    {"DEBUG": "maybe"},
    {"DEBUG": "1", "DATABASE_URL": "mysql://db/x"},
    {"DEBUG": "1", "CELERY_BROKER_URL": "http://redis:6379"},
    {"DEBUG": "1", "SYNCMOS_CLIP_URL_MAX_AGE": "soon"},
    {"DEBUG": "1", "SYNCMOS_CLIP_URL_MAX_AGE": "5"},
])
def test_it_refuses_malformed_values(env):
    result = _import_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr


def test_it_parses_postgres_urls_with_credentials_and_port():
    db = app_settings.database_from_url("postgres://syn%40cmos:p%2Fss@db.example:6543/studies")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "studies", "syn@cmos", "p/ss", "db.example", "6543")


def test_it_resolves_relative_and_absolute_sqlite_paths():
    assert app_settings.database_from_url("sqlite:////tmp/x.db")["NAME"] == "/tmp/x.db"
    assert app_settings.database_from_url("sqlite:///var/x.db")["NAME"] == str(app_settings.BASE_DIR / "var/x.db")


@pytest.mark.parametrize("url", ["postgres://db:5432/", "postgres://db:port/x", "sqlite://", "oracle://x/y"])
def test_it_rejects_unusable_database_urls(url):
    with pytest.raises(ImproperlyConfigured):
        app_settings.database_from_url(url)


def test_it_reads_booleans_strictly(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "yes")
    assert app_settings.envbool("SOME_FLAG", False) is True
    monkeypatch.setenv("SOME_FLAG", "Off")
    assert app_settings.envbool("SOME_FLAG", True) is False
    monkeypatch.setenv("SOME_FLAG", "2")
    with pytest.raises(ImproperlyConfigured):
        app_settings.envbool("SOME_FLAG", False)
