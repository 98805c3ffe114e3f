"""Settings: one ``NOTIFY_TRACKING`` dict, every key optional.

Read a setting with :func:`get_setting`; the defaults live in :data:`DEFAULTS` and
nowhere else. docs/settings.md describes every key (a test checks the two agree).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.urls import get_script_prefix
from django.utils.http import RFC3986_SUBDELIMS
from django.utils.module_loading import import_string

EMAIL_CHANNEL = {"BACKEND": "notify_tracking.channels.email.EmailChannel", "OPTIONS": {}}

DEFAULTS: dict[str, Any] = {
    # name -> {"BACKEND": dotted path of a Channel subclass, "OPTIONS": {...}}
    "CHANNELS": {"email": EMAIL_CHANNEL},
    "DEFAULT_CHANNEL": "email",
    # From address of notification emails; None: settings.DEFAULT_FROM_EMAIL.
    "FROM_EMAIL": None,
    # Domain of the Message-ID header we set; None: Django's DNS_NAME.
    "MESSAGE_ID_DOMAIN": None,
    # Absolute base URL for links in messages (pixel, click, download), e.g.
    # "https://tracker.example.com". None: no tracking links are added.
    "BASE_URL": None,
    "TRACK_OPENS": True,
    "TRACK_CLICKS": True,
    "REQUEST_DELIVERY_REPORT": False,
    "REQUEST_READ_RECEIPT": False,
    # Largest report (DSN/MDN) message read, in bytes; a larger one is ignored and logged.
    "MAX_REPORT_BYTES": 1_048_576,
    # Whether an open classified as automated makes a delivery "opened".
    "COUNT_MACHINE_OPENS": False,
    # Tracking (docs/tracking.md). One email with every recipient visible, instead of
    # one email per recipient: an open by any of them counts for all.
    "ONE_EMAIL_PER_NOTIFICATION": False,
    # Send attachments as tracked download links instead of attaching them.
    "TRACK_DOWNLOADS": False,
    # Store the IP address of opens and clicks (it is used for classification anyway).
    "STORE_IP_ADDRESSES": False,
    # request.META key holding the client's address behind your proxy, e.g.
    # "HTTP_X_REAL_IP"; None: REMOTE_ADDR. Comma lists: the last entry is used.
    "CLIENT_IP_HEADER": None,
    # Networks of Apple's Mail Privacy Protection proxies: CIDR strings, or the path
    # of a file of them (Apple's egress-ip-ranges.csv). Empty: the user agent only.
    "APPLE_PROXY_NETWORKS": [],
    # Opens and clicks this soon after sending are a link scanner's (seconds).
    "SCANNER_WINDOW_SECONDS": 10,
    # A local directory where the pixel spools its opens (synced to disk) instead of
    # inserting each into the database (docs/tracking.md); None: the database.
    "OPEN_SPOOL_DIR": None,
    # User-agent fragments (case-insensitive) of scanners, bots and link previews;
    # None: the list in notify_tracking.tracking.classify.SCANNER_USER_AGENTS.
    "SCANNER_USER_AGENTS": None,
    "RETENTION_DAYS": 45,
    # Retention per target or sender (docs/retention.md): dotted path of a callable
    # returning [(filter on Notification, days), ...]; None: RETENTION_DAYS for all.
    "RETENTION_POLICY": None,
    # What the purge does to expired notifications: "delete" or "anonymise".
    "RETENTION_MODE": "delete",
    # Rows the purge handles per short transaction.
    "RETENTION_BATCH_SIZE": 1000,
    # Who may read the activity log (docs/activity-log.md): callable (user) -> bool.
    "ACTIVITY_LOG_PERMISSION": "notify_tracking.activity.permissions.staff_only",
    # Rows per page of the activity log API, and the most a client may ask for.
    "ACTIVITY_PAGE_SIZE": 50,
    "ACTIVITY_MAX_PAGE_SIZE": 500,
    # Sending: attempts per delivery, and the exponential backoff between them.
    "MAX_ATTEMPTS": 5,
    "RETRY_BACKOFF": 30,
    "RETRY_BACKOFF_MAX": 3600,
    # How many deliveries one Celery send task handles (one connection per batch).
    "BATCH_SIZE": 50,
    # A worker holds a delivery this long while sending it (seconds).
    "CLAIM_TIMEOUT": 300,
    # The sweep re-enqueues deliveries waiting this long past their due time (seconds).
    "STUCK_AFTER": 600,
    # Celery queue for the app's tasks; None: the default queue.
    "QUEUE": None,
    # ESP webhook events applied by one Celery task (docs/esp-webhooks.md).
    "ESP_BATCH_SIZE": 500,
    # When the daily read digest goes out, "HH:MM" in settings.TIME_ZONE (docs/read-notices.md).
    "DIGEST_TIME": "08:00",
    # Who may see a target's status: dotted path of a callable (user, target, summary) -> bool.
    "PERMISSION": "notify_tracking.permissions.default_permission",
    # The most targets one request to the status list endpoint may ask for.
    "API_MAX_TARGETS": 100,
    # TrueType font file of PNG badge labels; None: DejaVu Sans if installed, else Pillow's.
    "BADGE_FONT": None,
}


def _user_settings() -> dict[str, Any]:
    value = getattr(settings, "NOTIFY_TRACKING", {})
    if not isinstance(value, dict):
        raise ImproperlyConfigured(
            f"settings.NOTIFY_TRACKING must be a dict, not {type(value).__name__}"
        )
    return value


def get_setting(name: str) -> Any:
    """The value of ``NOTIFY_TRACKING[name]``, or its default."""
    if name not in DEFAULTS:
        raise ImproperlyConfigured(f"NOTIFY_TRACKING has no setting {name!r}")
    return _user_settings().get(name, DEFAULTS[name])


def absolute_url(path: str) -> str | None:
    """``path`` (from ``reverse()`` or a ``get_absolute_url()``) made absolute with
    ``BASE_URL``; None without it.

    ``BASE_URL`` is the site's address as its readers reach it, with the sub-path it
    is served under if any (``https://example.com/tracker``). ``reverse()`` puts the
    script prefix in front of its paths (in a request under that sub-path, or with
    ``FORCE_SCRIPT_NAME``): when ``BASE_URL`` ends with that same prefix, it is not
    repeated. A Celery worker knows no prefix but ``FORCE_SCRIPT_NAME``: its paths
    get the sub-path from ``BASE_URL``.
    """
    base = get_setting("BASE_URL")
    if not base:
        return None
    base = base.rstrip("/")
    if urlsplit(path).netloc:  # "//cdn.example.com/x": another host, this scheme
        return urljoin(base + "/", path)
    path = path if path.startswith("/") else "/" + path
    if base_has_script_prefix(base):
        path = without_script_prefix(path)
    return base + path


def base_has_script_prefix(base: str) -> bool:
    """Whether the path of ``base`` (a ``BASE_URL``) is the current script prefix."""
    prefix = get_script_prefix().rstrip("/")
    return bool(prefix) and unquote(urlsplit(base).path.rstrip("/")) == unquote(prefix)


def without_script_prefix(path: str) -> str:
    """``path`` without the script prefix in front of it, as ``reverse()`` puts it
    there (percent-encoded) or as it is."""
    prefix = get_script_prefix().rstrip("/")
    for form in (prefix, quote(prefix, safe=RFC3986_SUBDELIMS + "/~:@")):
        if form and path.startswith(form + "/"):
            return path[len(form) :]
    return path


def unknown_keys() -> list[str]:
    """Keys of the user's NOTIFY_TRACKING dict that this version does not know."""
    return sorted(set(_user_settings()) - set(DEFAULTS))


_channels: dict[str, Any] = {}


def get_channel(name: str):
    """The configured :class:`~notify_tracking.channels.base.Channel` called ``name``."""
    if name not in _channels:
        config = get_setting("CHANNELS").get(name)
        if config is None:
            known = ", ".join(sorted(get_setting("CHANNELS")))
            raise ImproperlyConfigured(
                f"NOTIFY_TRACKING['CHANNELS'] has no channel {name!r} (configured: {known})"
            )
        backend = import_string(config["BACKEND"])
        _channels[name] = backend(name=name, **config.get("OPTIONS", {}))
    return _channels[name]


def channel_names() -> list[str]:
    return list(get_setting("CHANNELS"))


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "NOTIFY_TRACKING":
        _channels.clear()


setting_changed.connect(_reset)
