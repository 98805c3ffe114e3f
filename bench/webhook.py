"""Webhook ingestion: anymail SendGrid tracking POSTs of 1,000 events each.

1. Queries per POST, in-process (Django's test client and CaptureQueriesContext):
   a POST of 10 events and one of 1,000. The request only buffers the events and hands
   them to Celery: the count must not grow with the events.
2. Events per second end to end: ``POSTS`` POSTs of ``EVENTS_PER_POST`` events to
   gunicorn, one after the other, applied by a Celery worker; the clock stops when
   every event is a DeliveryEvent row.
3. The baseline: a raw ``bulk_create`` of as many DeliveryEvent rows (no matching, no
   dedup, no status rule), in one transaction, in-process.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import urllib.request
from typing import Any

from . import fixtures, profiling, services
from .common import announce, median_ms, ratio, wait_for_count
from .send import statements

EVENTS_PER_POST = 1000
POSTS = 10
KINDS = ("processed", "delivered", "open", "click", "open")
AUTH = "Basic " + base64.b64encode(b"bench:bench").decode()
TIMEOUT = 600


def run() -> dict[str, Any]:
    total = EVENTS_PER_POST * POSTS
    per_kind = total // len(KINDS)
    queries = _queries_per_post()

    deliveries = fixtures.sent_deliveries(per_kind, start=60_000_000)
    bodies = [
        json.dumps(chunk).encode()
        for chunk in _chunks(_events(deliveries, total, "sg"), EVENTS_PER_POST)
    ]
    ids = [delivery.pk for delivery in deliveries]
    fixtures.drop_queued_tasks()
    cpu: dict[str, int] = {}
    with (
        services.celery_worker("webhook", 2) as worker,
        services.gunicorn(2, 4) as (port, web_workers),
    ):
        load = services.load_average()
        pids = services.children(worker.pid) + web_workers
        with profiling.sampling("webhook", pids), services.cpu_usage(cpu):
            started = time.monotonic()
            latencies = []
            for body in bodies:
                before = time.monotonic()
                status = _post(port, body)
                latencies.append(time.monotonic() - before)
                if status != 200:
                    raise RuntimeError(f"webhook POST answered {status}")
            posted = time.monotonic()
            done = wait_for_count(lambda: _esp_events(ids), total, TIMEOUT, "webhook events")
    elapsed = done - started

    raw = _bulk_create_baseline(total)
    applied = _queries_per_event()
    figures = {
        "events": total,
        "events_per_post": EVENTS_PER_POST,
        "app_events_per_s": round(total / elapsed, 1),
        "bulk_create_events_per_s": raw["per_s"],
        "ratio_vs_bulk_create": ratio(total / elapsed, raw["per_s"]),
        "queries_per_post_10": queries["10"]["queries"],
        "queries_per_post_1000": queries["1000"]["queries"],
        "post_median_ms": median_ms(latencies),
        "seconds": round(elapsed, 2),
        "post_seconds": round(posted - started, 2),
        "queries": queries,
        "worker_statements": applied,
        "bulk_create": raw,
        "cpu_percent": cpu,
        "load_before": load,
        "statuses": _statuses(ids),
    }
    announce(
        "webhook",
        {
            "events/s": figures["app_events_per_s"],
            "bulk_create/s": raw["per_s"],
            "ratio": figures["ratio_vs_bulk_create"],
            "queries_per_post(10/1000)": f"{queries['10']['queries']}/{queries['1000']['queries']}",
            "post_median_ms": figures["post_median_ms"],
        },
    )
    return figures


def _events(deliveries: list, count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` distinct SendGrid events over the deliveries, each delivery's in order:
    processed, delivered, open, click, open (shaped like tests/esp_payloads.py)."""
    base = int(time.time()) - 1800
    events = []
    for index in range(count):
        delivery = deliveries[index % len(deliveries)]
        step = index // len(deliveries)
        kind = KINDS[step % len(KINDS)]
        event = {
            "email": delivery.recipient,
            "timestamp": base + 60 * step,
            "event": kind,
            "sg_event_id": f"{prefix}-{index}",
            "sg_message_id": f"sgmsg.{delivery.message_id}",
            "anymail_id": delivery.message_id,
            "notify_tracking_delivery": str(delivery.token),
        }
        if kind in ("open", "click"):
            event["useragent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Thunderbird/128.5"
            event["ip"] = "192.0.2.10"
        if kind == "click":
            event["url"] = "https://tracker.example.com/tasks/1/"
        events.append(event)
    return events


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/anymail/sendgrid/tracking/",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": AUTH},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        return response.status


