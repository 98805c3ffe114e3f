"""From a request to a tracking URL to events, through ``record_events`` only.

The click and download views call these after the token is verified. Each looks the
delivery up by its token (one query), classifies the request (:mod:`.classify`), and
records one event per delivery concerned: the delivery itself, or, for a group token
(one email sent to every recipient), every delivery of that notification on that
channel that was sent, all with the same ``occurred_at``. Pixel loads take the same
steps later, in batches (:mod:`.pending`).

The client's IP address is used to classify, and stored only when
``STORE_IP_ADDRESSES`` is on.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

from .. import status as st
from ..conf import get_setting
from ..models import Delivery, DeliveryEvent, EventSource, Notification, write_db
from ..retention import PLACEHOLDER_PREFIX
from ..service import NewEvent, record_events, revise_as_machine
from . import classify
from .markup import scan
from .rewrite import browser_url, is_trackable_link
from .tokens import ClickToken, DownloadToken

if TYPE_CHECKING:
    from ..models import Attachment

_TARGET_FIELDS = ("pk", "track_opens", "track_clicks", "sent_at", "notification_id", "channel")
#: A shared email's open counts for the recipients it was sent to, not the failed ones.
_SENT_STATUSES = (st.SENT, st.DELIVERED, st.OPENED, st.CLICKED)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: ``CLIENT_IP_HEADER`` (last entry of a list) or REMOTE_ADDR."""
    header = get_setting("CLIENT_IP_HEADER") or "REMOTE_ADDR"
    value = request.META.get(header, "")
    candidate = value.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def record_click(request: HttpRequest, token: ClickToken, occurred_at: dt.datetime) -> int:
    """Record a click on a tracked link; return how many events were stored."""
    targets = _targets(token.delivery, token.group, "track_clicks")
    if not targets:
        return 0
    verdict = classify.classify(_hit(request, classify.CLICK, targets, occurred_at))
    burst = None if verdict.is_machine else _link_burst(targets[0], token.url, occurred_at)
    verdict = burst or verdict
    verdict = classify.Verdict(verdict.is_machine, {"url": token.url, **verdict.details})
    stored = _record(
        request, targets, st.CLICKED, EventSource.CLICK, occurred_at, verdict, token.group
    )
    if burst is not None:
        # The burst's earlier clicks were recorded as a person's: they were not.
        since = occurred_at - dt.timedelta(seconds=classify.LINK_BURST_SECONDS)
        for target in targets:
            earlier = (
                DeliveryEvent.objects.using(write_db())
                .filter(
                    delivery_id=target["pk"],
                    kind=st.CLICKED,
                    is_machine=False,
                    occurred_at__range=(since, occurred_at),
                )
                .values_list("pk", flat=True)
            )
            revise_as_machine(target["pk"], earlier, "link_burst")
    return stored


def record_download(
    request: HttpRequest, token: DownloadToken, attachment: Attachment, occurred_at: dt.datetime
) -> int:
    """Record a tracked download of ``attachment``; return how many events were stored."""
    targets = _targets(token.delivery, token.group, "track_clicks")
    if not targets:
        return 0
    verdict = classify.classify(_hit(request, classify.DOWNLOAD, targets, occurred_at))
    file = {"attachment_id": attachment.pk, "filename": attachment.filename}
    verdict = classify.Verdict(verdict.is_machine, {**file, **verdict.details})
    return _record(
        request, targets, st.DOWNLOAD, EventSource.DOWNLOAD, occurred_at, verdict, token.group
    )


def _targets(delivery_token: uuid.UUID, group: bool, flag: str) -> list[dict[str, Any]]:
    """The deliveries an event is recorded on, those whose tracking ``flag`` is on."""
    targets = targets_by_token({delivery_token}, flag).get(delivery_token, [])
    if targets and group:
        return group_targets(targets[0], flag)
    return targets


