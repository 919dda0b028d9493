from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError, CommandParser

# The job system's own steps, in this order: free stuck jobs first, so that retention and
# statistics see final states. A site with maintenance of its own lists its steps in
# JOBS_NIGHTLY_COMMANDS instead (this project adds the example's delete_expired_comments).
DEFAULT_STEPS = (
    "recover_stalled_jobs",
    "prune_jobs",
    "delete_expired_tokens",
    "clear_expired_sessions",
    "compute_daily_statistics",
)


def nightly_steps() -> list[str]:
    """The commands to run, checked before any runs: a misspelt step found half-way through
    would leave the night's maintenance half done."""
    steps = list(getattr(settings, "JOBS_NIGHTLY_COMMANDS", DEFAULT_STEPS))
    known = get_commands()
    unknown = [step for step in steps if step not in known]
    if unknown:
        raise CommandError(
            f"JOBS_NIGHTLY_COMMANDS names commands that do not exist: {', '.join(unknown)}."
        )
    if "run_nightly_maintenance" in steps:
        raise CommandError("JOBS_NIGHTLY_COMMANDS must not contain run_nightly_maintenance itself.")
    return steps


class Command(BaseCommand):
    help = "Run every maintenance command in order (for one nightly cron line or job)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Pass --dry-run to each step.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        steps = nightly_steps()
        extra = ["--dry-run"] if dry_run else []
        for step in steps:
            self.stdout.write(self.style.MIGRATE_HEADING(f"{step}:"))
            call_command(step, *extra, stdout=self.stdout, stderr=self.stderr)
        self.stdout.write(self.style.SUCCESS(f"Nightly maintenance done ({len(steps)} steps)."))
