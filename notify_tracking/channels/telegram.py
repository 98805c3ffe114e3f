"""Telegram: the Bot API's ``sendMessage`` to a chat id (docs/channels-telegram.md).

``sent`` means Telegram accepted the message into the chat. A bot is never told that
a message was delivered to a device or read, so a Telegram delivery stops at
``sent`` (``reports_delivery`` and ``reports_reads`` are False) and the status popup
says that reads are not reported on this channel.

Messages longer than Telegram's 4096 characters are cut, with an ellipsis and the
link to the target, rather than split: one delivery is one message with one id.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils.translation import gettext as _

from ..exceptions import ChannelError, TransientChannelError
from .formatting import fit, target_url, text_to_send, utf16_length
from .http import Answer, AskedToWait, HttpChannel, HttpRequest, json_request
from .ratelimit import Rate

if TYPE_CHECKING:
    from ..models import Delivery, Notification

#: Telegram's limit on a message's text, in UTF-16 code units.
MAX_LENGTH = 4096
_CHAT_ID = re.compile(r"^-?\d{1,20}$|^@[A-Za-z][A-Za-z0-9_]{4,31}$")
#: Room given to the subject line, in UTF-16 code units once escaped.
SUBJECT_LENGTH = 256
_MARKDOWN_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")


class TelegramChannel(HttpChannel):
    service = "Telegram"
    reports_delivery = False
    reports_reads = False
    required_options = ("BOT_TOKEN",)
    url_options = ("API_URL",)
    option_defaults = {
        **HttpChannel.option_defaults,
        "BOT_TOKEN": None,
        "API_URL": "https://api.telegram.org",
        # "HTML", "MarkdownV2", or None for plain text.
        "PARSE_MODE": "HTML",
        # Telegram's published limits: about 30 messages a second overall, one a
        # second in a chat, 20 a minute in a group or channel.
        "RATE_LIMIT": "30/s",
        "RATE_LIMIT_PER_RECIPIENT": "1/s",
        "RATE_LIMIT_PER_GROUP": "20/m",
    }

    def __init__(self, name: str, **options: Any):
        super().__init__(name, **options)
        mode = self.options["PARSE_MODE"]
        if mode not in FORMATTERS:
            raise ImproperlyConfigured(
                f"{self._option('PARSE_MODE')} must be 'HTML', 'MarkdownV2' or None, not {mode!r}"
            )
        key = "RATE_LIMIT_PER_GROUP"
        self.group_rate = Rate.parse(self.options[key], self._option(key))

    def secrets(self) -> list[str]:
        return [self.options["BOT_TOKEN"] or ""]

    # --- recipients -----------------------------------------------------------------

    def validate_address(self, address: str) -> None:
        if not _CHAT_ID.match(address):
            raise ValidationError(
                _(
                    "a Telegram chat id is a whole number (such as 123456789 or -1001234567890)"
                    " or @channelusername"
                ),
                code="invalid",
            )

    def rate_for(self, recipient: str) -> Rate | None:
        is_group = recipient.startswith(("-", "@"))
        return self.group_rate if is_group else self.recipient_rate

    # --- sending --------------------------------------------------------------------

    def build_message(self, delivery: Delivery) -> HttpRequest:
        mode = self.options["PARSE_MODE"]
        payload = {
            "chat_id": delivery.recipient,
            "text": FORMATTERS[mode](delivery.notification),
            "link_preview_options": {"is_disabled": True},
        }
        if mode:
            payload["parse_mode"] = mode
        url = f"{self.options['API_URL'].rstrip('/')}/bot{self.options['BOT_TOKEN']}/sendMessage"
        return json_request(url, payload)

    def interpret(self, answer: Answer, delivery: Delivery) -> str:
        data = answer.json()
        if not isinstance(data, dict):
            raise _unreadable(answer)
        if data.get("ok") is True:
            message_id = (data.get("result") or {}).get("message_id")
            if message_id is None:
                raise _unreadable(answer)
            return str(message_id)
        raise _error(answer, data)


def _error(answer: Answer, data: dict[str, Any]) -> ChannelError:
    """The ChannelError of a Telegram error answer ({"ok": false, "description": ...})."""
    code = data.get("error_code") or answer.status
    description = str(data.get("description") or answer.describe())
    parameters = data.get("parameters") or {}
    reason = _("Telegram: %(description)s") % {"description": description}
    if code == 429:
        retry_after = parameters.get("retry_after")
        # Flood control may hold the whole bot, not only this chat, and the answer
        # does not say which: every chat pauses (docs/channels-telegram.md).
        return AskedToWait(reason, retry_after=_seconds(retry_after), whole_channel=True)
    if isinstance(code, int) and code >= 500:
        return TransientChannelError(reason)
    details = {"error_code": code}
    if parameters.get("migrate_to_chat_id"):
        details["migrate_to_chat_id"] = parameters["migrate_to_chat_id"]
    return ChannelError(reason, details=details)


def _unreadable(answer: Answer) -> ChannelError:
    reason = _("Telegram gave an answer that is not the Bot API's: %(answer)s") % {
        "answer": answer.describe()
    }
    if answer.status >= 500:
        return TransientChannelError(reason)
    if 200 <= answer.status < 300:
        # Telegram may have sent it: retrying could post it twice.
        reason += " " + _("(the message may have been sent)")
    return ChannelError(reason)


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


# --- text for each parse mode -----------------------------------------------------------


def _compose(notification: Notification, escape, bold, link, separator: str = "\n\n") -> str:
    """Bold subject, body and link, escaped with ``escape``, within MAX_LENGTH."""
    url = target_url(notification)
    subject = fit(notification.subject, SUBJECT_LENGTH, escape)[0] if notification.subject else ""
    head = bold(subject) + separator if subject else ""
    tail = separator + link(url, escape(_("Open"))) if url else ""
    budget = MAX_LENGTH - utf16_length(head) - utf16_length(tail)
    body, _cut = fit(text_to_send(notification), budget, escape)
    return head + body + tail


def _html_text(notification: Notification) -> str:
    return _compose(
        notification,
        escape=lambda text: html.escape(text, quote=False),
        bold=lambda text: f"<b>{text}</b>",
        link=lambda url, label: f'<a href="{html.escape(url, quote=True)}">{label}</a>',
    )


def _markdown_text(notification: Notification) -> str:
    return _compose(
        notification,
        escape=lambda text: _MARKDOWN_SPECIAL.sub(r"\\\1", text),
        bold=lambda text: f"*{text}*",
        link=lambda url, label: "[{}]({})".format(label, re.sub(r"([)\\])", r"\\\1", url)),
    )


def _plain_text(notification: Notification) -> str:
    return _compose(
        notification,
        escape=lambda text: text,
        bold=lambda text: text,
        link=lambda url, label: url,
    )


FORMATTERS = {"HTML": _html_text, "MarkdownV2": _markdown_text, None: _plain_text}
