"""The sending guarantees, proved with a real Celery worker, broker, database and SMTP server.

Each test starts ``celery -A tests.celery_app worker`` as a separate process group
(see conftest.py) and an aiosmtpd server that records what it accepts. By default
that is SQLite and kombu's filesystem broker; with NOTIFY_TRACKING_TEST_DATABASE_URL
and NOTIFY_TRACKING_TEST_BROKER_URL the same tests run on PostgreSQL and Redis or
RabbitMQ. docs/guarantees.md lists which test proves which promise.

A worker killed with SIGKILL takes the task messages it had fetched with it on the
filesystem broker (which keeps unacknowledged messages in the worker's memory), and
Redis gives them back only after its visibility timeout (an hour by default). So a
killed worker's deliveries come back through ``sweep_stuck``, the documented
mechanism that works on every broker, not through ``acks_late`` redelivery.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter

import pytest
from django.db.models import Count
from django.utils import timezone

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.tasks import send_deliveries, sweep_stuck
from tests.integration.conftest import WORKER_CONCURRENCY, wait_until
from tests.testapp.models import Task

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

#: Generous bounds: a slow CI machine must not fail a correct run.
SEND_TIMEOUT = 180


def notify_many(count: int, per_notification: int = 3) -> list[Task]:
    tasks = []
    for n in range(count):
        task = Task.objects.create(title=f"Task {n}")
        recipients = [f"user{n}-{r}@example.com" for r in range(per_notification)]
        notify(task, recipients, subject=f"Task {n} changed", text=f"Task {n} has a new comment.")
        tasks.append(task)
    return tasks


def nothing_left_to_send() -> bool:
    return not Delivery.objects.filter(status__in=st.SENDABLE).exists()


def sent_events_per_delivery() -> Counter:
    rows = (
        DeliveryEvent.objects.filter(kind=st.SENT)
        .values("delivery")
        .annotate(n=Count("id"))
        .values_list("delivery", "n")
    )
    return Counter(dict(rows))


def duplicates(per_message_id: Counter) -> int:
    return sum(n - 1 for n in per_message_id.values())


def report(capsys, line: str) -> None:
    """Print a measured figure in the test run's output, even when the test passes."""
    with capsys.disabled():
        print(f"\n[worker figures] {line}")


def test_300_deliveries_each_reach_the_smtp_server_exactly_once(start_worker, smtp_server, capsys):
    start_worker()
    started = time.monotonic()
    notify_many(100)
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, what="all 300 deliveries to be sent")
    elapsed = time.monotonic() - started

    deliveries = list(Delivery.objects.all())
    assert len(deliveries) == 300
    assert Counter(d.status for d in deliveries) == {st.SENT: 300}
    assert all(d.sent_at is not None and d.error == "" for d in deliveries)
    # Every message arrived once, under the Message-ID stored on its delivery, for its recipient.
    assert smtp_server.handler.per_message_id() == Counter(d.email_message_id for d in deliveries)
    assert max(smtp_server.handler.per_message_id().values()) == 1
    received = {m.message_id: m.recipients for m in smtp_server.handler.messages}
    assert all(received[d.email_message_id] == (d.recipient,) for d in deliveries)
    assert set(sent_events_per_delivery().values()) == {1}
    report(
        capsys,
        f"throughput: 300 deliveries sent in {elapsed:.1f}s ({300 / elapsed:.0f}/s), "
        f"{WORKER_CONCURRENCY} worker processes, 0 duplicates",
    )


