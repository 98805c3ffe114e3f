"""The webhook channel against a local receiver that verifies the signature.

The receiver verifies with the code printed in docs/channels-webhook.md, so the
documented algorithm is the one that is tested.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from werkzeug import Response

from notify_tracking import Recipient, notify
from notify_tracking.checks import check_settings
from tests.channel_fixtures import (
    WEBHOOK_SECRET,
    _fresh_rate_limits,  # noqa: F401  (autouse fixture)
    channels,
    closing_server,
    reasons,
    send,
)
from tests.testapp.models import Comment, Task

BACKEND = "notify_tracking.channels.webhook.WebhookChannel"
DOC = Path(__file__).resolve().parent.parent / "docs" / "channels-webhook.md"


def documented_verify():
    """The ``verify`` function of the documentation's receiver snippet."""
    text = DOC.read_text()
    block = re.search(r"<!-- verify-snippet.*?-->\n```python\n(.*?)```", text, re.DOTALL)
    namespace: dict = {}
    exec(compile(block[1], str(DOC), "exec"), namespace)  # noqa: S102  (our own docs)
    return namespace["verify"]


verify = documented_verify()


def webhook(url, **options):
    defaults = {"URL": url, "SECRET": WEBHOOK_SECRET, "TIMEOUT": 2}
    return channels(webhook=(BACKEND, {**defaults, **options}))


class Receiver:
    """Plays the receiving system: checks the signature, keeps what it accepted."""

    def __init__(self, answer=None, status=200):
        self.answer = {"id": "rcv-1"} if answer is None else answer
        self.status = status
        self.accepted: list[tuple[dict, dict]] = []

    def __call__(self, request):
        body = request.get_data()
        headers = dict(request.headers)
        if not verify(
            WEBHOOK_SECRET,
            headers.get("X-Notify-Timestamp", ""),
            headers.get("X-Notify-Signature", ""),
            body,
        ):
            return Response("bad signature", status=401)
        self.accepted.append((headers, json.loads(body)))
        text = self.answer if isinstance(self.answer, str) else json.dumps(self.answer)
        return Response(text, status=self.status, content_type="application/json")


@pytest.fixture
def receiver(httpserver):
    receiver = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(receiver)
    return receiver


@pytest.fixture
def url(httpserver):
    return httpserver.url_for("/hook")


def test_a_signed_document_is_accepted(receiver, url, user, django_capture_on_commit_callbacks):
    task = Task.objects.create(title="Fix the login page")
    comment = Comment.objects.create(task=task, body="Looks good")
    with webhook(url):
        [delivery] = send(
            django_capture_on_commit_callbacks,
            comment,
            [user],
            channel="webhook",
            subject="New comment",
            text="Bob: looks good",
        )
    assert (delivery.status, delivery.message_id, delivery.error) == ("sent", "rcv-1", "")
    [(headers, document)] = receiver.accepted
    assert headers["X-Notify-Delivery"] == str(delivery.token)
    assert headers["User-Agent"].startswith("django-notify-tracking/")
    assert abs(int(headers["X-Notify-Timestamp"]) - time.time()) < 5
    notification = delivery.notification
    assert document == {
        "version": 1,
        "type": "notification",
        "delivery": str(delivery.token),
        "attempt": 1,
        "notification": notification.pk,
        "channel": "webhook",
        "recipient": "alice",
        "recipient_name": "",
        "subject": "New comment",
        "text": "Bob: looks good",
        "html": None,
        "target": {"app_label": "testapp", "model": "comment", "pk": str(comment.pk), "url": None},
        "created_at": notification.created_at.isoformat().replace("+00:00", "Z"),
    }


