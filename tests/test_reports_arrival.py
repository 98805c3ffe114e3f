"""Reports arrive by the management command (a file, stdin, an MTA pipe) and by anymail."""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from anymail.inbound import AnymailInboundMessage
from anymail.signals import AnymailInboundEvent, EventType, inbound
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from notify_tracking import status as st
from notify_tracking.models import DeliveryEvent
from tests.fixtures.reports import fixture_path, raw, sent_deliveries

BOB = "bob@example.net"
REPO_ROOT = Path(__file__).resolve().parent.parent
COMMAND = "notify_tracking_ingest_report"


@pytest.fixture
def bob(task):
    return sent_deliveries(task, [BOB])[BOB]


# --- the command, in this process -----------------------------------------------------------


def test_the_command_reads_a_file(bob):
    out = io.StringIO()

    call_command(COMMAND, str(fixture_path("dsn-failed.eml")), stdout=out)

    assert out.getvalue() == (
        f"recorded: bounced for {BOB} (delivery {bob.pk}, matched by envelope id)\n"
    )
    bob.refresh_from_db()
    assert bob.status == st.BOUNCED


def test_the_command_reads_stdin(bob):
    out = io.StringIO()

    call_command(COMMAND, stdin=io.BytesIO(raw("mdn-displayed.eml")), stdout=out)

    assert out.getvalue().startswith(f"recorded: opened for {BOB}")
    bob.refresh_from_db()
    assert bob.status == st.OPENED


def test_the_command_says_what_it_ignored(bob):
    out = io.StringIO()

    call_command(COMMAND, "-", stdin=io.BytesIO(raw("garbage.bin")), stdout=out)

    assert out.getvalue() == "ignored: not a report (content type text/plain)\n"


def test_the_command_fails_only_for_an_unreadable_file(db, tmp_path):
    with pytest.raises(CommandError, match=r"cannot read .*missing\.eml: No such file") as raised:
        call_command(COMMAND, str(tmp_path / "missing.eml"))
    assert raised.value.returncode == 66


# --- the command as an MTA runs it: a process reading a pipe -----------------------------------


def run_command(*args: str, stdin: bytes | None = b"", db_name: str | None = None):
    """The command in a process of its own; ``stdin`` None: with descriptor 0 closed."""
    if stdin is None:
        feed: dict = {"stdin": subprocess.DEVNULL, "preexec_fn": lambda: os.close(0)}
    else:
        feed = {"input": stdin}
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "NOTIFY_TRACKING_WORKER_DB_NAME": db_name or str(connection.settings_dict["NAME"]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", COMMAND, *args],
        **feed,
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def committed_bob(transactional_db, task):
    return sent_deliveries(task, [BOB])[BOB]


def test_a_piped_report_is_recorded(committed_bob):
    done = run_command(stdin=raw("dsn-delayed.eml"))

    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == (
        f"recorded: deferred for {BOB} (delivery {committed_bob.pk}, matched by envelope id)\n"
    )
    committed_bob.refresh_from_db()
    assert committed_bob.status == st.DEFERRED


@pytest.mark.parametrize("fixture", ["garbage.bin", "dsn-unknown-action.eml", "dsn-not-ours.eml"])
def test_a_piped_bad_report_exits_0_without_a_traceback(committed_bob, fixture):
    done = run_command(stdin=raw(fixture))

    assert done.returncode == 0
    assert done.stdout.decode().startswith("ignored: ")
    assert b"Traceback" not in done.stderr
    assert not DeliveryEvent.objects.filter(delivery=committed_bob, source="dsn").exists()


def test_a_huge_piped_message_is_read_to_the_end_and_ignored(committed_bob):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "NOTIFY_TRACKING_WORKER_DB_NAME": str(connection.settings_dict["NAME"]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "django", COMMAND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    # An MTA writes the whole message: the command must take it all (no broken pipe).
    process.stdin.write(raw("dsn-failed.eml") + b"x" * (10 * 1024 * 1024))
    process.stdin.close()
    out, err = process.stdout.read(), process.stderr.read()

    assert process.wait(timeout=60) == 0, err
    assert out == b"ignored: the message is larger than MAX_REPORT_BYTES (1048576 bytes)\n"
    committed_bob.refresh_from_db()
    assert committed_bob.status == st.SENT


def test_a_closed_standard_input_exits_74_without_a_traceback(db):
    done = run_command(stdin=None)

    assert done.returncode == 74, done.stderr
    assert b"cannot read standard input: it is closed" in done.stderr
    assert b"Traceback" not in done.stderr


def test_a_missing_file_exits_66_without_a_traceback(db):
    done = run_command("/nonexistent/bounce.eml")

    assert done.returncode == 66
    assert b"cannot read /nonexistent/bounce.eml" in done.stderr
    assert b"Traceback" not in done.stderr


def test_an_unavailable_database_exits_75_so_the_mta_retries(db, tmp_path):
    if connection.vendor == "sqlite":
        unreachable = str(tmp_path / "no" / "db.sqlite3")
    else:
        unreachable = "nt_no_such_database"
    done = run_command(stdin=raw("dsn-failed.eml"), db_name=unreachable)

    assert done.returncode == 75
    assert b"could not record the report, try again later" in done.stderr
    assert b"Traceback" not in done.stderr


# --- anymail's inbound signal --------------------------------------------------------------


def send_inbound(message_bytes: bytes) -> None:
    message = AnymailInboundMessage.parse_raw_mime_bytes(message_bytes)
    event = AnymailInboundEvent(event_type=EventType.INBOUND, message=message)
    inbound.send(sender=object, event=event, esp_name="TestESP")


def test_an_inbound_report_is_recorded(bob):
    send_inbound(raw("dsn-returned-message.eml"))

    bob.refresh_from_db()
    assert bob.status == st.BOUNCED
    [event] = DeliveryEvent.objects.filter(delivery=bob, source="dsn")
    assert event.details["matched_by"] == "returned Message-ID"


def test_inbound_mail_that_is_not_a_report_is_left_alone(bob):
    send_inbound(raw("not-a-report.eml"))
    send_inbound(raw("garbage.bin"))

    assert list(DeliveryEvent.objects.filter(delivery=bob).values_list("kind", flat=True)) == [
        st.SENT
    ]


def test_an_inbound_bad_report_raises_nothing(bob, caplog):
    send_inbound(raw("dsn-missing-recipient.eml"))

    assert "without Final-Recipient" in caplog.text
    bob.refresh_from_db()
    assert bob.status == st.SENT


def test_a_read_receipt_through_anymails_postmark_inbound_webhook(bob, client):
    payload = {"RawEmail": raw("mdn-displayed.eml").decode(), "Headers": []}
    auth = base64.b64encode(b"hook:secret").decode()

    response = client.post(
        "/anymail/postmark/inbound/",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {auth}",
    )

    assert response.status_code == 200
    bob.refresh_from_db()
    assert bob.status == st.OPENED
    assert DeliveryEvent.objects.get(delivery=bob, source="mdn").kind == st.OPENED
