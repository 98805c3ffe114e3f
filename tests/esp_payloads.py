"""Real ESP webhook payloads for the ESP tests, posted through anymail's own views.

Deliveries are sent for real through anymail's test backend, so they carry the
provider message id and the metadata token exactly as a real anymail backend leaves
them; the payloads below are shaped like each ESP's documented webhook bodies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid
from typing import Any

from anymail.backends.test import EmailBackend as AnymailTestBackend
from django.test import override_settings

from notify_tracking import notify
from notify_tracking.models import Delivery

ANYMAIL_TEST_BACKEND = "tests.esp_payloads.ProviderLikeBackend"
AUTH = "Basic " + base64.b64encode(b"hook:secret").decode()
MAILGUN_KEY = "mailgun-signing-key"
ANYMAIL_WITH_MAILGUN = {"WEBHOOK_SECRET": "hook:secret", "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
# Event times: a day after the run starts, so that every story told by a test comes
# after the real send of its delivery, however long the run.
NOW = int(time.time()) + 86_400
_ids = itertools.count(1)


class ProviderLikeBackend(AnymailTestBackend):
    """anymail's test backend, with message ids shaped like a real ESP's.

    (The stock one numbers messages from 0, and 0 is no id at all.)
    """

    def get_esp_message_id(self, message: Any) -> str:
        return str(uuid.uuid4())


def send(target: Any, recipients: list, capture: Any, **kwargs: Any) -> list[Delivery]:
    """notify() and send through anymail's test backend; the deliveries, in order."""
    with override_settings(EMAIL_BACKEND=ANYMAIL_TEST_BACKEND), capture(execute=True):
        notification = notify(target, recipients, subject="Build failed", text="Hi", **kwargs)
    return list(notification.deliveries.order_by("pk"))


def unique_id(prefix: str = "evt") -> str:
    return f"{prefix}-{next(_ids)}"


# --- SendGrid: a JSON list of events; custom args (our metadata) merged into each --------


def sendgrid_event(delivery: Delivery, event: str, at: int, **fields: Any) -> dict[str, Any]:
    return {
        "email": delivery.recipient,
        "timestamp": at,
        "event": event,
        "sg_event_id": unique_id("sg"),
        "sg_message_id": f"sgmsg.{delivery.message_id}",
        "anymail_id": delivery.message_id,
        "notify_tracking_delivery": str(delivery.token),
        **fields,
    }


def post_sendgrid(client: Any, events: list[dict[str, Any]]) -> Any:
    return client.post(
        "/anymail/sendgrid/tracking/",
        data=json.dumps(events),
        content_type="application/json",
        HTTP_AUTHORIZATION=AUTH,
    )


# --- Mailgun: one signed JSON event per POST; metadata in user-variables ----------------


def mailgun_event(delivery: Delivery, event: str, at: float, **data: Any) -> dict[str, Any]:
    token = unique_id("mgtoken")
    timestamp = str(int(at))
    signature = hmac.new(
        MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    return {
        "signature": {"token": token, "timestamp": timestamp, "signature": signature},
        "event-data": {
            "event": event,
            "timestamp": at,
            "id": unique_id("mgid"),
            "recipient": delivery.recipient,
            "message": {"headers": {"message-id": f"{delivery.message_id}@mg.example.com"}},
            "user-variables": {"notify_tracking_delivery": str(delivery.token)},
            **data,
        },
    }


def post_mailgun(client: Any, payload: dict[str, Any]) -> Any:
    with override_settings(ANYMAIL=ANYMAIL_WITH_MAILGUN):
        return client.post(
            "/anymail/mailgun/tracking/",
            data=json.dumps(payload),
            content_type="application/json",
            HTTP_AUTHORIZATION=AUTH,
        )


# --- Brevo: one JSON event per POST, no event id; metadata in X-Mailin-custom -----------


def brevo_event(delivery: Delivery, event: str, at_ms: int, **fields: Any) -> dict[str, Any]:
    return {
        "event": event,
        "email": delivery.recipient,
        "id": 123456,
        "date": "2024-06-01 10:00:00",
        "ts": at_ms // 1000,
        "ts_event": at_ms // 1000,
        "ts_epoch": at_ms,
        "message-id": f"<{delivery.message_id}@smtp-relay.mailin.fr>",
        "subject": "Build failed",
        "X-Mailin-custom": json.dumps({"notify_tracking_delivery": str(delivery.token)}),
        **fields,
    }


def post_brevo(client: Any, payload: dict[str, Any]) -> Any:
    return client.post(
        "/anymail/brevo/tracking/",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=AUTH,
    )
