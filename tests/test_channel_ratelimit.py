"""Rate limits: the shared line of turns, and bursts against a strict Telegram stand-in."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from notify_tracking.channels.ratelimit import Rate, RateLimiter, Scope
from notify_tracking.channels.telegram import TelegramChannel
from notify_tracking.exceptions import TransientChannelError
from notify_tracking.models import Delivery
from notify_tracking.sending import send_deliveries
from tests.channel_fixtures import (
    TELEGRAM_TOKEN,
    _fresh_rate_limits,  # noqa: F401  (autouse fixture)
    channels,
    queue,
    send,
)
from tests.telegram_stand_in import telegram_answer

BACKEND = "notify_tracking.channels.telegram.TelegramChannel"
PATH = f"/bot{TELEGRAM_TOKEN}/sendMessage"


# --- the rate and the line, on a fake clock ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("30/s", Rate(30, 1.0)),
        ("20/m", Rate(20, 60.0)),
        ("1/2s", Rate(1, 2.0)),
        (" 5 / h ", Rate(5, 3600.0)),
    ],
)
def test_rates_parse(text, rate):
    assert Rate.parse(text, "X") == rate


@pytest.mark.parametrize("text", ["30", "0/s", "-1/s", "1/d", "fast", 30])
def test_bad_rates_are_configuration_errors(text):
    with pytest.raises(ImproperlyConfigured, match="X must be a rate such as '30/s'"):
        Rate.parse(text, "X")


class FakeClock:
    def __init__(self, start=1_700_000_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def limiter(clock, max_wait=2.0, margin=0.0):
    """A limiter on the fake clock; without the jitter margin unless asked, so that
    turns fall on the rate's exact figures."""
    return RateLimiter(max_wait=max_wait, margin=margin, clock=clock, sleep=clock.sleep)


def test_a_free_scope_sends_at_once_and_a_burst_is_spaced(clock):
    line = limiter(clock)
    scope = Scope("bot", Rate(4, 1.0))
    turns = [line.reserve([scope]) - clock.now for _ in range(5)]
    assert turns == pytest.approx([0, 0.25, 0.5, 0.75, 1.0], abs=1e-5)


def test_a_send_waits_for_its_chat_and_for_the_bot(clock):
    line = limiter(clock)
    bot = Scope("bot", Rate(3, 1.0))

    def turn(chat):
        return line.reserve([Scope(f"chat:{chat}", Rate(1, 1.0)), bot]) - clock.now

    turns = [turn(chat) for chat in ("a", "b", "c", "a")]
    # b and c wait for the bot's next turns; a again waits a second for its chat.
    assert turns == pytest.approx([0, 1 / 3, 2 / 3, 1.0], abs=1e-5)


def test_a_near_turn_is_waited_for(clock):
    line = limiter(clock, max_wait=2.0)
    scope = [Scope("chat", Rate(1, 1.0))]
    line.wait_for_turn(scope, "d1")
    started = clock.now
    line.wait_for_turn(scope, "d2")
    assert clock.now - started == pytest.approx(1.0, abs=1e-5)


def test_a_far_turn_defers_and_is_kept_for_the_retry(clock):
    line = limiter(clock, max_wait=0.5)
    scope = [Scope("group", Rate(20, 60.0))]  # one message every 3 seconds
    line.wait_for_turn(scope, "first")
    first = clock.now
    with pytest.raises(TransientChannelError) as deferred:
        line.wait_for_turn(scope, "second")
    # The retry is asked for half of max_wait before the turn, so it sends on time.
    assert deferred.value.retry_after == pytest.approx(3.0 - 0.25, abs=1e-5)
    assert deferred.value.reason.startswith("rate limit: waiting for a free sending slot in ")
    with pytest.raises(TransientChannelError):
        line.wait_for_turn(scope, "third")  # queues behind "second"
    clock.sleep(deferred.value.retry_after)  # the retry of "second" arrives on time...
    line.wait_for_turn(scope, "second")  # ...and goes at its turn: it was held
    assert clock.now == pytest.approx(first + 3.0, abs=1e-5)


