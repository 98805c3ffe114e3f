"""The activity log as CSV, streamed in constant memory.

Rows come from ``QuerySet.values_list(...).iterator(chunk_size=CHUNK_SIZE)``: a
server-side cursor on PostgreSQL, ``fetchmany`` elsewhere, so at most one chunk of
rows is in memory whatever the size of the export; each chunk is written out as one
piece of the response.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from ..models import Delivery

#: Rows fetched from the database, and written to the response, at a time.
CHUNK_SIZE = 2000
#: Characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def columns() -> list[tuple[str, str]]:
    """(header, lookup) of each column, in order."""
    username = f"notification__sender__{get_user_model().USERNAME_FIELD}"
    return [
        (_("delivery id"), "pk"),
        (_("queued at"), "created_at"),
        (_("recipient"), "recipient"),
        (_("recipient name"), "recipient_name"),
        (_("channel"), "channel"),
        (_("status"), "status"),
        (_("error"), "error"),
        (_("subject"), "notification__subject"),
        (_("target type"), "notification__content_type__app_label"),
        (_("target model"), "notification__content_type__model"),
        (_("target id"), "notification__object_id"),
        (_("sender"), username),
        (_("sent at"), "sent_at"),
        (_("delivered at"), "delivered_at"),
        (_("first read at"), "first_opened_at"),
        (_("last read at"), "last_opened_at"),
        (_("first click at"), "first_clicked_at"),
        (_("failed at"), "failed_at"),
        (_("opens"), "open_count"),
        (_("clicks"), "click_count"),
    ]


def safe_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run: text starting like a formula gets a ``'``."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Line:
    """A file-like object whose ``write`` returns what it was given (for csv.writer)."""

    def write(self, value: str) -> str:
        return value


def rows(deliveries: QuerySet[Delivery]) -> Iterator[tuple[Any, ...]]:
    """The export's data rows, read a chunk at a time."""
    lookups = [lookup for _, lookup in columns()]
    return deliveries.values_list(*lookups).iterator(chunk_size=CHUNK_SIZE)


def stream_csv(deliveries: QuerySet[Delivery]) -> Iterator[str]:
    """The CSV text of ``deliveries``: the header, then one piece per chunk of rows."""
    writer = csv.writer(_Line())
    yield writer.writerow([header for header, _ in columns()])
    yield from _pieces(writer, rows(deliveries))


def _pieces(writer: Any, data: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    piece: list[str] = []
    for row in data:
        piece.append(writer.writerow([safe_cell(value) for value in row]))
        if len(piece) == CHUNK_SIZE:
            yield "".join(piece)
            piece = []
    if piece:
        yield "".join(piece)
