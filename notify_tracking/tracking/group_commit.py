"""Group commit: concurrent requests of one process share one INSERT and its commit.

The pixel's cost is its durable INSERT: a round trip, a statement and a commit (a
flush of PostgreSQL's log) per open. When several threads of one process insert at
the same moment (gunicorn's ``gthread`` workers, a threaded runserver), the first
becomes the *leader*: it takes every row waiting, inserts them in one multi-row
``INSERT`` (one statement, one commit, in autocommit) and wakes the others. A thread
that arrives while a leader is busy adds its row to the next group and waits; when
the leader is done, one of the waiting threads leads that group.

Nobody waits for company: a leader inserts what is there at once, so a lone request
(a sync worker, a quiet site) costs what a plain INSERT costs. Every request still
returns only after its own row is committed, or with the error that lost it: the
durability of each open is unchanged, only the cost of it is shared.

What one caller cannot spoil for the others:

- a thread whose connection is not in autocommit (inside ``atomic``, or after
  ``set_autocommit(False)``) inserts alone, in its own transaction;
- when a group's statement fails for a reason that may be one row's or one
  connection's (a value the database refuses, a closed connection), nothing of it was
  committed, and each caller inserts its own row again, alone, on its own connection:
  only the row or connection at fault is lost;
- a group that waits more than ``STALL_SECONDS`` for a busy leader (a hung connection)
  is led by one of its own threads, beside it.

Measured in ``bench/`` (docs/performance.md, the pixel).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DataError, IntegrityError, InterfaceError, connections, transaction

#: The most rows one statement carries (SQLite takes 999 parameters by default).
MAX_ROWS = 100
#: How long a group waits for a busy leader before one of its threads leads it.
STALL_SECONDS = 0.5
#: Errors after which nothing of the group was committed and a row may be fine alone.
RETRY_ALONE = (DataError, IntegrityError, InterfaceError)


class GroupNotStored(Exception):
    """The group this row was part of could not be inserted (the cause is chained)."""


class _Group:
    __slots__ = ("done", "error", "rows", "taken")

    def __init__(self) -> None:
        self.rows: list[Sequence[Any]] = []
        self.taken = False  # a thread leads it
        self.done = False
        self.error: BaseException | None = None


class Grouped:
    """Leader/follower grouping of concurrent callers of one process: what the rows
    go to is the subclass's :meth:`_store` (called by the leader, with every row of
    its group)."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._waiting = _Group()  # the group rows join; never taken
        self._leaders = 0

    def _take_part(self, row: Sequence[Any]) -> tuple[_Group, bool]:
        """Join the waiting group with ``row`` and return once that group is stored or
        failed (its ``error``), and whether this thread led it."""
        group, leads = self._join(row)
        if leads:
            self._lead(group)
        return group, leads

    def _join(self, row: Sequence[Any]) -> tuple[_Group, bool]:
        """Add ``row`` to the waiting group and wait until that group is stored
        (False) or this thread is to lead it (True)."""
        with self._lock:
            group = self._waiting
            group.rows.append(row)
            deadline = time.monotonic() + STALL_SECONDS
            while not group.done:
                if not group.taken:
                    left = deadline - time.monotonic()
                    if self._leaders == 0 or left <= 0:  # no leader busy, or a stalled one
                        group.taken = True
                        self._leaders += 1
                        self._waiting = _Group()
                        return group, True
                    self._lock.wait(left)
                else:
                    self._lock.wait()
            return group, False

    def _lead(self, group: _Group) -> None:
        """Store ``group``; its outcome goes to ``group.error``, for each of its threads."""
        try:
            self._store(group.rows)
        except Exception as error:
            group.error = error
        except BaseException as error:  # KeyboardInterrupt, SystemExit: the followers
            group.error = error  # learn the group failed, and this thread stops
            raise
        finally:
            with self._lock:
                group.done = True
                self._leaders -= 1
                self._lock.notify_all()

    def _store(self, rows: list[Sequence[Any]]) -> None:
        raise NotImplementedError


class GroupCommit(Grouped):
    """Inserts rows of one table on one database, grouping concurrent callers.

    ``statement(n)`` returns the SQL that inserts ``n`` rows (``%s`` placeholders,
    row after row); ``insert(row)`` returns once ``row`` is committed and raises if it
    was not.
    """

    def __init__(self, alias: str, statement: Callable[[int], str]) -> None:
        super().__init__()
        self.alias = alias
        self.statement = statement

    def insert(self, row: Sequence[Any]) -> None:
        if not connections[self.alias].get_autocommit():
            self._execute([row])  # part of this caller's transaction, not of a group
            return
        group, leads = self._take_part(row)
        error = group.error
        if error is None:
            return
        if len(group.rows) > 1 and isinstance(error, RETRY_ALONE):
            self._execute([row])  # nothing of the group was committed; alone, it may be
            return
        if leads:
            raise error
        raise GroupNotStored(str(error)) from error

    def _store(self, rows: list[Sequence[Any]]) -> None:
        if len(rows) <= MAX_ROWS:
            self._execute(rows)
            return
        with transaction.atomic(using=self.alias):  # all of the group or none of it
            for start in range(0, len(rows), MAX_ROWS):
                self._execute(rows[start : start + MAX_ROWS])

    def _execute(self, rows: list[Sequence[Any]]) -> None:
        params = [value for row in rows for value in row]
        with connections[self.alias].cursor() as cursor:
            cursor.execute(self.statement(len(rows)), params)