def test_a_held_turn_that_passed_is_given_back_and_taken_anew(clock):
    """A retry that comes late does not send on its old turn: the turn after it may
    already be near. It takes the first free one instead."""
    line = limiter(clock, max_wait=0.5)
    scope = [Scope("group", Rate(20, 60.0))]
    line.wait_for_turn(scope, "first")
    first = clock.now
    with pytest.raises(TransientChannelError):
        line.wait_for_turn(scope, "second")  # holds first + 3
    with pytest.raises(TransientChannelError):
        line.wait_for_turn(scope, "third")  # holds first + 6
    clock.sleep(4.0)  # "second" comes back a second after its turn
    assert line.turn(scope, "second") == pytest.approx(first + 9.0, abs=1e-5)
    # Its old turn was given back: a newcomer can use it no more (it has passed),
    # and "third" keeps its own.
    assert line.turn(scope, "third") == pytest.approx(first + 6.0, abs=1e-5)


def test_every_turn_is_clear_of_its_neighbours_whatever_the_order(clock):
    """A turn claimed far ahead (a busy chat) and turns claimed later before it: no
    two closer than the spacing, in the bot's scope as in the chat's."""
    line = limiter(clock)
    bot = Scope("bot", Rate(10, 1.0))
    turns = [line.reserve([Scope("busy", Rate(1, 1.0)), bot]) for _ in range(3)]
    for chat in range(25):
        turns.append(line.reserve([Scope(f"chat{chat}", Rate(1, 1.0)), bot]))
    gaps = [b - a for a, b in itertools.pairwise(sorted(turns))]
    assert min(gaps) >= 0.1 - 1e-6
    assert len(set(turns)) == 28


def test_a_long_line_for_the_bot_never_brings_two_sends_to_a_chat_closer(clock):
    """The chat's turn is the bot's turn: when the bot's line is 3 seconds long, two
    messages to one chat are still a second apart."""
    line = limiter(clock)
    bot = Scope("bot", Rate(30, 1.0))
    for chat in range(100):
        line.reserve([Scope(f"c{chat}", Rate(1, 1.0)), bot])
    first, second = (line.reserve([Scope("A", Rate(1, 1.0)), bot]) for _ in range(2))
    assert second - first >= 1.0 - 1e-6


def test_the_margin_stretches_each_window(clock):
    line = limiter(clock, margin=0.05)
    bot = Scope("bot", Rate(30, 1.0))
    turns = [line.reserve([bot]) for _ in range(31)]
    # 30 sends per 1.05 s: the 31st is 1.05 s after the first, never within a second.
    assert turns[30] - turns[0] == pytest.approx(1.05, abs=1e-5)
    assert line.spacing(Rate(1, 1.0)) == pytest.approx(1.05)


def test_a_pause_stops_the_scope_and_moves_held_turns(clock):
    line = limiter(clock, max_wait=10)
    chat = Scope("chat", Rate(1, 1.0))
    line.turn([chat], "held")
    line.pause(chat, 5)
    assert line.turn([chat], "held") >= clock.now + 5
    assert line.turn([Scope("other", Rate(1, 1.0))], "x") == clock.now


def test_a_scope_without_a_rate_can_still_be_paused(clock):
    line = limiter(clock, max_wait=0)
    scope = [Scope("chat", None)]
    line.wait_for_turn(scope, "a")
    line.wait_for_turn(scope, "b")  # no limit: no wait
    line.pause(scope[0], 3)
    with pytest.raises(TransientChannelError) as deferred:
        line.wait_for_turn(scope, "c")
    assert deferred.value.retry_after == pytest.approx(3)


def test_two_limiters_sharing_the_cache_share_the_line(clock):
    """Two workers: two limiter objects, one cache."""
    first, second = limiter(clock), limiter(clock)
    scope = Scope("bot", Rate(2, 1.0))
    turns = sorted(line.reserve([scope]) for line in (first, second, first, second))
    assert [b - a for a, b in itertools.pairwise(turns)] == pytest.approx([0.5] * 3, abs=1e-5)


# --- bursts against a strict stand-in ----------------------------------------------------


