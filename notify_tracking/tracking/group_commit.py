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

A thread inside a transaction (``atomic``) inserts alone, on its own connection,
so that no other request's row depends on its outcome.

Measured in ``bench/`` (docs/performance.md, the pixel).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, transaction

#: The most rows one statement carries (SQLite takes 999 parameters by default).
MAX_ROWS = 100


class GroupNotStored(Exception):
    """The group this row was part of could not be inserted (the cause is chained)."""


class _Group:
    __slots__ = ("done", "error", "rows")

    def __init__(self) -> None:
        self.rows: list[Sequence[Any]] = []
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Inserts rows of one table on one database, grouping concurrent callers.

    ``statement(n)`` returns the SQL that inserts ``n`` rows (``%s`` placeholders,
    row after row); ``insert(row)`` returns once ``row`` is committed and raises if it
    was not.
    """

    def __init__(self, alias: str, statement: Callable[[int], str]) -> None:
        self.alias = alias
        self.statement = statement
        self._lock = threading.Condition(threading.Lock())
        self._waiting = _Group()
        self._leading = False

    def insert(self, row: Sequence[Any]) -> None:
        if connections[self.alias].in_atomic_block:
            self._execute([row])  # part of this caller's transaction, not of a group
            return
        with self._lock:
            group = self._waiting
            group.rows.append(row)
            while self._leading and not group.done:
                self._lock.wait()
            if group.done:
                return self._outcome(group)
            self._leading = True  # this thread inserts the group it is in
            self._waiting = _Group()
        try:
            self._store(group.rows)
        except BaseException as error:
            group.error = error
            raise
        finally:
            with self._lock:
                group.done = True
                self._leading = False
                self._lock.notify_all()

    def _outcome(self, group: _Group) -> None:
        if group.error is not None:
            raise GroupNotStored(str(group.error)) from group.error

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
