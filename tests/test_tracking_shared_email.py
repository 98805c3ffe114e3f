"""ONE_EMAIL_PER_NOTIFICATION: one email to every recipient, and what an open then means."""

import pytest
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.message import AnymailRecipientStatus
from django.core import mail

from notify_tracking import record_event
from notify_tracking.conf import get_channel
from notify_tracking.models import Delivery, TrackingPreference
from notify_tracking.tracking import tokens
from tests.tracking_support import HTML, click_urls, html_of, path, pixel_urls, send

pytestmark = pytest.mark.django_db

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
TEAM = ["bob@example.com", "carol@example.com", "dave@example.com"]


@pytest.fixture
def shared(settings):
    # A person opening at once (the scanner window is tested elsewhere).
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "ONE_EMAIL_PER_NOTIFICATION": True,
        "SCANNER_WINDOW_SECONDS": 0,
    }


def deliveries() -> list[Delivery]:
    return list(Delivery.objects.order_by("pk"))


def test_one_email_goes_to_everyone_and_each_delivery_is_sent(
    task, shared, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    assert message.to == TEAM
    assert [d.status for d in deliveries()] == ["sent"] * 3
    (pixel,) = pixel_urls(html_of(message))
    token = tokens.read_open(path(pixel).removeprefix("/notify/open/").removesuffix(".gif"))
    assert token.group is True


def test_an_open_by_anyone_marks_every_recipient_read_at_the_same_time(
    client, task, shared, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    (pixel,) = pixel_urls(html_of(message))
    client.get(path(pixel), HTTP_USER_AGENT=THUNDERBIRD)
    opened = deliveries()
    assert [(d.status, d.open_count) for d in opened] == [("opened", 1)] * 3
    events = [d.events.get(kind="opened") for d in opened]
    assert len({event.occurred_at for event in events}) == 1
    assert all(event.details == {"shared_email": True, "recipients": 3} for event in events)


def test_a_click_by_anyone_counts_for_everyone(
    client, task, shared, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    (link,) = click_urls(html_of(message))
    response = client.get(path(link), HTTP_USER_AGENT=THUNDERBIRD)
    assert response["Location"] == "https://tracker.example.com/tasks/1"
    assert [(d.status, d.click_count) for d in deliveries()] == [("clicked", 1)] * 3


def test_an_open_does_not_revive_a_recipient_whose_copy_bounced(
    client, task, shared, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    bob, carol, dave = deliveries()
    record_event(dave, "bounced", source="dsn", error="550 5.1.1 no such user")
    (pixel,) = pixel_urls(html_of(message))
    client.get(path(pixel), HTTP_USER_AGENT=THUNDERBIRD)
    bob, carol, dave = deliveries()
    assert (bob.status, carol.status, dave.status) == ("opened", "opened", "bounced")
    assert not dave.events.filter(kind="opened").exists()


def test_one_recipient_refusing_tracking_keeps_the_shared_email_untracked(
    task, shared, django_user_model, django_capture_on_commit_callbacks
):
    erin = django_user_model.objects.create_user("erin", "erin@example.com")
    TrackingPreference.objects.create(user=erin, allow_tracking=False)
    (message,) = send(django_capture_on_commit_callbacks, task, [*TEAM, erin], html=HTML)
    assert html_of(message) == HTML  # no pixel, no rewritten link


def test_by_default_each_recipient_gets_an_own_email_and_an_own_pixel(
    client, task, settings, django_capture_on_commit_callbacks
):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "SCANNER_WINDOW_SECONDS": 0}
    messages = send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    assert [m.to for m in messages] == [[address] for address in TEAM]
    pixels = [pixel_urls(html_of(m))[0] for m in messages]
    assert len(set(pixels)) == 3
    client.get(path(pixels[1]), HTTP_USER_AGENT=THUNDERBIRD)
    assert [d.status for d in deliveries()] == ["sent", "opened", "sent"]


def test_a_retry_of_some_recipients_is_sent_to_them_and_still_shows_everyone(
    task, shared, django_capture_on_commit_callbacks
):
    send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    carol = Delivery.objects.select_related("notification").get(recipient="carol@example.com")
    channel = get_channel("email")
    channel.open()
    try:
        message = channel.build_message(carol, group=[carol])
    finally:
        channel.close()
    assert message.recipients() == ["carol@example.com"]
    assert message.message()["To"] == ", ".join(TEAM)


class PartlyRejectingBackend(AnymailTestBackend):
    """anymail's test backend, with the provider refusing carol."""

    def post_to_esp(self, payload, message):
        super().post_to_esp(payload, message)
        return {
            "recipient_status": {
                email: AnymailRecipientStatus(
                    message_id=f"id-{email}",
                    status="rejected" if email.startswith("carol") else "queued",
                )
                for email in payload.recipient_emails
            }
        }


def test_each_recipient_of_a_shared_email_gets_its_own_provider_status(
    task, shared, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "tests.test_tracking_shared_email.PartlyRejectingBackend"
    mail.outbox = []
    send(django_capture_on_commit_callbacks, task, TEAM, html=HTML)
    assert len(mail.outbox) == 1
    assert [(d.recipient, d.status, d.message_id) for d in deliveries()] == [
        ("bob@example.com", "sent", "id-bob@example.com"),
        ("carol@example.com", "rejected", "id-carol@example.com"),
        ("dave@example.com", "sent", "id-dave@example.com"),
    ]
    assert "rejected" in Delivery.objects.get(recipient="carol@example.com").error
