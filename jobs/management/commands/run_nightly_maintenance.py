from __future__ import annotations

from typing import Any

from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.conf import jobs_settings


def nightly_steps() -> list[str]:
    """The commands to run, checked before any runs: a misspelt step found half-way through
    would leave the night's maintenance half done."""
    steps = list(jobs_settings.JOBS_NIGHTLY_COMMANDS)
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
