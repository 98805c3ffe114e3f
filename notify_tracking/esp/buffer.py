"""Collect a webhook request's events and hand them to Celery in chunks.

anymail's view sends one ``tracking`` signal per event from inside ``post()`` and
offers no hook after the last one. So the request itself marks the batch:

- ``request_started`` opens a buffer for the current thread (each request runs in
  one thread, under WSGI and under Django's ASGI handler alike);
- each event is appended; a full chunk (``ESP_BATCH_SIZE``) is handed off at once;
- ``request_finished`` hands off the rest and closes the buffer. A buffer left open
  (a server that never closed a response) is handed off when the thread's next
  request starts, so no event stays behind.

An event that arrives outside a request (a management command, a test sending the
signal) is handed off alone, at once.

A hand-off enqueues one Celery task when the current transaction commits (at once
in autocommit mode). If the broker cannot be reached the events are applied in this
process instead: slower, but nothing is lost.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Any

from django.db import transaction

from ..conf import get_setting

logger = logging.getLogger("notify_tracking.esp")

_local = threading.local()


def open_buffer(**kwargs: Any) -> None:
    """``request_started`` receiver: start collecting this request's events."""
    leftover = getattr(_local, "events", None)
    _local.events = []
    if leftover:
        hand_off(leftover)


def close_buffer(**kwargs: Any) -> None:
    """``request_finished`` receiver: hand off what this request collected."""
    events = getattr(_local, "events", None)
    _local.events = None
    if events:
        hand_off(events)


def add(event: dict[str, Any]) -> None:
    """Queue one normalized event with the others of this request."""
    events = getattr(_local, "events", None)
    if events is None:
        hand_off([event])
        return
    events.append(event)
    if len(events) >= get_setting("ESP_BATCH_SIZE"):
        _local.events = []
        hand_off(events)


def hand_off(events: list[dict[str, Any]]) -> None:
    """Apply these events in a Celery task, enqueued when the transaction commits."""
    transaction.on_commit(partial(_enqueue, list(events)))


def _enqueue(events: list[dict[str, Any]]) -> None:
    from kombu.exceptions import OperationalError

    from ..tasks import apply_esp_events

    options = {"queue": get_setting("QUEUE")} if get_setting("QUEUE") else {}
    try:
        apply_esp_events.apply_async(args=[events], **options)
    except OperationalError:
        logger.exception(
            "notify_tracking: cannot reach the Celery broker; applying %d ESP events here",
            len(events),
        )
        from .apply import apply_events

        try:
            apply_events(events)
        except Exception:
            logger.exception("notify_tracking: could not apply %d ESP events", len(events))
