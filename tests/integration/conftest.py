"""Real parts for the worker tests: a Celery worker process and an SMTP server.

- ``smtp_server``: an aiosmtpd server on 127.0.0.1 that records every message it
  accepts (by Message-ID, to count duplicates) and can refuse recipients with the
  replies a test gives it, or answer slowly.
- ``start_worker``: starts ``celery -A tests.celery_app worker`` (prefork, 2 processes,
  tests/worker_process.py), pointed at the test database and the SMTP server; the
  test can SIGKILL the whole group; every worker still running is stopped at teardown
  and the logs of all of them are attached to the report of a failed test.
- ``live_celery``: the test process enqueues to the broker instead of running tasks
  eagerly, and the queue starts empty.
"""

from __future__ import annotations

import asyncio
import email
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from tests.worker_process import (  # noqa: F401  (the worker tests import them from here)
    REPO_ROOT,
    WORKER_CONCURRENCY,
    Worker,
    WorkerStarter,
    enqueue_to_broker,
    free_port,
    wait_until,
    worker_log_sections,
)

# --- SMTP server -----------------------------------------------------------------------

#: A rule answers RCPT TO for one address: given the attempt number (0 for the first
#: RCPT of that address), it returns an SMTP reply to refuse it, or None to accept.
Rule = Callable[[int], "str | None"]


@dataclass
class Received:
    message_id: str
    recipients: tuple[str, ...]
    at: float


@dataclass
class RecordingHandler:
    """aiosmtpd handler: records accepted messages; refuses or delays as told."""

    delay: float = 0.0
    rules: dict[str, Rule] = field(default_factory=dict)
    #: Called with the number of messages accepted so far, just after each "250" reply.
    on_accepted: Callable[[int], None] | None = None
    messages: list[Received] = field(default_factory=list)
    rcpt_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            attempt = len(self.rcpt_times[address])
            self.rcpt_times[address].append(time.monotonic())
        rule = self.rules.get(address)
        reply = rule(attempt) if rule else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        received = Received(
            message_id=str(message["Message-ID"] or "").strip(),
            recipients=tuple(envelope.rcpt_tos),
            at=time.monotonic(),
        )
        with self.lock:
            self.messages.append(received)
            count = len(self.messages)
        if self.on_accepted is not None:
            # Soon after the reply has gone out: the client has its "250", and is
            # recording the result.
            asyncio.get_running_loop().call_later(0.002, self.on_accepted, count)
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def per_message_id(self) -> Counter:
        with self.lock:
            return Counter(message.message_id for message in self.messages)

    def summary(self) -> str:
        counts = self.per_message_id()
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        return (
            f"{sum(counts.values())} messages, {len(counts)} Message-IDs, {duplicates} duplicates"
        )


@dataclass
class SMTPServer:
    handler: RecordingHandler
    port: int


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SMTPServer(handler, controller.port)
    finally:
        controller.stop()


# --- Celery worker -----------------------------------------------------------------------


@pytest.fixture
def live_celery(transactional_db) -> Iterator[None]:
    """Enqueue to the real broker (not eagerly), starting from an empty queue."""
    with enqueue_to_broker():
        yield


@pytest.fixture
def start_worker(request, live_celery, smtp_server) -> Iterator[Callable[..., Worker]]:
    """A factory: ``start_worker(CLAIM_TIMEOUT=5, ...)`` starts a worker and waits until
    it is ready. The keyword arguments become NOTIFY_TRACKING_TEST_<KEY> overrides."""
    starter = WorkerStarter(request, "tests.settings")
    smtp = {
        "NOTIFY_TRACKING_TEST_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "NOTIFY_TRACKING_TEST_EMAIL_PORT": str(smtp_server.port),
    }

    def start(**overrides: int) -> Worker:
        return starter.start(smtp, **overrides)

    try:
        yield start
    finally:
        starter.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the worker logs and the SMTP record to the report of a failed test."""
    report = yield
    if report.failed:
        report.sections.extend(worker_log_sections(item))
        server = getattr(item, "funcargs", {}).get("smtp_server")
        if server is not None:
            report.sections.append(("SMTP server", server.handler.summary()))
    return report
