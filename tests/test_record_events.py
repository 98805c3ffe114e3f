"""record_events(): record_event() for a batch, in one transaction.

A batch must end every delivery in exactly the state that the same events recorded
one by one give, and cost statements per delivery, not per event.
"""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from notify_tracking import notify, record_event, service
from notify_tracking.copy_insert import COPY_FROM
from notify_tracking.models import ANONYMISED_PREFIX, Delivery, DeliveryEvent
from notify_tracking.service import NewEvent, record_events
from notify_tracking.signals import delivery_status_changed

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.timezone.utc)
# Every field record_events() writes, but the time of the write.
SUMMARY = tuple(name for name in service._SAVED_FIELDS if name != "updated_at")


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def summary(pk: int) -> tuple:
    return Delivery.objects.filter(pk=pk).values_list(*SUMMARY).get()


def fresh_pair(task) -> tuple[int, int]:
    """Two deliveries of one notification: one for the batch, one for the reference."""
    deliveries = notify(task, ["a@example.com", "b@example.com"], text="T").deliveries
    first, second = deliveries.order_by("pk").values_list("pk", flat=True)
    return first, second


KINDS = ("sent", "delivered", "opened", "clicked", "deferred", "bounced", "complained")
event_strategy = hs.tuples(
    hs.sampled_from(KINDS),
    hs.integers(min_value=0, max_value=30),  # minute
    hs.booleans(),  # is_machine
    hs.sampled_from(["", "", "p1", "p2"]),  # provider event id: some repeat
    hs.sampled_from(["", "m-1", "m-2"]),  # message id
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=hs.lists(event_strategy, max_size=4),
    batch=hs.lists(event_strategy, min_size=1, max_size=10),
)
def test_a_batch_ends_in_the_state_of_the_same_events_one_by_one(task, before, batch):
    batched, single = fresh_pair(task)

    def new(pk, kind, minute, machine, provider_id, message_id):
        return NewEvent(
            delivery_id=pk,
            kind=kind,
            source="esp",
            occurred_at=at(minute),
            is_machine=machine,
            provider_event_id=provider_id,
            message_id=message_id or None,
            error="why" if kind in ("bounced", "deferred") else "",
        )

    for item in before:  # what both deliveries already went through
        for pk in (batched, single):
            record_events([new(pk, *item)])
    stored = record_events([new(batched, *item) for item in batch])
    one_by_one = [record_event(single, **_kwargs(new(single, *item))) for item in batch]

    assert summary(batched) == summary(single)
    assert [event is None for event in stored] == [event is None for event in one_by_one]
    assert DeliveryEvent.objects.filter(delivery_id=batched).count() == (
        DeliveryEvent.objects.filter(delivery_id=single).count()
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=hs.lists(
        hs.tuples(hs.integers(min_value=0, max_value=3), event_strategy), min_size=2, max_size=16
    )
)
def test_a_batch_of_several_deliveries_ends_each_as_one_by_one(task, batch):
    # Four deliveries in one batch (on PostgreSQL, those whose changed fields are the
    # same are written by one UPDATE ... FROM VALUES), four references fed one by one.
    pairs = [fresh_pair(task) for _ in range(4)]

    def new(pk, kind, minute, machine, provider_id, message_id):
        return NewEvent(
            delivery_id=pk,
            kind=kind,
            source="pixel" if kind == "opened" else "esp",
            occurred_at=at(minute),
            is_machine=machine,
            provider_event_id=provider_id,
            message_id=message_id or None,
            error="why" if kind in ("bounced", "deferred") else "",
        )

    record_events([new(pairs[which][0], *item) for which, item in batch])
    for which, item in batch:
        record_event(pairs[which][1], **_kwargs(new(pairs[which][1], *item)))

    for batched, single in pairs:
        assert summary(batched) == summary(single)


def _kwargs(new: NewEvent) -> dict:
    fields = dict(new.__dict__)
    fields.pop("delivery_id")
    fields.pop("kind")
    return {"kind": new.kind, **fields}


