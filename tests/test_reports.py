"""Delivery status notifications and read receipts end in the right delivery's status."""

import datetime as dt

import pytest

from notify_tracking import status as st
from notify_tracking.models import DeliveryEvent
from notify_tracking.reports import describe_status, find_delivery, ingest_bytes, parse_disposition
from tests.fixtures.reports import raw, sent_deliveries

BOB = "bob@example.net"
UTC = dt.timezone.utc


@pytest.fixture
def bob(task):
    return sent_deliveries(task, [BOB])[BOB]


def events_of(delivery, source):
    return list(DeliveryEvent.objects.filter(delivery=delivery, source=source))


# --- DSN: every Action --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "action", "status"),
    [
        ("dsn-failed.eml", "failed", st.BOUNCED),
        ("dsn-delayed.eml", "delayed", st.DEFERRED),
        ("dsn-delivered.eml", "delivered", st.DELIVERED),
        ("dsn-relayed.eml", "relayed", st.DELIVERED),
        ("dsn-expanded.eml", "expanded", st.DELIVERED),
    ],
)
def test_each_dsn_action_sets_its_status(bob, fixture, action, status):
    assert bob.status == st.SENT

    outcome = ingest_bytes(raw(fixture))

    assert outcome.status == "recorded"
    assert outcome.lines() == [
        f"recorded: {status} for {BOB} (delivery {bob.pk}, matched by envelope id)"
    ]
    bob.refresh_from_db()
    assert bob.status == status
    [event] = events_of(bob, "dsn")
    assert (event.kind, event.details["action"]) == (status, action)
    assert event.details["matched_by"] == "envelope id"


def test_a_bounce_says_why_in_words(bob):
    ingest_bytes(raw("dsn-failed.eml"))

    bob.refresh_from_db()
    assert bob.error == (
        "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown "
        "(5.1.1 permanent failure: bad destination mailbox address); reported by mx.example.net"
    )
    [event] = events_of(bob, "dsn")
    assert event.occurred_at == dt.datetime(2025, 6, 3, 10, 15, 2, tzinfo=UTC)  # report's Date
    assert event.details["status"] == "5.1.1"
    assert event.details["remote_mta"] == "dns; mx.example.net"
    assert event.details["reporting_mta"] == "dns; mx.tracker.example.com"
    assert event.details["arrival_date"] == "2025-06-03T10:15:01+00:00"
    assert event.details["report_id"] == "<20250603101502.4F2A1C0042@mx.tracker.example.com>"
    assert bob.failed_at == event.occurred_at


def test_a_delay_keeps_the_reason_and_the_time_of_the_last_attempt(bob):
    ingest_bytes(raw("dsn-delayed.eml"))

    bob.refresh_from_db()
    assert bob.status == st.DEFERRED
    assert bob.error == (
        "connect to mx.example.net[203.0.113.25]:25: Connection timed out "
        "(4.4.1 temporary failure: no answer from host); reported by mx.example.net"
    )
    [event] = events_of(bob, "dsn")
    assert event.occurred_at == dt.datetime(2025, 6, 3, 14, 10, tzinfo=UTC)


def test_a_delay_then_a_failure_ends_bounced_with_both_reports_kept(bob):
    ingest_bytes(raw("dsn-delayed.eml"))
    ingest_bytes(raw("dsn-failed.eml"))

    bob.refresh_from_db()
    assert bob.status == st.BOUNCED
    assert [e.kind for e in events_of(bob, "dsn")] == [st.BOUNCED, st.DEFERRED]  # by time


def test_a_report_whose_status_part_is_base64_rfc6533(bob):
    ingest_bytes(raw("dsn-global-base64.eml"))

    bob.refresh_from_db()
    assert bob.status == st.BOUNCED
    assert bob.error.startswith("550 5.2.1 Mailbox disabled (5.2.1 permanent failure")


# --- several recipients ---------------------------------------------------------------------


def test_each_recipient_block_of_a_shared_email_goes_to_its_own_delivery(task, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "ONE_EMAIL_PER_NOTIFICATION": True}
    deliveries = sent_deliveries(task, ["carol@example.org", "dave@example.org"])
    carol, dave = deliveries["carol@example.org"], deliveries["dave@example.org"]

    outcome = ingest_bytes(raw("dsn-several-recipients.eml"))

    assert outcome.lines() == [
        f"recorded: bounced for carol@example.org (delivery {carol.pk}, matched by envelope id)",
        f"recorded: delivered for dave@example.org (delivery {dave.pk}, matched by envelope id)",
        "ignored: unknown Action 'teleported' for erin@example.org",
    ]
    carol.refresh_from_db()
    dave.refresh_from_db()
    assert (carol.status, dave.status) == (st.BOUNCED, st.DELIVERED)
    assert carol.error.startswith("552 5.2.2 Mailbox full (5.2.2 permanent failure: mailbox full)")
    assert dave.error == ""


