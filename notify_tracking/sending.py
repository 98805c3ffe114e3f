"""Sending deliveries: claim, send through the channel, record the result, retry.

Plain functions, called by the Celery tasks in :mod:`notify_tracking.tasks` (and
directly by tests). The guarantees (docs/guarantees.md):

- a worker *claims* deliveries with one conditional UPDATE before sending, so two
  workers never send the same delivery at once;
- each result is recorded right after its send, so a worker killed mid-batch can
  resend at most the message it was sending when it died;
- a transient error defers the delivery and schedules a retry with exponential
  backoff and jitter; after ``MAX_ATTEMPTS`` it ends ``failed`` with the reason;
- a delivery whose worker or task vanished (killed worker, lost broker message) is
  found by :func:`sweep_stuck` and enqueued again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connections
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import ngettext

from . import status as st
from .channels.base import SendResult
from .conf import get_channel, get_setting
from .models import Delivery, EventSource, write_db
from .service import ID_LIMITS, record_event

logger = logging.getLogger(__name__)
MESSAGE_ID_MAX = ID_LIMITS["message_id"] or 255

#: A retry message may arrive this much before its delivery is due (clock skew).
EARLY_ARRIVAL = dt.timedelta(seconds=5)


def claim(delivery_ids: Iterable[int]) -> list[Delivery]:
    """Take the sendable, unclaimed deliveries among ``delivery_ids`` for this worker.

    Sendable: ``queued``, or ``deferred`` by our own send attempt. A delivery that was
    handed off once (``sent_at`` set) and is ``deferred`` because the provider or the
    recipient's server reported a delay is the provider's to retry, never ours.
    """
    now = timezone.now()
    token = uuid.uuid4()
    claimed = (
        Delivery.objects.filter(
            pk__in=list(delivery_ids),
            status__in=st.SENDABLE,
            sent_at__isnull=True,
            next_attempt_at__lte=now + EARLY_ARRIVAL,
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(
            claim=token,
            claimed_until=now + dt.timedelta(seconds=get_setting("CLAIM_TIMEOUT")),
            attempts=F("attempts") + 1,
        )
    )
    if not claimed:
        return []
    return list(
        Delivery.objects.using(write_db())  # a replica may not show the claim yet
        .filter(claim=token)
        .select_related("notification")
        .prefetch_related("notification__attachments")  # once per batch, not per message
        .order_by("channel", "pk")
    )


def send_deliveries(delivery_ids: Iterable[int]) -> dict[str, int]:
    """Send the given deliveries that are due and not held by another worker.

    Returns how many ended in each status (for logs and tests).
    """
    deliveries = claim(delivery_ids)
    outcome: dict[str, int] = {}
    if not deliveries:
        return outcome
    token = deliveries[0].claim
    assert token is not None  # claim() returns only the deliveries it claimed
    lease = Lease(token)
    try:
        for channel_name, group in _by_channel(deliveries).items():
            for delivery, result in _send_group(channel_name, lease.held(group)):
                final = _record_persistently(delivery, result)
                outcome[final] = outcome.get(final, 0) + 1
    finally:
        Delivery.objects.filter(claim=token).update(claim=None, claimed_until=None)
    return outcome


class Lease:
    """This worker's claim on a batch, renewed while the batch is being sent.

    A batch can take longer than ``CLAIM_TIMEOUT`` (a slow server, rate limits). Every
    third of that time the claim of the deliveries not yet sent is extended; one whose
    claim expired and was taken by another worker meanwhile is skipped, never sent twice.
    """

    def __init__(self, token: uuid.UUID):
        self.token = token
        self.timeout = get_setting("CLAIM_TIMEOUT")
        self.renewed_at = time.monotonic()

    def held(self, deliveries: list[Delivery]) -> Iterator[Delivery]:
        """Yield each delivery just before it is sent, if this worker still holds it."""
        lost: set[int] = set()
        for index, delivery in enumerate(deliveries):
            if time.monotonic() - self.renewed_at > self.timeout / 3:
                lost |= self._renew([d.pk for d in deliveries[index:]])
            if delivery.pk in lost:
                logger.warning(
                    "notify_tracking: delivery %s was taken over by another worker; not sent here",
                    delivery.pk,
                )
                continue
            yield delivery

    def _renew(self, pks: list[int]) -> set[int]:
        """Extend the claim on ``pks``; return those this worker no longer holds."""
        until = timezone.now() + dt.timedelta(seconds=self.timeout)
        self.renewed_at = time.monotonic()
        Delivery.objects.filter(pk__in=pks, claim=self.token).update(claimed_until=until)
        held = set(
            Delivery.objects.using(write_db())
            .filter(pk__in=pks, claim=self.token)
            .values_list("pk", flat=True)
        )
        return set(pks) - held


def _by_channel(deliveries: list[Delivery]) -> dict[str, list[Delivery]]:
    groups: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.channel, []).append(delivery)
    return groups


def _send_group(channel_name: str, group: Iterable[Delivery]):
    try:
        channel = get_channel(channel_name)
    except ImproperlyConfigured as error:
        result = SendResult(st.FAILED, error=str(error))
        return [(delivery, result) for delivery in group]
    return channel.send(group)


#: Attempts at recording one send result when the database fails, and the first pause.
RECORD_ATTEMPTS = 4
RECORD_PAUSE = 0.25


def _record_persistently(delivery: Delivery, result: SendResult) -> str:
    """Record a send result, retrying on a database error: the message is already out.

    A dropped connection or a locked database must not lose the news that a message
    was sent (the sweep would send it again) nor abandon the rest of the batch. After
    the last attempt the error is logged and the batch goes on; the delivery is then
    left to the sweep, which may send it a second time.
    """
    for attempt in range(1, RECORD_ATTEMPTS):
        try:
            return _record(delivery, result)
        except (OperationalError, InterfaceError):
            logger.warning(
                "notify_tracking: database error recording delivery %s, retrying", delivery.pk
            )
            writes = connections[write_db()]
            if not writes.in_atomic_block:
                writes.close()  # the next query opens a fresh connection
            time.sleep(RECORD_PAUSE * 2 ** (attempt - 1))
    try:
        return _record(delivery, result)
    except (OperationalError, InterfaceError):
        logger.exception(
            "notify_tracking: could not record that delivery %s was %s; the sweep will retry it",
            delivery.pk,
            result.status,
        )
        return "unrecorded"


def _record(delivery: Delivery, result: SendResult) -> str:
    """Record a send result through record_event; schedule a retry when due.

    The result of one claim is one event, whatever happens to the connection: recorded
    again after a commit whose answer was lost, it is stored once (``provider_event_id``).
    """
    once = f"send:{delivery.claim}"
    result.message_id = _storable_message_id(delivery, result.message_id)
    if result.status == st.SENT:
        _record_result(
            delivery,
            st.SENT,
            once,
            message_id=result.message_id,
            details={**result.details, "attempt": delivery.attempts},
        )
        return st.SENT
    if result.status == st.DEFERRED and not result.attempted:
        _give_back_attempt(delivery)
        return _defer(delivery, result, once, delivery.attempts - 1, waiting_for_turn=True)
    if result.status == st.DEFERRED:
        if delivery.attempts >= get_setting("MAX_ATTEMPTS"):
            reason = ngettext(
                "%(error)s (gave up after %(attempts)d attempt)",
                "%(error)s (gave up after %(attempts)d attempts)",
                delivery.attempts,
            ) % {"error": result.error, "attempts": delivery.attempts}
            _record_result(delivery, st.FAILED, once, error=reason)
            return st.FAILED
        return _defer(delivery, result, once, delivery.attempts)
    _record_result(
        delivery,
        result.status,
        once,
        error=result.error,
        message_id=result.message_id or None,
        details=result.details,
    )
    return result.status


def _record_result(delivery: Delivery, kind: str, once: str, **fields: Any) -> None:
    """Record the result of one claim of ``delivery`` as an event of ``kind``: stored
    once, whatever number of times it is recorded (``once`` is the claim's event id)."""
    record_event(delivery, kind, source=EventSource.CHANNEL, provider_event_id=once, **fields)


def _defer(delivery: Delivery, result: SendResult, once: str, attempt: int, **details: Any) -> str:
    """Record the deferral of ``delivery`` after try number ``attempt``; schedule its retry.

    ``attempt`` is passed, not read from ``delivery``: a given-back attempt is undone in
    the database only, so that recording the same result again cannot undo it twice."""
    delay = retry_delay(delivery.attempts, result.retry_after)
    _record_result(
        delivery,
        st.DEFERRED,
        once,
        error=result.error,
        details={"attempt": attempt, "retry_in_seconds": round(delay, 1), **details},
    )
    _schedule_retry(delivery, delay)
    return st.DEFERRED


def _give_back_attempt(delivery: Delivery) -> None:
    """Undo the attempt the claim counted, for a send the channel's rate limiter had no
    turn for yet: nothing was sent, and waiting in line (a burst, a provider's pause)
    must not use up ``MAX_ATTEMPTS`` and fail a message that was never tried.

    Once per claim: the ``UPDATE`` matches only the count the claim left, so a second
    recording of the same result (after a lost commit) changes nothing.
    """
    Delivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
        attempts=F("attempts") - 1
    )


