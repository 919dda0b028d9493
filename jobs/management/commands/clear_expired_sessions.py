from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from jobs import maintenance
from jobs.management.arguments import whole_number


class Command(BaseCommand):
    help = "Delete expired sessions in batches (Django's clearsessions, with --dry-run)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=whole_number(1, 100_000), default=1000)
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, batch_size: int, dry_run: bool, **options: Any) -> None:
        count = maintenance.clear_expired_sessions(
            now=timezone.now(),
            dry_run=dry_run,
            batch_size=batch_size,
            on_progress=lambda total: self.stdout.write(f"  {total} deleted so far..."),
        )
        if count is None:
            message = "Session engine cleared its expired sessions itself."
            if dry_run:
                message = "This session engine cannot count expired sessions; nothing done."
            self.stdout.write(self.style.WARNING(message))
            return
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(self.style.SUCCESS(f"{verb} {count} expired session(s)."))