def test_killed_worker_loses_no_delivery_and_duplicates_stay_bounded(
    start_worker, smtp_server, capsys
):
    # ~30 ms per message: 300 messages take several seconds, so the kill lands mid-run.
    smtp_server.handler.delay = 0.03
    timing = {"CLAIM_TIMEOUT": 8, "STUCK_AFTER": 3, "BATCH_SIZE": 10}
    first = start_worker(**timing)
    killed: list[int] = []

    def kill_during_the_60th_send(accepted: int) -> None:
        # Right after the server answered "250" to message 60, before its sender recorded
        # it: the worst moment, that message will be sent again.
        if accepted >= 60 and not killed:
            killed.append(first.kill())

    smtp_server.handler.on_accepted = kill_during_the_60th_send
    started = time.monotonic()
    notify_many(100)
    wait_until(lambda: bool(killed), timeout=SEND_TIMEOUT, what="the kill after 60 messages")
    processes_killed = killed[0]
    pool_processes_killed = processes_killed - 1  # the main process sends nothing itself
    arrived_before_kill = smtp_server.handler.count()
    assert arrived_before_kill < 300, "the kill came too late to test anything: slow the server"
    held_by_the_dead = Delivery.objects.filter(
        status__in=st.SENDABLE, claimed_until__gt=timezone.now()
    ).count()

    second = start_worker(**timing)
    sweeps = 0
    last_sweep = 0.0

    def recovered() -> bool:
        nonlocal sweeps, last_sweep
        if time.monotonic() - last_sweep >= 2:
            sweep_stuck.delay()
            sweeps += 1
            last_sweep = time.monotonic()
        return nothing_left_to_send()

    wait_until(recovered, timeout=SEND_TIMEOUT, interval=0.25, what="the sweep to recover")
    elapsed = time.monotonic() - started

    deliveries = list(Delivery.objects.all())
    assert len(deliveries) == 300
    # Nothing lost: every delivery was sent and its message arrived at least once.
    assert Counter(d.status for d in deliveries) == {st.SENT: 300}
    per_message_id = smtp_server.handler.per_message_id()
    assert set(per_message_id) == {d.email_message_id for d in deliveries}
    # Each send is recorded right after it: only a message in flight when its process
    # died can go out twice, so at most one duplicate per killed pool process.
    assert pool_processes_killed == WORKER_CONCURRENCY
    assert duplicates(per_message_id) <= pool_processes_killed
    assert set(sent_events_per_delivery().values()) == {1}
    swept = sum(int(n) for n in re.findall(r"re-enqueued (\d+) stuck deliveries", second.log()))
    report(
        capsys,
        f"kill: SIGKILL of {processes_killed} processes after {arrived_before_kill}/300 messages, "
        f"{held_by_the_dead} deliveries held by the dead worker's claim; all 300 sent "
        f"{elapsed:.1f}s after the first notify(), {sweeps} sweep calls re-enqueued {swept}; "
        f"{duplicates(per_message_id)} duplicate(s) at the SMTP server "
        f"(bound: {pool_processes_killed})",
    )


def test_temporary_refusal_is_retried_with_backoff_and_a_permanent_one_is_not(
    start_worker, smtp_server, capsys
):
    greylisted, unknown = "greylisted@example.com", "unknown@example.com"
    smtp_server.handler.rules[greylisted] = lambda attempt: (
        "451 4.7.1 Greylisted, try again later" if attempt < 2 else None
    )
    smtp_server.handler.rules[unknown] = lambda attempt: "550 5.1.1 No such user here"
    start_worker(RETRY_BACKOFF=1)
    notify(Task.objects.create(title="Retry"), [greylisted, unknown], subject="Hi", text="Hello.")
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, what="the retries to end")

    retried = Delivery.objects.get(recipient=greylisted)
    assert retried.status == st.SENT
    assert retried.attempts == 3
    assert retried.error == ""
    events = list(retried.events.all())
    assert [e.kind for e in events] == [st.DEFERRED, st.DEFERRED, st.SENT]
    for event in events[:2]:
        assert (
            event.details["error"]
            == "the mail server answered 451 4.7.1 Greylisted, try again later"
        )
    assert [e.details["attempt"] for e in events] == [1, 2, 3]
    # Backoff (RETRY_BACKOFF=1, equal jitter): before attempt 2 wait 0.5-1s, before 3 wait 1-2s.
    first, second, third = smtp_server.handler.rcpt_times[greylisted]
    assert 0.5 <= second - first <= 1 + 5
    assert 1.0 <= third - second <= 2 + 5
    assert smtp_server.handler.per_message_id()[retried.email_message_id] == 1

    refused = Delivery.objects.get(recipient=unknown)
    assert refused.status == st.REJECTED
    assert refused.error == "the mail server answered 550 5.1.1 No such user here"
    assert refused.failed_at is not None
    assert [e.kind for e in refused.events.all()] == [st.REJECTED]
    assert len(smtp_server.handler.rcpt_times[unknown]) == 1  # never retried
    assert refused.email_message_id not in smtp_server.handler.per_message_id()
    report(
        capsys,
        f"retry: 451 twice then sent; waits {second - first:.2f}s and {third - second:.2f}s; "
        "550 rejected at once",
    )


