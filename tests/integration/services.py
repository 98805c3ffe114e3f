"""Reachability of the services a test run was told to use.

When NOTIFY_TRACKING_TEST_DATABASE_URL, NOTIFY_TRACKING_TEST_BROKER_URL or
NOTIFY_TRACKING_TEST_REDIS_URL is set, the run must use that service: if it cannot be
reached the run fails at once (see ``pytest_sessionstart`` in tests/conftest.py)
instead of skipping or timing out. A redis:// broker also serves the tests that need
a Redis cache, on database 14 (``redis_cache_url``).
Imports no Django model: it runs before Django is set up.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

DATABASE_URL_VAR = "NOTIFY_TRACKING_TEST_DATABASE_URL"
BROKER_URL_VAR = "NOTIFY_TRACKING_TEST_BROKER_URL"
REDIS_URL_VAR = "NOTIFY_TRACKING_TEST_REDIS_URL"
#: The Redis database of the tests that need a Redis cache (0 and 15 are used by others).
REDIS_CACHE_DB = 14
CONNECT_TIMEOUT = 5


def redacted(url: str) -> str:
    """``url`` without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def database_problem(url: str) -> str | None:
    from tests.settings import database_from_url

    try:
        import psycopg

        config = database_from_url(url)
        psycopg.connect(
            dbname=config["NAME"],
            user=config["USER"] or None,
            password=config["PASSWORD"] or None,
            host=config["HOST"] or None,
            port=config["PORT"] or None,
            connect_timeout=CONNECT_TIMEOUT,
        ).close()
    except Exception as error:
        return f"{DATABASE_URL_VAR}={redacted(url)} is unreachable: {error}"
    return None


def broker_problem(url: str) -> str | None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.5, timeout=CONNECT_TIMEOUT)
    except Exception as error:
        return f"{BROKER_URL_VAR}={redacted(url)} is unreachable: {error}"
    return None


def redis_cache_url() -> str | None:
    """The Redis server of the tests that need a Redis cache, at database 14.

    NOTIFY_TRACKING_TEST_REDIS_URL names it; without it, a redis:// broker's server is
    used. None when the run was given no Redis.
    """
    url = os.environ.get(REDIS_URL_VAR) or ""
    broker = os.environ.get(BROKER_URL_VAR) or ""
    if not url and broker.startswith(("redis://", "rediss://")):
        url = broker
    if not url:
        return None
    return urlunsplit(urlsplit(url)._replace(path=f"/{REDIS_CACHE_DB}"))


def redis_problem(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT).ping()
    except Exception as error:
        return f"{REDIS_URL_VAR}={redacted(url)} is unreachable: {error}"
    return None


def unreachable_services() -> list[str]:
    """One line per configured service that cannot be reached."""
    problems = []
    if os.environ.get(DATABASE_URL_VAR):
        problems.append(database_problem(os.environ[DATABASE_URL_VAR]))
    if os.environ.get(BROKER_URL_VAR):
        problems.append(broker_problem(os.environ[BROKER_URL_VAR]))
    if os.environ.get(REDIS_URL_VAR):
        problems.append(redis_problem(os.environ[REDIS_URL_VAR]))
    return [problem for problem in problems if problem]
