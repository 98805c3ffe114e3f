"""How a status is shown as an HTML badge: shared by the template tags and the fragment view.

Two forms, one look:

- the **full badge** (:func:`render_badge`, ``notify_tracking/badge.html``): the icon
  and its popup with every recipient's details, hidden next to it. ``{% delivery_badge
  obj %}`` renders it for one object, and the fragment view
  (:func:`notify_tracking.views.badge_fragment`) serves it to the popup script;
- the **icon** (:class:`BadgeIcons`): the icon button alone, what a list renders for
  each object. When it is opened, the script loads the full badge from the fragment
  view and puts it in its place; the popup's refresh button does the same again.

The icon is built here rather than by a template: a list renders hundreds of them,
and its markup repeats (one string per state, label and count on a page).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from urllib.parse import quote

from django.db import models
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.functional import LazyObject, empty
from django.utils.html import escape, format_html
from django.utils.translation import gettext as _

from .permissions import can_view, for_viewer, get_permission
from .targets import type_of

BADGE_TEMPLATE = "notify_tracking/badge.html"
#: The characters a URL path segment keeps as they are (what ``reverse()`` keeps).
_PATH_SAFE = "!$&'()*+,;=/~:@"
_PK_PLACEHOLDER = "0nt0pk0"


def icon_url(state: str) -> str:
    """The static URL of the SVG icon of a badge ``state``."""
    return static(f"notify_tracking/icons/{state}.svg")


def details_url(target: models.Model) -> str | None:
    """The URL of the full badge of ``target``; None when the app's urls are not mounted,
    or for a key no URL can carry (:func:`key_in_path`)."""
    pattern = _details_pattern(target)
    key = key_in_path(target.pk)
    if pattern is None or key is None:
        return None
    return f"{pattern[0]}{key}{pattern[1]}"


def key_in_path(pk: Any) -> str | None:
    """``pk`` as it goes in a URL path, quoted as ``reverse()`` quotes it; None for a
    key no URL path can carry.

    A text key keeps its "/" ("PROJ/123"; the routes take ``<path:pk>``), unless a
    client would rewrite the path around them: a "." or ".." segment (browsers resolve
    them, and would ask for another object) or an empty one. Then every "/" is sent as
    %2F, which the server decodes back. A key that is "." or ".." itself is always a
    dot segment, however it is written; an empty one cannot fill ``<path:pk>``.
    """
    if isinstance(pk, int | uuid.UUID):
        return str(pk)  # nothing to quote
    text = str(pk)
    segments = text.split("/")
    if len(segments) == 1:
        return None if text in ("", ".", "..") else quote(text, safe=_PATH_SAFE)
    if any(segment in ("", ".", "..") for segment in segments):
        return quote(text, safe=_PATH_SAFE.replace("/", ""))
    return quote(text, safe=_PATH_SAFE)


def _details_pattern(target: models.Model) -> tuple[str, str] | None:
    """The details URL of ``target``'s model, split where the key goes; None when the
    app's urls are not mounted."""
    try:
        url = reverse(
            "notify_tracking:status-badge",
            kwargs={"target_type": type_of(target), "pk": _PK_PLACEHOLDER},
        )
    except NoReverseMatch:
        return None
    start, _placeholder, end = url.rpartition(_PK_PLACEHOLDER)
    return start, end


#: The former name of :func:`details_url`.
refresh_url = details_url


def aria_label(label: str) -> str:
    """What a screen reader says for a badge's button."""
    return _("Notification status: %(label)s") % {"label": label}


def badge_classes(status: dict[str, Any]) -> str:
    """The classes of a badge: its state, and whether some recipients are behind or failed."""
    names = ["nt-badge", f"nt-badge--{status['state']}"]
    if not status["complete"]:
        names.append("nt-badge--partial")
    if status["errors"] and status["state"] != "error":
        names.append("nt-badge--has-errors")
    return " ".join(names)


def reached_count(status: dict[str, Any]) -> int:
    """How many recipients reached the badge's state (failed ones, for ``error``)."""
    state = status["state"]
    return status["errors"] if state == "error" else status["reached"][state]


