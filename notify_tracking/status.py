"""The status vocabulary of a delivery, its order, and the transition rule.

Pure Python, no Django: every other module asks :func:`next_status` what an event
does to a delivery, so the rule lives here and only here.

Progress, in order: ``queued < sent < delivered < opened < clicked``.
Failures: ``failed``, ``rejected``, ``bounced``, ``complained``; ``deferred`` is a
temporary setback that a retry or a later success replaces.

The rule (see docs/statuses.md):

- progress never goes backwards: a late ``delivered`` after ``opened`` leaves ``opened``;
- ``deferred`` only replaces ``queued`` and ``sent``;
- ``bounced``/``failed``/``rejected``/``complained`` replace anything below ``opened``;
  ``complained`` replaces ``opened`` and ``clicked`` too, and nothing replaces it;
- an open or a click is proof the message arrived, so it replaces ``deferred`` and the
  failures other than ``complained``;
- a click implies an open, an open implies delivery (``clicked`` sits above ``opened``);
- ``download`` counts as a click; ``unsubscribed`` and other non-status kinds are kept
  in the log but change nothing.
"""

from __future__ import annotations

QUEUED = "queued"
SENT = "sent"
DELIVERED = "delivered"
OPENED = "opened"
CLICKED = "clicked"

FAILED = "failed"
REJECTED = "rejected"
DEFERRED = "deferred"
BOUNCED = "bounced"
COMPLAINED = "complained"

#: Event kinds that are not statuses: stored in the log, mapped by EVENT_EFFECT.
DOWNLOAD = "download"
UNSUBSCRIBED = "unsubscribed"

PROGRESS: tuple[str, ...] = (QUEUED, SENT, DELIVERED, OPENED, CLICKED)
FAILURES: tuple[str, ...] = (FAILED, REJECTED, BOUNCED, COMPLAINED)
STATUSES: tuple[str, ...] = (*PROGRESS, DEFERRED, *FAILURES)
EVENT_KINDS: tuple[str, ...] = (*STATUSES, DOWNLOAD, UNSUBSCRIBED)

#: What a non-status event kind does to the status (None: nothing).
EVENT_EFFECT: dict[str, str | None] = {DOWNLOAD: CLICKED, UNSUBSCRIBED: None}

#: Statuses reached only by a reader acting on the message.
ENGAGEMENT: tuple[str, ...] = (OPENED, CLICKED)
#: Statuses from which no retry or send will happen again.
FINAL: tuple[str, ...] = FAILURES
#: A delivery in one of these may still be sent by the app.
SENDABLE: tuple[str, ...] = (QUEUED, DEFERRED)

_RANK = {status: rank for rank, status in enumerate(PROGRESS)}


def effective_kind(kind: str) -> str | None:
    """The status an event kind stands for, or None when it changes nothing."""
    if kind in EVENT_EFFECT:
        return EVENT_EFFECT[kind]
    if kind not in STATUSES:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
    return kind


def next_status(current: str, kind: str) -> str:
    """The status of a delivery in status ``current`` after an event of ``kind``."""
    if current not in STATUSES:
        raise ValueError(f"unknown status {current!r}; expected one of {', '.join(STATUSES)}")
    event = effective_kind(kind)
    if event is None or event == QUEUED:
        return current
    if current == COMPLAINED:
        return COMPLAINED
    if event == COMPLAINED:
        return COMPLAINED
    if event in FAILURES:
        return current if current in ENGAGEMENT else event
    if event == DEFERRED:
        return DEFERRED if current in (QUEUED, SENT) else current
    # event is progress: sent, delivered, opened or clicked
    if current in PROGRESS:
        return event if _RANK[event] > _RANK[current] else current
    if current == DEFERRED:
        return event
    # current is failed, rejected or bounced: only engagement proves it arrived
    return event if event in ENGAGEMENT else current


def is_failure(status: str) -> bool:
    """Whether ``status`` means the message did not reach the recipient."""
    return status in FAILURES


def reached(status: str, stage: str) -> bool:
    """Whether a delivery in ``status`` has reached the progress ``stage``."""
    return status in _RANK and _RANK[status] >= _RANK[stage]
