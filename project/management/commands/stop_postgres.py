from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from project import embedded_postgres


class Command(BaseCommand):
    help = "Stop the embedded PostgreSQL server (used when DATABASE_URL is not set)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wipe",
            action="store_true",
            help="Also delete its data folder (every job and row in it).",
        )

    def handle(self, *args: Any, wipe: bool, **options: Any) -> None:
        data_dir = getattr(settings, "EMBEDDED_POSTGRES_DIR", None)
        if data_dir is None:
            raise CommandError("DATABASE_URL is set: there is no embedded PostgreSQL to stop.")
        data_dir = Path(data_dir)
        stopped = embedded_postgres.stop(data_dir, wipe=wipe)
        state = "stopped" if stopped else "was not running"
        self.stdout.write(self.style.SUCCESS(f"Embedded PostgreSQL {state} ({data_dir})."))
        if wipe:
            self.stdout.write(self.style.WARNING(f"Deleted {data_dir}."))
