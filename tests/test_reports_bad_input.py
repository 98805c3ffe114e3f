"""A bad report is ignored and logged: never an exception, never a lost event."""

import logging

import pytest
from hypothesis import HealthCheck, given, settings, strategies

from notify_tracking import status as st
from notify_tracking.models import DeliveryEvent
from notify_tracking.reports import ingest_bytes
from tests.fixtures.reports import raw, sent_deliveries

BOB = "bob@example.net"
MIB = 1024 * 1024


@pytest.fixture
def read_bob(task):
    """Bob's delivery, sent and already read: what is recorded must stay."""
    bob = sent_deliveries(task, [BOB])[BOB]
    ingest_bytes(raw("mdn-displayed.eml"))
    bob.refresh_from_db()
    assert bob.status == st.OPENED
    return bob


def assert_nothing_changed(delivery):
    before = (delivery.status, delivery.open_count, delivery.error)
    events = list(DeliveryEvent.objects.filter(delivery=delivery).values_list("pk", flat=True))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.open_count, delivery.error) == before
    assert list(DeliveryEvent.objects.filter(delivery=delivery).values_list("pk", flat=True)) == (
        events
    )


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("dsn-unknown-action.eml", "nothing usable in the DSN (unknown Action 'vanished'"),
        ("dsn-missing-action.eml", "nothing usable in the DSN (no Action for bob@example.net)"),
        ("dsn-missing-recipient.eml", "(a recipient block without Final-Recipient)"),
        ("dsn-no-recipient-block.eml", "nothing usable in the DSN (it names no recipient)"),
        ("mdn-missing-disposition.eml", "nothing usable in the MDN (no Disposition"),
        ("mdn-unknown-disposition.eml", "unknown disposition 'manual-action/MDN-sent-manually"),
        ("garbage.bin", "not a report (content type text/plain)"),
        ("not-a-report.eml", "not a report (content type text/plain)"),
        ("report-without-status-part.eml", "without a delivery-status or disposition part"),
        ("dsn-not-ours.eml", "no delivery matches it: not a message this app sent"),
    ],
)
def test_a_bad_report_is_ignored_and_logged(read_bob, caplog, fixture, reason):
    with caplog.at_level(logging.WARNING, logger="notify_tracking.reports"):
        outcome = ingest_bytes(raw(fixture), origin=fixture)

    assert outcome.status == "ignored"
    assert reason in outcome.ignored[-1]
    assert reason in caplog.text
    assert f"ignored a report from {fixture}" in caplog.text
    assert_nothing_changed(read_bob)


def test_a_10_mib_message_is_refused_unread(read_bob, caplog):
    huge = raw("dsn-failed.eml") + b"x" * (10 * MIB)

    with caplog.at_level(logging.WARNING, logger="notify_tracking.reports"):
        outcome = ingest_bytes(huge)

    assert outcome.ignored == ["the message is larger than MAX_REPORT_BYTES (1048576 bytes)"]
    assert "MAX_REPORT_BYTES" in caplog.text
    assert_nothing_changed(read_bob)


def test_the_size_limit_is_a_setting(task, settings):
    bob = sent_deliveries(task, [BOB])[BOB]
    report = raw("dsn-failed.eml")
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "MAX_REPORT_BYTES": len(report) - 1}

    assert ingest_bytes(report).status == "ignored"

    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "MAX_REPORT_BYTES": len(report)}
    assert ingest_bytes(report).status == "recorded"
    bob.refresh_from_db()
    assert bob.status == st.BOUNCED


@pytest.mark.parametrize("payload", [b"", b"\r\n\r\n  \n", b"\x00" * 64])
def test_empty_or_null_input(read_bob, payload):
    outcome = ingest_bytes(payload)

    assert outcome.status == "ignored"
    assert_nothing_changed(read_bob)


def test_a_truncated_report_is_ignored_or_read_as_far_as_it_goes(read_bob):
    report = raw("dsn-failed.eml")
    for cut in range(0, len(report), 97):
        outcome = ingest_bytes(report[:cut])
        assert outcome.status in ("ignored", "recorded", "unchanged")
    # Whatever the cuts recorded, the read stays and nothing was removed.
    read_bob.refresh_from_db()
    assert read_bob.status == st.OPENED
    assert DeliveryEvent.objects.filter(delivery=read_bob, source="mdn").count() == 1


def test_hostile_field_values_are_cleaned_and_bounded(task):
    bob = sent_deliveries(task, [BOB])[BOB]
    hostile = (
        raw("dsn-failed.eml")
        .replace(b"User unknown\n", b"User\x00 unknown \x1b[31m" + b"A" * 5000 + b"\n")
        .replace(b"Date: Tue, 3 Jun 2025 10:15:02 +0000", b"Date: the day after tomorrow")
        .replace(b"Arrival-Date: Tue,  3 Jun 2025", b"Arrival-Date: Tue, 99 Jun 2025")
    )

    outcome = ingest_bytes(hostile)

    assert outcome.status == "recorded"
    [event] = DeliveryEvent.objects.filter(delivery=bob, source="dsn")
    assert "\x00" not in event.details["diagnostic_code"]
    assert "\x1b" not in event.details["diagnostic_code"]
    assert len(event.details["diagnostic_code"]) == 1000
    assert event.details["arrival_date"] == ""
    assert event.occurred_at >= bob.sent_at  # no usable date: the time it arrived


def test_a_report_with_more_recipient_blocks_than_the_limit_is_cut(task):
    bob = sent_deliveries(task, [BOB])[BOB]
    block = b"\nFinal-Recipient: rfc822; member%d@list.example.net\nAction: delivered\n"
    blocks = b"".join(block % n for n in range(150))
    closing = b"\n--9C1F2E.delivered/mx.tracker.example.com--"
    report = raw("dsn-delivered.eml").replace(closing, blocks + closing)

    outcome = ingest_bytes(report)

    assert len(outcome.recorded) == 100
    assert "recipient blocks beyond the first 100" in outcome.ignored[0]
    assert DeliveryEvent.objects.filter(delivery=bob, source="dsn").count() == 100


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=strategies.data())
def test_mangled_reports_never_raise(read_bob, data):
    report = bytearray(
        raw(data.draw(strategies.sampled_from(["dsn-failed.eml", "mdn-displayed.eml"])))
    )
    for _ in range(data.draw(strategies.integers(1, 20))):
        position = data.draw(strategies.integers(0, len(report) - 1))
        report[position] = data.draw(strategies.integers(0, 255))

    outcome = ingest_bytes(bytes(report))

    assert outcome.status in ("ignored", "recorded", "unchanged")
    read_bob.refresh_from_db()
    assert read_bob.status == st.OPENED  # a read is never undone by a report...
    assert DeliveryEvent.objects.filter(delivery=read_bob, kind=st.OPENED).exists()  # ...or lost
