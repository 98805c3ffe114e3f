"""The open pixel endpoint: always the GIF, records each GET, nothing else."""

import logging
import time
from typing import ClassVar

import pytest
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.db import DatabaseError
from django.test import override_settings
from django.urls import reverse
from PIL import Image

from notify_tracking.models import Delivery, DeliveryEvent, PendingOpen
from notify_tracking.tasks import apply_pending_opens
from notify_tracking.tracking import pending, tokens
from notify_tracking.tracking.views import PIXEL_GIF
from tests.tracking_support import HTML, mark_sent, queued

pytestmark = pytest.mark.django_db

NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Robots-Tag": "noindex",
}
BROWSER_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Thunderbird/128.0"


@pytest.fixture
def delivery(task):
    (delivery,) = queued(task, ["bob@example.com"], html=HTML)
    return mark_sent(delivery)


def pixel_path(token: str) -> str:
    return reverse("notify_tracking:open", kwargs={"token": token})


def assert_is_the_pixel(response):
    assert response.status_code == 200
    assert response.content == PIXEL_GIF
    assert response["Content-Type"] == "image/gif"
    assert response["Content-Length"] == str(len(PIXEL_GIF))
    for name, value in NO_CACHE.items():
        assert response[name] == value


def run_eagerly(monkeypatch, eager: bool) -> None:
    """Celery runs tasks in the caller (these tests) or leaves them to a worker."""
    monkeypatch.setitem(apply_pending_opens.app.conf, "task_always_eager", eager)


def test_the_gif_is_a_transparent_one_pixel_image():
    import io

    image = Image.open(io.BytesIO(PIXEL_GIF))
    assert image.format == "GIF"
    assert image.size == (1, 1)
    assert image.convert("RGBA").getpixel((0, 0))[3] == 0


def test_each_get_records_an_open(client, delivery):
    url = pixel_path(tokens.sign_open(delivery.token))
    for _ in range(3):
        assert_is_the_pixel(client.get(url, HTTP_USER_AGENT=BROWSER_UA))
    delivery.refresh_from_db()
    assert delivery.status == "opened"
    assert delivery.open_count == 3
    assert delivery.machine_open_count == 0
    assert delivery.first_opened_at <= delivery.last_opened_at
    events = list(delivery.events.filter(kind="opened"))
    assert len(events) == 3
    assert all(event.source == "pixel" and not event.is_machine for event in events)
    assert events[0].user_agent == BROWSER_UA
    assert delivery.first_opened_at == events[0].occurred_at
    assert delivery.last_opened_at == events[-1].occurred_at


def test_a_load_costs_the_request_one_insert_while_a_task_is_on_its_way(
    client, delivery, django_assert_num_queries
):
    cache.set(pending.NUDGE_KEY, 1)  # a task to apply the opens is already enqueued
    url = pixel_path(tokens.sign_open(delivery.token))
    with django_assert_num_queries(1):  # INSERT of the PendingOpen, nothing else
        assert_is_the_pixel(client.get(url, HTTP_USER_AGENT=BROWSER_UA))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count) == ("sent", 0)  # not applied yet
    assert pending.waiting() == 1

    assert pending.apply_pending_opens() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count) == ("opened", 1)
    assert delivery.events.get(kind="opened").user_agent == BROWSER_UA
    assert pending.waiting() == 0


def test_a_load_without_a_task_on_its_way_enqueues_one(client, delivery):
    """In these tests Celery runs tasks at once: the nudge applies the open in the request."""
    cache.delete(pending.NUDGE_KEY)
    client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count) == ("opened", 1)
    assert pending.waiting() == 0


def test_loads_right_after_an_applied_nudge_each_enqueue_again(client, task):
    """Eager (as in these tests): the task ran in the nudge and cleared the flag, so the
    next load must nudge anew, however soon."""
    first, second = (mark_sent(d) for d in queued(task, ["a@example.com", "b@example.com"]))
    for delivery in (first, second):
        client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.open_count) == ("opened", 1)
    assert pending.waiting() == 0