def test_the_target_url_is_sent_when_the_target_has_one(
    receiver, url, task, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(Task, "get_absolute_url", lambda self: f"/tasks/{self.pk}/", raising=False)
    with webhook(url):
        send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert receiver.accepted[0][1]["target"]["url"] == f"http://testserver/tasks/{task.pk}/"


def test_a_wrong_secret_is_caught_by_the_receiver(
    receiver, url, task, django_capture_on_commit_callbacks
):
    with webhook(url, SECRET="not-the-receivers-secret"):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert (delivery.status, delivery.error) == (
        "failed",
        "the receiver answered HTTP 401: bad signature",
    )
    assert receiver.accepted == []


def test_the_documented_check_refuses_tampering_and_replays(
    receiver, url, task, httpserver, django_capture_on_commit_callbacks
):
    with webhook(url):
        send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    request, _ = httpserver.log[-1]
    body, timestamp = request.get_data(), request.headers["X-Notify-Timestamp"]
    signature = request.headers["X-Notify-Signature"]
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", signature)
    assert verify(WEBHOOK_SECRET, timestamp, signature, body)
    assert not verify(WEBHOOK_SECRET, timestamp, signature, body.replace(b"42", b"43"))
    assert not verify(WEBHOOK_SECRET, str(int(timestamp) + 1), signature, body)
    assert not verify("another-secret", timestamp, signature, body)
    old = str(int(time.time()) - 3600)
    resigned = __import__("notify_tracking.channels.webhook", fromlist=["sign"]).sign(
        WEBHOOK_SECRET, old, body
    )
    assert not verify(WEBHOOK_SECRET, old, resigned, body)  # correctly signed, but too old


@pytest.mark.parametrize(
    ("answer", "status"), [("", 204), ("accepted", 200), ({"id": True}, 202), ([1], 200)]
)
def test_without_an_id_in_the_answer_the_token_is_the_provider_id(
    answer, status, httpserver, url, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/hook", method="POST").respond_with_handler(Receiver(answer, status))
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert (delivery.status, delivery.message_id) == ("sent", str(delivery.token))


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_a_client_error_fails(status, httpserver, url, task, django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook", method="POST").respond_with_data(
        '{"error": "unknown recipient"}', status=status
    )
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert delivery.status == "failed"
    assert (
        delivery.error == f'the receiver answered HTTP {status}: {{"error": "unknown recipient"}}'
    )
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_a_server_error_defers(status, httpserver, url, task, django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook", method="POST").respond_with_data("busy", status=status)
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert (delivery.status, delivery.error) == (
        "deferred",
        f"the receiver answered HTTP {status}: busy",
    )


def test_429_is_retried_after_retry_after(
    httpserver, url, task, django_capture_on_commit_callbacks
):
    receiver, arrivals = Receiver(), []

    def handler(request):
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return Response("slow down", status=429, headers={"Retry-After": "1"})
        return receiver(request)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.0
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert receiver.accepted[0][1]["attempt"] == 2


def test_a_redirect_is_not_followed(httpserver, url, task, django_capture_on_commit_callbacks):
    elsewhere = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_handler(elsewhere)
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert delivery.status == "failed"
    assert delivery.error == (
        "the receiver answered HTTP 307 (redirects are not followed: configure the final URL)"
    )
    assert elsewhere.accepted == []


def test_a_slow_receiver_times_out(httpserver, url, task, django_capture_on_commit_callbacks):
    def slow(request):
        time.sleep(1.2)
        return Response("{}")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(slow)
    with webhook(url, TIMEOUT=0.4):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert (delivery.status, delivery.error) == ("deferred", "Webhook did not answer within 0.4 s")


def test_a_10_mb_answer_is_not_downloaded_and_2xx_still_means_sent(
    httpserver, url, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/hook", method="POST").respond_with_data(b"[" * (10 * 1024 * 1024))
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert (delivery.status, delivery.message_id) == ("sent", str(delivery.token))


def test_a_receiver_that_hangs_up_defers(task, django_capture_on_commit_callbacks):
    with closing_server() as base, webhook(base + "/hook"):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert delivery.status == "deferred"
    assert delivery.error == "Webhook: the server closed the connection without answering"


def test_a_truncated_answer_defers(task, django_capture_on_commit_callbacks):
    half = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id": '
    with closing_server(half) as base, webhook(base + "/hook"):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert delivery.status == "deferred"
    assert delivery.error.startswith("Webhook: ")


def test_the_secret_appears_in_no_reason_and_no_log_line(
    httpserver, url, task, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request("/hook", method="POST").respond_with_data(
        f"secret {WEBHOOK_SECRET} is wrong", status=403
    )
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert delivery.error == "the receiver answered HTTP 403: secret *** is wrong"
    assert WEBHOOK_SECRET not in reasons(delivery)
    assert WEBHOOK_SECRET not in "\n".join(r.getMessage() for r in caplog.records)


def test_missing_url_and_secret(task, django_capture_on_commit_callbacks):
    with channels(webhook=(BACKEND, {})):
        [error] = check_settings()
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    assert error.msg.endswith(
        "channel 'webhook': OPTIONS['URL'] is required; OPTIONS['SECRET'] is required"
    )
    assert delivery.status == "failed"
    assert "not configured: OPTIONS['URL'] is required" in delivery.error


def test_a_url_that_is_not_http_fails_the_checks():
    with channels(webhook=(BACKEND, {"URL": "file:///etc/passwd", "SECRET": "x"})):
        [error] = check_settings()
    assert "['URL'] must be an http(s) URL" in error.msg


def test_recipients_are_names_not_urls(
    receiver, url, user, task, django_capture_on_commit_callbacks
):
    recipients = [user, Recipient("+33 6 12 34 56 78", channel="webhook", name="On call")]
    with webhook(url, RECIPIENT_RESOLVER=lambda u: f"user-{u.pk}"):
        deliveries = send(django_capture_on_commit_callbacks, task, recipients, channel="webhook")
    assert [d.recipient for d in deliveries] == [f"user-{user.pk}", "+33 6 12 34 56 78"]
    assert [doc["recipient_name"] for _, doc in receiver.accepted] == ["", "On call"]
    assert all(d.status == "sent" for d in deliveries)


@pytest.mark.parametrize("address", ["two\nlines", "x" * 321, "tab\there"])
def test_invalid_recipients_are_refused(address, url, task):
    with webhook(url), pytest.raises(ValidationError, match="one line of at most 320"):
        notify(task, [address], text="x", channel="webhook")


def test_a_retry_is_signed_again_and_carries_the_same_token(
    httpserver, url, task, django_capture_on_commit_callbacks
):
    receiver, arrivals = Receiver(), []

    def handler(request):
        arrivals.append((time.monotonic(), dict(request.headers)))
        if len(arrivals) == 1:
            return Response("maintenance", status=503, headers={"Retry-After": "1"})
        return receiver(request)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    with webhook(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["42"], channel="webhook")
    (first, first_headers), (second, second_headers) = arrivals
    assert second - first >= 1.0
    assert first_headers["X-Notify-Delivery"] == second_headers["X-Notify-Delivery"]
    assert uuid.UUID(second_headers["X-Notify-Delivery"]) == delivery.token
    assert int(second_headers["X-Notify-Timestamp"]) >= int(first_headers["X-Notify-Timestamp"])
    assert (delivery.status, receiver.accepted[0][1]["attempt"]) == ("sent", 2)


def test_a_1_mb_text_is_sent_whole(receiver, url, task, django_capture_on_commit_callbacks):
    text = "é" * (1024 * 1024)
    with webhook(url):
        [delivery] = send(
            django_capture_on_commit_callbacks, task, ["42"], channel="webhook", text=text
        )
    assert delivery.status == "sent"
    assert receiver.accepted[0][1]["text"] == text
