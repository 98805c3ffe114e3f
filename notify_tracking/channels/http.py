"""What the HTTP channels (Telegram, Slack, webhook) share.

:class:`HttpClient` posts with a timeout over the whole exchange and reads at most
:data:`MAX_ANSWER_BYTES` of the answer, streaming, so a huge or endless answer cannot
fill a worker's memory. Network trouble becomes a
:class:`~notify_tracking.exceptions.TransientChannelError` whose reason names what
happened but never the URL (the Telegram URL holds the bot token).

:class:`HttpChannel` is the base of those channels: options ``TIMEOUT`` and the rate
limits, required options reported by system checks, and ``send_message`` as a
template: wait for a turn (:mod:`.ratelimit`) → ``stamp`` → post → ``interpret``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _

from ..exceptions import ChannelError, TransientChannelError
from .base import Channel, SendResult
from .ratelimit import Rate, RateLimiter, Scope

if TYPE_CHECKING:
    from ..models import Delivery

logger = logging.getLogger("notify_tracking.channels")

#: The most bytes of an answer that are read; the rest is not downloaded.
MAX_ANSWER_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


# --- the client ---------------------------------------------------------------------


@dataclass
class HttpRequest:
    """A POST to make: what a channel's ``build_message`` returns."""

    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    """A provider's answer: status, headers and at most MAX_ANSWER_BYTES of body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    complete: bool = True

    def json(self) -> Any:
        """The body as JSON, or None when it is cut short or is not JSON."""
        if not self.complete:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def retry_after(self) -> float | None:
        """Seconds from the ``Retry-After`` header (seconds or an HTTP date), if any."""
        value = (self.headers.get("Retry-After") or "").strip()
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def describe(self) -> str:
        """A one-line account of the answer, for a reason shown to users."""
        if not self.complete:
            return _("HTTP %(status)s with an answer larger than %(limit)s bytes") % {
                "status": self.status,
                "limit": MAX_ANSWER_BYTES,
            }
        snippet = " ".join(self.body[:200].decode("utf-8", "replace").split())
        return f"HTTP {self.status}" + (f": {snippet}" if snippet else "")


class _TooSlow(Exception):
    pass


class HttpClient:
    """POSTs with a timeout and a bounded read; one requests session per thread."""

    def __init__(self, service: str, timeout: float):
        self.service = service
        self.timeout = timeout
        self._local = threading.local()

    def open(self) -> None:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._local.session = requests.Session()
        self._local.depth = depth + 1

    def close(self) -> None:
        self._local.depth = max(getattr(self._local, "depth", 1) - 1, 0)
        if self._local.depth == 0 and getattr(self._local, "session", None) is not None:
            self._local.session.close()
            self._local.session = None

    def post(self, request: HttpRequest) -> Answer:
        """POST ``request``; raise TransientChannelError when no answer came in time."""
        session = getattr(self._local, "session", None) or requests.Session()
        deadline = time.monotonic() + self.timeout
        try:
            with session.post(
                request.url,
                data=request.body,
                headers={"Accept-Encoding": "identity", **request.headers},
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            ) as response:
                body, complete = _read_capped(response, deadline)
                return Answer(response.status_code, response.headers, body, complete)
        except (requests.Timeout, urllib3.exceptions.TimeoutError, _TooSlow):
            reason = _("%(service)s did not answer within %(seconds)s s")
            raise TransientChannelError(
                reason % {"service": self.service, "seconds": self.timeout}
            ) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise TransientChannelError(_network_reason(self.service, error)) from None


def _read_capped(response: requests.Response, deadline: float) -> tuple[bytes, bool]:
    """At most MAX_ANSWER_BYTES of the body, and whether that is all of it.

    Reads what each network read brings (``read1``), so that a server sending a
    byte now and then cannot keep the worker past ``deadline``. The body is not
    decompressed (we ask for none), so a small compressed answer cannot grow.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        return b"", False
    read = getattr(response.raw, "read1", None) or response.raw.read  # urllib3 < 2.1
    chunks: list[bytes] = []
    size = 0
    while chunk := read(_CHUNK, decode_content=False):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return b"".join(chunks), False
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise _TooSlow
    return b"".join(chunks), True


def _network_reason(service: str, error: Exception) -> str:
    """Why the exchange failed, in words that never include the URL."""
    text = repr(error)  # read, never shown: it contains the URL
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        what = _("the server closed the connection without answering")
    elif isinstance(
        error, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError)
    ):
        what = _("the connection broke while the answer was arriving")
    elif isinstance(error, requests.ConnectionError):
        what = _("could not connect")
    else:
        what = type(error).__name__
    return _("%(service)s: %(what)s") % {"service": service, "what": what}


# --- keeping secrets out of logs ----------------------------------------------------

_secrets: set[str] = set()


