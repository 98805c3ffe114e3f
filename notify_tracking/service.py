"""``notify()`` creates deliveries; ``record_event()`` is the only code that changes one.

Every source of news about a delivery (the send result, the pixel, a click, an ESP
webhook, a DSN, an MDN) ends in :func:`record_event`, which stores the event and
applies the rule of :mod:`notify_tracking.status` to the delivery's summary fields.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.db import models, transaction
from django.utils import timezone

from . import copy_insert, read_notices, summary_writes
from . import status as st
from .conf import channel_names, get_channel, get_setting
from .models import (
    ANONYMISED_PREFIX,
    Attachment,
    Delivery,
    DeliveryEvent,
    EventSource,
    Notification,
    TrackingPreference,
    on_commit,
    write_db,
)
from .signals import delivery_status_changed

logger = logging.getLogger(__name__)

USER_AGENT_MAX = DeliveryEvent._meta.get_field("user_agent").max_length


@dataclass(frozen=True)
class Recipient:
    """One recipient: an address on a channel (an email address, a chat id...).

    ``channel`` None means every channel the notification is sent over; ``user``
    links the delivery to an account (for preferences and permissions).
    """

    address: str
    channel: str | None = None
    user: Any = None
    name: str = ""


# --- notify() ------------------------------------------------------------------------


def notify(
    target: models.Model,
    recipients: Iterable[Any],
    *,
    subject: str = "",
    text: str,
    html: str | None = None,
    channel: str | Sequence[str] | None = None,
    sender: Any = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
    request_delivery_report: bool | None = None,
    request_read_receipt: bool | None = None,
    attachments: Iterable[Any] = (),
) -> Notification:
    """Send a notification about ``target`` to each recipient; return the Notification.

    Validates everything first (a ``ValueError``, ``TypeError`` or ``ValidationError``
    naming the bad value, and nothing written), then creates one Delivery per
    distinct recipient and channel in status ``queued``, and enqueues the Celery send
    when the current transaction commits. It never sends inside the caller's request.
    """
    _check_target(target)
    channels = _check_channels(channel)
    _check_text(subject=subject, text=text, html=html)
    files = [_check_attachment(item) for item in attachments]
    planned = _plan_deliveries(recipients, channels)

    sender_pref = _preference(sender)
    if request_delivery_report is None:
        request_delivery_report = _default("REQUEST_DELIVERY_REPORT", sender_pref)
    if request_read_receipt is None:
        request_read_receipt = _default("REQUEST_READ_RECEIPT", sender_pref)
    track_opens = get_setting("TRACK_OPENS") if track_opens is None else track_opens
    track_clicks = get_setting("TRACK_CLICKS") if track_clicks is None else track_clicks
    consenting = _users_allowing_tracking([r.user for _, r in planned])

    alias = write_db()
    with transaction.atomic(using=alias):
        notification = Notification.objects.create(
            content_type=ContentType.objects.get_for_model(target),
            object_id=str(target.pk),
            channel=channels[0],
            subject=subject,
            text=text,
            html=html or "",
            sender=sender if _is_user(sender) else None,
            track_opens=bool(track_opens),
            track_clicks=bool(track_clicks),
            request_delivery_report=bool(request_delivery_report),
            request_read_receipt=bool(request_read_receipt),
        )
        for filename, content, mimetype in files:
            attachment = Attachment(notification=notification, filename=filename, mimetype=mimetype)
            attachment.file.save(filename, content, save=False)
            attachment.save()
        now = timezone.now()
        deliveries = []
        for channel_name, recipient in planned:
            allowed = recipient.user is None or recipient.user.pk in consenting
            delivery = Delivery(
                notification=notification,
                recipient=recipient.address,
                recipient_name=recipient.name,
                user=recipient.user,
                channel=channel_name,
                track_opens=notification.track_opens and allowed,
                track_clicks=notification.track_clicks and allowed,
                next_attempt_at=now,
            )
            get_channel(channel_name).prepare(delivery)
            deliveries.append(delivery)
        Delivery.objects.bulk_create(deliveries)
        ids_by_channel: dict[str, list[int]] = {}
        for delivery in deliveries:
            ids_by_channel.setdefault(delivery.channel, []).append(delivery.pk)
        on_commit(lambda: _enqueue(ids_by_channel))
    return notification


def _enqueue(ids_by_channel: dict[str, list[int]]) -> None:
    from .tasks import enqueue_send

    for ids in ids_by_channel.values():
        enqueue_send(ids)


def _check_target(target: Any) -> None:
    if not isinstance(target, models.Model):
        raise TypeError(f"target must be a saved model instance, not {type(target).__name__}")
    if target.pk is None or target._state.adding:
        raise ValueError(f"target {target!r} is not saved: save it before notify()")
    longest = Notification._meta.get_field("object_id").max_length
    if longest is not None and len(str(target.pk)) > longest:
        # Refused here on every database: PostgreSQL would fail the INSERT, SQLite keep it.
        raise ValueError(
            f"target {type(target).__name__} {target.pk!r}: its key is longer than the"
            f" {longest} characters a notification can hold"
        )


def _check_channels(channel: str | Sequence[str] | None) -> list[str]:
    if channel is None:
        channel = get_setting("DEFAULT_CHANNEL")
    names = [channel] if isinstance(channel, str) else list(channel)
    if not names:
        raise ValueError("channel: name at least one channel")
    configured = channel_names()
    for name in names:
        if name not in configured:
            raise ValueError(
                f"unknown channel {name!r}; configured channels: {', '.join(configured)}"
            )
    return list(dict.fromkeys(names))


def _check_text(*, subject: Any, text: Any, html: Any) -> None:
    if not isinstance(subject, str):
        raise TypeError(f"subject must be a str, not {type(subject).__name__}")
    if "\n" in subject or "\r" in subject:
        raise ValueError("subject must be one line: it contains a line break")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: a notification needs a plain-text body")
    if html is not None and not isinstance(html, str):
        raise TypeError(f"html must be a str or None, not {type(html).__name__}")


def _check_attachment(item: Any) -> tuple[str, File, str]:
    if isinstance(item, File):
        name = (item.name or "").rsplit("/", 1)[-1]
        if not name:
            raise ValueError("attachment: a File needs a name")
        return name, item, getattr(item, "content_type", "") or ""
    if isinstance(item, tuple) and len(item) in (2, 3):
        name, content = item[0], item[1]
        mimetype = item[2] if len(item) == 3 else ""
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"attachment: invalid file name {name!r}")
        if isinstance(content, str):
            content = content.encode()
        if not isinstance(content, bytes):
            raise TypeError(
                f"attachment {name!r}: content must be bytes or str, not {type(content).__name__}"
            )
        return name, ContentFile(content, name=name), mimetype or ""
    raise TypeError(
        "attachments: each must be a django File or a (filename, content[, mimetype]) tuple,"
        f" not {type(item).__name__}"
    )


def _plan_deliveries(recipients: Iterable[Any], channels: list[str]) -> list[tuple[str, Recipient]]:
    """(channel, recipient) pairs, validated, each distinct pair once, in the given order."""
    if isinstance(recipients, (str, bytes)) or _is_user(recipients):
        raise TypeError("recipients must be an iterable of recipients: wrap a single one in a list")
    if isinstance(recipients, Recipient):
        raise TypeError("recipients must be an iterable of recipients: wrap a single one in a list")
    planned: dict[tuple[str, str], Recipient] = {}
    for item in recipients:
        for channel_name, recipient in _expand(item, channels):
            key = (channel_name, get_channel(channel_name).normalize_address(recipient.address))
            planned.setdefault(key, recipient)
    if not planned:
        raise ValueError("no recipients: notify() needs at least one")
    return [(channel_name, recipient) for (channel_name, _), recipient in planned.items()]


def _expand(item: Any, channels: list[str]) -> list[tuple[str, Recipient]]:
    if isinstance(item, Recipient):
        targets = channels if item.channel is None else [item.channel]
        for name in targets:
            if name not in channel_names():
                raise ValueError(f"recipient {item.address!r}: unknown channel {name!r}")
        return [(name, _validated(name, item)) for name in targets]
    if _is_user(item):
        pairs = []
        for name in channels:
            address = get_channel(name).address_for_user(item)
            if not address:
                raise ValueError(
                    f"user {item.get_username()!r} has no address for channel {name!r}"
                )
            recipient = Recipient(address, name, item, _display_name(item))
            pairs.append((name, _validated(name, recipient)))
        return pairs
    if isinstance(item, str):
        return [(name, _validated(name, Recipient(item.strip(), name))) for name in channels]
    raise TypeError(
        "each recipient must be a User, an address string or a Recipient,"
        f" not {type(item).__name__}"
    )


def _validated(channel_name: str, recipient: Recipient) -> Recipient:
    if not isinstance(recipient.address, str) or not recipient.address:
        raise ValueError(f"empty recipient address for channel {channel_name!r}")
    try:
        get_channel(channel_name).validate_address(recipient.address)
    except ValidationError as error:
        raise ValidationError(
            f"invalid recipient {recipient.address!r} for channel {channel_name!r}: "
            + "; ".join(error.messages)
        ) from error
    return recipient


def _is_user(value: Any) -> bool:
    return isinstance(value, get_user_model())


def _display_name(user: Any) -> str:
    full = getattr(user, "get_full_name", lambda: "")()
    return full or ""


def _preference(user: Any) -> TrackingPreference | None:
    if not _is_user(user) or user.pk is None:
        return None
    return TrackingPreference.objects.using(write_db()).filter(user=user).first()


def _default(setting: str, pref: TrackingPreference | None) -> bool:
    field = {
        "REQUEST_DELIVERY_REPORT": "request_delivery_reports",
        "REQUEST_READ_RECEIPT": "request_read_receipts",
    }[setting]
    return bool(getattr(pref, field, False) or get_setting(setting))


def _users_allowing_tracking(users: list[Any]) -> set[Any]:
    """The pks of these users who did not switch tracking off."""
    pks = {user.pk for user in users if user is not None}
    if not pks:
        return set()
    # From the primary: a refusal saved a moment ago must hold at once.
    refused = set(
        TrackingPreference.objects.using(write_db())
        .filter(user__in=pks, allow_tracking=False)
        .values_list("user_id", flat=True)
    )
    return pks - refused


# --- record_event() --------------------------------------------------------------------

_SUMMARY_DEFAULTS: dict[str, Any] = {
    "status": st.QUEUED,
    "error": "",
    "sent_at": None,
    "delivered_at": None,
    "first_opened_at": None,
    "last_opened_at": None,
    "first_clicked_at": None,
    "failed_at": None,
    "open_count": 0,
    "machine_open_count": 0,
    "click_count": 0,
    "machine_click_count": 0,
    "last_event_at": None,
}
_SOURCES = set(EventSource.values)
#: The longest provider message id and provider event id the columns hold.
ID_LIMITS = {
    "message_id": Delivery._meta.get_field("message_id").max_length,
    "provider_event_id": DeliveryEvent._meta.get_field("provider_event_id").max_length,
}


@dataclass(frozen=True)
class NewEvent:
    """One event for :func:`record_events`: the arguments of :func:`record_event`.

    Raises ``ValueError`` when built with an unknown kind or source, a naive time, or
    an id longer than its column (cut, it would match the wrong message or event).
    """

    delivery_id: int
    kind: str
    source: str
    occurred_at: dt.datetime
    is_machine: bool = False
    provider_event_id: str = ""
    user_agent: str = ""
    ip_address: str | None = None
    error: str = ""
    message_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        st.effective_kind(self.kind)  # raises ValueError for an unknown kind
        if self.source not in _SOURCES:
            raise ValueError(
                f"unknown event source {self.source!r}; expected one of {sorted(_SOURCES)}"
            )
        if timezone.is_naive(self.occurred_at):
            raise ValueError("occurred_at must be an aware datetime")
        for name, limit in ID_LIMITS.items():
            value = getattr(self, name) or ""
            if limit is not None and len(value) > limit:
                raise ValueError(f"{name} is longer than {limit} characters ({len(value)})")


def record_event(
    delivery: Delivery | int,
    kind: str,
    *,
    source: str,
    occurred_at: dt.datetime | None = None,
    is_machine: bool = False,
    provider_event_id: str = "",
    user_agent: str = "",
    ip_address: str | None = None,
    error: str = "",
    message_id: str | None = None,
    details: dict | None = None,
) -> DeliveryEvent | None:
    """Store one event of a delivery and apply it; the only writer of a delivery's status.

    Returns the stored event, or None when it was not stored: a duplicate of an event
    already stored (same ``provider_event_id``), an open or click of a delivery whose
    tracking is off, or any event of a delivery anonymised after its retention.
    ``error`` is the readable reason of a failure or delay; ``message_id`` the
    provider's id of the message, stored on the delivery. Raises
    ``Delivery.DoesNotExist`` when there is no such delivery.

    The delivery row is locked while the event applies, so concurrent events never
    lose an update. An event older than the newest one applied makes the summary be
    recomputed from the whole log in time order, so events that arrive out of order
    or twice end in the same state as the same events once and in order.
    """
    pk = delivery.pk if isinstance(delivery, Delivery) else delivery
    new = NewEvent(
        delivery_id=pk,
        kind=kind,
        source=source,
        occurred_at=occurred_at or timezone.now(),
        is_machine=is_machine,
        provider_event_id=provider_event_id,
        user_agent=user_agent,
        ip_address=ip_address,
        error=error,
        message_id=message_id,
        details=dict(details or {}),
    )
    batch = _Batch([new])
    if pk not in batch.deliveries:
        raise Delivery.DoesNotExist(f"Delivery {pk} does not exist")
    if isinstance(delivery, Delivery):
        _copy_summary(batch.deliveries[pk], delivery)
    return batch.stored[0]


def record_events(events: Sequence[NewEvent]) -> list[DeliveryEvent | None]:
    """Store and apply many events at once: :func:`record_event` for a batch.

    One transaction; each delivery concerned is locked and written once, whatever
    the number of its events, and the events are inserted together. The result has
    one item per event, in order: the stored event, or None when it was not stored
    (as in ``record_event``, and also when its delivery does not exist, e.g. purged).
    """
    if not events:
        return []
    return _Batch(list(events)).stored


class _Batch:
    """Stores and applies a list of events in one transaction (see record_events)."""

    def __init__(self, events: list[NewEvent]):
        self.events = events
        self.stored: list[DeliveryEvent | None] = [None] * len(events)
        alias = write_db()
        with transaction.atomic(using=alias):
            self.deliveries, seen = self._lock()
            self._store(seen)
            changes, read = self._apply()
            summary_writes.write(changes, timezone.now())
        for change in changes:
            if change.delivery.status != change.old_status:
                on_commit(_status_signal(change.delivery, change.old_status, change.last_event))
        if read:
            on_commit(functools.partial(read_notices.enqueue_instant_notices, read))

    def _lock(self) -> tuple[dict[int, Delivery], set[tuple[int, str]]]:
        """Lock the deliveries (in pk order); find the provider event ids already stored."""
        pks = sorted({event.delivery_id for event in self.events})
        provider_ids = {event.provider_event_id for event in self.events} - {""}
        query = Delivery.objects.select_for_update().filter(pk__in=pks).order_by("pk")
        if len(self.events) == 1 and provider_ids:
            # The common single event with an id: the duplicate check rides on the lock.
            stored = DeliveryEvent.objects.filter(
                delivery=models.OuterRef("pk"), provider_event_id=self.events[0].provider_event_id
            )
            rows = list(query.annotate(_seen=models.Exists(stored)))
            seen = {(row.pk, self.events[0].provider_event_id) for row in rows if row._seen}
            return {row.pk: row for row in rows}, seen
        deliveries = {row.pk: row for row in query}
        if not provider_ids:
            return deliveries, set()
        seen = set(
            DeliveryEvent.objects.using(write_db())
            .filter(delivery_id__in=pks, provider_event_id__in=provider_ids)
            .values_list("delivery_id", "provider_event_id")
        )
        return deliveries, seen

    def _store(self, seen: set[tuple[int, str]]) -> None:
        """Insert the events that are to be stored, in one statement."""
        receipt_wanted = self._read_receipts_requested()
        for index, new in enumerate(self.events):
            delivery = self.deliveries.get(new.delivery_id)
            if delivery is None or delivery.recipient.startswith(ANONYMISED_PREFIX):
                # Gone, or past its retention: new events would bring personal data back.
                continue
            if _tracking_refused(delivery, new.kind, new.source, receipt_wanted):
                continue
            if new.provider_event_id:
                key = (delivery.pk, new.provider_event_id)
                if key in seen:
                    continue
                seen.add(key)
            details = dict(new.details)
            if new.error:
                details["error"] = new.error
            self.stored[index] = DeliveryEvent(
                delivery=delivery,
                kind=new.kind,
                occurred_at=new.occurred_at,
                source=new.source,
                is_machine=new.is_machine,
                provider_event_id=new.provider_event_id,
                user_agent=(new.user_agent or "")[:USER_AGENT_MAX],
                ip_address=new.ip_address,
                details=details,
            )
        copy_insert.insert_new(
            DeliveryEvent,
            [event for event in self.stored if event is not None],
            using=write_db(),
        )

    def _read_receipts_requested(self) -> set[int]:
        """The deliveries (among those with an MDN event) whose notification asked for one."""
        pks = {new.delivery_id for new in self.events if new.source == EventSource.MDN}
        if not pks:
            return set()
        return set(
            Delivery.objects.using(write_db())
            .filter(pk__in=pks, notification__request_read_receipt=True)
            .values_list("pk", flat=True)
        )

    def _apply(self) -> tuple[list[summary_writes.Change], list[int]]:
        """Apply the stored events to their deliveries: what changed in each, and the
        deliveries just read by a person (for the senders' read notices)."""
        by_delivery: dict[int, list[tuple[NewEvent, DeliveryEvent]]] = {}
        for new, event in zip(self.events, self.stored, strict=True):
            if event is not None:
                by_delivery.setdefault(new.delivery_id, []).append((new, event))
        changes, read = [], []
        for pk, pairs in by_delivery.items():
            delivery = self.deliveries[pk]
            old_status = delivery.status
            before = _summary_of(delivery)
            events = sorted((event for _, event in pairs), key=lambda event: event.occurred_at)
            if delivery.last_event_at is None or events[0].occurred_at >= delivery.last_event_at:
                for event in events:
                    _apply(delivery, event)
            else:
                _refold(delivery)
            message_ids = [new.message_id for new, _ in pairs if new.message_id]
            if message_ids:
                delivery.message_id = message_ids[-1]
            changes.append(summary_writes.Change(delivery, old_status, before, events[-1]))
            if delivery.status != old_status and read_notices.read_by_a_person(
                delivery.status, events
            ):
                read.append(pk)
        return changes, read


_SAVED_FIELDS = [*_SUMMARY_DEFAULTS, "message_id", "updated_at"]


def _summary_of(delivery: Delivery) -> dict[str, Any]:
    return {name: getattr(delivery, name) for name in (*_SUMMARY_DEFAULTS, "message_id")}


def _status_signal(delivery: Delivery, old_status: str, event: DeliveryEvent) -> Callable[[], Any]:
    return lambda: delivery_status_changed.send(
        sender=Delivery,
        delivery=delivery,
        old_status=old_status,
        new_status=delivery.status,
        event=event,
    )


def revise_as_machine(delivery_id: int, event_ids: Iterable[int], reason: str) -> int:
    """Mark these stored events of a delivery as automated; return how many changed.

    The one revision the event log allows. Some automation shows only once it is over:
    a scanner that follows every link of an email within a second is recognised at its
    last click, after the first ones were recorded as a person's. Those events keep
    their time, kind and details; ``is_machine`` becomes True, ``details`` get
    ``machine_reason`` and ``"revised": True``, and the delivery's summary is recomputed
    from its log, so its status may step back (e.g. from "Clicked" to "Delivered").
    """
    ids = list(event_ids)
    alias = write_db()
    with transaction.atomic(using=alias):
        delivery = Delivery.objects.using(alias).select_for_update().get(pk=delivery_id)
        events = list(
            DeliveryEvent.objects.using(alias).filter(
                delivery=delivery, pk__in=ids, is_machine=False
            )
        )
        if not events:
            return 0
        for event in events:
            event.is_machine = True
            event.details = {**event.details, "machine_reason": reason, "revised": True}
            event.save(update_fields=["is_machine", "details"])
        old_status, before = delivery.status, _summary_of(delivery)
        _refold(delivery)
        summary_writes.write(
            [summary_writes.Change(delivery, old_status, before, events[-1])], timezone.now()
        )
    if delivery.status != old_status:
        on_commit(_status_signal(delivery, old_status, events[-1]))
    return len(events)


def _tracking_refused(delivery: Delivery, kind: str, source: str, receipt_wanted: set[int]) -> bool:
    """Whether this open or click must not be recorded: tracking is off for the delivery.

    A read receipt (MDN) the notification asked for is the recipient's own, deliberate
    answer, not tracking: it is recorded even then.
    """
    if source == EventSource.MDN and delivery.pk in receipt_wanted:
        return False
    if kind == st.OPENED:
        return not delivery.track_opens
    if kind in (st.CLICKED, st.DOWNLOAD):
        return not delivery.track_clicks
    return False


def _apply(delivery: Delivery, event: DeliveryEvent) -> None:
    """Apply one event, later than or as late as every event applied so far."""
    kind, at = event.kind, event.occurred_at
    counted = not event.is_machine or get_setting("COUNT_MACHINE_OPENS")
    if kind == st.OPENED:
        if event.is_machine:
            delivery.machine_open_count += 1
        if counted:
            delivery.open_count += 1
            delivery.first_opened_at = delivery.first_opened_at or at
            delivery.last_opened_at = at
    elif kind in (st.CLICKED, st.DOWNLOAD):
        if event.is_machine:
            delivery.machine_click_count += 1
        if counted:
            delivery.click_count += 1
            delivery.first_clicked_at = delivery.first_clicked_at or at
    elif kind == st.SENT:
        delivery.sent_at = delivery.sent_at or at
    elif kind == st.DELIVERED:
        delivery.delivered_at = delivery.delivered_at or at

    if counted:
        old = delivery.status
        new = st.next_status(old, kind)
        effect = st.effective_kind(kind)
        if new == effect and (new in st.FAILURES or new == st.DEFERRED):
            delivery.error = event.details.get("error", "")
            if new in st.FAILURES:
                delivery.failed_at = at
        elif new != old:
            delivery.error = ""
        delivery.status = new
    delivery.last_event_at = at


def _refold(delivery: Delivery) -> None:
    """Recompute the summary from the whole event log, in time order."""
    for name, value in _SUMMARY_DEFAULTS.items():
        setattr(delivery, name, value)
    # From where the delivery is locked: a replica would not see this transaction's events.
    log = DeliveryEvent.objects.using(write_db()).filter(delivery=delivery)
    for event in log.order_by("occurred_at", "id"):
        _apply(delivery, event)


def _copy_summary(source: Delivery, target: Delivery) -> None:
    for name in _SAVED_FIELDS:
        setattr(target, name, getattr(source, name))
