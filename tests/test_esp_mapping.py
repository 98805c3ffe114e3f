"""Each anymail event type, through anymail's tracking signal or a real webhook view,
ends as the documented kind and status of the delivery."""

import datetime as dt
import logging

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.test import override_settings

from notify_tracking.models import DeliveryEvent
from tests.esp_payloads import NOW, post_sendgrid, send, sendgrid_event

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

# anymail event type -> (stored event kind, resulting status of a freshly sent delivery)
EXPECTED = {
    "queued": ("sent", "sent"),
    "sent": ("sent", "sent"),
    "delivered": ("delivered", "delivered"),
    "deferred": ("deferred", "deferred"),
    "bounced": ("bounced", "bounced"),
    "rejected": ("rejected", "rejected"),
    "failed": ("failed", "failed"),
    "opened": ("opened", "opened"),
    "clicked": ("clicked", "clicked"),
    "complained": ("complained", "complained"),
    "unsubscribed": ("unsubscribed", "sent"),
    "autoresponded": ("delivered", "delivered"),
}
IGNORED = ("subscribed", "unknown", "inbound", "inbound_failed")


@pytest.fixture
def delivery(task, django_capture_on_commit_callbacks):
    (delivery,) = send(task, ["bob@example.com"], django_capture_on_commit_callbacks)
    assert delivery.status == "sent" and delivery.message_id
    return delivery


def signal_event(delivery, event_type, **fields):
    return AnymailTrackingEvent(
        event_type=event_type,
        timestamp=dt.datetime.fromtimestamp(NOW + 60, tz=dt.timezone.utc),
        event_id=f"{event_type}-1",
        message_id=delivery.message_id,
        recipient=delivery.recipient,
        metadata={"notify_tracking_delivery": str(delivery.token)},
        esp_event={},
        **fields,
    )


def esp_events(delivery):
    return list(delivery.events.filter(source="esp"))


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
def test_each_anymail_event_type_maps_to_its_kind(
    event_type, delivery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        tracking.send(sender=object, event=signal_event(delivery, event_type), esp_name="Test")

    kind, status = EXPECTED[event_type]
    (event,) = esp_events(delivery)
    assert (event.kind, event.details["event_type"], event.details["esp"]) == (
        kind,
        event_type,
        "Test",
    )
    delivery.refresh_from_db()
    assert delivery.status == status


@pytest.mark.parametrize("event_type", IGNORED)
def test_events_that_say_nothing_about_a_delivery_are_ignored(
    event_type, delivery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        tracking.send(sender=object, event=signal_event(delivery, event_type), esp_name="Test")
    assert esp_events(delivery) == []
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_an_event_type_anymail_may_add_later_is_skipped_with_a_log_line(
    delivery, django_capture_on_commit_callbacks, caplog
):
    event = signal_event(delivery, "teleported")
    with (
        caplog.at_level(logging.WARNING, "notify_tracking.esp"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tracking.send(sender=object, event=event, esp_name="Test")
    assert esp_events(delivery) == []
    assert "skipped a malformed Test tracking event" in caplog.text


@pytest.mark.parametrize(
    ("sendgrid_type", "kind"),
    [
        ("processed", "sent"),
        ("delivered", "delivered"),
        ("deferred", "deferred"),
        ("bounce", "bounced"),
        ("dropped", "rejected"),
        ("open", "opened"),
        ("click", "clicked"),
        ("spamreport", "complained"),
        ("unsubscribe", "unsubscribed"),
        ("group_unsubscribe", "unsubscribed"),
    ],
)
def test_sendgrid_event_names_through_the_real_webhook(
    sendgrid_type, kind, delivery, client, django_capture_on_commit_callbacks
):
    assert sendgrid_type in SendGridTrackingWebhookView.event_types
    with django_capture_on_commit_callbacks(execute=True):
        response = post_sendgrid(client, [sendgrid_event(delivery, sendgrid_type, NOW + 5)])
    assert response.status_code == 200
    assert [e.kind for e in esp_events(delivery)] == [kind]


def test_failures_keep_the_providers_words_as_the_error(
    delivery, client, django_capture_on_commit_callbacks
):
    bounce = sendgrid_event(
        delivery,
        "bounce",
        NOW + 5,
        reason="550 5.1.1 The email account that you tried to reach does not exist",
        status="5.1.1",
        type="bounce",
    )
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [bounce])

    delivery.refresh_from_db()
    assert delivery.status == "bounced"
    assert delivery.error == "550 5.1.1 The email account that you tried to reach does not exist"


def test_a_drop_without_words_says_who_dropped_it_and_why(
    delivery, client, django_capture_on_commit_callbacks
):
    dropped = sendgrid_event(delivery, "dropped", NOW + 5, reason="Bounced Address")
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [dropped])

    delivery.refresh_from_db()
    assert delivery.status == "rejected"
    assert delivery.error == "SendGrid reported the message rejected (reason: bounced)"
    assert esp_events(delivery)[0].details["reject_reason"] == "bounced"


def test_delivered_keeps_the_mta_response_as_a_detail_not_an_error(
    delivery, client, django_capture_on_commit_callbacks
):
    delivered = sendgrid_event(delivery, "delivered", NOW + 5, response="250 2.0.0 OK")
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [delivered])

    (event,) = esp_events(delivery)
    assert event.details["mta_response"] == "250 2.0.0 OK"
    assert "error" not in event.details
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == ("delivered", "")


@override_settings(NOTIFY_TRACKING={"STORE_IP_ADDRESSES": True})
def test_a_click_keeps_its_url_user_agent_and_ip(
    delivery, client, django_capture_on_commit_callbacks
):
    click = sendgrid_event(
        delivery,
        "click",
        NOW + 5,
        url="https://tracker.example.com/tasks/1",
        useragent="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ip="203.0.113.7",
    )
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [click])

    (event,) = esp_events(delivery)
    assert event.details["click_url"] == "https://tracker.example.com/tasks/1"
    assert event.user_agent.startswith("Mozilla/5.0 (X11")
    assert event.ip_address == "203.0.113.7"
    assert event.is_machine is False
    assert event.occurred_at == dt.datetime.fromtimestamp(NOW + 5, tz=dt.timezone.utc)


def test_a_delivery_matched_by_token_learns_its_provider_message_id(
    task, client, django_capture_on_commit_callbacks
):
    (delivery,) = send(task, ["carol@example.com"], django_capture_on_commit_callbacks)
    delivery.message_id = ""  # as when the webhook outruns the send result
    delivery.save(update_fields=["message_id"])
    event = sendgrid_event(delivery, "delivered", NOW + 5, anymail_id="sg-abc-123")
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [event])

    delivery.refresh_from_db()
    assert (delivery.status, delivery.message_id) == ("delivered", "sg-abc-123")
    assert DeliveryEvent.objects.filter(delivery=delivery, source="esp").count() == 1


def test_the_readers_ip_is_not_stored_unless_asked(
    delivery, client, django_capture_on_commit_callbacks
):
    click = sendgrid_event(delivery, "click", NOW + 5, ip="203.0.113.7", url="https://x.example")
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(client, [click])
    (event,) = esp_events(delivery)
    assert event.ip_address is None
