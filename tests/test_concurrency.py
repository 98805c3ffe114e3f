"""Concurrent events for one delivery lose no update (threads, real database)."""

import threading

import django
import pytest
from django.db import close_old_connections, connection

from notify_tracking import notify, record_event
from notify_tracking.models import Delivery, DeliveryEvent

THREADS = 6
OPENS_PER_THREAD = 15


@pytest.mark.skipif(
    connection.vendor == "sqlite" and django.VERSION < (5, 1),
    reason="concurrent writers on SQLite need transaction_mode IMMEDIATE (Django 5.1+): "
    "docs/installation.md#sqlite",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_are_all_counted(task):
    delivery = notify(task, ["bob@example.com"], text="T").deliveries.get()
    errors = []
    start = threading.Barrier(THREADS)

    def open_many(n):
        try:
            start.wait()
            for i in range(OPENS_PER_THREAD):
                record_event(delivery.pk, "opened", source="pixel", user_agent=f"t{n}-{i}")
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=open_many, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    stored = Delivery.objects.get(pk=delivery.pk)
    total = THREADS * OPENS_PER_THREAD
    assert DeliveryEvent.objects.filter(delivery=delivery, kind="opened").count() == total
    assert (stored.status, stored.open_count) == ("opened", total)
