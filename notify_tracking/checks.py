"""System checks: a bad ``NOTIFY_TRACKING`` setting fails at start, naming the key."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import DEFAULTS, get_setting


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def _int_at_least(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"must be a whole number of at least {minimum}"
        return None

    return check


def _optional_str(value: Any) -> str | None:
    return (
        None if value is None or (isinstance(value, str) and value) else "must be a string or None"
    )


def _base_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "must be an absolute http(s) URL such as 'https://tracker.example.com', or None"
    return None


def _channels(value: Any) -> str | None:
    if not isinstance(value, dict) or not value:
        return "must be a non-empty dict of channel name -> {'BACKEND': ..., 'OPTIONS': {...}}"
    from .channels.base import Channel

    for name, config in value.items():
        if not isinstance(config, dict) or "BACKEND" not in config:
            return f"channel {name!r} needs a dict with a 'BACKEND' key"
        try:
            backend = import_string(config["BACKEND"])
        except ImportError as error:
            return f"channel {name!r}: cannot import BACKEND {config['BACKEND']!r} ({error})"
        if not (isinstance(backend, type) and issubclass(backend, Channel)):
            return (
                f"channel {name!r}: BACKEND must be a subclass of notify_tracking.channels.Channel"
            )
        options = config.get("OPTIONS", {})
        if not isinstance(options, dict):
            return f"channel {name!r}: OPTIONS must be a dict"
        try:
            channel = backend(name=name, **options)
        except (ImproperlyConfigured, TypeError, ValueError) as error:
            return f"channel {name!r}: {error}"
        problems = channel.configuration_problems()
        if problems:
            return f"channel {name!r}: {'; '.join(problems)}"
    return None


def _optional_str_list(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) and item for item in value):
        return None
    return "must be a list of non-empty strings, or None"


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return "must be a number of seconds, 0 or more"
    return None


def _networks(value: Any) -> str | None:
    from .tracking.networks import parse_networks

    if not isinstance(value, (str, list, tuple)):
        return "must be a list of networks such as '17.0.0.0/8', or the path of a file of them"
    try:
        parse_networks(value)
    except ImproperlyConfigured as error:
        return f"has a problem: {error}"
    return None


def _callable_path(value: Any) -> str | None:
    if callable(value):
        return None
    if not isinstance(value, str):
        return "must be the dotted path of a callable, or a callable"
    try:
        target = import_string(value)
    except ImportError as error:
        return f"cannot import {value!r} ({error})"
    return None if callable(target) else f"{value!r} is not callable"


def _time_of_day(value: Any) -> str | None:
    from .read_notices import parse_time_of_day

    try:
        parse_time_of_day(value)
    except (TypeError, ValueError):
        return "must be a time of day as 'HH:MM', such as '08:00'"
    return None


def _optional_callable_path(value: Any) -> str | None:
    return None if value is None else _callable_path(value)


def _spool_dir(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return "must be None or the path of a directory"
    if not os.path.isdir(value) or not os.access(value, os.W_OK | os.X_OK):
        return f"must be a directory this process can write to; {str(value)!r} is not"
    return None


def _retention_mode(value: Any) -> str | None:
    return None if value in ("delete", "anonymise") else 'must be "delete" or "anonymise"'


VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    "CHANNELS": _channels,
    "DEFAULT_CHANNEL": _optional_str,
    "FROM_EMAIL": _optional_str,
    "MESSAGE_ID_DOMAIN": _optional_str,
    "BASE_URL": _base_url,
    "TRACK_OPENS": _bool,
    "TRACK_CLICKS": _bool,
    "REQUEST_DELIVERY_REPORT": _bool,
    "REQUEST_READ_RECEIPT": _bool,
    "MAX_REPORT_BYTES": _int_at_least(1024),
    "COUNT_MACHINE_OPENS": _bool,
    "ONE_EMAIL_PER_NOTIFICATION": _bool,
    "TRACK_DOWNLOADS": _bool,
    "STORE_IP_ADDRESSES": _bool,
    "CLIENT_IP_HEADER": _optional_str,
    "APPLE_PROXY_NETWORKS": _networks,
    "SCANNER_WINDOW_SECONDS": _positive_number,
    "OPEN_SPOOL_DIR": _spool_dir,
    "SCANNER_USER_AGENTS": _optional_str_list,
    "RETENTION_DAYS": _int_at_least(1),
    "RETENTION_POLICY": _optional_callable_path,
    "RETENTION_MODE": _retention_mode,
    "RETENTION_BATCH_SIZE": _int_at_least(1),
    "ACTIVITY_LOG_PERMISSION": _callable_path,
    "ACTIVITY_PAGE_SIZE": _int_at_least(1),
    "ACTIVITY_MAX_PAGE_SIZE": _int_at_least(1),
    "MAX_ATTEMPTS": _int_at_least(1),
    "RETRY_BACKOFF": _int_at_least(0),
    "RETRY_BACKOFF_MAX": _int_at_least(0),
    "BATCH_SIZE": _int_at_least(1),
    "CLAIM_TIMEOUT": _int_at_least(1),
    "STUCK_AFTER": _int_at_least(1),
    "QUEUE": _optional_str,
    "ESP_BATCH_SIZE": _int_at_least(1),
    "DIGEST_TIME": _time_of_day,
    "PERMISSION": _callable_path,
    "API_MAX_TARGETS": _int_at_least(1),
    "BADGE_FONT": _optional_str,
}


def _error(key: str, message: str, number: int) -> Error:
    return Error(f"NOTIFY_TRACKING[{key!r}] {message}", id=f"notify_tracking.E{number:03d}")


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list[Error]:
    from django.conf import settings

    user = getattr(settings, "NOTIFY_TRACKING", {})
    if not isinstance(user, dict):
        return [Error("settings.NOTIFY_TRACKING must be a dict", id="notify_tracking.E001")]
    errors = []
    for key in sorted(set(user) - set(DEFAULTS)):
        close = difflib.get_close_matches(key, DEFAULTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        errors.append(_error(key, f"is not a setting of this version{hint}", 2))
    for key, validate in VALIDATORS.items():
        if key in user:
            message = validate(user[key])
            if message:
                errors.append(_error(key, message, 3))
    if not errors:
        default = get_setting("DEFAULT_CHANNEL")
        if default not in get_setting("CHANNELS"):
            errors.append(
                _error("DEFAULT_CHANNEL", f"names {default!r}, which is not in CHANNELS", 4)
            )
        if get_setting("RETRY_BACKOFF_MAX") < get_setting("RETRY_BACKOFF"):
            errors.append(_error("RETRY_BACKOFF_MAX", "must not be less than RETRY_BACKOFF", 5))
    return errors


@register(Tags.compatibility)
def check_time_zone_support(app_configs=None, **kwargs) -> list[Error]:
    """Refuse ``USE_TZ = False``. The app's times are aware (each event's, the scanner
    window's, the retention cut-off's); with naive ones from Django, not one event
    could be recorded: a sent message would stay "queued"."""
    from django.conf import settings

    if settings.USE_TZ:
        return []
    return [
        Error(
            "notify_tracking needs USE_TZ = True: it records and compares aware times, and "
            "with USE_TZ = False it could record no event of any delivery.",
            hint="Set USE_TZ = True in your settings (Django's default since 5.0, and in "
            "the settings that startproject writes since Django 1.4).",
            id="notify_tracking.E006",
        )
    ]


@register(Tags.compatibility)
def check_rest_framework_installed(app_configs=None, **kwargs) -> list[Warning]:
    """Warn when djangorestframework can be imported (so the app mounts its status API)
    but is not in INSTALLED_APPS: its browsable pages, what a browser gets, need its
    templates, and answer 500 without them."""
    from django.apps import apps

    if find_spec("rest_framework") is None or apps.is_installed("rest_framework"):
        return []
    from rest_framework.renderers import BrowsableAPIRenderer, TemplateHTMLRenderer
    from rest_framework.settings import api_settings

    html = (BrowsableAPIRenderer, TemplateHTMLRenderer)
    if not any(issubclass(renderer, html) for renderer in api_settings.DEFAULT_RENDERER_CLASSES):
        return []  # JSON only: no template needed
    return [
        Warning(
            "djangorestframework is installed, so notify_tracking mounts its REST API, but "
            "'rest_framework' is not in INSTALLED_APPS: a browser that opens the API gets "
            "a server error (TemplateDoesNotExist: rest_framework/api.html).",
            hint="Add 'rest_framework' to INSTALLED_APPS (docs/installation.md).",
            id="notify_tracking.W002",
        )
    ]


ESP_RECEIVER_UID = "notify_tracking.esp.on_tracking"


@register(Tags.security)
def check_webhook_secret(app_configs=None, **kwargs) -> list[Warning]:
    """Warn when anymail's tracking webhooks are mounted without basic auth.

    Without ``ANYMAIL["WEBHOOK_SECRET"]`` anymail accepts every POST, and the app would
    record whatever a stranger posts (a delivery marked read, or bounced).
    """
    from anymail.signals import tracking
    from anymail.utils import get_anymail_setting

    if get_anymail_setting("webhook_secret", default=None):
        return []
    receiving = any(lookup[0] == ESP_RECEIVER_UID for lookup, *_ in tracking.receivers)
    if not (receiving and _tracking_webhooks_mounted()):
        return []
    return [
        Warning(
            "ANYMAIL['WEBHOOK_SECRET'] is not set: anymail's tracking webhooks accept a POST "
            "from anyone, and notify_tracking records its events (a stranger could mark "
            "deliveries delivered, read or bounced).",
            hint="Set ANYMAIL['WEBHOOK_SECRET'] to a random 'user:password' and give it to "
            "your provider in the webhook URL (docs/esp-webhooks.md).",
            id="notify_tracking.W001",
        )
    ]


def _tracking_webhooks_mounted() -> bool:
    """Whether the root URLconf routes to one of anymail's tracking webhook views."""
    from anymail.signals import tracking
    from anymail.webhooks.base import AnymailCoreWebhookView
    from django.urls import URLResolver, get_resolver

    def found(patterns: Any) -> bool:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if found(pattern.url_patterns):
                    return True
                continue
            view = getattr(pattern.callback, "view_class", None)
            if (
                isinstance(view, type)
                and issubclass(view, AnymailCoreWebhookView)
                and getattr(view, "signal", None) is tracking
            ):
                return True
        return False

    try:
        return found(get_resolver().url_patterns)
    except Exception:  # a broken URLconf is reported by Django's own check
        return False
