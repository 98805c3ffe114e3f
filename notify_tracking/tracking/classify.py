"""Was an open or a click made by a person, or by a machine?

Every pixel load, click and download is classified before it is recorded. A machine
event is stored with ``is_machine=True`` and ``details["machine_reason"]``; by default
it does not move the delivery's status (``COUNT_MACHINE_OPENS``). The rules, first
match wins (docs/tracking.md explains each one and where it is wrong):

==========================  =========================================================
``head_request``            a HEAD request: browsers and mail clients send GET
``scanner_user_agent``      the user agent contains one of ``SCANNER_USER_AGENTS``
``no_user_agent``           no user agent at all: every mail client and browser sends one
``apple_mpp``               an open whose user agent is exactly ``Mozilla/5.0`` (Apple
                            Mail Privacy Protection's proxy), or that comes from one of
                            ``APPLE_PROXY_NETWORKS``
``bare_user_agent``         a click or download whose user agent is exactly ``Mozilla/5.0``
``too_soon_after_sending``  within ``SCANNER_WINDOW_SECONDS`` of sending
``link_burst``              (clicks, decided in :mod:`.recording`) every link of the
                            message clicked within :data:`LINK_BURST_SECONDS`
==========================  =========================================================

An open through Gmail's or Yahoo's image proxy is a person's: those proxies fetch
the image when the message is displayed. But they cache it, so later opens by the
same person may never reach us; ``details`` says so.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ..conf import get_setting
from .networks import NetworkSet, parse_networks

logger = logging.getLogger(__name__)

OPEN = "open"
CLICK = "click"
DOWNLOAD = "download"

#: The whole user agent of Apple's Mail Privacy Protection proxy.
APPLE_PROXY_USER_AGENT = "Mozilla/5.0"
#: Clicks on every link of a message within this many seconds: a link scanner.
LINK_BURST_SECONDS = 1.0
#: Default of the ``SCANNER_USER_AGENTS`` setting: user-agent fragments (compared
#: without regard to case) of link scanners, crawlers, link previews and HTTP libraries.
#: Only fragments no mail client or browser of a person sends.
SCANNER_USER_AGENTS = (
    "Barracuda",
    "Mimecast",
    "Proofpoint",
    "Symantec",
    "Forcepoint",
    "Microsoft Office Existence Discovery",
    "BingPreview",
    "Googlebot",
    "bingbot",
    "Slackbot",
    "Twitterbot",
    "facebookexternalhit",
    "LinkedInBot",
    "Discordbot",
    "TelegramBot",
    "WhatsApp",
    "HeadlessChrome",
    "PhantomJS",
    "python-requests",
    "python-urllib",
    "curl/",
    "Wget/",
    "Go-http-client",
    "libwww-perl",
    "Java/",
    "Scrapy",
    "crawler",
    "spider",
)
#: Image proxies of webmail services: user-agent marker -> our name for it.
IMAGE_PROXIES = {"googleimageproxy": "google", "yahoomailproxy": "yahoo"}


@dataclass(frozen=True)
class Hit:
    """One request to a tracking URL, as the classifier sees it."""

    action: str  # OPEN, CLICK or DOWNLOAD
    method: str
    user_agent: str
    ip_address: str | None
    occurred_at: dt.datetime
    sent_at: dt.datetime | None


@dataclass(frozen=True)
class Verdict:
    is_machine: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return self.details.get("machine_reason", "")


def machine(reason: str, **extra: Any) -> Verdict:
    """A machine verdict with its reason (and any evidence) for the event's details."""
    return Verdict(True, {"machine_reason": reason, **extra})


def classify(hit: Hit) -> Verdict:
    """Whether ``hit`` was made by a machine, and why; see the module docstring."""
    if hit.method == "HEAD":
        return machine("head_request")
    user_agent = hit.user_agent.strip()
    scanner = _scanner_marker(user_agent)
    if scanner:
        return machine("scanner_user_agent", scanner=scanner)
    if not user_agent:
        return machine("no_user_agent")
    if user_agent == APPLE_PROXY_USER_AGENT:
        return machine("apple_mpp" if hit.action == OPEN else "bare_user_agent")
    # Safari users of iCloud Private Relay click from the same networks: opens only.
    if hit.action == OPEN and hit.ip_address and hit.ip_address in apple_networks():
        return machine("apple_mpp", matched="network")
    delay = _seconds_after_sending(hit)
    if delay is not None and delay < get_setting("SCANNER_WINDOW_SECONDS"):
        return machine("too_soon_after_sending", seconds_after_sending=round(delay, 3))
    proxy = _image_proxy(user_agent)
    if proxy:
        return Verdict(False, {"image_proxy": proxy, "later_opens_may_be_cached": True})
    return Verdict(False)


def _scanner_marker(user_agent: str) -> str:
    lowered = user_agent.lower()
    markers = get_setting("SCANNER_USER_AGENTS")
    for marker in SCANNER_USER_AGENTS if markers is None else markers:
        if marker.lower() in lowered:
            return marker
    return ""


def _image_proxy(user_agent: str) -> str:
    lowered = user_agent.lower()
    for marker, name in IMAGE_PROXIES.items():
        if marker in lowered:
            return name
    return ""


def _seconds_after_sending(hit: Hit) -> float | None:
    if hit.sent_at is None:
        return None
    return (hit.occurred_at - hit.sent_at).total_seconds()


_apple_networks: NetworkSet | None = None


def apple_networks() -> NetworkSet:
    """The networks of ``APPLE_PROXY_NETWORKS``, parsed once (and again when it changes).

    A list that cannot be read is logged and treated as empty: the pixel must answer
    anyway, and the system check names the problem at start.
    """
    global _apple_networks
    if _apple_networks is None:
        try:
            networks = parse_networks(get_setting("APPLE_PROXY_NETWORKS"))
        except ImproperlyConfigured:
            logger.exception("notify_tracking: APPLE_PROXY_NETWORKS is unusable; ignoring it")
            networks = []
        _apple_networks = NetworkSet(networks)
    return _apple_networks


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _apple_networks
    if setting == "NOTIFY_TRACKING":
        _apple_networks = None


setting_changed.connect(_reset)
