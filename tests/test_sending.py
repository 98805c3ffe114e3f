"""Sending: a real SMTP server (aiosmtpd) and a provider API served on localhost.

The Celery tasks run eagerly here; tests/integration/ runs them in a real worker.
"""

import datetime as dt
import itertools
import socket
import uuid
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from django.core.mail.backends.base import BaseEmailBackend
from django.test import override_settings
from django.utils import timezone

from notify_tracking import notify, sending, tasks
from notify_tracking.models import Delivery, DeliveryEvent

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptedHandler:
    """An SMTP server that answers RCPT TO as scripted per address, and keeps messages."""

    def __init__(self):
        self.messages = []
        self.rcpt_answers: dict[str, list[str]] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answers = self.rcpt_answers.get(address)
        if answers:
            return answers.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


@pytest.fixture
def smtp():
    handler = ScriptedHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=controller.port,
        EMAIL_TIMEOUT=5,
    ):
        yield handler
    controller.stop()


def send_now(task, recipients, capture, **kwargs):
    with capture(execute=True):
        return notify(task, recipients, subject="S", text="T", **kwargs)


def make_due(delivery):
    past = timezone.now() - dt.timedelta(seconds=1)
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=past)


def test_sent_through_a_real_smtp_server(task, smtp, django_capture_on_commit_callbacks):
    notification = send_now(
        task, ["bob@example.com", "eve@example.com"], django_capture_on_commit_callbacks
    )

    deliveries = list(notification.deliveries.order_by("recipient"))
    assert [d.status for d in deliveries] == ["sent", "sent"]
    assert all(d.sent_at and d.attempts == 1 for d in deliveries)
    received = {m["Message-ID"]: m["To"] for m in smtp.messages}
    assert received == {d.email_message_id: d.recipient for d in deliveries}


def test_temporary_refusal_defers_and_a_retry_sends(task, smtp, django_capture_on_commit_callbacks):
    smtp.rcpt_answers["bob@example.com"] = ["451 4.3.0 Mailbox busy, try later"]
    before = timezone.now()
    notification = send_now(task, ["bob@example.com"], django_capture_on_commit_callbacks)

    delivery = notification.deliveries.get()
    assert delivery.status == "deferred"
    assert "451" in delivery.error and "Mailbox busy" in delivery.error
    assert delivery.next_attempt_at > before + dt.timedelta(seconds=10)  # backoff, not now
    event = delivery.events.get(kind="deferred")
    assert event.details["attempt"] == 1 and event.details["retry_in_seconds"] >= 15
    assert smtp.messages == []

    # The eager retry came too early and was refused by the claim; once due, it sends.
    assert sending.send_deliveries([delivery.pk]) == {}
    make_due(delivery)
    assert sending.send_deliveries([delivery.pk]) == {"sent": 1}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error, delivery.attempts) == ("sent", "", 2)
    assert len(smtp.messages) == 1


@override_settings(NOTIFY_TRACKING={"RETRY_BACKOFF": 1, "RETRY_BACKOFF_MAX": 1, "MAX_ATTEMPTS": 3})
def test_an_eager_retry_due_soon_waits_for_its_time(task, smtp, django_capture_on_commit_callbacks):
    """CELERY_TASK_ALWAYS_EAGER (as here) runs a retry at once, whatever its countdown:
    a retry due within seconds must still come at its time, as on a worker, and not
    spend every attempt in a row; nor run inside its batch, whose other deliveries
    are still being sent over the batch's connection."""
    smtp.rcpt_answers["bob@example.com"] = ["451 4.3.0 Mailbox busy, try later"] * 3
    notification = send_now(
        task, ["bob@example.com", "eve@example.com"], django_capture_on_commit_callbacks
    )
    eve = notification.deliveries.get(recipient="eve@example.com")
    assert (eve.status, eve.attempts, eve.error) == ("sent", 1, "")
    delivery = notification.deliveries.get(recipient="bob@example.com")
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    events = list(delivery.events.order_by("occurred_at", "pk"))
    assert [event.kind for event in events] == ["deferred", "deferred", "failed"]
    for deferral, following in itertools.pairwise(events):
        waited = (following.occurred_at - deferral.occurred_at).total_seconds()
        assert waited >= deferral.details["retry_in_seconds"] - 0.05  # rounded to 0.1 s


