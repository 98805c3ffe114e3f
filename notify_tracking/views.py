"""Badge views: the HTML fragment the popup's refresh button loads, and the PNG badge.

Both only read. The fragment answers 404 when the target does not exist or the user
may not see its status (the ``PERMISSION`` setting), so it never tells which.
"""

from __future__ import annotations

from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from .aggregate import summary
from .badges import read_png_token, render_png
from .compat import login_not_required
from .permissions import can_view
from .presentation import render_badge
from .targets import BadTarget, fetch, model_of, parse_pk


@require_safe
def badge_fragment(request: HttpRequest, target_type: str, pk: str) -> HttpResponse:
    """The badge HTML of one target, as ``{% delivery_badge %}`` renders it."""
    try:
        found = fetch([parse_pk(model_of(target_type), pk)])
    except BadTarget:
        found = []
    if not found:
        return _private(HttpResponseNotFound())
    status = summary(found[0])
    if not can_view(request.user, found[0], status):
        return _private(HttpResponseNotFound())
    return _private(HttpResponse(render_badge(found[0], status, request.user)))


@login_not_required  # loaded by mail clients, as the pixel is
@require_safe
def badge_png(request: HttpRequest, token: str) -> HttpResponse:
    """The PNG badge of the target a signed token names (see :mod:`notify_tracking.badges`)."""
    try:
        model, pk, language = read_png_token(token)
        found = fetch([(model, pk)])
    except (signing.BadSignature, BadTarget, KeyError, TypeError):
        found = []
    if not found:
        return _private(HttpResponseNotFound())
    with translation.override(language):
        status = summary(found[0])
    response = HttpResponse(render_png(status["state"], status["label"]), content_type="image/png")
    return _private(response, max_age=60)


def _private(response: HttpResponse, max_age: int = 0) -> HttpResponse:
    """Mark a response as meant for one user only: no shared cache may keep it."""
    if max_age:
        patch_cache_control(response, private=True, max_age=max_age)
    else:
        patch_cache_control(response, private=True, no_cache=True)
    return response
