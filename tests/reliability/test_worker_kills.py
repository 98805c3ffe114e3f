"""Workers SIGKILLed at random moments while 2,000 deliveries are sent: none is lost, and
the duplicates stay within one per killed pool process.

Notifications are created as the sending goes (a backlog of at most ``BACKLOG``
deliveries), as a busy tracker would. Ten times, at a random count of messages received
by the SMTP server and a random few milliseconds later, a worker is killed:

- ``group``: the whole process group (the main process and its pool), as a crash or a
  container stop would; a new worker is started at once;
- ``child``: one pool process, as the OOM killer would; Celery's main process starts a
  new one.

``notify_tracking.sweep_stuck`` runs every ``SWEEP_EVERY`` seconds, as beat would run
it. Each killed pool process can leave at most the one message it was sending sent but
unrecorded, so duplicates <= pool processes killed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest
from django.db.models import Count

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.tasks import sweep_stuck
from tests.reliability.conftest import duplicates, nothing_left_to_send
from tests.testapp.models import Task

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

DELIVERIES = 2000
PER_NOTIFICATION = 10
KILLS = 10
BACKLOG = 300
SWEEP_EVERY = 2.0
CONCURRENCY = 2
TIMEOUT = 420
TIMING = {"CLAIM_TIMEOUT": 4, "STUCK_AFTER": 4, "BATCH_SIZE": 10}


def test_random_sigkills_lose_no_delivery_and_duplicates_stay_bounded(workers, smtp, figures):
    seed = int(os.environ.get("NOTIFY_TRACKING_TEST_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    smtp.handler.delay = 0.005
    worker = workers(smtp_port=smtp.port, concurrency=CONCURRENCY, **TIMING)
    thresholds = sorted(rng.sample(range(100, DELIVERIES - 150), KILLS))
    kills: list[dict] = []
    created = 0
    last_sweep = 0.0
    sweeps = 0
    started = time.monotonic()

    while created < DELIVERIES or not nothing_left_to_send():
        assert time.monotonic() - started < TIMEOUT, (
            f"not done after {TIMEOUT}s: {smtp.handler.summary()}, kills {kills}, seed {seed}"
        )
        received = smtp.handler.count()
        while created < DELIVERIES and created - received < BACKLOG:
            task = Task.objects.create(title=f"Task {created}")
            recipients = [f"r{created + n}@example.com" for n in range(PER_NOTIFICATION)]
            notify(task, recipients, subject=f"Task {created}", text="Something happened.")
            created += PER_NOTIFICATION
        if time.monotonic() - last_sweep >= SWEEP_EVERY:
            sweep_stuck.delay()
            sweeps += 1
            last_sweep = time.monotonic()
        if len(kills) < KILLS and received >= thresholds[len(kills)]:
            time.sleep(rng.uniform(0, 0.02))
            pool = worker.pool_pids()
            if rng.random() < 0.5 or not pool:
                processes = worker.kill()
                kills.append({"mode": "group", "at": smtp.handler.count(), "pool": processes - 1})
                worker = workers(smtp_port=smtp.port, concurrency=CONCURRENCY, **TIMING)
            else:
                os.kill(rng.choice(pool), signal.SIGKILL)
                kills.append({"mode": "child", "at": smtp.handler.count(), "pool": 1})
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    time.sleep(1)  # anything still in flight would show up as an extra message

    deliveries = list(Delivery.objects.all())
    per_message_id = smtp.handler.per_message_id()
    pool_killed = sum(kill["pool"] for kill in kills)
    found = duplicates(per_message_id)
    modes = Counter(kill["mode"] for kill in kills)
    figures(
        "worker kills",
        f"{len(kills)} SIGKILLs ({modes['group']} of a whole worker, {modes['child']} of one "
        f"pool process; {pool_killed} pool processes killed) during {DELIVERIES} deliveries: "
        f"0 lost, {found} duplicate(s) (bound {pool_killed}), all sent in {elapsed:.0f}s, "
        f"{sweeps} sweeps; seed {seed}",
        kills=len(kills),
        pool_processes_killed=pool_killed,
        duplicates=found,
        seconds=round(elapsed, 1),
        seed=seed,
    )
    assert len(kills) == KILLS
    assert len(deliveries) == DELIVERIES
    # None lost: every delivery is sent, and its message reached the server.
    assert Counter(d.status for d in deliveries) == {st.SENT: DELIVERIES}
    assert set(per_message_id) == {d.email_message_id for d in deliveries}
    assert found <= pool_killed, (kills, seed)
    # However often it went out, each delivery was recorded sent once.
    sent_events = (
        DeliveryEvent.objects.filter(kind=st.SENT)
        .values("delivery")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )
    assert Counter(sent_events) == {1: DELIVERIES}
