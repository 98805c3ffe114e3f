"""Sending faults found by the reliability tests, reproduced in process, one at a time.

Each test here pins one moment the fault tests (tests/reliability/) hit by chance, and
the fix it forced (channels/base.py, sending.py, channels/email.py).
"""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError, connection
from django.test import override_settings

from notify_tracking import notify, sending
from notify_tracking import status as st
from notify_tracking.channels.email import EmailChannel
from notify_tracking.models import Attachment, Delivery
from tests.reliability.fake_provider import accepted, running

DROPPED = "consuming input failed: server closed the connection unexpectedly"


def queued_delivery(task) -> Delivery:
    return notify(task, ["bob@example.com"], subject="Hi", text="Hello.").deliveries.get()


def fail_once(function, error):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return function(*args, **kwargs)

    return wrapper


def terminate_from_outside(django_connection) -> int:
    """End ``django_connection``'s PostgreSQL backend from another session; its pid."""
    import psycopg

    with django_connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    config = django_connection.settings_dict
    with psycopg.connect(
        dbname="postgres",
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            time.sleep(0.01)
    return pid


BUILT_ON_A_DEAD_CONNECTION = (
    "channels/base.py Channel.send_one catches every exception of build_message() and "
    "returns FAILED: a database error while the message is built (nothing was sent yet) "
    "fails the delivery for good instead of retrying it"
)


@pytest.mark.django_db
def test_a_database_error_while_a_message_is_built_is_temporary(task, monkeypatch):
    import notify_tracking.channels.email as email_channel

    delivery = queued_delivery(task)
    monkeypatch.setattr(
        email_channel,
        "tracked_content",
        fail_once(email_channel.tracked_content, OperationalError(DROPPED)),
    )
    sending.send_deliveries([delivery.pk])

    delivery.refresh_from_db()
    assert delivery.status in (st.QUEUED, st.DEFERRED), delivery.error
    assert not delivery.events.filter(kind__in=(st.SENT, st.FAILED)).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="drops a PostgreSQL connection")
@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_while_a_message_is_built_does_not_fail_the_delivery(
    task, monkeypatch
):
    build = EmailChannel.build_message
    dropped = []

    def build_on_a_dropped_connection(self, delivery, *args, **kwargs):
        if not dropped:  # what an administrator, a failover or a proxy restart does
            dropped.append(terminate_from_outside(connection))
            # A channel that reads the database while it builds (the email channel's
            # reads are done before, with the batch): this query meets the dropped
            # connection.
            Attachment.objects.filter(notification_id=delivery.notification_id).count()
        return build(self, delivery, *args, **kwargs)

    monkeypatch.setattr(EmailChannel, "build_message", build_on_a_dropped_connection)
    try:
        # Committed at once: notify() enqueues the send, which runs here (eager Celery).
        delivery = queued_delivery(task)
    finally:
        connection.close()

    assert dropped
    delivery.refresh_from_db()
    assert delivery.status in (st.QUEUED, st.DEFERRED), delivery.error


@pytest.mark.django_db
def test_a_result_recorded_again_after_an_unconfirmed_commit_is_stored_once(task, monkeypatch):
    delivery = queued_delivery(task)
    record = sending.record_event
    calls = []

    def committed_then_dropped(*args, **kwargs):
        event = record(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # the COMMIT went through; its answer never came back
            raise OperationalError(DROPPED)
        return event

    monkeypatch.setattr(sending, "RECORD_PAUSE", 0.01)
    monkeypatch.setattr(sending, "record_event", committed_then_dropped)
    sending.send_deliveries([delivery.pk])

    assert len(calls) == 2  # recorded, then recorded again
    assert delivery.events.filter(kind=st.SENT).count() == 1


@pytest.mark.django_db
def test_a_provider_that_does_not_answer_in_time_says_so(task):
    with running() as provider:
        provider.rules["bob@example.com"] = lambda attempt: (2.0, 200, accepted("bob@example.com"))
        anymail = {
            "POSTMARK_SERVER_TOKEN": "token",
            "POSTMARK_API_URL": provider.url,
            "REQUESTS_TIMEOUT": 0.3,
        }
        delivery = queued_delivery(task)
        with override_settings(
            EMAIL_BACKEND="anymail.backends.postmark.EmailBackend", ANYMAIL=anymail
        ):
            sending.send_deliveries([delivery.pk])

    delivery.refresh_from_db()
    assert delivery.status == st.DEFERRED  # a timeout is temporary: retried
    assert "timed out" in delivery.error.lower(), delivery.error
