"""Telegram's rate limits held across processes: real Celery workers, a real Redis cache,
a real HTTP server playing the Bot API with Telegram's flood control.

Two worker processes of two pool processes each (four senders) share nothing but the
Redis cache (``RedisCache``, database 14, a key prefix of the test's own, whose keys
are deleted at the end). The stand-in (:class:`FloodControl`) logs each request's
arrival time and chat, and answers 429 with ``parameters.retry_after`` exactly when a
request breaks one of Telegram's limits, counted over the requests it accepted:

- a private chat: a message less than a second after the last one in that chat;
- a group or channel (negative id): a 21st message within a minute;
- the bot: a 31st message within a second (``overall`` = the configured rate);
- a flood the test declares: every request, whatever the chat, until it ends.

The channel runs at Telegram's own figures (30/s, 1/s per chat, 20/min per group):
no lower limits for speed. One burst of 1,000 notifications at 30 a second takes at
least 34 s: that is the price of proving the real figures, paid by one test.

Needs a Redis server: NOTIFY_TRACKING_TEST_REDIS_URL, or a redis:// broker in
NOTIFY_TRACKING_TEST_BROKER_URL (CI's PostgreSQL + Redis run); without either the tests
are skipped, saying so.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.db import transaction
from django.db.models import Max
from django.test import override_settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from notify_tracking import notify
from notify_tracking import status as st
from notify_tracking.models import Delivery
from tests.integration.services import BROKER_URL_VAR, REDIS_URL_VAR, redis_cache_url
from tests.telegram_stand_in import telegram_answer
from tests.testapp.models import Task
from tests.worker_process import (
    Worker,
    WorkerStarter,
    enqueue_to_broker,
    wait_until,
)

REDIS_URL = redis_cache_url()
pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        REDIS_URL is None,
        reason=f"needs a Redis server: set {REDIS_URL_VAR}, or a redis:// {BROKER_URL_VAR}",
    ),
]

TOKEN = "123456789:AAE-ratelimit-test-token"
PATH = f"/bot{TOKEN}/sendMessage"
WORKERS = 2
CONCURRENCY = 2
SENDERS = WORKERS * CONCURRENCY
#: Telegram's published limits, which are also the channel's defaults.
OVERALL = 30
PER_CHAT_SECONDS = 1.0
GROUP_COUNT, GROUP_SECONDS = 20, 60.0
SEND_TIMEOUT = 300


# --- the stand-in for the Bot API ---------------------------------------------------------


@dataclass
class Arrival:
    at: float  # time.monotonic() when the request reached the handler
    chat: str
    text: str
    refused: bool


@dataclass
class FloodControl:
    """sendMessage with Telegram's limits; a 429 for every request that breaks one."""

    overall: int = OVERALL
    #: After this many accepted messages, flood control holds the whole bot...
    flood_after: int | None = None
    #: ...for this many seconds.
    flood_seconds: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    flood_until: float = -math.inf
    accepted_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _recent: deque = field(default_factory=deque)  # accepted, last second
    _last_in_chat: dict = field(default_factory=dict)
    _group_recent: dict = field(default_factory=lambda: defaultdict(deque))

    def __call__(self, request: Request) -> Response:
        payload = json.loads(request.get_data())
        chat, text = str(payload["chat_id"]), payload["text"]
        with self.lock:
            now = time.monotonic()
            wait = self._wait(chat, now)
            self.arrivals.append(Arrival(now, chat, text, refused=wait > 0))
            if wait > 0:
                return telegram_answer(retry_after=max(1, math.ceil(wait)))
            self._accept(chat, now)
            self.accepted_count += 1
            if self.accepted_count == self.flood_after:
                self.flood_until = now + self.flood_seconds
            return telegram_answer(message_id=self.accepted_count)

    def _wait(self, chat: str, now: float) -> float:
        """Seconds this request is early by, or 0 when it breaks no limit."""
        waits = [self.flood_until - now]
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.overall:
            waits.append(self._recent[0] + 1.0 - now)
        if chat.startswith("-"):
            group = self._group_recent[chat]
            while group and group[0] <= now - GROUP_SECONDS:
                group.popleft()
            if len(group) >= GROUP_COUNT:
                waits.append(group[0] + GROUP_SECONDS - now)
        elif chat in self._last_in_chat:
            waits.append(self._last_in_chat[chat] + PER_CHAT_SECONDS - now)
        return max(0.0, *waits)

    def _accept(self, chat: str, now: float) -> None:
        self._recent.append(now)
        self._last_in_chat[chat] = now
        if chat.startswith("-"):
            self._group_recent[chat].append(now)

    # --- what the log says ---

    def accepted(self) -> list[Arrival]:
        with self.lock:
            return [arrival for arrival in self.arrivals if not arrival.refused]

    def refused(self) -> list[Arrival]:
        with self.lock:
            return [arrival for arrival in self.arrivals if arrival.refused]