def test_a_process_that_learns_when_the_task_starts_asks_the_cache_nothing_until_then(
    client, task, monkeypatch
):
    deliveries = [mark_sent(d) for d in queued(task, ["a@example.com", "b@example.com"])]
    starts = time.time() + 0.9
    cache.set(pending.NUDGE_KEY, starts)  # another process enqueued a task, due then
    run_eagerly(monkeypatch, False)  # as with a worker
    client.get(pixel_path(tokens.sign_open(deliveries[0].token)), HTTP_USER_AGENT=BROWSER_UA)
    assert time.monotonic() < pending._quiet_until <= time.monotonic() + 0.9
    run_eagerly(monkeypatch, True)  # to see a nudge

    cache.delete(NUDGE_KEY := pending.NUDGE_KEY)  # the cache is not asked again...
    client.get(pixel_path(tokens.sign_open(deliveries[1].token)), HTTP_USER_AGENT=BROWSER_UA)
    assert cache.get(NUDGE_KEY) is None  # ...so nothing enqueued, nothing applied:
    assert pending.waiting() == 2  # the task due at `starts` applies both

    time.sleep(max(0.0, starts - time.time()) + 0.05)
    client.get(pixel_path(tokens.sign_open(deliveries[0].token)), HTTP_USER_AGENT=BROWSER_UA)
    assert pending.waiting() == 0  # past it, a load nudges again (eager: applied now)
    assert Delivery.objects.get(pk=deliveries[0].pk).open_count == 2


def test_the_quiet_lasts_no_longer_than_the_fold_delay_whatever_the_flag_says(
    client, delivery, monkeypatch
):
    run_eagerly(monkeypatch, False)
    cache.set(pending.NUDGE_KEY, time.time() + 3600)  # another host's clock, far ahead
    before = time.monotonic()
    client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    assert before < pending._quiet_until <= time.monotonic() + pending.FOLD_DELAY


def test_eager_a_refused_add_makes_no_process_quiet(client, delivery):
    """Eager: a flag seen is another thread's task running now, not one due later."""
    cache.set(pending.NUDGE_KEY, time.time() + 0.9)
    client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    assert pending._quiet_until == 0.0


def test_a_flag_without_a_time_leaves_the_next_load_asking_the_cache(client, delivery, monkeypatch):
    run_eagerly(monkeypatch, False)  # eager never reads the flag's time
    cache.set(pending.NUDGE_KEY, 1)  # as an older version wrote it
    client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    assert pending._quiet_until < time.monotonic()


class CountingCache(LocMemCache):
    """Django's per-process cache, counting the requests made to it."""

    calls: ClassVar[list[str]] = []

    def add(self, *args, **kwargs):
        self.calls.append("add")
        return super().add(*args, **kwargs)

    def get(self, *args, **kwargs):
        self.calls.append("get")
        return super().get(*args, **kwargs)


COUNTING_CACHE = {"default": {"BACKEND": f"{__name__}.CountingCache", "LOCATION": "counting"}}


