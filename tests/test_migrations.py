"""The app's migrations: none locks the writes of the deliveries table.

A plain CREATE INDEX (or DROP INDEX) on PostgreSQL blocks every write to the table for
as long as it takes, and sending writes there. Each index change of the deliveries
table after its creation, forwards and backwards, must run CONCURRENTLY, outside a
transaction (notify_tracking/migrations/_operations.py). SQLite has no such thing.
"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="CONCURRENTLY is PostgreSQL's"),
]


def _sql(name: str, direction: str) -> str:
    out = StringIO()
    options = {"backwards": True} if direction == "backwards" else {}
    call_command("sqlmigrate", "notify_tracking", name, stdout=out, **options)
    return out.getvalue()


def _delivery_index_changes() -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(migration, direction) -> (its SQL, its index statements on the deliveries
    table), for each migration after the one that creates the table."""
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    names = sorted(name for app, name in graph.nodes if app == "notify_tracking")
    changes = {}
    for name in names[1:]:
        for direction in ("forwards", "backwards"):
            sql = _sql(name, direction)
            statements = [
                statement
                for statement in re.split(r";\s*\n", sql)
                if re.search(r"\b((CREATE( UNIQUE)?|DROP) INDEX|ADD CONSTRAINT)\b", statement)
                and ('"notify_tracking_delivery"' in statement or "nt_deliv_" in statement)
            ]
            if statements:
                changes[name, direction] = (sql, statements)
    return changes


def test_no_index_change_locks_the_deliveries_table():
    changes = _delivery_index_changes()

    assert set(changes) >= {
        ("0002_recipient_prefix_index", "forwards"),
        ("0002_recipient_prefix_index", "backwards"),
        ("0004_recipient_case_insensitive_indexes", "forwards"),
        ("0004_recipient_case_insensitive_indexes", "backwards"),
    }
    for (name, direction), (sql, statements) in changes.items():
        for statement in statements:
            assert "CONCURRENTLY" in statement, (name, direction, statement)
        assert "BEGIN;" not in sql, (name, direction)  # atomic = False
