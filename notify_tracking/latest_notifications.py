"""The latest notification of each of many targets, in one query whatever their number.

A target's **latest** notification is its last created: the highest id (the order of
a sequence or an auto-increment column; not of an Oracle RAC identity cached per
instance). Both readers start from the same derived table, the latest notification
of each target *and sender* with how many notifications that sender sent about it,
so that a target notified a thousand times costs a row per sender, not a thousand:

- :func:`latest_notifications` (for ``summaries()``): the target's latest
  notification's own fields, how many notifications the target had, who sent them;
- :func:`latest_notification_counts` (for ``badge_states()``): the same counts and
  senders, and the latest notification's deliveries in each status (the deliveries
  of each sender's latest notification are counted, the target's latest is kept).

Written in SQL rather than with the ORM: the ORM's compiling of these queries (a
condition per content type, a parameter per target, a count per status, a subquery)
cost more than running them, for every list page and popup. Plain SQL (a derived
table, JOIN, GROUP BY, CASE, IN, no ``AS`` before a table alias), tested on SQLite
and PostgreSQL. On PostgreSQL the targets are two array parameters (the same
statement text for 2 targets or 200) whose notifications are looked up target by
target, and the badges' counts come from a ``LATERAL`` subquery
(:data:`_LATEST_OF_EACH_SENDER_LATERAL`, :data:`_COUNTS_LATERAL`): index look-ups
with fresh statistics and without (the two states measured). Elsewhere the object ids
go in ``IN`` lists no longer than the backend accepts.
The highest id, rather than the newest ``created_at``, makes the latest notification
a primary-key look-up: a join back on ``created_at`` was planned badly by PostgreSQL
on tables it had not analyzed (docs/performance.md).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper

from . import status as st
from .models import Delivery, Notification, concrete_field

#: ``(content type id, object id)`` of a target, as a Notification stores it.
Key = tuple[int, str]

_LATEST_OF_EACH_SENDER = (
    "SELECT MAX({n_id}) AS id, {n_type} AS target_type, {n_object} AS target_object,"
    " {n_sender} AS sender, COUNT(*) AS notifications FROM {notifications}"
    " WHERE {conditions} GROUP BY {n_type}, {n_object}, {n_sender}"
)
#: The same rows on PostgreSQL, target by target: each target's notifications are looked
#: up by the ``(content_type, object_id)`` index on both columns. Without statistics
#: PostgreSQL answered ``object_id = ANY(...)`` by reading every notification of the
#: content type and testing each against every id (2.9 ms for a page of 200 beside
#: 5,000 notifications of other comments, in the benchmarks' database).
_LATEST_OF_EACH_SENDER_LATERAL = (
    "SELECT latest.id, t.target_type, t.target_object, latest.sender, latest.notifications"
    " FROM unnest(%s::integer[], %s::text[]) t(target_type, target_object)"
    " CROSS JOIN LATERAL (SELECT MAX({n_id}) AS id, {n_sender} AS sender,"
    " COUNT(*) AS notifications FROM {notifications}"
    " WHERE {n_type} = t.target_type AND {n_object} = t.target_object"
    " GROUP BY {n_sender}) latest"
)
#: Each statement's rows start with (id, content type id, object id, sender id,
#: notifications of this sender about the target), one row per target and sender, by id.
_NOTIFICATIONS = (
    "SELECT latest.id, latest.target_type, latest.target_object, latest.sender,"
    " latest.notifications, n.{n_subject}, n.{n_channel}, n.{n_created}"
    " FROM ({latest}) latest JOIN {notifications} n ON n.{n_id} = latest.id"
    " ORDER BY latest.id"
)
_COUNTS = (
    "SELECT latest.id, MAX(latest.target_type), MAX(latest.target_object), MAX(latest.sender),"
    " MAX(latest.notifications), {counts}"
    " FROM ({latest}) latest LEFT JOIN {deliveries} d ON d.{d_notification} = latest.id"
    " GROUP BY latest.id ORDER BY latest.id"
)
#: The same on PostgreSQL: each latest notification's deliveries counted in a LATERAL
#: subquery, which the planner cannot turn into a join over the whole table: it looked
#: them up by their index with statistics and without. The join above was planned as a
#: hash join over every delivery: 7.7 ms instead of 2.3 for 200 targets beside 20,000
#: analyzed deliveries, 7.3 instead of 4.6 without statistics (a join on a range, the
#: other way to forbid the hash, became a scan of every delivery per target there:
#: 178 ms). See docs/performance.md and tests/test_badge_plans.py.
_COUNTS_LATERAL = (
    "SELECT latest.id, latest.target_type, latest.target_object, latest.sender,"
    " latest.notifications, counted.* FROM ({latest}) latest"
    " CROSS JOIN LATERAL (SELECT {counts} FROM {deliveries} d"
    " WHERE d.{d_notification} = latest.id) counted ORDER BY latest.id"
)


def latest_notifications(keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """For each target key: its latest notification's ``id``, ``content_type_id``,
    ``object_id``, ``subject``, ``channel``, ``sender_id`` and ``created_at``, with
    ``count`` (its notifications) and ``sender_ids`` (who sent them)."""
    connection = connections[router.db_for_read(Notification)]
    created_at = concrete_field(Notification, "created_at")
    # What the ORM would do to the value: on SQLite a string becomes an aware datetime.
    column = created_at.get_col(Notification._meta.db_table)
    converters = connection.ops.get_db_converters(column)
    rows = _select(connection, _NOTIFICATIONS, keys)
    sender_pk = _sender_pk(connection)
    found: dict[Key, dict[str, Any]] = {}
    for key, (row, count, sender_ids) in _by_target(rows, sender_pk).items():
        notification_id, content_type_id, object_id, sender_id, _, subject, channel, at = row
        for converter in converters:
            at = converter(at, column, connection)
        found[key] = {
            "id": notification_id,
            "content_type_id": content_type_id,
            "object_id": object_id,
            "subject": subject,
            "channel": channel,
            "sender_id": None if sender_id is None else sender_pk(sender_id),
            "created_at": at,
            "count": count,
            "sender_ids": sender_ids,
        }
    return found


def latest_notification_counts(keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """For each target key: its latest notification's ``id`` and ``counts``, its
    deliveries in each status (a tuple in the order of ``status.STATUSES``), with
    ``count`` (its notifications) and ``sender_ids`` (who sent them)."""
    connection = connections[router.db_for_read(Notification)]
    if _lateral(connection):
        # The statuses' placeholders come after the derived table's in the text.
        rows = _select(connection, _COUNTS_LATERAL, keys, trailing=st.STATUSES)
    else:
        # Elsewhere they come first (SQLite looks each row up by index anyway).
        rows = _select(connection, _COUNTS, keys, leading=st.STATUSES)
    by_target = _by_target(rows, _sender_pk(connection))
    return {
        key: {"id": row[0], "counts": tuple(row[5:]), "count": count, "sender_ids": sender_ids}
        for key, (row, count, sender_ids) in by_target.items()
    }


def _by_target(
    rows: list[tuple], sender_pk: Callable[[Any], Any]
) -> dict[Key, tuple[tuple, int, list[Any]]]:
    """``{key: (latest row, notifications, sender ids)}`` from rows that come one per
    target and sender, by id: the last row of a target is its latest notification.
    ``sender_pk`` turns a sender column's value into the user's pk."""
    latest: dict[Key, tuple] = {}
    counts: dict[Key, int] = defaultdict(int)
    senders: dict[Key, set[Any]] = defaultdict(set)
    for row in rows:
        key = (row[1], row[2])
        latest[key] = row
        counts[key] += row[4]
        if row[3] is not None:
            senders[key].add(sender_pk(row[3]))
    return {key: (row, counts[key], sorted(senders[key])) for key, row in latest.items()}


def _sender_pk(connection: BaseDatabaseWrapper) -> Callable[[Any], Any]:
    """What the ORM does to a sender column's value: from SQLite, a user model whose
    pk is a UUID gets a string, which must become the ``UUID`` that ``user.pk`` is."""
    column = concrete_field(Notification, "sender").get_col(Notification._meta.db_table)
    converters = [
        *connection.ops.get_db_converters(column),
        *column.get_db_converters(connection),
    ]

    def convert(value: Any) -> Any:
        for converter in converters:
            value = converter(value, column, connection)
        return value

    return convert


def _select(
    connection: BaseDatabaseWrapper,
    template: str,
    keys: Iterable[Key],
    *,
    leading: Sequence[Any] = (),
    trailing: Sequence[Any] = (),
) -> list[tuple]:
    """The rows of ``template`` (:data:`_NOTIFICATIONS`, :data:`_COUNTS` or
    :data:`_COUNTS_LATERAL`) for the targets of ``keys``, ``leading`` and ``trailing``
    the values of the placeholders before and after the derived table's; no query when
    there are no targets."""
    wanted: dict[int, set[str]] = defaultdict(set)
    for content_type_id, object_id in keys:
        wanted[content_type_id].add(object_id)
    if not wanted:
        return []
    names = _names(connection.alias)
    # Names are quoted from the models' _meta; every value is a parameter.
    if _lateral(connection):
        pairs = [(content_type_id, id_) for content_type_id, ids in wanted.items() for id_ in ids]
        params: list[Any] = [[pair[0] for pair in pairs], [pair[1] for pair in pairs]]
        latest = _LATEST_OF_EACH_SENDER_LATERAL.format(**names)
    else:
        conditions, params = _conditions(connection, names, wanted)
        latest = _LATEST_OF_EACH_SENDER.format(**names, conditions=conditions)
    sql = template.format(**names, latest=latest)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*leading, *params, *trailing])
        return cursor.fetchall()


def _lateral(connection: BaseDatabaseWrapper) -> bool:
    """Whether the statements go target by target through ``LATERAL`` subqueries
    (:data:`_LATEST_OF_EACH_SENDER_LATERAL`, :data:`_COUNTS_LATERAL`): on PostgreSQL."""
    return connection.vendor == "postgresql"


def _conditions(
    connection: BaseDatabaseWrapper, names: dict[str, str], wanted: dict[int, set[str]]
) -> tuple[str, list[Any]]:
    """``WHERE`` of the targets' notifications (not on PostgreSQL): per content type,
    its object ids in ``IN`` lists of at most ``max_in_list_size()``."""
    conditions: list[str] = []
    params: list[Any] = []
    for content_type_id, object_ids in wanted.items():
        ids = sorted(object_ids)
        size = connection.ops.max_in_list_size() or len(ids)  # Oracle: 1,000
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            placeholders = ", ".join(["%s"] * len(chunk))
            conditions.append(
                f"({names['n_type']} = %s AND {names['n_object']} IN ({placeholders}))"
            )
            params += [content_type_id, *chunk]
    return " OR ".join(conditions), params


@functools.cache
def _names(alias: str) -> dict[str, str]:
    """The quoted table and column names the statements use on database ``alias``, and
    ``counts``, the deliveries' count per status; built once per process (a list page
    of badges asks for them each time)."""
    quote = connections[alias].ops.quote_name

    def column(model: type[models.Model], name: str) -> str:
        return quote(str(concrete_field(model, name).column))

    status = column(Delivery, "status")
    return {
        "counts": ", ".join(f"COUNT(CASE WHEN d.{status} = %s THEN 1 END)" for _ in st.STATUSES),
        "notifications": quote(Notification._meta.db_table),
        "deliveries": quote(Delivery._meta.db_table),
        "n_id": column(Notification, "id"),
        "n_type": column(Notification, "content_type"),
        "n_object": column(Notification, "object_id"),
        "n_subject": column(Notification, "subject"),
        "n_channel": column(Notification, "channel"),
        "n_sender": column(Notification, "sender"),
        "n_created": column(Notification, "created_at"),
        "d_notification": column(Delivery, "notification"),
    }
