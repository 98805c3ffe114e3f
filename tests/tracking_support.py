"""Helpers of the tracking tests (tests/test_tracking_*.py)."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

from django.core import mail
from django.utils import timezone

from notify_tracking import notify, record_event
from notify_tracking.models import Delivery

BASE = "http://testserver"
HTML = (
    "<html><head><title>Task</title></head><body>\n"
    '<p>Alice commented on <a href="https://tracker.example.com/tasks/1">Fix the login page</a>.'
    "</p>\n</body></html>"
)


def send(capture, target, recipients, **kwargs) -> list:
    """notify() and run the send as the commit would; return the emails sent by it."""
    kwargs.setdefault("subject", "New comment")
    kwargs.setdefault("text", "Alice commented on Fix the login page.")
    before = len(mail.outbox)
    with capture(execute=True):
        notify(target, recipients, **kwargs)
    return mail.outbox[before:]


def queued(target, recipients, **kwargs) -> list[Delivery]:
    """notify() without sending: the deliveries stay queued."""
    kwargs.setdefault("subject", "New comment")
    kwargs.setdefault("text", "Alice commented on Fix the login page.")
    notification = notify(target, recipients, **kwargs)
    return list(notification.deliveries.order_by("pk"))


def mark_sent(delivery: Delivery, seconds_ago: float = 120) -> Delivery:
    """Record that ``delivery`` was sent a while ago (past the scanner window)."""
    at = timezone.now() - dt.timedelta(seconds=seconds_ago)
    record_event(delivery, "sent", source="channel", occurred_at=at)
    delivery.refresh_from_db()
    return delivery


def html_of(message) -> str:
    for content, mimetype in message.alternatives:
        if mimetype == "text/html":
            return content
    raise AssertionError("the message has no HTML part")


def pixel_urls(html: str) -> list[str]:
    return [unescape(url) for url in re.findall(r'<img src="([^"]+/notify/open/[^"]+)"', html)]


def click_urls(html: str) -> list[str]:
    found = re.findall(
        r"""href\s*=\s*["']?(http://testserver/notify/click/[^"'\s>]+)""", html, re.IGNORECASE
    )
    return [unescape(url) for url in found]


def download_urls(text: str) -> list[str]:
    return re.findall(r"(http://testserver/notify/download/\S+/)", text)


def path(url: str) -> str:
    """The path of one of our absolute tracking URLs, for the test client."""
    assert url.startswith(BASE), url
    return url[len(BASE) :]
