"""record_event(): the one writer of a delivery's status and counters."""

import datetime as dt

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from notify_tracking import notify, record_event
from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.signals import delivery_status_changed

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.timezone.utc)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


@pytest.fixture
def delivery(task):
    return notify(task, ["bob@example.com"], text="T").deliveries.get()


def test_an_event_is_stored_and_moves_the_status(delivery):
    event = record_event(delivery, "sent", source="channel", occurred_at=at(0), message_id="p-1")

    assert event.kind == "sent" and event.source == "channel" and event.occurred_at == at(0)
    stored = Delivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.sent_at, stored.message_id) == ("sent", at(0), "p-1")
    # the instance passed in is updated too
    assert (delivery.status, delivery.message_id) == ("sent", "p-1")


def test_accepts_a_primary_key(delivery):
    record_event(delivery.pk, "delivered", source="esp", occurred_at=at(1))
    assert Delivery.objects.get(pk=delivery.pk).delivered_at == at(1)


def test_opens_and_clicks_are_counted(delivery):
    for minute in (1, 2, 3):
        record_event(delivery, "opened", source="pixel", occurred_at=at(minute), user_agent="UA")
    record_event(delivery, "clicked", source="click", occurred_at=at(4), details={"url": "u"})
    stored = Delivery.objects.get(pk=delivery.pk)
    assert stored.status == "clicked"
    assert (stored.open_count, stored.first_opened_at, stored.last_opened_at) == (3, at(1), at(3))
    assert (stored.click_count, stored.first_clicked_at) == (1, at(4))


def test_a_provider_event_is_stored_once(delivery):
    first = record_event(
        delivery, "opened", source="esp", occurred_at=at(1), provider_event_id="e1"
    )
    again = record_event(
        delivery, "opened", source="esp", occurred_at=at(1), provider_event_id="e1"
    )
    assert first is not None and again is None
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == 1
    assert Delivery.objects.get(pk=delivery.pk).open_count == 1


def test_a_late_event_does_not_move_progress_backwards(delivery):
    record_event(delivery, "opened", source="pixel", occurred_at=at(5))
    record_event(delivery, "delivered", source="esp", occurred_at=at(2))
    stored = Delivery.objects.get(pk=delivery.pk)
    assert stored.status == "opened"
    assert stored.delivered_at == at(2)
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == 2


def test_failure_reason_is_kept_and_cleared_by_later_success(delivery):
    record_event(delivery, "deferred", source="channel", occurred_at=at(0), error="451 busy")
    assert Delivery.objects.get(pk=delivery.pk).error == "451 busy"
    record_event(delivery, "sent", source="channel", occurred_at=at(1))
    assert Delivery.objects.get(pk=delivery.pk).error == ""
    record_event(delivery, "bounced", source="dsn", occurred_at=at(2), error="550 no such user")
    stored = Delivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.error, stored.failed_at) == ("bounced", "550 no such user", at(2))


def test_machine_opens_are_stored_but_do_not_make_it_read(delivery):
    record_event(delivery, "delivered", source="esp", occurred_at=at(0))
    event = record_event(delivery, "opened", source="pixel", occurred_at=at(1), is_machine=True)
    stored = Delivery.objects.get(pk=delivery.pk)
    assert event.is_machine
    assert (stored.status, stored.open_count, stored.machine_open_count) == ("delivered", 0, 1)
    assert stored.first_opened_at is None


@override_settings(NOTIFY_TRACKING={"COUNT_MACHINE_OPENS": True})
def test_machine_opens_count_when_the_setting_says_so(delivery):
    record_event(delivery, "opened", source="pixel", occurred_at=at(1), is_machine=True)
    stored = Delivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.open_count, stored.machine_open_count) == ("opened", 1, 1)


def test_opens_of_an_untracked_delivery_are_not_recorded(delivery):
    Delivery.objects.filter(pk=delivery.pk).update(track_opens=False, track_clicks=False)
    assert record_event(delivery, "opened", source="pixel") is None
    assert record_event(delivery, "clicked", source="click") is None
    assert record_event(delivery, "download", source="download") is None
    assert record_event(delivery, "delivered", source="esp") is not None
    assert Delivery.objects.get(pk=delivery.pk).status == "delivered"
    assert list(DeliveryEvent.objects.values_list("kind", flat=True)) == ["delivered"]


