"""Email: one message per recipient, through Django's email backend (anymail in production).

With ``ONE_EMAIL_PER_NOTIFICATION``, one message per notification instead, every
recipient visible. The open pixel, tracked links and download links are added by
:func:`notify_tracking.tracking.rewrite.tracked_content` (docs/tracking.md).

``sent`` means the provider (anymail) or the SMTP server (Django's SMTP backend)
accepted the message; with plain SMTP it says nothing more than that your own
server took it. Delivery and reads come later, from webhooks, reports and the pixel.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
from collections.abc import Iterable, Iterator, Sequence
from email.utils import formataddr, make_msgid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.utils import DNS_NAME
from django.core.validators import validate_email

from .. import status as st
from ..conf import get_setting
from ..exceptions import ChannelError, RecipientRejected, TransientChannelError
from ..tracking.rewrite import tracked_content
from .base import Channel, SendResult

if TYPE_CHECKING:
    from ..models import Delivery

logger = logging.getLogger("notify_tracking.channels")

#: anymail's per-recipient send statuses, and what each means for a delivery.
ANYMAIL_STATUS = {
    "sent": "sent",
    "queued": "sent",
    "scheduled": "sent",
    "unknown": "sent",
    "rejected": "rejected",
    "invalid": "rejected",
    "failed": "failed",
}
#: Why a delivery that asked for a delivery report will not get one.
DSN_NOT_OFFERED = "not requested: the SMTP server does not offer DSN"
#: Metadata key that lets ESP webhooks name the delivery (anymail backends only).
METADATA_KEY = "notify_tracking_delivery"


class EmailChannel(Channel):
    reports_delivery = True
    reports_reads = True
    option_defaults = {
        # Dotted path of a Django email backend; None: settings.EMAIL_BACKEND.
        "EMAIL_BACKEND": None,
    }

    # --- recipients -----------------------------------------------------------------

    def normalize_address(self, address: str) -> str:
        return address.strip().lower()

    def validate_address(self, address: str) -> None:
        validate_email(address)

    def address_for_user(self, user: Any) -> str | None:
        if self.resolver is not None:
            return self.resolver(user)
        return getattr(user, get_user_model().get_email_field_name(), "") or None

    def prepare(self, delivery: Delivery) -> None:
        domain = get_setting("MESSAGE_ID_DOMAIN") or str(DNS_NAME)
        delivery.email_message_id = make_msgid(domain=domain)

    # --- sending --------------------------------------------------------------------

    def open(self) -> None:
        self.connection = get_connection(self.options["EMAIL_BACKEND"], fail_silently=False)

    def close(self) -> None:
        connection = getattr(self, "connection", None)
        self.connection = None  # type: ignore[assignment]  # closed: open() sets a new one
        if connection is not None:
            # Closing a broken connection: nothing is left to save.
            with contextlib.suppress(OSError, smtplib.SMTPException):
                connection.close()

    def build_message(
        self, delivery: Delivery, group: Sequence[Delivery] | None = None
    ) -> EmailMultiAlternatives:
        """The email of ``delivery``; with ``group``, one email to all these deliveries.

        A group's email is tracked only if every email recipient of the notification
        allows it. When ``group`` is only some of them (a retry), the envelope goes to
        the group alone and the ``To`` header still shows everyone; anymail's
        providers cannot send such a header, so through them a retry shows only its
        own recipients.
        """
        notification = delivery.notification
        from_email = get_setting("FROM_EMAIL") or settings.DEFAULT_FROM_EMAIL
        to = [_address(item) for item in (group or [delivery])]
        headers = {"Message-ID": delivery.email_message_id}
        tracked_for = [delivery]
        if group is not None:
            everyone = self._all_recipients(delivery)
            tracked_for += [item for item in everyone if item.pk != delivery.pk]
            subset = {item.pk for item in group} != {item.pk for item in everyone}
            if subset and not _is_anymail(self.connection):
                headers["To"] = ", ".join(_address(item) for item in everyone)
        if notification.request_read_receipt:
            headers["Disposition-Notification-To"] = from_email
        content = tracked_content(
            notification,
            tracked_for,
            group=group is not None,
            skip_urls=_unsubscribe_urls(headers),
        )
        message = EmailMultiAlternatives(
            subject=notification.subject,
            body=content.text,
            from_email=from_email,
            to=to,
            headers=headers,
            connection=self.connection,
        )
        if content.html:
            message.attach_alternative(content.html, "text/html")
        for attachment in content.attachments:
            with attachment.file.open("rb") as file:
                message.attach(attachment.filename, file.read(), attachment.mimetype or None)
        # anymail's extra attribute; other backends ignore it.
        message.metadata = {METADATA_KEY: str(delivery.token)}  # type: ignore[attr-defined]
        if notification.request_delivery_report:  # read by notify_tracking.backends.smtp
            message.dsn_envelope_id = str(delivery.token)  # type: ignore[attr-defined]
        return message

    def send_message(self, message: EmailMultiAlternatives, delivery: Delivery) -> SendResult | str:
        return self._outcome(message, delivery, self._transmit(message))

    def _transmit(self, message: EmailMultiAlternatives) -> int:
        try:
            return self.connection.send_messages([message])
        except Exception as error:
            self._reset_connection_after(error)
            raise _classify(error) from error

    def _outcome(
        self, message: EmailMultiAlternatives, delivery: Delivery, count: int
    ) -> SendResult | str:
        """What the send of ``message`` means for ``delivery`` (one of its recipients)."""
        status = getattr(message, "anymail_status", None)
        if status is not None and status.recipients:
            recipient = _recipient_status(status.recipients, delivery.recipient)
            outcome = ANYMAIL_STATUS.get(recipient.status or "unknown", "sent")
            message_id = "" if recipient.message_id is None else str(recipient.message_id)
            if outcome == "sent":
                return message_id
            reason = f"the email provider answered {recipient.status!r}"
            return SendResult(outcome, message_id=message_id, error=reason)
        if not count:
            raise ChannelError("the email backend reported that it sent nothing")
        if getattr(message, "dsn_requested", None) is False:
            # Set by notify_tracking.backends.smtp when the server does not offer DSN.
            return SendResult(st.SENT, details={"delivery_report": DSN_NOT_OFFERED})
        return ""

    # --- one email per notification (ONE_EMAIL_PER_NOTIFICATION) ----------------------

    def send_batch(self, deliveries: Iterable[Delivery]) -> Iterator[tuple[Delivery, SendResult]]:
        """One email per delivery; with ``ONE_EMAIL_PER_NOTIFICATION``, one per notification.

        Either way, one result per delivery, as the base class promises.
        """
        if not get_setting("ONE_EMAIL_PER_NOTIFICATION"):
            yield from super().send_batch(deliveries)
            return
        groups: dict[int, list[Delivery]] = {}
        for delivery in deliveries:
            groups.setdefault(delivery.notification_id, []).append(delivery)
        for group in groups.values():
            yield from self._send_group(group)

    def _send_group(self, group: list[Delivery]) -> list[tuple[Delivery, SendResult]]:
        try:
            message = self.build_message(group[0], group=group)
            count = self._transmit(message)
        except ChannelError as error:
            return [(delivery, self._result_of(error)) for delivery in group]
        except Exception as error:
            logger.exception(
                "channel %s: unexpected error sending notification %s",
                self.name,
                group[0].notification_id,
            )
            failed = SendResult(st.FAILED, error=self.redact(f"{type(error).__name__}: {error}"))
            return [(delivery, failed) for delivery in group]
        return [(delivery, self._group_result(message, delivery, count)) for delivery in group]

    def _group_result(
        self, message: EmailMultiAlternatives, delivery: Delivery, count: int
    ) -> SendResult:
        try:
            sent = self._outcome(message, delivery, count)
        except ChannelError as error:
            return self._result_of(error)
        if isinstance(sent, SendResult):
            return self.redacted(sent)
        return SendResult(st.SENT, message_id=sent)

    def _all_recipients(self, delivery: Delivery) -> list[Delivery]:
        """Every delivery of ``delivery``'s notification on this channel, in order."""
        from ..models import Delivery

        everyone = list(
            Delivery.objects.filter(
                notification_id=delivery.notification_id, channel=delivery.channel
            ).order_by("pk")
        )
        for item in everyone:
            item.notification = delivery.notification
        return everyone

    def _reset_connection_after(self, error: Exception) -> None:
        if isinstance(error, (OSError, smtplib.SMTPException)):
            self.close()
            self.open()


