"""Keep one unparsable event from failing a whole ESP webhook POST.

anymail parses a POST in one go: one event it cannot read (a SendGrid batch entry
without ``event``, say) raises before any signal is sent, Django answers 500, and the
ESP resends the same batch again and again. With this middleware installed, such a
POST is parsed again event by event: the readable events are sent on as usual, each
unreadable one is logged and skipped, and the ESP gets 200. A POST that cannot be read
at all gets 400 and a log line, and so does one that anymail's signature check cannot
read. Requests to other views, failed authentication (anymail's 400) and errors that do
not come from parsing are left alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from anymail.signals import tracking
from anymail.webhooks.base import AnymailCoreWebhookView
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

logger = logging.getLogger("notify_tracking.esp")


class WebhookGuardMiddleware:
    """Django middleware; add ``"notify_tracking.esp.middleware.WebhookGuardMiddleware"``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        view = _tracking_view(request)
        if view is None or isinstance(exception, SuspiciousOperation):
            return None
        try:
            view.run_validators(request)
        except SuspiciousOperation:
            return None  # failed authentication: anymail's own answer (400)
        except Exception as error:
            # A validator that cannot even read the body (Mailgun's signature check on
            # a JSON body that is not an object): nothing was verified, nothing is used.
            return _unreadable(view, error)
        try:
            view.parse_events(request)
        except Exception:
            return _salvage(view, request, exception)
        return None  # parsing works: the error came from elsewhere, let Django report it


def _tracking_view(request: HttpRequest) -> AnymailCoreWebhookView | None:
    match: Any = getattr(request, "resolver_match", None)
    view_class: Any = getattr(getattr(match, "func", None), "view_class", None)
    if not (isinstance(view_class, type) and issubclass(view_class, AnymailCoreWebhookView)):
        return None
    if getattr(view_class, "signal", None) is not tracking:
        return None
    return view_class(**getattr(match.func, "view_initkwargs", {}))


def _salvage(
    view: AnymailCoreWebhookView, request: HttpRequest, exception: Exception
) -> HttpResponse:
    items = _json_list(request)
    convert = getattr(view, "esp_to_anymail_event", None)
    if items is None or convert is None:
        return _unreadable(view, exception)
    for index, item in enumerate(items):
        try:
            event = convert(item)
        except Exception as error:
            logger.warning(
                "notify_tracking: skipped unreadable event %d of a %s webhook POST (%s: %s)",
                index,
                view.esp_name,
                type(error).__name__,
                error,
            )
            continue
        view.signal.send(sender=type(view), event=event, esp_name=view.esp_name)
    return HttpResponse()


def _unreadable(view: AnymailCoreWebhookView, exception: Exception) -> HttpResponse:
    logger.error(
        "notify_tracking: could not read a %s webhook POST (%s: %s); answered 400",
        view.esp_name,
        type(exception).__name__,
        exception,
    )
    return HttpResponseBadRequest("unreadable webhook payload")


def _json_list(request: HttpRequest) -> list[Any] | None:
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, list) else None
