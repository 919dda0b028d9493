from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from jobs import retention
from jobs.conf import MAX_RETENTION_HOURS, jobs_settings
from jobs.job_statuses import FINISHED_STATUSES
from jobs.management.arguments import whole_number


class Command(BaseCommand):
    help = "Delete finished jobs, their events and results, past their status's retention."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--status",
            choices=FINISHED_STATUSES,
            action="append",
            help="Only this final status (repeatable). Default: all, per JOBS_RETENTION_HOURS.",
        )
        parser.add_argument(
            "--older-than-hours",
            type=whole_number(1, MAX_RETENTION_HOURS),
            default=None,
            help="Override the retention of the chosen statuses (requires --status).",
        )
        parser.add_argument("--batch-size", type=whole_number(1, 100_000), default=5000)
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(
        self,
        *args: Any,
        status: list[str] | None,
        older_than_hours: int | None,
        batch_size: int,
        dry_run: bool,
        **options: Any,
    ) -> None:
        if older_than_hours is not None and not status:
            raise CommandError("--older-than-hours needs --status: retention differs by status.")
        hours = dict(jobs_settings.JOBS_RETENTION_HOURS)
        if status:
            hours = {s: older_than_hours or hours.get(s, 0) for s in status}
        pruned = retention.prune_jobs(
            now=timezone.now(),
            hours=hours,
            dry_run=dry_run,
            batch_size=batch_size,
            on_progress=lambda total: self.stdout.write(f"  {total} job(s) so far..."),
        )
        verb = "Would delete" if dry_run else "Deleted"
        for item in pruned:
            self.stdout.write(
                f"  {item.status}: {item.jobs} job(s) finished before {item.cutoff:%Y-%m-%d %H:%M}"
            )
        kept = sorted(set(FINISHED_STATUSES) - {item.status for item in pruned})
        if kept and not status:
            self.stdout.write(f"  kept forever (retention 0): {', '.join(kept)}")
        total = sum(item.jobs for item in pruned)
        batches = retention.prune_batches(
            now=timezone.now(), hours=hours, dry_run=dry_run, batch_size=min(batch_size, 1000)
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {total} finished job(s) and {batches} finished batch(es) "
                "whose jobs were all gone."
            )
        )
