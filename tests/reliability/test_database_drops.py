"""The worker's database connections are dropped while it sends (PostgreSQL).

``pg_terminate_backend`` ends every connection of the worker's processes to the test
database:

- in the SMTP server, before it answers "250" to every ``EVERY``-th message: the worker
  is waiting for that answer and must then record a send on a dead connection. The
  result is recorded again on a fresh one (``sending._record_persistently``): nothing
  is lost, nothing sent twice, nothing marked sent without its ``sent`` event.
- at random moments, from a thread: in the middle of a claim, a claim renewal, the
  building of a message, a record or a release. A task that fails leaves its
  deliveries to the sweep. A connection dropped while a message is being *built*
  (before anything was sent) currently makes that delivery ``failed`` for good: see
  tests/test_reliability_sending.py (an expected failure until channels/base.py
  treats a database error there as temporary). This test counts those deliveries and
  requires every other one to be sent.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

import psycopg
import pytest
from django.db import connection
from django.db.models import Count

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.tasks import sweep_stuck
from tests.integration.conftest import wait_until
from tests.reliability.conftest import duplicates, nothing_left_to_send, requires_postgresql
from tests.testapp.models import Task

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    requires_postgresql,
]

DELIVERIES = 200
EVERY = 10
TIMEOUT = 240
TIMING = {"CLAIM_TIMEOUT": 4, "STUCK_AFTER": 3, "BATCH_SIZE": 10}
DB_ERRORS = ("OperationalError", "InterfaceError")


class Terminator:
    """Ends the connections of every other client of the test database."""

    def __init__(self) -> None:
        config = connection.settings_dict
        self.database = config["NAME"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.spared = cursor.fetchone()[0]  # this test's own connection
        self.admin = psycopg.connect(
            dbname="postgres",
            user=config["USER"] or None,
            password=config["PASSWORD"] or None,
            host=config["HOST"] or None,
            port=config["PORT"] or None,
            autocommit=True,
        )
        self.lock = threading.Lock()
        self.ended = 0

    def __call__(self) -> int:
        with self.lock:
            rows = self.admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s AND backend_type = 'client backend'",
                (self.database, self.spared),
            ).fetchall()
            ended = sum(1 for (done,) in rows if done)
            self.ended += ended
            return ended

    def close(self) -> None:
        self.admin.close()


@dataclass
class Run:
    seconds: float
    log: str
    deliveries: list[Delivery]
    per_message_id: Counter


def send_while_dropping(workers, smtp, drops, *, concurrency: int) -> Run:
    """Send DELIVERIES while ``drops`` (started, stopped with an Event) drops connections."""
    smtp.handler.delay = 0.02
    worker = workers(smtp_port=smtp.port, concurrency=concurrency, **TIMING)
    started = time.monotonic()
    with drops():
        for start in range(0, DELIVERIES, 10):
            task = Task.objects.create(title=f"Task {start}")
            notify(task, [f"r{start + n}@example.com" for n in range(10)], text="Changed.")
        last_sweep = 0.0

        def settled() -> bool:
            nonlocal last_sweep
            if time.monotonic() - last_sweep >= 2:
                sweep_stuck.delay()
                last_sweep = time.monotonic()
            return nothing_left_to_send()

        wait_until(settled, timeout=TIMEOUT, interval=0.25, what="every delivery to settle")
    elapsed = time.monotonic() - started
    time.sleep(1)
    return Run(elapsed, worker.log(), list(Delivery.objects.all()), smtp.handler.per_message_id())


def sent_events_per_delivery() -> Counter:
    return Counter(
        DeliveryEvent.objects.filter(kind=st.SENT)
        .values("delivery")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )


def test_connections_dropped_while_a_message_awaits_its_250(workers, smtp, figures):
    terminate = Terminator()
    dropped: list[int] = []

    def while_sending(number: int) -> None:
        if number % EVERY == 0:
            dropped.append(terminate())

    @contextlib.contextmanager
    def drops():
        smtp.handler.before_accept = while_sending
        try:
            yield
        finally:
            smtp.handler.before_accept = None
            terminate.close()

    run = send_while_dropping(workers, smtp, drops, concurrency=1)
    recorded_again = run.log.count("database error recording delivery")
    found = duplicates(run.per_message_id)
    figures(
        "database drops while awaiting 250",
        f"{sum(dropped)} connections terminated while a message awaited its 250, during "
        f"{DELIVERIES} deliveries: {recorded_again} results recorded again on a fresh "
        f"connection; 0 lost, {found} duplicate(s), all sent in {run.seconds:.0f}s",
        terminated=sum(dropped),
        recorded_again=recorded_again,
        duplicates=found,
    )
    assert sum(dropped) >= DELIVERIES // EVERY - 1  # the worker's connection, each time
    assert recorded_again >= sum(dropped) - 1
    assert Counter(d.status for d in run.deliveries) == {st.SENT: DELIVERIES}
    assert run.per_message_id == Counter(d.email_message_id for d in run.deliveries)
    assert found == 0
    assert all(d.sent_at is not None for d in run.deliveries)
    assert sent_events_per_delivery() == {1: DELIVERIES}


def test_connections_dropped_at_random_moments(workers, smtp, figures):
    terminate = Terminator()
    dropped: list[int] = []

    @contextlib.contextmanager
    def drops():
        stop = threading.Event()

        def drop_at_random() -> None:
            rng = random.Random()
            while not stop.wait(rng.uniform(0.1, 0.6)):
                dropped.append(terminate())

        dropper = threading.Thread(target=drop_at_random, daemon=True)
        dropper.start()
        try:
            yield
        finally:
            stop.set()
            dropper.join(timeout=10)
            terminate.close()

    run = send_while_dropping(workers, smtp, drops, concurrency=2)
    recorded_again = run.log.count("database error recording delivery")
    unrecorded = run.log.count("could not record that delivery")
    failed_tasks = len(re.findall(r"Task notify_tracking\.\w+\[[^\]]+\] raised", run.log))
    # The known bug (tests/test_reliability_sending.py): a drop while a message was built.
    built_on_a_dead_connection = [
        d for d in run.deliveries if d.status == st.FAILED and d.error.startswith(DB_ERRORS)
    ]
    found = duplicates(run.per_message_id)
    figures(
        "database drops at random moments",
        f"{sum(dropped)} connections terminated at random moments during {DELIVERIES} "
        f"deliveries: {recorded_again} results recorded again, {unrecorded} unrecordable, "
        f"{failed_tasks} tasks failed and were swept; {found} duplicate(s); "
        f"{len(built_on_a_dead_connection)} deliveries wrongly failed (connection dropped "
        f"while their message was built: known bug); the rest sent in {run.seconds:.0f}s",
        terminated=sum(dropped),
        wrongly_failed=len(built_on_a_dead_connection),
        duplicates=found,
    )
    assert sum(dropped) > 10
    others = [d for d in run.deliveries if d not in built_on_a_dead_connection]
    assert Counter(d.status for d in others) == {st.SENT: len(others)}
    assert set(run.per_message_id) == {d.email_message_id for d in others}
    assert all(d.sent_at is not None for d in others)
    assert sent_events_per_delivery() == {1: len(others)}
    # A message goes out twice only when its result could not be recorded at all.
    assert found <= unrecorded
