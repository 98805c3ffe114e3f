"""Tracking tokens, end to end through the views: what the token tests leave out.

tests/test_tracking_tokens.py and the view tests prove that a forged, tampered,
truncated or foreign-purpose token records nothing. Here:

- tokens of two deliveries spliced together (one's payload, the other's signature),
  and a group flag added to a single delivery's token, record nothing on either;
- tokens replayed after the retention purge deleted their delivery record nothing;
- a click token redirects to its signed URL or nowhere, whatever URL it signs and
  however it is mutated (property-based);
- rotating ``SECRET_KEY`` with the old key in ``SECRET_KEY_FALLBACKS`` keeps the
  links of emails already sent working (pixel, link, download, PNG badge), and
  dropping the fallback ends them.
"""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

import pytest
from django.core import mail
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import iri_to_uri
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs

from notify_tracking.badges import png_token
from notify_tracking.models import Delivery, DeliveryEvent, Notification
from notify_tracking.retention import purge
from notify_tracking.tracking import tokens
from notify_tracking.tracking.views import PIXEL_GIF
from tests.reliability.figures import emit
from tests.tracking_support import HTML, click_urls, download_urls, html_of, mark_sent, path, queued

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
TARGET = "https://tracker.example.com/tasks/1"
OLD_KEY = "the-key-the-emails-were-signed-with"
NEW_KEY = "the-key-after-rotation"
FILE = ("minutes.txt", b"minutes of the meeting")


def pixel_path(token: str) -> str:
    return reverse("notify_tracking:open", kwargs={"token": token})


def click_path(token: str) -> str:
    return reverse("notify_tracking:click", kwargs={"token": token})


def download_path(token: str) -> str:
    return reverse("notify_tracking:download", kwargs={"token": token})


@pytest.fixture
def two(task):
    first, second = queued(task, ["ann@example.com", "ben@example.com"], html=HTML)
    return mark_sent(first), mark_sent(second)


def splice(token: str, other: str) -> str:
    """The payload of ``token`` with the signature of ``other``."""
    return token.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


def tracking_events() -> int:
    return DeliveryEvent.objects.exclude(source="channel").count()


def test_spliced_tokens_of_two_deliveries_record_nothing(client, two):
    ann, ben = two
    pairs = [
        (tokens.sign_open(ann.token), tokens.sign_open(ben.token), pixel_path),
        (tokens.sign_click(ann.token, TARGET), tokens.sign_click(ben.token, TARGET), click_path),
        (tokens.sign_download(ann.token, 1), tokens.sign_download(ben.token, 1), download_path),
    ]
    for first, second, route in pairs:
        for forged in (splice(first, second), splice(second, first)):
            response = client.get(route(forged), HTTP_USER_AGENT=BROWSER)
            assert response.status_code in (200, 404)
            assert "Location" not in response
    assert tracking_events() == 0


def test_a_group_flag_added_to_a_token_is_refused(client, two):
    ann, _ = two
    payload, signature = tokens.sign_open(ann.token).rsplit(".", 1)
    response = client.get(pixel_path(f"{payload}g.{signature}"), HTTP_USER_AGENT=BROWSER)
    assert response.content == PIXEL_GIF
    assert tracking_events() == 0


def test_tokens_replayed_after_the_purge_record_nothing(client, task, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "TRACK_DOWNLOADS": True}
    (old,) = queued(task, ["ann@example.com"], html=HTML, attachments=[FILE])
    old = mark_sent(old)
    attachment = old.notification.attachments.get()
    open_token = tokens.sign_open(old.token)
    click_token = tokens.sign_click(old.token, TARGET)
    download_token = tokens.sign_download(old.token, attachment.pk)
    (young,) = queued(task, ["ben@example.com"], html=HTML)
    mark_sent(young)
    Notification.objects.filter(pk=old.notification_id).update(
        created_at=timezone.now() - dt.timedelta(days=400)
    )
    purge()
    assert not Delivery.objects.filter(pk=old.pk).exists()

    assert client.get(pixel_path(open_token), HTTP_USER_AGENT=BROWSER).content == PIXEL_GIF
    replayed_click = client.get(click_path(click_token), HTTP_USER_AGENT=BROWSER)
    assert replayed_click["Location"] == TARGET  # the link in an old email still works
    assert client.get(download_path(download_token)).status_code == 404  # the file is gone
    assert tracking_events() == 0  # on no delivery at all, the young one included


