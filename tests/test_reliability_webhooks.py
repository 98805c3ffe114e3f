"""ESP webhooks: only the provider may post, and no body makes the site answer 500.

- anymail's basic auth (``ANYMAIL["WEBHOOK_SECRET"]``) guards every tracking webhook:
  a POST without credentials or with wrong ones is refused (400) and records nothing;
- the system check ``notify_tracking.W001`` warns when those webhooks are mounted
  without a secret;
- with ``WebhookGuardMiddleware``, any body (random bytes, text, JSON of any shape,
  fuzzed) and an oversized one answer 200 or 400, never 500.
"""

from __future__ import annotations

import base64
import json

import pytest
from django.conf import settings as django_settings
from django.test import Client, override_settings
from hypothesis import given, settings
from hypothesis import strategies as hs

from notify_tracking.checks import check_webhook_secret
from notify_tracking.models import DeliveryEvent
from tests.esp_payloads import ANYMAIL_WITH_MAILGUN, AUTH, NOW, send, sendgrid_event
from tests.reliability.figures import emit

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

#: Tracking webhooks that need nothing but basic auth (Mailgun also signs: set its key).
ESPS = ["sendgrid", "brevo", "postmark", "mailjet", "sparkpost", "mailtrap", "resend", "mailgun"]
WRONG = "Basic " + base64.b64encode(b"hook:guessed").decode()
GUARD = "notify_tracking.esp.middleware.WebhookGuardMiddleware"
GUARDED = override_settings(
    MIDDLEWARE=[*django_settings.MIDDLEWARE, GUARD], ANYMAIL=ANYMAIL_WITH_MAILGUN
)


def post(client, esp: str, body: bytes | str, **headers) -> int:
    return client.post(
        f"/anymail/{esp}/tracking/", data=body, content_type="application/json", **headers
    ).status_code


@pytest.fixture
def bob(task, django_capture_on_commit_callbacks):
    (delivery,) = send(task, ["bob@example.com"], django_capture_on_commit_callbacks)
    return delivery


@GUARDED
@pytest.mark.parametrize("esp", ESPS)
@pytest.mark.parametrize("credentials", [None, WRONG], ids=["none", "wrong"])
def test_a_post_without_the_secret_is_refused_and_records_nothing(
    bob, client, esp, credentials, django_capture_on_commit_callbacks
):
    body = json.dumps([sendgrid_event(bob, "open", NOW + 1), sendgrid_event(bob, "bounce", NOW)])
    headers = {"HTTP_AUTHORIZATION": credentials} if credentials else {}
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, esp, body, **headers) == 400
    assert not DeliveryEvent.objects.filter(source="esp").exists()


def test_the_same_post_with_the_secret_is_recorded(bob, client, django_capture_on_commit_callbacks):
    body = json.dumps([sendgrid_event(bob, "open", NOW + 1)])
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, "sendgrid", body, HTTP_AUTHORIZATION=AUTH) == 200
    assert DeliveryEvent.objects.filter(source="esp", kind="opened").count() == 1


# --- the system check --------------------------------------------------------------------


def test_no_warning_when_the_secret_is_set():
    assert check_webhook_secret() == []


@pytest.mark.parametrize("anymail", [{}, {"WEBHOOK_SECRET": ""}, {"WEBHOOK_SECRET": None}])
def test_a_warning_when_the_tracking_webhooks_are_mounted_without_a_secret(anymail):
    with override_settings(ANYMAIL=anymail):
        (warning,) = check_webhook_secret()
    assert warning.id == "notify_tracking.W001"
    assert "WEBHOOK_SECRET" in warning.msg
    assert "docs/esp-webhooks.md" in warning.hint


def test_the_secret_may_be_a_top_level_setting_too():
    with override_settings(ANYMAIL={}, ANYMAIL_WEBHOOK_SECRET="hook:secret"):
        assert check_webhook_secret() == []


def test_no_warning_when_anymail_webhooks_are_not_mounted():
    with override_settings(ANYMAIL={}, ROOT_URLCONF="notify_tracking.urls"):
        assert check_webhook_secret() == []


def test_the_warning_is_registered_with_django():
    from django.core import checks

    with override_settings(ANYMAIL={}):
        found = checks.run_checks(tags=[checks.Tags.security])
    assert "notify_tracking.W001" in {message.id for message in found}


# --- whatever the body, never a 500 ------------------------------------------------------

json_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False) | hs.text(max_size=20),
    lambda children: (
        hs.lists(children, max_size=4)
        | hs.dictionaries(
            hs.sampled_from(["event", "email", "timestamp", "RecordType", "type", "msys", "id"])
            | hs.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
bodies = hs.one_of(
    hs.binary(max_size=200),
    hs.text(max_size=200).map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
)


@GUARDED
def test_any_body_is_answered_without_a_500(db, capsys):
    client = Client(raise_request_exception=False)
    seen: list[int] = []

    @settings(max_examples=300, deadline=None)
    @given(esp=hs.sampled_from(ESPS), body=bodies)
    def post_anything(esp, body):
        status = post(client, esp, body, HTTP_AUTHORIZATION=AUTH)
        assert status in (200, 400), (esp, body, status)
        seen.append(status)

    post_anything()
    emit(
        capsys,
        "webhooks",
        "webhook fuzz",
        f"{len(seen)} random bodies posted with the secret to {len(ESPS)} providers' "
        f"tracking webhooks through the guard: {seen.count(200)} answered 200, "
        f"{seen.count(400)} answered 400, none 500",
        bodies=len(seen),
    )


@GUARDED
@pytest.mark.parametrize("body", ["null", "[]", '"text"', "42", '{"signature": null}'])
def test_a_body_mailguns_signature_check_cannot_read_is_a_400(client, body, caplog):
    """Found by the fuzz above: anymail's Mailgun validator raised TypeError, a 500."""
    client = Client(raise_request_exception=False)
    assert post(client, "mailgun", body, HTTP_AUTHORIZATION=AUTH) == 400
    assert "could not read a Mailgun webhook POST" in caplog.text


@GUARDED
@pytest.mark.parametrize("esp", ESPS)
def test_an_oversized_body_is_refused_without_a_500(bob, esp, django_capture_on_commit_callbacks):
    client = Client(raise_request_exception=False)
    events = [sendgrid_event(bob, "open", NOW + n) for n in range(400)]
    body = json.dumps(events)
    assert len(body) > 64 * 1024
    with (
        override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=64 * 1024),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert post(client, esp, body, HTTP_AUTHORIZATION=AUTH) == 400
    assert not DeliveryEvent.objects.filter(source="esp").exists()
