"""Writing the summary fields of the deliveries a batch of events changed.

``record_events()`` applies a batch of events to the deliveries it locked, then saves
what changed in each: only the fields whose value differs (and ``updated_at``). On
PostgreSQL the deliveries whose changed fields are the same (most of a batch of
opens: the counts and the last open) are written by one ``UPDATE … FROM (VALUES …)``;
elsewhere, and for a lone delivery, by one ``UPDATE`` each. ``bulk_update``'s
``CASE`` expressions were measured slower than either: they cost more to compile
than the statements they save.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, models

from .models import Delivery, DeliveryEvent, concrete_field, write_db

_UPDATE_FROM_VALUES = (
    "UPDATE {table} AS d SET {sets} FROM (VALUES {rows}) AS v ({columns}) WHERE d.{pk} = v.{pk}"
)
#: Deliveries per UPDATE … FROM (VALUES …) (a few fields each: far below PostgreSQL's
#: 65,535 parameters).
ROWS_PER_STATEMENT = 1000


@dataclass
class Change:
    """One delivery after a batch of events: its summary before, and after (itself)."""

    delivery: Delivery
    old_status: str
    before: dict[str, Any]
    last_event: DeliveryEvent


def write(changes: Iterable[Change], now: dt.datetime) -> None:
    """Save the summary fields that changed in each delivery, and ``updated_at = now``."""
    by_fields: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
    for change in changes:
        change.delivery.updated_at = now
        changed = {
            name: getattr(change.delivery, name)
            for name, value in change.before.items()
            if getattr(change.delivery, name) != value
        }
        changed["updated_at"] = now
        by_fields.setdefault(tuple(changed), []).append((change.delivery.pk, changed))
    alias = write_db()
    for fields, rows in by_fields.items():
        update_rows(alias, fields, rows)


def update_rows(alias: str, names: tuple[str, ...], rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Set fields ``names`` of each delivery of ``rows`` (its pk, and its values by
    name) on database ``alias``: by ``UPDATE … FROM (VALUES …)`` on PostgreSQL, else by
    one ``UPDATE`` each."""
    if connections[alias].vendor == "postgresql" and len(rows) > 1:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            _update_from_values(alias, names, rows[start : start + ROWS_PER_STATEMENT])
    else:
        for pk, changed in rows:
            Delivery.objects.using(alias).filter(pk=pk).update(**changed)


def _update_from_values(
    alias: str, names: tuple[str, ...], rows: list[tuple[int, dict[str, Any]]]
) -> None:
    """One UPDATE of these fields of these deliveries (PostgreSQL), each value a
    parameter prepared and cast by its own field."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    pk_field = Delivery._meta.pk
    assert pk_field is not None
    fields = [pk_field, *(_field(name) for name in names)]
    casts = [_cast(field, connection) for field in fields]
    one_row = "({})".format(", ".join(f"%s::{cast}" for cast in casts))
    columns = [quote(field.column or field.name) for field in fields]
    # Identifiers and types from the model, quoted; every value is a query parameter.
    sql = _UPDATE_FROM_VALUES.format(
        table=quote(Delivery._meta.db_table),
        sets=", ".join(f"{column} = v.{column}" for column in columns[1:]),
        rows=", ".join([one_row] * len(rows)),
        columns=", ".join(columns),
        pk=columns[0],
    )
    params: list[Any] = []
    for pk, changed in rows:
        params.append(pk_field.get_db_prep_value(pk, connection))
        params.extend(
            field.get_db_prep_save(changed[field.name], connection) for field in fields[1:]
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _cast(field: models.Field, connection: Any) -> str:
    """The type a value of ``field`` is cast to in VALUES. Text without a length: a cast
    to ``varchar(n)`` would cut a longer value silently, the column refuses it."""
    if isinstance(field, models.CharField):
        return str(connection.ops.cast_char_field_without_max_length)
    return str(field.cast_db_type(connection))


def _field(name: str) -> models.Field:
    return concrete_field(Delivery, name)