def test_a_block_about_another_recipient_of_a_separate_email_is_ignored(task):
    # One email per recipient: carol's report cannot speak for dave, who got his own.
    deliveries = sent_deliveries(task, ["carol@example.org", "dave@example.org"])
    carol, dave = deliveries["carol@example.org"], deliveries["dave@example.org"]

    outcome = ingest_bytes(raw("dsn-several-recipients.eml"))

    assert outcome.recorded == [
        f"bounced for carol@example.org (delivery {carol.pk}, matched by envelope id)"
    ]
    assert "Dave@Example.org was not sent the message it reports on" in outcome.ignored
    assert not dave.events.filter(source="dsn").exists()


def test_a_recipient_the_notification_does_not_have_goes_to_the_matched_delivery(bob):
    # A forward or an alias: the report names the final address, not ours.
    forwarded = raw("dsn-delivered.eml").replace(
        b"Final-Recipient: rfc822; bob@example.net", b"Final-Recipient: rfc822; bob@forward.test"
    )

    ingest_bytes(forwarded)

    bob.refresh_from_db()
    assert bob.status == st.DELIVERED
    [event] = events_of(bob, "dsn")
    assert event.details["final_recipient"] == "rfc822; bob@forward.test"


# --- the three keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "key", "status"),
    [
        ("dsn-delayed.eml", "envelope id", st.DEFERRED),
        ("mdn-original-message-id.eml", "Original-Message-ID", st.OPENED),
        ("dsn-returned-headers.eml", "returned Message-ID", st.BOUNCED),
        ("dsn-returned-message.eml", "returned Message-ID", st.BOUNCED),
        ("dsn-bad-envelope-id.eml", "returned Message-ID", st.DELIVERED),
    ],
)
def test_a_report_is_matched_by_each_key(bob, fixture, key, status):
    outcome = ingest_bytes(raw(fixture))

    assert outcome.recorded == [f"{status} for {BOB} (delivery {bob.pk}, matched by {key})"]
    bob.refresh_from_db()
    assert bob.status == status


def test_the_envelope_id_wins_over_a_message_id_of_another_delivery(task):
    deliveries = sent_deliveries(task, [BOB, "carol@example.org"])
    # The returned headers name carol's message, the envelope id bob's delivery.
    mixed = raw("dsn-failed.eml").replace(
        b"<nt.bob.0001@tracker.example.com>", b"<nt.carol.0002@tracker.example.com>"
    )

    outcome = ingest_bytes(mixed)

    assert outcome.recorded[0].endswith("matched by envelope id)")
    assert deliveries[BOB].events.filter(source="dsn", kind=st.BOUNCED).exists()
    assert not deliveries["carol@example.org"].events.filter(source="dsn").exists()


# --- MDN --------------------------------------------------------------------------------------


def test_a_displayed_receipt_is_a_read(bob):
    outcome = ingest_bytes(raw("mdn-displayed.eml"))

    assert outcome.recorded == [
        f"opened for {BOB} (delivery {bob.pk}, matched by Original-Message-ID)"
    ]
    bob.refresh_from_db()
    assert bob.status == st.OPENED
    assert bob.open_count == 1
    assert bob.first_opened_at == dt.datetime(2025, 6, 3, 10, 30, tzinfo=UTC)
    [event] = events_of(bob, "mdn")
    assert not event.is_machine
    assert event.user_agent == "mail.example.net; Thunderbird 128.5.0"
    assert event.details["disposition"] == "displayed"
    assert event.details["action_mode"] == "manual-action"


@pytest.mark.parametrize("disposition", ["deleted", "dispatched", "processed"])
def test_a_receipt_that_is_not_a_read_proves_delivery_only(bob, disposition):
    ingest_bytes(raw(f"mdn-{disposition}.eml"))

    bob.refresh_from_db()
    assert bob.status == st.DELIVERED
    assert bob.open_count == 0
    assert bob.first_opened_at is None
    [event] = events_of(bob, "mdn")
    assert event.kind == st.DELIVERED
    assert event.details["disposition"] == disposition
    assert not event.is_machine


