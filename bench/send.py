"""Send throughput: deliveries per second from ``notify()`` to ``sent``.

Three sides, one after the other, each with a fresh Celery worker of the same
settings (prefork, same concurrency) on the same Redis broker and PostgreSQL:

- **app**: ``notify()`` with ``PER_NOTIFICATION`` recipients each, until every
  delivery is ``sent`` (anymail's test backend; tracking pixel and links on);
- **ceiling**: one Celery no-op task per delivery;
- **post_office**: django-post-office's ``mail.send_many()`` with the same emails
  (one per recipient), sent by its Celery integration to the same backend.

The clock starts before the first call and stops when the database (or, for the
no-op, a Redis counter) says the last one is done. Each side first runs a warm-up
batch that is not timed.
"""

from __future__ import annotations

import time
from typing import Any

from . import profiling, services
from .common import addresses, announce, bench_target, email, ratio, wait_for_count

PER_NOTIFICATION = 10
WARMUP = 100
TIMEOUT = 600


def run(size: int, concurrency: int = 2, rounds: int = 2) -> dict[str, Any]:
    """``size`` deliveries per side, in ``rounds`` rounds that alternate the sides (so
    that a change in the machine's load touches every side alike)."""
    sides = {"app": _app_side, "noop": _noop_side, "post_office": _post_office_side}
    per_round = size // rounds
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    batch = queries_of_one_batch()
    for _ in range(rounds):
        for name, side in sides.items():
            runs[name].append(side(per_round, concurrency))
    rate = {
        name: round(per_round * rounds / sum(r["seconds"] for r in done), 1)
        for name, done in runs.items()
    }
    figures = {
        "deliveries": per_round * rounds,
        "rounds": rounds,
        "per_notification": PER_NOTIFICATION,
        "concurrency": concurrency,
        "app_per_s": rate["app"],
        "noop_per_s": rate["noop"],
        "post_office_per_s": rate["post_office"],
        "ratio_vs_noop": ratio(rate["app"], rate["noop"]),
        "ratio_vs_post_office": ratio(rate["app"], rate["post_office"]),
        "one_batch": batch,
        "runs": runs,
    }
    announce(
        "send",
        {
            "app/s": rate["app"],
            "noop/s": rate["noop"],
            "post_office/s": rate["post_office"],
            "ratio_vs_noop": figures["ratio_vs_noop"],
            "ratio_vs_post_office": figures["ratio_vs_post_office"],
            "queries_per_delivery": batch["per_delivery"],
        },
    )
    return figures


# --- the app ------------------------------------------------------------------------


def notify_many(count: int, start: int = 0) -> int:
    """``notify()`` ``count`` deliveries, ``PER_NOTIFICATION`` a notification; the last
    notification id before them (deliveries of later notifications are theirs)."""
    from notify_tracking import notify
    from notify_tracking.models import Notification

    target = bench_target()
    before = Notification.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    for offset in range(0, count, PER_NOTIFICATION):
        n = start + offset
        notify(target, addresses(n, min(PER_NOTIFICATION, count - offset)), **email(n))
    return before


def sent_since(notification_id: int) -> int:
    from notify_tracking.models import Delivery

    return Delivery.objects.filter(notification_id__gt=notification_id, status="sent").count()


def outcome_since(notification_id: int) -> dict[str, int]:
    from django.db.models import Count

    from notify_tracking.models import Delivery

    rows = (
        Delivery.objects.filter(notification_id__gt=notification_id)
        .values("status")
        .annotate(n=Count("pk"))
    )
    return {row["status"]: row["n"] for row in rows}


