"""Inserting many new rows of one model at once: ``COPY`` on PostgreSQL, else ``bulk_create``.

``record_events()`` inserts every event of a batch together. With psycopg 3 on
PostgreSQL, ``bulk_create`` quotes the rows in Python (as ``UNNEST`` arrays, element by
element) after Django has compiled each value; ``COPY … FROM STDIN`` sends the same
values in psycopg's C code. The worker that applies pixel opens spends about a tenth
less CPU per open for it (docs/performance.md, "Cheaper events for the worker"). The
ids come first from the pk's sequence (``nextval``, one query, in the order of the
instances), so that each instance gets its primary key as ``bulk_create`` gives it.

That is three round trips to the database (the ids, the ``COPY`` and its data)
where ``bulk_create`` makes one, so fewer than ``COPY_FROM`` rows (a single event:
every send result) still go by ``bulk_create``: on a database across a network the
round trips would cost more time than the quoting saves.

What stays as ``bulk_create`` does it: related objects are checked as for a save,
each value is prepared by its own field (``pre_save``, so ``auto_now_add`` fills in,
then ``get_db_prep_save``), errors are Django's (``IntegrityError``, ``DataError``),
and no signal is sent. It differs in what watches queries: the ``COPY`` is one entry
of ``connection.queries`` when queries are logged (DEBUG, ``CaptureQueriesContext``;
its time there is about 0, as Django times only the creation of psycopg's copy
context), but ``connection.execute_wrapper()`` wrappers and tools that patch
``execute`` do not see it. A value that psycopg refuses while the rows are sent (a
NUL in a text) aborts the transaction, where ``bulk_create`` would fail before
sending anything; call it inside ``transaction.atomic()``. PostgreSQL applies no
``INSERT`` rules to a ``COPY`` and refuses one into a table under row-level security.

It is ``bulk_create`` itself elsewhere (SQLite, MySQL, psycopg2), and whenever the
fast way would not store what ``bulk_create`` stores: a model with a parent table, a
generated or database-default field, an instance whose pk is set, a value that is an
expression, or a pk without a sequence this database user may draw from (``USAGE``
on it: an ``INSERT`` does not need that right, ``nextval`` does; docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connections, models

M = TypeVar("M", bound=models.Model)

#: The fewest rows sent by COPY. On localhost a COPY beat bulk_create in CPU and time
#: from one row (399 against 625 µs of CPU), by 1.6 ms for 10 rows: enough to pay
#: two more round trips of a database a few hundred µs away.
COPY_FROM = 10

#: New ids from the pk's sequence, or NULLs when there is none or the user may not use it.
_NEXT_IDS = (
    "SELECT CASE WHEN has_sequence_privilege(seq, 'USAGE, UPDATE') THEN nextval(seq) END "
    "FROM (SELECT pg_get_serial_sequence(%s, %s)::regclass AS seq) AS s, "
    "generate_series(1, %s) ORDER BY 1"
)


def insert_new(model: type[M], objs: Sequence[M], using: str) -> None:
    """Insert these new instances of ``model`` on database ``using``; each gets its pk,
    in ascending order of the list."""
    if not objs:
        return
    connection = connections[using]
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    fields = [field for field in meta.concrete_fields if field is not pk]
    rows = _rows(objs, fields, connection) if _can_copy(model, objs, connection) else None
    if rows is None:
        model._default_manager.using(using).bulk_create(objs)
        return
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_IDS, [table, pk.column, len(objs)])
        ids = [row[0] for row in cursor.fetchall()]
        if None in ids:  # no sequence behind the pk, or no right to use it
            model._default_manager.using(using).bulk_create(objs)
            return
        columns = ", ".join(quote(field.column or field.name) for field in (pk, *fields))
        # Identifiers from the model, quoted; every value goes as COPY data.
        with (
            connection.wrap_database_errors,
            cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for new_id, row in zip(ids, rows, strict=True):
                copy.write_row([new_id, *row])
    for obj, new_id in zip(objs, ids, strict=True):
        obj.pk = new_id
        obj._state.adding = False
        obj._state.db = using


def _can_copy(model: type[models.Model], objs: Sequence[models.Model], connection: Any) -> bool:
    """PostgreSQL through psycopg 3 (whose cursors have ``copy()``), at least
    ``COPY_FROM`` rows, and rows that ``bulk_create`` would insert as they are, all
    columns given."""
    if connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg":
        return False
    if len(objs) < COPY_FROM:
        return False
    meta = model._meta
    if meta.parents or any(obj.pk is not None for obj in objs):
        return False
    # Django 5.0+: generated fields and database defaults (attributes absent before).
    return not any(
        getattr(field, "generated", False) or _has_db_default(field)
        for field in meta.concrete_fields
    )


def _has_db_default(field: models.Field) -> bool:
    return getattr(field, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED


def _rows(
    objs: Sequence[models.Model], fields: list[models.Field], connection: Any
) -> list[list[Any]] | None:
    """The values of each instance, as its fields prepare them for an INSERT; None if
    one is an expression (``bulk_create`` compiles those into the statement)."""
    rows = []
    for obj in objs:
        # bulk_create's own check (not in django-stubs): an unsaved related object is
        # refused, and a foreign key saved since it was set is taken up.
        obj._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]
        row = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
        if any(hasattr(value, "resolve_expression") for value in row):
            return None
        rows.append(row)
    return rows
