"""The CSV export of the activity log: content, filters, permissions, injection guard,
and streaming in constant memory."""

from __future__ import annotations

import csv
import io
import tracemalloc
from unittest import mock

import pytest
from django.db.models import QuerySet

from notify_tracking import Recipient, notify
from notify_tracking import status as st
from notify_tracking.activity.export import CHUNK_SIZE, safe_cell
from notify_tracking.models import Delivery
from tests.activity_support import make_notification, record

pytestmark = pytest.mark.django_db
EXPORT = "/notify/activity/deliveries.csv"


@pytest.fixture
def staff_client(client, django_user_model):
    staff = django_user_model.objects.create_user("support", "s@example.com", "pw", is_staff=True)
    client.force_login(staff)
    return client


def read_csv(response) -> list[dict[str, str]]:
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def bulk_deliveries(notification, count: int) -> None:
    Delivery.objects.bulk_create(
        (
            Delivery(notification=notification, recipient=f"user{i}@example.com", channel="email")
            for i in range(count)
        ),
        batch_size=1000,
    )


def test_the_export_has_a_row_per_delivery(staff_client, task, user):
    notification = make_notification(
        task, ["a@example.com", "b@example.com"], subject="Fix it", sender=user
    )
    record(
        notification.deliveries.get(recipient="b@example.com"),
        st.SENT,
        st.BOUNCED,
        error="550 no such user",
    )
    response = staff_client.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="deliveries-')
    rows = read_csv(response)
    assert [row["recipient"] for row in rows] == ["b@example.com", "a@example.com"]
    bounced = rows[0]
    assert bounced["status"] == "bounced"
    assert bounced["error"] == "550 no such user"
    assert bounced["subject"] == "Fix it"
    assert (bounced["target type"], bounced["target model"], bounced["target id"]) == (
        "testapp",
        "task",
        str(task.pk),
    )
    assert bounced["sender"] == "alice"
    assert bounced["sent at"] and bounced["failed at"]
    assert rows[1]["sent at"] == ""


def test_the_export_takes_the_filters_of_the_log(staff_client, task):
    make_notification(task, ["alice@example.com", "bob@example.com"])
    rows = read_csv(staff_client.get(EXPORT, {"recipient_prefix": "bob"}))
    assert [row["recipient"] for row in rows] == ["bob@example.com"]


def test_the_export_finds_an_address_in_any_case(staff_client, task):
    make_notification(task, ["Carol@Example.com", "bob@example.com"])
    rows = read_csv(staff_client.get(EXPORT, {"recipient": "carol@EXAMPLE.com"}))
    assert [row["recipient"] for row in rows] == ["Carol@Example.com"]


def test_bad_filters_are_a_400_naming_them(staff_client):
    response = staff_client.get(EXPORT, {"since": "last week", "colour": "red"})
    assert response.status_code == 400
    assert set(response.json()) == {"since", "colour"}


def test_only_those_who_may_read_the_log_may_export_it(client, user, task):
    make_notification(task, ["a@example.com"])
    assert client.get(EXPORT).status_code == 403
    client.force_login(user)
    response = client.get(EXPORT)
    assert response.status_code == 403
    assert b"a@example.com" not in response.content


def test_cells_that_a_spreadsheet_would_run_are_defused(staff_client, task):
    notification = notify(
        task,
        [Recipient("eve@example.com", name="+49 30 1234"), Recipient("ok@example.com", name="Ok")],
        subject='=HYPERLINK("http://evil.test","click")',
        text="x",
    )
    record(notification.deliveries.get(recipient="eve@example.com"), st.FAILED, error="@SUM(A1:A9)")
    rows = {row["recipient"]: row for row in read_csv(staff_client.get(EXPORT))}
    assert rows["eve@example.com"]["subject"] == '\'=HYPERLINK("http://evil.test","click")'
    assert rows["eve@example.com"]["recipient name"] == "'+49 30 1234"
    assert rows["eve@example.com"]["error"] == "'@SUM(A1:A9)"
    assert rows["ok@example.com"]["recipient name"] == "Ok"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (3, 3),
    ],
)
def test_safe_cell(value, expected):
    assert safe_cell(value) == expected


def test_the_export_streams_in_chunks_read_with_iterator(staff_client, task):
    notification = make_notification(task, ["first@example.com"])
    bulk_deliveries(notification, 4999)
    original = QuerySet.iterator
    with mock.patch.object(QuerySet, "iterator", autospec=True, side_effect=original) as spy:
        response = staff_client.get(EXPORT)
        pieces = [piece.decode() for piece in response.streaming_content]
    assert spy.call_args.kwargs == {"chunk_size": CHUNK_SIZE}
    # The header, then one piece per chunk: never more than CHUNK_SIZE rows at once.
    assert len(pieces) == 1 + 3
    assert [piece.count("\r\n") for piece in pieces] == [1, 2000, 2000, 1000]
    assert sum(piece.count("@example.com") for piece in pieces) == 5000


def peak_memory_of_export(client) -> int:
    tracemalloc.start()
    try:
        response = client.get(EXPORT)
        for _piece in response.streaming_content:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_export_grows(staff_client, task):
    notification = make_notification(task, ["first@example.com"])
    peak_memory_of_export(staff_client)  # warm up: imports, caches, translations
    bulk_deliveries(notification, 1999)
    small = peak_memory_of_export(staff_client)
    bulk_deliveries(notification, 18000)
    assert Delivery.objects.count() == 20000
    large = peak_memory_of_export(staff_client)
    # Ten times the rows: were they all held at once, the peak would grow about tenfold;
    # streaming, it grows only by the second chunk in flight (about 1.3 times here).
    assert large < small * 2, (small, large)
