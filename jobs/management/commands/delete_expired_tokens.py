from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from jobs import maintenance
from jobs.conf import MAX_DAYS, jobs_settings
from jobs.management.arguments import whole_number


class Command(BaseCommand):
    help = "Delete API tokens that expired or were revoked more than --days days ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=whole_number(0, MAX_DAYS),
            default=None,
            help="Days to keep them after expiry (default: JOBS_EXPIRED_TOKEN_KEEP_DAYS).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, days: int | None, dry_run: bool, **options: Any) -> None:
        keep = days if days is not None else jobs_settings.JOBS_EXPIRED_TOKEN_KEEP_DAYS
        count = maintenance.delete_expired_tokens(
            now=timezone.now(), keep_for=dt.timedelta(days=keep), dry_run=dry_run
        )
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {count} token(s) expired or revoked over {keep} day(s) ago."
            )
        )
