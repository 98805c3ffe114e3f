"""Rate limits shared by every worker, kept in Django's cache.

A channel declares its limits as :class:`Scope` objects (the whole bot, one chat...),
each with a :class:`Rate` such as ``30/s``. Before each send, :class:`RateLimiter`
gives the delivery a *turn*: in every scope, a time slot of ``1/rate`` seconds that
nobody else holds. Slots are claimed with ``cache.add()``, which is atomic in the
Redis, Memcached, database and local-memory caches, so two workers never get the
same slot. Each slot stores the time of its send, and the next slot's send is at
least one interval later: a token bucket of capacity one (GCRA). A send goes at once
when its scope has been quiet for an interval, and a burst is spaced evenly.

A turn that is near is waited for (``max_wait`` seconds at most); a turn further
away is *held* for the delivery (keyed by its token) and the send is deferred until
then, so a retried delivery keeps its place in the line instead of queuing again.
When the provider still answers "too many requests", :meth:`RateLimiter.pause`
stops the scope for the time it asked, for every worker.

The limits are shared across workers only through a shared cache (Redis, Memcached,
the database cache): with the local-memory cache each process has its own line.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _

from ..exceptions import TransientChannelError

KEY_PREFIX = "notify_tracking:rl:"
#: A held turn that has passed by more than this is given up for a new one (seconds).
HOLD_GRACE = 60.0
#: The most slots one reservation looks at before it defers (a very long line).
MAX_SCAN = 2000
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
_SAFE_KEY = re.compile(r"^[\w:@#.\-]{1,120}$")


@dataclass(frozen=True)
class Rate:
    """At most ``count`` sends per ``seconds``, spaced evenly."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, value: str | None, option: str) -> Rate | None:
        """``"30/s"``, ``"20/m"``, ``"1/2s"``, ``"100/h"``, or None for no limit."""
        if value is None:
            return None
        match = _RATE.match(value) if isinstance(value, str) else None
        if not match or int(match[1]) < 1:
            raise ImproperlyConfigured(
                f"{option} must be a rate such as '30/s', '20/m' or '1/2s', or None; got {value!r}"
            )
        return cls(int(match[1]), int(match[2] or 1) * _UNITS[match[3]])

    @property
    def interval(self) -> float:
        """Seconds between two sends."""
        return self.seconds / self.count


@dataclass(frozen=True)
class Scope:
    """Something a limit applies to (a bot, a chat...), named by a cache key.

    A scope without a rate is never throttled, but can still be paused.
    """

    key: str
    rate: Rate | None


class RateLimiter:
    """Gives each send its turn in every scope it belongs to, through the cache."""

    def __init__(
        self,
        *,
        cache_alias: str = "default",
        max_wait: float = 2.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cache_alias = cache_alias
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep

    @property
    def cache(self):
        return caches[self.cache_alias]

    def wait_for_turn(self, scopes: Sequence[Scope], holder: str) -> None:
        """Return when a send in ``scopes`` may go, after a short sleep if needed.

        Raises :class:`TransientChannelError` with ``retry_after`` when the turn is
        more than ``max_wait`` seconds away; the turn stays held for ``holder``.
        """
        if not scopes:
            return
        at = self.turn(scopes, holder)
        delay = at - self.clock()
        if delay > self.max_wait:
            raise TransientChannelError(
                _("rate limit: waiting for a free sending slot in %(seconds).0f s")
                % {"seconds": delay},
                retry_after=delay,
            )
        if delay > 0:
            self.sleep(delay)
        if any(scope.rate is not None for scope in scopes):
            self.cache.delete(self._hold_key(holder))

    def turn(self, scopes: Sequence[Scope], holder: str) -> float:
        """The time at which ``holder`` may send: the turn it holds, or a new one."""
        now = self.clock()
        if all(scope.rate is None for scope in scopes):
            return max(now, self._paused_until(scopes))
        held = self.cache.get(self._hold_key(holder))
        if held is not None and held >= now - HOLD_GRACE and held >= self._paused_until(scopes):
            return held
        at = self.reserve(scopes)
        self.cache.set(self._hold_key(holder), at, timeout=_ttl(at - now))
        return at

    def reserve(self, scopes: Sequence[Scope]) -> float:
        """Claim the first free slot of each scope, one after the other; return the time."""
        at = max(self.clock(), self._paused_until(scopes))
        for scope in scopes:
            if scope.rate is not None:
                at = self._claim_slot(scope, scope.rate, at)
        return at

    def pause(self, scope: Scope, seconds: float) -> None:
        """Stop every send in ``scope`` for ``seconds`` (the provider asked us to)."""
        until = self.clock() + seconds
        key = self._key(scope.key, "pause")
        if (self.cache.get(key) or 0) < until:
            self.cache.set(key, until, timeout=_ttl(seconds))

    def _paused_until(self, scopes: Sequence[Scope]) -> float:
        keys = [self._key(scope.key, "pause") for scope in scopes]
        return max(self.cache.get_many(keys).values(), default=0.0)

    def _claim_slot(self, scope: Scope, rate: Rate, earliest: float) -> float:
        interval = rate.interval
        now = self.clock()
        hint_key = self._key(scope.key, "next")
        slot = max(math.floor(earliest / interval), self.cache.get(hint_key) or 0)
        for _attempt in range(MAX_SCAN):
            # Never closer than one interval to the send of the slot before.
            before = self.cache.get(self._key(scope.key, str(slot - 1))) or 0.0
            start = max(earliest, slot * interval, before + interval)
            timeout = _ttl(start - now + interval)
            if self.cache.add(self._key(scope.key, str(slot)), start, timeout=timeout):
                self.cache.set(hint_key, slot + 1, timeout=timeout)
                return start
            slot += 1
        raise TransientChannelError(
            _("rate limit: the sending line is too long; trying again later"),
            retry_after=slot * interval - now,
        )

    def _hold_key(self, holder: str) -> str:
        return self._key("hold", holder)

    @staticmethod
    def _key(*parts: str) -> str:
        key = ":".join(parts)
        if not _SAFE_KEY.match(key):  # memcached refuses spaces and long keys
            key = hashlib.sha256(key.encode()).hexdigest()
        return KEY_PREFIX + key


def _ttl(seconds: float) -> int:
    """A cache timeout that outlives ``seconds`` from now."""
    return max(1, math.ceil(seconds)) + int(HOLD_GRACE) + 5
