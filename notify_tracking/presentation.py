"""How a summary is shown as an HTML badge: shared by the template tag and the fragment view.

The popup is rendered inline, hidden, next to the icon: opening it needs no request.
Its refresh button asks :func:`notify_tracking.views.badge_fragment` for the same HTML
again, so there is one renderer (this template) and one permission rule.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db import models
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse

from .permissions import can_view, for_viewer
from .targets import type_of

BADGE_TEMPLATE = "notify_tracking/badge.html"


def icon_url(state: str) -> str:
    """The static URL of the SVG icon of a badge ``state``."""
    return static(f"notify_tracking/icons/{state}.svg")


def refresh_url(target: models.Model) -> str | None:
    """The URL of the badge fragment of ``target``; None when the app's urls are not mounted."""
    try:
        return reverse(
            "notify_tracking:status-badge",
            kwargs={"target_type": type_of(target), "pk": str(target.pk)},
        )
    except NoReverseMatch:
        return None


def badge_context(target: models.Model, summary: dict[str, Any], user: Any) -> dict[str, Any]:
    """What ``notify_tracking/badge.html`` needs to show ``summary`` to ``user``."""
    shown = for_viewer(summary, user)
    return {
        "status": shown,
        "state": shown["state"],
        "icon_url": icon_url(shown["state"]),
        "refresh_url": refresh_url(target),
        "popup_id": f"nt-popup-{secrets.token_hex(6)}",
        "partial": not shown["complete"],
        "mixed_errors": bool(shown["errors"]) and shown["state"] != "error",
    }


def render_badge(target: models.Model, summary: dict[str, Any], user: Any) -> str:
    """The badge HTML of ``target`` for ``user``; empty when nothing is to be shown.

    Nothing is shown for a target never notified, or one whose status ``user`` may not
    see (the ``PERMISSION`` setting).
    """
    if summary["state"] is None or not can_view(user, target, summary):
        return ""
    return render_to_string(BADGE_TEMPLATE, badge_context(target, summary, user))
