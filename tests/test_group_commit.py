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
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction

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


class Threads:
    """Callers of one writer, each in a thread of its own, started in a known order:
    the first leads a group of its own and its statement is held (an execute wrapper
    on its connection) until ``release()``; each next one is started once the one
    before it is waiting, so the groups formed are known."""

    def __init__(self, writer):
        self.writer = writer
        self.outcomes = {}
        self.threads = []
        self.holding = threading.Event()
        self.released = threading.Event()

    def _run(self, index, row, hold):
        try:
            if hold:
                with connection.execute_wrapper(self._hold):
                    self.writer.insert(row)
            else:
                self.writer.insert(row)
            self.outcomes[index] = None
        except Exception as error:  # each caller's outcome, asserted by the tests
            self.outcomes[index] = error
        finally:
            close_old_connections()

    def _hold(self, execute, sql, params, many, context):
        self.holding.set()
        assert self.released.wait(30), "never released"
        return execute(sql, params, many, context)

    def start(self, rows, *, hold_first=True):
        for index, row in enumerate(rows):
            waiting = len(self.writer._waiting.rows)
            held = index == 0 and hold_first
            thread = threading.Thread(target=self._run, args=(index, row, held))
            thread.start()
            self.threads.append(thread)
            if held:
                assert self.holding.wait(30)
            else:
                wait_until(
                    lambda waiting=waiting, thread=thread: (
                        len(self.writer._waiting.rows) > waiting or not thread.is_alive()
                    )
                )
        return self

    def release(self):
        self.released.set()

    def join(self):
        self.release()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
        return [self.outcomes[index] for index in range(len(self.threads))]


def wait_until(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def insert_concurrently(writer, rows):
    """Each row's outcome (None or the exception), the first row's statement held
    until every other row waits."""
    threads = Threads(writer).start(rows)
    wait_until(lambda: len(writer._waiting.rows) == len(rows) - 1)
    return threads.join()


def stored():
    return sorted(PendingOpen.objects.values_list("user_agent", flat=True))


@pytest.mark.django_db(transaction=True)
def test_threads_that_arrive_while_a_leader_inserts_share_the_next_statement():
    writer, sizes = writer_counting_statements()
    rows = [load(f"agent {n}") for n in range(8)]

    outcomes = insert_concurrently(writer, rows)

    assert outcomes == [None] * 8
    assert sizes == [1, 7]  # the leader alone, then the seven that waited, in one INSERT
    assert stored() == [f"agent {n}" for n in range(8)]


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
def test_a_row_the_database_refuses_loses_only_itself():
    writer, sizes = writer_counting_statements()
    PendingOpen.objects.create(token=uuid.uuid4(), occurred_at=WHEN, user_agent="already stored")
    bad = load("bad")
    bad[0] = None  # token is NOT NULL: the statement of its group fails as a whole

    outcomes = insert_concurrently(writer, [load("leader"), load("a"), bad, load("b")])

    # The group of three failed and nothing of it was committed; each then inserted
    # its own row alone: only the refused one is lost, with the database's error.
    assert sizes == [1, 3, 1, 1, 1]
    assert outcomes[:2] == [None, None] and outcomes[3] is None
    assert isinstance(outcomes[2], IntegrityError)
    assert stored() == ["a", "already stored", "b", "leader"]

    writer.insert(load("after"))  # the writer goes on
    assert "after" in stored()


@pytest.mark.django_db(transaction=True)
def test_a_group_larger_than_one_statement_is_stored_whole_or_not_at_all(monkeypatch):
    monkeypatch.setattr(group_commit, "MAX_ROWS", 2)
    calls = []

    def statement(rows):
        calls.append(rows)
        if len(calls) == 3:  # the group's second statement: one the database refuses
            return "INSERT INTO nowhere VALUES (1)"
        return pending._insert_statement("default", rows)

    writer = GroupCommit("default", statement)
    rows = [load("leader"), load("a"), load("b"), load("c")]

    outcomes = insert_concurrently(writer, rows)

    assert calls == [1, 2, 1]  # the leader; the group of three: [a, b], then [c] failed
    assert outcomes[0] is None
    # The thread that led the group has the database's error, the others are told
    # their group was not stored; no row was retried alone (not a refused value).
    told = [outcome for outcome in outcomes[1:] if isinstance(outcome, GroupNotStored)]
    (raised,) = [outcome for outcome in outcomes[1:] if not isinstance(outcome, GroupNotStored)]
    assert isinstance(raised, DatabaseError) and len(told) == 2
    assert all(outcome.__cause__ is raised for outcome in told)
    assert stored() == ["leader"]  # [a, b] was rolled back with the failed statement


@pytest.mark.parametrize("how", ["atomic", "autocommit off"])
@pytest.mark.django_db(transaction=True)
def test_a_caller_outside_autocommit_inserts_alone_and_takes_no_waiting_row(how):
    writer, sizes = writer_counting_statements()
    threads = Threads(writer).start([load("leader"), load("waiting")])
    wait_until(lambda: len(writer._waiting.rows) == 1)

    if how == "atomic":
        with pytest.raises(RuntimeError), transaction.atomic():
            writer.insert(load("in a transaction"))
            raise RuntimeError("the caller's transaction fails")
    else:
        transaction.set_autocommit(False)
        try:
            writer.insert(load("in a transaction"))
            transaction.rollback()
        finally:
            transaction.set_autocommit(True)

    assert sizes == [1, 1]  # the held leader, then this caller alone, at once
    assert len(writer._waiting.rows) == 1  # the waiting row was left to its group
    assert threads.join() == [None, None]
    assert sizes == [1, 1, 1]
    assert stored() == ["leader", "waiting"]


@pytest.mark.django_db(transaction=True)
def test_a_stalled_leader_does_not_hold_up_the_next_group(monkeypatch):
    monkeypatch.setattr(group_commit, "STALL_SECONDS", 0.2)
    writer, sizes = writer_counting_statements()
    threads = Threads(writer).start([load("stalled"), load("a"), load("b"), load("c")])

    # The leader is still held; the three behind it were inserted by one of them.
    wait_until(lambda: all(index in threads.outcomes for index in (1, 2, 3)))
    assert [threads.outcomes[index] for index in (1, 2, 3)] == [None, None, None]
    assert stored() == ["a", "b", "c"]
    assert sizes == [1, 3]

    assert threads.join() == [None] * 4
    assert stored() == ["a", "b", "c", "stalled"]
