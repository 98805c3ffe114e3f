"""The custom channel example of docs/channels.md (an SMS gateway), tested for real.

The code between the two marker comments is the one printed in the documentation;
a test checks that the two copies are the same.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from notify_tracking import notify
from notify_tracking.checks import check_settings
from tests.channel_fixtures import (
    _fresh_rate_limits,  # noqa: F401  (autouse fixture)
    channels,
    reasons,
    send,
)

# isort: off
# --- example: docs/channels.md ---
import re

from django.core.exceptions import ValidationError

from notify_tracking.channels.http import HttpChannel, json_request
from notify_tracking.exceptions import ChannelError, RecipientRejected, TransientChannelError


class SmsChannel(HttpChannel):
    """Text messages through an SMS gateway's JSON API."""

    service = "SMS gateway"  # names it in reasons shown to users
    required_options = ("URL", "API_KEY")  # missing: a check error, and `failed`
    url_options = ("URL",)
    option_defaults = {**HttpChannel.option_defaults, "URL": None, "API_KEY": None}

    def secrets(self):
        return [self.options["API_KEY"] or ""]  # replaced by *** in every reason

    def normalize_address(self, address):
        return re.sub(r"[\s().-]", "", address)

    def validate_address(self, address):
        if not re.fullmatch(r"\+[1-9]\d{6,14}", self.normalize_address(address)):
            raise ValidationError("a phone number in international form, like +33612345678")

    def build_message(self, delivery):
        notification = delivery.notification
        text = notification.text
        if notification.subject:
            text = f"{notification.subject}: {text}"
        payload = {"to": self.normalize_address(delivery.recipient), "text": text[:459]}
        headers = {"Authorization": f"Key {self.options['API_KEY']}"}
        return json_request(self.options["URL"], payload, headers)

    def interpret(self, answer, delivery):
        data = answer.json()
        if answer.status == 200 and isinstance(data, dict) and data.get("id"):
            return str(data["id"])  # sent; stored as the delivery's message_id
        reason = f"the SMS gateway answered {answer.describe()}"
        if answer.status == 422:
            raise RecipientRejected(reason)  # rejected
        if answer.status == 429 or answer.status >= 500:
            raise TransientChannelError(reason, retry_after=answer.retry_after())  # deferred
        raise ChannelError(reason)  # failed


# --- end of example ---
# isort: on

BACKEND = "tests.test_channel_custom.SmsChannel"
API_KEY = "sms-key-never-shown"
DOC = Path(__file__).resolve().parent.parent / "docs" / "channels.md"


def sms(url, **options):
    return channels(sms=(BACKEND, {"URL": url, "API_KEY": API_KEY, "TIMEOUT": 2, **options}))


@pytest.fixture
def url(httpserver):
    return httpserver.url_for("/messages")


def test_the_documented_example_is_this_code():
    source = Path(__file__).read_text()
    example = re.search(
        r"# --- example: docs/channels.md ---\n(.*?)# --- end of example ---", source, re.DOTALL
    )[1]
    example = example.rstrip() + "\n"
    assert f"```python\n{example}```" in DOC.read_text()
    assert len(example.splitlines()) < 50


def test_an_sms_is_sent(httpserver, url, task, django_capture_on_commit_callbacks):
    httpserver.expect_request("/messages", method="POST").respond_with_json({"id": "sms-77"})
    with sms(url):
        [delivery] = send(
            django_capture_on_commit_callbacks,
            task,
            ["+33 6 12-34-56-78"],
            channel="sms",
            subject="Task",
            text="Please review.",
        )
    assert (delivery.status, delivery.message_id) == ("sent", "sms-77")
    request, _ = httpserver.log[-1]
    assert request.headers["Authorization"] == f"Key {API_KEY}"
    assert json.loads(request.get_data()) == {"to": "+33612345678", "text": "Task: Please review."}


@pytest.mark.parametrize(
    ("status", "expected"),
    [(422, "rejected"), (400, "failed"), (503, "deferred"), (429, "deferred"), (200, "failed")],
)
def test_answers_become_statuses(
    status, expected, httpserver, url, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/messages", method="POST").respond_with_data("no", status=status)
    with sms(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["+33612345678"], channel="sms")
    assert delivery.status == expected
    assert delivery.error.startswith(f"the SMS gateway answered HTTP {status}: no")


def test_an_invalid_number_is_refused(url, task):
    with sms(url), pytest.raises(ValidationError, match="a phone number in international form"):
        notify(task, ["06 12 34 56 78"], text="x", channel="sms")


def test_the_key_stays_secret(httpserver, url, task, caplog, django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request("/messages", method="POST").respond_with_data(
        f"bad key {API_KEY}", status=401
    )
    with sms(url):
        [delivery] = send(django_capture_on_commit_callbacks, task, ["+33612345678"], channel="sms")
    assert delivery.error == "the SMS gateway answered HTTP 401: bad key ***"
    assert API_KEY not in reasons(delivery)
    assert API_KEY not in "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")


def test_missing_options_fail_the_checks():
    with channels(sms=(BACKEND, {"URL": "https://sms.example.com/messages"})):
        [error] = check_settings()
    assert error.msg.endswith("channel 'sms': OPTIONS['API_KEY'] is required")


def test_secrets_are_taken_out_of_reasons_and_details():
    from notify_tracking.channels.base import Channel
    from notify_tracking.exceptions import ChannelError

    class Leaky(Channel):
        def secrets(self):
            return ["s3cr3t"]

        def build_message(self, delivery):
            return None

        def send_message(self, message, delivery):
            raise ChannelError(
                "refused for key s3cr3t", details={"url": "https://x/s3cr3t", "log": ["s3cr3t"]}
            )

    result = Leaky(name="leaky").send_one(delivery=None)
    assert result.error == "refused for key ***"
    assert result.details == {"url": "https://x/***", "log": ["***"]}
