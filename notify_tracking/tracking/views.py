"""The tracking endpoints: open pixel, tracked link, tracked download.

Each verifies its token before anything else (no query for a forged one), records
through :mod:`.recording` (which ends in ``record_events``), and answers whatever
happened while recording: a failure is logged, never turned into a 500.

- ``open``: always 200 and the same 1x1 transparent GIF, uncacheable. GET keeps the
  open for the task that records it (:mod:`.pending`: one INSERT); HEAD records nothing.
- ``click``: 302 to exactly the URL the token signs; a bad token is a 404 and never
  a redirect. GET and HEAD are recorded (HEAD as a machine click).
- ``download``: the file, as an attachment; a bad token or a missing file is a 404.

These views are the only GETs of the app that change state: that is their purpose.
They run outside ``ATOMIC_REQUESTS`` so that a failed recording cannot break the
answer, and without a login under ``LoginRequiredMiddleware``: a recipient's mail
client has none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseNotFound,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.utils.translation import gettext as _

from ..compat import login_not_required
from ..models import Attachment
from . import pending, recording, tokens
from .rewrite import TRACKED_SCHEMES

logger = logging.getLogger(__name__)

#: A 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Robots-Tag": "noindex",
}
_SAFE_METHODS = ("GET", "HEAD")


def pixel_response() -> HttpResponse:
    """The pixel's answer: the GIF and headers that forbid caching it."""
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    for name, value in NO_CACHE_HEADERS.items():
        response.headers[name] = value
    response.headers["Content-Length"] = str(len(PIXEL_GIF))
    return response


def _record_safely(what: str, record: Callable[..., Any], *args: Any) -> None:
    try:
        record(*args)
    except Exception:
        logger.exception("notify_tracking: could not record a %s", what)


def _not_found() -> HttpResponse:
    response = HttpResponseNotFound(
        _("This link is not valid."), content_type="text/plain; charset=utf-8"
    )
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _redirectable(url: str) -> bool:
    """Whether ``url`` can go in a Location header: an absolute http(s) URL that parses,
    without control characters.

    We only ever sign such URLs (``rewrite.is_trackable_link``); this is the second lock
    on the door, and it keeps a malformed one (``http://[``) from becoming a 500.
    """
    if any(ord(char) < 0x20 or char == "\x7f" for char in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in TRACKED_SCHEMES and bool(parts.netloc)


@login_not_required
@transaction.non_atomic_requests
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """The open pixel: record a GET as an open of its delivery, answer the GIF."""
    if request.method not in _SAFE_METHODS:
        return HttpResponseNotAllowed(_SAFE_METHODS)
    if request.method == "GET":
        occurred_at = timezone.now()
        try:
            parsed = tokens.read_open(token)
        except tokens.InvalidToken as error:
            logger.info("notify_tracking: pixel with an invalid token (%s)", error)
        else:
            _record_safely("pixel open", pending.add_open, request, parsed, occurred_at)
    return pixel_response()


@login_not_required
@transaction.non_atomic_requests
def click(request: HttpRequest, token: str) -> HttpResponse:
    """A tracked link: record the click, redirect to the signed URL."""
    if request.method not in _SAFE_METHODS:
        return HttpResponseNotAllowed(_SAFE_METHODS)
    occurred_at = timezone.now()
    try:
        parsed = tokens.read_click(token)
    except tokens.InvalidToken as error:
        logger.info("notify_tracking: link with an invalid token (%s)", error)
        return _not_found()
    if not _redirectable(parsed.url):
        logger.warning("notify_tracking: a signed link to an unusable URL was refused")
        return _not_found()
    _record_safely("click", recording.record_click, request, parsed, occurred_at)
    response = HttpResponseRedirect(parsed.url)
    response.headers["Cache-Control"] = NO_CACHE_HEADERS["Cache-Control"]
    response.headers["X-Robots-Tag"] = "noindex"
    # The target site does not need to see the tracking URL (and its token).
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@login_not_required
@transaction.non_atomic_requests
def download(request: HttpRequest, token: str) -> HttpResponseBase:
    """A tracked download: record it, then serve the file as an attachment."""
    if request.method not in _SAFE_METHODS:
        return HttpResponseNotAllowed(_SAFE_METHODS)
    occurred_at = timezone.now()
    try:
        parsed = tokens.read_download(token)
    except tokens.InvalidToken as error:
        logger.info("notify_tracking: download with an invalid token (%s)", error)
        return _not_found()
    attachment = Attachment.objects.filter(
        pk=parsed.attachment_id, notification__deliveries__token=parsed.delivery
    ).first()
    if attachment is None:
        return _not_found()
    try:
        file = attachment.file.open("rb")
    except (OSError, ValueError):  # missing from storage, or no file at all
        logger.exception("notify_tracking: attachment %s has no readable file", attachment.pk)
        return _not_found()
    _record_safely("download", recording.record_download, request, parsed, attachment, occurred_at)
    response = FileResponse(
        file,
        as_attachment=True,
        filename=attachment.filename,
        content_type=attachment.mimetype or None,
    )
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
