"""From an anymail ``AnymailTrackingEvent`` to a plain, JSON-ready dict we can queue.

The mapping table says what each anymail event type means for a delivery; the rest
of the module only reads the normalized fields anymail already filled in, and asks
:mod:`.machine` whether an open or click was automated. Nothing here touches the
database: it runs inside the webhook request, once per event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import uuid
from typing import Any, cast

from django.utils import timezone

from .. import status as st
from ..channels.email import METADATA_KEY
from ..conf import get_setting
from ..models import DeliveryEvent
from . import machine

#: anymail event type -> our event kind (see docs/esp-webhooks.md).
KIND_BY_EVENT_TYPE: dict[str, str] = {
    "queued": st.SENT,  # the ESP accepted it: that is what "sent" means for email
    "sent": st.SENT,
    "delivered": st.DELIVERED,
    "deferred": st.DEFERRED,
    "bounced": st.BOUNCED,
    "rejected": st.REJECTED,
    "failed": st.FAILED,
    "opened": st.OPENED,
    "clicked": st.CLICKED,
    "complained": st.COMPLAINED,
    "unsubscribed": st.UNSUBSCRIBED,
    # A bot (vacation reply, ticket system) answered: the message reached the mailbox.
    "autoresponded": st.DELIVERED,
}
#: anymail event types that say nothing about a delivery's fate: ignored (logged at debug).
IGNORED_EVENT_TYPES: frozenset[str] = frozenset(
    {"subscribed", "unknown", "inbound", "inbound_failed"}
)
#: Kinds whose readable reason becomes the delivery's ``error``.
KINDS_WITH_ERROR: frozenset[str] = frozenset({st.DEFERRED, *st.FAILURES})
#: Kinds a reader causes: only these carry a reader's user agent and IP address.
READER_KINDS: frozenset[str] = frozenset({st.OPENED, st.CLICKED})

EVENT_ID_MAX = cast(int, DeliveryEvent._meta.get_field("provider_event_id").max_length)


class MalformedEvent(ValueError):
    """An event we cannot use; it is skipped with a log line, the batch goes on."""


def normalize(event: Any, esp_name: str) -> dict[str, Any] | None:
    """The queued form of one anymail tracking event, or None when it is ignored.

    Raises :class:`MalformedEvent` when a field we rely on has an unusable value.
    """
    event_type = str(getattr(event, "event_type", "") or "")
    kind = KIND_BY_EVENT_TYPE.get(event_type)
    if kind is None:
        if event_type not in IGNORED_EVENT_TYPES:
            raise MalformedEvent(f"unexpected anymail event type {event_type!r}")
        return None
    occurred_at = _timestamp(getattr(event, "timestamp", None))
    is_machine, machine_details = machine.classify(event, esp_name, kind)
    details = {**_details(event, esp_name, event_type, kind), **machine_details}
    return {
        "esp": esp_name,
        "kind": kind,
        "occurred_at": (occurred_at or timezone.now()).isoformat(),
        "provider_event_id": provider_event_id(event, event_type, occurred_at),
        "token": _token(getattr(event, "metadata", None)),
        "message_id": _text(getattr(event, "message_id", None)),
        "recipient": _text(getattr(event, "recipient", None)).lower(),
        "error": readable_error(event, esp_name, event_type) if kind in KINDS_WITH_ERROR else "",
        "user_agent": _text(getattr(event, "user_agent", None)) if kind in READER_KINDS else "",
        "ip_address": _stored_ip(event, esp_name, kind),
        "is_machine": is_machine,
        "details": details,
    }


def provider_event_id(event: Any, event_type: str, occurred_at: dt.datetime | None) -> str:
    """anymail's ``event_id``; without one, a key derived from the type and the time.

    The derived key makes a resent webhook (same event, same time) a duplicate; an
    event with neither id nor time is keyed by a hash of its raw payload.
    """
    event_id = _text(getattr(event, "event_id", None))
    if not event_id:
        if occurred_at is not None:
            event_id = f"derived:{event_type}@{occurred_at.isoformat()}"
        else:
            event_id = "payload:" + _digest(_plain(getattr(event, "esp_event", None)))
    if len(event_id) > EVENT_ID_MAX:
        event_id = "sha256:" + _digest(event_id)
    return event_id


def readable_error(event: Any, esp_name: str, event_type: str) -> str:
    """Why a message failed or was delayed, in the provider's words when it gave any."""
    parts: list[str] = []
    for field in ("description", "mta_response"):
        text = _text(getattr(event, field, None))
        if text and text not in parts:
            parts.append(text)
    if parts:
        return " — ".join(parts)
    reason = _text(getattr(event, "reject_reason", None))
    if reason:
        return f"{esp_name} reported the message {event_type} (reason: {reason})"
    return f"{esp_name} reported the message {event_type}"


def _details(event: Any, esp_name: str, event_type: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"esp": esp_name, "event_type": event_type}
    optional = {
        "reject_reason": _text(getattr(event, "reject_reason", None)),
        "click_url": _text(getattr(event, "click_url", None)),
    }
    if kind not in KINDS_WITH_ERROR:
        # e.g. "250 2.0.0 OK" on delivered: useful, but not an error.
        optional["mta_response"] = _text(getattr(event, "mta_response", None))
    details.update({key: value for key, value in optional.items() if value})
    return details


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise MalformedEvent(f"timestamp {value!r} is not a datetime")
    if timezone.is_naive(value):
        return timezone.make_aware(value, dt.timezone.utc)
    return value


def _token(metadata: Any) -> str | None:
    """Our delivery token from the echoed metadata, if it is there and well-formed."""
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(METADATA_KEY)
    if not value:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _stored_ip(event: Any, esp_name: str, kind: str) -> str | None:
    """The reader's IP address, kept only when ``STORE_IP_ADDRESSES`` is on."""
    if kind not in READER_KINDS or not get_setting("STORE_IP_ADDRESSES"):
        return None
    value = machine.reader_ip(event, esp_name)
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a raw ESP event (dicts, lists, QueryDicts, scalars)."""
    if hasattr(value, "lists"):  # QueryDict: keep every value of every key
        return {key: list(values) for key, values in value.lists()}
    return value


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