def most_in_a_second(times: list[float]) -> int:
    """The most arrivals within any window of one second (open at its start)."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def closest_in_a_chat(arrivals: list[Arrival]) -> float:
    """The shortest time between two arrivals in one private chat."""
    by_chat = defaultdict(list)
    for arrival in arrivals:
        if not arrival.chat.startswith("-"):
            by_chat[arrival.chat].append(arrival.at)
    gaps = [b - a for times in by_chat.values() for a, b in itertools.pairwise(sorted(times))]
    return min(gaps, default=math.inf)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def redis_cache() -> Iterator[tuple[str, str]]:
    """(URL, key prefix): database 14, a prefix of this test's own; its keys go at the end."""
    import redis

    prefix = f"nt-ratelimit-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield REDIS_URL, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def telegram() -> Iterator[tuple[HTTPServer, FloodControl]]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    stand_in = FloodControl()
    server.expect_request(PATH, method="POST").respond_with_handler(stand_in)
    try:
        yield server, stand_in
    finally:
        server.clear()
        server.stop()


@pytest.fixture
def senders(
    request, transactional_db, redis_cache, telegram
) -> Iterator[Callable[[], list[Worker]]]:
    """``senders()``: start the worker processes, all on the Redis cache and the stand-in."""
    url, prefix = redis_cache
    server, _ = telegram
    options = {"BOT_TOKEN": TOKEN, "API_URL": server.url_for("").rstrip("/")}
    starter = WorkerStarter(request, "tests.integration.ratelimit_settings")
    env = {
        "NOTIFY_TRACKING_TEST_CACHE_URL": url,
        "NOTIFY_TRACKING_TEST_CACHE_PREFIX": prefix,
        "NOTIFY_TRACKING_TEST_TELEGRAM_OPTIONS": json.dumps(options),
    }

    def start() -> list[Worker]:
        workers = [starter.start(env, concurrency=CONCURRENCY, wait=False) for _ in range(WORKERS)]
        for worker in workers:
            worker.wait_ready()
        return workers

    telegram_channel = {"BACKEND": "notify_tracking.channels.telegram.TelegramChannel"}
    with (
        enqueue_to_broker(),
        override_settings(
            NOTIFY_TRACKING={
                "BASE_URL": "http://testserver",
                "CHANNELS": {"telegram": {**telegram_channel, "OPTIONS": options}},
            }
        ),
    ):
        try:
            yield start
        finally:
            starter.stop_all()


def report(capsys, line: str) -> None:
    """Print a measured figure in the test run's output, even when the test passes."""
    with capsys.disabled():
        print(f"\n[rate-limit figures] {line}")


def burst(plan: list[list[str]]) -> float:
    """notify() once per list of chats, all in one transaction: the sends are enqueued
    together when it commits. Returns the time of the commit (time.monotonic())."""
    with transaction.atomic():
        for number, chats in enumerate(plan):
            task = Task.objects.create(title=f"Task {number}")
            notify(task, chats, channel="telegram", subject=f"Task {number}", text=f"n{number}")
    return time.monotonic()


def nothing_left_to_send() -> bool:
    return not Delivery.objects.filter(status__in=st.SENDABLE).exists()


def realistic_plan(seed: int = 4) -> list[list[str]]:
    """1,000 messages in 200 notifications of 5 chats each, like a tracker's busy hour:
    4 leads who follow many tasks (20 messages each), 100 team members (4 each), 3 team
    groups (4 each) and 508 people who get one."""
    chats = (
        [f"1{lead:05d}" for lead in range(4) for _ in range(20)]
        + [f"2{member:05d}" for member in range(100) for _ in range(4)]
        + [f"-100{group:07d}" for group in range(3) for _ in range(4)]
        + [f"3{person:05d}" for person in range(508)]
    )
    assert len(chats) == 1000
    # Dealt round the notifications: one chat never twice in the same one.
    plan: list[list[str]] = [[] for _ in range(200)]
    for index, chat in enumerate(chats):
        plan[index % 200].append(chat)
    random.Random(seed).shuffle(plan)
    return plan


