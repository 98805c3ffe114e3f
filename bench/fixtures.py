"""Data the read-side benchmarks start from: deliveries already sent, comments notified.

Created with ``notify()`` and then moved to their state with bulk UPDATEs: this is the
set-up of a benchmark, not what it measures. The send tasks that ``notify()``
enqueued are dropped from the broker (no worker runs while fixtures are made).
"""

from __future__ import annotations

import datetime as dt
import uuid

from .common import addresses, bench_target, bench_user, email

PER_NOTIFICATION = 10


def drop_queued_tasks() -> None:
    from .celery_app import app

    app.control.purge()


def sent_deliveries(count: int, start: int, *, target=None, sent_ago: float = 3600) -> list:
    """``count`` email deliveries in status ``sent`` (an hour ago), with a provider
    message id; returns them (with ``token`` and ``message_id``)."""
    from django.utils import timezone

    from notify_tracking import notify
    from notify_tracking.models import Delivery

    target = target or bench_target()
    ids = []
    for offset in range(0, count, PER_NOTIFICATION):
        n = start + offset
        notification = notify(
            target, addresses(n, min(PER_NOTIFICATION, count - offset)), **email(n)
        )
        ids.append(notification.pk)
    drop_queued_tasks()
    sent_at = timezone.now() - dt.timedelta(seconds=sent_ago)
    deliveries = list(Delivery.objects.filter(notification_id__in=ids).order_by("pk"))
    for delivery in deliveries:
        delivery.status = "sent"
        delivery.sent_at = sent_at
        delivery.last_event_at = sent_at
        delivery.message_id = uuid.uuid4().hex
        delivery.attempts = 1
    Delivery.objects.bulk_update(
        deliveries, ["status", "sent_at", "last_event_at", "message_id", "attempts"], batch_size=500
    )
    return deliveries


def notified_comments(count: int, recipients: int = 3) -> list:
    """``count`` comments, each notified to ``recipients`` people, in mixed states:
    sent, delivered, read (with a link clicked), and some failed."""
    from django.utils import timezone

    from notify_tracking import notify
    from notify_tracking.models import Delivery, DeliveryEvent

    from .benchapp.models import Comment

    author = bench_user()
    body = (
        "I looked at the failing build again.\n\nThe migration order differs between "
        "SQLite and PostgreSQL; a dependency is missing in 0042.\nI'll open a PR."
    )
    comments = Comment.objects.bulk_create(
        [Comment(author=author, body=f"{body}\n\n#{i}") for i in range(count)]
    )
    for index, comment in enumerate(comments):
        people = [f"watcher{index % 7 + k}@example.com" for k in range(recipients)]
        notify(comment, people, sender=author, **email(index))
    drop_queued_tasks()

    now = timezone.now()
    at = now - dt.timedelta(hours=2)
    deliveries = list(
        Delivery.objects.filter(notification__object_id__in=[str(c.pk) for c in comments])
        .select_related("notification")
        .order_by("pk")
    )
    clicks = []
    for index, delivery in enumerate(deliveries):
        state = ("sent", "delivered", "opened", "clicked", "delivered", "bounced")[index % 6]
        delivery.status = state
        delivery.attempts = 1
        delivery.message_id = uuid.uuid4().hex
        delivery.sent_at = at
        delivery.last_event_at = at + dt.timedelta(minutes=30)
        if state in ("delivered", "opened", "clicked"):
            delivery.delivered_at = at + dt.timedelta(minutes=1)
        if state in ("opened", "clicked"):
            delivery.first_opened_at = delivery.last_opened_at = at + dt.timedelta(minutes=20)
            delivery.open_count = 1
        if state == "clicked":
            delivery.first_clicked_at = at + dt.timedelta(minutes=30)
            delivery.click_count = 1
            clicks.append(
                DeliveryEvent(
                    delivery=delivery,
                    kind="clicked",
                    occurred_at=delivery.first_clicked_at,
                    source="click",
                    user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                    details={"url": f"https://tracker.example.com/tasks/{index}/"},
                )
            )
        if state == "bounced":
            delivery.failed_at = at + dt.timedelta(minutes=2)
            delivery.error = "550 5.1.1 The email account that you tried to reach does not exist."
    Delivery.objects.bulk_update(
        deliveries,
        [
            "status", "attempts", "message_id", "sent_at", "last_event_at", "delivered_at",
            "first_opened_at", "last_opened_at", "open_count", "first_clicked_at",
            "click_count", "failed_at", "error",
        ],
        batch_size=500,
    )  # fmt: skip
    DeliveryEvent.objects.bulk_create(clicks)
    return comments
