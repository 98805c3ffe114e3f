"""Telling senders that a recipient read their notification.

A sender chooses in :class:`~notify_tracking.models.TrackingPreference`:

- ``instant``: one email as soon as a recipient reads, that is the first open or click
  of a delivery made by a person (an automated open never counts, whatever
  ``COUNT_MACHINE_OPENS`` says);
- ``digest``: one email a day at ``DIGEST_TIME`` (in ``settings.TIME_ZONE``) listing
  every read not yet reported; nothing is sent on a day without reads.

Each delivery is reported once: ``Delivery.read_notice_sent_at`` is set by a
conditional UPDATE before the email goes out, so two workers never report the same
read, and cleared again when the email could not be sent, so a retry reports it.
Notices are plain Django emails (``send_mail`` machinery), not notifications: they
are not tracked. See docs/read-notices.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from celery.schedules import crontab
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db.models import OuterRef, QuerySet, Subquery
from django.template.loader import render_to_string
from django.utils import timezone

from . import status as st
from .channels.formatting import url_of
from .conf import get_setting
from .models import Delivery, DeliveryEvent, Notification, ReadNotice, write_db

logger = logging.getLogger(__name__)

#: Event kinds that show a person read the message.
READ_KINDS: tuple[str, ...] = (st.OPENED, st.CLICKED, st.DOWNLOAD)
TEMPLATE_DIR = "notify_tracking/email"
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class DigestIncomplete(Exception):
    """Some digests could not be sent; a retry sends those (and only those)."""


# --- when -------------------------------------------------------------------------


def parse_time_of_day(value: Any) -> dt.time:
    """``"HH:MM"`` (24-hour clock) as a time; ValueError or TypeError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string 'HH:MM', not {type(value).__name__}")
    match = _TIME_OF_DAY.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a time of day 'HH:MM'")
    return dt.time(int(match[1]), int(match[2]))


class LocalCrontab(crontab):
    """A crontab read in ``settings.TIME_ZONE``, whatever the Celery app's time zone."""

    @property
    def tz(self) -> dt.tzinfo:
        return zoneinfo.ZoneInfo(settings.TIME_ZONE or "UTC")


def digest_schedule() -> LocalCrontab:
    """Every day at ``DIGEST_TIME`` in the project's time zone."""
    at = parse_time_of_day(get_setting("DIGEST_TIME"))
    return LocalCrontab(minute=at.minute, hour=at.hour)


# --- instant ----------------------------------------------------------------------


def read_by_a_person(status: str, events: Iterable[DeliveryEvent]) -> bool:
    """Whether a delivery that just changed to ``status`` with these new events was read
    by a person: an engagement status reached by at least one human open, click or
    download (an automated one never tells, whatever ``COUNT_MACHINE_OPENS`` says)."""
    return status in st.ENGAGEMENT and any(
        event.kind in READ_KINDS and not event.is_machine for event in events
    )


def enqueue_instant_notices(delivery_ids: Iterable[int]) -> None:
    """Enqueue an instant notice for each of these deliveries, just read by a person,
    whose sender asks for one and that was not reported yet: one query for them all.

    The recording of events calls it after its commit (``on_commit``), once per batch
    of events, so it never raises: a failure is logged.
    """
    ids = sorted(set(delivery_ids))
    if not ids:
        return
    try:
        wanted = list(
            Delivery.objects.filter(
                pk__in=ids,
                read_notice_sent_at__isnull=True,
                notification__sender__notify_tracking_pref__read_notice=ReadNotice.INSTANT,
            ).values_list("pk", flat=True)
        )
    except Exception:
        logger.exception("notify_tracking: could not look up the read notices of %s", ids)
        return
    for delivery_id in wanted:
        try:
            _enqueue_instant(delivery_id)
        except Exception:
            logger.exception(
                "notify_tracking: could not enqueue the read notice of %s", delivery_id
            )


def _enqueue_instant(delivery_id: int) -> None:
    from .tasks import send_read_notice

    options = {"queue": get_setting("QUEUE")} if get_setting("QUEUE") else {}
    send_read_notice.apply_async(args=[delivery_id], **options)


def send_instant_notice(delivery_id: int) -> bool:
    """Email the sender that this delivery was read, unless that was done already."""
    now = timezone.now()
    if not _claim([delivery_id], now):
        return False
    delivery = (
        Delivery.objects.using(write_db())
        .select_related("notification__sender")
        .get(pk=delivery_id)
    )
    read = _first_reads([delivery_id]).get(delivery_id)
    sender = delivery.notification.sender
    address = _address(sender)
    if read is None or not address:
        logger.info(
            "notify_tracking: no read notice for delivery %s (no read or no address)", delivery_id
        )
        return False
    context = {"sender": sender, "item": _item(delivery, read), **_target(delivery.notification)}
    with _released_on_error([delivery_id], now):
        _send("read_notice", address, context)
    return True


# --- digest -----------------------------------------------------------------------


def send_digests() -> int:
    """Send every ``digest`` sender one email of the reads not yet reported.

    Returns how many emails went out. Raises :class:`DigestIncomplete` after trying
    every sender when some could not be sent (their reads stay unreported).
    """
    pending = _pending_digest_reads()
    sent = failed = 0
    for sender_id, reads in pending.items():
        try:
            sent += _send_digest(sender_id, reads)
        except Exception:
            failed += 1
            logger.exception(
                "notify_tracking: could not send the read digest of user %s", sender_id
            )
    if failed:
        raise DigestIncomplete(f"{failed} read digest(s) could not be sent")
    return sent