def test_user_agent_is_truncated(delivery):
    event = record_event(delivery, "opened", source="pixel", user_agent="x" * 5000)
    assert len(DeliveryEvent.objects.get(pk=event.pk).user_agent) == 512


def test_signal_is_sent_after_commit_when_the_status_moves(
    delivery, django_capture_on_commit_callbacks
):
    seen = []

    def receiver(sender, delivery, old_status, new_status, event, **kwargs):
        seen.append((delivery.pk, old_status, new_status, event.kind))

    delivery_status_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            record_event(delivery, "sent", source="channel", occurred_at=at(0))
            assert seen == []  # not before commit
        with django_capture_on_commit_callbacks(execute=True):
            record_event(delivery, "sent", source="channel", occurred_at=at(1))  # no move
        with django_capture_on_commit_callbacks(execute=True):
            record_event(delivery, "opened", source="pixel", occurred_at=at(2))
    finally:
        delivery_status_changed.disconnect(receiver)
    assert seen == [
        (delivery.pk, "queued", "sent", "sent"),
        (delivery.pk, "sent", "opened", "opened"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="read", source="pixel"), "unknown event kind 'read'"),
        (dict(kind="opened", source="carrier-pigeon"), "unknown event source"),
        (dict(kind="opened", source="pixel", occurred_at=dt.datetime(2026, 1, 1)), "aware"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(delivery, kwargs, message):
    record_event(delivery, "sent", source="channel", occurred_at=at(0))
    with pytest.raises(ValueError, match=message):
        record_event(delivery, **kwargs)
    stored = Delivery.objects.get(pk=delivery.pk)
    assert stored.status == "sent"
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == 1


def test_unknown_delivery_raises_does_not_exist(db):
    with pytest.raises(Delivery.DoesNotExist):
        record_event(123456, "opened", source="pixel")


# --- order independence: out of order and duplicated = once and in order ---------------

SUMMARY = (
    "status", "error", "sent_at", "delivered_at", "first_opened_at", "last_opened_at",
    "first_clicked_at", "failed_at", "open_count", "machine_open_count", "click_count",
    "machine_click_count",
)  # fmt: skip
KINDS = ["sent", "delivered", "opened", "clicked", "deferred", "bounced", "complained",
         "failed", "rejected", "download", "unsubscribed"]  # fmt: skip

events_strategy = hs.lists(
    hs.tuples(hs.sampled_from(KINDS), hs.booleans()), min_size=1, max_size=12
).map(
    lambda items: [
        dict(kind=kind, is_machine=machine, occurred_at=at(i), provider_event_id=f"ev{i}",
             error=f"reason {i}" if kind in ("deferred", "bounced", "failed", "rejected") else "")
        for i, (kind, machine) in enumerate(items)
    ]
)  # fmt: skip


def summary_after(task, events):
    delivery = notify(task, ["order@example.com"], text="T").deliveries.get()
    for event in events:
        record_event(delivery, source="esp", **event)
    stored = Delivery.objects.get(pk=delivery.pk)
    return {field: getattr(stored, field) for field in SUMMARY}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=events_strategy, data=hs.data())
def test_shuffled_and_duplicated_events_end_in_the_in_order_state(task, events, data):
    shuffled = data.draw(hs.permutations(events + data.draw(hs.lists(hs.sampled_from(events)))))
    assert summary_after(task, shuffled) == summary_after(task, events)


def test_now_is_the_default_time(delivery):
    before = timezone.now()
    event = record_event(delivery, "sent", source="channel")
    assert before <= event.occurred_at <= timezone.now()


def test_a_requested_read_receipt_is_recorded_even_when_tracking_is_off(task):
    untracked = notify(
        task, ["b@example.com"], text="T", track_opens=False, request_read_receipt=True
    )
    delivery = untracked.deliveries.get()
    assert record_event(delivery, "opened", source="pixel") is None
    assert record_event(delivery, "opened", source="mdn") is not None
    assert Delivery.objects.get(pk=delivery.pk).status == "opened"

    unrequested = notify(task, ["c@example.com"], text="T", track_opens=False).deliveries.get()
    assert record_event(unrequested, "opened", source="mdn") is None
