"""The app behind the primary/replica router of Django's multi-database docs: reads go
to "replica", writes to "default".

"replica" is a second connection to the test database (settings: TEST MIRROR), so it
shows what is committed and nothing else, as a replica without lag does. Inside
``lagging()`` it shows the database as it was when the block began, as a replica a
few milliseconds behind does. Whatever the app reads in order to write must come
from where it writes (``models.write_db()``).
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connections, transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from notify_tracking import notify, read_notices, record_event, service
from notify_tracking.models import Delivery, DeliveryEvent, TrackingPreference, write_db
from notify_tracking.retention import PLACEHOLDER_PREFIX, purge
from notify_tracking.sending import send_deliveries
from notify_tracking.service import NewEvent, record_events
from notify_tracking.tracking import tokens
from tests.activity_support import make_notification
from tests.esp_payloads import NOW, post_sendgrid, send, sendgrid_event
from tests.tracking_support import mark_sent, queued

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class PrimaryReplicaRouter:
    def db_for_read(self, model, **hints):
        return "replica"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"


@pytest.fixture(autouse=True)
def replica_router():
    primary = connections["default"]
    sqlite = primary.vendor == "sqlite"
    if sqlite:  # a reader's snapshot must not block the writer (lagging())
        with primary.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.PrimaryReplicaRouter"]):
        assert Delivery.objects.all().db == "replica"
        yield
    connections["replica"].close()
    if sqlite:  # back to the suite's mode; it switches only with no other connection open
        with primary.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=DELETE")
            mode = cursor.fetchone()[0]
        assert mode == "delete", f"the test database stayed in journal mode {mode!r}"


@contextlib.contextmanager
def lagging():
    """The replica shows the database as it is now, until the block ends."""
    replica = connections["replica"]
    replica.ensure_connection()
    raw = replica.connection
    if replica.vendor == "postgresql":
        raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    else:
        raw.execute("BEGIN")
    raw.execute("SELECT COUNT(*) FROM notify_tracking_delivery").fetchall()  # the snapshot
    try:
        yield
    finally:
        raw.execute("ROLLBACK")


@contextlib.contextmanager
def at_most_queries(limit: int):
    """Fails, instead of looping for ever, when the code inside keeps querying."""
    count = 0

    def counting(execute, sql, params, many, context):
        nonlocal count
        count += 1
        if count > limit:
            raise AssertionError(f"over {limit} queries: a loop that does not end")
        return execute(sql, params, many, context)

    with contextlib.ExitStack() as stack:
        for alias in ("default", "replica"):
            stack.enter_context(connections[alias].execute_wrapper(counting))
        yield


def queued_delivery(task, monkeypatch, **kwargs) -> Delivery:
    """A delivery notified but not sent yet (its send task not run)."""
    monkeypatch.setattr(service, "_enqueue", lambda ids_by_channel: None)
    notify(task, ["bob@example.com"], subject="s", text="t", **kwargs)
    return Delivery.objects.using("default").get()


def test_an_event_older_than_the_last_is_applied_with_the_others(task):
    """It makes the summary be recomputed from the log, inside the transaction that
    stores it: from the primary, where that event already is."""
    notify(task, ["bob@example.com"], subject="s", text="t")  # sent at once (eager)
    delivery = Delivery.objects.using("default").get()
    assert delivery.status == "sent"
    earlier = delivery.sent_at - dt.timedelta(seconds=1)
    record_event(delivery, "delivered", source="esp", occurred_at=earlier)
    delivery = Delivery.objects.using("default").get()
    assert (delivery.status, delivery.delivered_at) == ("delivered", earlier)


def test_a_send_is_not_lost_while_the_replica_lags(task, monkeypatch):
    """The claim is an UPDATE on the primary; the claimed rows are read back there."""
    delivery = queued_delivery(task, monkeypatch)
    with lagging():
        outcome = send_deliveries([delivery.pk])
    delivery = Delivery.objects.using("default").get()
    assert outcome == {"sent": 1}
    assert (len(mail.outbox), delivery.status, delivery.attempts) == (1, "sent", 1)


def test_a_read_notice_is_sent_while_the_replica_lags(task, monkeypatch):
    """The read is committed a moment before the notice's task reads it."""
    sam = User.objects.create_user("sam", "sam@example.com", "pw")
    TrackingPreference.objects.create(user=sam, read_notice="instant")
    notify(task, ["bob@example.com"], subject="s", text="t", html="<p>x</p>", sender=sam)
    delivery = Delivery.objects.using("default").get()
    queued = []
    monkeypatch.setattr(read_notices, "_enqueue_instant", queued.append)
    with lagging():  # the replica does not show the read yet
        record_event(
            delivery,
            "opened",
            source="pixel",
            user_agent=BROWSER,
            occurred_at=timezone.now() + dt.timedelta(minutes=1),
        )
        assert queued == [delivery.pk]
        mail.outbox.clear()
        assert read_notices.send_instant_notice(delivery.pk) is True
    assert [message.to for message in mail.outbox] == [["sam@example.com"]]


