"""``manage.py notify_tracking_purge``: delete or anonymise what is past its retention.

The same work as the periodic Celery task ``notify_tracking.purge_expired``; see
docs/retention.md. Prints how many rows it removed (or would, with ``--dry-run``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...retention import ANONYMISE, DELETE, purge


class Command(BaseCommand):
    help = (
        "Delete (or anonymise) notifications, deliveries, events and attachment files "
        "older than their retention period, in short batches."
    )

    def add_arguments(self, parser: Any) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--anonymise",
            action="store_const",
            const=ANONYMISE,
            dest="mode",
            help="drop addresses, user agents, IP addresses and bodies; keep statuses and counts",
        )
        mode.add_argument(
            "--delete",
            action="store_const",
            const=DELETE,
            dest="mode",
            help="delete the rows (default: the RETENTION_MODE setting)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be purged, change nothing"
        )
        parser.add_argument(
            "--batch-size", type=int, default=None, help="rows per transaction (default: setting)"
        )

    def handle(
        self, *args: Any, mode: str | None, dry_run: bool, batch_size: int | None, **options: Any
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        report = purge(mode=mode, dry_run=dry_run, batch_size=batch_size)
        self.stdout.write(("Dry run: " if dry_run else "") + report.summary() + ".")
