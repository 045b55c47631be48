"""Test settings: the real settings, made fast and self-contained.

The database is whatever DATABASE_URL says (``make test`` points it at the loopback PostgreSQL;
a bare ``pytest`` uses SQLite). Tasks run in-process unless a test starts real workers.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret")

from studyapp.settings import *  # noqa: E402,F403

DEBUG = False
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
MEDIA_ROOT = Path(tempfile.mkdtemp(prefix="syncmos-test-media-"))  # noqa: F405
STATIC_ROOT = Path(tempfile.mkdtemp(prefix="syncmos-test-static-"))  # noqa: F405
STORAGES = {  # no manifest: tests do not run collectstatic
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CELERY_TASK_ALWAYS_EAGER = True
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# Generation tests do not need every metric of every clip they make; the metric tests turn it on.
SYNCMOS_METRICS_AFTER_GENERATION = False