def _storable_message_id(delivery: Delivery, message_id: str) -> str:
    """The provider's message id, or "" when it is longer than the column holds: the
    message was sent and is recorded so (not sent again); its webhooks cannot be matched
    by that id, which the log says."""
    if message_id and len(message_id) > MESSAGE_ID_MAX:
        logger.warning(
            "notify_tracking: delivery %s: the provider's message id is %s characters long, "
            "more than the %s stored; recorded without it",
            delivery.pk,
            len(message_id),
            MESSAGE_ID_MAX,
        )
        return ""
    return message_id


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    The provider's ``retry_after`` when it gave one; otherwise exponential backoff
    from ``RETRY_BACKOFF`` seconds, capped at ``RETRY_BACKOFF_MAX``, with "equal
    jitter" (half fixed, half random) so that retries of a burst spread out.
    """
    if retry_after is not None and retry_after >= 0:
        return float(retry_after)
    base = get_setting("RETRY_BACKOFF") * 2 ** max(attempt - 1, 0)
    capped = min(base, get_setting("RETRY_BACKOFF_MAX"))
    return capped / 2 + random.uniform(0, capped / 2)


def _schedule_retry(delivery: Delivery, delay: float) -> None:
    from .tasks import enqueue_send

    due = timezone.now() + dt.timedelta(seconds=delay)
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=due, claim=None, claimed_until=None
    )
    enqueue_send([delivery.pk], countdown=delay)


def sweep_stuck(limit: int = 10_000) -> int:
    """Enqueue again the deliveries overdue by more than ``STUCK_AFTER`` seconds.

    A delivery is overdue when it is still queued or deferred, nobody holds it, and
    its attempt was due long ago: its worker died or its broker message was lost.
    Returns how many were enqueued. Each one's due time moves to now, so a later
    sweep does not enqueue it again while it waits in a long queue.
    """
    from .tasks import enqueue_send

    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=get_setting("STUCK_AFTER"))
    stuck = list(
        Delivery.objects.filter(
            status__in=st.SENDABLE, sent_at__isnull=True, next_attempt_at__lt=cutoff
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", "channel")[:limit]
    )
    if not stuck:
        return 0
    ids = [pk for pk, _ in stuck]
    Delivery.objects.filter(pk__in=ids).update(next_attempt_at=now)
    by_channel: dict[str, list[int]] = {}
    for pk, channel in stuck:
        by_channel.setdefault(channel, []).append(pk)
    for channel_ids in by_channel.values():
        enqueue_send(channel_ids)
    logger.warning("notify_tracking: re-enqueued %d stuck deliveries", len(ids))
    return len(ids)
