"""The activity log's and the purge's queries can be answered from indexes.

On PostgreSQL sequential scans are switched off for the test (a table of a few rows is
cheaper to scan, so the planner would not show the index otherwise): a plan that still
reads the whole table means no index can serve the query. docs/activity-log.md has
the plans on a million deliveries.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from notify_tracking.activity.filters import search
from notify_tracking.models import Delivery
from notify_tracking.retention import expired_notifications
from tests.activity_support import make_notification
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture
def tasks(db):
    """Two hundred tasks, each notified to two people on a different day."""
    tasks = Task.objects.bulk_create(Task(title=f"Task {index}") for index in range(200))
    for age, task in enumerate(tasks):
        make_notification(
            task, [f"user{age}@example.com", f"other{age}@example.com"], age=age * DAY
        )
    return tasks


@pytest.fixture(autouse=True)
def no_sequential_scans(tasks):
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("ANALYZE")


def plan(queryset) -> str:
    return queryset.explain()


def test_recipient_search_reads_the_upper_recipient_index():
    # The search is case-insensitive: UPPER(recipient) = UPPER(...), from the index on
    # that expression. SQLite answers iexact with LIKE ... ESCAPE, which no index serves.
    if connection.vendor != "postgresql":
        pytest.skip("SQLite answers LIKE ... ESCAPE by scanning; CI runs this on PostgreSQL")
    query = plan(search({"recipient": "User3@Example.COM"})[:51])
    assert "nt_deliv_recipient_upper" in query, query
    assert "Seq Scan" not in query, query


@pytest.mark.parametrize("prefix", ["user3", "USER3@", "us%er", "u_er"])
def test_recipient_prefix_search_reads_the_upper_recipient_index(prefix):
    # text_pattern_ops (migration 0004) lets LIKE 'USER3%' use the index under any
    # collation; the escaped wildcards stay literal and keep the prefix range.
    if connection.vendor != "postgresql":
        pytest.skip("SQLite answers LIKE ... ESCAPE by scanning; CI runs this on PostgreSQL")
    query = plan(search({"recipient_prefix": prefix})[:51])
    assert "nt_deliv_recipient_upper" in query, query
    assert "~>=~" in query, query  # a range on the index, not a filter after a scan


def test_the_recipient_index_has_the_pattern_operator_class():
    if connection.vendor != "postgresql":
        pytest.skip("operator classes exist on PostgreSQL only")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'nt_deliv_recipient_upper'"
        )
        (definition,) = cursor.fetchone()
    assert "upper((recipient)::text) text_pattern_ops" in definition, definition


def test_target_search_reads_the_target_index(tasks):
    assert "nt_notif_target" in plan(search({"target": f"testapp.task:{tasks[7].pk}"})[:51])


def test_time_range_reads_the_created_index():
    since = (timezone.now() - 2 * DAY).isoformat()
    assert "nt_deliv_created" in plan(search({"since": since})[:51])


def test_the_purge_selects_by_the_created_at_index():
    selection = expired_notifications(timezone.now() - 100 * DAY)[0]
    batch = selection.order_by("created_at", "pk").values_list("created_at", "pk")[:1000]
    assert "created_at" in plan(batch)
    assert "notify_tracking_notification_created_at" in plan(batch)


def test_the_purge_finds_deliveries_by_the_notification_index():
    ids = list(Delivery.objects.values_list("notification_id", flat=True)[:5])
    batch = Delivery.objects.filter(notification_id__in=ids).order_by().values_list("pk")[:1000]
    assert "notify_tracking_delivery_notification_id" in plan(batch)