class _RedactSecrets(logging.Filter):
    """Removes channel secrets from urllib3's debug lines (they print request URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in _secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_filter = _RedactSecrets()
for _name in ("urllib3.connectionpool", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(_filter)


def register_secrets(*values: str | None) -> None:
    """Have these values replaced by *** in the log lines of the HTTP libraries."""
    _secrets.update(value for value in values if value)


# --- the base channel ---------------------------------------------------------------


class AskedToWait(TransientChannelError):
    """The provider asked us to wait ("too many requests", "come back later"): the
    scope pauses for ``retry_after`` seconds, for every worker.

    ``whole_channel`` pauses every recipient of the channel, not just this one.
    """

    def __init__(self, reason: str, *, retry_after: float | None, whole_channel: bool = False):
        super().__init__(reason, retry_after=retry_after)
        self.whole_channel = whole_channel


class HttpChannel(Channel):
    """Base of channels that POST to an HTTP API. Subclasses fill in the hooks."""

    #: Name of the service in reasons ("Telegram", "Slack"...).
    service = "HTTP"
    #: Options without which nothing can be sent (a check error, and ``failed``).
    required_options: tuple[str, ...] = ()
    #: Options that hold an http(s) URL.
    url_options: tuple[str, ...] = ()
    option_defaults = {
        # Seconds for the whole exchange with the provider.
        "TIMEOUT": 10,
        # The channel's overall rate limit ("30/s"), and one per recipient ("1/s").
        "RATE_LIMIT": None,
        "RATE_LIMIT_PER_RECIPIENT": None,
        # The longest a worker sleeps for its turn; further turns defer the delivery.
        "RATE_LIMIT_MAX_WAIT": 2,
        # The Django cache that holds the limits (shared by workers: Redis, DB...).
        "RATE_LIMIT_CACHE": "default",
    }

    def __init__(self, name: str, **options: Any):
        super().__init__(name, **options)
        self.timeout = self._positive("TIMEOUT")
        for key in self.url_options:
            self._check_url(key)
        self.rate = Rate.parse(self.options["RATE_LIMIT"], self._option("RATE_LIMIT"))
        key = "RATE_LIMIT_PER_RECIPIENT"
        self.recipient_rate = Rate.parse(self.options[key], self._option(key))
        self.limiter = RateLimiter(
            cache_alias=self.options["RATE_LIMIT_CACHE"],
            max_wait=self._positive("RATE_LIMIT_MAX_WAIT", allow_zero=True),
        )
        self.client = HttpClient(self.service, self.timeout)
        register_secrets(*self.secrets())

    def _option(self, key: str) -> str:
        return f"NOTIFY_TRACKING['CHANNELS'][{self.name!r}]['OPTIONS'][{key!r}]"

    def _check_url(self, key: str) -> None:
        value = self.options[key]
        if value is not None and not (
            isinstance(value, str) and value.startswith(("http://", "https://"))
        ):
            raise ImproperlyConfigured(f"{self._option(key)} must be an http(s) URL")

    def _positive(self, key: str, *, allow_zero: bool = False) -> float:
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ImproperlyConfigured(f"{self._option(key)} must be a number of seconds")
        if value < 0 or (value == 0 and not allow_zero):
            raise ImproperlyConfigured(f"{self._option(key)} must be more than 0")
        return float(value)

    # --- configuration --------------------------------------------------------------

    def configuration_problems(self) -> list[str]:
        missing = [key for key in self.required_options if not self.options.get(key)]
        return [f"OPTIONS[{key!r}] is required" for key in missing]

    def open(self) -> None:
        problems = self.configuration_problems()
        if problems:
            raise ChannelError(
                _("the %(service)s channel %(name)s is not configured: %(problems)s")
                % {"service": self.service, "name": self.name, "problems": "; ".join(problems)}
            )
        self.client.open()

    def close(self) -> None:
        self.client.close()

    # --- sending --------------------------------------------------------------------

    def rate_scopes(self, delivery: Delivery) -> list[Scope]:
        """The limits this delivery's send counts against: its recipient, the channel."""
        return [
            Scope(f"{self.name}:to:{delivery.recipient}", self.rate_for(delivery.recipient)),
            Scope(self.name, self.rate),
        ]

    def rate_for(self, recipient: str) -> Rate | None:
        """The limit of one recipient (a subclass may tell groups from people)."""
        return self.recipient_rate

    def send_message(self, message: HttpRequest, delivery: Delivery) -> str | SendResult:
        scopes = self.rate_scopes(delivery)
        self.limiter.wait_for_turn(scopes, holder=str(delivery.token))
        answer = self.client.post(self.stamp(message))
        try:
            return self.interpret(answer, delivery)
        except AskedToWait as error:
            if error.retry_after:
                self.limiter.pause(scopes[-1 if error.whole_channel else 0], error.retry_after)
            logger.warning("channel %s: %s", self.name, self.redact(error.reason))
            raise
        except ChannelError as error:
            # The base class redacts the reason; the details come from the provider too.
            error.details = {
                key: self.redact(value) if isinstance(value, str) else value
                for key, value in error.details.items()
            }
            raise

    def stamp(self, request: HttpRequest) -> HttpRequest:
        """Last touches just before the request leaves (e.g. a timestamped signature)."""
        return request

    def interpret(self, answer: Answer, delivery: Delivery) -> str | SendResult:
        """The provider's message id, or raise the ChannelError the answer means."""
        raise NotImplementedError(f"{type(self).__name__} must implement interpret()")


def json_request(url: str, payload: dict[str, Any], headers: dict[str, str] | None = None):
    """An :class:`HttpRequest` that POSTs ``payload`` as UTF-8 JSON."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return HttpRequest(
        url, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )
