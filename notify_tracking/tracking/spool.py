"""Pixel loads spooled to a local file, synced, then moved into the database in batches.

With ``OPEN_SPOOL_DIR`` set, the pixel's request does not insert a
:class:`~notify_tracking.models.PendingOpen`: it appends one line to its process's
spool file and returns once the line is on disk (``fdatasync``; concurrent requests
of the process share one write and one sync, as in :mod:`.group_commit`). A thread of
the same process moves the synced lines into ``PendingOpen`` every
``FLUSH_INTERVAL`` seconds, in one transaction that also moves the file's
:class:`~notify_tracking.models.SpoolCheckpoint`, and nudges the task that applies
them. From there on nothing differs from the database path (:mod:`.pending`).

What it guarantees, and what it asks of the deployment:

- **Durable before the answer.** A request answers after its line is synced, or with
  the error that lost it; the line is then on the host's disk until it is moved, so a
  crash of the process or of the host loses nothing that was answered.
- **Moved exactly once.** The checkpoint commits with the rows it covers, and a moved
  file is deleted (the deletion synced) before its checkpoint. A file whose process
  died (its ``flock`` is released) is moved by another process using the same
  directory, from its checkpoint, then deleted: within ``RECOVER_INTERVAL`` seconds
  of that process's first pixel load. After a failed write no line goes into that
  file again: it may end with part of a line.
- **A local directory per host**, on a disk that outlives the process (not a
  container's writable layer that is thrown away with it), kept by every web process
  of that host. A host that is gone for good takes its last unmoved opens with it
  (at most about ``FLUSH_INTERVAL`` seconds of them while the database is reachable).
- While the database is down, lines wait on disk and are moved when it is back.

See docs/tracking.md, "How an open is recorded".
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import datetime as dt
import fcntl
import ipaddress
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from django.db import DataError, IntegrityError, connections, transaction

from ..copy_insert import insert_new
from ..models import PendingOpen, SpoolCheckpoint, write_db
from .group_commit import Grouped

logger = logging.getLogger(__name__)

#: Seconds between two moves of a process's synced lines into the database.
FLUSH_INTERVAL = 0.2
#: Seconds between two looks for the files of processes that died.
RECOVER_INTERVAL = 10.0
#: A spool file this large (bytes) is replaced by a new one, and deleted once moved.
ROTATE_BYTES = 1 << 20
#: Seconds after which a file left half-made (a crash while making it) is deleted.
ABANDONED_AFTER = 60.0
#: The most lines one transaction moves.
MOVE_BATCH = 2000
#: Errors of a value the database refuses: the other rows of the batch may be fine.
#: Any other error (the database is down) leaves the whole batch for the next try.
REFUSED = (DataError, IntegrityError)
PREFIX = "opens-"
SUFFIX = ".jsonl"


class SpoolNotWritten(Exception):
    """This line was not synced: its group's write or sync failed (the cause is
    chained), or the spool is closed."""


def line(
    token: uuid.UUID, group: bool, occurred_at: dt.datetime, user_agent: str, ip: str | None
) -> bytes:
    """One pixel load as a spool line (JSON: no newline inside, whatever the user agent)."""
    return json.dumps([token.hex, group, occurred_at.isoformat(), user_agent, ip]).encode() + b"\n"


def _parse(raw: bytes) -> PendingOpen:
    """The pending open of one line; ValueError for anything else (a line this module
    did not write whole: a byte flipped on disk, a file edited by hand)."""
    try:
        token, group, occurred_at, user_agent, ip = json.loads(raw)
        if ip is not None:
            ipaddress.ip_address(ip)
        occurred_at = dt.datetime.fromisoformat(occurred_at)
        if occurred_at.tzinfo is None:
            raise ValueError("a time without its offset")
        return PendingOpen(
            token=uuid.UUID(hex=token),
            group=bool(group),
            occurred_at=occurred_at,
            user_agent=str(user_agent),
            ip_address=ip,
        )
    except (ValueError, TypeError, AttributeError) as error:  # UUID(hex=1): AttributeError
        raise ValueError(f"not a pixel load: {error}") from error


class _File:
    """A spool file this process holds (``flock``) and writes to, or has retired."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.synced = 0  # bytes known to be on disk, whole lines only
        self.moved = 0  # bytes known to be in the database (its checkpoint)
        self.broken = False  # a write failed: it may end with part of a line