class FakeMonotonic:
    """``time`` for pending.py: the real wall clock, a monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.time = time.time

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(pending, "time", fake)
    return fake


@pytest.mark.parametrize(
    ("due_in", "quiet"),
    [
        (0.4, 0.4),  # due later: until then
        (3600, pending.FOLD_DELAY),  # another host's clock far ahead: FOLD_DELAY at most
        (-0.005, 0.005),  # a countdown task starting a few ms late: as long as it is late
        (-0.0001, pending.LATE_QUIET_MIN),
        (0.0, pending.LATE_QUIET_MIN),
        (-5, pending.LATE_QUIET),  # late by seconds: workers busy or stopped
    ],
)
def test_how_long_a_process_skips_the_cache(due_in, quiet):
    assert pending._quiet_for(due_in) == pytest.approx(quiet)


def test_a_task_running_late_quiets_the_process_for_a_tenth_of_the_delay(
    client, delivery, monkeypatch, clock
):
    """Its flag stays, with a time already past: one load asks add() (refused) and reads
    the flag's time; the loads of the next LATE_QUIET ask nothing; then one load asks
    again."""
    run_eagerly(monkeypatch, False)
    with override_settings(CACHES=COUNTING_CACHE):
        cache.set(pending.NUDGE_KEY, time.time() - 5)  # the task was due 5 s ago
        CountingCache.calls.clear()
        url = pixel_path(tokens.sign_open(delivery.token))
        first = clock.now
        for _ in range(5):
            client.get(url, HTTP_USER_AGENT=BROWSER_UA)
            clock.now += pending.LATE_QUIET / 10
        assert CountingCache.calls == ["add", "get"]
        clock.now = first + pending.LATE_QUIET
        client.get(url, HTTP_USER_AGENT=BROWSER_UA)
        assert CountingCache.calls == ["add", "get", "add", "get"]
        assert pending.waiting() == 6  # still for the late task


def test_the_late_task_started_the_next_load_after_the_quiet_enqueues_a_new_one(
    client, delivery, monkeypatch, clock
):
    """The late task started (it deleted its flag) while this process was quiet: the
    first load after the quiet finds no flag and enqueues a task for what waits."""
    enqueued = []
    run_eagerly(monkeypatch, False)
    monkeypatch.setattr(
        apply_pending_opens, "apply_async", lambda **options: enqueued.append(options)
    )
    cache.set(pending.NUDGE_KEY, time.time() - 5)
    url = pixel_path(tokens.sign_open(delivery.token))
    first = clock.now
    client.get(url, HTTP_USER_AGENT=BROWSER_UA)
    cache.delete(pending.NUDGE_KEY)  # the late task starts
    clock.now += pending.LATE_QUIET / 2
    client.get(url, HTTP_USER_AGENT=BROWSER_UA)  # quiet: no nudge
    assert enqueued == []
    clock.now = first + pending.LATE_QUIET
    client.get(url, HTTP_USER_AGENT=BROWSER_UA)
    assert [options["countdown"] for options in enqueued] == [pending.FOLD_DELAY]
    assert pending.waiting() == 3


def test_a_task_just_due_quiets_the_process_only_as_long_as_it_is_late(
    client, delivery, monkeypatch, clock
):
    """A countdown task starts a little after its time: a process that finds it due a
    few milliseconds ago asks again a few milliseconds later, not LATE_QUIET later."""
    run_eagerly(monkeypatch, False)
    with override_settings(CACHES=COUNTING_CACHE):
        cache.set(pending.NUDGE_KEY, time.time() - 0.005)
        CountingCache.calls.clear()
        url = pixel_path(tokens.sign_open(delivery.token))
        client.get(url, HTTP_USER_AGENT=BROWSER_UA)
        assert CountingCache.calls == ["add", "get"]
        assert clock.now + 0.005 <= pending._quiet_until < clock.now + pending.LATE_QUIET / 2
        clock.now = pending._quiet_until
        client.get(url, HTTP_USER_AGENT=BROWSER_UA)
        assert CountingCache.calls == ["add", "get", "add", "get"]


def test_a_process_that_enqueued_the_task_is_quiet_until_it_is_due(client, delivery, monkeypatch):
    """With a worker (not eager), the nudge's task starts FOLD_DELAY later and applies
    every open inserted before: this process's loads until then skip the cache."""
    enqueued = []
    run_eagerly(monkeypatch, False)
    monkeypatch.setattr(
        apply_pending_opens, "apply_async", lambda **options: enqueued.append(options)
    )
    before, wall = time.monotonic(), time.time()
    for _ in range(3):
        client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    assert [options["countdown"] for options in enqueued] == [pending.FOLD_DELAY]
    assert before + pending.FOLD_DELAY <= pending._quiet_until
    assert wall + pending.FOLD_DELAY <= cache.get(pending.NUDGE_KEY)  # the task's due time
    assert pending.waiting() == 3


def test_loads_waiting_for_many_deliveries_are_applied_together(
    client, task, django_assert_max_num_queries
):
    deliveries = [mark_sent(d) for d in queued(task, [f"r{i}@example.com" for i in range(30)])]
    cache.set(pending.NUDGE_KEY, 1)
    for delivery in deliveries:
        for _ in range(2):
            client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    # lock the rows, find the deliveries, lock them, insert the events, delete the
    # rows; per delivery one UPDATE, and the read-notice check of its first read
    with django_assert_max_num_queries(8 + 2 * len(deliveries)):
        assert pending.apply_pending_opens() == 60
    counts = Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list(
        "open_count", flat=True
    )
    assert list(counts) == [2] * 30
    assert DeliveryEvent.objects.filter(kind="opened").count() == 60