def test_a_webhook_event_of_a_message_just_sent_is_matched(
    client, task, django_capture_on_commit_callbacks
):
    with lagging():  # the replica shows no delivery at all
        send(task, ["bob@example.com"], django_capture_on_commit_callbacks)
        delivery = Delivery.objects.using("default").get()
        event = sendgrid_event(delivery, "delivered", NOW)
        with django_capture_on_commit_callbacks(execute=True):
            assert post_sendgrid(client, [event]).status_code == 200
    delivery = Delivery.objects.using("default").get()
    assert delivery.status == "delivered"


def test_a_duplicate_is_stored_once_while_the_replica_lags(task):
    notify(task, ["bob@example.com"], subject="s", text="t")
    delivery = Delivery.objects.using("default").get()
    with lagging():  # the replica never shows the first copy
        record_event(delivery, "delivered", source="esp", provider_event_id="evt-1")
        at = timezone.now()
        record_events(
            [
                NewEvent(delivery.pk, "delivered", "esp", at, provider_event_id="evt-1"),
                NewEvent(delivery.pk, "opened", "esp", at, provider_event_id="evt-2"),
            ]
        )
    stored = DeliveryEvent.objects.using("default").filter(provider_event_id__startswith="evt-")
    assert sorted(stored.values_list("provider_event_id", flat=True)) == ["evt-1", "evt-2"]


LINKS_HTML = (
    '<html><body><a href="https://example.com/one">1</a> <a href="https://example.com/two">2</a>'
    "</body></html>"
)


def test_a_link_scanner_is_recognised_while_the_replica_lags(client, task):
    """Its clicks were committed a moment before the last one completes the burst."""
    (delivery,) = queued(task, ["bob@example.com"], html=LINKS_HTML)
    mark_sent(delivery)
    with lagging():
        for url in ("https://example.com/one", "https://example.com/two"):
            token = tokens.sign_click(delivery.token, url)
            client.get(reverse("notify_tracking:click", args=[token]), HTTP_USER_AGENT=BROWSER)
    clicks = DeliveryEvent.objects.using("default").filter(kind="clicked").order_by("pk")
    assert [click.is_machine for click in clicks] == [True, True]
    assert Delivery.objects.using("default").get().status == "sent"


def test_anonymising_counts_each_delivery_once_while_the_replica_lags(task):
    now = timezone.now()
    addresses = ["a@example.com", "b@example.com", "c@example.com"]
    make_notification(task, addresses, age=dt.timedelta(days=100), now=now)
    # The replica keeps showing the deliveries as they were: a batch read from it
    # would never empty, and the purge would loop, so the queries are bounded.
    with lagging(), at_most_queries(200):
        report = purge(mode="anonymise", now=now, batch_size=2)
    assert report.deliveries == 3
    recipients = Delivery.objects.using("default").values_list("recipient", flat=True)
    assert all(recipient.startswith(PLACEHOLDER_PREFIX) for recipient in recipients)


def test_a_refusal_of_tracking_holds_at_once(task):
    bob = User.objects.create_user("bob", "bob@example.com", "pw")
    with lagging():  # the replica does not show the refusal yet
        TrackingPreference.objects.create(user=bob, allow_tracking=False)
        notify(task, [bob], subject="s", text="t", html=LINKS_HTML)
    delivery = Delivery.objects.using("default").get()
    assert (delivery.track_opens, delivery.track_clicks) == (False, False)


class HostRollsBack(Exception):
    pass


class AppOnReplicaRouter:
    """The app's models in a database of their own ("replica" here: a second connection
    to the test database), everything else in "default"."""

    def _route(self, model, **hints):
        return "replica" if model._meta.app_label == "notify_tracking" else "default"

    db_for_read = db_for_write = _route

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"


@pytest.mark.skipif(
    connections["default"].vendor == "sqlite",
    reason="two connections to one SQLite file cannot both hold a write transaction",
)
def test_a_send_waits_for_the_hosts_transaction_too(task, monkeypatch):
    """With the app's models in a database of their own, notify() inside the host's
    atomic() sends nothing before the host commits, and nothing if it rolls back."""
    enqueued = []
    monkeypatch.setattr(service, "_enqueue", enqueued.append)
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.AppOnReplicaRouter"]):
        assert write_db() == "replica"
        with pytest.raises(HostRollsBack), transaction.atomic():  # on "default"
            notify(task, ["bob@example.com"], subject="s", text="t")
            raise HostRollsBack
        assert enqueued == []
        with transaction.atomic():
            notify(task, ["carol@example.com"], subject="s", text="t")
            assert enqueued == []
        assert len(enqueued) == 1
