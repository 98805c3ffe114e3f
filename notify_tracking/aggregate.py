"""What the badge of a target shows: :func:`summary` for one, :func:`summaries` for many.

A target (a task, a comment...) may have been notified several times; its summary
describes its **latest** notification (the last created: the highest id), whose
deliveries are one per recipient and channel. ``notification_count`` tells how many
there were (:mod:`.latest_notifications` finds them).

``state`` is the furthest stage at least one recipient reached: ``queued``, ``sent``,
``delivered`` or ``read`` (an open or a click), or ``error`` when every delivery
failed. A ``deferred`` delivery (waiting for a retry) counts as ``queued`` and is not
an error; the label then says "Delayed" while nothing went further. When some, but
not all, deliveries failed, ``state`` is the furthest stage of the others and the
label adds the failures, e.g. "Delivered to 2 of 3; Error (1 of 3)".

:func:`summaries` costs the same few queries whatever the number of targets (one for
the notifications, one for their deliveries, one for the links and files used).

:func:`badge_states` is what a list of badges needs and no more: the same ``state``,
``label`` and counts, from one aggregate query, without the per-recipient details.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, pgettext

from . import status as st
from .conf import get_channel
from .latest_notifications import latest_notification_counts, latest_notifications
from .models import STATUS_LABELS, Delivery, DeliveryEvent

QUEUED, SENT, DELIVERED, READ, ERROR = "queued", "sent", "delivered", "read", "error"
#: The badge states, in order of progress, then ``error``.
STATES: tuple[str, ...] = (QUEUED, SENT, DELIVERED, READ, ERROR)
_PROGRESS_STATES = (QUEUED, SENT, DELIVERED, READ)

STATE_LABELS = {
    None: _("Not notified"),
    QUEUED: _("Queued"),
    SENT: _("Sent"),
    DELIVERED: _("Delivered"),
    READ: _("Read"),
    ERROR: _("Error"),
}

#: The fields of a delivery copied into its summary, as they are named there.
TIMESTAMPS = (
    "queued_at",
    "sent_at",
    "delivered_at",
    "first_opened_at",
    "last_opened_at",
    "first_clicked_at",
    "failed_at",
)
COUNTS = ("open_count", "machine_open_count", "click_count", "machine_click_count")
_DELIVERY_FIELDS = (
    "id",
    "notification_id",
    "recipient",
    "recipient_name",
    "user_id",
    "channel",
    "status",
    "error",
    "track_opens",
    "track_clicks",
    "created_at",
    *TIMESTAMPS[1:],
    *COUNTS,
)


def stage_of(status: str) -> str:
    """The badge state a single delivery in ``status`` stands for."""
    if st.is_failure(status):
        return ERROR
    if status in st.ENGAGEMENT:
        return READ
    if status == st.DEFERRED:
        return QUEUED
    return status


# --- public API ---------------------------------------------------------------------


def summary(target: models.Model) -> dict[str, Any]:
    """The status summary of ``target``'s latest notification (see the module doc)."""
    return summaries([target]).for_object(target)


def summaries(targets: Iterable[models.Model]) -> SummaryMap:
    """``{target.pk: summary}`` for many targets, in a constant number of queries.

    Targets may be of several models. When two of them share a pk, look them up by
    instance (``result[obj]`` or ``result.for_object(obj)``): their bare pk is ambiguous.
    """
    targets = list(targets)
    result = SummaryMap()
    keys = [result.key_of(target) for target in targets]
    notifications = latest_notifications(keys)
    deliveries = _deliveries_of([row["id"] for row in notifications.values()])
    for target, key in zip(targets, keys, strict=True):
        latest = notifications.get(key)
        rows = deliveries.get(latest["id"], []) if latest else []
        result.add(target, key, build_summary(latest, rows))
    return result