def _pending_digest_reads() -> dict[int, dict[int, Read]]:
    """sender id -> {delivery id -> first read}, for reads not yet reported."""
    deliveries = Delivery.objects.filter(
        read_notice_sent_at__isnull=True,
        notification__sender__notify_tracking_pref__read_notice=ReadNotice.DIGEST,
    )
    rows = (
        _with_first_read(deliveries)
        .filter(read_at__isnull=False)
        .values_list("pk", "notification__sender_id", "read_at", "read_kind")
    )
    pending: dict[int, dict[int, Read]] = {}
    for pk, sender_id, read_at, kind in rows:
        pending.setdefault(sender_id, {})[pk] = Read(kind, read_at)
    return pending


def _send_digest(sender_id: int, reads: dict[int, Read]) -> int:
    now = timezone.now()
    claimed = _claim(reads, now)
    if not claimed:
        return 0
    sender = get_user_model().objects.get(pk=sender_id)
    address = _address(sender)
    if not address:
        logger.info("notify_tracking: user %s wants read digests but has no address", sender_id)
        return 0
    groups = _digest_groups(claimed, reads)
    context = {"sender": sender, "groups": groups, "total": len(claimed)}
    with _released_on_error(claimed, now):
        _send("read_digest", address, context)
    return 1


def _digest_groups(delivery_ids: Iterable[int], reads: dict[int, Read]) -> list[dict[str, Any]]:
    """The reads grouped by notification, newest notification first."""
    deliveries = Delivery.objects.filter(pk__in=list(delivery_ids)).select_related("notification")
    by_notification: dict[int, list[Delivery]] = {}
    for delivery in deliveries:
        by_notification.setdefault(delivery.notification_id, []).append(delivery)
    notifications = Notification.objects.filter(pk__in=by_notification).prefetch_related("target")
    groups = []
    for notification in notifications.order_by("-created_at", "-pk"):
        items = [_item(d, reads[d.pk]) for d in by_notification[notification.pk]]
        items.sort(key=lambda item: item["read_at"])
        groups.append({"notification": notification, "items": items, **_target(notification)})
    return groups


# --- shared -----------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """The first read of a delivery by a person."""

    kind: str
    at: dt.datetime


def _with_first_read(deliveries: QuerySet[Delivery]) -> QuerySet[Any]:
    first = DeliveryEvent.objects.filter(
        delivery=OuterRef("pk"), kind__in=READ_KINDS, is_machine=False
    ).order_by("occurred_at", "pk")
    return deliveries.annotate(
        read_at=Subquery(first.values("occurred_at")[:1]),
        read_kind=Subquery(first.values("kind")[:1]),
    )


def _first_reads(delivery_ids: list[int]) -> dict[int, Read]:
    # The read was committed a moment ago: a replica may not show it yet.
    rows = _with_first_read(Delivery.objects.using(write_db()).filter(pk__in=delivery_ids)).filter(
        read_at__isnull=False
    )
    return {pk: Read(kind, at) for pk, at, kind in rows.values_list("pk", "read_at", "read_kind")}


def _claim(delivery_ids: Iterable[int], now: dt.datetime) -> list[int]:
    """Mark these deliveries reported (those not reported yet); return the ones marked."""
    ids = list(delivery_ids)
    Delivery.objects.filter(pk__in=ids, read_notice_sent_at__isnull=True).update(
        read_notice_sent_at=now
    )
    return list(
        Delivery.objects.using(write_db())  # a replica may not show the mark yet
        .filter(pk__in=ids, read_notice_sent_at=now)
        .values_list("pk", flat=True)
    )


class _released_on_error:
    """Unmark the deliveries claimed at ``now`` when the block raises, then re-raise."""

    def __init__(self, delivery_ids: Iterable[int], now: dt.datetime):
        self.delivery_ids, self.now = list(delivery_ids), now

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is not None:
            Delivery.objects.filter(pk__in=self.delivery_ids, read_notice_sent_at=self.now).update(
                read_notice_sent_at=None
            )
        return False


def _item(delivery: Delivery, read: Read) -> dict[str, Any]:
    return {
        "delivery": delivery,
        "recipient": delivery.recipient_name or delivery.recipient,
        "address": delivery.recipient,
        "read_at": read.at,
        "kind": read.kind,
    }


def _target(notification: Notification) -> dict[str, Any]:
    target = notification.target
    return {
        "notification": notification,
        "target": target,
        "target_url": url_of(target) or "",
        "title": notification.subject or (str(target) if target is not None else ""),
    }


def _address(user: Any) -> str:
    if user is None:
        return ""
    return getattr(user, get_user_model().get_email_field_name(), "") or ""


def _send(template: str, address: str, context: dict[str, Any]) -> None:
    subject = render_to_string(f"{TEMPLATE_DIR}/{template}_subject.txt", context)
    text = render_to_string(f"{TEMPLATE_DIR}/{template}.txt", context)
    html = render_to_string(f"{TEMPLATE_DIR}/{template}.html", context)
    message = EmailMultiAlternatives(
        subject=" ".join(subject.split()),
        body=text,
        from_email=get_setting("FROM_EMAIL") or settings.DEFAULT_FROM_EMAIL,
        to=[address],
    )
    message.attach_alternative(html, "text/html")
    message.send()
