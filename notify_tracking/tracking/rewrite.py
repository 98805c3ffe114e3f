"""The tracked form of a message: open pixel, tracked links, download links.

:func:`tracked_content` is what the email channel asks for. The HTML part is changed
in exactly three ways, every other character kept as it was:

- the ``href`` value of each trackable link is replaced by a click URL that signs the
  delivery and the original URL (:func:`is_trackable_link` says which links);
- the list of download links, when attachments go as tracked downloads, and
- a 1x1 transparent GIF (the open pixel) are inserted at the end of the body:
  before ``</body>``, else before ``</html>``, else at the very end.

A text-only message gets no pixel (its opens cannot be tracked) and its links stay
as they are; download links are appended to the text part in any case.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.urls import Resolver404, resolve
from django.utils import translation
from django.utils.translation import get_language_from_path
from django.utils.translation import gettext as _

from ..conf import base_has_script_prefix, without_script_prefix
from . import tokens
from .markup import Link, replace_spans, scan
from .policy import (
    all_allow,
    base_url,
    clicks_trackable,
    downloads_tracked,
    opens_trackable,
    tracking_url,
)

if TYPE_CHECKING:
    from ..models import Attachment, Delivery, Notification

logger = logging.getLogger(__name__)

#: Mark a link with this attribute to keep it out of click tracking.
NO_TRACK_ATTRIBUTE = "data-notify-no-track"
TRACKED_SCHEMES = ("http", "https")
PIXEL_HTML = (
    '<img src="{url}" width="1" height="1" alt="" border="0"'
    ' style="width:1px;height:1px;border:0;margin:0;padding:0;" />'
)
TRACKING_URL_NAMES = ("open", "click", "download")
_TAB_OR_NEWLINE = re.compile(r"[\t\n\r]")
_CONTROL_ENDS = re.compile(r"^[\x00-\x20]+|[\x00-\x20]+$")


@dataclass(frozen=True)
class TrackedContent:
    """The bodies of a message as sent, and the files to attach to it."""

    text: str
    html: str
    attachments: list[Attachment] = field(default_factory=list)
    #: Attachments sent as tracked download links instead: (attachment, URL).
    download_links: list[tuple[Attachment, str]] = field(default_factory=list)
    has_pixel: bool = False


def tracked_content(
    notification: Notification,
    deliveries: Sequence[Delivery],
    *,
    group: bool = False,
    skip_urls: Iterable[str] = (),
) -> TrackedContent:
    """The tracked text and HTML of ``notification`` for ``deliveries``.

    One delivery normally; with ``group`` the deliveries of one shared email, whose
    tokens then stand for all of them, and which is tracked only if every one of
    them allows it. ``skip_urls`` (e.g. the List-Unsubscribe URLs) are never tracked.
    """
    lead = deliveries[0]
    attachments = list(notification.attachments.all())
    downloads = []
    if attachments and all_allow(downloads_tracked, deliveries):
        downloads = [
            (item, tracking_url("download", tokens.sign_download(lead.token, item.pk, group=group)))
            for item in attachments
        ]
        attachments = []
    text = notification.text + _downloads_text(downloads)
    html = notification.html
    pixel = bool(html) and all_allow(opens_trackable, deliveries)
    if html:
        html = rewrite_html(
            html,
            delivery_token=lead.token,
            group=group,
            pixel=pixel,
            links=all_allow(clicks_trackable, deliveries),
            append_html=_downloads_html(downloads),
            skip_urls=skip_urls,
        )
    return TrackedContent(text, html, attachments, downloads, pixel)


def rewrite_html(
    html: str,
    *,
    delivery_token: uuid.UUID,
    group: bool = False,
    pixel: bool = True,
    links: bool = True,
    append_html: str = "",
    skip_urls: Iterable[str] = (),
) -> str:
    """``html`` with tracked links, ``append_html`` and the open pixel, as asked."""
    document = scan(html)
    skip = {url.strip() for url in skip_urls}
    replacements = []
    if links:
        for link in document.links:
            url = browser_url(link.href)
            if url in skip or not is_trackable_link(link):
                continue
            token = tokens.sign_click(delivery_token, url, group=group)
            if len(token) > tokens.MAX_TOKEN_LENGTH:
                logger.warning("notify_tracking: a link too long to track was left as it is")
                continue
            replacements.append((link.start, link.end, escape(tracking_url("click", token))))
    ending = append_html
    if pixel:
        open_token = tokens.sign_open(delivery_token, group=group)
        ending += PIXEL_HTML.format(url=escape(tracking_url("open", open_token)))
    if ending:
        replacements.append((document.body_end, document.body_end, ending))
    return replace_spans(html, replacements)


def browser_url(href: str) -> str:
    """The URL a browser follows for ``href``: tabs and line breaks dropped, ends trimmed.

    (The WHATWG URL parser does the same, so the redirect goes where the link went.)
    """
    return _CONTROL_ENDS.sub("", _TAB_OR_NEWLINE.sub("", href))


def is_trackable_link(link: Link) -> bool:
    """Whether a link is rewritten to a tracked one.

    Only absolute ``http``/``https`` links; never ``mailto:``, ``tel:``, ``#anchors``
    or relative links, links marked ``data-notify-no-track``, unsubscribe links (a
    scanner following one must not unsubscribe anyone, and a person unsubscribing
    is not to be tracked), or links that already point at our tracking endpoints.
    """
    if NO_TRACK_ATTRIBUTE in link.attributes:
        return False
    url = browser_url(link.href)
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme.lower() not in TRACKED_SCHEMES or not parts.netloc:
        return False
    if "unsubscribe" in url.lower():
        return False
    return not _is_tracking_url(url)


def _is_tracking_url(url: str) -> bool:
    """Whether ``url`` is one of the app's own tracking links (made by
    :func:`~.policy.tracking_url`: ``BASE_URL``, the script prefix unless ``BASE_URL``
    ends with it, then the path that the URLconf resolves)."""
    base = base_url()
    if not base or not url.startswith(base):
        return False
    path = urlsplit(url[len(base) :]).path
    if not base_has_script_prefix(base):
        path = without_script_prefix(path)
    try:
        match = resolve(path)
    except Resolver404:
        # Under i18n_patterns only the active language's prefix resolves: a link made
        # while another language was active carries that one.
        language = get_language_from_path(path)
        if language is None:
            return False
        try:
            with translation.override(language):
                match = resolve(path)
        except Resolver404:
            return False
    # The app's namespace, whatever instance name the project included it under.
    return "notify_tracking" in match.app_names and match.url_name in TRACKING_URL_NAMES


def _downloads_text(downloads: list[tuple[Attachment, str]]) -> str:
    if not downloads:
        return ""
    lines = [f"- {item.filename}: {url}" for item, url in downloads]
    return "\n\n" + _("Files:") + "\n" + "\n".join(lines) + "\n"


def _downloads_html(downloads: list[tuple[Attachment, str]]) -> str:
    if not downloads:
        return ""
    items = "".join(
        f'<li><a href="{escape(url)}" {NO_TRACK_ATTRIBUTE}>{escape(item.filename)}</a></li>'
        for item, url in downloads
    )
    return f"<div><p>{escape(_('Files:'))}</p><ul>{items}</ul></div>"
