"""What the badge of a target shows: :func:`summary` for one, :func:`summaries` for many.

A target (a task, a comment...) may have been notified several times; its summary
describes its **latest** notification (the last created: the highest id), whose deliveries are
one per recipient and channel. ``notification_count`` tells how many there were.

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
from django.db import connections, models, router
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, pgettext

from . import status as st
from .conf import get_channel
from .models import STATUS_LABELS, Delivery, DeliveryEvent, Notification

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
    notifications = _latest_notifications(keys)
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
    notifications = _latest_notification_counts(keys)
    described: dict[tuple[int, ...], dict[str, Any]] = {}  # a list repeats few combinations
    for target, key in zip(targets, keys, strict=True):
        latest = notifications.get(key)
        counts = latest["counts"] if latest else (0,) * len(st.STATUSES)
        if counts not in described:
            described[counts] = describe(dict(zip(st.STATUSES, counts, strict=True)))
        result.add(
            target,
            key,
            {
                **described[counts],
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
        if content_type_id is None or target.pk is None:
            key = _key_of(target)
            self._content_types[type(target)] = key[0]
            return key
        return content_type_id, str(target.pk)

    def add(self, target: models.Model, key: tuple[int, str], value: dict[str, Any]) -> None:
        known = self._by_key.get(key)
        self._by_key[key] = value
        if known is None and target.pk in self:
            self._ambiguous.add(target.pk)
            dict.__delitem__(self, target.pk)
        elif target.pk not in self._ambiguous:
            dict.__setitem__(self, target.pk, value)

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


def _latest_notifications(keys: list[tuple[int, str]]) -> dict[tuple[int, str], dict]:
    """For each target key, its latest notification (a dict) with ``count`` and ``sender_ids``."""
    condition = _targets_condition(keys)
    if condition is None:
        return {}
    rows = (
        Notification.objects.filter(condition)
        .order_by("id")  # the last created is the latest (as in _count_rows)
        .values(
            "id", "content_type_id", "object_id", "subject", "channel", "sender_id", "created_at"
        )
    )
    latest: dict[tuple[int, str], dict] = {}
    for row in rows:
        key = (row["content_type_id"], row["object_id"])
        previous = latest.get(key)
        senders = previous["sender_ids"] if previous else []
        latest[key] = {
            **row,
            "count": previous["count"] + 1 if previous else 1,
            "sender_ids": sorted({*senders, row["sender_id"]} - {None}),
        }
    return latest


def _latest_notification_counts(keys: list[tuple[int, str]]) -> dict[tuple[int, str], dict]:
    """For each target key: its latest notification's delivery counts per status (a tuple
    in the order of ``status.STATUSES``), how many notifications it had, their senders.

    One query (:func:`_count_rows`): a row per target and sender, with that sender's
    latest notification of the target; the latest of them all (the last row, by id)
    is the target's.
    """
    wanted: dict[int, set[str]] = defaultdict(set)
    for content_type_id, object_id in keys:
        wanted[content_type_id].add(object_id)
    if not wanted:
        return {}
    latest: dict[tuple[int, str], dict] = {}
    per_sender: dict[tuple[int, str], dict[Any, int]] = defaultdict(dict)
    for notification_id, content_type_id, object_id, sender_id, count, *counts in _count_rows(
        wanted
    ):
        key = (content_type_id, object_id)
        per_sender[key][sender_id] = count
        latest[key] = {"id": notification_id, "counts": tuple(counts)}
    for key, entry in latest.items():
        senders = per_sender[key]
        entry["count"] = sum(senders.values())
        entry["sender_ids"] = sorted(sender for sender in senders if sender is not None)
    return latest


_COUNT_ROWS_SQL = (
    "SELECT latest.id, MAX(latest.content_type), MAX(latest.object), MAX(latest.sender),"
    " MAX(latest.notifications), {counts}"
    " FROM (SELECT MAX({n_id}) AS id, {n_type} AS content_type, {n_object} AS object,"
    " {n_sender} AS sender, COUNT(*) AS notifications FROM {notifications}"
    " WHERE {conditions} GROUP BY {n_type}, {n_object}, {n_sender}) latest"
    " LEFT JOIN {deliveries} d ON d.{d_notification} = latest.id"
    " GROUP BY latest.id ORDER BY latest.id"
)


def _count_rows(wanted: dict[int, set[str]]) -> list[tuple]:
    """``(notification id, content type id, object id, sender id, notifications, *counts)``
    per target and sender of its notifications (None for those without a sender): the
    sender's latest notification of the target, how many of them the target had, and
    its deliveries in each status of ``status.STATUSES``, in that order; by id.

    Only these notifications' deliveries are counted: a target notified a thousand
    times costs a row per sender, not a row per notification and a count of all their
    deliveries. The latest notification is the highest id, the last created (as
    :func:`_latest_notifications`): the database finds it by primary key, where the
    newest ``created_at`` would need a join back that PostgreSQL plans badly on tables
    it has not analyzed (docs/performance.md).

    Written in SQL rather than with the ORM: the ORM's compiling of this query (a
    condition per content type, a parameter per target, a count per status) cost as
    much as running it, for every list page. Each status is counted by a
    ``COUNT(CASE …)`` (one row per notification, not per status). Plain SQL-92 (a
    derived table, JOIN, GROUP BY, CASE, IN): any database Django supports; on
    PostgreSQL the object ids are one array parameter (``= ANY``).
    """
    connection = connections[router.db_for_read(Notification)]
    quote = connection.ops.quote_name

    def column(model: type[models.Model], field: str) -> str:
        concrete = model._meta.get_field(field)
        assert isinstance(concrete, models.Field) and concrete.column  # a concrete column
        return quote(concrete.column)

    names = {
        "notifications": quote(Notification._meta.db_table),
        "deliveries": quote(Delivery._meta.db_table),
        "n_id": column(Notification, "id"),
        "n_type": column(Notification, "content_type"),
        "n_object": column(Notification, "object_id"),
        "n_sender": column(Notification, "sender"),
        "d_notification": column(Delivery, "notification"),
        "d_status": column(Delivery, "status"),
    }
    counts = ", ".join(
        f"COUNT(CASE WHEN d.{names['d_status']} = %s THEN 1 END)" for _status in st.STATUSES
    )
    conditions: list[str] = []
    params: list[Any] = list(st.STATUSES)
    for content_type_id, object_ids in wanted.items():
        values: list[Any]
        if connection.vendor == "postgresql":
            # One array parameter: the same statement text for 2 targets or 200.
            condition, values = "= ANY(%s)", [sorted(object_ids)]
        else:
            condition = "IN ({})".format(", ".join(["%s"] * len(object_ids)))
            values = sorted(object_ids)
        conditions.append(f"({names['n_type']} = %s AND {names['n_object']} {condition})")
        params += [content_type_id, *values]
    # Names are quoted from the models' _meta; every value is a parameter.
    sql = _COUNT_ROWS_SQL.format(**names, counts=counts, conditions=" OR ".join(conditions))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _targets_condition(keys: list[tuple[int, str]]) -> Q | None:
    """The notifications of these target keys (None when there are none)."""
    wanted: dict[int, set[str]] = defaultdict(set)
    for content_type_id, object_id in keys:
        wanted[content_type_id].add(object_id)
    if not wanted:
        return None
    condition = Q()
    for content_type_id, object_ids in wanted.items():
        condition |= Q(content_type_id=content_type_id, object_id__in=sorted(object_ids))
    return condition


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
    """The summary of one notification (a row of :func:`_latest_notifications`)."""
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
