"""The broker stops for 30 seconds while deliveries are being sent, then comes back empty.

A redis-server of the test's own (never the machine's shared one) is the broker of the
worker and of this process. It is stopped while the worker is sending; it keeps nothing
on disk, so every task message it held (queued, or fetched and not yet acknowledged) is
lost. Meanwhile ``notify()`` is called again: it must return as usual (the enqueue error
is logged, the deliveries stay queued); and an ESP webhook event arrives: it is applied in
the web process instead of a task. When the broker is back, the worker reconnects,
the sweep (called every few seconds, as beat would) enqueues what was lost, and every
delivery is sent.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest
from anymail.signals import tracking
from django.utils import timezone

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.models import Delivery
from notify_tracking.tasks import sweep_stuck
from tests.integration.conftest import wait_until
from tests.reliability.conftest import duplicates, nothing_left_to_send
from tests.reliability.events import esp_event
from tests.testapp.models import Task

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

OUTAGE = 30.0
BEFORE = 200  # deliveries notified before the outage
DURING = 100  # deliveries notified while the broker is down
SWEEP_EVERY = 2.0
TIMEOUT = 240
TIMING = {"CLAIM_TIMEOUT": 5, "STUCK_AFTER": 3, "BATCH_SIZE": 10}


def notify_tasks(first: int, count: int) -> list[float]:
    """Notify ``count`` deliveries, 10 per task; return how long each notify() took."""
    durations = []
    for start in range(first, first + count, 10):
        task = Task.objects.create(title=f"Task {start}")
        began = time.monotonic()
        notify(task, [f"r{start + n}@example.com" for n in range(10)], text="Changed.")
        durations.append(time.monotonic() - began)
    return durations


def test_a_broker_outage_loses_nothing_and_notify_never_raises(
    workers, smtp, own_redis, use_broker, figures, caplog
):
    use_broker(own_redis.url)
    smtp.handler.delay = 0.05  # 200 messages take several seconds: the outage lands mid-run
    workers(smtp_port=smtp.port, broker_url=own_redis.url, **TIMING)
    notify_tasks(0, BEFORE)
    wait_until(lambda: smtp.handler.count() >= 40, timeout=120, what="the first 40 messages")

    own_redis.stop()
    stopped = time.monotonic()
    at_stop = smtp.handler.count()
    with caplog.at_level(logging.ERROR, logger="notify_tracking.tasks"):
        durations = notify_tasks(BEFORE, DURING)  # must not raise
    enqueue_errors = caplog.text.count("could not enqueue")
    # A provider's webhook meanwhile: its events are applied in the web process instead.
    reported = Delivery.objects.filter(status=st.SENT).first()
    event = esp_event(reported, "delivered", timezone.now(), 1)
    tracking.send(sender=object, event=event, esp_name="Postmark")
    applied_here = reported.events.filter(source="esp", kind=st.DELIVERED).exists()
    failed_sweeps = 0
    while time.monotonic() - stopped < OUTAGE:
        try:
            sweep_stuck.delay()  # as beat would: its failure is its own, not the app's
        except Exception:
            failed_sweeps += 1
        time.sleep(SWEEP_EVERY)
    during_outage = smtp.handler.count() - at_stop
    own_redis.start()
    restarted = time.monotonic()

    last_sweep = 0.0

    def all_sent() -> bool:
        nonlocal last_sweep
        if time.monotonic() - last_sweep >= SWEEP_EVERY:
            sweep_stuck.delay()
            last_sweep = time.monotonic()
        return nothing_left_to_send()

    wait_until(all_sent, timeout=TIMEOUT, interval=0.25, what="every delivery after the outage")
    recovered_in = time.monotonic() - restarted
    time.sleep(1)

    deliveries = list(Delivery.objects.all())
    per_message_id = smtp.handler.per_message_id()
    found = duplicates(per_message_id)
    figures(
        "broker outage",
        f"redis stopped {OUTAGE:.0f}s after {at_stop} of {BEFORE + DURING} messages; "
        f"{during_outage} more sent from tasks already fetched; notify() during the outage "
        f"returned in at most {max(durations):.2f}s ({enqueue_errors} enqueue errors logged, "
        f"none raised), an ESP event was applied in process; all {BEFORE + DURING} sent "
        f"{recovered_in:.1f}s after the broker returned; {found} duplicate(s)",
        notify_max_seconds=round(max(durations), 2),
        recovered_seconds=round(recovered_in, 1),
        duplicates=found,
    )
    assert len(deliveries) == BEFORE + DURING
    # All sent (and the one the provider said was delivered, delivered).
    assert Counter(d.status for d in deliveries) == {st.SENT: BEFORE + DURING - 1, st.DELIVERED: 1}
    assert set(per_message_id) == {d.email_message_id for d in deliveries}
    assert enqueue_errors == DURING // 10  # each notify() logged its enqueue failure
    assert failed_sweeps > 0  # the broker really was unreachable
    assert applied_here
    assert found == 0  # the worker kept its database; nothing was sent unrecorded