def _open_new(directory: Path) -> _File:
    """A new spool file, held (``flock``). It is made under a name that :func:`recover`
    does not look at, and renamed once held: another process cannot take it for the
    file of a dead one."""
    name = f"{PREFIX}{uuid.uuid4().hex}{SUFFIX}"
    making = directory / f".{name}.new"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(making, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, directory / name)
        _sync_directory(directory)  # the file's name is durable too
    except BaseException:
        os.close(fd)
        making.unlink(missing_ok=True)
        raise
    return _File(directory / name, fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool(Grouped):
    """The spool of one process: its current file, the files it retired, its mover."""

    def __init__(self, directory: str | os.PathLike[str], *, start_thread: bool = True) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.alias = write_db()
        self.pid = os.getpid()
        self._io = threading.Lock()  # the files: writes, rotation, closing
        self._move = threading.Lock()  # one mover at a time
        self._current = _open_new(self.directory)
        self._retired: list[_File] = []
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(
                target=self._run, name="notify_tracking-spool", daemon=True
            )
            self._thread.start()

    # -- the request's side -------------------------------------------------------

    def append(self, data: bytes) -> None:
        """Append one line; return once it is synced, raise if it was not."""
        group, leads = self._take_part(data)
        if group.error is None:
            return
        if leads:
            raise group.error
        raise SpoolNotWritten(str(group.error)) from group.error

    def _store(self, rows: list[Sequence[Any]]) -> None:
        data = b"".join(bytes(row) for row in rows)
        with self._io:
            if self._closed:
                raise SpoolNotWritten("the spool is closed")
            if self._current.broken:
                self._rotate()  # the last rotation failed: again, or no write at all
            file = self._current
            try:
                written = 0
                while written < len(data):
                    written += os.write(file.fd, data[written:])
                os.fdatasync(file.fd)
            except OSError:
                # The file may now end with part of a line: no line goes after it.
                file.broken = True
                with contextlib.suppress(OSError):
                    self._rotate()
                raise
            file.synced += len(data)
            if file.synced >= ROTATE_BYTES:
                with contextlib.suppress(OSError):  # the next write tries again
                    self._rotate()

    def _rotate(self) -> None:
        """Retire the current file for a new one (``_io`` held). When no new file can
        be made, nothing changes, and the error is raised."""
        new = _open_new(self.directory)
        self._retired.append(self._current)
        self._current = new

    # -- the mover's side ---------------------------------------------------------

    def _run(self) -> None:
        since_recovery = RECOVER_INTERVAL  # look for dead processes' files at once
        try:
            while not self._stop.wait(FLUSH_INTERVAL):
                try:
                    self.flush()
                    since_recovery += FLUSH_INTERVAL
                    if since_recovery >= RECOVER_INTERVAL:
                        since_recovery = 0.0
                        recover(self.directory)  # skips this process's own: it holds them
                    connections[self.alias].close_if_unusable_or_obsolete()
                except Exception:  # the thread must live on: the next tick tries again
                    logger.exception("notify_tracking: the spool's mover failed")
        finally:
            connections.close_all()  # this thread's connections

    def flush(self) -> int:
        """Move this process's synced lines into the database; delete the retired
        files whose every line is moved; return how many lines were moved.

        Never raises: lines that cannot be moved now stay on disk for the next try.
        """
        moved = 0
        with self._move:
            with self._io:
                # What is synced now. A retired file gets no more lines: once moved, it
                # goes; the current one may be retired meanwhile, and stays till next time.
                files = [(file, file.synced, True) for file in self._retired]
                current = self._current
                if current.synced > current.moved:
                    files.append((current, current.synced, False))
            for file, end, retired in files:
                try:
                    count, file.moved = _move(file.path, end, self.alias)
                except Exception:
                    logger.warning(
                        "notify_tracking: could not move spooled opens to the database; "
                        "they stay in %s for the next try",
                        file.path,
                        exc_info=True,
                    )
                    break
                moved += count
                if retired and self._discard(file):
                    with self._io:
                        self._retired.remove(file)
                    with contextlib.suppress(OSError):
                        os.close(file.fd)  # and its lock
        if moved:
            from .pending import nudge

            nudge()
        return moved

    def _discard(self, file: _File) -> bool:
        """Delete a file whose every line is moved; whether it is gone."""
        try:
            _delete(file.path, self.alias)
        except Exception:
            logger.warning(
                "notify_tracking: could not delete the moved spool file %s; next time",
                file.path,
                exc_info=True,
            )
            return not file.path.exists()
        return True

    def close(self) -> None:
        """Stop the mover, move what is left, and delete the files all moved (at exit).

        Only in the process that made the spool: a forked child inherits the atexit
        call, and must not touch its parent's files.
        """
        if self.pid != os.getpid() or self._closed:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                # Stuck on the database: keep holding the files (the process is ending
                # anyway), so that no other process moves them at the same time.
                logger.warning("notify_tracking: the spool's mover did not stop; its files stay")
                return
        with self._io:
            self._closed = True  # no line after this
        self.flush()
        with self._io:
            current = self._current
        if current.synced <= current.moved:  # all of it is in the database
            self._discard(current)
        for file in [*self._retired, current]:
            with contextlib.suppress(OSError):
                os.close(file.fd)  # a file left behind is moved by the next process

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors (so that the parent's
        files are released when the parent dies), touch nothing else."""
        for file in [*self._retired, self._current]:
            with contextlib.suppress(OSError):
                os.close(file.fd)


def _move(path: Path, end: int | None, alias: str) -> tuple[int, int]:
    """Move the lines of ``path`` from its checkpoint to ``end`` (None: to the end of
    the file; whole lines only) into ``PendingOpen``, ``MOVE_BATCH`` per transaction;
    return how many, and the checkpoint's offset after them."""
    moved = 0
    checkpoints = SpoolCheckpoint.objects.using(alias)
    while True:
        with transaction.atomic(using=alias):
            # Locked: were two processes ever to move one file, one would wait and then
            # start from where the other stopped.
            checkpoint = checkpoints.select_for_update().filter(name=path.name).first()
            offset = checkpoint.offset if checkpoint else 0
            lines = _lines(path, offset, end)
            if not lines:
                return moved, offset
            rows = []
            for raw in lines:
                try:
                    rows.append(_parse(raw))
                except ValueError:
                    logger.error(
                        "notify_tracking: a spool line of %s is not a pixel load; skipped",
                        path.name,
                    )
            _insert(rows, alias)
            new_offset = offset + sum(map(len, lines))
            if checkpoint is None:
                checkpoints.create(name=path.name, offset=new_offset)
            else:
                checkpoints.filter(pk=checkpoint.pk).update(offset=new_offset)
        moved += len(rows)


def _lines(path: Path, offset: int, end: int | None) -> list[bytes]:
    """The whole lines of ``path`` from ``offset`` to ``end`` (None: its end), at most
    ``MOVE_BATCH`` of them."""
    with path.open("rb") as spool:
        return _whole_lines(spool, offset, end).splitlines(keepends=True)[:MOVE_BATCH]


def _whole_lines(spool: BinaryIO, offset: int, end: int | None) -> bytes:
    """The bytes of ``spool`` from ``offset`` to ``end`` (None: its end), cut after the
    last whole line."""
    spool.seek(offset)
    data = spool.read(-1 if end is None else max(end - offset, 0))
    # A crash can leave zeros where the data of a write that was never synced (so
    # never answered) was to go: only the tail, after every synced line.
    unwritten = data.find(b"\0")
    if unwritten >= 0:
        data = data[:unwritten]
    return data[: data.rfind(b"\n") + 1]


def _insert(rows: list[PendingOpen], alias: str) -> None:
    """Insert ``rows``; when the database refuses the batch, each row alone, so that only
    a row it refuses is lost (logged), not the lines around it."""
    try:
        with transaction.atomic(using=alias):
            insert_new(PendingOpen, rows, alias)
    except REFUSED:
        for row in rows:
            row.pk = None
            try:
                with transaction.atomic(using=alias):
                    insert_new(PendingOpen, [row], alias)
            except REFUSED as error:
                logger.error("notify_tracking: a spooled open was refused: %s", error)


def _delete(path: Path, alias: str) -> None:
    """Delete a file whose every line is moved, then its checkpoint. In this order, and
    the deletion synced first: a checkpoint without its file is harmless, a file
    without its checkpoint would be moved again."""
    path.unlink(missing_ok=True)
    _sync_directory(path.parent)
    with transaction.atomic(using=alias):  # a failure leaves any outer transaction usable
        SpoolCheckpoint.objects.using(alias).filter(name=path.name).delete()


def recover(directory: str | os.PathLike[str]) -> int:
    """Move, then delete, the spool files in ``directory`` that no live process holds;
    return how many lines were moved. Never raises."""
    alias = write_db()
    for making in Path(directory).glob(f".{PREFIX}*{SUFFIX}.new"):
        try:
            _delete_abandoned(making)
        except OSError:
            logger.warning(
                "notify_tracking: cannot delete the abandoned spool file %s", making, exc_info=True
            )
    moved = 0
    for path in sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # moved meanwhile by another process
        except OSError:
            logger.warning(
                "notify_tracking: cannot open the spool file %s; its opens stay there",
                path,
                exc_info=True,
            )
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive, or another one is moving it
            if not path.exists():
                continue  # moved and deleted between the glob and the lock
            moved += _move(path, None, alias)[0]
            _delete(path, alias)
        except Exception:
            logger.warning(
                "notify_tracking: could not move the spooled opens of %s; they stay there "
                "for the next try",
                path,
                exc_info=True,
            )
        finally:
            os.close(fd)
    if moved:
        from .pending import nudge

        nudge()
    return moved


@dataclasses.dataclass(frozen=True)
class SpoolFile:
    """What :func:`inspect` found of one spool file."""

    name: str
    #: A live process holds it: the one that writes to it, or one moving it now.
    held: bool
    #: Its whole lines after its checkpoint: opens not yet in the database.
    waiting: int


def inspect(directory: str | os.PathLike[str]) -> list[SpoolFile]:
    """The spool files in ``directory``, by name, with what each holds that is not yet
    in the database (for ``manage.py notify_tracking_spool``). Takes no lock that a
    writer or a mover would wait for. Raises if the checkpoints cannot be read, or a
    file cannot be opened (``OSError``)."""
    return [
        SpoolFile(name, held, unmoved.count(b"\n")) for name, held, unmoved in _unmoved(directory)
    ]


def waiting_loads(directory: str | os.PathLike[str]) -> collections.Counter[tuple[uuid.UUID, bool]]:
    """How many pixel loads not yet in the database the spool files in ``directory``
    hold, by token and whether the load is of a shared email (for ``manage.py
    notify_tracking_status``). A line that the mover would skip (not a pixel load) is
    left out. Raises as :func:`inspect`."""
    loads: collections.Counter[tuple[uuid.UUID, bool]] = collections.Counter()
    for _name, _held, unmoved in _unmoved(directory):
        for raw in unmoved.splitlines():
            try:
                load = _parse(raw)
            except ValueError:
                continue
            loads[(load.token, load.group)] += 1
    return loads


def _unmoved(directory: str | os.PathLike[str]) -> Iterator[tuple[str, bool, bytes]]:
    """Each spool file in ``directory`` by name: whether a live process holds it, and
    its whole lines after its checkpoint (one file in memory at a time). Takes a shared
    lock only, and never waits."""
    paths = sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}"))
    offsets = dict(
        SpoolCheckpoint.objects.using(write_db())
        .filter(name__in=[path.name for path in paths])
        .values_list("name", "offset")
    )
    for path in paths:
        try:
            spool = path.open("rb")
        except FileNotFoundError:
            continue  # moved and deleted meanwhile
        with spool:
            try:
                # Shared: another look does not conflict, the holder's lock does.
                fcntl.flock(spool.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = False
            except BlockingIOError:
                held = True
            if os.fstat(spool.fileno()).st_nlink == 0:
                continue  # moved and deleted between the open and the lock
            unmoved = _whole_lines(spool, offsets.get(path.name, 0), None)
        yield path.name, held, unmoved


def _delete_abandoned(making: Path) -> None:
    """Delete a file whose making was cut short (no line is written before it is
    renamed), unless a live process is making it."""
    try:
        fd = os.open(making, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if time.time() - os.fstat(fd).st_mtime < ABANDONED_AFTER:
            return  # maybe made this moment, not yet held by its process
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        making.unlink(missing_ok=True)
    except BlockingIOError:
        pass  # being made now
    finally:
        os.close(fd)


_spool: Spool | None = None
_spool_lock = threading.Lock()


def _forget_in_child() -> None:
    global _spool, _spool_lock
    _spool_lock = threading.Lock()  # another thread may have held it at the fork
    if _spool is not None:
        _spool.forget()
        _spool = None


os.register_at_fork(after_in_child=_forget_in_child)


def get_spool(directory: str | os.PathLike[str]) -> Spool:
    """This process's spool (a forked child makes its own: locks are per process)."""
    global _spool
    spool = _spool
    if spool is not None and spool.pid == os.getpid():
        return spool
    with _spool_lock:
        if _spool is None or _spool.pid != os.getpid():
            _spool = Spool(directory)
            atexit.register(_spool.close)
        return _spool


def shutdown() -> None:
    """Stop this process's spool, moving what is left (tests; atexit does it at exit)."""
    global _spool
    with _spool_lock:
        spool, _spool = _spool, None
    if spool is not None and spool.pid == os.getpid():
        atexit.unregister(spool.close)
        spool.close()
