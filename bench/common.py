"""What the benchmarks share: Django set-up, the email they send, timing helpers."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

SUBJECT = "New comment on task #{n}: the build fails on main"
TEXT = (
    "Alice commented on task #{n} (The build fails on main):\n\n"
    "I can reproduce it on a clean checkout: the migration 0042 runs before 0041 when the\n"
    "database is PostgreSQL. See the log attached to the task and the CI run.\n\n"
    "Open the task: https://tracker.example.com/tasks/{n}/\n"
)
HTML = (
    "<!doctype html><html><body>"
    "<p><strong>Alice</strong> commented on "
    '<a href="https://tracker.example.com/tasks/{n}/">task #{n}</a> (The build fails on main):</p>'
    "<blockquote><p>I can reproduce it on a clean checkout: the migration 0042 runs before 0041"
    " when the database is PostgreSQL. See the log attached to the task and "
    '<a href="https://ci.example.com/runs/{n}">the CI run</a>.</p></blockquote>'
    '<p><a href="https://tracker.example.com/tasks/{n}/#comments">Reply</a> · '
    '<a href="https://tracker.example.com/settings/notifications/">Notification settings</a></p>'
    "</body></html>"
)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()


def email(n: int) -> dict[str, str]:
    """Subject, text and HTML of notification number ``n`` (the same for every side)."""
    return {"subject": SUBJECT.format(n=n), "text": TEXT.format(n=n), "html": HTML.format(n=n)}


def addresses(start: int, count: int) -> list[str]:
    return [f"reader{start + i}@example.com" for i in range(count)]


def bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(
        username="bench",
        defaults={"is_staff": True, "email": "bench@example.com", "first_name": "Bench"},
    )
    return user


def bench_target():
    """The object notifications are about (a comment)."""
    from bench.benchapp.models import Comment

    comment = Comment.objects.order_by("pk").first()
    return comment or Comment.objects.create(author=bench_user(), body="The target.")


def wait_for_count(
    count: Callable[[], int], expected: int, timeout: float, what: str, poll: float = 0.05
) -> float:
    """Poll ``count()`` until it reaches ``expected``; the monotonic time it did.

    Raises TimeoutError (with the count reached) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        value = count()
        if value >= expected:
            return now
        if now > deadline:
            raise TimeoutError(f"{what}: {value} of {expected} after {timeout:.0f} s")
        time.sleep(poll)


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline else float("nan")


def announce(name: str, figures: dict[str, Any]) -> None:
    """Print a benchmark's figures, its ratio first."""
    line = ", ".join(f"{key}={value}" for key, value in figures.items())
    print(f"[bench] {name}: {line}", flush=True)