def test_a_delivery_always_refused_ends_failed_after_max_attempts(start_worker, smtp_server):
    address = "full-mailbox@example.com"
    smtp_server.handler.rules[address] = lambda attempt: "452 4.2.2 Mailbox full"
    start_worker(RETRY_BACKOFF=1)
    notify(Task.objects.create(title="Give up"), [address], subject="Hi", text="Hello.")
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, what="the delivery to give up")

    delivery = Delivery.objects.get()
    assert delivery.status == st.FAILED
    assert delivery.attempts == 5  # MAX_ATTEMPTS
    assert (
        delivery.error
        == "the mail server answered 452 4.2.2 Mailbox full (gave up after 5 attempts)"
    )
    assert [e.kind for e in delivery.events.all()] == [st.DEFERRED] * 4 + [st.FAILED]
    times = smtp_server.handler.rcpt_times[address]
    assert len(times) == 5
    waits = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Each wait is at least half the doubled backoff: 0.5, 1, 2, 4 seconds.
    for attempt, wait in enumerate(waits, 1):
        assert 2 ** (attempt - 1) / 2 <= wait <= 2 ** (attempt - 1) + 5, waits


def test_duplicate_tasks_on_two_workers_send_each_delivery_once(
    start_worker, smtp_server, settings, capsys
):
    """The claim: four processes handed the same deliveries at once send each one once."""
    smtp_server.handler.delay = 0.02
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BATCH_SIZE": 5}
    task = Task.objects.create(title="Crowded")
    notify(task, [f"member{n}@example.com" for n in range(60)], subject="Hi", text="Hello.")
    ids = list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
    copies = 2 * WORKER_CONCURRENCY
    for start in range(0, len(ids), 5):
        for _ in range(copies):  # consecutive copies: one per worker process at the same time
            send_deliveries.delay(ids[start : start + 5])
    start_worker()
    start_worker()
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, what="all deliveries to be sent")

    deliveries = list(Delivery.objects.all())
    assert Counter(d.status for d in deliveries) == {st.SENT: 60}
    per_message_id = smtp_server.handler.per_message_id()
    assert per_message_id == Counter(d.email_message_id for d in deliveries)
    assert duplicates(per_message_id) == 0
    assert set(sent_events_per_delivery().values()) == {1}
    report(
        capsys,
        f"claim: 60 deliveries, each in {copies + 1} tasks over "
        f"{2 * WORKER_CONCURRENCY} processes: 0 duplicates",
    )


def test_a_batch_slower_than_its_claim_is_not_sent_twice(start_worker, smtp_server, capsys):
    """The claim must hold while a worker still works through its batch, however long."""
    smtp_server.handler.delay = 0.25  # 16 messages: 4 seconds for one batch
    start_worker(CLAIM_TIMEOUT=2, STUCK_AFTER=1)
    notify(
        Task.objects.create(title="Slow"),
        [f"slow{n}@example.com" for n in range(16)],
        subject="Hi",
        text="Hello.",
    )
    wait_until(lambda: smtp_server.handler.count() >= 1, timeout=SEND_TIMEOUT, what="a message")
    time.sleep(2.5)  # the batch's claim (2 s) has expired; its tail is still unsent
    sweep_stuck.delay()
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, what="all deliveries to be sent")
    time.sleep(2)  # let both processes finish what they were sending

    per_message_id = smtp_server.handler.per_message_id()
    report(capsys, f"long batch: {duplicates(per_message_id)} duplicate(s) among 16 messages")
    assert set(per_message_id) == set(Delivery.objects.values_list("email_message_id", flat=True))
    assert duplicates(per_message_id) == 0
    assert set(sent_events_per_delivery().values()) == {1}
