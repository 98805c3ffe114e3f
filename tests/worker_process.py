"""A real Celery worker process for a test: the one way the worker, fault and rate-limit
tests start one.

:class:`WorkerStarter` starts ``celery -A tests.celery_app worker`` (prefork) in its own
process group, with the settings module and environment a test gives it, pointed at
the test database; the test can SIGKILL the whole group; :meth:`WorkerStarter.stop_all`
stops every worker still running (at teardown), and :func:`worker_log_sections`
attaches their logs to the report of a failed test. :func:`enqueue_to_broker` makes the
test process enqueue to the real broker, from an empty queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.celery_app import app as celery_app

REPO_ROOT = Path(__file__).resolve().parents[1]
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


class WorkerStarter:
    """Starts the workers of one test and remembers them (for teardown and the report)."""

    def __init__(self, request: pytest.FixtureRequest, settings_module: str):
        self.request = request
        self.settings_module = settings_module
        self.started: list[Worker] = []
        request.node.stash[_workers_key] = self.started
        self.logs = Path(settings.SHARED_DIR) / "worker-logs"
        self.logs.mkdir(exist_ok=True)

    def start(
        self,
        env: dict[str, str] | None = None,
        *,
        concurrency: int = WORKER_CONCURRENCY,
        wait: bool = True,
        **overrides: object,
    ) -> Worker:
        """Start a worker with ``env`` added to this process's environment.

        Upper-case keywords become ``NOTIFY_TRACKING_TEST_<KEY>`` overrides (see
        tests/settings.py). With ``wait``, returns once the worker is ready.
        """
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "NOTIFY_TRACKING_WORKER": "1",
            "NOTIFY_TRACKING_WORKER_DB_NAME": str(connection.settings_dict["NAME"]),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        for key, value in overrides.items():
            full_env[f"NOTIFY_TRACKING_TEST_{key}"] = str(value)
        name = f"nt-{uuid.uuid4().hex[:8]}"
        log_path = self.logs / f"{self.request.node.name[:60]}-{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
                    "--pool=prefork", f"--concurrency={concurrency}",
                    "--without-mingle", "--without-gossip", "--without-heartbeat",
                    "-l", "info", "-n", f"{name}@%h",
                ],
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        worker = Worker(process, log_path)
        self.started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


def worker_log_sections(item: pytest.Item) -> list[tuple[str, str]]:
    """Report sections with the log of every worker the test started."""
    return [
        (f"worker {number} log ({worker.log_path})", worker.log())
        for number, worker in enumerate(item.stash.get(_workers_key, []), 1)
    ]


@contextlib.contextmanager
def enqueue_to_broker() -> Iterator[None]:
    """This process enqueues to the real broker (not eagerly), from an empty queue.

    The purge at the end may meet a broker a test stopped: that is not the test's
    failure.
    """
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
        with contextlib.suppress(Exception):
            celery_app.control.purge()
