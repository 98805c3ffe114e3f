"""The click endpoint: redirect to exactly the signed URL, or 404; never anywhere else."""

import logging

import pytest
from django.db import DatabaseError
from django.test import override_settings
from django.urls import reverse

from notify_tracking.models import Delivery, DeliveryEvent
from notify_tracking.tracking import tokens
from tests.tracking_support import HTML, mark_sent, queued

pytestmark = pytest.mark.django_db

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
TARGET = "https://tracker.example.com/tasks/1?tab=comments&sort=new#c-12"


@pytest.fixture
def delivery(task):
    (delivery,) = queued(task, ["bob@example.com"], html=HTML)
    return mark_sent(delivery)


def click_path(token: str) -> str:
    return reverse("notify_tracking:click", kwargs={"token": token})


def test_a_click_redirects_to_exactly_the_signed_url_and_is_recorded(client, delivery):
    response = client.get(
        click_path(tokens.sign_click(delivery.token, TARGET)), HTTP_USER_AGENT=BROWSER_UA
    )
    assert response.status_code == 302
    assert response["Location"] == TARGET
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]
    delivery.refresh_from_db()
    assert delivery.status == "clicked"  # a click implies the open
    assert delivery.click_count == 1
    assert delivery.first_clicked_at is not None
    event = delivery.events.get(kind="clicked")
    assert event.source == "click"
    assert event.details["url"] == TARGET
    assert event.is_machine is False


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda d: "x" + tokens.sign_click(d.token, TARGET)[1:], id="tampered"),
        pytest.param(lambda d: tokens.sign_click(d.token, TARGET)[:-3], id="truncated"),
        pytest.param(lambda d: "garbage", id="garbage"),
        pytest.param(lambda d: tokens.sign_open(d.token), id="pixel-token"),
        pytest.param(lambda d: "Z" * 5000, id="oversized"),
    ],
)
def test_a_bad_token_is_a_404_that_redirects_nowhere_and_costs_no_query(
    client, delivery, make_token, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get(click_path(make_token(delivery)), HTTP_USER_AGENT=BROWSER_UA)
    assert response.status_code == 404
    assert "Location" not in response
    assert b"evil" not in response.content
    assert not DeliveryEvent.objects.filter(kind="clicked").exists()


def test_a_token_signed_with_another_key_cannot_redirect(client, delivery):
    with override_settings(SECRET_KEY="an-attackers-guess"):
        forged = tokens.sign_click(delivery.token, "https://evil.example/phish")
    response = client.get(click_path(forged))
    assert response.status_code == 404
    assert "Location" not in response


def test_query_strings_cannot_steer_the_redirect(client, delivery):
    url = click_path(tokens.sign_click(delivery.token, TARGET))
    response = client.get(url + "?next=https://evil.example/&url=https://evil.example/")
    assert response["Location"] == TARGET


def test_a_signed_non_http_url_is_refused(client, delivery):
    response = client.get(click_path(tokens.sign_click(delivery.token, "javascript:alert(1)")))
    assert response.status_code == 404
    assert "Location" not in response


def test_the_link_of_a_deleted_delivery_still_works_and_records_nothing(client, delivery):
    url = click_path(tokens.sign_click(delivery.token, TARGET))
    Delivery.objects.filter(pk=delivery.pk).delete()
    response = client.get(url, HTTP_USER_AGENT=BROWSER_UA)
    assert response.status_code == 302
    assert response["Location"] == TARGET
    assert not DeliveryEvent.objects.exists()


def test_a_recording_failure_still_redirects_and_is_logged(client, delivery, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise DatabaseError("database is locked")

    monkeypatch.setattr("notify_tracking.tracking.recording.record_events", broken)
    with caplog.at_level(logging.ERROR, logger="notify_tracking.tracking.views"):
        response = client.get(
            click_path(tokens.sign_click(delivery.token, TARGET)), HTTP_USER_AGENT=BROWSER_UA
        )
    assert response.status_code == 302
    assert response["Location"] == TARGET
    assert "could not record a click" in caplog.text


def test_a_head_request_is_recorded_as_a_machine_click(client, delivery):
    response = client.head(
        click_path(tokens.sign_click(delivery.token, TARGET)), HTTP_USER_AGENT=BROWSER_UA
    )
    assert response.status_code == 302
    event = delivery.events.get(kind="clicked")
    assert event.is_machine is True
    assert event.details["machine_reason"] == "head_request"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.click_count, delivery.machine_click_count) == ("sent", 0, 1)


def test_post_is_not_allowed(client, delivery):
    response = client.post(click_path(tokens.sign_click(delivery.token, TARGET)))
    assert response.status_code == 405
    assert not DeliveryEvent.objects.filter(kind="clicked").exists()


def test_clicks_of_a_delivery_whose_clicks_are_not_tracked_are_not_recorded(client, task):
    (delivery,) = queued(task, ["bob@example.com"], html=HTML, track_clicks=False)
    mark_sent(delivery)
    response = client.get(
        click_path(tokens.sign_click(delivery.token, TARGET)), HTTP_USER_AGENT=BROWSER_UA
    )
    assert response["Location"] == TARGET
    assert not delivery.events.filter(kind="clicked").exists()


@pytest.mark.parametrize(
    "url", ["https://example.com/a\r\nSet-Cookie: x=1", "https://example.com/\x00", "ftp://x/"]
)
def test_a_signed_url_unfit_for_a_location_header_is_a_404_not_a_500(client, delivery, url):
    response = client.get(click_path(tokens.sign_click(delivery.token, url)))
    assert response.status_code == 404
    assert "Location" not in response
    assert "Set-Cookie" not in response
