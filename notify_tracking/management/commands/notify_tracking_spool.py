"""``manage.py notify_tracking_spool``: the opens waiting in this host's pixel spool.

For operators of a site with ``OPEN_SPOOL_DIR`` (docs/tracking.md, "The spool"): run
on a web host, it lists the spool files, how many opens each holds that are not yet in
the database, and whether a running process holds the file. A file that no process
holds is left by a process that died; a web process of the host moves it within
``RECOVER_INTERVAL`` seconds of serving a pixel, and ``--recover`` moves it now (after
a host's web processes are retired, say).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...conf import get_setting
from ...tracking import spool

#: How many times --recover tries while a file held by no process is left.
RECOVER_TRIES = 3
#: Seconds between two tries.
RECOVER_PAUSE = 0.2


class Command(BaseCommand):
    help = (
        "List the opens waiting in this host's pixel spool (OPEN_SPOOL_DIR); with "
        "--recover, move those of files that no running process holds into the database."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--directory", help="the spool directory (default: the OPEN_SPOOL_DIR setting)"
        )
        parser.add_argument(
            "--recover",
            action="store_true",
            help="move the opens of files that no running process holds, then list",
        )

    def handle(self, *args: Any, directory: str | None, recover: bool, **options: Any) -> None:
        directory = directory or get_setting("OPEN_SPOOL_DIR")
        if directory is None:
            raise CommandError("OPEN_SPOOL_DIR is not set: give the spool's --directory")
        if not Path(directory).is_dir():
            raise CommandError(f"{directory} is not a directory")
        if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            # Else the files would look absent (a directory that cannot be listed).
            raise CommandError(
                f"cannot read and write {directory}: run this command as the user of the "
                "web processes that use it"
            )
        self.stdout.write(f"Spool directory: {directory}")
        if recover:
            moved, files = self._recover(directory)
            self.stdout.write(f"Opens moved into the database: {moved} (the task applies them).")
        else:
            files = self._inspect(directory)
        for file in files:
            holder = "held by a running process" if file.held else "held by no process"
            self.stdout.write(f"{file.name}: {holder}, opens waiting: {file.waiting}")
        waiting = sum(file.waiting for file in files)
        self.stdout.write(f"Opens not yet in the database: {waiting}, in files: {len(files)}.")
        left = [file for file in files if not file.held]
        if not left:
            return
        if recover:
            raise CommandError(
                f"Files held by no process that are still there: {len(left)}. Why a file "
                "could not be moved or deleted is in the log; the file stays for the next try."
            )
        self.stdout.write(
            f"Files held by no process (theirs died): {len(left)}. A web process of this "
            f"host moves them within {spool.RECOVER_INTERVAL:g} seconds of serving a pixel; "
            "--recover moves them now."
        )

    def _recover(self, directory: str) -> tuple[int, list[spool.SpoolFile]]:
        """Recover, then list; again while a file held by no process is left (at most
        ``RECOVER_TRIES`` times): one was skipped because another look at the spool held
        it that moment, or its process died after recover() passed it."""
        moved = 0
        for attempt in range(RECOVER_TRIES):
            if attempt:
                time.sleep(RECOVER_PAUSE)
            moved += spool.recover(directory)
            files = self._inspect(directory)
            if all(file.held for file in files):
                break
        return moved, files

    def _inspect(self, directory: str) -> list[spool.SpoolFile]:
        try:
            return spool.inspect(directory)
        except OSError as error:
            raise CommandError(f"could not read the spool: {error}") from error
        except Exception as error:
            raise CommandError(f"could not read the spool's checkpoints: {error}") from error
