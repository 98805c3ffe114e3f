"""Real parts for the fault tests: workers, an SMTP server, a broker of their own, a fake
email provider.

- ``workers``: a factory that starts ``celery -A tests.celery_app worker`` (prefork,
  tests/worker_process.py), with ``tests.reliability.settings``, pointed at the test
  database, the SMTP server or the fake provider, and the broker it is given. Every
  worker still running is stopped at teardown; their logs are attached to a failure.
- ``smtp``: the recording aiosmtpd server of the worker tests, with a hook called just
  before each "250" (to drop database connections at that moment).
- ``own_redis``: a redis-server of the test's own on a free port, that the test may stop
  and start again. The shared services of the machine are never touched.
- ``use_broker``: points this process's Celery app at another broker for one test.
- ``fake_postmark``: a fake Postmark send API with rules per recipient (fake_provider.py).
- ``figures``: prints a measured figure as a ``[reliability figures]`` line (and appends
  it to ``$NOTIFY_TRACKING_TEST_FIGURES`` when set), for docs/guarantees.md.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.db import connection

from notify_tracking import status as st
from notify_tracking.models import Delivery
from tests.celery_app import app as celery_app
from tests.integration.conftest import RecordingHandler
from tests.reliability.fake_provider import FakePostmark, running
from tests.reliability.figures import emit
from tests.worker_process import (
    Worker,
    WorkerStarter,
    enqueue_to_broker,
    free_port,
    wait_until,
    worker_log_sections,
)

WORKER_SETTINGS = "tests.reliability.settings"
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
POSTMARK_BACKEND = "anymail.backends.postmark.EmailBackend"

requires_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: set NOTIFY_TRACKING_TEST_DATABASE_URL (scripts/ci-reliability.sh)",
)


def nothing_left_to_send() -> bool:
    return not Delivery.objects.filter(status__in=st.SENDABLE).exists()


def duplicates(counts: dict[str, int]) -> int:
    return sum(n - 1 for n in counts.values() if n > 1)


# --- figures ---------------------------------------------------------------------------


@pytest.fixture
def figures(request, capsys) -> Callable[..., None]:
    """``figures("kills", line, **values)``: print a measured figure even when the test passes."""

    def report(name: str, line: str, **values: object) -> None:
        emit(capsys, request.node.name, name, line, **values)

    return report


# --- SMTP server -----------------------------------------------------------------------


@dataclass
class HookedHandler(RecordingHandler):
    """The worker tests' recording handler, with a hook run before each "250"."""

    #: Called with the number the message will have (1 for the first) before the reply.
    before_accept: Callable[[int], None] | None = None

    async def handle_DATA(self, server, session, envelope):
        if self.before_accept is not None:
            self.before_accept(self.count() + 1)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class SMTP:
    handler: HookedHandler
    port: int


@pytest.fixture
def smtp() -> Iterator[SMTP]:
    handler = HookedHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SMTP(handler, controller.port)
    finally:
        controller.stop()


# --- broker ----------------------------------------------------------------------------


class RedisServer:
    """A redis-server child process on 127.0.0.1:``port``, keeping nothing on disk."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self.answers, timeout=30, interval=0.1, what=f"redis-server on {self.port}")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Stop the server (its queues are lost: it keeps nothing on disk)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _pointed_at(url: str) -> Iterator[None]:
    conf = celery_app.conf
    before = (conf.broker_url, conf.broker_transport, conf.broker_transport_options)
    conf.broker_url, conf.broker_transport, conf.broker_transport_options = url, None, {}
    celery_app._after_fork()  # drop the pooled connections to the previous broker
    try:
        yield
    finally:
        conf.broker_url, conf.broker_transport, conf.broker_transport_options = before
        celery_app._after_fork()


@pytest.fixture
def live_broker(transactional_db) -> Iterator[None]:
    """Enqueue to the real broker (not eagerly), starting from an empty queue."""
    with enqueue_to_broker():
        yield


@pytest.fixture
def use_broker(live_broker) -> Iterator[Callable[[str], None]]:
    """``use_broker(url)``: this process enqueues to ``url`` until the test ends."""
    stack = contextlib.ExitStack()

    def point(url: str) -> None:
        stack.enter_context(_pointed_at(url))

    with stack:
        yield point


# --- workers ---------------------------------------------------------------------------


@pytest.fixture
def workers(request, live_broker) -> Iterator[Callable[..., Worker]]:
    """``workers(smtp_port=..., broker_url=..., CLAIM_TIMEOUT=5, ...)`` starts a worker.

    Upper-case keywords become ``NOTIFY_TRACKING_TEST_<KEY>`` overrides (see
    tests/settings.py and tests/reliability/settings.py).
    """
    starter = WorkerStarter(request, WORKER_SETTINGS)

    def start(
        *,
        smtp_port: int | None = None,
        postmark_url: str | None = None,
        broker_url: str | None = None,
        concurrency: int = 2,
        wait: bool = True,
        **overrides: object,
    ) -> Worker:
        env = {}
        if smtp_port is not None:
            env["NOTIFY_TRACKING_TEST_EMAIL_BACKEND"] = SMTP_BACKEND
            env["NOTIFY_TRACKING_TEST_EMAIL_PORT"] = str(smtp_port)
        if postmark_url is not None:
            env["NOTIFY_TRACKING_TEST_EMAIL_BACKEND"] = POSTMARK_BACKEND
            env["NOTIFY_TRACKING_TEST_POSTMARK_URL"] = postmark_url
        if broker_url is not None:
            env["NOTIFY_TRACKING_TEST_BROKER_URL"] = broker_url
        return starter.start(env, concurrency=concurrency, wait=wait, **overrides)

    try:
        yield start
    finally:
        starter.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the worker logs to the report of a failed test."""
    report = yield
    if report.failed:
        report.sections.extend(worker_log_sections(item))
        server = getattr(item, "funcargs", {}).get("smtp")
        if server is not None:
            report.sections.append(("SMTP server", server.handler.summary()))
    return report


# --- a fake email provider ---------------------------------------------------------------


@pytest.fixture
def fake_postmark() -> Iterator[FakePostmark]:
    with running() as fake:
        yield fake
