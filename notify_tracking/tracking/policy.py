"""What can be tracked for a delivery, and the absolute URLs of the tracking endpoints.

Opens are tracked only through the pixel, so only for an email with an HTML part,
whose delivery allows it (``Delivery.track_opens``: the setting, the notification
and the recipient's preference all agree), and when ``BASE_URL`` says where the
pixel lives. :func:`opens_trackable` answers the popup's question "could we ever
know whether this was read?".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from ..conf import absolute_url, get_channel, get_setting

if TYPE_CHECKING:
    from ..models import Delivery


def base_url() -> str | None:
    """``BASE_URL`` without its trailing slash, or None when tracking links are off."""
    value = get_setting("BASE_URL")
    return value.rstrip("/") if value else None


def tracking_url(name: str, token: str) -> str:
    """The absolute URL of the tracking endpoint ``name`` (open, click, download)."""
    url = absolute_url(reverse(f"notify_tracking:{name}", kwargs={"token": token}))
    assert url is not None, "tracking URLs are made only with BASE_URL set"
    return url


def _is_email(delivery: Delivery) -> bool:
    from ..channels.email import EmailChannel

    try:
        return isinstance(get_channel(delivery.channel), EmailChannel)
    except ImproperlyConfigured:  # an unconfigured channel cannot carry a pixel either
        return False


def opens_trackable(delivery: Delivery) -> bool:
    """Whether an open of this delivery can ever be seen (a pixel is or was in it).

    False for text-only emails, other channels, deliveries whose tracking is off,
    and when ``BASE_URL`` is not set.
    """
    return bool(
        delivery.track_opens and base_url() and delivery.notification.html and _is_email(delivery)
    )


def clicks_trackable(delivery: Delivery) -> bool:
    """Whether the links of this delivery's HTML part are rewritten to tracked links."""
    return bool(
        delivery.track_clicks and base_url() and delivery.notification.html and _is_email(delivery)
    )


def downloads_tracked(delivery: Delivery) -> bool:
    """Whether this delivery's attachments go as tracked download links.

    Downloads count as clicks, so a recipient who refused tracking gets the files
    attached, as when ``TRACK_DOWNLOADS`` is off.
    """
    return bool(
        get_setting("TRACK_DOWNLOADS")
        and delivery.track_clicks
        and base_url()
        and _is_email(delivery)
    )


def all_allow(check, deliveries: Iterable[Delivery]) -> bool:
    """Whether ``check`` holds for every delivery (a shared email tracks all or none)."""
    deliveries = list(deliveries)
    return bool(deliveries) and all(check(delivery) for delivery in deliveries)
