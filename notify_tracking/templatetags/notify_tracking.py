"""Template tags: ``{% load notify_tracking %}``.

- ``{% delivery_badge obj %}``: the status icon of ``obj`` with its popup rendered
  in the page (a summary query of its own: fine for one object on a page);
- ``{% delivery_badges_for objects as badges %}`` then ``{% delivery_badge obj badges %}``:
  a list; one aggregate query for 2 objects or 200, each badge is its icon alone and
  the popup loads its details when it is opened (docs/template-tags.md);
- ``{% delivery_badge_assets %}``: the stylesheet and the script, once per page;
- ``{% delivery_badge_png_url obj %}``: the absolute URL of a PNG badge, for emails.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template
from django.db import models
from django.template.base import FilterExpression, Parser, Token, token_kwargs
from django.template.exceptions import TemplateSyntaxError
from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from ..aggregate import SummaryMap, badge_states, summary
from ..presentation import BadgeIcons, render_badge

register = template.Library()


def _user_of(context: template.Context) -> Any:
    request = context.get("request")
    return getattr(request, "user", None) or context.get("user")


@register.simple_tag
def delivery_badges_for(targets: Iterable[models.Model]) -> SummaryMap:
    """What the badges of ``targets`` show (:func:`~notify_tracking.aggregate.badge_states`),
    for later ``{% delivery_badge obj badges %}`` calls."""
    return badge_states(targets)


def delivery_badge(
    context: template.Context, target: models.Model | None, badges: SummaryMap | None = None
) -> SafeString:
    """The badge of ``target``; empty when nothing is to be shown.

    Alone, the icon and its popup; with ``badges`` (from ``{% delivery_badges_for %}``
    or :func:`~notify_tracking.summaries`), the icon alone, whose popup loads when opened.
    """
    if target is None or getattr(target, "pk", None) is None:
        return mark_safe("")
    user = _user_of(context)
    if badges is None:
        return mark_safe(render_badge(target, summary(target), user))  # noqa: S308  (template output)
    try:
        found = badges.for_object(target)
    except KeyError:  # not in the list given to {% delivery_badges_for %}
        found = badge_states([target]).for_object(target)
    key = f"notify_tracking.BadgeIcons:{id(user)}"  # one per page and user
    icons = context.render_context.get(key)
    if icons is None:
        icons = context.render_context[key] = BadgeIcons(user)
    return mark_safe(icons.render(target, found))  # noqa: S308  (built with format_html)


class BadgeNode(template.Node):
    """``{% delivery_badge obj [badges] [as name] %}``, compiled once per template.

    A node of its own rather than a ``simple_tag``: a list page renders it once per
    row, and resolving its two arguments directly costs about a quarter less than the
    generic call (docs/performance.md, the badges).
    """

    def __init__(
        self,
        target: FilterExpression,
        badges: FilterExpression | None,
        name: str | None,
    ) -> None:
        self.target, self.badges, self.name = target, badges, name

    def render(self, context: template.Context) -> str:
        badges = None if self.badges is None else self.badges.resolve(context)
        html = delivery_badge(context, self.target.resolve(context), badges)
        if self.name is None:
            return html
        context[self.name] = html
        return ""


@register.tag("delivery_badge")
def _delivery_badge_tag(parser: Parser, token: Token) -> BadgeNode:
    """Parses what ``simple_tag`` did: ``obj``, ``obj badges`` or ``obj badges=badges``,
    optionally followed by ``as name``."""
    tag, *args = token.split_contents()
    name = None
    if len(args) >= 2 and args[-2] == "as":
        name = args[-1]
        args = args[:-2]
    badges = None
    if len(args) == 2 and "=" in args[1]:
        keyword = token_kwargs(args[1:], parser)
        if list(keyword) != ["badges"]:
            raise TemplateSyntaxError(f"'{tag}' takes no argument {args[1]!r}")
        badges = keyword["badges"]
        args = args[:1]
    elif len(args) == 2:
        badges = parser.compile_filter(args[1])
        args = args[:1]
    if len(args) != 1 or "=" in args[0]:
        raise TemplateSyntaxError(
            f"'{tag}' takes an object and, for a list, its badges: {{% {tag} obj %}} or "
            f"{{% {tag} obj badges %}}, optionally followed by 'as name'"
        )
    return BadgeNode(parser.compile_filter(args[0]), badges, name)


@register.simple_tag
def delivery_badge_assets() -> SafeString:
    """The ``<link>`` and ``<script>`` tags of the badge popup (no inline code: CSP-safe).

    The script's messages, translated, ride on its tag as ``data-nt-text-*`` attributes.
    """
    texts = {
        "loading": _("Loading the details…"),
        "load_error": _("The details could not be loaded. Try again later."),
        "unavailable": _("You may not see these details, or they no longer exist."),
        "retry": _("Try again"),
        "close": _("Close"),
    }
    return format_html(
        '<link rel="stylesheet" href="{}"><script src="{}" defer data-nt-texts '
        'data-nt-text-loading="{}" data-nt-text-load-error="{}" data-nt-text-unavailable="{}" '
        'data-nt-text-retry="{}" data-nt-text-close="{}"></script>',
        static("notify_tracking/badge.css"),
        static("notify_tracking/badge.js"),
        texts["loading"],
        texts["load_error"],
        texts["unavailable"],
        texts["retry"],
        texts["close"],
    )


@register.simple_tag(takes_context=True)
def delivery_badge_png_url(context: template.Context, target: models.Model) -> str:
    """The absolute, signed URL of ``target``'s PNG badge (see docs/template-tags.md)."""
    from ..badges import signed_png_url

    return signed_png_url(target, request=context.get("request"))
