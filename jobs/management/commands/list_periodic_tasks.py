from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs.periodic import periodic_overview


class Command(BaseCommand):
    help = "List periodic tasks: schedule in words, next run, last deferred run and its outcome."

    def handle(self, *args: Any, **options: Any) -> None:
        overview = periodic_overview(now=timezone.now())
        if not overview:
            self.stdout.write("No periodic task is registered.")
            return
        for item in overview:
            last = "never deferred"
            if item.last_run is not None:
                outcome = item.last_status or "job deleted"
                last = f"{item.last_run:%Y-%m-%d %H:%M:%S} UTC, job {item.last_job_id}: {outcome}"
            self.stdout.write(self.style.MIGRATE_HEADING(f"{item.task_name} [{item.periodic_id}]"))
            self.stdout.write(f"  schedule:  {item.cron}  ({item.description}, UTC)")
            self.stdout.write(f"  next run:  {item.next_run:%Y-%m-%d %H:%M:%S} UTC")
            self.stdout.write(f"  last run:  {last}")
