"""A webhook POST costs the same few queries however many events it carries: the
request only buffers them, and one Celery task per chunk applies them."""

import math

import pytest
from anymail.signals import tracking
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from notify_tracking.esp import buffer
from notify_tracking.esp.mapping import normalize
from notify_tracking.models import DeliveryEvent
from tests.esp_payloads import NOW, post_sendgrid, send, sendgrid_event

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

KINDS = ("processed", "delivered", "open", "click", "open")


def batch(deliveries, count):
    """``count`` distinct SendGrid events spread over the deliveries."""
    events = []
    for index in range(count):
        delivery = deliveries[index % len(deliveries)]
        kind = KINDS[(index // len(deliveries)) % len(KINDS)]
        events.append(sendgrid_event(delivery, kind, NOW + index, useragent="Mozilla/5.0 (X11)"))
    return events


def post_counting(client, events, capture):
    """POST the events; return (status, queries run by the request, hand-offs)."""
    with capture(execute=False) as hand_offs, CaptureQueriesContext(connection) as queries:
        response = post_sendgrid(client, events)
    return response.status_code, len(queries), hand_offs


def esp_event_count():
    return DeliveryEvent.objects.filter(source="esp").count()


def test_a_thousand_events_cost_the_request_no_more_queries_than_ten(
    task, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    deliveries = send(task, [f"reader{i}@example.com" for i in range(200)], capture)

    small_status, small_queries, small_hand_offs = post_counting(
        client, batch(deliveries[:2], 10), capture
    )
    big_status, big_queries, big_hand_offs = post_counting(client, batch(deliveries, 1000), capture)

    assert (small_status, big_status) == (200, 200)
    assert big_queries == small_queries <= 2
    assert esp_event_count() == 0  # nothing applied in the request
    assert len(small_hand_offs) == 1
    assert len(big_hand_offs) == math.ceil(1000 / 500)  # one task per ESP_BATCH_SIZE chunk

    for hand_off in [*small_hand_offs, *big_hand_offs]:
        hand_off()  # enqueue: the task runs eagerly here, as a worker would run it

    assert esp_event_count() == 1010
    statuses = set(
        DeliveryEvent.objects.filter(source="esp", kind="clicked").values_list(
            "delivery__status", flat=True
        )
    )
    assert statuses == {"clicked"}


@override_settings(NOTIFY_TRACKING={"ESP_BATCH_SIZE": 3})
def test_a_post_is_handed_off_in_chunks_as_they_fill(
    task, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    deliveries = send(task, ["a@example.com", "b@example.com"], capture)

    status, _, hand_offs = post_counting(client, batch(deliveries, 7), capture)
    assert status == 200
    assert len(hand_offs) == 3  # 3 + 3 while posting, the last 1 when the request ended

    for hand_off in hand_offs:
        hand_off()
    assert esp_event_count() == 7


def test_an_event_outside_a_request_is_handed_off_alone(task, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    (delivery,) = send(task, ["a@example.com"], capture)
    events = [
        SendGridTrackingWebhookView().esp_to_anymail_event(raw) for raw in batch([delivery], 2)
    ]
    with capture(execute=False) as hand_offs:
        for event in events:
            tracking.send(sender=SendGridTrackingWebhookView, event=event, esp_name="SendGrid")
    assert len(hand_offs) == 2

    for hand_off in hand_offs:
        hand_off()
    assert esp_event_count() == 2


def test_a_buffer_a_server_never_closed_is_handed_off_when_the_next_request_starts(
    task, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    (delivery,) = send(task, ["a@example.com"], capture)
    (left_behind,) = batch([delivery], 1)
    event = SendGridTrackingWebhookView().esp_to_anymail_event(left_behind)

    buffer.open_buffer()  # a request started, and its request_finished never came
    buffer.add(normalize(event, "SendGrid"))
    try:
        with capture(execute=True):
            client.head("/anymail/sendgrid/tracking/")
    finally:
        buffer.close_buffer()

    assert esp_event_count() == 1