class StrictTelegram:
    """Answers 429 (like Telegram's flood control) past a limit per chat or overall,
    counted over the last second."""

    def __init__(self, per_chat: int, overall: int):
        self.per_chat, self.overall = per_chat, overall
        self.recent: deque[tuple[float, str]] = deque()
        self.served = {"ok": 0, "429": 0}
        self.lock = threading.Lock()

    def __call__(self, request):
        chat = str(json.loads(request.get_data())["chat_id"])
        with self.lock:
            now = time.monotonic()
            while self.recent and self.recent[0][0] < now - 1.0:
                self.recent.popleft()
            self.recent.append((now, chat))
            in_chat = sum(1 for _, other in self.recent if other == chat)
            if in_chat > self.per_chat or len(self.recent) > self.overall:
                self.served["429"] += 1
                return telegram_answer(retry_after=1)
            self.served["ok"] += 1
            return telegram_answer(message_id=self.served["ok"])


@pytest.fixture
def strict(httpserver):
    stand_in = StrictTelegram(per_chat=10, overall=23)
    httpserver.expect_request(PATH, method="POST").respond_with_handler(stand_in)
    return stand_in


def options(httpserver, **extra):
    return {
        "BOT_TOKEN": TELEGRAM_TOKEN,
        "API_URL": httpserver.url_for("").rstrip("/"),
        "RATE_LIMIT": "20/s",
        "RATE_LIMIT_PER_RECIPIENT": "8/s",
        "RATE_LIMIT_MAX_WAIT": 5,
        **extra,
    }


CHATS = ["1001", "1002", "1003"]


def test_a_burst_of_60_messages_meets_no_429(
    strict, httpserver, task, django_capture_on_commit_callbacks
):
    started = time.monotonic()
    with channels(telegram=(BACKEND, options(httpserver))):
        deliveries = []
        for number in range(20):
            deliveries += send(
                django_capture_on_commit_callbacks,
                task,
                CHATS,
                channel="telegram",
                text=f"update {number}",
            )
    elapsed = time.monotonic() - started
    assert strict.served == {"ok": 60, "429": 0}
    assert {d.status for d in deliveries} == {"sent"}
    assert all(d.attempts == 1 for d in deliveries)
    assert elapsed >= 59 / 20 - 0.1  # spaced by the overall limit of 20 a second


def test_without_limits_the_same_stand_in_does_answer_429(strict, httpserver, task):
    unlimited = options(
        httpserver, RATE_LIMIT=None, RATE_LIMIT_PER_RECIPIENT=None, RATE_LIMIT_MAX_WAIT=0
    )
    with channels(telegram=(BACKEND, unlimited)):
        deliveries = queue(task, ["1001", "1002"], channel="telegram")
        channel = TelegramChannel("telegram", **unlimited)
        results = []
        for _ in range(15):
            results += [result.status for _, result in channel.send(deliveries)]
    assert strict.served["429"] > 0  # the stand-in is strict enough to catch a storm
    assert "deferred" in results


def test_workers_sharing_the_cache_meet_no_429(strict, httpserver, task):
    """Four threads, each with its own channel object (like four worker processes),
    coordinate only through the cache."""
    config = options(httpserver)
    with channels(telegram=(BACKEND, config)):
        batches = [queue(task, CHATS, channel="telegram") for _ in range(16)]
    results: list[str] = []

    def worker(my_batches):
        channel = TelegramChannel("telegram", **config)
        for batch in my_batches:
            results.extend(result.status for _, result in channel.send(batch))

    threads = [threading.Thread(target=worker, args=(batches[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results.count("sent") == 48
    assert strict.served == {"ok": 48, "429": 0}


def test_a_turn_beyond_max_wait_defers_the_delivery(
    httpserver, task, django_capture_on_commit_callbacks
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"ok": True, "result": {"message_id": 1}}
    )
    slow_chat = options(httpserver, RATE_LIMIT_PER_RECIPIENT="1/m", RATE_LIMIT_MAX_WAIT=0.5)
    with channels(telegram=(BACKEND, slow_chat)):
        [first] = send(django_capture_on_commit_callbacks, task, ["1001"], channel="telegram")
        [second] = send(django_capture_on_commit_callbacks, task, ["1001"], channel="telegram")
    assert first.status == "sent"
    assert second.status == "deferred"
    assert second.error.startswith("rate limit: waiting for a free sending slot in ")
    assert 59 <= second.events.get(kind="deferred").details["retry_in_seconds"] <= 60
    assert len(httpserver.log) == 1


def test_waiting_for_a_turn_never_uses_up_the_attempts(
    httpserver, task, django_capture_on_commit_callbacks, settings
):
    """A message that waits in line is deferred again and again, but never tried: it
    stays deferred, with no attempt counted, long past MAX_ATTEMPTS retries."""
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"ok": True, "result": {"message_id": 1}}
    )
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "MAX_ATTEMPTS": 2}
    slow_chat = options(httpserver, RATE_LIMIT_PER_RECIPIENT="1/m", RATE_LIMIT_MAX_WAIT=0.5)
    with channels(telegram=(BACKEND, slow_chat)):
        send(django_capture_on_commit_callbacks, task, ["1001"], channel="telegram")
        [waiting] = send(django_capture_on_commit_callbacks, task, ["1001"], channel="telegram")
        for _ in range(4):  # each retry made due at once: its turn is still a minute away
            Delivery.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now())
            assert send_deliveries([waiting.pk]) == {"deferred": 1}
    waiting.refresh_from_db()
    assert (waiting.status, waiting.attempts) == ("deferred", 0)
    deferrals = list(waiting.events.filter(kind="deferred").order_by("pk"))
    assert len(deferrals) == 5
    assert all(e.details["waiting_for_turn"] and e.details["attempt"] == 0 for e in deferrals)
    assert len(httpserver.log) == 1  # only the first message went out


