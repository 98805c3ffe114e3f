"""ESP events arrive twice and out of order: each is stored once, and the delivery ends
in the state the same events reach once and in order."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notify_tracking.models import Delivery, DeliveryEvent
from tests.esp_payloads import (
    NOW,
    brevo_event,
    post_brevo,
    post_sendgrid,
    send,
    sendgrid_event,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

# (sent_at is left out: it is the moment each delivery was really sent, before the story.)
SUMMARY = (
    "status",
    "error",
    "delivered_at",
    "first_opened_at",
    "last_opened_at",
    "first_clicked_at",
    "failed_at",
    "open_count",
    "machine_open_count",
    "click_count",
    "machine_click_count",
)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def story(delivery):
    """A delivery's life as SendGrid reports it, in order."""
    return [
        sendgrid_event(delivery, "processed", NOW + 1),
        sendgrid_event(delivery, "deferred", NOW + 2, response="451 4.7.1 Try again later"),
        sendgrid_event(delivery, "delivered", NOW + 3, response="250 2.0.0 OK"),
        sendgrid_event(delivery, "open", NOW + 4, sg_machine_open=True, useragent="Mozilla/5.0"),
        sendgrid_event(delivery, "open", NOW + 50, sg_machine_open=False, useragent=BROWSER),
        sendgrid_event(delivery, "click", NOW + 60, url="https://x.example/1", useragent=BROWSER),
        sendgrid_event(delivery, "open", NOW + 90, sg_machine_open=False, useragent=BROWSER),
    ]


def summary(delivery):
    delivery.refresh_from_db()
    return {field: getattr(delivery, field) for field in SUMMARY}


def in_order_summary(task, client, capture):
    (delivery,) = send(task, ["bob@example.com"], capture)
    for event in story(delivery):
        with capture(execute=True):
            post_sendgrid(client, [event])
    return summary(delivery)


def test_the_story_in_order(task, client, django_capture_on_commit_callbacks):
    state = in_order_summary(task, client, django_capture_on_commit_callbacks)
    assert state["status"] == "clicked"
    assert (state["open_count"], state["machine_open_count"], state["click_count"]) == (2, 1, 1)
    assert state["error"] == ""


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_shuffled_and_duplicated_batches_end_in_the_in_order_state(
    data, task, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    expected = in_order_summary(task, client, capture)

    (delivery,) = send(task, ["bob@example.com"], capture)
    events = story(delivery)
    shuffled = data.draw(st.permutations(events), label="order")
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=6), label="resent")
    arrivals = shuffled + repeats
    cuts = sorted(data.draw(st.sets(st.integers(1, len(arrivals) - 1), max_size=3), label="cuts"))
    for start, end in zip([0, *cuts], [*cuts, len(arrivals)], strict=True):
        with capture(execute=True):
            assert post_sendgrid(client, arrivals[start:end]).status_code == 200

    assert summary(delivery) == expected
    assert delivery.events.filter(source="esp").count() == len(events)


def test_the_same_event_id_is_stored_once_within_and_across_posts(
    task, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    (delivery,) = send(task, ["bob@example.com"], capture)
    open_event = sendgrid_event(delivery, "open", NOW + 5, useragent=BROWSER)
    with capture(execute=True):
        post_sendgrid(client, [open_event, open_event])
    with capture(execute=True):
        post_sendgrid(client, [open_event])

    events = DeliveryEvent.objects.filter(delivery=delivery, source="esp")
    assert [(e.kind, e.provider_event_id) for e in events] == [
        ("opened", open_event["sg_event_id"])
    ]
    assert Delivery.objects.get(pk=delivery.pk).open_count == 1


def test_without_an_event_id_the_type_and_time_make_the_key(
    task, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    (delivery,) = send(task, ["bob@example.com"], capture)
    at_ms = NOW * 1000 + 250
    delivered = brevo_event(delivery, "delivered", at_ms)
    first_open = brevo_event(delivery, "unique_opened", at_ms + 60_000)
    # Brevo reports the first open twice: as "unique_opened" and as "opened".
    same_open = brevo_event(delivery, "opened", at_ms + 60_000)
    later_open = brevo_event(delivery, "opened", at_ms + 120_000)
    for payload in (delivered, first_open, same_open, delivered, later_open, later_open):
        with capture(execute=True):
            assert post_brevo(client, payload).status_code == 200

    events = list(DeliveryEvent.objects.filter(delivery=delivery, source="esp"))
    assert [e.kind for e in events] == ["delivered", "opened", "opened"]
    assert events[0].provider_event_id.startswith("derived:delivered@")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count) == ("opened", 2)
