"""Badges: a page of 200 comments, with and without their status badges.

The page (bench/benchapp/templates/benchapp/comments.html) lists 200 comments, each
notified to 3 people in mixed states. With badges it adds ``{% delivery_badge_assets %}``,
``{% delivery_badges_for comments as badges %}`` and ``{% delivery_badge comment badges %}``
per comment (docs/template-tags.md): each badge is its icon, from one aggregate
query (``badge_states()``), and its popup loads its details when opened. Both pages
are fetched in-process with Django's test client as a logged-in staff user,
alternately, ``ITERATIONS`` times each after a warm-up; the figure is the median time
per page, and the ratio with/without.

Apart: ``badge_states()`` and ``summaries()`` of the 200 comments alone, and what
opening one popup costs (the ``status-badge`` fragment of one comment, a request of
its own).
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

    # Where the difference goes: the badges' aggregate query and the dicts built from
    # it, apart from rendering (the rest of the difference); summaries() for
    # comparison (what the badges used before the popup loaded on open).
    from django.urls import reverse

    from notify_tracking import summaries
    from notify_tracking.aggregate import badge_states

    from .benchapp.models import Comment

    comments = list(Comment.objects.select_related("author")[:COMMENTS])
    state_samples, summary_samples, popup_samples = [], [], []
    popup_url = reverse("notify_tracking:status-badge", args=["benchapp.comment", comments[0].pk])
    with CaptureQueriesContext(connection) as captured:
        popup = client.get(popup_url)
    popup_queries = len(captured)  # now: the next request empties the query log
    if popup.status_code != 200 or b"data-nt-recipient" not in popup.content:
        raise RuntimeError(f"{popup_url} answered {popup.status_code} without recipients")
    for _ in range(ITERATIONS):
        started = time.perf_counter()
        badge_states(comments)
        state_samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        summaries(comments)
        summary_samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.get(popup_url)
        popup_samples.append(time.perf_counter() - started)

    plain, badges = median_ms(samples["plain"]), median_ms(samples["badges"])
    figures = {
        "comments": COMMENTS,
        "recipients_per_comment": 3,
        "iterations": ITERATIONS,
        "plain_ms": plain,
        "badges_ms": badges,
        "ratio": ratio(badges, plain),
        "badge_states_ms": median_ms(state_samples),
        "summaries_ms": median_ms(summary_samples),
        "popup_ms": median_ms(popup_samples),
        "popup_queries": popup_queries,
        "popup_bytes": len(popup.content),
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
            "badge_states_ms": figures["badge_states_ms"],
            "summaries_ms": figures["summaries_ms"],
            "popup_ms": f"{figures['popup_ms']} ({popup_queries} queries)",
            "queries": f"{found['plain']['queries']} vs {found['badges']['queries']}",
            "badges_rendered": found["badges"]["badges"],
        },
    )
    return figures
