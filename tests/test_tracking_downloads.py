"""Tracked downloads: links instead of attachments, recorded, then the file."""

import pytest
from django.urls import reverse

from notify_tracking.models import Attachment, Delivery, DeliveryEvent, TrackingPreference
from notify_tracking.tracking import tokens
from tests.tracking_support import HTML, download_urls, html_of, path, queued, send

pytestmark = pytest.mark.django_db

BROWSER_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"
REPORT = ("report.csv", b"id,title\n1,Fix the login page\n", "text/csv")


@pytest.fixture
def tracked_downloads(settings):
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "TRACK_DOWNLOADS": True,
        "SCANNER_WINDOW_SECONDS": 0,
    }


def test_attachments_become_download_links_and_a_download_is_recorded(
    client, task, tracked_downloads, django_capture_on_commit_callbacks
):
    (message,) = send(
        django_capture_on_commit_callbacks,
        task,
        ["bob@example.com"],
        html=HTML,
        attachments=[REPORT, ("notes.txt", "hello")],
    )
    assert message.attachments == []
    text_links = download_urls(message.body)
    assert len(text_links) == 2
    assert "report.csv" in message.body and "notes.txt" in message.body
    html = html_of(message)
    for url in text_links:  # listed in the HTML too, as they are (not as click links)
        assert f'href="{url}"' in html

    response = client.get(path(text_links[0]), HTTP_USER_AGENT=BROWSER_UA)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == REPORT[1]
    assert response["Content-Disposition"] == 'attachment; filename="report.csv"'
    assert response["Content-Type"] == "text/csv"

    delivery = Delivery.objects.get()
    event = delivery.events.get(kind="download")
    report = Attachment.objects.get(filename="report.csv")
    assert event.source == "download"
    assert event.details["attachment_id"] == report.pk
    assert event.details["filename"] == "report.csv"
    assert delivery.status == "clicked"  # a download counts as a click
    assert delivery.click_count == 1


def test_without_the_setting_files_are_attached(task, django_capture_on_commit_callbacks):
    (message,) = send(
        django_capture_on_commit_callbacks,
        task,
        ["bob@example.com"],
        html=HTML,
        attachments=[REPORT],
    )
    assert [(name, content) for name, content, _ in message.attachments] == [
        ("report.csv", REPORT[1].decode())  # Django decodes text attachments
    ]
    assert download_urls(message.body) == []


def test_a_recipient_who_refused_tracking_gets_the_files_attached(
    task, tracked_downloads, django_user_model, django_capture_on_commit_callbacks
):
    carol = django_user_model.objects.create_user("carol", "carol@example.com")
    TrackingPreference.objects.create(user=carol, allow_tracking=False)
    (message,) = send(django_capture_on_commit_callbacks, task, [carol], attachments=[REPORT])
    assert [name for name, _, _ in message.attachments] == ["report.csv"]
    assert download_urls(message.body) == []


def test_a_text_only_email_lists_its_download_links_in_the_text(
    task, tracked_downloads, django_capture_on_commit_callbacks
):
    (message,) = send(
        django_capture_on_commit_callbacks, task, ["bob@example.com"], attachments=[REPORT]
    )
    assert message.alternatives == []
    assert len(download_urls(message.body)) == 1


def download_path(token: str) -> str:
    return reverse("notify_tracking:download", kwargs={"token": token})


@pytest.fixture
def delivery_with_file(task):
    (delivery,) = queued(task, ["bob@example.com"], attachments=[REPORT])
    return delivery, delivery.notification.attachments.get()


@pytest.mark.parametrize("token", ["garbage", "Q" * 5000, "1" * 32 + "-1.abc"])
def test_a_bad_token_is_a_404(client, delivery_with_file, token, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get(download_path(token))
    assert response.status_code == 404
    assert not DeliveryEvent.objects.filter(kind="download").exists()


def test_a_token_for_a_file_of_another_notification_is_a_404(client, task, delivery_with_file):
    delivery, _ = delivery_with_file
    (other,) = queued(task, ["dave@example.com"], attachments=[("secret.txt", b"not yours")])
    other_file = other.notification.attachments.get()
    response = client.get(download_path(tokens.sign_download(delivery.token, other_file.pk)))
    assert response.status_code == 404
    assert b"not yours" not in response.content
    assert not DeliveryEvent.objects.filter(kind="download").exists()


def test_a_missing_file_is_a_404_and_records_nothing(client, delivery_with_file, caplog):
    delivery, attachment = delivery_with_file
    attachment.file.storage.delete(attachment.file.name)
    response = client.get(download_path(tokens.sign_download(delivery.token, attachment.pk)))
    assert response.status_code == 404
    assert "has no readable file" in caplog.text
    assert not DeliveryEvent.objects.filter(kind="download").exists()


def test_the_file_is_served_even_when_recording_fails(
    client, delivery_with_file, monkeypatch, caplog
):
    delivery, attachment = delivery_with_file

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("notify_tracking.tracking.recording.record_events", broken)
    response = client.get(download_path(tokens.sign_download(delivery.token, attachment.pk)))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == REPORT[1]
    assert "could not record a download" in caplog.text