def statements(queries: list[dict[str, Any]]) -> dict[str, int]:
    """How many statements of each kind (SELECT, INSERT, UPDATE, BEGIN...) were run."""
    kinds: dict[str, int] = {}
    for query in queries:
        sql = query["sql"].lstrip().upper()
        kind = sql.split(None, 1)[0] if sql else "?"
        if kind == "SELECT" and " FOR UPDATE" in sql:
            kind = "SELECT FOR UPDATE"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def queries_of_one_batch() -> dict[str, Any]:
    """The statements one send task runs for a batch of BATCH_SIZE deliveries, in-process."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from notify_tracking import notify, sending
    from notify_tracking.conf import get_setting
    from notify_tracking.models import Delivery

    from .fixtures import drop_queued_tasks

    size = get_setting("BATCH_SIZE")
    notification = notify(bench_target(), addresses(50_000_000, size), **email(1))
    drop_queued_tasks()
    ids = list(Delivery.objects.filter(notification=notification).values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        sending.send_deliveries(ids)
    return {
        "batch": size,
        "queries": len(queries),
        "per_delivery": round(len(queries) / size, 2),
        "statements": statements(queries.captured_queries),
    }


def _app_side(size: int, concurrency: int) -> dict[str, Any]:
    with services.celery_worker("send-app", concurrency) as worker:
        marker = notify_many(WARMUP, start=10_000_000)
        wait_for_count(lambda: sent_since(marker), WARMUP, TIMEOUT, "app warm-up")
        load = services.load_average()
        started = time.monotonic()
        cpu: dict[str, int] = {}
        with profiling.sampling("send-app", services.children(worker.pid)), services.cpu_usage(cpu):
            marker = notify_many(size)
            enqueued = time.monotonic()
            done = wait_for_count(lambda: sent_since(marker), size, TIMEOUT, "app send")
    elapsed = done - started
    return {
        "seconds": round(elapsed, 2),
        "per_s": round(size / elapsed, 1),
        "enqueue_seconds": round(enqueued - started, 2),
        "statuses": outcome_since(marker),
        "cpu_percent": cpu,
        "load_before": load,
    }


# --- the ceiling: a no-op task per delivery --------------------------------------------


def _noop_side(size: int, concurrency: int) -> dict[str, Any]:
    from .benchapp.tasks import COUNTER_KEY, noop

    client = services.redis_client()

    def done_count() -> int:
        return int(client.get(COUNTER_KEY) or 0)

    with services.celery_worker("send-noop", concurrency):
        client.set(COUNTER_KEY, 0)
        for i in range(WARMUP):
            noop.delay(i)
        wait_for_count(done_count, WARMUP, TIMEOUT, "no-op warm-up")
        client.set(COUNTER_KEY, 0)
        load = services.load_average()
        cpu: dict[str, int] = {}
        with services.cpu_usage(cpu):
            started = time.monotonic()
            for i in range(size):
                noop.delay(i)
            enqueued = time.monotonic()
            done = wait_for_count(done_count, size, TIMEOUT, "no-op tasks")
    elapsed = done - started
    return {
        "seconds": round(elapsed, 2),
        "per_s": round(size / elapsed, 1),
        "enqueue_seconds": round(enqueued - started, 2),
        "cpu_percent": cpu,
        "load_before": load,
    }


# --- django-post-office -------------------------------------------------------------------


def post_office_many(count: int, start: int = 0) -> None:
    from django.conf import settings
    from post_office import mail

    for offset in range(0, count, PER_NOTIFICATION):
        n = start + offset
        content = email(n)
        mail.send_many(
            [
                {
                    "recipients": [address],
                    "sender": settings.DEFAULT_FROM_EMAIL,
                    "subject": content["subject"],
                    "message": content["text"],
                    "html_message": content["html"],
                }
                for address in addresses(n, min(PER_NOTIFICATION, count - offset))
            ]
        )


def _post_office_side(size: int, concurrency: int) -> dict[str, Any]:
    from post_office.models import STATUS, Email
    from post_office.tasks import send_queued_mail

    nudges = 0

    def sent_count() -> int:
        return Email.objects.filter(status=STATUS.sent).count()

    def wait(expected: int, what: str) -> float:
        """Wait for ``expected`` sent emails. post_office's Celery task gives up when
        another holds its file lock; an email queued while the holder makes its last
        check stays queued until the next send. When nothing moves for 2 s with emails
        queued, send its task once more, and count it."""
        nonlocal nudges
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + TIMEOUT
        while True:
            now = time.monotonic()
            value = sent_count()
            if value >= expected:
                return now
            if value != last:
                last, still_since = value, now
            elif now - still_since > 2.0:
                nudges += 1
                send_queued_mail.delay()
                still_since = now
            if now > deadline:
                raise TimeoutError(f"{what}: {value} of {expected} after {TIMEOUT} s")
            time.sleep(0.05)

    with services.celery_worker("send-post-office", concurrency):
        before = sent_count()
        post_office_many(WARMUP, start=10_000_000)
        wait(before + WARMUP, "post_office warm-up")
        before = sent_count()
        nudges = 0
        load = services.load_average()
        cpu: dict[str, int] = {}
        with services.cpu_usage(cpu):
            started = time.monotonic()
            post_office_many(size)
            enqueued = time.monotonic()
            done = wait(before + size, "post_office send")
    elapsed = done - started
    return {
        "seconds": round(elapsed, 2),
        "per_s": round(size / elapsed, 1),
        "enqueue_seconds": round(enqueued - started, 2),
        "nudges": nudges,
        "cpu_percent": cpu,
        "load_before": load,
    }
