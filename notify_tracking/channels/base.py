"""The channel base class: runs a send and turns its outcome into a :class:`SendResult`.

Modelled on django-anymail's backends: :meth:`Channel.send` is the template method
(``open`` → for each delivery ``build_message`` → ``send_message`` → result → ``close``);
a channel module fills in the small hooks it needs. Hooks signal trouble by raising
the exceptions of :mod:`notify_tracking.exceptions`; anything else a hook raises ends
the delivery ``failed`` with a readable reason, never an exception out of the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from .. import status as st
from ..exceptions import ChannelError, TransientChannelError

if TYPE_CHECKING:
    from ..models import Delivery

logger = logging.getLogger("notify_tracking.channels")


@dataclass
class SendResult:
    """What became of one send: ``sent``, ``deferred``, ``failed`` or ``rejected``."""

    status: str
    message_id: str = ""
    error: str = ""
    retry_after: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: False for a deferral before anything left for the provider (a wait for a turn).
    attempted: bool = True


class Channel:
    """Base class of channels. Subclasses set the class attributes and fill in hooks.

    Options come from ``NOTIFY_TRACKING["CHANNELS"][name]["OPTIONS"]`` as keyword
    arguments; a subclass lists the ones it accepts in ``option_defaults``, and an
    unknown option is a configuration error.
    """

    #: Whether the channel can learn that a message was delivered or read.
    reports_delivery: bool = False
    reports_reads: bool = False
    #: Options this channel accepts, with their defaults.
    option_defaults: dict[str, Any] = {}

    def __init__(self, name: str, **options: Any):
        self.name = name
        unknown = sorted(set(options) - set(self.option_defaults) - {"RECIPIENT_RESOLVER"})
        if unknown:
            raise ImproperlyConfigured(
                f"unknown option(s) {', '.join(unknown)} for {type(self).__name__} "
                f"in NOTIFY_TRACKING['CHANNELS'][{name!r}]['OPTIONS']"
            )
        self.options = {**self.option_defaults, **options}
        resolver = options.get("RECIPIENT_RESOLVER")
        self.resolver = import_string(resolver) if isinstance(resolver, str) else resolver

    # --- recipients -----------------------------------------------------------------

    def normalize_address(self, address: str) -> str:
        """The form of ``address`` under which two recipients count as the same."""
        return address.strip()

    def validate_address(self, address: str) -> None:
        """Raise ``django.core.exceptions.ValidationError`` for an unusable address."""

    def address_for_user(self, user: Any) -> str | None:
        """The address of ``user`` on this channel, from the channel's resolver."""
        if self.resolver is None:
            raise ImproperlyConfigured(
                f"channel {self.name!r} cannot reach a User: set OPTIONS['RECIPIENT_RESOLVER'] "
                "to a callable (user -> address), or pass Recipient(address, channel=...)"
            )
        return self.resolver(user)

    def configuration_problems(self) -> list[str]:
        """What keeps this channel from sending (e.g. a missing token), for system checks.

        Each entry is a short sentence; an empty list means the channel can send.
        """
        return []

    def prepare(self, delivery: Delivery) -> None:
        """Fill in channel-specific fields of a new, unsaved delivery."""

    # --- sending (template method) ----------------------------------------------------

    def send(self, deliveries: Iterable[Delivery]) -> Iterator[tuple[Delivery, SendResult]]:
        """Send each delivery; yield it with its result as soon as it is known.

        ``deliveries`` is consumed lazily, one delivery at a time, so the caller can
        decide at the last moment whether each one may still be sent.
        """
        try:
            self.open()
        except ChannelError as error:
            result = self._result_of(error)
            for delivery in deliveries:
                yield delivery, result
            return
        try:
            yield from self.send_batch(deliveries)
        finally:
            self.close()

    def send_batch(self, deliveries: Iterable[Delivery]) -> Iterator[tuple[Delivery, SendResult]]:
        """Send deliveries over the opened connection, one result per delivery.

        One message per delivery by default; a channel that groups recipients into one
        message overrides this (and still yields one result per delivery).
        """
        for delivery in deliveries:
            yield delivery, self.send_one(delivery)

    def send_one(self, delivery: Delivery) -> SendResult:
        try:
            message = self.build_message(delivery)
            sent = self.send_message(message, delivery)
        except ChannelError as error:
            return self._result_of(error)
        except DatabaseError as error:
            # Building reads the database (attachments...): a dropped connection or a
            # lock timeout is a passing fault of ours, not of the message. Retried.
            reason = _("database error while preparing the message: %(error)s") % {
                "error": type(error).__name__
            }
            return self._result_of(TransientChannelError(reason))
        except Exception as error:
            logger.exception(
                "channel %s: unexpected error sending delivery %s", self.name, delivery.pk
            )
            return SendResult(st.FAILED, error=self.redact(f"{type(error).__name__}: {error}"))
        if isinstance(sent, SendResult):
            return self.redacted(sent)
        return SendResult(st.SENT, message_id=sent or "")

    def _result_of(self, error: ChannelError) -> SendResult:
        return self.redacted(
            SendResult(
                error.status,
                error=error.reason,
                retry_after=getattr(error, "retry_after", None),
                details=error.details,
                attempted=getattr(error, "attempted", True),
            )
        )

    def redacted(self, result: SendResult) -> SendResult:
        """``result`` with every secret taken out of its reason and details."""
        result.error = self.redact(result.error)
        result.details = self._redact_value(result.details)
        return result

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._redact_value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact_value(item) for item in value]
        return value

    # --- hooks ----------------------------------------------------------------------

    def open(self) -> None:
        """Open a connection for a batch of sends (optional)."""

    def close(self) -> None:
        """Close what :meth:`open` opened (optional)."""

    def build_message(self, delivery: Delivery) -> Any:
        """The message to send for ``delivery``, in the transport's own form."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_message()")

    def send_message(self, message: Any, delivery: Delivery) -> str | SendResult | None:
        """Send ``message``; return the provider's message id (or a SendResult).

        Raise :class:`~notify_tracking.exceptions.TransientChannelError` for what a
        retry may fix, :class:`~notify_tracking.exceptions.ChannelError` or
        :class:`~notify_tracking.exceptions.RecipientRejected` for what it will not.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement send_message()")

    def secrets(self) -> list[str]:
        """Values that must never appear in a reason shown to users or logged."""
        return []

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            if secret:
                text = text.replace(secret, "***")
        return text
