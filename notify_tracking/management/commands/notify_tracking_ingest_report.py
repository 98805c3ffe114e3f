"""``manage.py notify_tracking_ingest_report [path]``: record one DSN or MDN message.

Reads one message from ``path``, or from standard input when it is ``-`` or absent
(for an MTA pipe), and prints what it matched and recorded. Exit status, in the
sysexits.h words MTAs understand:

- 0: recorded, already known, or ignored (a bad report is never an error: retrying
  it would not make it better);
- 66 (EX_NOINPUT): the file cannot be read;
- 74 (EX_IOERR): standard input cannot be read;
- 75 (EX_TEMPFAIL): the database is unavailable; the MTA keeps the message and retries.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from ...reports import ingest_bytes, read_limited

EX_NOINPUT = 66
EX_IOERR = 74
EX_TEMPFAIL = 75


class Command(BaseCommand):
    help = (
        "Record a delivery status notification (RFC 3464) or read receipt (RFC 8098) "
        "read from a file, or from standard input for an MTA pipe."
    )
    # call_command(..., stdin=<binary stream>) reads from that stream (tests).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "path",
            nargs="?",
            default="-",
            help="the message file; '-' or nothing: standard input",
        )

    def handle(self, *args: Any, path: str, **options: Any) -> None:
        if path == "-":
            raw, origin = self._read_stdin(options.get("stdin")), "standard input"
        else:
            raw, origin = self._read_file(path), path
        try:
            outcome = ingest_bytes(raw, origin=origin)
        except DatabaseError as error:
            raise CommandError(
                f"could not record the report, try again later: {error}", returncode=EX_TEMPFAIL
            ) from error
        for line in outcome.lines():
            self.stdout.write(line)

    def _read_stdin(self, stream: Any) -> bytes:
        stream = stream or (sys.stdin and sys.stdin.buffer)  # None: no descriptor 0 at all
        if stream is None:
            raise CommandError("cannot read standard input: it is closed", returncode=EX_IOERR)
        try:
            return read_limited(stream)
        except OSError as error:
            raise CommandError(
                f"cannot read standard input: {error}", returncode=EX_IOERR
            ) from error

    def _read_file(self, path: str) -> bytes:
        try:
            with open(path, "rb") as file:
                return read_limited(file)
        except OSError as error:
            reason = error.strerror or str(error)
            raise CommandError(f"cannot read {path}: {reason}", returncode=EX_NOINPUT) from error
