"""copy_insert.insert_new: COPY on PostgreSQL with psycopg 3 (from COPY_FROM rows),
bulk_create elsewhere.

The tests insert at least COPY_FROM rows (``batch()``) unless they are about fewer.
Either way the rows are stored as bulk_create stores them: each instance gets its
pk, each value is prepared by its field, errors are Django's, and the statements show
in the query log.
"""

import datetime as dt
import ipaddress

import pytest
from django.contrib.sessions.models import Session
from django.db import DataError, IntegrityError, connection, models, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify_tracking import notify
from notify_tracking.copy_insert import COPY_FROM, insert_new
from notify_tracking.models import Delivery, DeliveryEvent

pytestmark = pytest.mark.django_db

WHEN = dt.datetime(2026, 12, 7, 9, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=3)))
COPIES = connection.vendor == "postgresql" and connection.Database.__name__ == "psycopg"


@pytest.fixture
def delivery(task):
    return notify(task, ["ann@example.com"], text="T").deliveries.get()


def event(delivery, **values):
    defaults = {
        "delivery": delivery,
        "kind": "opened",
        "occurred_at": WHEN,
        "source": "pixel",
        "is_machine": True,
        "user_agent": "Mozilla/5.0 «Проверка»\ttab\\backslash\nnewline",
        "ip_address": "2001:0db8:0000:0000:0000:0000:0000:0001",
        "details": {"reasons": ["apple_mpp"], "nested": {"n": 1, "none": None}, "text": "a\tb"},
    }
    return DeliveryEvent(**{**defaults, **values})


def batch(delivery, *first):
    """These events, then plain ones up to COPY_FROM: enough to go by COPY."""
    return [*first, *(event(delivery) for _ in range(COPY_FROM - len(first)))]


def test_each_instance_gets_the_pk_of_its_own_row(delivery):
    events = [event(delivery, provider_event_id=f"e{n}") for n in range(30)]
    insert_new(DeliveryEvent, events, using="default")
    stored = dict(
        DeliveryEvent.objects.filter(delivery=delivery).values_list("pk", "provider_event_id")
    )
    assert {e.pk: e.provider_event_id for e in events} == stored
    assert len(set(stored)) == 30
    assert all(not e._state.adding and e._state.db == "default" for e in events)


def test_values_are_stored_as_their_fields_prepare_them(delivery):
    before = timezone.now()
    new = event(delivery, recorded_at=None)
    insert_new(DeliveryEvent, batch(delivery, new), using="default")
    assert new.recorded_at is not None and new.recorded_at >= before  # auto_now_add
    row = DeliveryEvent.objects.get(pk=new.pk)
    assert row.occurred_at == WHEN
    assert row.recorded_at == new.recorded_at
    assert row.is_machine is True
    assert row.user_agent == "Mozilla/5.0 «Проверка»\ttab\\backslash\nnewline"
    # GenericIPAddressField normalises an IPv6 address before it is stored.
    assert row.ip_address == "2001:db8::1"
    assert ipaddress.ip_address(row.ip_address) == ipaddress.ip_address("2001:db8::1")
    assert row.details == {
        "reasons": ["apple_mpp"],
        "nested": {"n": 1, "none": None},
        "text": "a\tb",
    }
    assert row.provider_event_id == "" and row.kind == "opened" and row.source == "pixel"


def test_a_null_value_stays_null(delivery):
    new = event(delivery, ip_address=None)
    insert_new(DeliveryEvent, batch(delivery, new), using="default")
    assert DeliveryEvent.objects.get(pk=new.pk).ip_address is None


def test_nothing_to_insert_costs_no_query():
    with CaptureQueriesContext(connection) as queries:
        insert_new(DeliveryEvent, [], using="default")
    assert len(queries) == 0


def test_the_statements_are_in_the_query_log(delivery):
    with CaptureQueriesContext(connection) as queries:
        insert_new(DeliveryEvent, batch(delivery), using="default")
    statements = [query["sql"] for query in queries]
    if COPIES:
        assert len(statements) == 2
        assert "nextval" in statements[0]
        assert statements[1].startswith('COPY "notify_tracking_deliveryevent" (')
    else:
        assert len(statements) == 1
        assert statements[0].startswith('INSERT INTO "notify_tracking_deliveryevent"')


def test_fewer_rows_than_copy_from_go_in_one_insert(delivery):
    # A single event (every send result) makes one round trip, not three.
    events = [event(delivery) for _ in range(COPY_FROM - 1)]
    with CaptureQueriesContext(connection) as queries:
        insert_new(DeliveryEvent, events, using="default")
    assert [query["sql"].split()[0] for query in queries] == ["INSERT"]
    assert all(e.pk is not None for e in events)
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == COPY_FROM - 1