@override_settings(NOTIFY_TRACKING={"RETRY_BACKOFF": 0, "RETRY_BACKOFF_MAX": 0, "MAX_ATTEMPTS": 3})
def test_a_burst_of_eager_retries_due_at_once_all_run_after_the_batch(
    task, smtp, django_capture_on_commit_callbacks
):
    """A countdown of 0 is a retry too (RETRY_BACKOFF 0, or Retry-After: 0); and 300
    retries are run one after another, not each inside the one before."""
    addresses = [f"user{n}@example.com" for n in range(150)]
    for address in addresses:
        smtp.rcpt_answers[address] = ["451 4.3.0 Mailbox busy, try later"] * 2
    notification = send_now(task, addresses, django_capture_on_commit_callbacks)
    outcome = sorted(notification.deliveries.values_list("status", "attempts").distinct())
    assert outcome == [("sent", 3)]
    assert len(smtp.messages) == 150
    assert tasks._eager.retries == []


@override_settings(NOTIFY_TRACKING={"RETRY_BACKOFF": 0, "RETRY_BACKOFF_MAX": 0})
def test_the_retries_of_a_failed_eager_send_task_are_left_to_the_sweep(
    task, smtp, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    smtp.rcpt_answers["bob@example.com"] = ["451 4.3.0 Mailbox busy, try later"]
    recorded = []
    original = sending._record_persistently

    def failing_second(delivery, result):
        recorded.append(delivery.recipient)
        if len(recorded) == 2:
            raise RuntimeError("the database went away")
        return original(delivery, result)

    monkeypatch.setattr(sending, "_record_persistently", failing_second)
    # enqueue_send() logs the error of the eager task, as it logs a broker's.
    send_now(task, ["bob@example.com", "eve@example.com"], django_capture_on_commit_callbacks)

    assert recorded == ["bob@example.com", "eve@example.com"]
    assert tasks._eager.retries == []  # not carried into the next task, or test
    assert "1 deliveries it was to retry are left to the sweep" in caplog.text
    assert "the eager send task of 2 deliveries failed" in caplog.text
    bob = Delivery.objects.get(recipient="bob@example.com")
    assert (bob.status, bob.attempts) == ("deferred", 1)


def test_an_eager_retry_due_later_is_left_to_the_sweep(
    task, smtp, caplog, django_capture_on_commit_callbacks
):
    smtp.rcpt_answers["bob@example.com"] = ["451 4.3.0 Mailbox busy, try later"]
    delivery = send_now(task, ["bob@example.com"], django_capture_on_commit_callbacks)
    delivery = delivery.deliveries.get()
    assert (delivery.status, delivery.attempts) == ("deferred", 1)
    assert "left to the sweep" in caplog.text
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(hours=1)  # overdue: the sweep's
    )
    assert sending.sweep_stuck() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert len(smtp.messages) == 1


def test_permanent_refusal_is_rejected_with_the_server_reason(
    task, smtp, django_capture_on_commit_callbacks
):
    smtp.rcpt_answers["nobody@example.com"] = ["550 5.1.1 No such user here"]
    notification = send_now(task, ["nobody@example.com"], django_capture_on_commit_callbacks)
    delivery = notification.deliveries.get()
    assert delivery.status == "rejected"
    assert "550" in delivery.error and "No such user here" in delivery.error


