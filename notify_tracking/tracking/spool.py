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
- **Moved exactly once.** The checkpoint commits with the rows it covers. A file whose
  process died (its ``flock`` is released) is moved by another process using the same
  directory, from its checkpoint, then deleted: within ``RECOVER_INTERVAL`` seconds,
  or at the next start.
- **A local directory per host**, on a disk that outlives the process (not a
  container's writable layer that is thrown away with it), kept by every web process
  of that host. A host that is gone for good takes its last unmoved opens with it
  (at most about ``FLUSH_INTERVAL`` seconds of them while the database is reachable).
- While the database is down, lines wait on disk and are moved when it is back.

See docs/tracking.md, "How an open is recorded".
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import logging
import os
import threading
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from django.db import DatabaseError, connections, router, transaction

from ..copy_insert import insert_new
from ..models import PendingOpen, SpoolCheckpoint
from .group_commit import Grouped

logger = logging.getLogger(__name__)

#: Seconds between two moves of a process's synced lines into the database.
FLUSH_INTERVAL = 0.2
#: Seconds between two looks for the files of processes that died.
RECOVER_INTERVAL = 10.0
#: A spool file this large (bytes) is replaced by a new one, and deleted once moved.
ROTATE_BYTES = 1 << 20
#: The most lines one transaction moves.
MOVE_BATCH = 2000
PREFIX = "opens-"
SUFFIX = ".jsonl"


class SpoolNotWritten(Exception):
    """The write or sync of the group this line was part of failed (cause chained)."""


def line(
    token: uuid.UUID, group: bool, occurred_at: dt.datetime, user_agent: str, ip: str | None
) -> bytes:
    """One pixel load as a spool line (JSON: no newline inside, whatever the user agent)."""
    return json.dumps([token.hex, group, occurred_at.isoformat(), user_agent, ip]).encode() + b"\n"


def _parse(raw: bytes) -> PendingOpen:
    """The pending open of one line; ValueError or TypeError for anything else."""
    token, group, occurred_at, user_agent, ip = json.loads(raw)
    if ip is not None:
        ipaddress.ip_address(ip)
    return PendingOpen(
        token=uuid.UUID(hex=token),
        group=bool(group),
        occurred_at=dt.datetime.fromisoformat(occurred_at),
        user_agent=str(user_agent),
        ip_address=ip,
    )


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
        self.alias = router.db_for_write(PendingOpen)
        self.pid = os.getpid()
        self._io = threading.Lock()  # the current file: writes, rotation
        self._move = threading.Lock()  # one mover at a time
        self._current = _open_new(self.directory)
        self._retired: list[_File] = []
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
            file = self._current
            try:
                written = 0
                while written < len(data):
                    written += os.write(file.fd, data[written:])
                os.fdatasync(file.fd)
            except OSError:
                # The file may now end with part of a line: no line goes after it.
                file.broken = True
                self._rotate()
                raise
            file.synced += len(data)
            if file.synced >= ROTATE_BYTES:
                self._rotate()

    def _rotate(self) -> None:
        """Retire the current file (called with ``_io`` held); a new one takes its place."""
        self._retired.append(self._current)
        self._current = _open_new(self.directory)

    # -- the mover's side ---------------------------------------------------------

    def _run(self) -> None:
        since_recovery = RECOVER_INTERVAL  # look for dead processes' files at once
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()
            since_recovery += FLUSH_INTERVAL
            if since_recovery >= RECOVER_INTERVAL:
                since_recovery = 0.0
                recover(self.directory, skip={self._current.path})
            connections[self.alias].close_if_unusable_or_obsolete()

    def flush(self) -> int:
        """Move this process's synced lines into the database; return how many.

        Never raises: lines that cannot be moved now stay on disk for the next try.
        """
        moved = 0
        with self._move:
            with self._io:
                files = [*self._retired, self._current]
            for file in files:
                if file is self._current and file.synced <= file.moved:
                    continue  # nothing new: not even a query
                try:
                    count, file.moved = _move(file.path, file.synced, self.alias)
                    moved += count
                except Exception:
                    logger.warning(
                        "notify_tracking: could not move spooled opens to the database; "
                        "they stay in %s for the next try",
                        file.path,
                        exc_info=True,
                    )
                    break
                if file is not self._current:
                    _delete(file.path, self.alias)
                    os.close(file.fd)  # and its lock
                    with self._io:
                        self._retired.remove(file)
        if moved:
            from .pending import nudge

            nudge()
        return moved

    def close(self) -> None:
        """Stop the mover and move what is left (at exit)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()
        with self._io:
            files = [*self._retired, self._current]
        current = self._current
        if current.synced <= current.moved:  # all of it is in the database
            with contextlib.suppress(Exception):
                _delete(current.path, self.alias)
        for file in files:
            with contextlib.suppress(OSError):
                os.close(file.fd)  # a file left behind is moved by the next process


def _move(path: Path, end: int | None, alias: str) -> tuple[int, int]:
    """Move the lines of ``path`` from its checkpoint to ``end`` (None: to the end of
    the file; whole lines only) into ``PendingOpen``, ``MOVE_BATCH`` per transaction;
    return how many, and the checkpoint's offset after them."""
    moved = 0
    while True:
        offset = (
            SpoolCheckpoint.objects.using(alias)
            .filter(name=path.name)
            .values_list("offset", flat=True)
            .first()
        ) or 0
        with path.open("rb") as spool:
            spool.seek(offset)
            data = spool.read(-1 if end is None else max(end - offset, 0))
        # A crash can leave zeros where the data of a write that was never synced (so
        # never answered) was to go: only the tail, after every synced line.
        unwritten = data.find(b"\0")
        if unwritten >= 0:
            data = data[:unwritten]
        lines = data[: data.rfind(b"\n") + 1].splitlines(keepends=True)[:MOVE_BATCH]
        if not lines:
            return moved, offset
        rows = []
        for raw in lines:
            try:
                rows.append(_parse(raw))
            except (ValueError, TypeError):
                logger.error(
                    "notify_tracking: a spool line of %s is not a pixel load; skipped",
                    path.name,
                )
        with transaction.atomic(using=alias):
            _insert(rows, alias)
            SpoolCheckpoint.objects.using(alias).update_or_create(
                name=path.name, defaults={"offset": offset + sum(map(len, lines))}
            )
        moved += len(rows)


def _insert(rows: list[PendingOpen], alias: str) -> None:
    """Insert ``rows``; when the database refuses the batch, each row alone, so that only
    a row it refuses is lost (logged), not the lines around it."""
    try:
        with transaction.atomic(using=alias):
            insert_new(PendingOpen, rows, alias)
    except DatabaseError as error:
        if not _refused_value(error):
            raise
        for row in rows:
            row.pk = None
            try:
                with transaction.atomic(using=alias):
                    insert_new(PendingOpen, [row], alias)
            except DatabaseError as row_error:
                if not _refused_value(row_error):
                    raise
                logger.error("notify_tracking: a spooled open was refused: %s", row_error)


def _refused_value(error: DatabaseError) -> bool:
    from django.db import DataError, IntegrityError

    return isinstance(error, (DataError, IntegrityError))


def _delete(path: Path, alias: str) -> None:
    """Delete a file whose every line is moved, then its checkpoint (in this order: a
    checkpoint without a file is harmless, a file without its checkpoint would be
    moved twice)."""
    path.unlink(missing_ok=True)
    SpoolCheckpoint.objects.using(alias).filter(name=path.name).delete()


def recover(directory: str | os.PathLike[str], skip: Collection[Path] = ()) -> int:
    """Move, then delete, the spool files in ``directory`` that no live process holds;
    return how many lines were moved. Never raises."""
    alias = router.db_for_write(PendingOpen)
    for making in Path(directory).glob(f".{PREFIX}*{SUFFIX}.new"):
        _delete_abandoned(making)
    moved = 0
    for path in sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}")):
        if path in skip:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # moved meanwhile by another process
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


def _delete_abandoned(making: Path) -> None:
    """Delete a file whose making was cut short (no line is written before it is
    renamed), unless a live process is making it."""
    try:
        fd = os.open(making, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        making.unlink(missing_ok=True)
    except BlockingIOError:
        pass  # being made now
    finally:
        os.close(fd)


_spool: Spool | None = None
_spool_lock = threading.Lock()


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
