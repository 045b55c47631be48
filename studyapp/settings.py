"""Django settings for syncmos, read from environment variables.

Every setting has a safe default for a development checkout; a value that is present but malformed
raises ``ImproperlyConfigured`` at start-up instead of being silently replaced.

Variables
---------
DEBUG                  bool, default false
SECRET_KEY             required unless DEBUG is true
ALLOWED_HOSTS          comma-separated, default "localhost,127.0.0.1" (plus "*" in DEBUG)
DATABASE_URL           sqlite:///path | postgres://user:pass@host:port/name, default SQLite file in var/
CELERY_BROKER_URL      redis://… or amqp://…; empty means tasks run in-process (embedded demo)
SYNCMOS_MEDIA_ROOT     where sources, work files and delivery clips live, default var/media
SYNCMOS_CLIP_URL_MAX_AGE   seconds a signed clip URL stays valid, default 6 hours
SYNCMOS_JOB_LEASE_SECONDS  how long a claimed generation row stays claimed before another worker may take it
SYNCMOS_MAX_CLIP_CLAIMS    claims after which a clip that keeps crashing its workers is failed
SYNCMOS_METRICS_AFTER_GENERATION  queue the objective metrics of a job's clips when it finishes (default 1)
SYNCMOS_BEHIND_TLS_PROXY   trust X-Forwarded-Proto from the reverse proxy that terminates HTTPS
DATABASE_CONN_MAX_AGE      seconds a database connection is kept between requests, default 0 (one per request)
DATABASE_CONNECT_TIMEOUT   seconds to wait for PostgreSQL to accept a connection, default 5
SYNCMOS_DATABASE_RETRY_AFTER  the Retry-After (seconds) of the 503 answered while the database is unreachable
SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE   default on outside DEBUG (serve over HTTPS)
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def database_from_url(url: str) -> dict:
    """Translate a DATABASE_URL into a Django DATABASES entry; only SQLite and PostgreSQL are supported."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path, as dj-database-url reads them.
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r}: an SQLite URL needs a file path")
        if path != ":memory:":
            if not os.path.isabs(path):
                path = str(BASE_DIR / path)
            # SQLite creates the file but not its folder; a fresh checkout has no var/ yet.
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: SQLite ignores SELECT … FOR UPDATE, so a write transaction takes the write lock up
        # front instead; enrolment and rating transactions then serialize as they do on PostgreSQL.
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        name = parsed.path.lstrip("/")
        if not name:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r}: a PostgreSQL URL needs a database name")
        try:
            port = parsed.port
        except ValueError:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r}: the port is not a number") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": envint("DATABASE_CONN_MAX_AGE", 0, minimum=0),
            # A kept connection that died with the database (restart, failover) is replaced before
            # it is used, instead of failing the first request after the outage.
            "CONN_HEALTH_CHECKS": True,
            # An unreachable database fails a request within seconds (answered 503 by
            # studyapp.middleware) instead of holding a web thread until the OS gives up.
            "OPTIONS": {"connect_timeout": envint("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)},
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL={url!r}: unsupported scheme {parsed.scheme!r} (use sqlite:/// or postgres://)"
    )


def broker_from_env(name: str) -> str:
    url = os.environ.get(name, "").strip()
    if url and urlparse(url).scheme not in {"redis", "rediss", "amqp", "amqps", "memory"}:
        raise ImproperlyConfigured(f"{name}={url!r}: expected a redis://, amqp:// or memory:// URL")
    return url


DEBUG = envbool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-DEBUG"

ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
if DEBUG:
    ALLOWED_HOSTS.append("*")
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "studyapp",
    "generation",
    "analysis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before everything that touches the database (sessions included): an outage answers 503, not 500.
    "studyapp.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "studyapp.urls"
WSGI_APPLICATION = "studyapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(envstr("DATABASE_URL", "sqlite:///var/syncmos.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(envstr("SYNCMOS_STATIC_ROOT", str(BASE_DIR / "var" / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Media is never served under a public URL: clips go out only through signed, opaque views.
MEDIA_ROOT = Path(envstr("SYNCMOS_MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/private-media/"

# A participant's browser gets nothing that names a clip's origin: no referrer to third parties,
# no sniffing, and responses that are never shared between participants by caches.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind a TLS-terminating proxy (required in production: cookies are Secure), trust its header.
if envbool("SYNCMOS_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", not DEBUG)

# While the database cannot be reached, pages and the trial page's POSTs are told to retry after this.
SYNCMOS_DATABASE_RETRY_AFTER = envint("SYNCMOS_DATABASE_RETRY_AFTER", 2, minimum=1)
SYNCMOS_CLIP_URL_MAX_AGE = envint("SYNCMOS_CLIP_URL_MAX_AGE", 6 * 3600, minimum=60)
SYNCMOS_JOB_LEASE_SECONDS = envint("SYNCMOS_JOB_LEASE_SECONDS", 15 * 60, minimum=10)
# A clip claimed more often than this (each render and encode is one claim) keeps killing its workers.
SYNCMOS_MAX_CLIP_CLAIMS = envint("SYNCMOS_MAX_CLIP_CLAIMS", 6, minimum=2)
# Queue every objective metric of a generation job's clips as soon as the job is finished.
SYNCMOS_METRICS_AFTER_GENERATION = envbool("SYNCMOS_METRICS_AFTER_GENERATION", True)

# Celery: with no broker the tasks run in-process (embedded demo); with Redis they go to workers on
# the "gpu" and "cpu" queues exactly as in docker-compose.yml.
CELERY_TASK_ALWAYS_EAGER = not broker_from_env("CELERY_BROKER_URL")
# Even in-process runs serialize task arguments through a producer; the in-memory transport keeps
# that from reaching for an AMQP server on localhost.
CELERY_BROKER_URL = broker_from_env("CELERY_BROKER_URL") or "memory://localhost/"
# In-process runs behave like workers: a task's explicit retry re-runs it (Celery only does that when
# errors do not propagate), and failures are logged and recorded on the rows instead of raised.
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# Declared so that purges and inspections see both queues; each with its own exchange and routing key
# (a bare Queue("gpu") would inherit the default queue's routing key and receive its messages too).
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in ("gpu", "cpu"))
CELERY_TASK_ROUTES = {
    "generation.render_raw_clip": {"queue": "gpu"},
    "generation.normalize_clip": {"queue": "cpu"},
    "generation.start_job": {"queue": "cpu"},
    "analysis.build_study_report": {"queue": "cpu"},
}
# A task a dead worker left unacknowledged is handed out again once it is this many seconds old;
# workers look for such tasks about every 10 s × CELERY_UNACKED_RESTORE_THROTTLE.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=5),
    "unacked_restore_throttle": envint("CELERY_UNACKED_RESTORE_THROTTLE", 10, minimum=1),
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
