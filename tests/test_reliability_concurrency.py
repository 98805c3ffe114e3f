"""Events for one delivery from every entry point at once: no update lost, none doubled.

Seven threads start together (a barrier) and each sends a stream of events for the
same delivery through one entry point: pixel loads, clicks on a tracked link, ESP
opens through anymail's signal, the same ESP opens again (a provider resending its
webhook while the first is applied), delivery reports (each twice), and read
receipts. Every count must come out exact: ``record_event`` locks the delivery's row,
so concurrent events serialize, and a provider event seen twice at the same moment is
still stored once. Runs on SQLite too (``transaction_mode`` IMMEDIATE, Django 5.1+);
the CI run on PostgreSQL is the one that matters (row locks, READ COMMITTED).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import django
import pytest
from anymail.signals import tracking
from django.db import close_old_connections, connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.reports import ingest_bytes
from notify_tracking.tracking import tokens
from tests.reliability.events import BROWSER, LINKS, dsn, esp_event, mdn, sent_delivery
from tests.reliability.figures import emit

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor == "sqlite" and django.VERSION < (5, 1),
        reason="concurrent writers on SQLite need transaction_mode IMMEDIATE (Django 5.1+)",
    ),
]

EACH = 12  # events per thread
READ_BY_A_PERSON = "manual-action/MDN-sent-manually; displayed"


def test_concurrent_events_from_every_entry_point_are_all_counted_once(task, capsys):
    delivery = sent_delivery(task, timezone.now() - dt.timedelta(hours=1))
    # (notify() committed: its send ran too, eagerly. One "sent" event or two.)
    sends = DeliveryEvent.objects.filter(delivery=delivery, source="channel").count()
    base = timezone.now() - dt.timedelta(minutes=30)
    pixel = reverse("notify_tracking:open", args=[tokens.sign_open(delivery.token)])
    link = reverse("notify_tracking:click", args=[tokens.sign_click(delivery.token, LINKS[0])])

    def at(n: int) -> dt.datetime:
        return base + dt.timedelta(seconds=n)

    def pixel_loads() -> None:
        client = Client()
        for _ in range(EACH):
            assert client.get(pixel, HTTP_USER_AGENT=BROWSER).status_code == 200

    def clicks() -> None:
        client = Client()
        for _ in range(EACH):
            assert client.get(link, HTTP_USER_AGENT=BROWSER).status_code == 302

    def esp_opens() -> None:
        for n in range(EACH):
            event = esp_event(delivery, "opened", at(n), n)
            tracking.send(sender=object, event=event, esp_name="Postmark")

    def delivery_reports() -> None:
        for n in range(EACH):
            report = dsn(delivery, "delivered", at(100 + n), n)
            ingest_bytes(report)
            ingest_bytes(report)  # the MTA sent it twice

    def read_receipts() -> None:
        for n in range(EACH):
            ingest_bytes(
                mdn(delivery, "manual-action/MDN-sent-manually; displayed", at(200 + n), n)
            )

    streams = [pixel_loads, clicks, esp_opens, esp_opens, delivery_reports, read_receipts]
    errors: list[BaseException] = []
    start = threading.Barrier(len(streams))

    def run(stream) -> None:
        try:
            start.wait()
            stream()
        except BaseException as error:  # collected and asserted below
            errors.append(error)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=run, args=(stream,)) for stream in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)

    assert errors == []
    stored = Delivery.objects.get(pk=delivery.pk)
    by_source = Counter(
        DeliveryEvent.objects.filter(delivery=delivery).values_list("source", flat=True)
    )
    assert by_source == {
        "channel": sends,
        "pixel": EACH,
        "click": EACH,
        "esp": EACH,  # sent twice at once, stored once
        "dsn": EACH,  # each report ingested twice, stored once
        "mdn": EACH,
    }
    assert stored.open_count == EACH * 3  # pixel, ESP and read receipts
    assert stored.click_count == EACH
    assert (stored.machine_open_count, stored.machine_click_count) == (0, 0)
    assert stored.status == "clicked"
    emit(
        capsys,
        "concurrency",
        "concurrent events",
        f"{len(streams)} threads, {EACH * 7} events at once for one delivery through 5 entry "
        f"points ({connection.vendor}): every open and click counted, every resent provider "
        "event stored once",
    )
