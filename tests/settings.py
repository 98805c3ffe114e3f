"""Settings of the test suite.

SQLite by default. With NOTIFY_TRACKING_TEST_DATABASE_URL
(postgres://user:password@host:port/name) the suite runs on PostgreSQL; with
NOTIFY_TRACKING_TEST_BROKER_URL (redis://... or amqp://...) the worker tests use that
broker instead of kombu's filesystem transport.
"""

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "notify_tracking",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
# The REST API's OpenAPI schema (drf-spectacular), as a host project sets it up.
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
# Where worker tests share files (the SQLite database, the filesystem broker).
# Set once per test run and inherited by the worker processes the tests start.
os.environ.setdefault("NOTIFY_TRACKING_TEST_SHARED_DIR", tempfile.mkdtemp(prefix="nt-"))
SHARED_DIR = Path(os.environ["NOTIFY_TRACKING_TEST_SHARED_DIR"])
MEDIA_ROOT = str(SHARED_DIR / "media")


def database_from_url(url: str) -> dict:
    """A DATABASES entry from a postgres:// URL (enough for the test suite)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"NOTIFY_TRACKING_TEST_DATABASE_URL: unsupported scheme {parts.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


_immediate = {"transaction_mode": "IMMEDIATE"} if django.VERSION >= (5, 1) else {}
DATABASE_URL = os.environ.get("NOTIFY_TRACKING_TEST_DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SHARED_DIR / "db.sqlite3"),
            # A file, not memory: worker processes open the same test database.
            "TEST": {"NAME": str(SHARED_DIR / "test-db.sqlite3")},
            # IMMEDIATE: concurrent writers (threads, worker processes) wait for the
            # write lock instead of failing on a lock upgrade (Django >= 5.1).
            "OPTIONS": {
                "timeout": 30,
                **_immediate,
            },
        }
    }
# A worker started by a test connects straight to the test database.
if os.environ.get("NOTIFY_TRACKING_WORKER_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["NOTIFY_TRACKING_WORKER_DB_NAME"]
# A read replica: a second connection to the test database (TEST MIRROR), for the
# tests of the app behind a primary/replica router (tests/test_replica.py). Only they
# route reads to it.
DATABASES["replica"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}

EMAIL_BACKEND = os.environ.get(
    "NOTIFY_TRACKING_TEST_EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend"
)
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("NOTIFY_TRACKING_TEST_EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = "tracker@example.com"
ANYMAIL = {"WEBHOOK_SECRET": "hook:secret"}

BROKER_URL = os.environ.get("NOTIFY_TRACKING_TEST_BROKER_URL")
CELERY_BROKER_URL = BROKER_URL or "filesystem://"
if not BROKER_URL:
    # kombu's filesystem transport, writing each message whole (see that module). Set
    # only with the filesystem URL: a transport named here overrides any URL's scheme.
    CELERY_BROKER_TRANSPORT = "example_project.filesystem_broker:Transport"
    _queue = SHARED_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "processed_folder": str(_queue / "processed"),
        # kombu's default is "control" relative to the working directory
        "control_folder": str(_queue / "control"),
        "store_processed": False,
        # Poll the folder often: the default (1 s) caps a worker at a few tasks a second.
        "polling_interval": 0.1,
    }
# In-process tests run tasks eagerly; a worker process started by a test does not.
CELERY_TASK_ALWAYS_EAGER = os.environ.get("NOTIFY_TRACKING_WORKER") != "1"
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

NOTIFY_TRACKING: dict[str, object] = {
    "MESSAGE_ID_DOMAIN": "tracker.example.com",
    "BASE_URL": "http://testserver",
}
for _key in ("CLAIM_TIMEOUT", "STUCK_AFTER", "RETRY_BACKOFF", "BATCH_SIZE"):
    if os.environ.get(f"NOTIFY_TRACKING_TEST_{_key}"):
        NOTIFY_TRACKING[_key] = int(os.environ[f"NOTIFY_TRACKING_TEST_{_key}"])
