from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from jobs import maintenance
from jobs.management.arguments import iso_date


class Command(BaseCommand):
    help = "Compute one day's per-task job statistics (default: yesterday, UTC); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", type=iso_date, default=None, help="The day, YYYY-MM-DD.")
        parser.add_argument("--dry-run", action="store_true", help="Show, store nothing.")

    def handle(self, *args: Any, date: dt.date | None, dry_run: bool, **options: Any) -> None:
        now = timezone.now()
        day = date or maintenance.day_before(now)
        if day >= now.astimezone(dt.UTC).date():
            raise CommandError(f"{day} has not ended yet: pick a day before today (UTC).")
        days = maintenance.compute_daily_statistics(day=day, now=now, dry_run=dry_run)
        for row in days:
            mean = f"{row.mean_duration.total_seconds():.3f} s" if row.mean_duration else "-"
            self.stdout.write(
                f"  {row.task_name}: {row.succeeded} succeeded, {row.failed} failed, "
                f"{row.aborted} aborted, mean {mean}"
            )
        verb = "Would store" if dry_run else "Stored"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} statistics of {len(days)} task(s) for {day}.")
        )
