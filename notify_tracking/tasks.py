"""Celery tasks of the app. The work itself lives in :mod:`notify_tracking.sending`.

The host project owns the Celery app; these are ``shared_task``s. Add the periodic
ones to its beat schedule with :func:`beat_schedule`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence

from celery import shared_task
from celery.schedules import crontab
from django.db import DatabaseError

from . import sending
from .conf import get_setting
from .read_notices import DigestIncomplete, digest_schedule

logger = logging.getLogger(__name__)

#: Under CELERY_TASK_ALWAYS_EAGER, the longest retry countdown waited in the process
#: (a longer one is left to the sweep): that of a retry the claim takes early.
EAGER_WAIT_MAX = sending.EARLY_ARRIVAL.total_seconds()


@shared_task(
    name="notify_tracking.send_deliveries",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def send_deliveries(delivery_ids: list[int]) -> dict[str, int]:
    """Send a batch of deliveries (acknowledged only after it ran, so a dead worker
    does not lose it)."""
    _eager.depth += 1
    try:
        outcome = sending.send_deliveries(delivery_ids)
    except BaseException:
        if _eager.depth == 1:
            _abandon_eager_retries()
        raise
    finally:
        _eager.depth -= 1
    if _eager.depth == 0 and _eager.retries:
        _send_eager_retries()
    return outcome


class _EagerRetries(threading.local):
    """Under CELERY_TASK_ALWAYS_EAGER, the retries that send tasks of this thread asked
    for, by due time.

    An eager task runs inside the one that enqueues it: a retry would run in the
    middle of its own batch, whose channel (one SMTP connection) is still in use. So
    it waits here, and runs once the outermost send task is over, at its time; the
    retries those retries ask for join the same queue (a loop, not a recursion)."""

    def __init__(self) -> None:
        self.depth = 0  # send tasks running in this thread, one inside another
        self.retries: list[tuple[float, int, list[int]]] = []  # a heap: (due, order, ids)
        self.order = itertools.count()


_eager = _EagerRetries()


def _send_eager_retries() -> None:
    _eager.depth += 1  # the retries they ask for are queued, not run in here
    try:
        while _eager.retries:
            due, _order, delivery_ids = heapq.heappop(_eager.retries)
            time.sleep(max(0.0, due - time.monotonic()))
            sending.send_deliveries(delivery_ids)
    except BaseException:
        _abandon_eager_retries()
        raise
    finally:
        _eager.depth -= 1


def _abandon_eager_retries() -> None:
    """A send task failed: its queued retries are not run (the next task, or test, is
    not theirs to carry); the deliveries stay deferred, and the sweep sends them."""
    waiting = sum(len(delivery_ids) for _due, _order, delivery_ids in _eager.retries)
    _eager.retries.clear()
    if waiting:
        logger.warning(
            "notify_tracking: a send task failed under CELERY_TASK_ALWAYS_EAGER: %d"
            " deliveries it was to retry are left to the sweep (notify_tracking.sweep_stuck)",
            waiting,
        )


@shared_task(name="notify_tracking.sweep_stuck", ignore_result=True)
def sweep_stuck() -> int:
    """Enqueue again deliveries whose worker died or whose message was lost."""
    return sending.sweep_stuck()


@shared_task(name="notify_tracking.purge_expired", ignore_result=True)
def purge_expired() -> dict:
    """Delete or anonymise what is past its retention (docs/retention.md), in batches."""
    from .retention import purge

    report = purge()
    logger.info("notify_tracking purge: %s", report.summary())
    return report.as_dict()


@shared_task(
    name="notify_tracking.apply_esp_events",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    max_retries=5,
)
def apply_esp_events(events: list[dict]) -> dict[str, int]:
    """Apply a chunk of ESP webhook events (safe to run twice: events are deduplicated)."""
    from .esp.apply import apply_events

    return apply_events(events)


@shared_task(
    name="notify_tracking.apply_pending_opens",
    ignore_result=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    max_retries=5,
)
def apply_pending_opens() -> int:
    """Record the pixel loads waiting in PendingOpen (docs/tracking.md); safe to run twice."""
    from .tracking.pending import apply_pending_opens as apply

    return apply()


@shared_task(
    name="notify_tracking.send_read_notice",
    ignore_result=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=3,
)
def send_read_notice(delivery_id: int) -> bool:
    """Tell the sender that this delivery was read (once per delivery)."""
    from .read_notices import send_instant_notice

    return send_instant_notice(delivery_id)


@shared_task(
    name="notify_tracking.send_read_digests",
    ignore_result=True,
    autoretry_for=(DigestIncomplete,),
    retry_backoff=300,
    max_retries=3,
)
def send_read_digests() -> int:
    """Send the daily read digests; a retry sends only those that failed."""
    from .read_notices import send_digests

    return send_digests()


def enqueue_send(delivery_ids: Sequence[int], countdown: float | None = None) -> None:
    """Enqueue the send of these deliveries in batches of ``BATCH_SIZE``.

    A broker that cannot be reached is logged, not raised: the deliveries stay
    queued and the sweep enqueues them when the broker is back. Under
    ``CELERY_TASK_ALWAYS_EAGER``, which runs no task later, a ``countdown`` (even 0) of
    up to ``EAGER_WAIT_MAX`` seconds is waited, after the outermost send task of the
    thread if one asked for it, and a longer one is logged and left to the sweep,
    which sends the deliveries once overdue.
    """
    if countdown is not None and send_deliveries.app.conf.task_always_eager:
        # Eager Celery runs a task at once, whatever its countdown. A retry due soon (a
        # rate limit's pause) waits for its time, as on a worker. A later one would
        # come before its deliveries are due and be refused: it is not run, and they
        # stay deferred, due at their time, for the sweep.
        if countdown > EAGER_WAIT_MAX:
            logger.warning(
                "notify_tracking: CELERY_TASK_ALWAYS_EAGER runs no task later: %d deliveries"
                " due in %.0f s are left to the sweep (notify_tracking.sweep_stuck)",
                len(delivery_ids),
                countdown,
            )
            return
        if _eager.depth:  # asked by a send task: once it is over (_EagerRetries)
            due = time.monotonic() + countdown
            heapq.heappush(_eager.retries, (due, next(_eager.order), list(delivery_ids)))
            return
        time.sleep(countdown)  # asked outside a send task: nothing is in use
        countdown = None
    size = get_setting("BATCH_SIZE")
    options = {"countdown": countdown, "queue": get_setting("QUEUE")}
    options = {key: value for key, value in options.items() if value is not None}
    for start in range(0, len(delivery_ids), size):
        batch = list(delivery_ids[start : start + size])
        try:
            send_deliveries.apply_async(args=[batch], **options)
        except Exception:
            logger.exception(
                "notify_tracking: the eager send task of %d deliveries failed; the sweep"
                " will retry them"
                if send_deliveries.app.conf.task_always_eager  # it ran here, and raised
                else "notify_tracking: could not enqueue %d deliveries; the sweep will retry them",
                len(batch),
            )


def beat_schedule(sweep_every: float = 60.0) -> dict[str, dict]:
    """The app's periodic tasks, for ``app.conf.beat_schedule``.

    Call it once Django is set up (e.g. in your Celery app's ``on_after_finalize``
    handler, see docs/installation.md), not in settings.py: it reads NOTIFY_TRACKING.
    """
    return {
        "notify_tracking.sweep_stuck": {
            "task": "notify_tracking.sweep_stuck",
            "schedule": sweep_every,
        },
        # Pixel loads are applied within a second of the first one waiting (a nudge from
        # the request); this catches those whose nudge was lost.
        "notify_tracking.apply_pending_opens": {
            "task": "notify_tracking.apply_pending_opens",
            "schedule": 30.0,
        },
        # Daily at 03:17 in the Celery timezone, away from the top of the hour.
        "notify_tracking.purge_expired": {
            "task": "notify_tracking.purge_expired",
            "schedule": crontab(hour=3, minute=17),
        },
        "notify_tracking.send_read_digests": {
            "task": "notify_tracking.send_read_digests",
            "schedule": digest_schedule(),
        },
    }
