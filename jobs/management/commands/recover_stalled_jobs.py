from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs import stalled
from jobs.conf import jobs_settings
from jobs.management.arguments import whole_number

# A day: a worker silent that long is gone; far more overflows PostgreSQL's interval.
MAX_STALLED_AFTER = 86_400


class Command(BaseCommand):
    help = "Retry (or fail, per task policy) jobs left running by workers that stopped beating."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stalled-after",
            type=whole_number(1, MAX_STALLED_AFTER),
            default=None,
            help="Seconds without a worker heartbeat (default: JOBS_STALLED_WORKER_SECONDS).",
        )
        parser.add_argument("--dry-run", action="store_true", help="List, change nothing.")

    def handle(self, *args: Any, stalled_after: int | None, dry_run: bool, **options: Any) -> None:
        seconds = stalled_after or jobs_settings.JOBS_STALLED_WORKER_SECONDS
        recovered = stalled.recover_stalled_jobs(stalled_after=seconds, dry_run=dry_run)
        for item in recovered:
            verb = f"would be {item.action}" if dry_run else item.action
            self.stdout.write(f"  job {item.job_id} ({item.task_name}): {verb}")
        summary = f"{len(recovered)} stalled job(s) (no heartbeat for {seconds} s)."
        self.stdout.write(self.style.SUCCESS(("Found " if dry_run else "Recovered ") + summary))
