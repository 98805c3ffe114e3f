"""``manage.py notify_tracking_status <address>``: what became of the messages to an address.

For support staff at a shell: the recent deliveries to that address, newest first,
each with its timeline (time, event, source, whether it was automated, the reason),
and the pixel loads received but not applied yet: those in the database, and, with
``OPEN_SPOOL_DIR``, those still in this host's spool files (other hosts' files are
on their disks: ``manage.py notify_tracking_spool`` lists them there).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import uuid
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Prefetch, Q, prefetch_related_objects
from django.utils import timezone

from ...activity.filters import FilterError, base_queryset, parse
from ...conf import get_setting
from ...models import Delivery, DeliveryEvent, PendingOpen
from ...tracking import spool

#: What a spool's waiting loads are counted by: the token, and whether of a shared email.
Spooled = Counter[tuple[uuid.UUID, bool]]

MAX_LIMIT = 1000
#: Events printed per delivery; more are summed up in one line.
EVENTS_SHOWN = 50
#: Tokens of shared emails looked up per query (a spool may hold loads of many).
SHARED_TOKENS_PER_QUERY = 500


class Command(BaseCommand):
    help = "Show the recent deliveries to an address, newest first, with their timelines."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("address", help="the recipient's address (email, chat id...)")
        parser.add_argument(
            "--limit", type=int, default=10, help=f"deliveries shown, 1 to {MAX_LIMIT} (default 10)"
        )

    def handle(self, *args: Any, address: str, limit: int, **options: Any) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise CommandError(f"--limit must be from 1 to {MAX_LIMIT}")
        if not address.strip():  # the search would leave it out, and list everyone's
            raise CommandError("address must not be empty")
        try:
            wanted = parse({"recipient": address})
        except FilterError as error:
            raise CommandError(f"address: {error.errors['recipient']}") from None
        deliveries = list(wanted.apply(base_queryset())[:limit])
        if not deliveries:
            self.stdout.write(self._nothing_found(address))
            return
        self.stdout.write(f"Deliveries to {address}, newest first ({len(deliveries)} shown):")
        # Read in the order a load travels backwards: the spool, the waiting rows, then
        # the events. A load that moves on meanwhile is counted twice, never missed.
        spooled, spool_note = spooled_loads()
        waiting = opens_waiting(deliveries, spooled)
        events = Prefetch("events", queryset=DeliveryEvent.objects.order_by("occurred_at", "pk"))
        prefetch_related_objects(deliveries, events)
        for delivery in deliveries:
            self.stdout.write("")
            for line in delivery_lines(delivery, waiting[delivery.pk]):
                self.stdout.write(line)
        if spool_note:
            self.stdout.write("")
            self.stdout.write(spool_note)

    def _nothing_found(self, address: str) -> str:
        days = get_setting("RETENTION_DAYS")
        return (
            f"No delivery to {address} found: the app never accepted a message for this "
            f"address (or it is older than the retention period, {days} days by default)."
        )


def spooled_loads() -> tuple[Spooled, str]:
    """The pixel loads in this host's spool files (``OPEN_SPOOL_DIR``) that are not yet
    in the database, and a note on what was counted (empty without a spool)."""
    directory = get_setting("OPEN_SPOOL_DIR")
    if directory is None:
        return Counter(), ""
    elsewhere = (
        "pixel loads still in the spool files of other web hosts are not counted "
        "(manage.py notify_tracking_spool lists them on each)."
    )
    cannot_read = (
        f"Note: cannot read the spool directory {directory} (run this command as the user "
        f"of the web processes to count the loads in it); {elsewhere}"
    )
    try:
        found = os.stat(directory)
    except FileNotFoundError:
        return Counter(), f"Note: this host has no spool directory {directory}; {elsewhere}"
    except OSError:  # a parent directory this user may not enter
        return Counter(), cannot_read
    if not stat.S_ISDIR(found.st_mode):
        return Counter(), f"Note: the spool's path {directory} is not a directory; {elsewhere}"
    if not os.access(directory, os.R_OK | os.X_OK):
        return Counter(), cannot_read  # else its files would look absent
    try:
        loads = spool.waiting_loads(directory)
    except PermissionError:  # its files are the web processes' own (0600)
        return Counter(), cannot_read
    except Exception as error:
        return Counter(), (
            f"Note: could not read this host's spool ({error}); the loads in it are not "
            f"counted, and {elsewhere}"
        )
    return loads, (
        f"Note: the pixel loads not applied yet include those in this host's spool "
        f"({directory}); {elsewhere}"
    )


def opens_waiting(deliveries: list[Delivery], spooled: Spooled | None = None) -> dict[int, int]:
    """Pixel loads not yet applied (``PendingOpen``, and ``spooled``: those of a
    spool), by delivery pk: one query, and one more per ``SHARED_TOKENS_PER_QUERY``
    tokens of shared emails with a load waiting. Such a load (one email to all
    recipients) carries the token of one of the email's deliveries and is applied to
    each of them (those of its notification and channel): it counts for each."""
    notifications = {delivery.notification_id for delivery in deliveries}
    shared_tokens = Delivery.objects.filter(notification_id__in=notifications).values("token")
    rows = (
        PendingOpen.objects.filter(
            Q(token__in=[delivery.token for delivery in deliveries])
            | Q(group=True, token__in=shared_tokens)
        )
        .values("token", "group")
        .annotate(loads=Count("pk"))
        .values_list("token", "group", "loads")
    )
    own: Counter[uuid.UUID] = Counter()
    shared: Counter[uuid.UUID] = Counter()
    for token, group, loads in rows:
        (shared if group else own)[token] += loads
    for (token, group), loads in (spooled or {}).items():
        (shared if group else own)[token] += loads
    by_email: Counter[tuple[int, str]] = Counter()
    tokens = list(shared)
    for start in range(0, len(tokens), SHARED_TOKENS_PER_QUERY):  # a spool's may be many
        emails = Delivery.objects.filter(
            notification_id__in=notifications,
            token__in=tokens[start : start + SHARED_TOKENS_PER_QUERY],
        ).values_list("token", "notification_id", "channel")
        for token, notification_id, channel in emails:
            by_email[(notification_id, channel)] += shared[token]
    return {
        delivery.pk: own[delivery.token] + by_email[(delivery.notification_id, delivery.channel)]
        for delivery in deliveries
    }


def delivery_lines(delivery: Delivery, opens_waiting: int = 0) -> list[str]:
    """A delivery's summary lines, then one line per event, then the pixel loads that
    wait to be applied."""
    notification = delivery.notification
    content_type = notification.content_type
    sender = notification.sender.get_username() if notification.sender else "-"
    lines = [
        f"#{delivery.pk}  {when(delivery.created_at)}  {delivery.channel}  "
        f"{delivery.status_label} ({delivery.status})",
        f"  to: {delivery.recipient}"
        + (f" ({delivery.recipient_name})" if delivery.recipient_name else ""),
        f"  subject: {notification.subject or '-'}",
        f"  target: {content_type.app_label}.{content_type.model}:{notification.object_id}"
        f"  sender: {sender}",
    ]
    if delivery.error:
        lines.append(f"  error: {delivery.error}")
    lines.append(f"  {when(delivery.created_at)}  queued        accepted by the app")
    events = list(delivery.events.all())
    lines.extend(event_line(event) for event in events[:EVENTS_SHOWN])
    if len(events) > EVENTS_SHOWN:
        lines.append(f"  ... and {len(events) - EVENTS_SHOWN} later events")
    if opens_waiting:
        lines.append(
            f"  + {opens_waiting} pixel loads received, not applied yet (the Celery task "
            "that applies opens has not run them; it classifies them then)"
        )
    return lines


def event_line(event: DeliveryEvent) -> str:
    """``time  kind  via source  [automated]  reason``."""
    parts = [f"  {when(event.occurred_at)}  {event.kind:<12}  via {event.get_source_display()}"]
    if event.is_machine:
        parts.append("[automated]")
    reason = event.details.get("error") if isinstance(event.details, dict) else None
    if reason:
        parts.append(f"reason: {reason}")
    return "  ".join(parts)


def when(moment: dt.datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"
