"""Badge views: the HTML fragment the popup's refresh button loads, and the PNG badge.

Both only read. The fragment answers 404 when the target does not exist or the user
may not see its status (the ``PERMISSION`` setting), so it never tells which.
"""

from __future__ import annotations

from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from .aggregate import summary
from .badges import read_png_token, render_png
from .permissions import can_view
from .presentation import render_badge
from .targets import BadTarget, fetch, model_of, parse_pk


@require_safe
def badge_fragment(request: HttpRequest, target_type: str, pk: str) -> HttpResponse:
    """The badge HTML of one target, as ``{% delivery_badge %}`` renders it."""
    try:
        found = fetch([parse_pk(model_of(target_type), pk)])
    except BadTarget:
        raise Http404("no such target") from None
    if not found:
        raise Http404("no such target")
    target = found[0]
    status = summary(target)
    if not can_view(request.user, target, status):
        raise Http404("no such target")
    response = HttpResponse(render_badge(target, status, request.user))
    patch_cache_control(response, private=True, no_cache=True)
    return response


@require_safe
def badge_png(request: HttpRequest, token: str) -> HttpResponse:
    """The PNG badge of the target a signed token names (see :mod:`notify_tracking.badges`)."""
    try:
        model, pk, language = read_png_token(token)
        found = fetch([(model, pk)])
    except (signing.BadSignature, BadTarget, KeyError, TypeError):
        raise Http404("invalid badge token") from None
    if not found:
        raise Http404("no such target")
    with translation.override(language):
        status = summary(found[0])
    response = HttpResponse(render_png(status["state"], status["label"]), content_type="image/png")
    patch_cache_control(response, private=True, max_age=60)
    return response
