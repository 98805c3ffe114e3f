"""Retention: delete, or anonymise, what is older than its retention period.

A notification is kept, with its deliveries, their events and its attachments, for
``RETENTION_DAYS`` days from its creation, or for the days that the first matching
rule of ``RETENTION_POLICY`` gives it (per target type, per sender...). Past that,
:func:`purge` either deletes it all (``RETENTION_MODE = "delete"``) or anonymises it
(``"anonymise"``): addresses become a stable placeholder, user agents, IP addresses,
event details and message bodies are dropped; statuses, timestamps and counts stay.

The work goes in batches of ``RETENTION_BATCH_SIZE`` rows, each in its own short
transaction, selected through indexes; nothing locks a table, so it is safe while the
app sends. See docs/retention.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string

from .conf import get_setting
from .models import (
    ANONYMISED_PREFIX,
    Attachment,
    Delivery,
    DeliveryEvent,
    Notification,
    on_commit,
    write_db,
)
from .summary_writes import update_rows

logger = logging.getLogger(__name__)

DELETE = "delete"
ANONYMISE = "anonymise"
MODES = (DELETE, ANONYMISE)
#: Every anonymised recipient starts with this; no channel accepts it as an address.
PLACEHOLDER_PREFIX = ANONYMISED_PREFIX
REMOVED_ADDRESS = "<address removed>"
# Each match starts where a run of address characters starts (the look-behind): tried
# from every character of a long run without "@", the search took quadratic time.
EMAIL_LIKE = re.compile(r"(?<![^\s<>\"'(),;:\[\]@])[^\s<>\"'(),;:\[\]@]+@[^\s<>\"'(),;:\[\]@]+")


@dataclass
class PurgeReport:
    """How many rows a purge removed (or anonymised, or would have, for a dry run)."""

    mode: str
    dry_run: bool = False
    notifications: int = 0
    deliveries: int = 0
    events: int = 0
    attachments: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verb = {DELETE: "deleted", ANONYMISE: "anonymised"}[self.mode]
        if self.dry_run:
            verb = f"would be {verb}"
        return (
            f"{self.notifications} notifications, {self.deliveries} deliveries, "
            f"{self.events} events {verb}; {self.attachments} attachments "
            f"{'would be ' if self.dry_run else ''}removed"
        )


@dataclass(frozen=True)
class Rule:
    """Notifications matching ``where`` are kept ``days`` days (None: for ever)."""

    where: Q
    days: int | None


# --- the policy ------------------------------------------------------------------------


def retention_rules() -> list[Rule]:
    """The rules of ``RETENTION_POLICY``, then the catch-all of ``RETENTION_DAYS``.

    The policy callable returns ``[(filter, days), ...]``: a ``Q`` object (or a dict of
    lookups) on Notification, and a number of days or None (keep for ever). The first
    rule a notification matches decides; one that matches none gets ``RETENTION_DAYS``.
    """
    rules = [_rule(item, index) for index, item in enumerate(_policy()())]
    return [*rules, Rule(Q(), get_setting("RETENTION_DAYS"))]


def _policy() -> Callable[[], Any]:
    value = get_setting("RETENTION_POLICY")
    if value is None:
        return list
    return import_string(value) if isinstance(value, str) else value


def _rule(item: Any, index: int) -> Rule:
    problem = f"NOTIFY_TRACKING['RETENTION_POLICY'] rule {index}"
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise ImproperlyConfigured(f"{problem} must be a (filter, days) pair, not {item!r}")
    where, days = item
    if isinstance(where, dict):
        where = Q(**where)
    if not isinstance(where, Q):
        raise ImproperlyConfigured(f"{problem}: the filter must be a Q object or a dict")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise ImproperlyConfigured(f"{problem}: days must be a whole number of at least 1, or None")
    return Rule(where, days)


def expired_notifications(now: dt.datetime | None = None) -> list[QuerySet[Notification]]:
    """One queryset per rule: the notifications that rule decides for and that expired.

    A notification is expired when it was created strictly before ``now - days``:
    one created exactly at that moment is still kept.
    """
    now = now or timezone.now()
    selections: list[QuerySet[Notification]] = []
    earlier: list[Q] = []
    for rule in retention_rules():
        if rule.days is not None:
            selection = Notification.objects.filter(
                rule.where, created_at__lt=now - dt.timedelta(days=rule.days)
            )
            for where in earlier:
                selection = selection.exclude(where)
            selections.append(selection)
        earlier.append(rule.where)
    return selections


# --- the purge -------------------------------------------------------------------------


def purge(
    *,
    mode: str | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
) -> PurgeReport:
    """Delete or anonymise every expired notification; report how many rows it touched.

    Run it outside a transaction (the Celery task and the management command do): each
    batch commits on its own, so a purge stopped halfway keeps what it did and the next
    one goes on from there.
    """
    mode = mode or get_setting("RETENTION_MODE")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    size = batch_size or get_setting("RETENTION_BATCH_SIZE")
    report = PurgeReport(mode=mode, dry_run=dry_run)
    for selection in expired_notifications(now):
        if mode == ANONYMISE:
            selection = selection.exclude(_anonymised())
        if dry_run:
            _count(selection, report)
            continue
        for ids in _batches(selection, size):
            if mode == DELETE:
                _delete(ids, report, size)
            else:
                _anonymise(ids, report, size)
    return report


def _batches(selection: QuerySet[Notification], size: int) -> Iterator[list[int]]:
    """Ids of ``selection`` in batches, oldest first, each batch read afresh.

    Keyset paging on (created_at, id) walks the created_at index once, so a long purge
    does not rescan the rows it already handled.
    """
    last: tuple[dt.datetime, int] | None = None
    while True:
        page = selection
        if last is not None:
            page = page.filter(Q(created_at__gt=last[0]) | Q(created_at=last[0], pk__gt=last[1]))
        rows = list(page.order_by("created_at", "pk").values_list("created_at", "pk")[:size])
        if not rows:
            return
        yield list(dict.fromkeys(pk for _, pk in rows))
        last = rows[-1]


def _delivery_batches(deliveries: QuerySet[Delivery], size: int) -> Iterator[list[int]]:
    """Ids of ``deliveries`` in batches; each batch must leave the queryset when handled.

    Unordered on purpose: ``ORDER BY id LIMIT n`` makes PostgreSQL walk the primary
    key index of the whole table instead of reading the notification_id index.
    """
    while True:
        ids = list(deliveries.order_by().values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids


def _count(selection: QuerySet[Notification], report: PurgeReport) -> None:
    expired = selection.values("pk")
    deliveries = Delivery.objects.filter(notification__in=expired)
    if report.mode == ANONYMISE:
        deliveries = deliveries.exclude(recipient__startswith=PLACEHOLDER_PREFIX)
    report.notifications += Notification.objects.filter(pk__in=expired).count()
    report.deliveries += deliveries.count()
    report.events += DeliveryEvent.objects.filter(delivery__in=deliveries.values("pk")).count()
    report.attachments += Attachment.objects.filter(notification__in=expired).count()


def _delete(notification_ids: list[int], report: PurgeReport, size: int) -> None:
    # Each batch must be gone from the next read: read where it is deleted.
    deliveries = Delivery.objects.using(write_db()).filter(notification_id__in=notification_ids)
    for ids in _delivery_batches(deliveries, size):
        with transaction.atomic(using=write_db()):
            _, removed = Delivery.objects.filter(pk__in=ids).delete()
        report.deliveries += removed.get(Delivery._meta.label, 0)
        report.events += removed.get(DeliveryEvent._meta.label, 0)
    with transaction.atomic(using=write_db()):
        files = _attachment_files(notification_ids)
        _, removed = Notification.objects.filter(pk__in=notification_ids).delete()
        on_commit(lambda: _remove_files(files))
    report.notifications += removed.get(Notification._meta.label, 0)
    report.attachments += removed.get(Attachment._meta.label, 0)
    # Deliveries created while the batch ran (there should be none: notify() creates
    # them all at once) went with their notification.
    report.deliveries += removed.get(Delivery._meta.label, 0)
    report.events += removed.get(DeliveryEvent._meta.label, 0)


def _anonymise(notification_ids: list[int], report: PurgeReport, size: int) -> None:
    deliveries = (  # each batch must be gone from the next read: read where it is written
        Delivery.objects.using(write_db())
        .filter(notification_id__in=notification_ids)
        .exclude(recipient__startswith=PLACEHOLDER_PREFIX)
    )
    for ids in _delivery_batches(deliveries, size):
        with transaction.atomic(using=write_db()):
            report.deliveries += _anonymise_deliveries(ids)
            report.events += DeliveryEvent.objects.filter(delivery_id__in=ids).update(
                user_agent="", ip_address=None, details={}
            )
    with transaction.atomic(using=write_db()):
        files = _attachment_files(notification_ids)
        report.attachments += Attachment.objects.filter(
            notification_id__in=notification_ids
        ).delete()[0]
        report.notifications += Notification.objects.filter(pk__in=notification_ids).update(
            subject="", text="", html=""
        )
        on_commit(lambda: _remove_files(files))


def _anonymise_deliveries(ids: list[int]) -> int:
    """Anonymise these deliveries: the fields all of them lose in one UPDATE, the
    address and the error, which differ, by :func:`summary_writes.update_rows`.
    ``bulk_update``'s CASE expressions were measured five times slower (20,000
    deliveries: 16 s against 3 on PostgreSQL, 14 against 4 on SQLite)."""
    alias = write_db()
    rows = list(
        Delivery.objects.using(alias)
        .filter(pk__in=ids)
        .exclude(recipient__startswith=PLACEHOLDER_PREFIX)
        .values_list("pk", "recipient", "error")
    )
    Delivery.objects.using(alias).filter(pk__in=[pk for pk, _, _ in rows]).update(
        recipient_name="", user=None
    )
    changes = [
        (pk, {"recipient": placeholder(recipient), "error": scrub(error, recipient)})
        for pk, recipient, error in rows
    ]
    update_rows(alias, ("recipient", "error"), changes)
    return len(rows)


def _anonymised() -> Q:
    """Notifications already anonymised: notify() never creates one without a text."""
    return Q(text="")


def placeholder(address: str, secret: str | bytes | None = None) -> str:
    """The stable, non-reversible stand-in of an address after anonymisation.

    A keyed hash (``SECRET_KEY``, or ``secret``) of the address in lower case: the same
    address always gives the same placeholder, so support can still find "the
    deliveries to this address" by typing it, but the address cannot be read back from
    it.
    """
    key = "notify_tracking.retention.placeholder"
    value = address.strip().lower()
    digest = salted_hmac(key, value, secret=secret, algorithm="sha256").hexdigest()
    return f"{PLACEHOLDER_PREFIX}{digest[:32]}"


def placeholders(address: str) -> tuple[str, ...]:
    """Every placeholder ``address`` may have been given: with ``SECRET_KEY``, and with
    each of ``SECRET_KEY_FALLBACKS``, the keys it replaced (anonymised before then)."""
    fallbacks = [placeholder(address, secret) for secret in settings.SECRET_KEY_FALLBACKS]
    return tuple(dict.fromkeys([placeholder(address), *fallbacks]))


def scrub(text: str, address: str) -> str:
    """``text`` without ``address`` nor anything that looks like an email address."""
    if address:
        text = re.sub(re.escape(address), REMOVED_ADDRESS, text, flags=re.IGNORECASE)
    return EMAIL_LIKE.sub(REMOVED_ADDRESS, text)


def _attachment_files(notification_ids: list[int]) -> list[str]:
    return list(
        Attachment.objects.using(write_db())
        .filter(notification_id__in=notification_ids)
        .exclude(file="")
        .values_list("file", flat=True)
    )


def _remove_files(names: list[str]) -> None:
    """Remove attachment files once their rows are gone (a failure is logged, not raised)."""
    storage = Attachment._meta.get_field("file").storage
    for name in names:
        try:
            storage.delete(name)
        except Exception:
            logger.exception("notify_tracking: could not remove attachment file %s", name)
