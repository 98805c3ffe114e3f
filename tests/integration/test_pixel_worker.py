"""Pixel loads through a real broker and a real Celery worker process.

The pixel request only inserts a PendingOpen and nudges the task (at most one nudge per
second per cache); the worker applies every open once, including those that arrive
while it is applying others.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from notify_tracking import notify
from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.tracking import pending, tokens
from tests.integration.conftest import wait_until
from tests.testapp.models import Task

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TIMEOUT = 120
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"
HTML = "<html><body><p>Your task moved.</p></body></html>"


def test_every_load_is_applied_once_by_the_worker(start_worker, client):
    start_worker()
    task = Task.objects.create(title="Release 2.0")
    notify(task, [f"reader{i}@example.com" for i in range(40)], text="Out!", html=HTML)
    wait_until(
        lambda: not Delivery.objects.exclude(status="sent").exists(),
        timeout=TIMEOUT,
        what="the 40 deliveries to be sent",
    )
    # As if sent an hour ago: no load looks like a scanner's, right after sending.
    Delivery.objects.update(sent_at=timezone.now() - dt.timedelta(hours=1))
    urls = [
        reverse("notify_tracking:open", kwargs={"token": tokens.sign_open(token)})
        for token in Delivery.objects.order_by("pk").values_list("token", flat=True)
    ]

    for url in urls:  # the first round: each request inserts, the first one nudges
        assert client.get(url, HTTP_USER_AGENT=BROWSER_UA).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        for url in urls:  # a second round, while the worker may be applying the first
            assert client.get(url, HTTP_USER_AGENT=BROWSER_UA).status_code == 200
    assert len(queries) == len(urls)  # one INSERT per load, nothing else

    wait_until(
        lambda: (
            pending.waiting() == 0
            and DeliveryEvent.objects.filter(kind="opened").count() == 2 * len(urls)
        ),
        timeout=TIMEOUT,
        what="the worker to apply the 80 opens",
    )
    counts = set(Delivery.objects.values_list("status", "open_count", "machine_open_count"))
    assert counts == {("opened", 2, 0)}
