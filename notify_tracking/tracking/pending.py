"""Pixel loads: the request appends one row; a task applies them in batches.

An open pixel is loaded far more often than anything else of the app, by every mail
client and image proxy, so its request does the least that keeps the open: one
``INSERT`` of a :class:`~notify_tracking.models.PendingOpen` (no lock, no read), and a
nudge to the task, at most one per ``FOLD_DELAY`` seconds per cache (and no cache
request at all while the process knows the nudged task is not yet due). The task,
:func:`apply_pending_opens`, takes the waiting rows in order, finds their deliveries
(one query), classifies each open (:mod:`.classify`), records them all with one
``record_events()`` call and deletes the rows, in one transaction: an open is either
still waiting or recorded, never lost nor counted twice. The beat schedule runs the
task every 30 seconds as well, for a nudge that was lost (broker down, cache
flushed). With ``CELERY_TASK_ALWAYS_EAGER`` the nudge applies the open at once.

See docs/tracking.md, "How an open is recorded".
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from typing import Any

from django.core.cache import cache
from django.db import connections, models, transaction
from django.http import HttpRequest

from .. import status as st
from ..conf import get_setting
from ..models import EventSource, PendingOpen, concrete_field, write_db
from ..service import NewEvent, record_events
from . import classify, recording, spool
from .group_commit import GroupCommit
from .tokens import OpenToken

logger = logging.getLogger(__name__)

#: Seconds between a first waiting open and the task that applies it.
FOLD_DELAY = 1.0
#: How many waiting opens one transaction applies.
FOLD_BATCH = 500
#: The cache key that says a task is already on its way.
NUDGE_KEY = "notify_tracking:pending-opens-nudged"
USER_AGENT_MAX = PendingOpen._meta.get_field("user_agent").max_length


def add_open(request: HttpRequest, token: OpenToken, occurred_at: dt.datetime) -> None:
    """Keep a pixel load for the task: one INSERT (autocommitted), then a nudge to the
    task; or, with ``OPEN_SPOOL_DIR``, one synced line of the process's spool
    (:mod:`.spool`, whose thread inserts and nudges)."""
    # NUL: no database text holds it, and a refused value would lose the open.
    user_agent = request.META.get("HTTP_USER_AGENT", "").replace("\x00", "")[:USER_AGENT_MAX]
    ip_address = recording.client_ip(request)
    spool_dir = get_setting("OPEN_SPOOL_DIR")
    if spool_dir is not None:
        spool.get_spool(spool_dir).append(
            spool.line(token.delivery, token.group, occurred_at, user_agent, ip_address)
        )
        return
    _insert(
        token=token.delivery,
        group=token.group,
        occurred_at=occurred_at,
        user_agent=user_agent,
        ip_address=ip_address,
    )
    nudge()


_INSERTED = ("token", "group", "occurred_at", "user_agent", "ip_address")


def _insert(**values: Any) -> None:
    """``PendingOpen.objects.create(**values)`` without the ORM's cost (a third of the
    request's CPU, measured): the same SQL, each value prepared by its own field, and
    grouped with the opens that other threads of this process insert at the same moment
    (:mod:`.group_commit`)."""
    alias = write_db()
    connection = connections[alias]
    writer = _writer(alias)
    writer.insert([field.get_db_prep_save(values[field.name], connection) for field in _fields()])


@functools.cache
def _fields() -> list[models.Field]:
    """The columns a pixel load fills, in the order of the INSERT."""
    return [concrete_field(PendingOpen, name) for name in _INSERTED]


@functools.cache
def _writer(alias: str) -> GroupCommit:
    """The one group-commit writer of pending opens on database ``alias`` in this process."""
    return GroupCommit(alias, functools.cache(functools.partial(_insert_statement, alias)))


def _insert_statement(alias: str, rows: int) -> str:
    """The INSERT of ``rows`` PendingOpens on database ``alias``."""
    quote = connections[alias].ops.quote_name
    one_row = "({})".format(", ".join(["%s"] * len(_INSERTED)))
    # Identifiers from the model, quoted; every value is a query parameter.
    return "INSERT INTO {} ({}) VALUES {}".format(  # noqa: S608
        quote(PendingOpen._meta.db_table),
        ", ".join(quote(field.column or field.name) for field in _fields()),
        ", ".join([one_row] * rows),
    )


#: Until when (``time.monotonic()``: a clock set back cannot stretch it) this process
#: asks the cache nothing: it knows a task is on its way that will apply any open
#: inserted before then.
_quiet_until = 0.0
#: The longest a process skips the cache after finding the task late (its flag's time
#: has passed): the task may start any moment, and an open inserted after it starts
#: needs a nudge of its own.
LATE_QUIET = FOLD_DELAY / 10
#: The shortest such quiet: at most one cache request per millisecond and process.
LATE_QUIET_MIN = 0.001


def nudge() -> None:
    """Enqueue the task unless one is already on its way (a cache flag, FOLD_DELAY long).

    The flag holds the time (``time.time()``) before which its task cannot start (it is
    enqueued with that countdown), and every open inserted before then is applied by
    it. A process that learns that time asks the cache nothing more until then (see
    :func:`_quiet_for`): a busy site costs the cache (a round trip to Redis or
    memcached) a few requests per process and ``FOLD_DELAY``, not one per open. The web
    and worker hosts' clocks are assumed to agree to a fraction of a second (NTP): an
    open that falls in a disagreement waits for the next nudge or the periodic run.
    With ``CELERY_TASK_ALWAYS_EAGER`` the task runs in the nudge, no task is due later,
    and no process is ever quiet.

    Never raises: the open is already stored, and the periodic run applies it if the
    broker or the cache cannot be reached now.
    """
    global _quiet_until
    clock = time.monotonic()
    if clock < _quiet_until:
        return
    from ..tasks import apply_pending_opens as task

    try:
        if not cache.add(NUDGE_KEY, time.time() + FOLD_DELAY, timeout=FOLD_DELAY * 10):
            # Eager: the flag is another thread's task running now, not one due later.
            if not task.app.conf.task_always_eager:
                known = cache.get(NUDGE_KEY)
                if isinstance(known, float):  # None: the task has started meanwhile
                    _quiet_until = time.monotonic() + _quiet_for(known - time.time())
            return
        queue = get_setting("QUEUE")
        options: dict[str, Any] = {"queue": queue} if queue else {}
        task.apply_async(countdown=FOLD_DELAY, **options)
        if not task.app.conf.task_always_eager:  # eager: it ran, and cleared the flag
            _quiet_until = clock + FOLD_DELAY  # the flag's time, on this process's clock
    except Exception:
        logger.warning(
            "notify_tracking: could not enqueue the task that applies opens; the periodic "
            "run will apply them",
            exc_info=True,
        )


def _quiet_for(due_in: float) -> float:
    """How long a process may skip the cache, the known task being due in ``due_in``
    seconds (negative: it is late).

    - Due later: until then, and never longer than ``FOLD_DELAY``, whatever another
      host's clock wrote in the flag.
    - Late: as long as it has been late, between ``LATE_QUIET_MIN`` and ``LATE_QUIET``.
      A countdown task starts a few milliseconds after its time, and then an open is
      left without a nudge for those few milliseconds at most; a task late by seconds
      (busy or stopped workers) costs the cache about two requests per process and
      ``LATE_QUIET``, not one per open. An open inserted in such a quiet, after the
      late task started, waits for the next load's nudge, or for the periodic run if
      no load follows.
    """
    if due_in > 0:
        return min(due_in, FOLD_DELAY)
    return min(LATE_QUIET, max(-due_in, LATE_QUIET_MIN))


def apply_pending_opens(limit: int = 100_000) -> int:
    """Apply up to ``limit`` of the opens waiting when it starts, oldest first; return
    how many were taken.

    Opens inserted while it runs are left to the task their own nudge enqueues (the
    flag is cleared first): chasing them under a steady load would apply them a few
    at a time, each batch paying a transaction and its statements, instead of one
    ``FOLD_DELAY``'s worth at once.

    Safe to run in several workers at once: each transaction takes rows the others
    have not locked (``SKIP LOCKED`` where the database has it).
    """
    try:
        cache.delete(NUDGE_KEY)  # opens that arrive from now on nudge a new task
    except Exception:
        logger.warning("notify_tracking: could not clear the open nudge flag", exc_info=True)
    # From the database the opens are written to (the rows below are locked there): a
    # replica behind it would hide opens whose nudge found this task's flag.
    writes = PendingOpen.objects.db_manager(write_db())
    last = writes.aggregate(last=models.Max("pk"))["last"]
    if last is None:
        return 0
    taken = 0
    while taken < limit:
        with transaction.atomic(using=writes.db):
            rows = list(
                PendingOpen.objects.select_for_update(skip_locked=True)
                .filter(pk__lte=last)
                .order_by("pk")[: min(FOLD_BATCH, limit - taken)]
            )
            if not rows:
                break
            record_events(_events(rows))
            PendingOpen.objects.filter(pk__in=[row.pk for row in rows]).delete()
        taken += len(rows)
    return taken


def _events(rows: list[PendingOpen]) -> list[NewEvent]:
    """The ``opened`` events of these pixel loads, one per delivery each concerns."""
    targets = recording.targets_by_token({row.token for row in rows}, "track_opens")
    store_ip = get_setting("STORE_IP_ADDRESSES")
    events = []
    for row in rows:
        concerned = targets.get(row.token, [])
        if row.group and concerned:
            concerned = recording.group_targets(concerned[0], "track_opens")
        if not concerned:
            continue  # unknown, anonymised, or tracking off: nothing to record
        verdict = classify.classify(
            recording.hit(
                classify.OPEN, "GET", row.user_agent, row.ip_address, concerned, row.occurred_at
            )
        )
        details = recording.event_details(verdict, row.group, len(concerned))
        for target in concerned:
            events.append(
                NewEvent(
                    delivery_id=target["pk"],
                    kind=st.OPENED,
                    source=EventSource.PIXEL,
                    occurred_at=row.occurred_at,
                    is_machine=verdict.is_machine,
                    user_agent=row.user_agent,
                    ip_address=row.ip_address if store_ip else None,
                    details=details,
                )
            )
    return events


def waiting() -> int:
    """How many opens wait to be applied (for the status command and the bench)."""
    return PendingOpen.objects.count()
