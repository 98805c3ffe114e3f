"""Group commit of pixel loads: concurrent threads share one INSERT, each row is
committed before its caller returns, and a failed group is reported to every caller.

Real threads on the real test database. The first thread's statement is held (an
execute wrapper on its own connection) until the others wait, so that the groups
formed are known.
"""

import datetime as dt
import threading
import time
import uuid

import django
import pytest
from django.db import IntegrityError, close_old_connections, connection, transaction

from notify_tracking.models import PendingOpen
from notify_tracking.tracking import group_commit, pending
from notify_tracking.tracking.group_commit import GroupCommit, GroupNotStored

pytestmark = [
    pytest.mark.skipif(
        connection.vendor == "sqlite" and django.VERSION < (5, 1),
        reason="concurrent writers on SQLite need transaction_mode IMMEDIATE (Django 5.1+): "
        "docs/installation.md#sqlite",
    ),
]

WHEN = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc)


def load(user_agent, token=None):
    """A PendingOpen row's values, prepared for the database as pending._insert does."""
    values = {
        "token": token or uuid.uuid4(),
        "group": False,
        "occurred_at": WHEN,
        "user_agent": user_agent,
        "ip_address": None,
    }
    return [field.get_db_prep_save(values[field.name], connection) for field in pending._fields()]


def writer_counting_statements():
    """A fresh writer of PendingOpens; the list records the rows of each statement."""
    sizes = []

    def statement(rows):
        sizes.append(rows)
        return pending._insert_statement("default", rows)

    return GroupCommit("default", statement), sizes


def insert_concurrently(writer, rows):
    """Insert ``rows[0]`` in a thread whose statement is held until every other row,
    each in a thread of its own, is waiting; return each thread's exception or None."""
    outcomes = [None] * len(rows)
    holding = threading.Event()

    def hold(execute, sql, params, many, context):
        holding.set()
        deadline = time.monotonic() + 30
        while len(writer._waiting.rows) < len(rows) - 1:  # the next group, filling up
            assert time.monotonic() < deadline, "the other threads never waited"
            time.sleep(0.005)
        return execute(sql, params, many, context)

    def run(index):
        try:
            if index == 0:
                with connection.execute_wrapper(hold):
                    writer.insert(rows[index])
            else:
                writer.insert(rows[index])
        except Exception as error:  # each caller's outcome, asserted by the test
            outcomes[index] = error
        finally:
            close_old_connections()

    leader = threading.Thread(target=run, args=(0,))
    leader.start()
    assert holding.wait(30)
    others = [threading.Thread(target=run, args=(index,)) for index in range(1, len(rows))]
    for thread in others:
        thread.start()
    for thread in [leader, *others]:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_threads_that_arrive_while_a_leader_inserts_share_the_next_statement():
    writer, sizes = writer_counting_statements()
    rows = [load(f"agent {n}") for n in range(8)]

    outcomes = insert_concurrently(writer, rows)

    assert outcomes == [None] * 8
    assert sizes == [1, 7]  # the leader alone, then the seven that waited, in one INSERT
    stored = sorted(PendingOpen.objects.values_list("user_agent", flat=True))
    assert stored == [f"agent {n}" for n in range(8)]


@pytest.mark.django_db(transaction=True)
def test_a_lone_caller_inserts_at_once_and_its_row_is_committed_when_it_returns():
    writer, sizes = writer_counting_statements()
    writer.insert(load("alone"))
    assert sizes == [1]
    # Seen from another thread's connection: committed, not pending in a transaction.
    seen = []

    def look():
        seen.extend(PendingOpen.objects.values_list("user_agent", flat=True))
        close_old_connections()

    reader = threading.Thread(target=look)
    reader.start()
    reader.join(timeout=30)
    assert seen == ["alone"]


@pytest.mark.django_db(transaction=True)
def test_a_failed_group_is_an_error_for_each_of_its_callers_and_stores_none_of_it():
    writer, sizes = writer_counting_statements()
    first = PendingOpen.objects.create(
        token=uuid.uuid4(), occurred_at=WHEN, user_agent="already stored"
    )
    bad = load("bad")
    bad[0] = None  # token is NOT NULL: the whole statement of its group fails
    rows = [load("leader"), load("a"), bad, load("b")]

    outcomes = insert_concurrently(writer, rows)

    assert outcomes[0] is None  # the leader's own group (itself) was fine
    for outcome in outcomes[1:]:
        # The thread that led the group sees the database's error; the others are
        # told their group was not stored, with that error as the cause.
        if isinstance(outcome, GroupNotStored):
            outcome = outcome.__cause__
        assert isinstance(outcome, IntegrityError)
    assert sizes == [1, 3]
    stored = sorted(PendingOpen.objects.values_list("user_agent", flat=True))
    assert stored == ["already stored", "leader"]  # nothing recorded before is lost
    assert PendingOpen.objects.filter(pk=first.pk).exists()

    writer.insert(load("after"))  # the writer goes on after a failed group
    assert PendingOpen.objects.filter(user_agent="after").exists()


@pytest.mark.django_db(transaction=True)
def test_a_group_larger_than_one_statement_is_stored_whole_or_not_at_all(monkeypatch):
    monkeypatch.setattr(group_commit, "MAX_ROWS", 2)
    writer, sizes = writer_counting_statements()
    bad = load("bad")
    bad[0] = None
    rows = [load("leader"), load("a"), load("b"), load("c"), bad]

    outcomes = insert_concurrently(writer, rows)

    assert outcomes[0] is None
    assert all(outcome is not None for outcome in outcomes[1:])
    assert sizes == [1, 2, 2]  # the group of four in two statements, the second failed
    assert list(PendingOpen.objects.values_list("user_agent", flat=True)) == ["leader"]

    good = [load("leader 2"), load("d"), load("e"), load("f")]
    sizes.clear()
    assert insert_concurrently(writer, good) == [None] * 4
    assert sizes == [1, 2, 1]
    assert PendingOpen.objects.count() == 5


@pytest.mark.django_db
def test_a_caller_in_a_transaction_inserts_alone_and_rolls_back_with_it():
    writer, sizes = writer_counting_statements()
    with pytest.raises(RuntimeError), transaction.atomic():
        writer.insert(load("in a transaction"))
        assert PendingOpen.objects.filter(user_agent="in a transaction").exists()
        raise RuntimeError("the caller's transaction fails")
    assert sizes == [1]
    assert not PendingOpen.objects.exists()
