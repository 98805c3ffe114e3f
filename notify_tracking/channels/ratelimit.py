"""Rate limits shared by every worker, kept in Django's cache.

A channel declares its limits as :class:`Scope` objects (the whole bot, one chat...),
each with a :class:`Rate` such as ``30/s``. Before each send, :class:`RateLimiter`
gives the delivery a *turn*: one time at which it may send in every scope it belongs
to. In each scope, two turns are at least one *spacing* apart, the rate's interval
stretched by a small margin (``N`` sends per ``T + MARGIN`` seconds): the provider
counts arrivals, and a send that leaves a few milliseconds late must not make two
arrivals closer than the provider allows.

Each scope's time is cut into *cells* one spacing long; a turn at time ``t`` claims
the cell ``floor(t / spacing)`` of every scope with ``cache.add()``, which is atomic
in the Redis, Memcached, database and local-memory caches, and stores ``t`` in it.
Since a cell holds one turn and is one spacing long, only the turns of the two
neighbouring cells can be too close: a turn is chosen clear of them, and checked
against them again after its claim (another worker may have claimed a neighbour
between our read and our claim; then ours is given back and a later time chosen).
The same time is claimed in every scope, so a chat's turn is also the bot's: a long
line for the bot never brings two sends to one chat closer than a second.

A turn that is near is waited for (``max_wait`` seconds at most); a turn further
away is *held* for the delivery (keyed by its token) and the send is deferred until
a little before it (half of ``max_wait``), so the retry sleeps the rest and sends on
time, keeping its place in the line. A held turn that has passed (the retry came
late) is given back and a new one taken: sending late on an old turn would crowd the
turns after it. When the provider still answers "too many requests",
:meth:`RateLimiter.pause` stops the scope for the time it asked, for every worker;
a worker that wakes up for its turn inside a pause does not send.

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
#: Seconds added to each limit's window, for the jitter between a turn and the
#: provider's clock (a worker woken a little late, the network): 30/s is kept as
#: 30 sends per 1.1 s, 1/s as one send every 1.1 s. Measured on localhost, that
#: jitter reached 48 ms on a loaded machine: 50 ms would be too close.
MARGIN = 0.1
#: Turns are kept in whole microseconds since the epoch.
US = 1_000_000
#: How long a claimed cell outlives its turn in the cache (seconds).
HOLD_GRACE = 60.0
#: The most cells one reservation looks at before it defers (a very long line).
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
        margin: float = MARGIN,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cache_alias = cache_alias
        self.max_wait = max_wait
        self.margin = margin
        self.clock = clock
        self.sleep = sleep

    @property
    def cache(self):
        return caches[self.cache_alias]

    def spacing(self, rate: Rate) -> float:
        """Seconds between two turns of a scope limited to ``rate``."""
        return self._spacing(rate) / US

    def _spacing(self, rate: Rate) -> int:
        # In whole microseconds, rounded up: cells are then exact integer arithmetic.
        return math.ceil((rate.seconds + self.margin) * US / rate.count)

    def wait_for_turn(self, scopes: Sequence[Scope], holder: str) -> None:
        """Return when a send in ``scopes`` may go, after a short sleep if needed.

        Raises :class:`TransientChannelError` with ``retry_after`` when the turn is
        more than ``max_wait`` seconds away (the turn stays held for ``holder``, and
        ``retry_after`` is half of ``max_wait`` early), or when a scope was paused
        while this worker slept.
        """
        if not scopes:
            return
        at = self.turn(scopes, holder)
        delay = at - self.clock()
        if delay > self.max_wait:
            raise _wait(delay, retry_after=delay - self.max_wait / 2)
        if any(scope.rate is not None for scope in scopes):
            self.cache.delete(self._hold_key(holder))
        if delay > 0:
            self.sleep(delay)
            # A 429 may have paused a scope while we slept: its turn is void.
            paused = self._paused_until(scopes) - self.clock()
            if paused > 0:
                raise _wait(paused, retry_after=paused)

    def turn(self, scopes: Sequence[Scope], holder: str) -> float:
        """The time at which ``holder`` may send: the turn it holds, or a new one."""
        now = self.clock()
        paused_until = self._paused_until(scopes)
        if all(scope.rate is None for scope in scopes):
            return max(now, paused_until)
        held = self.cache.get(self._hold_key(holder))
        if held is not None:
            if held >= _us(now) and held >= _us(paused_until):
                return held / US
            self._release(scopes, held)
        at = self._reserve(scopes)
        self.cache.set(self._hold_key(holder), at, timeout=_ttl(at / US - now))
        return at / US

    def reserve(self, scopes: Sequence[Scope]) -> float:
        """Claim the earliest time that is free in every scope; return it."""
        return self._reserve(scopes) / US

    def _reserve(self, scopes: Sequence[Scope]) -> int:
        now = _us(self.clock())
        at = max(now, _us(self._paused_until(scopes)))
        rated = [scope for scope in scopes if scope.rate is not None]
        for _attempt in range(MAX_SCAN):
            fitted = at
            heads: dict[str, bool] = {}
            for scope in rated:
                fitted, heads[scope.key] = self._fit(scope, fitted)
            if fitted > at:  # a scope moved the time: check the others at the new one
                at = fitted
                continue
            claimed, at = self._claim(rated, at)
            if claimed:
                self._advance_heads(rated, at, heads)
                return at
        raise TransientChannelError(
            _("rate limit: the sending line is too long; trying again later"),
            retry_after=(at - now) / US,
            attempted=False,
        )

    def pause(self, scope: Scope, seconds: float) -> None:
        """Stop every send in ``scope`` for ``seconds`` (the provider asked us to)."""
        until = self.clock() + seconds
        key = self._key(scope.key, "pause")
        if (self.cache.get(key) or 0) < until:
            self.cache.set(key, until, timeout=_ttl(seconds))

    def _paused_until(self, scopes: Sequence[Scope]) -> float:
        keys = [self._key(scope.key, "pause") for scope in scopes]
        return max(self.cache.get_many(keys).values(), default=0.0)

    def _fit(self, scope: Scope, at: int) -> tuple[int, bool]:
        """The earliest time from ``at`` that is clear of the turns of ``scope``.

        Also says whether it was found by stepping over taken cells from the scope's
        head (the first cell that may be free), which may then move past it.
        """
        spacing = self._spacing(_rate(scope))
        head = self.cache.get(self._key(scope.key, "head")) or 0
        cell = max(at // spacing, head)
        from_head = cell == head
        at = max(at, cell * spacing)
        for _step in range(MAX_SCAN):
            before, here, after = self._cells(scope.key, cell)
            if here is not None:
                at = max(at, here + spacing)  # taken: after its turn, in the next cell
            else:
                if before is not None:
                    at = max(at, before + spacing)
                if after is None or at <= after - spacing:
                    return at, from_head
                at = after + spacing
                from_head = False
            cell = at // spacing
        return at, False

    def _claim(self, scopes: Sequence[Scope], at: int) -> tuple[bool, int]:
        """Claim the cell of ``at`` in every scope; on a conflict give them back.

        Returns whether it worked, and the time to try next.
        """
        claimed: list[str] = []
        timeout = _ttl(at / US - self.clock())
        for scope in scopes:
            key = self._key(scope.key, str(at // self._spacing(_rate(scope))))
            if not self.cache.add(key, at, timeout=timeout):
                self.cache.delete_many(claimed)
                return False, at  # the next fit steps over the cell that was taken
            claimed.append(key)
        # Another worker may have claimed a neighbouring cell after we read it.
        retry_at = at
        for scope in scopes:
            spacing = self._spacing(_rate(scope))
            before, _here, after = self._cells(scope.key, at // spacing)
            if before is not None and at - before < spacing:
                retry_at = max(retry_at, before + spacing)
            if after is not None and after - at < spacing:
                retry_at = max(retry_at, after + spacing)
        if retry_at > at:
            self.cache.delete_many(claimed)
            return False, retry_at
        return True, at

    def _advance_heads(self, scopes: Sequence[Scope], at: int, heads: dict[str, bool]) -> None:
        """Move the head of each scope whose cells up to ``at`` are all taken."""
        timeout = _ttl(at / US - self.clock())
        for scope in scopes:
            if heads.get(scope.key):
                cell = at // self._spacing(_rate(scope))
                self.cache.set(self._key(scope.key, "head"), cell + 1, timeout=timeout)

    def _release(self, scopes: Sequence[Scope], at: int) -> None:
        """Give back the cells of a turn at ``at`` that was never used."""
        keys = [
            self._key(scope.key, str(at // self._spacing(scope.rate)))
            for scope in scopes
            if scope.rate is not None
        ]
        # Only our own: a cell holds the time of the turn that claimed it.
        mine = [key for key, value in self.cache.get_many(keys).items() if value == at]
        self.cache.delete_many(mine)

    def _cells(self, scope_key: str, cell: int) -> tuple[int | None, int | None, int | None]:
        """The turns in cells ``cell - 1``, ``cell`` and ``cell + 1`` of a scope."""
        keys = [self._key(scope_key, str(cell + offset)) for offset in (-1, 0, 1)]
        values = self.cache.get_many(keys)
        before, here, after = (values.get(key) for key in keys)
        return before, here, after

    def _hold_key(self, holder: str) -> str:
        return self._key("hold", holder)

    @staticmethod
    def _key(*parts: str) -> str:
        key = ":".join(parts)
        if not _SAFE_KEY.match(key):  # memcached refuses spaces and long keys
            key = hashlib.sha256(key.encode()).hexdigest()
        return KEY_PREFIX + key


def _us(seconds: float) -> int:
    return math.ceil(seconds * US)


def _rate(scope: Scope) -> Rate:
    assert scope.rate is not None  # only scopes with a rate have cells
    return scope.rate


def _wait(seconds: float, *, retry_after: float) -> TransientChannelError:
    """A wait for a turn: nothing was sent, so it is not an attempt (``attempted``)."""
    return TransientChannelError(
        _("rate limit: waiting for a free sending slot in %(seconds).0f s") % {"seconds": seconds},
        retry_after=retry_after,
        attempted=False,
    )


def _ttl(seconds: float) -> int:
    """A cache timeout that outlives ``seconds`` from now."""
    return max(1, math.ceil(seconds)) + int(HOLD_GRACE) + 5