def _address(delivery: Delivery) -> str:
    return formataddr((delivery.recipient_name, delivery.recipient))


def _is_anymail(connection: Any) -> bool:
    from anymail.backends.base import AnymailBaseBackend

    return isinstance(connection, AnymailBaseBackend)


def _recipient_status(recipients: dict[str, Any], address: str) -> Any:
    """anymail's status of ``address`` (matched without regard to case), else the first."""
    found = recipients.get(address)
    if found is None:
        lowered = {key.lower(): value for key, value in recipients.items()}
        found = lowered.get(address.lower())
    return found if found is not None else next(iter(recipients.values()))


def _unsubscribe_urls(headers: dict[str, str]) -> list[str]:
    """The URLs of a List-Unsubscribe header (RFC 2369): never rewritten for tracking."""
    value = headers.get("List-Unsubscribe", "")
    return re.findall(r"<([^>]+)>", value)


def _classify(error: Exception) -> ChannelError:
    """The channel error that says what a transport exception means for the delivery."""
    try:
        from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused
    except ImportError:  # pragma: no cover - anymail is a dependency
        AnymailAPIError = AnymailError = AnymailRecipientsRefused = ()

    if isinstance(error, AnymailRecipientsRefused):
        return RecipientRejected(_first_line(error) + _provider_message(error))
    if isinstance(error, AnymailAPIError):
        code = error.status_code
        reason = _first_line(error) + _provider_message(error) + (f" (HTTP {code})" if code else "")
        if code is None:
            reason += _cause(error)
        if code is None or code == 429 or code >= 500:
            return TransientChannelError(reason)
        return ChannelError(reason)
    if isinstance(error, AnymailError):
        return ChannelError(_first_line(error))
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()), (550, b""))
        reason = _smtp_reason(code, text)
        if 400 <= code < 500:
            return TransientChannelError(reason)
        return RecipientRejected(reason)
    if isinstance(error, smtplib.SMTPResponseException):
        reason = _smtp_reason(error.smtp_code, error.smtp_error)
        if 400 <= error.smtp_code < 500:
            return TransientChannelError(reason)
        return ChannelError(reason)
    if isinstance(error, (smtplib.SMTPException, OSError)):
        return TransientChannelError(f"could not reach the mail server: {error}")
    return ChannelError(f"{type(error).__name__}: {error}")


