"""The Telegram channel against a local stand-in for the Bot API."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured, ValidationError
from werkzeug import Response

from notify_tracking import Recipient, notify
from notify_tracking.channels.formatting import utf16_length
from notify_tracking.checks import check_settings
from notify_tracking.conf import get_channel
from notify_tracking.models import Notification
from tests.channel_fixtures import (
    TELEGRAM_TOKEN,
    _fresh_rate_limits,  # noqa: F401  (autouse fixture)
    channels,
    closing_server,
    queue,
    reasons,
    send,
    unused_port,
)
from tests.testapp.models import Task

BACKEND = "notify_tracking.channels.telegram.TelegramChannel"
PATH = f"/bot{TELEGRAM_TOKEN}/sendMessage"
CHAT = "123456789"


def telegram(api_url, **options):
    defaults = {"BOT_TOKEN": TELEGRAM_TOKEN, "API_URL": api_url, "TIMEOUT": 2}
    return channels(telegram=(BACKEND, {**defaults, **options}))


def ok(message_id=42):
    return {"ok": True, "result": {"message_id": message_id, "chat": {"id": int(CHAT)}}}


def failure(code, description, **parameters):
    body = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


@pytest.fixture
def api(httpserver):
    return httpserver.url_for("").rstrip("/")


def sent_payload(httpserver, index=-1):
    request, _response = httpserver.log[index]
    return json.loads(request.get_data())


# --- success and message text ----------------------------------------------------------


def test_a_message_is_sent_and_its_id_stored(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok(42))
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert (delivery.status, delivery.message_id, delivery.error) == ("sent", "42", "")
    assert delivery.sent_at is not None
    payload = sent_payload(httpserver)
    assert payload["chat_id"] == CHAT
    assert payload["parse_mode"] == "HTML"
    assert payload["text"] == "<b>Task</b>\n\nPlease review."


def test_html_is_escaped_and_the_target_linked(
    httpserver, api, task, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(
        Task, "get_absolute_url", lambda self: f"/tasks/{self.pk}/?a=1&b=2", raising=False
    )
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with telegram(api):
        send(
            django_capture_on_commit_callbacks,
            task,
            [CHAT],
            channel="telegram",
            subject="<Fix> & ship",
            text="if a < b && c > d: <script>",
        )
    assert sent_payload(httpserver)["text"] == (
        "<b>&lt;Fix&gt; &amp; ship</b>\n\n"
        "if a &lt; b &amp;&amp; c &gt; d: &lt;script&gt;\n\n"
        f'<a href="http://testserver/tasks/{task.pk}/?a=1&amp;b=2">Open</a>'
    )


def test_markdown_v2_escapes_every_special_character(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with telegram(api, PARSE_MODE="MarkdownV2"):
        send(
            django_capture_on_commit_callbacks,
            task,
            [CHAT],
            channel="telegram",
            subject="v1.2",
            text="a_b*c [d](e) ~f` >g #h +i -j =k |l {m} .n !o \\p",
        )
    payload = sent_payload(httpserver)
    assert payload["parse_mode"] == "MarkdownV2"
    assert payload["text"] == (
        "*v1\\.2*\n\n"
        "a\\_b\\*c \\[d\\]\\(e\\) \\~f\\` \\>g \\#h \\+i \\-j \\=k \\|l \\{m\\} \\.n \\!o \\\\p"
    )


def test_plain_text_mode_sends_no_parse_mode(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with telegram(api, PARSE_MODE=None):
        send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram", text="<b>x</b>")
    payload = sent_payload(httpserver)
    assert "parse_mode" not in payload
    assert payload["text"] == "Task\n\n<b>x</b>"


def test_a_1_mb_text_is_cut_to_4096_characters_keeping_the_link(
    httpserver, api, task, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(Task, "get_absolute_url", lambda self: f"/tasks/{self.pk}/", raising=False)
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    huge = ("a&b <c> 😀 " * 100_000)[: 1024 * 1024]
    with telegram(api):
        [delivery] = send(
            django_capture_on_commit_callbacks, task, [CHAT], channel="telegram", text=huge
        )
    assert delivery.status == "sent"
    text = sent_payload(httpserver)["text"]
    assert 4000 < utf16_length(text) <= 4096
    link = f'<a href="http://testserver/tasks/{task.pk}/">Open</a>'
    assert text.endswith("…\n\n" + link)
    body = text[len("<b>Task</b>\n\n") : -len("\n\n" + link)]
    assert "&" not in body.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "description"),
    [
        (403, "Forbidden: bot was blocked by the user"),
        (400, "Bad Request: chat not found"),
        (401, "Unauthorized"),
    ],
)
def test_a_refusal_fails_with_telegrams_description(
    status, description, httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        failure(status, description), status=status
    )
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert delivery.status == "failed"
    assert delivery.error == f"Telegram: {description}"
    assert len(httpserver.log) == 1  # a refusal is not retried


def test_429_is_retried_after_the_time_telegram_asks(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    arrivals = []

    def handler(request):
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            body = failure(429, "Too Many Requests: retry after 1", retry_after=1)
            return Response(json.dumps(body), status=429, content_type="application/json")
        return Response(json.dumps(ok(7)), content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handler)
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.0
    assert (delivery.status, delivery.message_id, delivery.attempts) == ("sent", "7", 2)
    deferred = delivery.events.get(kind="deferred")
    assert deferred.details["error"] == "Telegram: Too Many Requests: retry after 1"
    assert deferred.details["retry_in_seconds"] == 1.0


def test_a_server_error_defers_with_backoff(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        failure(502, "Bad Gateway"), status=502
    )
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert (delivery.status, delivery.error) == ("deferred", "Telegram: Bad Gateway")
    assert delivery.events.get(kind="deferred").details["retry_in_seconds"] >= 30


def test_a_slow_answer_times_out_and_defers(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    def slow(request):
        time.sleep(1.5)
        return Response(json.dumps(ok()), content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(slow)
    with telegram(api, TIMEOUT=0.5):
        started = time.monotonic()
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
        elapsed = time.monotonic() - started
    assert elapsed < 1.4
    assert (delivery.status, delivery.error) == ("deferred", "Telegram did not answer within 0.5 s")


def test_malformed_json_from_telegram(httpserver, api, task, django_capture_on_commit_callbacks):
    httpserver.expect_request(PATH, method="POST").respond_with_data(
        "<html>proxy</html>", content_type="application/json"
    )
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert delivery.status == "failed"
    assert delivery.error == (
        "Telegram gave an answer that is not the Bot API's: HTTP 200: <html>proxy</html>"
        " (the message may have been sent)"
    )


def test_malformed_json_with_a_server_error_is_retried(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_data("oops", status=503)
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert delivery.status == "deferred"
    assert "HTTP 503: oops" in delivery.error


def test_a_10_mb_answer_is_not_read(httpserver, api, task, django_capture_on_commit_callbacks):
    httpserver.expect_request(PATH, method="POST").respond_with_data(b"{" * (10 * 1024 * 1024))
    with telegram(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert delivery.status == "failed"
    assert "HTTP 200 with an answer larger than 1048576 bytes" in delivery.error


def test_a_server_that_hangs_up_defers(task, django_capture_on_commit_callbacks):
    with closing_server() as url, telegram(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert delivery.status == "deferred"
    assert delivery.error == "Telegram: the server closed the connection without answering"


def test_nobody_listening_defers(task, django_capture_on_commit_callbacks):
    with telegram(f"http://127.0.0.1:{unused_port()}"):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert (delivery.status, delivery.error) == ("deferred", "Telegram: could not connect")


def test_the_token_appears_in_no_reason_and_no_log_line(
    httpserver, api, task, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        failure(400, f"Bad Request: token {TELEGRAM_TOKEN} echoed"), status=400
    )
    deliveries = []
    with telegram(api):
        deliveries += send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    with telegram(f"http://127.0.0.1:{unused_port()}"):
        deliveries += send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    with closing_server() as url, telegram(url):
        deliveries += send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert [d.status for d in deliveries] == ["failed", "deferred", "deferred"]
    assert deliveries[0].error == "Telegram: Bad Request: token *** echoed"
    for delivery in deliveries:
        assert TELEGRAM_TOKEN not in reasons(delivery)
    # The stand-in's own access log ("werkzeug") is Telegram's side, not ours.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    assert "/bot***/sendMessage" in ours  # urllib3's request lines were captured...
    assert TELEGRAM_TOKEN not in ours  # ...with the token taken out


# --- configuration and recipients --------------------------------------------------------


def test_a_missing_token_is_a_check_error_and_a_clear_failure(
    task, django_capture_on_commit_callbacks
):
    with channels(telegram=(BACKEND, {})):
        messages = [error.msg for error in check_settings()]
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHAT], channel="telegram")
    assert messages == [
        "NOTIFY_TRACKING['CHANNELS'] channel 'telegram': OPTIONS['BOT_TOKEN'] is required"
    ]
    assert delivery.status == "failed"
    assert delivery.error == (
        "the Telegram channel telegram is not configured: OPTIONS['BOT_TOKEN'] is required"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"PARSE_MODE": "Markdown"}, "PARSE_MODE'] must be 'HTML', 'MarkdownV2' or None"),
        ({"TIMEOUT": 0}, "TIMEOUT'] must be more than 0"),
        ({"API_URL": "api.telegram.org"}, "API_URL'] must be an http(s) URL"),
        ({"RATE_LIMIT": "lots"}, "RATE_LIMIT'] must be a rate such as '30/s'"),
        ({"TOKEN": "x"}, "unknown option(s) TOKEN for TelegramChannel"),
    ],
)
def test_bad_options_fail_the_checks(options, message):
    with channels(telegram=(BACKEND, {"BOT_TOKEN": TELEGRAM_TOKEN, **options})):
        [error] = check_settings()
    assert message in error.msg


@pytest.mark.parametrize("address", ["123456789", "-1001234567890", "@my_channel"])
def test_valid_chat_ids(address):
    with channels(telegram=(BACKEND, {"BOT_TOKEN": TELEGRAM_TOKEN})):
        get_channel("telegram").validate_address(address)


@pytest.mark.parametrize("address", ["alice", "12.5", "@ab", "123 456", "@1channel"])
def test_an_invalid_chat_id_is_refused_by_notify(address, task):
    with (
        channels(telegram=(BACKEND, {"BOT_TOKEN": TELEGRAM_TOKEN})),
        pytest.raises(ValidationError, match="a Telegram chat id is a whole number"),
    ):
        notify(task, [address], text="x", channel="telegram")
    assert not Notification.objects.exists()


def test_an_empty_text_is_refused_by_notify(task):
    with (
        channels(telegram=(BACKEND, {"BOT_TOKEN": TELEGRAM_TOKEN})),
        pytest.raises(ValueError, match="text is empty"),
    ):
        notify(task, [CHAT], text="  \n", channel="telegram")


def test_an_empty_text_that_reached_the_channel_fails_clearly(httpserver, api, task):
    with telegram(api):
        [delivery] = queue(task, [CHAT], channel="telegram")
        delivery.notification.text = " "
        [(_, result)] = get_channel("telegram").send([delivery])
    assert (result.status, result.error) == (
        "failed",
        "nothing to send: the notification's text is empty",
    )
    assert httpserver.log == []


def test_a_users_chat_id_comes_from_the_resolver(
    httpserver, api, user, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with telegram(api, RECIPIENT_RESOLVER=lambda u: "777" if u.username == "alice" else None):
        [delivery] = send(django_capture_on_commit_callbacks, task, [user], channel="telegram")
    assert (delivery.recipient, delivery.user, delivery.status) == ("777", user, "sent")


def test_without_a_resolver_a_user_cannot_be_reached(user, task):
    with (
        channels(telegram=(BACKEND, {"BOT_TOKEN": TELEGRAM_TOKEN})),
        pytest.raises(ImproperlyConfigured, match="RECIPIENT_RESOLVER"),
    ):
        notify(task, [user], text="x", channel="telegram")


def test_one_notification_over_email_and_telegram(
    httpserver, api, user, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok(99))
    with telegram(api, RECIPIENT_RESOLVER=lambda u: "777"):
        deliveries = send(
            django_capture_on_commit_callbacks, task, [user], channel=["email", "telegram"]
        )
    by_channel = {d.channel: d for d in deliveries}
    assert set(by_channel) == {"email", "telegram"}
    assert len({d.notification_id for d in deliveries}) == 1
    assert (by_channel["email"].recipient, by_channel["email"].status) == (
        "alice@example.com",
        "sent",
    )
    assert (by_channel["telegram"].recipient, by_channel["telegram"].message_id) == ("777", "99")
    assert by_channel["telegram"].status == "sent"
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert sent_payload(httpserver)["chat_id"] == "777"


def test_a_recipient_can_name_its_channel(
    httpserver, api, user, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    recipients = [user, Recipient("-1001234567890", channel="telegram", name="Ops group")]
    with telegram(api):
        deliveries = send(django_capture_on_commit_callbacks, task, recipients, channel="email")
    assert [(d.channel, d.recipient, d.status) for d in deliveries] == [
        ("email", "alice@example.com", "sent"),
        ("telegram", "-1001234567890", "sent"),
    ]


def test_telegram_reports_no_delivery_and_no_reads():
    with channels(telegram=(BACKEND, {"BOT_TOKEN": TELEGRAM_TOKEN})):
        channel = get_channel("telegram")
    assert (channel.reports_delivery, channel.reports_reads) == (False, False)