def badge_states(targets: Iterable[models.Model]) -> SummaryMap:
    """What the badges of many targets show, from one aggregate query: ``{target.pk: state}``.

    Each value has the keys of a summary that describe the whole notification:
    ``state``, ``complete``, ``errors``, ``total``, ``counts``, ``reached``, ``label``,
    ``notification_count`` and ``sender_ids`` (for the ``PERMISSION`` callable), but no
    ``deliveries``, ``notification`` or ``settled``: those are the popup's, which
    loads them with :func:`summary` when it is opened. A target never notified has
    ``state`` None. The result is looked up like :func:`summaries`' (pk or instance).
    """
    targets = list(targets)
    result = SummaryMap()
    keys = [result.key_of(target) for target in targets]
    notifications = latest_notification_counts(keys)
    described: dict[tuple[int, ...], dict[str, Any]] = {}  # a list repeats few combinations
    never = (0,) * len(st.STATUSES)
    for target, key in zip(targets, keys, strict=True):
        latest = notifications.get(key)
        counts = latest["counts"] if latest else never
        state = described.get(counts)
        if state is None:
            state = described[counts] = describe(dict(zip(st.STATUSES, counts, strict=True)))
        result.add(
            target,
            key,
            {
                **state,
                "notification_count": latest["count"] if latest else 0,
                "sender_ids": latest["sender_ids"] if latest else [],
            },
        )
    return result


class SummaryMap(dict):
    """A dict of summaries keyed by target pk, that also accepts the target itself."""

    def __init__(self) -> None:
        super().__init__()
        self._by_key: dict[tuple[int, str], dict[str, Any]] = {}
        self._ambiguous: set[Any] = set()
        self._content_types: dict[type, int] = {}

    def key_of(self, target: models.Model) -> tuple[int, str]:
        """``(content type id, str(pk))`` of ``target``; the content types are remembered
        by model, as a page looks up each of its targets."""
        content_type_id = self._content_types.get(type(target))
        if content_type_id is not None and (pk := target.pk) is not None:
            return content_type_id, str(pk)
        key = _key_of(target)  # checks that it is a saved model instance
        self._content_types[type(target)] = key[0]
        return key

    def add(self, target: models.Model, key: tuple[int, str], value: dict[str, Any]) -> None:
        known = self._by_key.get(key)
        self._by_key[key] = value
        pk = target.pk  # a property: read once (a list page adds 200 of them)
        if known is None and dict.__contains__(self, pk):
            self._ambiguous.add(pk)
            dict.__delitem__(self, pk)
        elif pk not in self._ambiguous:
            dict.__setitem__(self, pk, value)

    def for_object(self, target: models.Model) -> dict[str, Any]:
        """The summary of ``target`` (a model instance); KeyError when it was not asked for."""
        return self._by_key[self.key_of(target)]

    def __getitem__(self, key: Any) -> dict[str, Any]:
        if isinstance(key, models.Model):
            return self.for_object(key)
        if key in self._ambiguous:
            raise KeyError(f"pk {key!r} belongs to targets of several models: use summaries[obj]")
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        if isinstance(key, models.Model):
            return self.key_of(key) in self._by_key
        return super().__contains__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


# --- queries --------------------------------------------------------------------------


def _key_of(target: models.Model) -> tuple[int, str]:
    if not isinstance(target, models.Model):
        raise TypeError(f"a target must be a model instance, not {type(target).__name__}")
    if target.pk is None:
        raise ValueError(f"target {target!r} is not saved: it has no status")
    content_type = ContentType.objects.get_for_model(target)
    return content_type.pk, str(target.pk)


def _deliveries_of(notification_ids: list[int]) -> dict[int, list[dict]]:
    """The deliveries of these notifications, grouped by notification, with links and files."""
    if not notification_ids:
        return {}
    rows = list(
        Delivery.objects.filter(notification_id__in=notification_ids)
        .order_by("id")
        .values(*_DELIVERY_FIELDS)
    )
    used = _links_and_files(notification_ids) if rows else {}
    grouped: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        row["links"], row["files"] = used.get(row["id"], ([], []))
        grouped[row["notification_id"]].append(row)
    return grouped