def _esp_events(delivery_ids: list[int]) -> int:
    from notify_tracking.models import DeliveryEvent

    return DeliveryEvent.objects.filter(delivery_id__in=delivery_ids, source="esp").count()


def _statuses(delivery_ids: list[int]) -> dict[str, int]:
    from django.db.models import Count

    from notify_tracking.models import Delivery

    rows = Delivery.objects.filter(pk__in=delivery_ids).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def _queries_per_post() -> dict[str, Any]:
    """Queries run by the request itself for a POST of 10 and of 1,000 events."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    deliveries = fixtures.sent_deliveries(200, start=70_000_000)
    client = Client()
    found = {}
    for count in (10, 1000):
        body = json.dumps(_events(deliveries, count, f"q{count}"))
        with CaptureQueriesContext(connection) as queries:
            response = client.post(
                "/anymail/sendgrid/tracking/",
                data=body,
                content_type="application/json",
                HTTP_AUTHORIZATION=AUTH,
            )
        if response.status_code != 200:
            raise RuntimeError(f"webhook POST answered {response.status_code}")
        found[str(count)] = {
            "queries": len(queries),
            "statements": statements(queries.captured_queries),
        }
    fixtures.drop_queued_tasks()  # their events are not part of the timed run
    return found


def _queries_per_event(count: int = 100) -> dict[str, Any]:
    """The statements the worker's task runs for a chunk of ``count`` events, in-process
    (one each of processed, delivered, open, click, open per delivery)."""
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from notify_tracking.esp.apply import apply_events
    from notify_tracking.esp.mapping import normalize

    deliveries = fixtures.sent_deliveries(count // len(KINDS), start=85_000_000)
    raw = _events(deliveries, count, "stmt")

    class Request:  # what anymail's view parses: the body of the POST
        body = json.dumps(raw).encode()

    # What the request hands to the task: anymail's parsed events, normalized.
    parsed = SendGridTrackingWebhookView().parse_events(Request())
    queued = [normalize(event, "SendGrid") for event in parsed]
    with CaptureQueriesContext(connection) as queries:
        counts = apply_events([event for event in queued if event is not None])
    return {
        "events": count,
        "applied": counts,
        "queries": len(queries),
        "per_event": round(len(queries) / count, 2),
        "statements": statements(queries.captured_queries),
    }


def _bulk_create_baseline(count: int) -> dict[str, Any]:
    from django.db import transaction
    from django.utils import timezone

    from notify_tracking.models import DeliveryEvent

    deliveries = fixtures.sent_deliveries(count // len(KINDS), start=80_000_000)
    at = timezone.now() - dt.timedelta(minutes=30)
    started = time.monotonic()
    rows = [
        DeliveryEvent(
            delivery_id=deliveries[index % len(deliveries)].pk,
            kind=("sent", "delivered", "opened", "clicked", "opened")[index % 5],
            occurred_at=at + dt.timedelta(seconds=index),
            source="esp",
            provider_event_id=f"raw-{index}",
            user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Thunderbird/128.5",
            details={"esp": "SendGrid", "event_type": "opened"},
        )
        for index in range(count)
    ]
    with transaction.atomic():
        DeliveryEvent.objects.bulk_create(rows, batch_size=1000)
    elapsed = time.monotonic() - started
    return {"seconds": round(elapsed, 3), "per_s": round(count / elapsed, 1)}