# --- a click token redirects to its signed URL, or nowhere -----------------------------

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
any_url = hs.one_of(
    hs.text(max_size=80),
    hs.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        hs.sampled_from(["http", "https", "HTTPS", "javascript", "data", "ftp", "//"]),
        hs.text(max_size=60),
    ),
)


@FUZZ
@given(url=any_url)
def test_a_click_token_redirects_only_to_the_url_it_signs(client, two, url):
    ann, _ = two
    response = client.get(click_path(tokens.sign_click(ann.token, url)), HTTP_USER_AGENT=BROWSER)
    if response.status_code == 302:
        assert response["Location"] == iri_to_uri(url)  # the same URL, non-ASCII escaped
        assert url.split(":", 1)[0].lower() in ("http", "https")
    else:
        assert response.status_code == 404
        assert "Location" not in response


@pytest.mark.parametrize("url", ["http://[", "https://[::1", "HTTP://]x", "https:no-host"])
def test_a_signed_url_that_does_not_parse_is_a_404_not_a_500(client, two, url):
    """Found by the test above: ``http://[`` made the redirect raise (a 500)."""
    ann, _ = two
    response = client.get(click_path(tokens.sign_click(ann.token, url)))
    assert response.status_code == 404
    assert "Location" not in response


@FUZZ
@given(data=hs.data())
def test_a_mutated_click_token_never_redirects_elsewhere(client, two, data):
    ann, _ = two
    token = tokens.sign_click(ann.token, TARGET)
    index = data.draw(hs.integers(0, len(token) - 1), label="index")
    alphabet = hs.characters(codec="ascii", exclude_characters="/?#%")
    how = data.draw(hs.sampled_from(["replace", "insert", "delete"]), label="how")
    char = data.draw(alphabet, label="char")
    if how == "replace":
        assume(char != token[index])
        mutated = token[:index] + char + token[index + 1 :]
    elif how == "insert":
        mutated = token[:index] + char + token[index:]
    else:
        mutated = token[:index] + token[index + 1 :]
    response = client.get(click_path(mutated), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 404
    assert "Location" not in response
    assert not DeliveryEvent.objects.filter(kind="clicked").exists()


# --- SECRET_KEY rotation ------------------------------------------------------------------


@pytest.fixture
def sent_with_the_old_key(task, settings, django_capture_on_commit_callbacks):
    """An email sent (links signed) with OLD_KEY: its pixel, link, file and badge URLs."""
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "TRACK_DOWNLOADS": True}
    with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        with django_capture_on_commit_callbacks(execute=True):
            notification = task_notification(task)
        badge = reverse("notify_tracking:status-badge-png", args=[png_token(task)])
    (message,) = mail.outbox
    html = html_of(message)
    delivery = notification.deliveries.get()
    Delivery.objects.filter(pk=delivery.pk).update(sent_at=timezone.now() - dt.timedelta(hours=1))
    pixel = unescape(re.search(r'<img src="http://testserver([^"]+)"', html).group(1))
    return {
        "delivery": delivery,
        "pixel": pixel,
        "click": path(click_urls(html)[0]),
        "download": path(download_urls(message.body)[0]),
        "badge": badge,
    }


def task_notification(task):
    from notify_tracking import notify

    return notify(
        task, ["ann@example.com"], subject="Minutes", text="The minutes.", html=HTML,
        attachments=[FILE],
    )  # fmt: skip


def visit_all(client, urls) -> dict[str, int]:
    return {
        name: client.get(urls[name], HTTP_USER_AGENT=BROWSER).status_code
        for name in ("pixel", "click", "download", "badge")
    }


def test_links_signed_before_a_key_rotation_keep_working_with_the_fallback(
    client, sent_with_the_old_key, capsys
):
    urls = sent_with_the_old_key
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        answers = visit_all(client, urls)
        assert client.get(urls["click"])["Location"] == TARGET
    assert answers == {"pixel": 200, "click": 302, "download": 200, "badge": 200}
    kinds = set(urls["delivery"].events.values_list("kind", flat=True))
    assert {"opened", "clicked", "download"} <= kinds
    emit(
        capsys,
        "tokens",
        "key rotation",
        "pixel, link, download and badge URLs signed with the old SECRET_KEY work with it in "
        "SECRET_KEY_FALLBACKS, and stop working without it",
    )


def test_links_signed_with_a_key_that_was_dropped_record_nothing(client, sent_with_the_old_key):
    urls = sent_with_the_old_key
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        answers = visit_all(client, urls)
    assert answers == {"pixel": 200, "click": 404, "download": 404, "badge": 404}
    assert not urls["delivery"].events.exclude(source="channel").exists()
