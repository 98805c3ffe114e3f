"""Django settings of the benchmarks: PostgreSQL (its own database) and Redis (its own DB).

The database and the Redis DB number are the bench's own: created, flushed and dropped
by ``bench.run``. Never point them at the test suite's or anyone else's.
"""

import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DB_NAME = os.environ.get("NT_BENCH_DB", "nt_bench")
REDIS_URL = os.environ.get("NT_BENCH_REDIS", "redis://127.0.0.1:6379/15")

SECRET_KEY = "bench-only-not-secret"  # noqa: S105
DEBUG = False  # DEBUG keeps every query in memory: it would skew the memory benchmark
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
ROOT_URLCONF = "bench.urls"
WSGI_APPLICATION = "bench.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "anymail",
    "post_office",
    "notify_tracking",
    "bench.benchapp",
]
# A usual stack: the pixel and the bare view run through the same middleware.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DB_NAME,
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        # Persistent connections, as a production site runs.
        "CONN_MAX_AGE": 600,
    }
}

# anymail's test backend (no network), keeping no copy of what it sent.
EMAIL_BACKEND = "bench.backends.BenchEmailBackend"
DEFAULT_FROM_EMAIL = "tracker@example.com"
ANYMAIL = {"WEBHOOK_SECRET": "bench:bench"}

# A shared cache, as docs/deployment.md asks: the pixel's nudge flag (and the channels'
# rate limits) must be seen by every process. With the per-process default, each web
# process would enqueue the task that applies opens once per 10 s, not once a second.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

NOTIFY_TRACKING = {
    "BASE_URL": "http://127.0.0.1:8000",
    "MESSAGE_ID_DOMAIN": "bench.example.com",
}
# The pixel's spool (docs/tracking.md), when the bench measures it.
if os.environ.get("NT_BENCH_OPEN_SPOOL"):
    NOTIFY_TRACKING["OPEN_SPOOL_DIR"] = os.environ["NT_BENCH_OPEN_SPOOL"]

# django-post-office, the baseline of the send benchmark: its Celery integration,
# sending through the same backend as the app.
POST_OFFICE = {
    "CELERY_ENABLED": True,
    "BACKENDS": {"default": EMAIL_BACKEND},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
