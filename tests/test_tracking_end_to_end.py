"""notify() → the sent email → its pixel and links fetched → the delivery's status."""

from html import unescape

import django
import pytest
from django.conf import settings as django_settings
from django.template import Context, Template
from django.urls import reverse

from notify_tracking.models import Delivery
from tests.tracking_support import click_urls, download_urls, html_of, path, pixel_urls, send

pytestmark = pytest.mark.django_db

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
HTML = """<!DOCTYPE html>
<html><body>
<p>Alice commented on <a href="https://tracker.example.com/tasks/1#c-7">Fix the login page</a>.</p>
<p><a href="https://tracker.example.com/tasks/1/subscribe?off=1">Mute this task</a>
 · <a href="mailto:alice@example.com">Reply to Alice</a></p>
</body></html>"""


def test_a_person_reads_then_clicks(client, task, settings, django_capture_on_commit_callbacks):
    # The person reads after the scanner window (here: no window at all).
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "SCANNER_WINDOW_SECONDS": 0}
    bob_mail, _carol_mail = send(
        django_capture_on_commit_callbacks,
        task,
        ["bob@example.com", "carol@example.com"],
        html=HTML,
    )
    html = html_of(bob_mail)
    (pixel,) = pixel_urls(html)
    links = click_urls(html)
    assert len(links) == 2  # mailto: left alone
    assert 'href="mailto:alice@example.com"' in html

    for _ in range(2):
        response = client.get(path(pixel), HTTP_USER_AGENT=THUNDERBIRD)
        assert response.status_code == 200
    response = client.get(path(links[0]), HTTP_USER_AGENT=THUNDERBIRD)
    assert response.status_code == 302
    assert response["Location"] == "https://tracker.example.com/tasks/1#c-7"

    bob = Delivery.objects.get(recipient="bob@example.com")
    assert bob.status == "clicked"
    assert (bob.open_count, bob.click_count) == (2, 1)
    assert (bob.machine_open_count, bob.machine_click_count) == (0, 0)
    assert bob.first_opened_at <= bob.last_opened_at <= bob.first_clicked_at
    assert list(bob.events.values_list("kind", "source")) == [
        ("sent", "channel"),
        ("opened", "pixel"),
        ("opened", "pixel"),
        ("clicked", "click"),
    ]
    carol = Delivery.objects.get(recipient="carol@example.com")
    assert (carol.status, carol.open_count, carol.click_count) == ("sent", 0, 0)


def test_a_scanner_fetching_at_once_leaves_the_delivery_unread(
    client, task, django_capture_on_commit_callbacks
):
    (message,) = send(django_capture_on_commit_callbacks, task, ["bob@example.com"], html=HTML)
    html = html_of(message)
    client.get(path(pixel_urls(html)[0]), HTTP_USER_AGENT=THUNDERBIRD)
    response = client.get(path(click_urls(html)[0]), HTTP_USER_AGENT=THUNDERBIRD)
    assert response.status_code == 302

    bob = Delivery.objects.get()
    assert bob.status == "sent"
    assert (bob.open_count, bob.click_count) == (0, 0)
    assert (bob.machine_open_count, bob.machine_click_count) == (1, 1)
    reasons = {e.details["machine_reason"] for e in bob.events.filter(is_machine=True)}
    assert reasons == {"too_soon_after_sending"}


@pytest.mark.skipif(django.VERSION < (5, 1), reason="LoginRequiredMiddleware is Django 5.1+")
def test_recipients_without_an_account_reach_what_the_email_links_to(
    client, task, settings, django_capture_on_commit_callbacks
):
    """A host behind LoginRequiredMiddleware (an intranet tracker): the pixel, the
    links, the files and the PNG badge are for mail clients, which have no login."""
    login_required = "django.contrib.auth.middleware.LoginRequiredMiddleware"
    settings.MIDDLEWARE = [*django_settings.MIDDLEWARE, login_required]
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "SCANNER_WINDOW_SECONDS": 0,
        "TRACK_DOWNLOADS": True,
    }
    (message,) = send(
        django_capture_on_commit_callbacks,
        task,
        ["bob@example.com"],
        html=HTML,
        attachments=[("notes.txt", b"the notes", "text/plain")],
    )
    html = html_of(message)
    pixel = client.get(path(pixel_urls(html)[0]), HTTP_USER_AGENT=THUNDERBIRD)
    link = client.get(path(click_urls(html)[0]), HTTP_USER_AGENT=THUNDERBIRD)
    file = client.get(path(download_urls(message.body)[0]), HTTP_USER_AGENT=THUNDERBIRD)
    badge_url = Template("{% load notify_tracking %}{% delivery_badge_png_url task %}").render(
        Context({"task": task})
    )
    badge = client.get(unescape(badge_url).removeprefix("http://testserver"))

    assert (pixel.status_code, pixel["Content-Type"]) == (200, "image/gif")
    assert (link.status_code, link["Location"]) == (302, "https://tracker.example.com/tasks/1#c-7")
    assert (file.status_code, b"".join(file.streaming_content)) == (200, b"the notes")
    assert (badge.status_code, badge["Content-Type"]) == (200, "image/png")
    bob = Delivery.objects.get()
    assert list(bob.events.values_list("kind", flat=True)) == [
        "sent",
        "opened",
        "clicked",
        "download",
    ]
    # What is for the host's users still asks for a login.
    popup = client.get(reverse("notify_tracking:status-badge", args=["testapp.task", task.pk]))
    assert popup.status_code == 302 and popup["Location"].startswith(django_settings.LOGIN_URL)
