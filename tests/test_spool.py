"""OPEN_SPOOL_DIR: the pixel keeps each open as a synced line of a local file, and a
thread moves the lines into PendingOpen exactly once, also after a crash."""

import datetime as dt
import fcntl
import io
import logging
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from notify_tracking.management.commands import notify_tracking_spool as spool_command_module
from notify_tracking.models import PendingOpen, SpoolCheckpoint
from notify_tracking.tasks import apply_pending_opens
from notify_tracking.tracking import spool, tokens
from notify_tracking.tracking.views import PIXEL_GIF
from tests.tracking_support import HTML, mark_sent, queued

pytestmark = pytest.mark.django_db

AT = dt.datetime(2026, 12, 7, 15, 0, 1, 123456, tzinfo=dt.timezone.utc)
BROWSER_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Thunderbird/128.0"


@pytest.fixture(autouse=True)
def opens_wait_for_a_worker(monkeypatch):
    """The nudge enqueues the task (as in production) instead of running it here: the
    tests see the moved rows before the task applies them."""
    monkeypatch.setitem(apply_pending_opens.app.conf, "task_always_eager", False)


@pytest.fixture
def spool_dir(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


@pytest.fixture
def quiet_spool(spool_dir):
    """A spool without its mover thread: the test moves the lines (``flush``)."""
    made = spool.Spool(spool_dir, start_thread=False)
    yield made
    made.close()


def an_open(ua: str = BROWSER_UA, ip: str | None = "192.0.2.7", group: bool = False):
    return spool.line(uuid.uuid4(), group, AT, ua, ip)


def spool_files(directory):
    return sorted(directory.glob("opens-*.jsonl"))


def test_a_line_is_synced_before_append_returns_and_moved_once(quiet_spool, spool_dir):
    token = uuid.uuid4()
    ua = 'Odd "agent"\nwith a newline, a tab\t, ümlauts and \\ backslash'
    one_line = spool.line(token, True, AT, ua, "2001:db8::1")
    quiet_spool.append(one_line)
    (path,) = spool_files(spool_dir)
    assert path.read_bytes().count(b"\n") == 1  # the newline in the agent is escaped
    assert not PendingOpen.objects.exists()

    assert quiet_spool.flush() == 1
    row = PendingOpen.objects.get()
    assert (row.token, row.group, row.occurred_at, row.user_agent, row.ip_address) == (
        token,
        True,
        AT,
        ua,
        "2001:db8::1",
    )
    assert SpoolCheckpoint.objects.get(name=path.name).offset == len(one_line)
    assert quiet_spool.flush() == 0
    assert PendingOpen.objects.count() == 1


def test_nothing_new_costs_no_query(quiet_spool, django_assert_num_queries):
    quiet_spool.append(an_open(ip=None))
    quiet_spool.flush()
    with django_assert_num_queries(0):
        assert quiet_spool.flush() == 0


def test_concurrent_appends_are_each_moved_exactly_once(quiet_spool, spool_dir):
    def load(k):
        for _ in range(50):
            quiet_spool.append(an_open(ua=f"thread {k}"))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (path,) = spool_files(spool_dir)
    assert path.read_bytes().count(b"\n") == 400
    assert quiet_spool.flush() == 400
    counts = {f"thread {k}": 0 for k in range(8)}
    for agent in PendingOpen.objects.values_list("user_agent", flat=True):
        counts[agent] += 1
    assert set(counts.values()) == {50}


def test_full_files_are_replaced_and_deleted_once_moved(quiet_spool, spool_dir, monkeypatch):
    monkeypatch.setattr(spool, "ROTATE_BYTES", 600)  # about four lines a file
    for _ in range(20):
        quiet_spool.append(an_open())
    assert len(spool_files(spool_dir)) >= 4
    assert quiet_spool.flush() == 20
    assert spool_files(spool_dir) == [quiet_spool._current.path]
    assert list(SpoolCheckpoint.objects.values_list("name", flat=True)) in (
        [quiet_spool._current.path.name],
        [],  # the current file was empty: it never had a checkpoint
    )
    assert PendingOpen.objects.count() == 20


def test_close_moves_what_is_left_and_leaves_no_file(spool_dir):
    made = spool.Spool(spool_dir, start_thread=False)
    made.append(an_open())
    made.close()
    assert PendingOpen.objects.count() == 1
    assert spool_files(spool_dir) == []
    assert not SpoolCheckpoint.objects.exists()


def test_lines_wait_on_disk_while_the_database_refuses_them(quiet_spool, spool_dir, caplog):
    for _ in range(3):
        quiet_spool.append(an_open())

    def database_down(execute, sql, params, many, context):
        if "pendingopen" in sql.lower():
            raise OperationalError("could not connect to server")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(database_down), caplog.at_level(logging.WARNING):
        assert quiet_spool.flush() == 0
    assert "they stay in" in caplog.text
    assert not PendingOpen.objects.exists()
    assert quiet_spool.flush() == 3
    assert PendingOpen.objects.count() == 3


def test_a_failed_write_loses_only_its_own_line(quiet_spool, spool_dir):
    quiet_spool.append(an_open(ua="before"))
    os.close(quiet_spool._current.fd)  # the next write fails (EBADF)
    with pytest.raises(OSError):
        quiet_spool.append(an_open(ua="lost"))
    quiet_spool.append(an_open(ua="after"))  # in a new file
    assert len(spool_files(spool_dir)) == 2
    assert quiet_spool.flush() == 2
    assert sorted(PendingOpen.objects.values_list("user_agent", flat=True)) == [
        "after",
        "before",
    ]


def test_lines_answered_while_a_move_runs_are_not_lost_when_their_file_is_retired(
    quiet_spool, spool_dir, monkeypatch
):
    monkeypatch.setattr(spool, "ROTATE_BYTES", 600)
    quiet_spool.append(an_open(ua="before the move"))
    during = []

    def appends_during_the_insert(execute, sql, params, many, context):
        if not during and "pendingopen" in sql.lower():
            # Another request thread, while this move's transaction runs: enough lines
            # to retire the file being moved.
            def load():
                for k in range(6):
                    quiet_spool.append(an_open(ua=f"during the move {k}"))
                    during.append(k)

            thread = threading.Thread(target=load)
            thread.start()
            thread.join()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(appends_during_the_insert):
        assert quiet_spool.flush() == 1
    assert len(during) == 6
    assert quiet_spool.flush() == 6
    assert PendingOpen.objects.count() == 7
    assert spool_files(spool_dir) == [quiet_spool._current.path]


def test_when_no_new_file_can_be_made_no_line_follows_a_failed_write(
    quiet_spool, spool_dir, monkeypatch
):
    quiet_spool.append(an_open(ua="before"))
    os.close(quiet_spool._current.fd)  # the next write fails (EBADF)
    lowest_free = os.open(os.devnull, os.O_RDONLY)  # the number the next file gets
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new file: EMFILE
    try:
        with pytest.raises(OSError):
            quiet_spool.append(an_open(ua="lost with its write"))
        with pytest.raises(OSError):  # the broken file takes no line; no new one yet
            quiet_spool.append(an_open(ua="refused"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    quiet_spool.append(an_open(ua="after"))  # a new file, at last
    assert len(spool_files(spool_dir)) == 2
    assert quiet_spool.flush() == 2
    assert sorted(PendingOpen.objects.values_list("user_agent", flat=True)) == [
        "after",
        "before",
    ]
    assert spool_files(spool_dir) == [quiet_spool._current.path]


def test_a_checkpoint_that_cannot_be_deleted_does_not_stop_the_mover(
    quiet_spool, spool_dir, monkeypatch, caplog
):
    monkeypatch.setattr(spool, "ROTATE_BYTES", 300)
    for _ in range(3):
        quiet_spool.append(an_open())
    retired = [file.path for file in quiet_spool._retired]
    assert retired

    def checkpoint_delete_fails(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("DELETE") and "spoolcheckpoint" in sql.lower():
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(checkpoint_delete_fails), caplog.at_level(logging.WARNING):
        assert quiet_spool.flush() == 3  # moved, and does not raise
    assert "could not delete the moved spool file" in caplog.text
    assert not any(path.exists() for path in retired)
    assert quiet_spool._retired == []
    quiet_spool.append(an_open())
    assert quiet_spool.flush() == 1
    assert PendingOpen.objects.count() == 4


def test_nothing_is_appended_after_close(spool_dir):
    made = spool.Spool(spool_dir, start_thread=False)
    made.close()
    with pytest.raises(spool.SpoolNotWritten):
        made.append(an_open())


def test_a_child_that_exits_leaves_its_parent_files_alone(quiet_spool, spool_dir, monkeypatch):
    quiet_spool.append(an_open())
    monkeypatch.setattr(quiet_spool, "pid", -1)  # as the forked child sees it at exit
    quiet_spool.close()
    assert spool_files(spool_dir) == [quiet_spool._current.path]
    assert not PendingOpen.objects.exists()
    monkeypatch.undo()
    quiet_spool.append(an_open())  # the parent goes on
    assert quiet_spool.flush() == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_child_does_not_keep_its_parent_files_held(spool_dir, monkeypatch):
    monkeypatch.setattr(spool, "FLUSH_INTERVAL", 60)
    parent = spool.get_spool(spool_dir)
    try:
        fd = parent._current.fd
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            try:
                os.fstat(fd)
            except OSError:
                os._exit(0 if spool._spool is None else 2)
            os._exit(1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        spool.shutdown()


# -- a process that died ------------------------------------------------------------


def orphan(directory, lines: list[bytes], tail: bytes = b"") -> "os.PathLike":
    path = directory / f"{spool.PREFIX}{uuid.uuid4().hex}{spool.SUFFIX}"
    path.write_bytes(b"".join(lines) + tail)
    return path


def test_a_dead_process_file_is_moved_from_its_checkpoint_then_deleted(spool_dir):
    lines = [an_open(ua=f"line {k}") for k in range(5)]
    path = orphan(spool_dir, lines, tail=b'["cut off by the crash", fal' + bytes(100))
    # The dead process had moved its first two lines.
    SpoolCheckpoint.objects.create(name=path.name, offset=len(lines[0]) + len(lines[1]))
    assert spool.recover(spool_dir) == 3
    assert sorted(PendingOpen.objects.values_list("user_agent", flat=True)) == [
        "line 2",
        "line 3",
        "line 4",
    ]
    assert not path.exists()
    assert not SpoolCheckpoint.objects.exists()
    assert spool.recover(spool_dir) == 0


def test_a_corrupt_line_is_skipped_and_logged(spool_dir, caplog):
    orphan(
        spool_dir,
        [
            an_open(ua="first"),
            b"not json at all\n",
            b"[1, 2]\n",
            an_open(ip="not an address"),
            b'[1, false, "2025-03-04T09:00:00+00:00", "a number for a token", null]\n',
            an_open(ua="without its offset").replace(b"+00:00", b""),
            an_open(ua="last"),
        ],
    )
    with caplog.at_level(logging.ERROR):
        assert spool.recover(spool_dir) == 2
    assert caplog.text.count("is not a pixel load") == 5
    assert sorted(PendingOpen.objects.values_list("user_agent", flat=True)) == ["first", "last"]


def test_a_file_held_by_a_live_process_is_left_to_it(spool_dir):
    path = orphan(spool_dir, [an_open()])
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert spool.recover(spool_dir) == 0
        assert path.exists()
    finally:
        os.close(fd)
    assert spool.recover(spool_dir) == 1


def test_a_file_being_made_is_not_taken_and_an_abandoned_one_is_deleted(spool_dir):
    making = spool_dir / f".{spool.PREFIX}{uuid.uuid4().hex}{spool.SUFFIX}.new"
    making.write_bytes(b"")
    fd = os.open(making, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # its process is making it
        assert spool.recover(spool_dir) == 0
        assert making.exists()
    finally:
        os.close(fd)
    assert spool.recover(spool_dir) == 0
    assert making.exists()  # young: its process may not hold it yet
    old = time.time() - spool.ABANDONED_AFTER - 1
    os.utime(making, (old, old))
    assert spool.recover(spool_dir) == 0  # its process died before renaming it
    assert not making.exists()


HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, sys.argv[2].encode())
os.fdatasync(fd)
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_killed_process_releases_its_file_to_the_others(spool_dir):
    path = spool_dir / f"{spool.PREFIX}{uuid.uuid4().hex}{spool.SUFFIX}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), an_open(ua="from the killed one").decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert spool.recover(spool_dir) == 0  # alive: its lines are its own
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    assert spool.recover(spool_dir) == 1
    assert PendingOpen.objects.get().user_agent == "from the killed one"
    assert not path.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite stores text of any length")
def test_a_row_the_database_refuses_is_lost_alone(spool_dir, caplog):
    lines = [an_open(ua="kept 1"), an_open(ua="x" * 600), an_open(ua="kept 2")]
    orphan(spool_dir, lines)
    with caplog.at_level(logging.ERROR):
        assert spool.recover(spool_dir) == 3  # three lines read, one row refused
    assert "a spooled open was refused" in caplog.text
    assert sorted(PendingOpen.objects.values_list("user_agent", flat=True)) == [
        "kept 1",
        "kept 2",
    ]


# -- through the pixel, and the mover thread ----------------------------------------


@pytest.fixture
def delivery(task):
    (delivery,) = queued(task, ["bob@example.com"], html=HTML)
    return mark_sent(delivery)


def test_the_pixel_spools_the_open_and_the_task_applies_it(
    client, delivery, spool_dir, monkeypatch, settings
):
    monkeypatch.setattr(spool, "FLUSH_INTERVAL", 60)  # the test moves the lines itself
    url = reverse("notify_tracking:open", kwargs={"token": tokens.sign_open(delivery.token)})
    before = timezone.now()
    with override_settings(
        NOTIFY_TRACKING={**settings.NOTIFY_TRACKING, "OPEN_SPOOL_DIR": str(spool_dir)}
    ):
        try:
            response = client.get(url, HTTP_USER_AGENT=BROWSER_UA)
            assert response.status_code == 200
            assert response.content == PIXEL_GIF
            assert not PendingOpen.objects.exists()  # the request wrote the file only
            (path,) = spool_files(spool_dir)
            assert str(delivery.token.hex) in path.read_text()
        finally:
            spool.shutdown()  # stops the mover, moves what is left
    apply_pending_opens.apply()
    delivery.refresh_from_db()
    assert delivery.status == "opened"
    assert delivery.open_count == 1
    event = delivery.events.get(kind="opened")
    assert (event.user_agent, event.source) == (BROWSER_UA, "pixel")
    assert event.occurred_at >= before


@pytest.mark.django_db(transaction=True)
def test_the_mover_thread_moves_lines_within_a_moment(spool_dir):
    made = spool.Spool(spool_dir)
    try:
        for _ in range(5):
            made.append(an_open())
        deadline = time.monotonic() + 10
        while PendingOpen.objects.count() < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert PendingOpen.objects.count() == 5
    finally:
        made.close()


def test_a_forked_child_makes_a_spool_of_its_own(spool_dir, monkeypatch):
    monkeypatch.setattr(spool, "FLUSH_INTERVAL", 60)
    parent = spool.get_spool(spool_dir)
    try:
        assert spool.get_spool(spool_dir) is parent
        monkeypatch.setattr(parent, "pid", -1)  # as a child sees its parent's spool
        child = spool.get_spool(spool_dir)
        assert child is not parent
        assert child._current.path != parent._current.path
    finally:
        spool.shutdown()
        monkeypatch.undo()
        parent.close()


# -- manage.py notify_tracking_spool ------------------------------------------------


def spool_command(*args):
    out = io.StringIO()
    call_command("notify_tracking_spool", *args, stdout=out)
    return out.getvalue()


def test_the_command_lists_what_waits_and_who_holds_it(quiet_spool, spool_dir):
    for _ in range(3):
        quiet_spool.append(an_open())
    quiet_spool.flush()
    quiet_spool.append(an_open())  # synced, not moved yet
    lines = [an_open() for _ in range(4)]
    dead = orphan(spool_dir, lines, tail=b'["cut off by the crash"')
    SpoolCheckpoint.objects.create(name=dead.name, offset=len(lines[0]))  # one was moved
    out = spool_command("--directory", str(spool_dir))
    assert f"{quiet_spool._current.path.name}: held by a running process, opens waiting: 1" in out
    assert f"{dead.name}: held by no process, opens waiting: 3" in out
    assert "Opens not yet in the database: 4, in files: 2." in out
    assert "Files held by no process (theirs died): 1." in out
    assert dead.exists()  # listed, not moved
    assert PendingOpen.objects.count() == 3


def test_the_command_recovers_the_files_no_process_holds(quiet_spool, spool_dir, settings):
    quiet_spool.append(an_open(ua="live"))
    dead = orphan(spool_dir, [an_open(ua="dead 1"), an_open(ua="dead 2")])
    with override_settings(
        NOTIFY_TRACKING={**settings.NOTIFY_TRACKING, "OPEN_SPOOL_DIR": str(spool_dir)}
    ):
        out = spool_command("--recover")
    assert "Opens moved into the database: 2 (the task applies them)." in out
    assert not dead.exists()
    assert sorted(PendingOpen.objects.values_list("user_agent", flat=True)) == ["dead 1", "dead 2"]
    assert "Opens not yet in the database: 1, in files: 1." in out  # the live one's
    assert "held by no process" not in out


def test_the_command_says_when_a_file_could_not_be_moved(spool_dir, monkeypatch):
    monkeypatch.setattr(spool_command_module, "RECOVER_PAUSE", 0)
    dead = orphan(spool_dir, [an_open()])

    def database_down(*args):
        raise OperationalError("the database is down")

    monkeypatch.setattr(spool, "_insert", database_down)
    message = "Files held by no process that are still there: 1"
    with pytest.raises(CommandError, match=message):
        spool_command("--directory", str(spool_dir), "--recover")
    assert dead.exists()
    assert not PendingOpen.objects.exists()


def test_the_command_needs_a_spool_directory(spool_dir, settings):
    with pytest.raises(CommandError, match="OPEN_SPOOL_DIR is not set"):
        spool_command()
    with pytest.raises(CommandError, match="is not a directory"):
        spool_command("--directory", str(spool_dir / "missing"))
    out = spool_command("--directory", str(spool_dir))
    assert "Opens not yet in the database: 0, in files: 0." in out


def test_recover_tries_again_a_file_that_another_look_held(spool_dir, monkeypatch):
    monkeypatch.setattr(spool_command_module, "RECOVER_PAUSE", 0)
    dead = orphan(spool_dir, [an_open(ua="dead")])
    looker = os.open(dead, os.O_RDONLY)  # another notify_tracking_spool, listing
    fcntl.flock(looker, fcntl.LOCK_SH)
    real_recover = spool.recover
    tries = []

    def recover_then_look_away(directory):
        moved = real_recover(directory)  # the first time it skips the file: held
        if not tries:
            os.close(looker)
        tries.append(moved)
        return moved

    monkeypatch.setattr(spool, "recover", recover_then_look_away)
    out = spool_command("--directory", str(spool_dir), "--recover")
    assert tries == [0, 1]
    assert "Opens moved into the database: 1 (the task applies them)." in out
    assert not dead.exists()
    assert PendingOpen.objects.get().user_agent == "dead"


def test_a_file_deleted_while_it_is_listed_is_left_out(quiet_spool, spool_dir, monkeypatch):
    quiet_spool.append(an_open())
    dead = orphan(spool_dir, [an_open()])
    real_flock = fcntl.flock
    dead_inode = dead.stat().st_ino

    def deleted_meanwhile(fd, operation):
        if os.fstat(fd).st_ino == dead_inode:
            dead.unlink()  # its mover deleted it between the open and the lock
        real_flock(fd, operation)

    monkeypatch.setattr(spool.fcntl, "flock", deleted_meanwhile)
    assert [file.name for file in spool.inspect(spool_dir)] == [quiet_spool._current.path.name]


AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
READ_AS_NOBODY = """
import django, sys
django.setup()
from django.core.management import call_command
call_command("notify_tracking_spool", "--directory", sys.argv[1], "--recover")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run the command as another user")
def test_the_command_refuses_a_directory_it_cannot_read():
    # Outside pytest's own temporary folder, which only root may enter.
    if subprocess.run([*AS_NOBODY, sys.executable, "-c", "pass"], check=False).returncode:
        pytest.skip("the user nobody cannot run this Python here")
    parent = tempfile.mkdtemp(prefix="nt-spool-perm-", dir="/tmp")
    os.chmod(parent, 0o755)  # noqa: S103 (only the directory inside is the spool's)
    directory = os.path.join(parent, "spool")
    os.mkdir(directory, 0o700)  # as the docs ask: the web processes' user only
    try:
        orphan(pathlib.Path(directory), [an_open()])
        result = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", READ_AS_NOBODY, directory],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=pathlib.Path(__file__).resolve().parent.parent,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        )
        assert result.returncode != 0
        assert f"cannot read and write {directory}: run this command as the user" in result.stderr
        assert len(os.listdir(directory)) == 1  # not taken for an empty spool
    finally:
        shutil.rmtree(parent)
