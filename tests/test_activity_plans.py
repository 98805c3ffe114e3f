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


def test_recipient_search_reads_the_recipient_index():
    assert "nt_deliv_recipient" in plan(search({"recipient": "user3@example.com"})[:51])


def test_recipient_prefix_search_reads_an_index():
    # On PostgreSQL LIKE 'x%' needs the varchar_pattern_ops index (non-C collations).
    # SQLite cannot serve Django's LIKE ... ESCAPE from any index: PostgreSQL only.
    if connection.vendor != "postgresql":
        pytest.skip("SQLite answers LIKE ... ESCAPE by scanning; CI runs this on PostgreSQL")
    query = plan(search({"recipient_prefix": "user3"})[:51])
    assert "nt_deliv_recipient" in query, query


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