def _links_and_files(notification_ids: list[int]) -> dict[int, tuple[list[str], list[str]]]:
    """Per delivery id: the links a person clicked and the files they downloaded."""
    events = (
        DeliveryEvent.objects.filter(
            delivery__notification_id__in=notification_ids,
            kind__in=(st.CLICKED, st.DOWNLOAD),
            is_machine=False,
        )
        .order_by("occurred_at", "id")
        .values_list("delivery_id", "kind", "details")
    )
    used: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for delivery_id, kind, details in events:
        links, files = used[delivery_id]
        value = (details or {}).get("filename" if kind == st.DOWNLOAD else "url")
        bucket = files if kind == st.DOWNLOAD else links
        if value and value not in bucket:
            bucket.append(value)
    return used


# --- building a summary -------------------------------------------------------------


def build_summary(notification: dict | None, rows: list[dict]) -> dict[str, Any]:
    """The summary of one notification (from :func:`.latest_notifications.latest_notifications`)."""
    deliveries = [_delivery_summary(row) for row in rows]
    counts = dict.fromkeys(st.STATUSES, 0)
    for delivery in deliveries:
        counts[delivery["status"]] += 1
    return {
        **describe(counts),
        "settled": all(delivery["settled"] for delivery in deliveries),
        "notification": _notification_summary(notification),
        "notification_count": notification["count"] if notification else 0,
        "sender_ids": notification["sender_ids"] if notification else [],
        "deliveries": deliveries,
    }


def describe(counts: dict[str, int]) -> dict[str, Any]:
    """State, completeness and label from the number of deliveries in each status.

    Returns ``state``, ``complete``, ``errors``, ``total``, ``counts``, ``reached``
    (how many deliveries reached each progress state) and ``label``.
    """
    counts = {status: counts.get(status, 0) for status in st.STATUSES}
    total = sum(counts.values())
    errors = sum(counts[status] for status in st.FAILURES)
    reached = _reached_counts(counts)
    state = _state(total, errors, reached)
    complete = state is not None and (
        errors == total if state == ERROR else reached[state] == total
    )
    return {
        "state": state,
        "complete": complete,
        "errors": errors,
        "total": total,
        "counts": counts,
        "reached": reached,
        "label": state_label(state, total=total, reached=reached, errors=errors, counts=counts),
    }


def _reached_counts(counts: dict[str, int]) -> dict[str, int]:
    """How many deliveries reached each progress state (a read one also reached sent)."""
    reached = dict.fromkeys(_PROGRESS_STATES, 0)
    for status, count in counts.items():
        stage = stage_of(status)
        if stage == ERROR:
            continue
        for state in _PROGRESS_STATES[: _PROGRESS_STATES.index(stage) + 1]:
            reached[state] += count
    return reached


def _state(total: int, errors: int, reached: dict[str, int]) -> str | None:
    if not total:
        return None
    if errors == total:
        return ERROR
    return next(state for state in reversed(_PROGRESS_STATES) if reached[state])


def _notification_summary(notification: dict | None) -> dict[str, Any] | None:
    if notification is None:
        return None
    return {
        "id": notification["id"],
        "subject": notification["subject"],
        "channel": notification["channel"],
        "created_at": notification["created_at"],
        "sender_id": notification["sender_id"],
    }


def _delivery_summary(row: dict) -> dict[str, Any]:
    reports_delivery, reports_reads = channel_reports(row["channel"])
    status = row["status"]
    summary_row = {
        "id": row["id"],
        "recipient": row["recipient"],
        "recipient_name": row["recipient_name"],
        "user_id": row["user_id"],
        "channel": row["channel"],
        "status": status,
        "status_label": str(STATUS_LABELS[status]),
        "stage": stage_of(status),
        "error": row["error"],
        "queued_at": row["created_at"],
        **{field: row[field] for field in TIMESTAMPS[1:]},
        **{field: row[field] for field in COUNTS},
        "reports_delivery": reports_delivery,
        "reports_reads": reports_reads,
        "tracks_opens": reports_reads and row["track_opens"],
        "links": row["links"],
        "files": row["files"],
    }
    summary_row["settled"] = _settled(summary_row)
    return summary_row