def _smtp_reason(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"the mail server answered {code} {text}".strip()


#: Keys under which provider APIs put a human-readable message in an error response.
_MESSAGE_KEYS = ("message", "Message", "error", "detail", "description", "errors")


def _provider_message(error: Exception, limit: int = 300) -> str:
    """The provider's own explanation from its response body, as ": text", or ""."""
    response: Any = getattr(error, "response", None)
    try:
        body = response.json()
    except (AttributeError, ValueError):
        return ""
    if not isinstance(body, dict):
        return ""
    for key in _MESSAGE_KEYS:
        value = body.get(key)
        if isinstance(value, list) and value:
            value = value[0].get("message") if isinstance(value[0], dict) else value[0]
        if isinstance(value, str) and value.strip():
            return ": " + " ".join(value.split())[:limit]
    return ""


def _cause(error: Exception) -> str:
    """Why a request failed before any answer (a timeout, a refused connection), or ""."""
    cause = error.__cause__ or error.__context__
    if cause is None:
        return ""
    text = " ".join(str(cause).split())[:300]
    return f" ({type(cause).__name__}: {text})" if text else f" ({type(cause).__name__})"


def _first_line(error: Exception) -> str:
    text = " ".join(str(arg) for arg in error.args) or type(error).__name__
    return text.splitlines()[0] if text else type(error).__name__
