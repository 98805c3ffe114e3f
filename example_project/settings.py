"""Settings of the demo task tracker, driven by environment variables.

By default everything lives under ``example_project/var/`` (git-ignored): a SQLite
database and kombu's filesystem broker, so the demo needs no server. The production
shape is two variables away:

- ``DEMO_DATABASE_URL=postgres://user:password@host:5432/name`` → PostgreSQL;
- ``DEMO_BROKER_URL=redis://127.0.0.1:6379/0`` or ``amqp://guest:guest@127.0.0.1//``
  → Redis or RabbitMQ.

Other variables: ``DEMO_VAR_DIR`` (where the local files go), ``DEMO_PORT`` (8000),
``DEMO_BASE_URL`` (the site's absolute URL, for links in emails), ``DEMO_SECRET_KEY``,
``DEMO_EMAIL_BACKEND`` (default: the demo mailbox), ``DEMO_DEBUG`` (``0`` to turn off),
``DEMO_WEBHOOK_PORT`` and ``DEMO_WEBHOOK_SECRET`` (the demo's webhook receiver).
See docs/demo.md.
"""

import os
import secrets
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import unquote, urlsplit

import django

PROJECT_DIR = Path(__file__).resolve().parent
VAR_DIR = Path(os.environ.get("DEMO_VAR_DIR") or PROJECT_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)


def secret_key(path: Path) -> str:
    """A key made on first start and kept in the var dir: no secret in the repository."""
    if not path.exists():
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(secrets.token_urlsafe(50))
        temporary.chmod(0o600)
        os.replace(temporary, path)
    return path.read_text().strip()


def database_from_url(url: str) -> dict:
    """A DATABASES entry from ``postgres://user:password@host:port/name``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DEMO_DATABASE_URL: expected postgres://..., not {parts.scheme}://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def sqlite_database(path: Path) -> dict:
    options = {"timeout": 20}
    if django.VERSION >= (5, 1):
        # The web server and the worker write at once: take the write lock when a
        # transaction starts (no "database is locked" on upgrade), and let readers
        # read while one writes.
        options |= {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "OPTIONS": options}


SECRET_KEY = os.environ.get("DEMO_SECRET_KEY") or secret_key(VAR_DIR / "secret_key")
DEBUG = os.environ.get("DEMO_DEBUG", "1") != "0"
PORT = int(os.environ.get("DEMO_PORT", "8000"))
SITE_URL = os.environ.get("DEMO_BASE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", urlsplit(SITE_URL).hostname]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # The REST API's browsable pages, when djangorestframework is installed (the
    # [api] extra; the wheel's smoke test runs this project without it).
    *(["rest_framework"] if find_spec("rest_framework") else []),
    "notify_tracking",
    "example_project.tracker",
    "example_project.demo_mailbox",
    "example_project.webhook_inbox",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
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

DATABASE_URL = os.environ.get("DEMO_DATABASE_URL")
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else sqlite_database(VAR_DIR / "demo.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en"
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
MEDIA_ROOT = str(VAR_DIR / "media")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "tracker:task-list"
LOGOUT_REDIRECT_URL = "login"

# Email goes to the demo mailbox (/mailbox/); in production, an anymail backend.
EMAIL_BACKEND = os.environ.get(
    "DEMO_EMAIL_BACKEND", "example_project.demo_mailbox.backend.MailboxBackend"
)
DEFAULT_FROM_EMAIL = "Demo tracker <tracker@example.com>"
# anymail's tracking webhooks (mounted at /anymail/ in urls.py) take a POST only with
# this "user:password" in the URL; made on first start and kept in the var dir.
ANYMAIL = {
    "WEBHOOK_SECRET": os.environ.get("DEMO_ANYMAIL_WEBHOOK_SECRET")
    or "demo:" + secret_key(VAR_DIR / "anymail_webhook_secret")
}

# Celery: the app is example_project.celery_app; every CELERY_* setting below is its.
BROKER_URL = os.environ.get("DEMO_BROKER_URL")
CELERY_BROKER_URL = BROKER_URL or "filesystem://"
if not BROKER_URL:
    # kombu's filesystem transport, writing each message whole (see that module). Set
    # only with the filesystem URL: a transport named here overrides any URL's scheme.
    CELERY_BROKER_TRANSPORT = "example_project.filesystem_broker:Transport"
    BROKER_DIR = VAR_DIR / "broker"
    (BROKER_DIR / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),  # default: ./control
        "store_processed": False,
        "polling_interval": 0.5,  # seconds between looks at the folder (default 1)
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# The beat schedule comes from notify_tracking.tasks.beat_schedule(), added by
# example_project.celery_app once Django is set up (that module imports models).

# The webhook channel posts to a receiver that the demo runs itself on 127.0.0.1
# (example_project/webhook_inbox/receiver.py, started by run_demo.py, which sets
# DEMO_WEBHOOK_PORT to a free port unless you set it). It keeps what it gets in
# WEBHOOK_INBOX, shown at /webhook-inbox/. The signing secret is made on first start
# and kept in the var dir, like SECRET_KEY: never in the repository.
WEBHOOK_PORT = int(os.environ.get("DEMO_WEBHOOK_PORT") or PORT + 1)
WEBHOOK_URL = f"http://127.0.0.1:{WEBHOOK_PORT}/hook/"
WEBHOOK_SECRET = os.environ.get("DEMO_WEBHOOK_SECRET") or secret_key(VAR_DIR / "webhook_secret")
WEBHOOK_INBOX = VAR_DIR / "webhook-inbox.jsonl"
# Users who get comment notifications over the webhook too (say, in their team chat),
# besides their email: see example_project/tracker/notifications.py.
WEBHOOK_USERS = ["carol"]

NOTIFY_TRACKING = {
    # Links in emails (the tracking pixel, tracked links) point back to this site.
    "BASE_URL": SITE_URL,
    "MESSAGE_ID_DOMAIN": "tracker.example.com",
    "CHANNELS": {
        "email": {"BACKEND": "notify_tracking.channels.email.EmailChannel"},
        "webhook": {
            "BACKEND": "notify_tracking.channels.webhook.WebhookChannel",
            "OPTIONS": {"URL": WEBHOOK_URL, "SECRET": WEBHOOK_SECRET, "TIMEOUT": 5},
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"notify_tracking": {"handlers": ["console"], "level": "INFO"}},
}

# The demo's own translations (the app ships its own in notify_tracking/locale).
LOCALE_PATHS = [PROJECT_DIR / "locale"]