def _settled(delivery: dict) -> bool:
    """Whether nothing more is to be learned about this delivery's status."""
    status = delivery["status"]
    if st.is_failure(status) or status == st.CLICKED:
        return True
    if status == st.OPENED:
        return not delivery["reports_reads"]
    if status in (st.QUEUED, st.DEFERRED):
        return False
    # sent or delivered: only a channel that reports more can still move it
    if status == st.SENT:
        return not (delivery["reports_delivery"] or delivery["reports_reads"])
    return not delivery["reports_reads"]


def channel_reports(channel: str) -> tuple[bool, bool]:
    """(reports delivery, reports reads) of a channel; a channel no longer configured: no."""
    try:
        backend = get_channel(channel)
    except (ImproperlyConfigured, ImportError):
        return False, False
    return bool(backend.reports_delivery), bool(backend.reports_reads)


# --- labels ---------------------------------------------------------------------------


def state_label(
    state: str | None,
    *,
    total: int,
    reached: dict[str, int],
    errors: int,
    counts: dict[str, int],
) -> str:
    """The translated label of a badge: "Read by 2 of 3", "Delivered to all", "Error"..."""
    if state is None:
        return str(STATE_LABELS[None])
    if state == ERROR:
        return str(STATE_LABELS[ERROR])
    progress = _progress_label(state, reached[state], total, counts)
    if not errors:
        return progress
    failures = ngettext(
        "Error (%(count)s of %(total)s)", "Errors (%(count)s of %(total)s)", errors
    ) % {"count": errors, "total": total}
    return pgettext("badge label: progress; errors", "%(progress)s; %(errors)s") % {
        "progress": progress,
        "errors": failures,
    }


def _progress_label(state: str, count: int, total: int, counts: dict[str, int]) -> str:
    if state == QUEUED:
        return str(STATUS_LABELS[st.DEFERRED] if counts[st.DEFERRED] else STATE_LABELS[QUEUED])
    if total == 1:
        return str(STATE_LABELS[state])
    if count == total:
        return str(_ALL_LABELS[state])
    values = {"count": count, "total": total}
    if state == READ:
        return (
            ngettext("Read by %(count)s of %(total)s", "Read by %(count)s of %(total)s", count)
            % values
        )
    if state == DELIVERED:
        return (
            ngettext(
                "Delivered to %(count)s of %(total)s", "Delivered to %(count)s of %(total)s", count
            )
            % values
        )
    return (
        ngettext("Sent to %(count)s of %(total)s", "Sent to %(count)s of %(total)s", count) % values
    )


_ALL_LABELS = {
    READ: _("Read by all"),
    DELIVERED: _("Delivered to all"),
    SENT: _("Sent"),
}


# --- timelines ------------------------------------------------------------------------

#: The most events :func:`timelines` returns for one target (the newest ones).
TIMELINE_LIMIT = 500


def timelines(
    summary_value: dict[str, Any], limit: int = TIMELINE_LIMIT
) -> tuple[dict[int, list[dict]], bool]:
    """The events of a summary's deliveries, oldest first, grouped by delivery id.

    One query. Returns ``(events by delivery id, truncated)``: past ``limit`` events,
    the oldest are left out and ``truncated`` is True.
    """
    ids = [delivery["id"] for delivery in summary_value["deliveries"]]
    if not ids:
        return {}, False
    newest = list(
        DeliveryEvent.objects.filter(delivery_id__in=ids).order_by("-occurred_at", "-id")[
            : limit + 1
        ]
    )
    grouped: dict[int, list[dict]] = defaultdict(list)
    for event in reversed(newest[:limit]):
        grouped[event.delivery_id].append(_event_summary(event))
    return grouped, len(newest) > limit


def _event_summary(event: DeliveryEvent) -> dict[str, Any]:
    details = event.details or {}
    return {
        "kind": event.kind,
        "kind_label": str(event.get_kind_display()),
        "occurred_at": event.occurred_at,
        "source": event.source,
        "source_label": str(event.get_source_display()),
        "is_machine": event.is_machine,
        "url": details.get("url"),
        "filename": details.get("filename"),
        "error": details.get("error"),
    }
