"""Compatibility matrix: the test suite on each supported Python and Django, on SQLite.

    nox -s tests postgresql       # the whole matrix (9 cells) and the newest pair on
                                  # PostgreSQL: what CI runs
    nox -t ci                     # a quick subset: every Python and Django once
    nox -s "tests(python='3.10', django='4.2')"
    nox -l                        # list the cells

The slow tests (a real Celery worker, a real Chromium, the fault tests on real
services) are left out: .ci/run's main runs cover them on the machine's Python with
the newest Django it accepts, on SQLite and PostgreSQL. Interpreters come from
pyenv (``$PYENV_ROOT/versions/3.X.*``) when it has them, else from PATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
DJANGOS = {
    # Django series -> the requirement installed over the package's own.
    "4.2": "Django>=4.2,<5.0",
    "5.2": "Django>=5.2,<6.0",
    "6.0": "Django>=6.0,<6.1",
}
# The Pythons each Django series supports (Django's own table): 6.x needs 3.12+,
# and 4.2 stops at 3.12.
SUPPORTED_PYTHONS = {
    "4.2": ("3.10", "3.12"),
    "5.2": ("3.10", "3.13"),
    "6.0": ("3.12", "3.13"),
}
# A quick subset for a local check: every Python and every Django at least once
# (CI runs all the cells; see docs/release.md, "Compatibility matrix").
CI_CELLS = {
    ("3.10", "4.2"),
    ("3.11", "5.2"),
    ("3.12", "6.0"),
    ("3.13", "5.2"),
    ("3.13", "6.0"),
}

#: The newest pair, also run on PostgreSQL (session ``postgresql``).
NEWEST = ("3.13", "6.0")
#: The host configurations of tests/hosts, each run apart (as the Makefile's HOSTS).
HOSTS = sorted(
    path.name[: -len("_checks.py")]
    for path in (Path(__file__).parent / "tests" / "hosts").glob("*_checks.py")
)
#: The database of that run; the session's test database is created next to it.
POSTGRESQL_URL = os.environ.get(
    "NOTIFY_TRACKING_MATRIX_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"
)

nox.options.sessions = ["tests", "postgresql"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _pyenv_on_path() -> None:
    """Put pyenv's interpreters first on PATH, so that ``python3.X`` finds them.

    pyenv's shims answer only for the versions selected with ``pyenv global``.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for minor in PYTHONS:
        versions = sorted(root.glob(f"{minor}.*/bin/python{minor}"))
        if versions:
            found.append(str(versions[-1].parent))
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _cells() -> list:
    cells = []
    for python in PYTHONS:
        for django in DJANGOS:
            oldest, newest = SUPPORTED_PYTHONS[django]
            if not _version(oldest) <= _version(python) <= _version(newest):
                continue
            tags = ["ci"] if (python, django) in CI_CELLS else []
            cells.append(nox.param(python, django, tags=tags))
    return cells


_pyenv_on_path()


@nox.session
@nox.parametrize(("python", "django"), _cells())
def tests(session: nox.Session, django: str) -> None:
    """The suite without the ``worker``, ``browser`` and ``reliability`` tests, on SQLite."""
    # The suite runs on SQLite and kombu's filesystem broker whatever the caller's
    # environment says.
    _suite(session, django, database_url="")


@nox.session(python=NEWEST[0])
def postgresql(session: nox.Session) -> None:
    """The same suite on PostgreSQL, with the newest Python and Django."""
    _suite(session, NEWEST[1], database_url=POSTGRESQL_URL)


def _suite(session: nox.Session, django: str, database_url: str) -> None:
    session.install("-e", ".[test,postgres]", DJANGOS[django])
    session.run(
        "python", "-c", "import django, sys; print('Django', django.__version__, sys.version)"
    )
    env = {
        "NOTIFY_TRACKING_TEST_DATABASE_URL": database_url,
        "NOTIFY_TRACKING_TEST_BROKER_URL": "",
    }
    session.run(
        "pytest",
        "-m",
        # The -m given here replaces pyproject's addopts one: keep its exclusions.
        "not worker and not browser and not reliability",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env=env,
    )
    # A host's own user model (tests/hosts): each its own run, as in `make test`; and,
    # as there, left out when the arguments select part of the main suite.
    for host in [] if session.posargs else HOSTS:
        session.run(
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--ds=tests.hosts.settings_{host}",
            f"tests/hosts/{host}_checks.py",
            env=env,
        )