def targets_by_token(tokens: set[uuid.UUID], flag: str) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """For each token, its delivery (a list of one) when its tracking ``flag`` is on.

    One query for all the tokens. An anonymised delivery (past its retention) records
    nothing more: a reader opening an old email must not bring a user agent or an
    address back into it.
    """
    # From the primary, as all that decides what is recorded: a delivery sent a moment
    # ago (its sent_at: too soon after sending?) may not be on a replica yet.
    current = Delivery.objects.using(write_db()).exclude(recipient__startswith=PLACEHOLDER_PREFIX)
    rows = current.filter(token__in=tokens).values("token", *_TARGET_FIELDS)
    return {row.pop("token"): [row] for row in rows if row[flag]}


def group_targets(lead: dict[str, Any], flag: str) -> list[dict[str, Any]]:
    """Every sent delivery of ``lead``'s notification and channel: one shared email."""
    rows = (
        Delivery.objects.using(write_db())
        .exclude(recipient__startswith=PLACEHOLDER_PREFIX)
        .filter(
            notification_id=lead["notification_id"],
            channel=lead["channel"],
            status__in=_SENT_STATUSES,
        )
        .order_by("pk")
        .values(*_TARGET_FIELDS)
    )
    return [row for row in rows if row[flag]]


def hit(
    action: str,
    method: str,
    user_agent: str,
    ip_address: str | None,
    targets: list[dict[str, Any]],
    occurred_at: dt.datetime,
) -> classify.Hit:
    """What the classifier looks at, for a hit on these deliveries."""
    sent = [row["sent_at"] for row in targets if row["sent_at"] is not None]
    return classify.Hit(
        action=action,
        method=method,
        user_agent=user_agent,
        ip_address=ip_address,
        occurred_at=occurred_at,
        sent_at=min(sent) if sent else None,
    )


def _hit(
    request: HttpRequest, action: str, targets: list[dict[str, Any]], occurred_at: dt.datetime
) -> classify.Hit:
    user_agent = request.META.get("HTTP_USER_AGENT", "")
    return hit(
        action, request.method or "GET", user_agent, client_ip(request), targets, occurred_at
    )


def event_details(verdict: classify.Verdict, group: bool, recipients: int) -> dict[str, Any]:
    """The details stored with each event of one hit."""
    if group:
        return {**verdict.details, "shared_email": True, "recipients": recipients}
    return dict(verdict.details)


def _link_burst(
    target: dict[str, Any], url: str, occurred_at: dt.datetime
) -> classify.Verdict | None:
    """A machine verdict when this click completes clicks on every link within a second."""
    since = occurred_at - dt.timedelta(seconds=classify.LINK_BURST_SECONDS)
    # The clicks of the second before this one, not after it: a click stamped later (an
    # ESP whose clock is ahead) must not make this one look like the end of a burst.
    # The burst's clicks were committed a moment ago: a replica may not show them yet.
    recent = (
        DeliveryEvent.objects.using(write_db())
        .filter(delivery_id=target["pk"], kind=st.CLICKED, occurred_at__range=(since, occurred_at))
        .values_list("details", flat=True)
    )
    clicked = {details.get("url") for details in recent if isinstance(details, dict)}
    if not clicked - {url, None}:
        return None  # no other link clicked within the window: no burst
    html = (
        Notification.objects.using(write_db())
        .filter(pk=target["notification_id"])
        .values_list("html", flat=True)
    )
    links = {
        browser_url(link.href) for link in scan(html.first() or "").links if is_trackable_link(link)
    }
    if len(links) >= 2 and links <= clicked | {url}:
        return classify.machine("link_burst", links=len(links))
    return None


def _record(
    request: HttpRequest,
    targets: list[dict[str, Any]],
    kind: str,
    source: str,
    occurred_at: dt.datetime,
    verdict: classify.Verdict,
    group: bool,
) -> int:
    """Record one event per target: the same time, verdict and details on each."""
    ip_address = client_ip(request) if get_setting("STORE_IP_ADDRESSES") else None
    details = event_details(verdict, group, len(targets))
    stored = record_events(
        [
            NewEvent(
                delivery_id=target["pk"],
                kind=kind,
                source=source,
                occurred_at=occurred_at,
                is_machine=verdict.is_machine,
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
                ip_address=ip_address,
                details=details,
            )
            for target in targets
        ]
    )
    return sum(event is not None for event in stored)
