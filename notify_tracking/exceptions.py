"""Exceptions a channel raises to say what became of a send.

A channel turns whatever its transport raises into one of these; the send task turns
them into events (``deferred`` and a retry, or ``failed``/``rejected`` with the reason).
The reason is shown to users in the status popup: it must never contain a secret.
"""

from __future__ import annotations


class ChannelError(Exception):
    """A send that will not succeed if tried again: the delivery ends ``failed``."""

    status = "failed"

    def __init__(self, reason: str, *, details: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


class RecipientRejected(ChannelError):
    """The provider refused this recipient before sending: the delivery ends ``rejected``."""

    status = "rejected"


class TransientChannelError(ChannelError):
    """A send that may succeed later (network, provider 5xx, rate limit): retried.

    ``retry_after`` is the delay in seconds the provider asked for, if it did.
    ``attempted`` is False when nothing left for the provider (the channel's own rate
    limiter had no turn for the message yet): such a deferral does not use up one of
    ``MAX_ATTEMPTS``.
    """

    status = "deferred"

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        details: dict | None = None,
        attempted: bool = True,
    ):
        super().__init__(reason, details=details)
        self.retry_after = retry_after
        self.attempted = attempted
