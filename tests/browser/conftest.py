"""The browser tests' fixture: the demo tracker, served by its own server.

The demo runs as a user runs it (its own settings, database and ``runserver``) in a
throwaway directory; only the Celery worker and the webhook receiver are left out. The
seed sends its emails itself and plays a read, a click, a bounce and a machine open
(example_project/tracker/management/commands/seed_demo.py); the webhook deliveries
stay queued.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _demo_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DEMO_", "NOTIFY_TRACKING_TEST_", "DJANGO_SETTINGS"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DEMO_VAR_DIR=str(var_dir),
        DEMO_PORT=str(port),
        DEMO_DEBUG="1",  # runserver serves the static files
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    if result.returncode:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory) -> Iterator[str]:
    """The demo tracker, seeded (with its statuses), served on a free local port."""
    from example_project import launcher, smoke

    var_dir = tmp_path_factory.mktemp("demo")
    port = smoke.free_port()
    env = _demo_env(var_dir, port)
    manage = [sys.executable, str(ROOT / "example_project" / "manage.py")]
    _run([*manage, "migrate", "--verbosity=0"], env)
    _run([*manage, "seed_demo", "--verbosity=0"], env)
    site = f"http://127.0.0.1:{port}"
    with open(var_dir / "server.log", "wb") as log:
        server = launcher.start_server(env, port, log)
        try:
            launcher.wait_until_up(f"{site}/accounts/login/", [server])
            yield site
        finally:
            launcher.stop([server])
