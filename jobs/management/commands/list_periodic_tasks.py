from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs.management.commands.list_schedules import write_schedules
from jobs.periodic import periodic_overview


class Command(BaseCommand):
    help = (
        "List everything that runs on its own: the periodic tasks declared in code, then the "
        "stored schedules."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(self.style.SQL_TABLE("Periodic tasks (declared in code, @app.periodic)"))
        overview = periodic_overview(now=timezone.now())
        if not overview:
            self.stdout.write("No periodic task is registered.")
        for item in overview:
            last = "never deferred"
            if item.last_run is not None:
                outcome = item.last_status or "job deleted"
                last = f"{item.last_run:%Y-%m-%d %H:%M:%S} UTC, job {item.last_job_id}: {outcome}"
            self.stdout.write(self.style.MIGRATE_HEADING(f"{item.task_name} [{item.periodic_id}]"))
            self.stdout.write(f"  schedule:  {item.cron}  ({item.description}, UTC)")
            self.stdout.write(f"  next run:  {item.next_run:%Y-%m-%d %H:%M:%S} UTC")
            self.stdout.write(f"  last run:  {last}")

        self.stdout.write("")
        self.stdout.write(
            self.style.SQL_TABLE("Stored schedules (in the database: the admin, list_schedules)")
        )
        write_schedules(self)