def test_events_of_a_missing_or_anonymised_delivery_are_not_stored(task):
    kept, anonymised = fresh_pair(task)
    Delivery.objects.filter(pk=anonymised).update(recipient=f"{ANONYMISED_PREFIX}1")
    stored = record_events(
        [
            NewEvent(delivery_id=kept, kind="sent", source="channel", occurred_at=at(0)),
            NewEvent(delivery_id=anonymised, kind="sent", source="channel", occurred_at=at(0)),
            NewEvent(delivery_id=10**9, kind="sent", source="channel", occurred_at=at(0)),
        ]
    )
    assert [event is not None for event in stored] == [True, False, False]
    assert summary(kept)[0] == "sent"
    assert summary(anonymised)[0] == "queued"


def test_a_bad_event_is_refused_when_built():
    with pytest.raises(ValueError, match="unknown event source"):
        NewEvent(delivery_id=1, kind="sent", source="carrier-pigeon", occurred_at=at(0))
    with pytest.raises(ValueError, match="aware"):
        NewEvent(delivery_id=1, kind="sent", source="esp", occurred_at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        NewEvent(delivery_id=1, kind="teleported", source="esp", occurred_at=at(0))
    for name in ("message_id", "provider_event_id"):
        with pytest.raises(ValueError, match=f"{name} is longer than 255 characters"):
            NewEvent(
                delivery_id=1,
                kind="delivered",
                source="esp",
                occurred_at=at(0),
                **{name: "x" * 256},
            )
    NewEvent(delivery_id=1, kind="delivered", source="esp", occurred_at=at(0), message_id="x" * 255)


def test_each_status_change_is_signalled_once_after_commit(
    task, django_capture_on_commit_callbacks
):
    first, second = fresh_pair(task)
    changes = []

    def receiver(sender, delivery, old_status, new_status, event, **kwargs):
        changes.append((delivery.pk, old_status, new_status, event.kind))

    delivery_status_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            record_events(
                [
                    NewEvent(delivery_id=first, kind="sent", source="channel", occurred_at=at(0)),
                    NewEvent(delivery_id=first, kind="opened", source="pixel", occurred_at=at(1)),
                    NewEvent(delivery_id=second, kind="sent", source="channel", occurred_at=at(0)),
                ]
            )
            assert changes == []  # nothing before the commit
    finally:
        delivery_status_changed.disconnect(receiver)
    assert sorted(changes) == sorted(
        [(first, "queued", "opened", "opened"), (second, "queued", "sent", "sent")]
    )


def _statements_for(task, events_per_delivery: int, deliveries: int = 10) -> int:
    pks = list(
        notify(
            task, [f"r{i}@example.com" for i in range(deliveries)], text="T"
        ).deliveries.values_list("pk", flat=True)
    )
    batch = [
        NewEvent(
            delivery_id=pk,
            kind="delivered",
            source="esp",
            occurred_at=at(n),
            provider_event_id=f"{pk}-{n}",
        )
        for pk in pks
        for n in range(events_per_delivery)
    ]
    with CaptureQueriesContext(connection) as queries:
        record_events(batch)
    return len(queries)


def test_statements_follow_the_deliveries_not_the_events(task):
    # 10 or 50 events of 10 deliveries: within one INSERT on every backend (SQLite
    # splits a bulk INSERT at 999 parameters, whatever the app does).
    assert _statements_for(task, 1) == _statements_for(task, 5)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="one UPDATE for many deliveries is PostgreSQL's (UPDATE ... FROM VALUES); "
    "elsewhere one UPDATE per delivery",
)
def test_on_postgresql_statements_do_not_grow_with_the_deliveries(task):
    # From COPY_FROM events on, the events go by COPY after a query for their ids: one
    # statement more than a smaller batch's single INSERT, the same for any size.
    small = _statements_for(task, 1, deliveries=5)
    assert _statements_for(task, 1, deliveries=COPY_FROM) == small + 1
    assert _statements_for(task, 1, deliveries=60) == small + 1