def test_opens_inserted_while_the_task_runs_are_left_to_the_task_they_nudge(
    client, delivery, monkeypatch
):
    """The task takes the opens waiting when it starts, in batches; it does not chase
    the ones arriving meanwhile, a few at a time: their own nudge enqueues a task."""
    enqueued = []
    run_eagerly(monkeypatch, False)
    monkeypatch.setattr(
        apply_pending_opens, "apply_async", lambda **options: enqueued.append(options)
    )
    cache.set(pending.NUDGE_KEY, 1)  # a task on its way (with no time: no quiet)
    url = pixel_path(tokens.sign_open(delivery.token))
    for _ in range(5):
        client.get(url, HTTP_USER_AGENT=BROWSER_UA)
    assert enqueued == []

    class FlagClearedJustAfterAnOpen:
        """One more open arrives while the flag still stands, so it nudges nothing: the
        task must clear the flag before it looks for the last waiting open."""

        def __getattr__(self, name):
            return getattr(cache, name)

        def delete(self, key):
            client.get(url, HTTP_USER_AGENT=BROWSER_UA)
            return cache.delete(key)

    monkeypatch.setattr(pending, "cache", FlagClearedJustAfterAnOpen())
    monkeypatch.setattr(pending, "FOLD_BATCH", 2)
    record_events = pending.record_events

    def record_while_another_open_arrives(events):
        client.get(url, HTTP_USER_AGENT=BROWSER_UA)
        return record_events(events)

    monkeypatch.setattr(pending, "record_events", record_while_another_open_arrives)
    # the 5, and the one that came just before the flag was cleared, in batches of 2
    assert pending.apply_pending_opens(limit=10) == 6
    assert pending.waiting() == 3
    assert [options["countdown"] for options in enqueued] == [pending.FOLD_DELAY]
    delivery.refresh_from_db()
    assert delivery.open_count == 6

    monkeypatch.setattr(pending, "record_events", record_events)
    monkeypatch.setattr(pending, "cache", cache)
    assert pending.apply_pending_opens() == 3  # the task those opens nudged
    delivery.refresh_from_db()
    assert delivery.open_count == 9
    assert pending.waiting() == 0


class PendingOpensReadFromAReplica:
    """A primary/replica router; the replica (not configured here) may lag."""

    def db_for_read(self, model, **hints):
        return "replica" if model is PendingOpen else None


def test_the_task_looks_for_the_last_waiting_open_where_opens_are_written(client, delivery):
    cache.set(pending.NUDGE_KEY, 1)
    client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)

    with override_settings(DATABASE_ROUTERS=[PendingOpensReadFromAReplica()]):
        assert pending.apply_pending_opens() == 1


def test_a_task_finding_nothing_waiting_records_nothing(django_assert_num_queries):
    with django_assert_num_queries(1):  # the highest waiting id, none
        assert pending.apply_pending_opens() == 0


def test_a_failure_while_applying_keeps_the_loads_for_the_next_run(client, delivery, monkeypatch):
    cache.set(pending.NUDGE_KEY, 1)
    client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)

    def broken(*args, **kwargs):
        raise DatabaseError("deadlock detected")

    with monkeypatch.context() as patched:
        patched.setattr("notify_tracking.tracking.pending.record_events", broken)
        with pytest.raises(DatabaseError):  # the task retries on a DatabaseError
            pending.apply_pending_opens()
    assert pending.waiting() == 1  # rolled back: still waiting, not lost
    assert not delivery.events.filter(kind="opened").exists()

    assert pending.apply_pending_opens() == 1
    delivery.refresh_from_db()
    assert delivery.open_count == 1


def test_a_long_user_agent_is_kept_truncated(client, delivery):
    client.get(
        pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT="Mozilla/5.0 " + "x" * 2000
    )
    event = delivery.events.get(kind="opened")
    assert len(event.user_agent) == 512
    assert event.user_agent.startswith("Mozilla/5.0 xxx")


def test_head_records_nothing(client, delivery):
    response = client.head(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response["Cache-Control"] == NO_CACHE["Cache-Control"]
    assert not delivery.events.filter(kind="opened").exists()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count, delivery.machine_open_count) == ("sent", 0, 0)


def test_other_methods_are_not_allowed(client, delivery):
    response = client.post(pixel_path(tokens.sign_open(delivery.token)))
    assert response.status_code == 405
    assert not delivery.events.filter(kind="opened").exists()


