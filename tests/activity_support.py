"""Data for the activity log, retention and status command tests.

Deliveries are made by notify() and moved by record_event(), as a running system
would; only their creation time is set afterwards (it is ``auto_now_add``), to put
them at a chosen age.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from notify_tracking import Recipient, notify, record_event
from notify_tracking.models import Delivery, Notification


def sent_at_age(notification: Notification, age: dt.timedelta, *, now: dt.datetime | None = None):
    """Make ``notification`` and its deliveries look created ``age`` ago."""
    moment = (now or timezone.now()) - age
    Notification.objects.filter(pk=notification.pk).update(created_at=moment)
    Delivery.objects.filter(notification=notification).update(created_at=moment)
    notification.created_at = moment
    return moment


def make_notification(
    target: Any,
    addresses: list[str],
    *,
    subject: str = "Task updated",
    text: str = "Something changed.",
    html: str | None = None,
    sender: Any = None,
    channel: str = "email",
    age: dt.timedelta | None = None,
    now: dt.datetime | None = None,
    attachments: tuple = (),
) -> Notification:
    """notify() ``addresses`` about ``target``; optionally age the result."""
    notification = notify(
        target,
        [Recipient(address, channel=channel) for address in addresses],
        subject=subject,
        text=text,
        html=html,
        channel=channel,
        sender=sender,
        attachments=attachments,
    )
    if age is not None:
        sent_at_age(notification, age, now=now)
    return notification


def delivery_to(notification: Notification, address: str) -> Delivery:
    return notification.deliveries.get(recipient=address)


def record(delivery: Delivery, *kinds: str, at: dt.datetime | None = None, **options: Any) -> None:
    """record_event() each kind in turn, one second apart from ``at`` (default: now)."""
    start = at or timezone.now()
    source = options.pop("source", "channel")
    for step, kind in enumerate(kinds):
        record_event(
            delivery, kind, occurred_at=start + dt.timedelta(seconds=step), source=source, **options
        )
