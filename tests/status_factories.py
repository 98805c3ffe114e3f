"""Realistic delivery data for the status tests: made with notify() and record_event().

Nothing here writes a status directly: each helper goes through the app's own
service functions, so the data is what a running system would hold.
"""

from __future__ import annotations

from typing import Any

from notify_tracking import Recipient, notify, record_event
from notify_tracking import status as st
from notify_tracking.channels.base import Channel

#: The NOTIFY_TRACKING setting of tests that need a messenger next to email.
CHAT_CHANNELS = {
    "email": {"BACKEND": "notify_tracking.channels.email.EmailChannel", "OPTIONS": {}},
    "chat": {"BACKEND": "tests.status_factories.ChatChannel", "OPTIONS": {}},
}

#: The events that bring a queued delivery to each status.
PATHS: dict[str, tuple[str, ...]] = {
    st.QUEUED: (),
    st.SENT: (st.SENT,),
    st.DELIVERED: (st.SENT, st.DELIVERED),
    st.OPENED: (st.SENT, st.DELIVERED, st.OPENED),
    st.CLICKED: (st.SENT, st.DELIVERED, st.CLICKED),
    st.DEFERRED: (st.DEFERRED,),
    st.FAILED: (st.FAILED,),
    st.REJECTED: (st.REJECTED,),
    st.BOUNCED: (st.SENT, st.BOUNCED),
    st.COMPLAINED: (st.SENT, st.DELIVERED, st.COMPLAINED),
}
SOURCES = {st.OPENED: "pixel", st.CLICKED: "click", st.DOWNLOAD: "download"}


class ChatChannel(Channel):
    """A messenger: it knows a message was sent, and nothing after that."""

    reports_delivery = False
    reports_reads = False

    def build_message(self, delivery):
        return delivery.notification.text

    def send_message(self, message, delivery):
        return f"chat-{delivery.pk}"


def notify_with_statuses(
    target: Any,
    statuses: list[str],
    *,
    channel: str = "email",
    sender: Any = None,
    subject: str = "Task updated",
):
    """Notify ``target`` to one recipient per status, then move each delivery there."""
    recipients = [
        Recipient(
            f"user{index}@example.com" if channel == "email" else f"chat-{index}",
            channel=channel,
            name=f"User {index}",
        )
        for index in range(len(statuses))
    ]
    notification = notify(
        target,
        recipients,
        subject=subject,
        text="Something changed.",
        channel=channel,
        sender=sender,
    )
    deliveries = list(notification.deliveries.order_by("id"))
    for delivery, status in zip(deliveries, statuses, strict=True):
        move_to(delivery, status)
    return notification


def move_to(delivery, status: str) -> None:
    """Record the events that bring ``delivery`` from queued to ``status``."""
    for kind in PATHS[status]:
        error = "550 mailbox unavailable" if kind in st.FAILURES else ""
        if kind == st.DEFERRED:
            error = "421 try again later"
        details = {"url": "https://example.com/tasks/1"} if kind == st.CLICKED else None
        record_event(
            delivery, kind, source=SOURCES.get(kind, "channel"), error=error, details=details
        )
