"""ESP webhook batches through a real broker and a real Celery worker process.

The webhook request only enqueues (one task per ESP_BATCH_SIZE events, handed off as
chunks fill and when the request ends); the worker applies every event once, however
the batch is resent.
"""

from __future__ import annotations

import math

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notify_tracking import notify
from notify_tracking.models import Delivery, DeliveryEvent
from tests.esp_payloads import NOW, post_sendgrid, sendgrid_event
from tests.integration.conftest import wait_until
from tests.testapp.models import Task

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

APPLY_TIMEOUT = 180
KINDS = ("processed", "delivered", "open", "click")


def test_a_resent_batch_of_1200_events_is_applied_once_by_the_worker(start_worker, client):
    start_worker()
    task = Task.objects.create(title="Release 2.0")
    notify(task, [f"reader{i}@example.com" for i in range(300)], subject="Release", text="Out!")
    wait_until(
        lambda: not Delivery.objects.exclude(status="sent").exists(),
        timeout=APPLY_TIMEOUT,
        what="the 300 deliveries to be sent",
    )
    deliveries = list(Delivery.objects.order_by("pk"))
    events = [
        sendgrid_event(delivery, kind, NOW + step, useragent="Mozilla/5.0 (X11; Linux) Firefox")
        for step, kind in enumerate(KINDS)
        for delivery in deliveries
    ]

    with CaptureQueriesContext(connection) as queries:
        assert post_sendgrid(client, events).status_code == 200
    assert len(queries) <= 2
    assert post_sendgrid(client, events[: math.ceil(len(events) / 3)]).status_code == 200

    def all_applied() -> bool:
        return DeliveryEvent.objects.filter(source="esp").count() >= len(events)

    wait_until(all_applied, timeout=APPLY_TIMEOUT, what=f"the {len(events)} ESP events")
    wait_until(
        lambda: set(Delivery.objects.values_list("status", flat=True)) == {"clicked"},
        timeout=APPLY_TIMEOUT,
        what="every delivery to be clicked",
    )
    assert DeliveryEvent.objects.filter(source="esp").count() == len(events)