@override_settings(NOTIFY_TRACKING={"MAX_ATTEMPTS": 2})
def test_unreachable_server_gives_up_after_max_attempts(task, django_capture_on_commit_callbacks):
    closed = free_port()
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=closed,
        EMAIL_TIMEOUT=2,
    ):
        delivery = send_now(
            task, ["bob@example.com"], django_capture_on_commit_callbacks
        ).deliveries.get()
        assert delivery.status == "deferred"
        assert "could not reach the mail server" in delivery.error
        make_due(delivery)
        sending.send_deliveries([delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "gave up after 2 attempts" in delivery.error
    assert list(delivery.events.values_list("kind", flat=True)) == ["deferred", "failed"]


class ExplodingBackend(BaseEmailBackend):
    def send_messages(self, messages):
        raise RuntimeError("backend bug")


@override_settings(EMAIL_BACKEND="tests.test_sending.ExplodingBackend")
def test_an_unexpected_error_fails_the_delivery_with_a_reason(
    task, django_capture_on_commit_callbacks
):
    delivery = send_now(
        task, ["bob@example.com"], django_capture_on_commit_callbacks
    ).deliveries.get()
    assert delivery.status == "failed"
    assert delivery.error == "RuntimeError: backend bug"


# --- a provider API (anymail's Postmark backend) served on localhost -------------------

RECIPIENT = "bob@example.com"


@pytest.fixture
def postmark(httpserver):
    with override_settings(
        EMAIL_BACKEND="anymail.backends.postmark.EmailBackend",
        ANYMAIL={
            "POSTMARK_SERVER_TOKEN": "test-token",
            "POSTMARK_API_URL": httpserver.url_for("/"),
        },
    ):
        yield httpserver


def answer(server, status, body):
    server.expect_oneshot_request("/email", method="POST").respond_with_json(body, status=status)


def test_provider_accepts_and_its_message_id_is_stored(
    task, postmark, django_capture_on_commit_callbacks
):
    answer(postmark, 200, {"ErrorCode": 0, "Message": "OK", "MessageID": "pm-42", "To": RECIPIENT})
    delivery = send_now(task, [RECIPIENT], django_capture_on_commit_callbacks).deliveries.get()
    assert (delivery.status, delivery.message_id) == ("sent", "pm-42")
    request, _ = postmark.log[0]
    assert request.json["To"] == RECIPIENT
    assert request.json["Headers"] == [{"Name": "Message-ID", "Value": delivery.email_message_id}]


def test_a_message_id_too_long_to_store_is_left_out_and_the_send_recorded(
    task, postmark, django_capture_on_commit_callbacks, caplog
):
    long_id = "pm-" + "9" * 300
    answer(postmark, 200, {"ErrorCode": 0, "Message": "OK", "MessageID": long_id, "To": RECIPIENT})
    delivery = send_now(task, [RECIPIENT], django_capture_on_commit_callbacks).deliveries.get()
    # Sent, and recorded so: never sent again for want of a place to keep the id.
    assert (delivery.status, delivery.message_id, delivery.attempts) == ("sent", "", 1)
    assert "the provider's message id is 303 characters long" in caplog.text
    assert len(postmark.log) == 1


def test_provider_rejects_an_inactive_recipient(task, postmark, django_capture_on_commit_callbacks):
    message = (
        "You tried to send to a recipient that has been marked as inactive.\n"
        f"Found inactive addresses: {RECIPIENT}.\n Inactive recipients are ones that have "
        "generated a hard bounce or a spam complaint."
    )
    answer(postmark, 422, {"ErrorCode": 406, "Message": message})
    delivery = send_now(task, [RECIPIENT], django_capture_on_commit_callbacks).deliveries.get()
    assert delivery.status == "rejected"
    assert "marked as inactive" in delivery.error


@pytest.mark.parametrize("status", [500, 503, 429])
def test_provider_outage_or_rate_limit_is_retried(
    task, postmark, status, django_capture_on_commit_callbacks
):
    answer(postmark, status, {"ErrorCode": 100, "Message": "Maintenance"})
    delivery = send_now(task, [RECIPIENT], django_capture_on_commit_callbacks).deliveries.get()
    assert delivery.status == "deferred"
    assert f"HTTP {status}" in delivery.error
    assert "test-token" not in delivery.error


def test_provider_refusing_the_request_fails_it(task, postmark, django_capture_on_commit_callbacks):
    answer(postmark, 422, {"ErrorCode": 300, "Message": "Invalid 'From' address: 'x'."})
    delivery = send_now(task, [RECIPIENT], django_capture_on_commit_callbacks).deliveries.get()
    assert delivery.status == "failed"
    assert "Invalid 'From' address" in delivery.error and "HTTP 422" in delivery.error


# --- claims, backoff, sweep -------------------------------------------------------------


def test_a_claimed_delivery_cannot_be_claimed_again_until_its_claim_expires(task):
    delivery = notify(task, ["bob@example.com"], text="T").deliveries.get()
    [claimed] = sending.claim([delivery.pk])
    assert claimed.attempts == 1
    assert sending.claim([delivery.pk]) == []
    Delivery.objects.filter(pk=delivery.pk).update(
        claimed_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert [d.pk for d in sending.claim([delivery.pk])] == [delivery.pk]


def test_a_sent_delivery_is_never_claimed_again(task, django_capture_on_commit_callbacks):
    delivery = send_now(
        task, ["bob@example.com"], django_capture_on_commit_callbacks
    ).deliveries.get()
    assert delivery.status == "sent"
    assert sending.claim([delivery.pk]) == []
    assert sending.send_deliveries([delivery.pk]) == {}


@override_settings(NOTIFY_TRACKING={"RETRY_BACKOFF": 30, "RETRY_BACKOFF_MAX": 600})
def test_retry_delay_grows_exponentially_with_jitter_and_a_cap():
    for attempt, full in [(1, 30), (2, 60), (3, 120), (6, 600), (12, 600)]:
        delays = [sending.retry_delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), attempt
        assert len(set(delays)) > 100  # jittered
    assert sending.retry_delay(3, retry_after=7) == 7.0


@override_settings(NOTIFY_TRACKING={"STUCK_AFTER": 60})
def test_sweep_enqueues_only_overdue_unclaimed_deliveries(task, django_capture_on_commit_callbacks):
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    stuck = notify(task, ["stuck@example.com"], text="T").deliveries.get()
    fresh = notify(task, ["fresh@example.com"], text="T").deliveries.get()
    held = notify(task, ["held@example.com"], text="T").deliveries.get()
    Delivery.objects.filter(pk__in=[stuck.pk, held.pk]).update(next_attempt_at=long_ago)
    Delivery.objects.filter(pk=held.pk).update(
        claimed_until=timezone.now() + dt.timedelta(minutes=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert sending.sweep_stuck() == 1  # eager: the re-enqueued send runs at once

    statuses = dict(Delivery.objects.values_list("recipient", "status"))
    assert statuses == {
        "stuck@example.com": "sent",
        "fresh@example.com": "queued",
        "held@example.com": "queued",
    }
    assert DeliveryEvent.objects.filter(delivery=fresh).count() == 0


def test_a_delay_reported_after_hand_off_is_never_resent(task, django_capture_on_commit_callbacks):
    """A provider's or DSN's 'deferred' after sending is the provider's to retry, not ours."""
    from notify_tracking import record_event

    delivery = send_now(
        task, ["bob@example.com"], django_capture_on_commit_callbacks
    ).deliveries.get()
    record_event(delivery, "deferred", source="dsn", error="4.4.1 no answer from host")
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(days=1)
    )
    assert Delivery.objects.get(pk=delivery.pk).status == "deferred"

    assert sending.send_deliveries([delivery.pk]) == {}
    with override_settings(NOTIFY_TRACKING={"STUCK_AFTER": 1}):
        assert sending.sweep_stuck() == 0
    from django.core import mail

    assert len(mail.outbox) == 1


@override_settings(NOTIFY_TRACKING={"CLAIM_TIMEOUT": 30})
def test_a_long_batch_renews_its_claim_and_skips_what_another_worker_took(task):
    deliveries = list(
        notify(
            task, ["a@example.com", "b@example.com", "c@example.com"], text="T"
        ).deliveries.order_by("pk")
    )
    claimed = sending.claim([d.pk for d in deliveries])
    lease = sending.Lease(claimed[0].claim)
    # Another worker took the last one after our claim expired.
    Delivery.objects.filter(pk=deliveries[2].pk).update(claim=uuid.uuid4())
    first_expiry = Delivery.objects.get(pk=deliveries[1].pk).claimed_until

    lease.renewed_at -= 20  # two thirds of the claim's time have gone by
    yielded = [d.pk for d in lease.held(claimed)]

    assert yielded == [deliveries[0].pk, deliveries[1].pk]
    assert Delivery.objects.get(pk=deliveries[1].pk).claimed_until > first_expiry


def failing_first(times, real):
    """Fault injection: the database fails ``times`` times, then works again."""
    from django.db import OperationalError

    calls = {"n": 0}

    def record(delivery, result):
        calls["n"] += 1
        if calls["n"] <= times:
            raise OperationalError("database is locked")
        return real(delivery, result)

    return record


def test_a_database_error_while_recording_is_retried(
    task, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(sending, "RECORD_PAUSE", 0.01)
    monkeypatch.setattr(sending, "_record", failing_first(2, sending._record))
    notification = send_now(
        task, ["a@example.com", "b@example.com"], django_capture_on_commit_callbacks
    )
    assert sorted(notification.deliveries.values_list("status", flat=True)) == ["sent", "sent"]


def test_a_result_that_cannot_be_recorded_does_not_abandon_the_batch(
    task, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(sending, "RECORD_PAUSE", 0.01)
    monkeypatch.setattr(sending, "_record", failing_first(sending.RECORD_ATTEMPTS, sending._record))
    notification = send_now(
        task, ["a@example.com", "b@example.com"], django_capture_on_commit_callbacks
    )
    statuses = dict(notification.deliveries.values_list("recipient", "status"))
    assert statuses == {"a@example.com": "queued", "b@example.com": "sent"}
    assert "could not record that delivery" in caplog.text
    # Left to the sweep: its claim was released with the batch.
    assert notification.deliveries.get(recipient="a@example.com").claim is None
