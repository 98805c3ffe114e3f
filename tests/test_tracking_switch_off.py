"""Tracking switched off globally, per notification, per recipient: no pixel, no links."""

import pytest

from notify_tracking.models import Delivery, TrackingPreference
from notify_tracking.tracking import policy
from tests.tracking_support import HTML, click_urls, html_of, path, pixel_urls, send

pytestmark = pytest.mark.django_db

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"


def tracking_of(message) -> tuple[int, int]:
    html = html_of(message)
    return len(pixel_urls(html)), len(click_urls(html))


def test_both_on_by_default(task, django_capture_on_commit_callbacks):
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    assert tracking_of(message) == (1, 1)


def test_opens_off_globally(task, settings, django_capture_on_commit_callbacks):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "TRACK_OPENS": False}
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    assert tracking_of(message) == (0, 1)
    assert policy.opens_trackable(Delivery.objects.get()) is False


def test_clicks_off_globally(task, settings, django_capture_on_commit_callbacks):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "TRACK_CLICKS": False}
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    assert tracking_of(message) == (1, 0)
    assert 'href="https://tracker.example.com/tasks/1"' in html_of(message)


def test_off_for_one_notification(task, django_capture_on_commit_callbacks):
    (message,) = send(
        django_capture_on_commit_callbacks,
        task,
        ["bob@example.com"],
        html=HTML,
        track_opens=False,
        track_clicks=False,
    )
    assert html_of(message) == HTML


def test_off_for_a_recipient_who_refused_it(
    client, task, django_user_model, django_capture_on_commit_callbacks, settings
):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "SCANNER_WINDOW_SECONDS": 0}
    carol = django_user_model.objects.create_user("carol", "carol@example.com")
    TrackingPreference.objects.create(user=carol, allow_tracking=False)
    bob_mail, carol_mail = send(
        django_capture_on_commit_callbacks, task, ["bob@example.com", carol], html=HTML
    )
    assert tracking_of(bob_mail) == (1, 1)
    assert html_of(carol_mail) == HTML
    # Bob's pixel says nothing about carol.
    client.get(path(pixel_urls(html_of(bob_mail))[0]), HTTP_USER_AGENT=THUNDERBIRD)
    carol_delivery = Delivery.objects.get(recipient="carol@example.com")
    assert carol_delivery.status == "sent"
    assert not carol_delivery.events.filter(kind__in=["opened", "clicked"]).exists()
    assert policy.opens_trackable(carol_delivery) is False