def tampered(token: str) -> str:
    return ("1" if token[0] != "1" else "2") + token[1:]


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda d: tampered(tokens.sign_open(d.token)), id="tampered"),
        pytest.param(lambda d: tokens.sign_open(d.token)[:-6], id="truncated"),
        pytest.param(lambda d: d.token.hex, id="unsigned-uuid"),
        pytest.param(lambda d: "garbage", id="garbage"),
        pytest.param(lambda d: "A" * 5000, id="oversized"),
        pytest.param(lambda d: tokens.sign_download(d.token, 1), id="other-purpose"),
    ],
)
def test_a_bad_token_answers_the_gif_without_touching_the_database(
    client, delivery, make_token, django_assert_num_queries
):
    url = pixel_path(make_token(delivery))
    with django_assert_num_queries(0):
        assert_is_the_pixel(client.get(url, HTTP_USER_AGENT=BROWSER_UA))
    assert not DeliveryEvent.objects.filter(kind="opened").exists()


def test_a_token_of_a_deleted_delivery_answers_the_gif_and_records_nothing(client, delivery):
    url = pixel_path(tokens.sign_open(delivery.token))
    Delivery.objects.filter(pk=delivery.pk).delete()
    assert_is_the_pixel(client.get(url, HTTP_USER_AGENT=BROWSER_UA))
    assert not DeliveryEvent.objects.exists()
    assert pending.waiting() == 0  # applied: nothing to record, and not kept


def test_a_recording_failure_still_answers_the_gif_and_is_logged(
    client, delivery, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr("notify_tracking.tracking.pending._insert", broken)
    with caplog.at_level(logging.ERROR, logger="notify_tracking.tracking.views"):
        response = client.get(
            pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA
        )
    assert_is_the_pixel(response)
    assert "could not record a pixel open" in caplog.text
    assert "disk I/O error" in caplog.text
    delivery.refresh_from_db()
    assert delivery.status == "sent"  # nothing recorded, nothing lost


def test_an_unreachable_broker_leaves_the_load_waiting_for_the_periodic_run(
    client, delivery, monkeypatch, caplog
):
    from notify_tracking import tasks

    def unreachable(*args, **kwargs):
        raise OSError("Connection refused")

    cache.delete(pending.NUDGE_KEY)
    monkeypatch.setattr(tasks.apply_pending_opens, "apply_async", unreachable)
    with caplog.at_level(logging.WARNING, logger="notify_tracking.tracking.pending"):
        assert_is_the_pixel(
            client.get(pixel_path(tokens.sign_open(delivery.token)), HTTP_USER_AGENT=BROWSER_UA)
        )
    assert "the periodic run will apply them" in caplog.text
    assert pending.waiting() == 1
    entry = tasks.beat_schedule()["notify_tracking.apply_pending_opens"]
    assert (entry["task"], entry["schedule"]) == (tasks.apply_pending_opens.name, 30.0)
    tasks.apply_pending_opens.apply()  # what beat runs every 30 seconds
    delivery.refresh_from_db()
    assert delivery.open_count == 1


def test_the_ip_address_is_not_stored_by_default(client, delivery):
    client.get(pixel_path(tokens.sign_open(delivery.token)), REMOTE_ADDR="203.0.113.9")
    assert delivery.events.get(kind="opened").ip_address is None


def test_the_ip_address_is_stored_when_asked(client, delivery, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "STORE_IP_ADDRESSES": True}
    client.get(
        pixel_path(tokens.sign_open(delivery.token)),
        REMOTE_ADDR="203.0.113.9",
        HTTP_USER_AGENT=BROWSER_UA,
    )
    assert delivery.events.get(kind="opened").ip_address == "203.0.113.9"


def test_client_ip_header_takes_the_last_entry(client, delivery, settings):
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "STORE_IP_ADDRESSES": True,
        "CLIENT_IP_HEADER": "HTTP_X_FORWARDED_FOR",
    }
    client.get(
        pixel_path(tokens.sign_open(delivery.token)),
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7",
        HTTP_USER_AGENT=BROWSER_UA,
    )
    assert delivery.events.get(kind="opened").ip_address == "203.0.113.7"


def test_a_pixel_of_a_delivery_whose_tracking_is_off_records_nothing(
    client, task, django_user_model
):
    from notify_tracking.models import TrackingPreference

    carol = django_user_model.objects.create_user("carol", "carol@example.com")
    TrackingPreference.objects.create(user=carol, allow_tracking=False)
    (delivery,) = queued(task, [carol], html=HTML)
    mark_sent(delivery)
    # Such a delivery's email has no pixel; a token made anyway records nothing.
    assert_is_the_pixel(client.get(pixel_path(tokens.sign_open(delivery.token))))
    assert not delivery.events.filter(kind="opened").exists()
