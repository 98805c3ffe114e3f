"""Slack: ``chat.postMessage`` with a bot token (docs/channels-slack.md).

``sent`` means Slack posted the message in the conversation. Slack does not tell a
bot whether anyone read it, so a Slack delivery stops at ``sent``
(``reports_delivery`` and ``reports_reads`` are False), and the status popup says
that reads are not reported on this channel.

The provider id is ``"<channel id>:<ts>"``: Slack names a message by its
conversation and timestamp.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import ChannelError, TransientChannelError
from .formatting import fit, target_url, text_to_send, utf16_length
from .http import Answer, AskedToWait, HttpChannel, HttpRequest, json_request

if TYPE_CHECKING:
    from ..models import Delivery, Notification

#: Slack cuts a message's text beyond this; we cut first, keeping the link.
MAX_LENGTH = 40_000
SUBJECT_LENGTH = 256
_CONVERSATION = re.compile(r"^[CDGUW][A-Z0-9]{2,}$|^#[a-z0-9][a-z0-9._\-]{0,79}$")
#: Slack errors that a later try may not meet.
TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
#: What the frequent errors mean, for the reason shown to users.
HINTS = {
    "channel_not_found": gettext_lazy("the conversation does not exist or the bot cannot see it"),
    "not_in_channel": gettext_lazy("the bot is not a member of the channel: invite it"),
    "is_archived": gettext_lazy("the channel is archived"),
    "invalid_auth": gettext_lazy("the bot token is not valid"),
    "not_authed": gettext_lazy("no bot token was sent"),
    "token_revoked": gettext_lazy("the bot token was revoked"),
    "account_inactive": gettext_lazy("the bot's account is deactivated"),
    "missing_scope": gettext_lazy("the bot lacks the chat:write scope"),
    "msg_too_long": gettext_lazy("the message is too long"),
}


class SlackChannel(HttpChannel):
    service = "Slack"
    reports_delivery = False
    reports_reads = False
    required_options = ("BOT_TOKEN",)
    url_options = ("API_URL",)
    option_defaults = {
        **HttpChannel.option_defaults,
        "BOT_TOKEN": None,
        "API_URL": "https://slack.com/api",
        # Slack allows about one message a second in a conversation.
        "RATE_LIMIT_PER_RECIPIENT": "1/s",
    }

    def secrets(self) -> list[str]:
        return [self.options["BOT_TOKEN"] or ""]

    def validate_address(self, address: str) -> None:
        if not _CONVERSATION.match(address):
            raise ValidationError(
                _(
                    "a Slack recipient is a conversation or user id (C…, G…, D…, U…, W…)"
                    " or #channel-name"
                ),
                code="invalid",
            )

    def build_message(self, delivery: Delivery) -> HttpRequest:
        payload = {
            "channel": delivery.recipient,
            "text": slack_text(delivery.notification),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        url = self.options["API_URL"].rstrip("/") + "/chat.postMessage"
        return json_request(url, payload, {"Authorization": f"Bearer {self.options['BOT_TOKEN']}"})

    def interpret(self, answer: Answer, delivery: Delivery) -> str:
        if answer.status == 429:
            reason = _("Slack: rate limited (HTTP 429)")
            raise AskedToWait(reason, retry_after=answer.retry_after())
        data = answer.json()
        if not isinstance(data, dict) or "ok" not in data:
            raise _unreadable(answer)
        if data["ok"] is True and data.get("channel") and data.get("ts"):
            return f"{data['channel']}:{data['ts']}"
        raise _error(answer, data)


def _error(answer: Answer, data: dict[str, Any]) -> ChannelError:
    """The ChannelError of ``{"ok": false, "error": "..."}``."""
    code = str(data.get("error") or "unknown_error")
    hint = HINTS.get(code)
    reason = _("Slack: %(error)s") % {"error": code} + (f" ({hint})" if hint else "")
    if code == "ratelimited":
        return AskedToWait(reason, retry_after=answer.retry_after())
    if code in TRANSIENT_ERRORS or answer.status >= 500:
        return TransientChannelError(reason)
    return ChannelError(reason, details={"slack_error": code})


def _unreadable(answer: Answer) -> ChannelError:
    reason = _("Slack gave an answer that is not the Web API's: %(answer)s") % {
        "answer": answer.describe()
    }
    if answer.status >= 500:
        return TransientChannelError(reason)
    if 200 <= answer.status < 300:
        reason += " " + _("(the message may have been posted)")
    return ChannelError(reason)


def escape(text: str) -> str:
    """Slack's escaping of ``&``, ``<`` and ``>`` in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(notification: Notification) -> str:
    """Bold subject, the body and a link to the target, in Slack's mrkdwn."""
    subject = fit(notification.subject, SUBJECT_LENGTH, escape)[0] if notification.subject else ""
    head = (f"*{subject}*" if "*" not in subject else subject) + "\n" if subject else ""
    url = target_url(notification)
    link = escape(url or "").replace("|", "%7C")
    tail = f"\n<{link}|{escape(_('Open'))}>" if url else ""
    budget = MAX_LENGTH - utf16_length(head) - utf16_length(tail)
    body, _cut = fit(text_to_send(notification), budget, escape)
    return head + body + tail
