"""Badges: a page of 200 comments, with and without their status badges.

The page (bench/benchapp/templates/benchapp/comments.html) lists 200 comments, each
notified to 3 people in mixed states. With badges it adds ``{% delivery_badge_assets %}``,
``{% delivery_badges_for comments as badges %}`` and ``{% delivery_badge comment badges %}``
per comment (docs/template-tags.md). Both pages are fetched in-process with Django's
test client as a logged-in staff user, alternately, ``ITERATIONS`` times each after a
warm-up; the figure is the median time per page, and the ratio with/without.
"""

from __future__ import annotations

import time
from typing import Any

from . import fixtures, profiling
from .common import announce, bench_user, median_ms, ratio
from .send import statements

COMMENTS = 200
ITERATIONS = 40
WARMUP = 5


def run() -> dict[str, Any]:
    import os

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    fixtures.notified_comments(COMMENTS)
    client = Client()
    client.force_login(bench_user())
    urls = {"plain": "/comments/", "badges": "/comments/?badges=1"}

    found: dict[str, Any] = {}
    for name, url in urls.items():
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        found[name] = {
            "queries": len(queries),
            "statements": statements(queries.captured_queries),
            "bytes": len(response.content),
            "badges": response.content.count(b"data-nt-badge"),
        }
    for _ in range(WARMUP):
        for url in urls.values():
            client.get(url)
    samples: dict[str, list[float]] = {name: [] for name in urls}
    with profiling.sampling("badges", [os.getpid()]):
        for _ in range(ITERATIONS):
            for name, url in urls.items():
                started = time.perf_counter()
                client.get(url)
                samples[name].append(time.perf_counter() - started)

    # Where the difference goes: the three summary queries and the dicts built from
    # them, apart from rendering (the rest of the difference).
    from notify_tracking import summaries

    from .benchapp.models import Comment

    comments = list(Comment.objects.select_related("author")[:COMMENTS])
    summary_samples = []
    for _ in range(ITERATIONS):
        started = time.perf_counter()
        summaries(comments)
        summary_samples.append(time.perf_counter() - started)

    plain, badges = median_ms(samples["plain"]), median_ms(samples["badges"])
    figures = {
        "comments": COMMENTS,
        "recipients_per_comment": 3,
        "iterations": ITERATIONS,
        "plain_ms": plain,
        "badges_ms": badges,
        "ratio": ratio(badges, plain),
        "summaries_ms": median_ms(summary_samples),
        "plain_queries": found["plain"]["queries"],
        "badges_queries": found["badges"]["queries"],
        "pages": found,
    }
    announce(
        "badges",
        {
            "plain_ms": plain,
            "badges_ms": badges,
            "ratio": figures["ratio"],
            "summaries_ms": figures["summaries_ms"],
            "queries": f"{found['plain']['queries']} vs {found['badges']['queries']}",
            "badges_rendered": found["badges"]["badges"],
        },
    )
    return figures
