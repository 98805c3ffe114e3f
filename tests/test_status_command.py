"""``manage.py notify_tracking_status <address>``: recent deliveries with their timelines."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from notify_tracking import status as st
from notify_tracking.models import Delivery, PendingOpen, SpoolCheckpoint
from notify_tracking.tasks import apply_pending_opens
from notify_tracking.tracking import spool
from tests.activity_support import make_notification, record
from tests.tracking_support import HTML, html_of, path, pixel_urls, send

pytestmark = pytest.mark.django_db
START = timezone.make_aware(dt.datetime(2025, 3, 4, 9, 0, 0))


def status_of(*args) -> str:
    out = StringIO()
    call_command("notify_tracking_status", *args, stdout=out)
    return out.getvalue()


def test_nothing_found_says_the_app_never_accepted_a_message(task):
    make_notification(task, ["someone@example.com"])
    output = status_of("nobody@example.com")
    assert output == (
        "No delivery to nobody@example.com found: the app never accepted a message for this "
        "address (or it is older than the retention period, 45 days by default).\n"
    )


def test_a_delivery_with_its_timeline(task, user):
    notification = make_notification(
        task, ["carol@example.com"], subject="Fix the login page", sender=user
    )
    delivery = notification.deliveries.get()
    Delivery.objects.filter(pk=delivery.pk).update(created_at=START)
    record(delivery, st.SENT, at=START + dt.timedelta(seconds=2))
    record(
        delivery,
        st.DEFERRED,
        at=START + dt.timedelta(minutes=1),
        source="esp",
        error="421 4.7.0 try again later",
    )
    record(delivery, st.DELIVERED, at=START + dt.timedelta(minutes=5), source="esp")
    record(
        delivery,
        st.OPENED,
        at=START + dt.timedelta(minutes=5, seconds=3),
        source="pixel",
        is_machine=True,
    )

    assert status_of("carol@example.com").splitlines() == [
        "Deliveries to carol@example.com, newest first (1 shown):",
        "",
        f"#{delivery.pk}  2025-03-04 09:00:00 UTC  email  Delivered (delivered)",
        "  to: carol@example.com",
        "  subject: Fix the login page",
        f"  target: testapp.task:{task.pk}  sender: alice",
        "  2025-03-04 09:00:00 UTC  queued        accepted by the app",
        "  2025-03-04 09:00:02 UTC  sent          via Send result",
        "  2025-03-04 09:01:00 UTC  deferred      via Email provider"
        "  reason: 421 4.7.0 try again later",
        "  2025-03-04 09:05:00 UTC  delivered     via Email provider",
        "  2025-03-04 09:05:03 UTC  opened        via Tracking pixel  [automated]",
    ]


def test_a_failure_shows_its_error(task):
    delivery = make_notification(task, ["gone@example.com"]).deliveries.get()
    record(delivery, st.SENT, st.BOUNCED, source="dsn", error="550 5.1.1 user unknown")
    output = status_of("gone@example.com")
    assert "  error: 550 5.1.1 user unknown\n" in output
    assert "bounced       via Delivery report  reason: 550 5.1.1 user unknown" in output


def test_pixel_loads_not_yet_applied_are_counted(task):
    waiting = make_notification(task, ["gina@example.com"]).deliveries.get()
    applied = make_notification(task, ["gina@example.com"]).deliveries.get()
    other = make_notification(task, ["hal@example.com"]).deliveries.get()
    for token in (waiting.token, waiting.token, other.token):
        PendingOpen.objects.create(token=token, occurred_at=START, user_agent="Mozilla/5.0")
    blocks = status_of("gina@example.com").split("\n\n")[1:]  # one per delivery
    by_delivery = {block.split()[0]: block.splitlines() for block in blocks}
    assert by_delivery[f"#{waiting.pk}"][-1] == (
        "  + 2 pixel loads received, not applied yet (the Celery task that applies opens "
        "has not run them; it classifies them then)"
    )
    assert by_delivery[f"#{applied.pk}"][-1].endswith("accepted by the app")


def test_a_load_of_a_shared_email_counts_for_each_recipient(
    client, task, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "ONE_EMAIL_PER_NOTIFICATION": True}
    (message,) = send(
        django_capture_on_commit_callbacks, task, ["ivy@example.com", "jay@example.com"], html=HTML
    )
    (pixel,) = pixel_urls(html_of(message))
    # No worker: the load waits for the task (the nudge only enqueues it).
    monkeypatch.setitem(apply_pending_opens.app.conf, "task_always_eager", False)
    client.get(path(pixel), HTTP_USER_AGENT="Mozilla/5.0 Thunderbird/128.0")
    assert PendingOpen.objects.get().group is True  # one row, one delivery's token
    for address in ("ivy@example.com", "jay@example.com"):
        assert "  + 1 pixel loads received, not applied yet" in status_of(address)
    other = make_notification(task, ["ivy@example.com"]).deliveries.get()
    blocks = status_of("ivy@example.com").split("\n\n")[1:]
    (other_block,) = [block for block in blocks if block.startswith(f"#{other.pk} ")]
    assert "pixel loads" not in other_block  # another notification to the same address


def test_a_load_applied_while_the_command_reads_is_never_missed(task):
    """The waiting loads are read before the timelines: a load applied in between shows
    in its timeline (read after), not nowhere."""
    delivery = make_notification(task, ["gina@example.com"]).deliveries.get()
    record(delivery, st.SENT, at=START)
    PendingOpen.objects.create(
        token=delivery.token, occurred_at=START + dt.timedelta(hours=1), user_agent="Thunderbird"
    )
    applied = []

    def apply_just_before_the_waiting_loads_are_read(execute, sql, params, many, context):
        if not applied and "pendingopen" in sql and "GROUP BY" in sql:
            applied.append(apply_pending_opens())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(apply_just_before_the_waiting_loads_are_read):
        output = status_of("gina@example.com")
    assert applied == [1]
    assert "  2025-03-04 10:00:00 UTC  opened        via Tracking pixel" in output


def spool_line(delivery: Delivery, group: bool = False) -> bytes:
    return spool.line(delivery.token, group, START, "Mozilla/5.0", "192.0.2.7")


def use_spool(settings, directory) -> None:
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "OPEN_SPOOL_DIR": str(directory)}


def test_loads_still_in_this_host_spool_are_counted_too(task, settings, tmp_path):
    use_spool(settings, tmp_path)
    waiting = make_notification(task, ["gina@example.com"]).deliveries.get()
    other = make_notification(task, ["hal@example.com"]).deliveries.get()
    shared = make_notification(task, ["gina@example.com", "ivy@example.com"])
    gina_shared = shared.deliveries.get(recipient="gina@example.com")
    ivy_shared = shared.deliveries.get(recipient="ivy@example.com")
    moved = spool_line(waiting)  # in PendingOpen already: before the checkpoint
    not_loads = [
        b"not a pixel load\n",
        b'[1, false, "2025-03-04T09:00:00+00:00", "a number for a token", null]\n',
    ]
    lines = [moved, spool_line(waiting), spool_line(other), *not_loads]
    dead = tmp_path / f"{spool.PREFIX}{'a' * 32}{spool.SUFFIX}"
    dead.write_bytes(b"".join(lines) + b'["cut off by a crash"')
    SpoolCheckpoint.objects.create(name=dead.name, offset=len(moved))
    other_dead = tmp_path / f"{spool.PREFIX}{'b' * 32}{spool.SUFFIX}"
    other_dead.write_bytes(spool_line(ivy_shared, group=True))
    PendingOpen.objects.create(token=waiting.token, occurred_at=START, user_agent="Mozilla/5.0")
    live = spool.Spool(tmp_path, start_thread=False)  # a web process's file, held by it
    live.append(spool_line(waiting))  # synced, not moved yet

    try:
        blocks = status_of("gina@example.com").split("\n\n")[1:]
        assert dead.read_bytes().startswith(moved) and other_dead.exists()  # read, not moved
        assert PendingOpen.objects.count() == 1
    finally:
        live.close()
    by_delivery = {block.split()[0]: block.splitlines() for block in blocks[:-1]}
    assert by_delivery[f"#{waiting.pk}"][-1].startswith("  + 3 pixel loads received")
    # The load of the shared email carries ivy's token and counts for gina too.
    assert by_delivery[f"#{gina_shared.pk}"][-1].startswith("  + 1 pixel loads received")
    assert blocks[-1] == (
        f"Note: the pixel loads not applied yet include those in this host's spool "
        f"({tmp_path}); pixel loads still in the spool files of other web hosts are not "
        "counted (manage.py notify_tracking_spool lists them on each).\n"
    )


def test_a_load_moved_while_the_command_reads_is_never_missed(
    task, settings, tmp_path, monkeypatch
):
    """The spool is read before the waiting rows: a load moved in between is in the
    rows (read after), not nowhere."""
    use_spool(settings, tmp_path)
    # No worker: the moved load waits for the task (the nudge only enqueues it).
    monkeypatch.setitem(apply_pending_opens.app.conf, "task_always_eager", False)
    delivery = make_notification(task, ["gina@example.com"]).deliveries.get()
    dead = tmp_path / f"{spool.PREFIX}{'d' * 32}{spool.SUFFIX}"
    dead.write_bytes(spool_line(delivery))
    recovered = []

    def recover_just_before_the_checkpoints_are_read(execute, sql, params, many, context):
        if not recovered and "spoolcheckpoint" in sql:
            recovered.append(None)  # first: recover() reads checkpoints too
            recovered[0] = spool.recover(tmp_path)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(recover_just_before_the_checkpoints_are_read):
        output = status_of("gina@example.com")
    assert recovered == [1]
    assert not dead.exists()
    assert "  + 1 pixel loads received, not applied yet" in output


def test_a_spool_path_that_is_not_a_directory_is_said(task, settings, tmp_path):
    (tmp_path / "a-file").write_text("")
    use_spool(settings, tmp_path / "a-file")
    make_notification(task, ["gina@example.com"])
    assert status_of("gina@example.com").endswith(
        f"\n\nNote: the spool's path {tmp_path / 'a-file'} is not a directory; pixel loads "
        "still in the spool files of other web hosts are not counted (manage.py "
        "notify_tracking_spool lists them on each).\n"
    )


def test_without_this_host_spool_the_database_loads_are_still_counted(task, settings, tmp_path):
    use_spool(settings, tmp_path / "absent")
    waiting = make_notification(task, ["gina@example.com"]).deliveries.get()
    PendingOpen.objects.create(token=waiting.token, occurred_at=START, user_agent="Mozilla/5.0")
    blocks = status_of("gina@example.com").split("\n\n")
    assert blocks[1].splitlines()[-1].startswith("  + 1 pixel loads received")
    assert blocks[2].startswith(
        f"Note: this host has no spool directory {tmp_path / 'absent'}; pixel loads still in "
        "the spool files of other web hosts are not counted"
    )


def test_a_spool_that_cannot_be_read_is_said_and_nothing_else_is_lost(task, settings, tmp_path):
    use_spool(settings, tmp_path)
    waiting = make_notification(task, ["gina@example.com"]).deliveries.get()
    PendingOpen.objects.create(token=waiting.token, occurred_at=START, user_agent="Mozilla/5.0")
    (tmp_path / f"{spool.PREFIX}{'c' * 32}{spool.SUFFIX}").mkdir()  # named as a file, not one
    blocks = status_of("gina@example.com").split("\n\n")
    assert blocks[1].splitlines()[-1].startswith("  + 1 pixel loads received")
    assert blocks[2].startswith("Note: could not read this host's spool ([Errno 21] Is a directory")
    assert "the loads in it are not counted, and pixel loads still in" in blocks[2]


def test_newest_first_and_limited(task):
    for age in (3, 1, 2):
        notification = make_notification(task, ["dan@example.com"], subject=f"{age} days ago")
        Delivery.objects.filter(notification=notification).update(
            created_at=timezone.now() - dt.timedelta(days=age)
        )
    output = status_of("dan@example.com", "--limit", "2")
    assert output.startswith("Deliveries to dan@example.com, newest first (2 shown):")
    subjects = [line for line in output.splitlines() if line.startswith("  subject:")]
    assert subjects == ["  subject: 1 days ago", "  subject: 2 days ago"]


def test_only_that_address(task):
    make_notification(
        task, ["erin@example.com", "erin@example.com.other.test", "xerin@example.com"]
    )
    output = status_of("erin@example.com")
    assert "(1 shown)" in output
    assert "to: erin@example.com\n" in output


def test_the_address_is_matched_in_lower_case_too(task):
    make_notification(task, ["frank@example.com"])
    assert "(1 shown)" in status_of("Frank@Example.com")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a@example.com", "--limit", "0"), "--limit must be from 1 to 1000"),
        (("a@example.com", "--limit", "5000"), "--limit must be from 1 to 1000"),
        (("a\x00@example.com",), "address: must not contain control characters"),
        (("",), "address must not be empty"),  # not everyone's deliveries
        (("   ",), "address must not be empty"),
    ],
)
def test_bad_arguments_fail_clearly(args, message):
    with pytest.raises(CommandError, match=message):
        status_of(*args)
