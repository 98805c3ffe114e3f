"""Start the demo: prepare the database, run a Celery worker and the web server, stop both.

Used by ``run_demo.py``. The worker and the server are child processes, each in its
own process group, so that stopping the demo (Ctrl-C) stops them and whatever they
started, and nothing is left running. The webhook receiver (the other end of the
demo's webhook channel) is a thread of this process: it starts before the worker and
stops after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

PROJECT_DIR = Path(__file__).resolve().parent
ROOT = PROJECT_DIR.parent
SETTINGS = "example_project.settings"
STOP_TIMEOUT = 15  # seconds a child gets to shut down before it is killed


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


# --- environment and database --------------------------------------------------------


def configure(var_dir: Path, port: int, webhook_port: int | None = None) -> dict[str, str]:
    """Point this process at the demo's settings; return the environment of its children."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["DEMO_VAR_DIR"] = str(var_dir)
    os.environ["DEMO_PORT"] = str(port)
    if webhook_port is not None:
        os.environ["DEMO_WEBHOOK_PORT"] = str(webhook_port)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def prepare(verbosity: int = 1) -> None:
    """Set Django up in this process, migrate, and seed the demo data (idempotent)."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    import example_project.celery_app  # noqa: F401  (the seed's notifications are enqueued here)

    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=verbosity)
    connections.close_all()


# --- the webhook receiver --------------------------------------------------------------


def bind_webhook_receiver(port: int = 0):
    """The demo's webhook receiver, bound to 127.0.0.1:``port`` (0: a free port), not serving yet.

    Bound before the settings are read, so that they name its port; started by
    :func:`start_webhook_receiver` once Django is set up.
    """
    from .webhook_inbox.receiver import WebhookReceiver

    try:
        return WebhookReceiver(port)
    except OSError as error:
        reason = f"the webhook receiver cannot listen on 127.0.0.1:{port}: {error}"
        raise DemoError(reason) from None


def start_webhook_receiver(receiver) -> None:
    """Serve with the webhook channel's secret, keeping what it gets in the inbox file."""
    from django.conf import settings

    receiver.start(settings.WEBHOOK_SECRET, settings.WEBHOOK_INBOX)


# --- child processes -----------------------------------------------------------------


def start_worker(env: dict[str, str], var_dir: Path, log: IO | None = None) -> subprocess.Popen:
    """A real Celery worker on the configured broker, with beat for the periodic sweep."""
    command = [
        sys.executable, "-m", "celery", "-A", "example_project.celery_app", "--quiet",
        "worker", "--pool=solo", "--loglevel=INFO", "--hostname=demo@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--beat", f"--schedule={var_dir / 'celerybeat-schedule'}",
    ]  # fmt: skip
    return _start("the Celery worker", command, env, log)


def start_server(env: dict[str, str], port: int, log: IO | None = None) -> subprocess.Popen:
    command = [
        sys.executable, str(PROJECT_DIR / "manage.py"),
        "runserver", f"127.0.0.1:{port}", "--noreload",
    ]  # fmt: skip
    return _start("the web server", command, env, log)


def _start(name: str, command: list[str], env: dict[str, str], log: IO | None) -> subprocess.Popen:
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        start_new_session=True,  # its own process group: Ctrl-C reaches us, we stop it
    )
    child.demo_name = name
    return child


def stop(children: list[subprocess.Popen]) -> None:
    """Ask each child to stop (SIGTERM: the worker finishes its task), then make sure."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended in between
            os.killpg(child.pid, signum)


def wait_until_up(url: str, children: list[subprocess.Popen], timeout: float = 30) -> None:
    """Wait until ``url`` answers; fail early when a child dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(children)
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.3)
    raise DemoError(f"the web server did not answer at {url} within {timeout:.0f} s")


def check_alive(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is not None:
            raise DemoError(f"{child.demo_name} stopped (exit code {child.returncode})")


# --- the interactive demo --------------------------------------------------------------


def run_demo() -> int:
    # Absolute: the children run from the repository root, maybe not our directory.
    var_dir = Path(os.environ.get("DEMO_VAR_DIR") or PROJECT_DIR / "var").resolve()
    port = int(os.environ.get("DEMO_PORT", "8000"))
    try:
        receiver = bind_webhook_receiver(int(os.environ.get("DEMO_WEBHOOK_PORT") or 0))
    except DemoError as error:
        print(f"The demo cannot start: {error}", file=sys.stderr)
        return 1
    env = configure(var_dir, port, receiver.port)
    children: list[subprocess.Popen] = []
    try:
        prepare()
        start_webhook_receiver(receiver)
        children.append(start_worker(env, var_dir))
        children.append(start_server(env, port))
        wait_until_up(f"http://127.0.0.1:{port}/accounts/login/", children)
        print_banner(port, var_dir, receiver.url)
        while True:
            check_alive(children)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping the demo…", flush=True)
        return 0
    except DemoError as error:
        print(f"The demo stopped: {error}", file=sys.stderr)
        return 1
    finally:
        stop(children)
        receiver.stop()  # after the worker: it may be posting to it until it stops


def print_banner(port: int, var_dir: Path, webhook_url: str) -> None:
    from django.conf import settings

    site = f"http://127.0.0.1:{port}"
    database = "PostgreSQL" if os.environ.get("DEMO_DATABASE_URL") else "SQLite"
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    print(
        f"""
  The demo tracker is running, with a Celery worker ({broker} broker) and {database}.

    Tasks      {site}/
    Mailbox    {site}/mailbox/     (every email the demo sends; open one to read it)
    Webhook    {site}/webhook-inbox/     (what the demo's receiver at {webhook_url} got)
    Admin      {site}/admin/

  Log in as admin / admin (superuser), or alice, bob, carol with the password demo.
  These accounts are for the demo only. Local data: {var_dir}
  Press Ctrl-C to stop.
""",
        flush=True,
    )
