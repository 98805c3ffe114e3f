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
from django.template.base import FilterExpression, Parser, Token
from django.template.library import parse_bits
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
    row, and calling the function directly costs about a seventh less than the
    generic call (1.37 against 1.59 ms for 200 badges; docs/performance.md, the badges).
    """

    def __init__(
        self, args: list[FilterExpression], kwargs: dict[str, FilterExpression], name: str | None
    ) -> None:
        self.args, self.kwargs, self.name = args, kwargs, name

    def render(self, context: template.Context) -> str:
        html = delivery_badge(
            context,
            *[arg.resolve(context) for arg in self.args],
            **{key: value.resolve(context) for key, value in self.kwargs.items()},
        )
        if self.name is None:
            return html
        context[self.name] = html
        return ""


@register.tag("delivery_badge")
def _delivery_badge_tag(parser: Parser, token: Token) -> BadgeNode:
    """Parses as ``simple_tag`` did (Django's own ``parse_bits``): ``obj`` and ``badges``
    by position or by name, optionally followed by ``as name``."""
    bits = token.split_contents()[1:]
    name = None
    if len(bits) >= 2 and bits[-2] == "as":
        name = bits[-1]
        bits = bits[:-2]
    # parse_bits(parser, bits, params, varargs, varkw, defaults, kwonly, kwonly_defaults,
    # takes_context, name): django-stubs lacks takes_context, which Django has had since 1.9.
    params = ["context", "target", "badges"]
    args, kwargs = parse_bits(  # type: ignore[call-arg]
        parser, bits, params, None, None, (None,), [], None, True, "delivery_badge"  # type: ignore[arg-type]
    )  # fmt: skip
    return BadgeNode(args, kwargs, name)


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
