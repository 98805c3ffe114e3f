"""An email backend that stores each message in the demo mailbox instead of sending it.

An address in the reserved ``.invalid`` top-level domain (RFC 2606) is refused the
way an SMTP server refuses an unknown mailbox, so the demo can show a failed
delivery and its reason.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from email.utils import parseaddr

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from .models import MailboxMessage

REFUSED_DOMAIN_SUFFIX = ".invalid"


class MailboxBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        stored = 0
        for message in email_messages:
            try:
                refuse_invalid_recipients(message)
                store(message)
            except Exception:
                if not self.fail_silently:
                    raise
            else:
                stored += 1
        return stored


def refuse_invalid_recipients(message: EmailMessage) -> None:
    refused = {
        address: (550, b"5.1.1 no such mailbox (the demo refuses .invalid addresses)")
        for address in message.recipients()
        if domain(address).endswith(REFUSED_DOMAIN_SUFFIX)
    }
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)


def domain(address: str) -> str:
    """The domain of ``address``, also when written ``Name <user@domain>``."""
    return parseaddr(address)[1].rpartition("@")[2].lower()


def store(message: EmailMessage) -> MailboxMessage:
    mime = message.message()  # the message as it would go on the wire
    return MailboxMessage.objects.create(
        message_id=str(mime["Message-ID"] or ""),
        from_email=message.from_email,
        to=", ".join(message.recipients()),
        subject=str(message.subject),
        text=message.body if message.content_subtype == "plain" else "",
        html=html_body(message),
        headers=[[name, str(value)] for name, value in mime.items()],
        # The clock read now, not at import (the seed replays its story in the past).
        sent_at=timezone.now(),
    )


def html_body(message: EmailMessage) -> str:
    if message.content_subtype == "html":
        return message.body
    for content, mimetype in getattr(message, "alternatives", []):
        if mimetype == "text/html":
            return content
    return ""
