"""badge_states() looks up the targets' notifications and their deliveries by index.

Its statement starts from the latest notifications (a derived table) and counts their
deliveries. PostgreSQL estimates the derived table's rows badly: with statistics, a
join on ``=`` was planned as a hash join over every delivery of the table (7.7 ms
instead of 2.3 at 20,000 deliveries); without them, a join on a range as a scan of
every delivery per notification (178 ms). On PostgreSQL the deliveries are counted
in a ``LATERAL`` subquery instead, and each target's notifications are looked up by
the ``(content_type, object_id)`` index (without statistics, ``object_id = ANY(...)``
was tested against every notification of the content type; with an index on
``content_type`` alone beside it, PostgreSQL chose that one for a page in tables no
ANALYZE had seen, and filtered the same rows: migration 0005 drops it). These tests
give the planner such a table, with its statistics and with those of the table before
(the rows are never committed: autovacuum does not see them), and the page alone in
tables as new, and read its plan.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext

from notify_tracking.aggregate import badge_states
from notify_tracking.models import Delivery, Notification
from tests.activity_support import make_notification
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db

PAGE = 200
#: Notifications of a target not on the page, and deliveries of each.
BUSY_NOTIFICATIONS, BUSY_DELIVERIES = 4000, 5


@pytest.fixture(params=["analyzed", "statistics as left before", "the page alone"])
def page(request, db):
    """A page of 200 tasks notified to 3 people each, beside a task notified thousands of
    times (its 20,000 deliveries make the delivery table worth hashing); or, "the page
    alone", without it: notification tables of 200 rows that no ANALYZE has seen, as in
    a new database where autovacuum is off or has not yet run (the bench's)."""
    if request.param == "the page alone":
        _as_new_tables(Notification, Delivery)
    tasks = Task.objects.bulk_create(Task(title=f"Task {index}") for index in range(PAGE))
    for index, task in enumerate(tasks):
        make_notification(task, [f"user{index}.{k}@example.com" for k in range(3)])
    if request.param == "the page alone":
        return tasks
    busy = Task.objects.create(title="Busy")
    template = make_notification(busy, ["busy@example.com"])
    delivery = template.deliveries.get()
    notifications = Notification.objects.bulk_create(
        Notification(
            content_type_id=template.content_type_id,
            object_id=template.object_id,
            channel=template.channel,
            subject=template.subject,
        )
        for _ in range(BUSY_NOTIFICATIONS)
    )
    Delivery.objects.bulk_create(
        (
            Delivery(
                notification=notification,
                recipient=f"{index}.{k}@example.com",
                channel=delivery.channel,
                status=delivery.status,
            )
            for index, notification in enumerate(notifications)
            for k in range(BUSY_DELIVERIES)
        ),
        batch_size=2000,
    )
    if request.param == "analyzed":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # the statistics a live database has
    return tasks


def _as_new_tables(*models: type[Model]) -> None:
    """Give PostgreSQL these tables as a new database has them: empty files that no
    ANALYZE has seen.

    Earlier tests leave their rolled-back rows in the files and an ANALYZE's row count
    in ``pg_class`` (written in place, not rolled back): both steer the planner. A
    ``TRUNCATE``, undone with this test's transaction, starts new files without counts.
    """
    if connection.vendor == "postgresql":
        tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in models)
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {tables} CASCADE")


def _plan_of_badge_states(tasks: list[Task]) -> str:
    with CaptureQueriesContext(connection) as queries:
        states = badge_states(tasks)
    assert all(states[task]["total"] == 3 for task in tasks)
    (statement,) = (query["sql"] for query in queries.captured_queries)
    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cursor:
        cursor.execute(explain + statement)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def test_the_notifications_and_their_deliveries_are_looked_up_by_index(page):
    plan = _plan_of_badge_states(page)

    assert "notify_tracking_delivery_notification_id" in plan, plan
    if connection.vendor == "postgresql":
        assert "Nested Loop" in plan, plan
        # each target's notifications by the index on (content_type, object_id)
        by_target_index = r"(Index|Index Only|Bitmap Index) Scan (using|on) nt_notif_target"
        assert re.search(by_target_index, plan), plan
        assert "Seq Scan on notify_tracking_notification" not in plan, plan
        assert not re.search(r"Hash (Right |Left )?Join", plan), plan
        assert "Seq Scan on notify_tracking_delivery" not in plan, plan
