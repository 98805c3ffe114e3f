"""Matching by message id, unknown and ambiguous messages, malformed events: the webhook
answers 200 (never 500), the problem is logged, and the rest of the batch is applied."""

import datetime as dt
import json
import logging

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.conf import settings
from django.test import override_settings

from notify_tracking.esp.apply import apply_events
from notify_tracking.models import Delivery, DeliveryEvent
from tests.esp_payloads import (
    AUTH,
    NOW,
    mailgun_event,
    post_brevo,
    post_mailgun,
    post_sendgrid,
    send,
    sendgrid_event,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

GUARDED = override_settings(
    MIDDLEWARE=[*settings.MIDDLEWARE, "notify_tracking.esp.middleware.WebhookGuardMiddleware"]
)


def without_token(event):
    return {key: value for key, value in event.items() if key != "notify_tracking_delivery"}


def esp_kinds(delivery):
    return list(
        DeliveryEvent.objects.filter(delivery=delivery, source="esp").values_list("kind", flat=True)
    )


@pytest.fixture
def pair(task, django_capture_on_commit_callbacks):
    return send(task, ["bob@example.com", "carol@example.com"], django_capture_on_commit_callbacks)


def test_unknown_message_ids_are_logged_and_ignored(
    pair, client, django_capture_on_commit_callbacks, caplog
):
    bob, _ = pair
    stranger = without_token(sendgrid_event(bob, "delivered", NOW + 5, anymail_id="not-ours-42"))
    known = sendgrid_event(bob, "delivered", NOW + 6)
    with (
        caplog.at_level(logging.INFO, "notify_tracking.esp"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = post_sendgrid(client, [stranger, known])

    assert response.status_code == 200
    assert esp_kinds(bob) == ["delivered"]
    assert "ignored 1 ESP events that match no delivery" in caplog.text
    assert "not-ours-42" in caplog.text


def test_without_our_metadata_the_provider_message_id_finds_the_delivery(
    pair, client, django_capture_on_commit_callbacks
):
    bob, carol = pair
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [without_token(sendgrid_event(carol, "bounce", NOW + 5))])
    assert esp_kinds(carol) == ["bounced"]
    assert esp_kinds(bob) == []


def test_one_message_id_for_several_recipients_is_split_by_recipient(
    pair, client, django_capture_on_commit_callbacks, caplog
):
    bob, carol = pair
    Delivery.objects.filter(pk__in=[bob.pk, carol.pk]).update(message_id="shared-1")
    bob.refresh_from_db()
    for_carol = without_token(sendgrid_event(bob, "open", NOW + 5, email="Carol@Example.com"))
    for_nobody = without_token(sendgrid_event(bob, "open", NOW + 6, email="dave@example.com"))
    with (
        caplog.at_level(logging.INFO, "notify_tracking.esp"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert post_sendgrid(client, [for_carol, for_nobody]).status_code == 200

    assert esp_kinds(carol) == ["opened"]
    assert esp_kinds(bob) == []
    assert "ignored 1 ESP events" in caplog.text


def test_the_message_id_header_we_set_finds_the_delivery_too(
    pair, client, django_capture_on_commit_callbacks
):
    bob, _ = pair
    payload = mailgun_event(bob, "delivered", NOW + 5)
    payload["event-data"]["user-variables"] = {}
    payload["event-data"]["message"]["headers"]["message-id"] = bob.email_message_id.strip("<>")
    with django_capture_on_commit_callbacks(execute=True):
        assert post_mailgun(client, payload).status_code == 200
    assert esp_kinds(bob) == ["delivered"]


def test_a_token_of_another_site_falls_back_to_the_message_id(
    pair, client, django_capture_on_commit_callbacks
):
    bob, _ = pair
    event = sendgrid_event(bob, "delivered", NOW + 5)
    event["notify_tracking_delivery"] = "not-a-uuid"
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [event])
    assert esp_kinds(bob) == ["delivered"]


def test_an_event_the_receiver_cannot_read_is_skipped_and_never_raises(
    pair, django_capture_on_commit_callbacks, caplog
):
    bob, _ = pair
    odd = AnymailTrackingEvent(
        event_type="delivered",
        timestamp="yesterday",  # not a datetime
        message_id=bob.message_id,
        metadata={"notify_tracking_delivery": str(bob.token)},
    )
    good = AnymailTrackingEvent(
        event_type="delivered",
        timestamp=dt.datetime.fromtimestamp(NOW + 5, tz=dt.timezone.utc),
        message_id=bob.message_id,
        metadata={"notify_tracking_delivery": str(bob.token)},
    )
    with (
        caplog.at_level(logging.WARNING, "notify_tracking.esp"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tracking.send(sender=object, event=odd, esp_name="Test")
        tracking.send(sender=object, event=good, esp_name="Test")

    assert esp_kinds(bob) == ["delivered"]
    assert "skipped a malformed Test tracking event" in caplog.text


def test_queued_events_that_are_not_events_are_skipped_and_the_rest_applied(pair, caplog):
    bob, _ = pair
    good = {
        "esp": "SendGrid",
        "kind": "delivered",
        "occurred_at": dt.datetime.fromtimestamp(NOW + 5, tz=dt.timezone.utc).isoformat(),
        "provider_event_id": "sg-1",
        "token": str(bob.token),
    }
    broken = [
        {"kind": "delivered"},  # no time, no id
        {**good, "occurred_at": "2024-06-01T10:00:00"},  # naive time
        {**good, "provider_event_id": "sg-2", "kind": "teleported"},  # no such kind
    ]
    with caplog.at_level(logging.WARNING, "notify_tracking.esp"):
        counts = apply_events([*broken, good])

    assert counts == {"malformed": 3, "applied": 1, "unknown": 0}
    assert esp_kinds(bob) == ["delivered"]
    assert caplog.text.count("skipped a malformed") == 3


@GUARDED
def test_with_the_guard_an_unreadable_entry_does_not_sink_its_batch(
    pair, client, django_capture_on_commit_callbacks, caplog
):
    bob, carol = pair
    no_event_name = sendgrid_event(bob, "open", NOW + 5)
    del no_event_name["event"]  # anymail's SendGrid parser raises KeyError on this
    batch = [sendgrid_event(bob, "delivered", NOW + 4), no_event_name]
    batch.append(sendgrid_event(carol, "delivered", NOW + 6))
    with (
        caplog.at_level(logging.WARNING, "notify_tracking.esp"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = post_sendgrid(client, batch)

    assert response.status_code == 200
    assert esp_kinds(bob) == ["delivered"]
    assert esp_kinds(carol) == ["delivered"]
    assert "skipped unreadable event 1 of a SendGrid webhook POST (KeyError" in caplog.text


@GUARDED
def test_with_the_guard_an_unreadable_post_is_a_400_not_a_500(client, caplog):
    with caplog.at_level(logging.ERROR, "notify_tracking.esp"):
        response = client.post(
            "/anymail/brevo/tracking/",
            data="{not json",
            content_type="application/json",
            HTTP_AUTHORIZATION=AUTH,
        )
    assert response.status_code == 400
    assert "could not read a Brevo webhook POST" in caplog.text


@GUARDED
def test_the_guard_leaves_failed_authentication_to_anymail(pair, client):
    bob, _ = pair
    response = client.post(
        "/anymail/brevo/tracking/",
        data=json.dumps({"event": "delivered", "email": bob.recipient}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic d3Jvbmc6d3Jvbmc=",
    )
    assert response.status_code == 400
    assert esp_kinds(bob) == []


def test_the_brevo_view_is_reached_with_basic_auth(pair, client):
    bob, _ = pair
    assert post_brevo(client, {"event": "request", "email": bob.recipient}).status_code == 200


def test_a_delivery_purged_between_matching_and_recording_is_skipped(task):
    """Retention may delete a delivery while a batch is being applied: no crash."""
    from notify_tracking import notify
    from notify_tracking.esp.apply import QueuedEvent, Target, _record

    delivery = notify(task, ["gone@example.com"], text="T").deliveries.get()
    target = Target(delivery.pk, str(delivery.token), delivery.recipient, "")
    delivery.delete()
    event = QueuedEvent(
        esp="SendGrid", kind="delivered", occurred_at=dt.datetime.now(dt.timezone.utc),
        provider_event_id="ev-gone",
    )  # fmt: skip
    assert _record([(event, target)]) == {"gone": 1}