# --- the tests --------------------------------------------------------------------------


def test_a_burst_of_1000_at_telegram_figures_meets_no_flood_control(senders, telegram, capsys):
    _, stand_in = telegram
    senders()
    plan = realistic_plan()
    committed = burst(plan)
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, interval=0.5, what="1,000 sends")
    accepted, refused = stand_in.accepted(), stand_in.refused()
    first, last = min(a.at for a in accepted), max(a.at for a in accepted)
    rate = (len(accepted) - 1) / (last - first)
    attempts = Counter(Delivery.objects.values_list("attempts", flat=True))
    report(
        capsys,
        f"burst of 1000 at 30/s, 1/s per chat, 20/min per group, {SENDERS} sending "
        f"processes on Redis: {len(refused)} 429s; {rate:.1f} messages/s from first to "
        f"last; most in any second {most_in_a_second([a.at for a in stand_in.arrivals])}; "
        f"closest two in a chat {closest_in_a_chat(stand_in.arrivals):.3f} s; all sent "
        f"{last - committed:.1f} s after the commit; attempts per delivery {dict(attempts)}",
    )
    # A 429 needs a sending process held up for more than the margin (0.1 s) between
    # its turn and its arrival: none in the runs measured (the worst lateness was
    # 48 ms). Up to 3 keep one rare stall of a loaded CI machine from failing the
    # test; a limiter that does not hold across processes meets hundreds (212 before
    # turns were shared by every scope), and every 429 also counts below.
    assert len(refused) <= 3
    assert most_in_a_second([a.at for a in stand_in.arrivals]) <= OVERALL + len(refused)
    if not refused:
        assert closest_in_a_chat(stand_in.arrivals) >= PER_CHAT_SECONDS
    # Every delivery sent, once: each message arrived exactly once.
    statuses = Counter(Delivery.objects.values_list("status", flat=True))
    assert statuses == {st.SENT: 1000}
    sent = Counter((a.chat, a.text) for a in accepted)
    assert len(sent) == 1000 and max(sent.values()) == 1
    # Not slower than it must be: the line runs near the bot's 30 a second (the
    # margin keeps it under 27.3), and the busiest chats (20 messages) set no pace.
    assert rate >= 20
    assert Delivery.objects.aggregate(Max("attempts"))["attempts__max"] <= 3


def test_flood_control_of_the_whole_bot_pauses_every_chat_in_every_process(
    senders, telegram, capsys
):
    """Telegram's 429 may hold the bot as a whole. After the first one, no process sends
    to any chat until retry_after has passed; what was already on its way (one request
    per sending process at most) is refused too, then everything goes through."""
    _, stand_in = telegram
    stand_in.flood_after, stand_in.flood_seconds = 40, 3.0
    senders()
    plan = [[f"4{n:05d}" for n in range(start, start + 5)] for start in range(0, 150, 5)]
    burst(plan)
    wait_until(nothing_left_to_send, timeout=SEND_TIMEOUT, interval=0.5, what="150 sends")
    refused = stand_in.refused()
    first_429 = min(a.at for a in refused)
    during = [a for a in stand_in.arrivals if first_429 <= a.at < stand_in.flood_until]
    after = [a for a in stand_in.arrivals if a.at >= stand_in.flood_until]
    report(
        capsys,
        f"flood control of {stand_in.flood_seconds:.0f} s after 40 messages, {SENDERS} "
        f"sending processes: {len(refused)} 429s ({len(during)} requests during the flood); "
        f"first request after it {min(a.at for a in after) - stand_in.flood_until:.2f} s late",
    )
    assert 1 <= len(refused) <= SENDERS
    assert not [a for a in after if a.refused]
    assert Counter(Delivery.objects.values_list("status", flat=True)) == {st.SENT: 150}
    assert len({(a.chat, a.text) for a in stand_in.accepted()}) == 150
