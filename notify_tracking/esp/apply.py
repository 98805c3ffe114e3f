"""The worker side: match queued ESP events to deliveries and record them.

Matching costs two or three queries per chunk, whatever its size; then the whole chunk
goes through :func:`notify_tracking.service.record_events` in one transaction (in time
order, so that refolds stay rare): each delivery touched is locked and written once.
Every event carries a provider event id, so applying a chunk twice (a retried task)
stores nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..models import Delivery, EventSource, write_db
from ..retention import PLACEHOLDER_PREFIX
from ..service import NewEvent, record_events

logger = logging.getLogger("notify_tracking.esp")

#: How many unknown message ids one log line names.
LOGGED_UNKNOWN_IDS = 10


@dataclass(frozen=True)
class QueuedEvent:
    """A normalized ESP event as :mod:`.mapping` queued it."""

    esp: str
    kind: str
    occurred_at: dt.datetime
    provider_event_id: str
    token: str | None = None
    message_id: str = ""
    recipient: str = ""
    error: str = ""
    user_agent: str = ""
    ip_address: str | None = None
    is_machine: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QueuedEvent:
        """Raises KeyError, TypeError or ValueError for a dict that is not one."""
        occurred_at = dt.datetime.fromisoformat(raw["occurred_at"])
        if occurred_at.tzinfo is None:
            raise ValueError("occurred_at has no time zone")
        if not isinstance(raw.get("details", {}), dict):
            raise TypeError("details must be a dict")
        return cls(
            esp=str(raw["esp"]),
            kind=str(raw["kind"]),
            occurred_at=occurred_at,
            provider_event_id=str(raw["provider_event_id"]),
            token=raw.get("token") or None,
            message_id=str(raw.get("message_id") or ""),
            recipient=str(raw.get("recipient") or "").lower(),
            error=str(raw.get("error") or ""),
            user_agent=str(raw.get("user_agent") or ""),
            ip_address=raw.get("ip_address") or None,
            is_machine=bool(raw.get("is_machine")),
            details=dict(raw.get("details") or {}),
        )


class Target(NamedTuple):
    pk: int
    token: str
    recipient: str
    message_id: str


class DeliveryMatcher:
    """Finds the delivery of an event: by our metadata token, else by message id."""

    FIELDS = ("pk", "token", "recipient", "message_id", "email_message_id")

    def __init__(self, events: list[QueuedEvent]):
        tokens = {event.token for event in events if event.token}
        rows = self._rows(token__in=tokens) if tokens else []
        self.by_token = {target.token: target for target, _ in rows}
        ids = {e.message_id for e in events if e.message_id and e.token not in self.by_token}
        self.by_message_id: dict[str, list[Target]] = {}
        for lookup in ("message_id__in", "email_message_id__in"):
            for target, row_ids in self._rows(**{lookup: ids}) if ids else []:
                for message_id in row_ids & ids:
                    self._add(message_id, target)

    def match(self, event: QueuedEvent) -> Target | None:
        """The delivery of ``event``; None when unknown or ambiguous."""
        if event.token in self.by_token:
            return self.by_token[event.token]
        candidates = self.by_message_id.get(event.message_id, [])
        if event.recipient:
            candidates = [c for c in candidates if c.recipient.lower() == event.recipient]
        return candidates[0] if len(candidates) == 1 else None

    def _add(self, message_id: str, target: Target) -> None:
        known = self.by_message_id.setdefault(message_id, [])
        if target.pk not in {t.pk for t in known}:
            known.append(target)

    @classmethod
    def _rows(cls, **lookup: Any) -> list[tuple[Target, set[str]]]:
        # An anonymised delivery (past its retention) takes no more events: they would
        # bring the reader's user agent or address back into it.
        # Where the events will be written: a replica may not show a message just sent.
        current = Delivery.objects.using(write_db()).exclude(
            recipient__startswith=PLACEHOLDER_PREFIX
        )
        rows = current.filter(**lookup).values_list(*cls.FIELDS)
        return [
            (Target(pk, str(token), recipient, message_id), {message_id, email_message_id})
            for pk, token, recipient, message_id, email_message_id in rows
        ]


def apply_events(events: list[dict[str, Any]]) -> dict[str, int]:
    """Record these queued ESP events; return how many were applied, skipped and why.

    Counts: ``applied`` (stored), ``duplicate`` (already stored, or tracking refused),
    ``gone`` (the delivery was purged meanwhile), ``unknown`` (no delivery matched:
    logged), ``malformed`` (unusable: logged).
    """
    counts: Counter[str] = Counter()
    parsed = _parse(events, counts)
    matcher = DeliveryMatcher(parsed)
    unknown: list[QueuedEvent] = []
    matched: list[tuple[QueuedEvent, Target]] = []
    for event in sorted(parsed, key=lambda e: e.occurred_at):
        target = matcher.match(event)
        if target is None:
            unknown.append(event)
        else:
            matched.append((event, target))
    counts.update(_record(matched))
    counts["unknown"] = len(unknown)
    if unknown:
        _log_unknown(unknown)
    return dict(counts)


def _parse(events: list[dict[str, Any]], counts: Counter[str]) -> list[QueuedEvent]:
    parsed = []
    for raw in events:
        try:
            parsed.append(QueuedEvent.from_dict(raw))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            counts["malformed"] += 1
            logger.warning(
                "notify_tracking: skipped a malformed queued ESP event (%s: %s)",
                type(error).__name__,
                error,
            )
    return parsed


def _record(matched: list[tuple[QueuedEvent, Target]]) -> Counter[str]:
    """Record the matched events in one ``record_events()`` call: one transaction."""
    counts: Counter[str] = Counter()
    batch: list[NewEvent] = []
    for event, target in matched:
        try:
            batch.append(_new_event(event, target))
        except ValueError as error:
            counts["malformed"] += 1
            logger.warning(
                "notify_tracking: skipped a malformed %s event for delivery %s: %s",
                event.esp,
                target.pk,
                error,
            )
    stored = record_events(batch)
    skipped = {new.delivery_id for new, event in zip(batch, stored, strict=True) if event is None}
    # Purged by retention between matching and recording: nothing left to update.
    existing = set(
        Delivery.objects.using(write_db()).filter(pk__in=skipped).values_list("pk", flat=True)
    )
    for new, result in zip(batch, stored, strict=True):
        if result is not None:
            counts["applied"] += 1
        elif new.delivery_id in existing:
            counts["duplicate"] += 1
        else:
            counts["gone"] += 1
            logger.info(
                "notify_tracking: %s event for purged delivery %s ignored",
                new.details.get("esp", "ESP"),
                new.delivery_id,
            )
    return counts


def _new_event(event: QueuedEvent, target: Target) -> NewEvent:
    # Store the provider's id on a delivery matched by token that does not know it yet.
    message_id = event.message_id if event.token and not target.message_id else None
    return NewEvent(
        delivery_id=target.pk,
        kind=event.kind,
        source=EventSource.ESP,
        occurred_at=event.occurred_at,
        is_machine=event.is_machine,
        provider_event_id=event.provider_event_id,
        user_agent=event.user_agent,
        ip_address=event.ip_address,
        error=event.error,
        message_id=message_id,
        details=event.details,
    )


def _log_unknown(unknown: list[QueuedEvent]) -> None:
    ids = sorted({e.message_id or "(none)" for e in unknown})
    shown = ", ".join(ids[:LOGGED_UNKNOWN_IDS]) + (" ..." if len(ids) > LOGGED_UNKNOWN_IDS else "")
    logger.info(
        "notify_tracking: ignored %d ESP events that match no delivery (%s message ids: %s)",
        len(unknown),
        unknown[0].esp,
        shown,
    )
