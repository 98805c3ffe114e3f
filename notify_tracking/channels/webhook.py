"""Webhook: POST a signed JSON document to your own endpoint (docs/channels-webhook.md).

The channel posts to the one URL of its ``URL`` option; configure one webhook channel
per receiving system. The recipient is whatever that system uses to name the person
(a user name, an id, a phone number): it is sent in the document, never used as a URL.

Each request is signed: ``X-Notify-Signature: sha256=<hex>`` is the HMAC-SHA256,
keyed with ``SECRET``, of ``"<X-Notify-Timestamp>." + raw body``. A 2xx answer means
``sent`` (the receiver took it); what the receiver does next is not reported.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .. import __version__
from ..exceptions import ChannelError, TransientChannelError
from .formatting import target_url, text_to_send
from .http import Answer, AskedToWait, HttpChannel, HttpRequest, json_request

if TYPE_CHECKING:
    from ..models import Delivery

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Notify-Signature"
TIMESTAMP_HEADER = "X-Notify-Timestamp"
DELIVERY_HEADER = "X-Notify-Delivery"
MAX_RECIPIENT_LENGTH = 320
#: 4xx answers that a later try may not meet.
TRANSIENT_STATUSES = {408, 425, 429}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` + HMAC-SHA256(secret, "<ts>." + body)."""
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class WebhookChannel(HttpChannel):
    service = "Webhook"
    reports_delivery = False
    reports_reads = False
    required_options = ("URL", "SECRET")
    url_options = ("URL",)
    option_defaults = {**HttpChannel.option_defaults, "URL": None, "SECRET": None}

    def secrets(self) -> list[str]:
        return [self.options["SECRET"] or ""]

    def address_for_user(self, user: Any) -> str | None:
        """The resolver's answer, or else the user's user name."""
        if self.resolver is not None:
            return self.resolver(user)
        return user.get_username() or None

    def validate_address(self, address: str) -> None:
        if len(address) > MAX_RECIPIENT_LENGTH or not address.isprintable():
            raise ValidationError(
                _("a webhook recipient is one line of at most %(max)s printable characters")
                % {"max": MAX_RECIPIENT_LENGTH},
                code="invalid",
            )

    def build_message(self, delivery: Delivery) -> HttpRequest:
        headers = {DELIVERY_HEADER: str(delivery.token), "User-Agent": self.user_agent()}
        return json_request(self.options["URL"], self.document(delivery), headers)

    def document(self, delivery: Delivery) -> dict[str, Any]:
        """The JSON document that describes ``delivery`` (schema: docs/channels-webhook.md)."""
        notification = delivery.notification
        content_type = notification.content_type
        return {
            "version": SCHEMA_VERSION,
            "type": "notification",
            "delivery": str(delivery.token),
            "attempt": delivery.attempts,
            "notification": notification.pk,
            "channel": self.name,
            "recipient": delivery.recipient,
            "recipient_name": delivery.recipient_name,
            "subject": notification.subject,
            "text": text_to_send(notification),
            "html": notification.html or None,
            "target": {
                "app_label": content_type.app_label,
                "model": content_type.model,
                "pk": notification.object_id,
                "url": target_url(notification),
            },
            "created_at": notification.created_at.isoformat().replace("+00:00", "Z"),
        }

    @staticmethod
    def user_agent() -> str:
        return f"django-notify-tracking/{__version__}"

    def stamp(self, request: HttpRequest) -> HttpRequest:
        timestamp = str(int(time.time()))
        signature = sign(self.options["SECRET"], timestamp, request.body)
        headers = {**request.headers, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature}
        return HttpRequest(request.url, request.body, headers)

    def interpret(self, answer: Answer, delivery: Delivery) -> str:
        if 200 <= answer.status < 300:
            return _receiver_id(answer) or str(delivery.token)
        reason = _("the receiver answered %(answer)s") % {"answer": answer.describe()}
        if answer.status >= 500 or answer.status in TRANSIENT_STATUSES:
            retry_after = answer.retry_after()
            if retry_after is not None:
                raise AskedToWait(reason, retry_after=retry_after, whole_channel=True)
            raise TransientChannelError(reason)
        if 300 <= answer.status < 400:
            reason += " " + _("(redirects are not followed: configure the final URL)")
        raise ChannelError(reason, details={"http_status": answer.status})


def _receiver_id(answer: Answer) -> str:
    """The ``id`` of a JSON object answer, if it has a usable one."""
    data = answer.json()
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    return str(value)[:255]
