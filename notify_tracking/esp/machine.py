"""Was an open or click reported by an ESP made by a machine rather than a reader?

Some providers say so in their raw event (anymail keeps it in ``esp_event``):

- SendGrid: ``sg_machine_open: true`` on ``open`` events (Apple Mail Privacy Protection);
- Mailgun: ``event-data["client-info"]["bot"]`` (``apple``, ``gmail``, ``generic``; empty
  when no bot was seen), and ``client-type: robot``;
- Brevo: the event names ``proxy_open`` and ``unique_proxy_open``.

Such an event gets ``details = {"machine_reason": "esp_flag", "esp_flag": "<field>=<value>"}``.
When the provider says nothing but reports the reader's user agent, the app's own
rules (:mod:`notify_tracking.tracking.classify`) decide, as for the pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from .. import status as st
from ..tracking import classify as rules

MACHINE_KINDS = (st.OPENED, st.CLICKED)
BREVO_PROXY_EVENTS = frozenset({"proxy_open", "unique_proxy_open"})


def _get(mapping: Any, *path: str) -> Any:
    """``mapping[path[0]][path[1]]...``, or None when any step is missing."""
    for key in path:
        if not isinstance(mapping, dict) and not hasattr(mapping, "get"):
            return None
        mapping = mapping.get(key)
        if mapping is None:
            return None
    return mapping


def _sendgrid(esp_event: Any) -> str:
    flag = _get(esp_event, "sg_machine_open")
    return "sg_machine_open=true" if flag is True or str(flag).lower() == "true" else ""


def _mailgun(esp_event: Any) -> str:
    bot = _get(esp_event, "event-data", "client-info", "bot")
    if bot:
        return f"client-info.bot={bot}"
    if _get(esp_event, "event-data", "client-info", "client-type") == "robot":
        return "client-info.client-type=robot"
    return ""


def _brevo(esp_event: Any) -> str:
    name = _get(esp_event, "event")
    return f"event={name}" if name in BREVO_PROXY_EVENTS else ""


#: anymail esp_name -> reads the provider's own machine flag from the raw event.
PROVIDER_FLAGS: dict[str, Callable[[Any], str]] = {
    "SendGrid": _sendgrid,
    "Mailgun": _mailgun,
    "Brevo": _brevo,
    "SendinBlue": _brevo,  # anymail's deprecated name for Brevo's webhook
}


def _reader_ip_sendgrid(esp_event: Any) -> Any:
    return _get(esp_event, "ip")


def _reader_ip_mailgun(esp_event: Any) -> Any:
    return _get(esp_event, "event-data", "ip")


#: anymail esp_name -> the reader's IP address in an open or click event.
READER_IP: dict[str, Callable[[Any], Any]] = {
    "SendGrid": _reader_ip_sendgrid,
    "Mailgun": _reader_ip_mailgun,
}


def classify(event: Any, esp_name: str, kind: str) -> tuple[bool, dict[str, Any]]:
    """``(is_machine, details)`` of an event of ``kind``; details say why (may be empty)."""
    if kind not in MACHINE_KINDS:
        return False, {}
    flag = PROVIDER_FLAGS.get(esp_name)
    found = flag(getattr(event, "esp_event", None)) if flag else ""
    if found:
        return True, {"machine_reason": "esp_flag", "esp_flag": found}
    user_agent = str(getattr(event, "user_agent", None) or "").strip()
    if not user_agent:  # many providers never report one: no evidence either way
        return False, {}
    return _app_rules(event, user_agent, reader_ip(event, esp_name), kind)


def reader_ip(event: Any, esp_name: str) -> str | None:
    """The reader's IP address as the provider reported it, unchecked."""
    extract = READER_IP.get(esp_name)
    value = extract(getattr(event, "esp_event", None)) if extract else None
    return str(value) if value else None


def _app_rules(
    event: Any, user_agent: str, ip_address: str | None, kind: str
) -> tuple[bool, dict[str, Any]]:
    hit = rules.Hit(
        action=rules.OPEN if kind == st.OPENED else rules.CLICK,
        method="GET",
        user_agent=user_agent,
        ip_address=ip_address,
        occurred_at=getattr(event, "timestamp", None) or timezone.now(),
        sent_at=None,  # unknown in the request; the scanner window needs the delivery
    )
    verdict = rules.classify(hit)
    return verdict.is_machine, dict(verdict.details)
