"""Django's SMTP backend, plus RFC 3461 delivery status notification (DSN) requests.

A message that carries a ``dsn_envelope_id`` attribute (the email channel sets it to
the delivery's token when the notification asks for a delivery report) is sent with
``RET=HDRS ENVID=<id>`` on ``MAIL FROM`` and ``NOTIFY=SUCCESS,FAILURE,DELAY`` on each
``RCPT TO``, provided the server advertises ``DSN`` in its EHLO answer. When it does
not, the message goes out as usual, the backend logs it, and sets
``message.dsn_requested = False`` so the caller can record that no report will come.

Everything else is Django's backend unchanged: the DSN parameters ride on smtplib's
own ``mail_options``/``rcpt_options`` through a connection class that adds them.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.mail.backends import smtp

logger = logging.getLogger(__name__)

#: The message attribute that asks for a DSN; its value is the envelope id (ENVID).
ENVELOPE_ID_ATTRIBUTE = "dsn_envelope_id"
#: The message attribute this backend sets: whether the DSN parameters were sent.
REQUESTED_ATTRIBUTE = "dsn_requested"


@dataclass(frozen=True)
class DsnRequest:
    """What to ask of the server for one message (RFC 3461)."""

    envelope_id: str
    notify: tuple[str, ...] = ("SUCCESS", "FAILURE", "DELAY")
    ret: str = "HDRS"

    def mail_options(self) -> list[str]:
        """The ``MAIL FROM`` parameters."""
        return [f"RET={self.ret}", f"ENVID={xtext(self.envelope_id)}"]

    def rcpt_options(self) -> list[str]:
        """The ``RCPT TO`` parameters (the same for every recipient)."""
        return [f"NOTIFY={','.join(self.notify)}"]


def xtext(value: str) -> str:
    """``value`` encoded as RFC 3461 xtext: ``+XX`` for ``+``, ``=`` and non-printables."""
    return "".join(
        char if 33 <= ord(char) <= 126 and char not in "+=" else f"+{ord(char):02X}"
        for char in value
    )


if TYPE_CHECKING:
    _SMTP = smtplib.SMTP
else:
    _SMTP = object


class DsnConnectionMixin(_SMTP):
    """An smtplib connection that adds the DSN parameters of :attr:`dsn_request`."""

    dsn_request: DsnRequest | None = None
    #: After a send with a request: whether the server took the DSN parameters.
    dsn_requested: bool | None = None

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        request, self.dsn_requested = self.dsn_request, None
        if request is not None:
            self.ehlo_or_helo_if_needed()
            self.dsn_requested = self.has_extn("dsn")
            if self.dsn_requested:
                mail_options = [*mail_options, *request.mail_options()]
                rcpt_options = [*rcpt_options, *request.rcpt_options()]
        return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)


class DsnSMTP(DsnConnectionMixin, smtplib.SMTP):
    """``smtplib.SMTP`` that can ask for delivery status notifications."""


class DsnSMTP_SSL(DsnConnectionMixin, smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` that can ask for delivery status notifications."""


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP email backend that asks for a DSN when a message carries an ENVID.

    Use it as ``EMAIL_BACKEND`` (or as the email channel's ``EMAIL_BACKEND`` option)
    when notifications go through your own SMTP server. Messages without a
    ``dsn_envelope_id`` attribute are sent exactly as Django's backend sends them.
    """

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return DsnSMTP_SSL if self.use_ssl else DsnSMTP

    def _send(self, email_message: Any) -> bool:
        request = dsn_request_of(email_message)
        if request is None or not isinstance(self.connection, DsnConnectionMixin):
            return super()._send(email_message)  # type: ignore[misc]  # not in django-stubs
        self.connection.dsn_request = request
        try:
            sent = super()._send(email_message)  # type: ignore[misc]
        finally:
            self.connection.dsn_request = None
        requested = self.connection.dsn_requested
        setattr(email_message, REQUESTED_ATTRIBUTE, requested)
        if sent and requested is False:
            logger.warning(
                "notify_tracking: %s:%s does not advertise DSN; message %s was sent "
                "without a delivery report request",
                self.host,
                self.port,
                email_message.extra_headers.get("Message-ID", "(no Message-ID)"),
            )
        return sent


def dsn_request_of(email_message: Any) -> DsnRequest | None:
    """The DSN request a message carries, or None when it asks for none."""
    envelope_id = getattr(email_message, ENVELOPE_ID_ATTRIBUTE, None)
    if not envelope_id:
        return None
    return DsnRequest(envelope_id=str(envelope_id))