def badge_context(target: models.Model, summary: dict[str, Any], user: Any) -> dict[str, Any]:
    """What ``notify_tracking/badge.html`` needs to show ``summary`` to ``user``."""
    shown = for_viewer(summary, user)
    return {
        "status": shown,
        "state": shown["state"],
        "classes": badge_classes(shown),
        "reached_count": reached_count(shown),
        "icon_url": icon_url(shown["state"]),
        "details_url": details_url(target),
        "refresh_url": details_url(target),
        "popup_id": f"nt-popup-{secrets.token_hex(6)}",
        "partial": not shown["complete"],
        "mixed_errors": bool(shown["errors"]) and shown["state"] != "error",
    }


def render_badge(target: models.Model, summary: dict[str, Any], user: Any) -> str:
    """The full badge HTML of ``target`` for ``user`` (icon and popup); empty when nothing
    is to be shown.

    Nothing is shown for a target never notified, or one whose status ``user`` may not
    see (the ``PERMISSION`` setting).
    """
    if summary["state"] is None or not can_view(user, target, summary):
        return ""
    return render_to_string(BADGE_TEMPLATE, badge_context(target, summary, user))


class BadgeIcons:
    """Renders the icon-only badges one user sees on a page, from
    :func:`~notify_tracking.aggregate.badge_states`.

    Keep one per page and user (the template tag keeps it in the template's render
    context): it remembers the markup of each label and counts (a label is in one
    language) and the URL pattern of each model, so that a badge costs a permission
    check, two dict look-ups and a string join.
    """

    def __init__(self, user: Any) -> None:
        self._user = _unwrapped(user)
        self._markup: dict[tuple, tuple[str, str]] = {}
        self._urls: dict[type[models.Model], tuple[str, str] | None] = {}
        self._permission = get_permission()  # what can_view() asks, looked up once

    def render(self, target: models.Model, status: dict[str, Any]) -> str:
        """The icon badge of ``target``; empty when nothing is to be shown to the user."""
        state = status["state"]
        if state is None or not self._permission(self._user, target, status):
            return ""
        key = (
            status["label"],
            state,
            status["complete"],
            status["total"],
            status["errors"],
            status["reached"].get(state),
        )
        markup = self._markup.get(key)
        if markup is None:
            markup = self._markup[key] = self._build(status)
        return f"{markup[0]}{self._url_attribute(target)}{markup[1]}"

    @staticmethod
    def _build(status: dict[str, Any]) -> tuple[str, str]:
        before = format_html(
            '<span class="{}" data-nt-badge data-nt-state="{}" data-nt-total="{}" '
            'data-nt-count="{}" data-nt-errors="{}"',
            badge_classes(status),
            status["state"],
            status["total"],
            reached_count(status),
            status["errors"],
        )
        after = format_html(
            '><button type="button" class="nt-badge__button" aria-haspopup="dialog" '
            'aria-expanded="false" aria-label="{}" title="{}" data-nt-toggle>'
            '<img class="nt-badge__icon" src="{}" alt="" width="16" height="16"></button></span>',
            aria_label(status["label"]),
            status["label"],
            icon_url(status["state"]),
        )
        return str(before), str(after)

    def _url_attribute(self, target: models.Model) -> str:
        """`` data-nt-url="..."``: where the script loads the full badge from."""
        model = type(target)
        if model not in self._urls:
            pattern = _details_pattern(target)
            self._urls[model] = pattern and (escape(pattern[0]), escape(pattern[1]))
        pattern = self._urls[model]
        key = key_in_path(target.pk)
        if pattern is None or key is None:
            return ""
        if not isinstance(target.pk, int | uuid.UUID):
            key = escape(key)  # an int or a UUID has nothing to escape
        return f' data-nt-url="{pattern[0]}{key}{pattern[1]}"'


def _unwrapped(user: Any) -> Any:
    """``request.user`` without its lazy wrapper: the permission reads a few attributes
    of it for each badge, and each read through the wrapper costs more than the check."""
    if isinstance(user, LazyObject):
        if user._wrapped is empty:
            user._setup()
        return user._wrapped
    return user
