"""notify() → the sent email → its pixel and links fetched → the delivery's status."""

import pytest

from notify_tracking.models import Delivery
from tests.tracking_support import click_urls, html_of, path, pixel_urls, send

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
