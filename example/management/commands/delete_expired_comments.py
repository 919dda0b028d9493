from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from example import maintenance
from jobs.conf import MAX_RETENTION_HOURS
from jobs.management.arguments import whole_number


class Command(BaseCommand):
    help = "Delete comments older than their lifetime (default EXAMPLE_COMMENT_LIFETIME_HOURS)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours",
            type=whole_number(1, MAX_RETENTION_HOURS),
            default=None,
            help="Lifetime in hours (default: the EXAMPLE_COMMENT_LIFETIME_HOURS setting).",
        )
        parser.add_argument("--batch-size", type=whole_number(1, 100_000), default=1000)
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(
        self, *args: Any, hours: int | None, batch_size: int, dry_run: bool, **options: Any
    ) -> None:
        lifetime = dt.timedelta(hours=hours or settings.EXAMPLE_COMMENT_LIFETIME_HOURS)
        count = maintenance.delete_expired_comments(
            now=timezone.now(),
            lifetime=lifetime,
            dry_run=dry_run,
            batch_size=batch_size,
            on_progress=lambda total: self.stdout.write(f"  {total} deleted so far..."),
        )
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(self.style.SUCCESS(f"{verb} {count} comment(s) older than {lifetime}."))
