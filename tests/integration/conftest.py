"""Real parts for the worker tests: a Celery worker process and an SMTP server.

- ``smtp_server``: an aiosmtpd server on 127.0.0.1 that records every message it
  accepts (by Message-ID, to count duplicates) and can refuse recipients with the
  replies a test gives it, or answer slowly.
- ``start_worker``: starts ``celery -A tests.celery_app worker`` (prefork, 2 processes)
  in its own process group, pointed at the test database and the SMTP server; the
  test can SIGKILL the whole group; every worker still running is stopped at teardown
  and the logs of all of them are attached to the report of a failed test.
- ``live_celery``: the test process enqueues to the broker instead of running tasks
  eagerly, and the queue starts empty.
"""

from __future__ import annotations

import asyncio
import email
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.db import connection

from tests.celery_app import app as celery_app

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_CONCURRENCY = 2
WORKER_READY_TIMEOUT = 90
WORKER_STOP_TIMEOUT = 30
_workers_key = pytest.StashKey[list]()


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str = ""
) -> float:
    """Wait for ``condition()`` to hold; return the seconds waited. Fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        time.sleep(interval)
    return time.monotonic() - start


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@dataclass
class Worker:
    process: subprocess.Popen
    log_path: Path

    @property
    def pgid(self) -> int:
        # start_new_session: the worker leads its own process group.
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pool_pids(self) -> list[int]:
        """Pids of the other processes of the worker's group (its pool processes)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # The command name (2nd field) is in parentheses and may hold spaces.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended meanwhile
            pid = int(stat.parent.name)
            if int(fields[2]) == self.pgid and pid != self.process.pid:
                pids.append(pid)
        return pids

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.log()}")
            return " ready." in self.log()

        wait_until(ready, timeout=WORKER_READY_TIMEOUT, interval=0.2, what="the worker to start")

    def kill(self) -> int:
        """SIGKILL the whole process group, as a crash or the OOM killer would.

        Returns how many processes were killed.
        """
        victims = 1 + len(self.pool_pids())
        os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_TIMEOUT)
        return victims

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the running tasks
        try:
            self.process.wait(timeout=WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.pgid, signal.SIGKILL)
            self.process.wait(timeout=WORKER_STOP_TIMEOUT)


@pytest.fixture
def live_celery(transactional_db) -> Iterator[None]:
    """Enqueue to the real broker (not eagerly), starting from an empty queue."""
    if not settings.BROKER_URL:
        queue = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        (queue / "processed").mkdir(parents=True, exist_ok=True)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = eager
        celery_app.control.purge()


@pytest.fixture
def start_worker(request, live_celery, smtp_server) -> Iterator[Callable[..., Worker]]:
    """A factory: ``start_worker(CLAIM_TIMEOUT=5, ...)`` starts a worker and waits until
    it is ready. The keyword arguments become NOTIFY_TRACKING_TEST_<KEY> overrides."""
    workers: list[Worker] = []
    request.node.stash[_workers_key] = workers
    logs = Path(settings.SHARED_DIR) / "worker-logs"
    logs.mkdir(exist_ok=True)

    def start(**overrides: int) -> Worker:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "NOTIFY_TRACKING_WORKER": "1",
            "NOTIFY_TRACKING_WORKER_DB_NAME": str(connection.settings_dict["NAME"]),
            "NOTIFY_TRACKING_TEST_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "NOTIFY_TRACKING_TEST_EMAIL_PORT": str(smtp_server.port),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            "PYTHONUNBUFFERED": "1",
        }
        for key, value in overrides.items():
            env[f"NOTIFY_TRACKING_TEST_{key}"] = str(value)
        name = f"nt-{uuid.uuid4().hex[:8]}"
        log_path = logs / f"{request.node.name[:60]}-{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
                    "--pool=prefork", f"--concurrency={WORKER_CONCURRENCY}",
                    "--without-mingle", "--without-gossip", "--without-heartbeat",
                    "-l", "info", "-n", f"{name}@%h",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        worker = Worker(process, log_path)
        workers.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the worker logs and the SMTP record to the report of a failed test."""
    report = yield
    if report.failed:
        for number, worker in enumerate(item.stash.get(_workers_key, []), 1):
            report.sections.append((f"worker {number} log ({worker.log_path})", worker.log()))
        server = getattr(item, "funcargs", {}).get("smtp_server")
        if server is not None:
            report.sections.append(("SMTP server", server.handler.summary()))
    return report
