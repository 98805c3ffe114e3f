"""Channels: one module per way of reaching a recipient (email, messengers...)."""

from .base import Channel, SendResult

__all__ = ["Channel", "SendResult"]
