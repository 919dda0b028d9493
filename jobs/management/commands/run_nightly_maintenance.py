from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

# In this order: free stuck jobs first, so that retention and statistics see final states.
STEPS = (
    "recover_stalled_jobs",
    "prune_jobs",
    "delete_expired_comments",
    "delete_expired_tokens",
    "clear_expired_sessions",
    "compute_daily_statistics",
)


class Command(BaseCommand):
    help = "Run every maintenance command in order (for one nightly cron line or job)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Pass --dry-run to each step.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        extra = ["--dry-run"] if dry_run else []
        for step in STEPS:
            self.stdout.write(self.style.MIGRATE_HEADING(f"{step}:"))
            call_command(step, *extra, stdout=self.stdout, stderr=self.stderr)
        self.stdout.write(self.style.SUCCESS(f"Nightly maintenance done ({len(STEPS)} steps)."))
