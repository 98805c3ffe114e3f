"""The Slack channel against a local stand-in for chat.postMessage."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.core.exceptions import ValidationError
from werkzeug import Response

from notify_tracking import notify
from notify_tracking.channels.formatting import utf16_length
from notify_tracking.checks import check_settings
from notify_tracking.conf import get_channel
from tests.channel_fixtures import (
    SLACK_TOKEN,
    _fresh_rate_limits,  # noqa: F401  (autouse fixture)
    channels,
    closing_server,
    reasons,
    send,
)
from tests.testapp.models import Task

BACKEND = "notify_tracking.channels.slack.SlackChannel"
PATH = "/chat.postMessage"
CHANNEL = "C0123ABCD"


def slack(api_url, **options):
    defaults = {"BOT_TOKEN": SLACK_TOKEN, "API_URL": api_url, "TIMEOUT": 2}
    return channels(slack=(BACKEND, {**defaults, **options}))


def ok(channel=CHANNEL, ts="1700000000.000100"):
    return {"ok": True, "channel": channel, "ts": ts, "message": {"text": "..."}}


@pytest.fixture
def api(httpserver):
    return httpserver.url_for("").rstrip("/")


def posted(httpserver, index=-1):
    request, _response = httpserver.log[index]
    return request, json.loads(request.get_data())


def test_a_message_is_posted_with_the_bot_token(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert (delivery.status, delivery.message_id) == ("sent", "C0123ABCD:1700000000.000100")
    request, payload = posted(httpserver)
    assert request.headers["Authorization"] == f"Bearer {SLACK_TOKEN}"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert payload == {
        "channel": CHANNEL,
        "text": "*Task*\nPlease review.",
        "unfurl_links": False,
        "unfurl_media": False,
    }


def test_the_provider_id_names_the_conversation_slack_resolved(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok("D0456EFGH", "17.5"))
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["U0456EFGH"], channel="slack")
    assert (delivery.recipient, delivery.message_id) == ("U0456EFGH", "D0456EFGH:17.5")


def test_text_is_escaped_and_the_target_linked(
    httpserver, api, task, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(
        Task, "get_absolute_url", lambda self: f"/t/{self.pk}/?a=1&b=|", raising=False
    )
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with slack(api):
        send(
            django_capture_on_commit_callbacks,
            task,
            ["#ops"],
            channel="slack",
            subject="<!channel> & co",
            text="a < b > c & <@U123>",
        )
    assert posted(httpserver)[1]["text"] == (
        "*&lt;!channel&gt; &amp; co*\n"
        "a &lt; b &gt; c &amp; &lt;@U123&gt;\n"
        f"<http://testserver/t/{task.pk}/?a=1&amp;b=%7C|Open>"
    )


def test_a_1_mb_text_is_cut_below_slacks_limit(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok())
    with slack(api):
        [delivery] = send(
            django_capture_on_commit_callbacks,
            task,
            [CHANNEL],
            channel="slack",
            text="x<y " * 262_144,
        )
    text = posted(httpserver)[1]["text"]
    assert delivery.status == "sent"
    assert 39_000 < utf16_length(text) <= 40_000
    assert text.endswith("…")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            "channel_not_found",
            "Slack: channel_not_found (the conversation does not exist or the bot cannot see it)",
        ),
        (
            "not_in_channel",
            "Slack: not_in_channel (the bot is not a member of the channel: invite it)",
        ),
        ("invalid_auth", "Slack: invalid_auth (the bot token is not valid)"),
        ("some_new_error", "Slack: some_new_error"),
    ],
)
def test_ok_false_fails_with_slacks_error(
    error, reason, httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json({"ok": False, "error": error})
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert (delivery.status, delivery.error) == ("failed", reason)
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("error", ["ratelimited", "internal_error", "service_unavailable"])
def test_transient_slack_errors_defer(
    error, httpserver, api, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json({"ok": False, "error": error})
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert (delivery.status, delivery.error) == ("deferred", f"Slack: {error}")


def test_http_429_is_retried_after_retry_after(
    httpserver, api, task, django_capture_on_commit_callbacks
):
    arrivals = []

    def handler(request):
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return Response("", status=429, headers={"Retry-After": "1"})
        return Response(json.dumps(ok()), content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(handler)
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.0
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    deferred = delivery.events.get(kind="deferred")
    assert deferred.details == {
        "error": "Slack: rate limited (HTTP 429)",
        "attempt": 1,
        "retry_in_seconds": 1.0,
    }


def test_a_server_error_defers(httpserver, api, task, django_capture_on_commit_callbacks):
    httpserver.expect_request(PATH, method="POST").respond_with_data("upstream down", status=503)
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert delivery.status == "deferred"
    assert (
        delivery.error == "Slack gave an answer that is not the Web API's: HTTP 503: upstream down"
    )


def test_malformed_json_fails(httpserver, api, task, django_capture_on_commit_callbacks):
    httpserver.expect_request(PATH, method="POST").respond_with_data('{"ok": tru')
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert delivery.status == "failed"
    assert delivery.error.endswith('HTTP 200: {"ok": tru (the message may have been posted)')


def test_a_10_mb_answer_is_not_read(httpserver, api, task, django_capture_on_commit_callbacks):
    def huge(request):
        return Response((b"x" * 65536 for _ in range(160)), content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(huge)
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert delivery.status == "failed"
    assert "HTTP 200 with an answer larger than 1048576 bytes" in delivery.error


def test_a_slow_answer_times_out(httpserver, api, task, django_capture_on_commit_callbacks):
    def slow(request):
        time.sleep(1.2)
        return Response(json.dumps(ok()), content_type="application/json")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(slow)
    with slack(api, TIMEOUT=0.4):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert (delivery.status, delivery.error) == ("deferred", "Slack did not answer within 0.4 s")


def test_a_server_that_hangs_up_defers(task, django_capture_on_commit_callbacks):
    with closing_server() as url, slack(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert delivery.status == "deferred"
    assert delivery.error == "Slack: the server closed the connection without answering"


def test_the_token_appears_in_no_reason_and_no_log_line(
    httpserver, api, task, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"ok": False, "error": f"invalid_auth for {SLACK_TOKEN}"}
    )
    with slack(api):
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert delivery.error == "Slack: invalid_auth for ***"
    assert SLACK_TOKEN not in reasons(delivery)
    assert SLACK_TOKEN not in "\n".join(r.getMessage() for r in caplog.records)


def test_a_missing_token_is_a_check_error_and_a_clear_failure(
    task, django_capture_on_commit_callbacks
):
    with channels(slack=(BACKEND, {"BOT_TOKEN": ""})):
        [error] = check_settings()
        [delivery] = send(django_capture_on_commit_callbacks, task, [CHANNEL], channel="slack")
    assert error.msg.endswith("channel 'slack': OPTIONS['BOT_TOKEN'] is required")
    assert (delivery.status, delivery.error) == (
        "failed",
        "the Slack channel slack is not configured: OPTIONS['BOT_TOKEN'] is required",
    )


@pytest.mark.parametrize(
    "address", ["C0123ABCD", "G01ABC", "D0456EFGH", "U0456EFGH", "W012AB", "#ops", "#release-2_0"]
)
def test_valid_slack_recipients(address):
    with channels(slack=(BACKEND, {"BOT_TOKEN": SLACK_TOKEN})):
        get_channel("slack").validate_address(address)


@pytest.mark.parametrize("address", ["general", "#General", "c0123abcd", "X0123", "C1", "# ops"])
def test_invalid_slack_recipients_are_refused_by_notify(address, task):
    with (
        channels(slack=(BACKEND, {"BOT_TOKEN": SLACK_TOKEN})),
        pytest.raises(ValidationError, match="a Slack recipient is a conversation or user id"),
    ):
        notify(task, [address], text="x", channel="slack")


def test_a_users_slack_id_comes_from_the_resolver(
    httpserver, api, user, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(ok("D0999", "1.2"))
    with slack(api, RECIPIENT_RESOLVER="tests.test_channel_slack.slack_id_of"):
        [delivery] = send(django_capture_on_commit_callbacks, task, [user], channel="slack")
    assert (delivery.recipient, delivery.status, delivery.user) == ("U0ALICE1", "sent", user)


def slack_id_of(user):
    """A RECIPIENT_RESOLVER given by dotted path."""
    return {"alice": "U0ALICE1"}.get(user.username)
