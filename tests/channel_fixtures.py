"""Shared helpers of the channel tests (tests/test_channel_*.py).

The providers are played by real HTTP servers on localhost (pytest-httpserver), or
by a raw socket server for what HTTP servers do not do (closing without answering).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings

from notify_tracking import notify
from notify_tracking.models import Delivery

TELEGRAM_TOKEN = "123456789:AAE-test-token-never-shown"
SLACK_TOKEN = "xoxb-1234-5678-test-token-never-shown"
WEBHOOK_SECRET = "whsec-test-secret-never-shown"

BASE_SETTINGS = {"MESSAGE_ID_DOMAIN": "tracker.example.com", "BASE_URL": "http://testserver"}
EMAIL = {"BACKEND": "notify_tracking.channels.email.EmailChannel", "OPTIONS": {}}


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Each test starts with empty rate-limit lines (they live in the cache)."""
    cache.clear()
    yield
    cache.clear()


def channels(**configs: dict[str, Any]):
    """override_settings with these channels (name -> (backend, options)), email too."""
    entries = {"email": EMAIL}
    for name, (backend, options) in configs.items():
        entries[name] = {"BACKEND": backend, "OPTIONS": options}
    return override_settings(
        NOTIFY_TRACKING={**BASE_SETTINGS, "CHANNELS": entries, "RETRY_BACKOFF": 60}
    )


def send(capture, target, recipients, *, channel, text="Please review.", subject="Task"):
    """notify() and run the send synchronously; the deliveries, fresh from the database."""
    with capture(execute=True):
        notification = notify(target, recipients, subject=subject, text=text, channel=channel)
    return list(Delivery.objects.filter(notification=notification).order_by("pk"))


def queue(target, recipients, *, channel, text="Please review.", subject="Task"):
    """notify() without sending: the queued deliveries, ready for channel.send()."""
    notification = notify(target, recipients, subject=subject, text=text, channel=channel)
    deliveries = list(
        Delivery.objects.filter(notification=notification)
        .select_related("notification")
        .order_by("pk")
    )
    for delivery in deliveries:
        delivery.notification.target  # noqa: B018  (loads the target now, in this thread)
    return deliveries


def reasons(delivery: Delivery) -> str:
    """Every reason recorded for a delivery: its error and its events' details."""
    texts = [delivery.error]
    texts += [str(event.details) for event in delivery.events.all()]
    return "\n".join(texts)


class RequestLog:
    """Arrival times of the requests a stand-in server received."""

    def __init__(self):
        self.times: list[float] = []
        self.lock = threading.Lock()

    def add(self) -> float:
        now = time.monotonic()
        with self.lock:
            self.times.append(now)
        return now


@contextlib.contextmanager
def closing_server(answer: bytes = b"") -> Iterator[str]:
    """A server that reads a request, writes ``answer`` (maybe nothing) and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def unused_port() -> int:
    """A local port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