def test_a_duplicate_is_django_s_integrity_error_and_inserts_nothing(delivery):
    insert_new(DeliveryEvent, [event(delivery, provider_event_id="once")], using="default")
    again = batch(
        delivery,
        event(delivery, provider_event_id="other"),
        event(delivery, provider_event_id="once"),
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_new(DeliveryEvent, again, using="default")
    assert list(
        DeliveryEvent.objects.filter(delivery=delivery).values_list("provider_event_id", flat=True)
    ) == ["once"]


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite does not enforce a length")
def test_a_value_too_long_for_its_column_is_django_s_data_error(delivery):
    with pytest.raises(DataError), transaction.atomic():
        insert_new(DeliveryEvent, batch(delivery, event(delivery, kind="x" * 17)), using="default")
    assert not DeliveryEvent.objects.filter(delivery=delivery).exists()


def test_a_primary_key_without_a_sequence_is_inserted_as_given():
    # Session's pk is its key: no sequence, nothing to number.
    expires = timezone.now() + dt.timedelta(days=1)
    keys = [f"key{n:02}" for n in range(COPY_FROM)]
    sessions = [Session(session_key=key, session_data="d", expire_date=expires) for key in keys]
    insert_new(Session, sessions, using="default")
    assert sorted(Session.objects.values_list("pk", flat=True)) == keys


def test_ids_ascend_in_the_order_of_the_list(delivery):
    # Events of one time are listed by id: the order they were given in.
    events = [event(delivery, provider_event_id=f"e{n}") for n in range(50)]
    insert_new(DeliveryEvent, events, using="default")
    assert [e.pk for e in events] == sorted(e.pk for e in events)
    assert list(
        DeliveryEvent.objects.filter(delivery=delivery).values_list("provider_event_id", flat=True)
    ) == [f"e{n}" for n in range(50)]


def test_a_carriage_return_and_a_backslash_n_survive(delivery):
    new = event(delivery, user_agent="a\r\nb\\nc\\\\", details={"s": "\r\\N"})
    insert_new(DeliveryEvent, batch(delivery, new), using="default")
    row = DeliveryEvent.objects.get(pk=new.pk)
    assert row.user_agent == "a\r\nb\\nc\\\\"
    assert row.details == {"s": "\r\\N"}


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite stores a NUL in a text")
def test_a_nul_is_django_s_data_error_and_the_connection_goes_on(delivery):
    kept = batch(delivery)
    insert_new(DeliveryEvent, kept, using="default")
    with pytest.raises(DataError), transaction.atomic():
        insert_new(
            DeliveryEvent, batch(delivery, event(delivery, user_agent="a\x00b")), using="default"
        )
    assert sorted(DeliveryEvent.objects.filter(delivery=delivery).values_list("pk", flat=True)) == [
        e.pk for e in kept
    ]


def test_an_instance_with_its_pk_set_is_inserted_with_it(delivery):
    taken = DeliveryEvent.objects.aggregate(models.Max("pk"))["pk__max"] or 0
    given = event(delivery, pk=taken + 1000)
    insert_new(DeliveryEvent, batch(delivery, given), using="default")
    assert DeliveryEvent.objects.get(pk=taken + 1000).delivery_id == delivery.pk


def test_an_unsaved_related_object_is_refused_as_bulk_create_refuses_it(delivery):
    orphan = event(delivery)
    orphan.delivery = Delivery(notification=delivery.notification, recipient="x@example.com")
    with pytest.raises(ValueError, match="unsaved related object"):
        insert_new(DeliveryEvent, batch(delivery, orphan), using="default")


@pytest.mark.skipif(not COPIES, reason="the right to use a sequence is PostgreSQL's")
def test_a_user_without_the_right_to_use_the_sequence_still_inserts(delivery):
    # Granted the table but not its sequence: an INSERT may number the row, nextval may
    # not. The role and its grants are undone with the test's transaction.
    with connection.cursor() as cursor:
        cursor.execute("CREATE ROLE nt_tables_only")
        cursor.execute("GRANT SELECT, INSERT ON notify_tracking_deliveryevent TO nt_tables_only")
        cursor.execute("SET LOCAL ROLE nt_tables_only")
    new = event(delivery)
    with CaptureQueriesContext(connection) as queries:
        insert_new(DeliveryEvent, batch(delivery, new), using="default")
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert [q["sql"].split()[0] for q in queries] == ["SELECT", "INSERT"]
    assert DeliveryEvent.objects.get(pk=new.pk).delivery_id == delivery.pk