def test_an_automatic_receipt_is_a_machine_read(bob):
    ingest_bytes(raw("mdn-automatic.eml"))

    bob.refresh_from_db()
    [event] = events_of(bob, "mdn")
    assert (event.kind, event.is_machine) == (st.OPENED, True)
    assert event.details["sending_mode"] == "mdn-sent-automatically"
    assert bob.machine_open_count == 1
    assert bob.status == st.SENT  # COUNT_MACHINE_OPENS is off: stored, not counted
    assert bob.open_count == 0


def test_an_automatic_receipt_counts_when_machine_opens_count(bob, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "COUNT_MACHINE_OPENS": True}

    ingest_bytes(raw("mdn-automatic.eml"))

    bob.refresh_from_db()
    assert bob.status == st.OPENED


def test_a_receipt_with_the_error_modifier_is_not_a_read(bob):
    ingest_bytes(raw("mdn-displayed-error.eml"))

    bob.refresh_from_db()
    assert bob.status == st.DELIVERED
    [event] = events_of(bob, "mdn")
    assert event.details["modifiers"] == ["error"]
    assert event.details["mdn_error"] == "the message could not be rendered"


def test_a_receipt_for_a_delivery_without_read_tracking_is_said_and_not_stored(task):
    bob = sent_deliveries(task, [BOB], track_opens=False)[BOB]

    outcome = ingest_bytes(raw("mdn-displayed.eml"))

    assert outcome.status == "unchanged"
    assert outcome.unchanged[0].endswith("not stored, read tracking is off for this delivery")
    assert not events_of(bob, "mdn")


# --- duplicates and order -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["dsn-failed.eml", "dsn-without-message-id.eml", "mdn-displayed.eml"]
)
def test_the_same_report_twice_is_stored_once(bob, fixture):
    first = ingest_bytes(raw(fixture))
    second = ingest_bytes(raw(fixture))

    assert first.status == "recorded"
    assert second.status == "unchanged"
    assert second.unchanged[0].endswith("this report was recorded before")
    assert len(events_of(bob, "dsn") + events_of(bob, "mdn")) == 1
    bob.refresh_from_db()
    assert bob.open_count == (1 if fixture.startswith("mdn") else 0)


def test_a_late_delivery_report_after_a_read_keeps_the_read(bob):
    ingest_bytes(raw("mdn-displayed.eml"))
    ingest_bytes(raw("dsn-delivered.eml"))

    bob.refresh_from_db()
    assert bob.status == st.OPENED
    assert bob.delivered_at is not None
    assert DeliveryEvent.objects.filter(delivery=bob).count() == 3  # sent, opened, delivered


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (
            "manual-action/MDN-sent-manually; displayed",
            ("manual-action", "mdn-sent-manually", "displayed", []),
        ),
        (
            "automatic-action/MDN-sent-automatically;deleted/error",
            ("automatic-action", "mdn-sent-automatically", "deleted", ["error"]),
        ),
        (
            "manual-action/MDN-sent-manually (the user clicked) ; Processed",
            ("manual-action", "mdn-sent-manually", "processed", []),
        ),
        ("displayed", ("displayed", "", "", [])),
    ],
)
def test_parse_disposition(value, parsed):
    assert parse_disposition(value) == parsed


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("5.1.1", "5.1.1 permanent failure: bad destination mailbox address"),
        ("4.2.2", "4.2.2 temporary failure: mailbox full"),
        ("5.7.26", "5.7.26 permanent failure: security or policy status"),
        ("2.0.0", "2.0.0 success: other or undefined status"),
    ],
)
def test_describe_status(code, words):
    assert describe_status(code) == words


def test_a_report_dated_before_the_send_is_placed_after_it(bob):
    early = raw("dsn-delayed.eml").replace(
        b"Last-Attempt-Date: Tue,  3 Jun 2025 14:10:00",
        b"Last-Attempt-Date: Mon,  2 Jun 2025 09:00:00",
    )

    ingest_bytes(early)

    bob.refresh_from_db()
    assert bob.status == st.DEFERRED  # not undone by the earlier "sent"
    [event] = events_of(bob, "dsn")
    assert event.occurred_at == bob.sent_at
    assert event.details["reported_at"] == "2025-06-02T09:00:00+00:00"


def test_a_delivery_purged_after_matching_is_reported_not_raised(bob):
    """Retention may delete the delivery between matching and recording."""
    from notify_tracking.reports import Outcome, _record_one, parse_report, read_message

    report = parse_report(read_message(raw("dsn-failed.eml")))
    delivery, matched_by = find_delivery(report)
    delivery.delete()
    outcome = Outcome()
    _record_one(report, report.recipients[0], delivery, matched_by, outcome)
    assert outcome.unchanged[-1].endswith("not stored, the delivery no longer exists")
