"""``manage.py notify_tracking_status <address>``: what became of the messages to an address.

For support staff at a shell: the recent deliveries to that address, newest first,
each with its timeline (time, event, source, whether it was automated, the reason).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from ...activity.filters import FilterError, base_queryset, parse
from ...conf import get_setting
from ...models import Delivery, DeliveryEvent, PendingOpen

MAX_LIMIT = 1000
#: Events printed per delivery; more are summed up in one line.
EVENTS_SHOWN = 50


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
        try:
            wanted = parse({"recipient": address})
        except FilterError as error:
            raise CommandError(f"address: {error.errors['recipient']}") from None
        events = Prefetch("events", queryset=DeliveryEvent.objects.order_by("occurred_at", "pk"))
        deliveries = list(wanted.apply(base_queryset()).prefetch_related(events)[:limit])
        if not deliveries:
            self.stdout.write(self._nothing_found(address))
            return
        self.stdout.write(f"Deliveries to {address}, newest first ({len(deliveries)} shown):")
        waiting = opens_waiting(deliveries)
        for delivery in deliveries:
            self.stdout.write("")
            for line in delivery_lines(delivery, waiting[delivery.pk]):
                self.stdout.write(line)

    def _nothing_found(self, address: str) -> str:
        days = get_setting("RETENTION_DAYS")
        return (
            f"No delivery to {address} found: the app never accepted a message for this "
            f"address (or it is older than the retention period, {days} days by default)."
        )


def opens_waiting(deliveries: list[Delivery]) -> dict[int, int]:
    """Pixel loads not yet applied (``PendingOpen``), by delivery pk: one query, two
    when a load of a shared email waits. Such a load (one email to all recipients)
    carries the token of one of the email's deliveries and is applied to each of them
    (those of its notification and channel): it counts for each."""
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
    by_email: Counter[tuple[int, str]] = Counter()
    if shared:
        emails = Delivery.objects.filter(token__in=list(shared)).values_list(
            "token", "notification_id", "channel"
        )
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
