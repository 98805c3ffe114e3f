"""Template tags: ``{% load notify_tracking %}``.

- ``{% delivery_badge obj %}``: the status icon of ``obj`` and its popup (a summary
  query of its own: fine for one object on a page);
- ``{% delivery_badges_for objects as badges %}`` then ``{% delivery_badge obj badges %}``:
  the same for a whole list, with the same three queries for 2 objects or 200;
- ``{% delivery_badge_assets %}``: the stylesheet and the script, once per page;
- ``{% delivery_badge_png_url obj %}``: the absolute URL of a PNG badge, for emails.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template
from django.db import models
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from ..aggregate import SummaryMap, summaries, summary
from ..presentation import render_badge

register = template.Library()


def _user_of(context: template.Context) -> Any:
    request = context.get("request")
    return getattr(request, "user", None) or context.get("user")


@register.simple_tag
def delivery_badges_for(targets: Iterable[models.Model]) -> SummaryMap:
    """The summaries of ``targets`` for later ``{% delivery_badge obj badges %}`` calls."""
    return summaries(targets)


@register.simple_tag(takes_context=True)
def delivery_badge(
    context: template.Context, target: models.Model | None, badges: SummaryMap | None = None
) -> SafeString:
    """The badge of ``target``: an icon button and its popup; empty when nothing to show."""
    if target is None or getattr(target, "pk", None) is None:
        return mark_safe("")
    found = badges.get(target) if badges is not None else None
    status = found if found is not None else summary(target)
    return mark_safe(render_badge(target, status, _user_of(context)))  # noqa: S308  (template output)


@register.simple_tag
def delivery_badge_assets() -> SafeString:
    """The ``<link>`` and ``<script>`` tags of the badge popup (no inline code: CSP-safe)."""
    return format_html(
        '<link rel="stylesheet" href="{}"><script src="{}" defer></script>',
        static("notify_tracking/badge.css"),
        static("notify_tracking/badge.js"),
    )


@register.simple_tag(takes_context=True)
def delivery_badge_png_url(context: template.Context, target: models.Model) -> str:
    """The absolute, signed URL of ``target``'s PNG badge (see docs/template-tags.md)."""
    from ..badges import signed_png_url

    return signed_png_url(target, request=context.get("request"))