def test_a_429_from_the_provider_is_an_attempt(
    httpserver, task, django_capture_on_commit_callbacks
):
    """What the provider refused was tried: its deferral counts towards MAX_ATTEMPTS."""
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        telegram_answer(retry_after=30)
    )
    with channels(telegram=(BACKEND, options(httpserver))):
        [refused] = send(django_capture_on_commit_callbacks, task, ["1001"], channel="telegram")
    assert (refused.status, refused.attempts) == ("deferred", 1)
    assert "waiting_for_turn" not in refused.events.get(kind="deferred").details


def test_groups_have_their_own_slower_limit():
    channel = TelegramChannel("telegram", BOT_TOKEN="x", RATE_LIMIT_PER_GROUP="20/m")
    assert channel.rate_for("-1001234567890") == Rate(20, 60.0)
    assert channel.rate_for("@news") == Rate(20, 60.0)
    assert channel.rate_for("123456") == Rate(1, 1.0)


def test_a_pause_during_the_wait_for_a_turn_stops_the_send(clock):
    """A 429 met by another worker while this one sleeps for its turn: it does not send."""
    line = limiter(clock)
    chat = Scope("chat", Rate(1, 1.0))
    line.wait_for_turn([chat], "a")

    def sleep_and_meet_a_429(seconds):
        clock.sleep(seconds / 2)
        line.pause(chat, 5)
        clock.sleep(seconds / 2)

    line.sleep = sleep_and_meet_a_429
    with pytest.raises(TransientChannelError) as deferred:
        line.wait_for_turn([chat], "b")
    assert deferred.value.retry_after == pytest.approx(4.5, abs=1e-5)


def test_a_429_from_telegram_pauses_the_whole_bot(httpserver, task):
    """Telegram's flood control may hold the whole bot, and its answer does not say:
    after a 429 in one chat, the other chats wait for retry_after too."""
    arrivals: list[tuple[float, str]] = []

    def answer(request):
        arrivals.append((time.monotonic(), str(json.loads(request.get_data())["chat_id"])))
        if len(arrivals) == 1:
            return telegram_answer(retry_after=1)
        return telegram_answer(message_id=len(arrivals))

    httpserver.expect_request(PATH, method="POST").respond_with_handler(answer)
    config = options(httpserver)
    with channels(telegram=(BACKEND, config)):
        deliveries = queue(task, CHATS, channel="telegram")
        channel = TelegramChannel("telegram", **config)
        results = [result for _, result in channel.send(deliveries)]
    assert [result.status for result in results] == ["deferred", "sent", "sent"]
    assert results[0].retry_after == 1
    assert [chat for _, chat in arrivals] == CHATS
    assert arrivals[1][0] - arrivals[0][0] >= 1.0  # another chat, after the pause
