from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.management.arguments import whole_number
from jobs.models import Schedule
from jobs.postgres_values import PG_BIGINT_MAX
from jobs.schedules import ScheduleError, run_now

# Who asked, as the schedule's runs record it (the admin records the user's name).
REQUESTED_BY = "manage.py run_schedule"


class Command(BaseCommand):
    help = "Defer one job of a stored schedule now, counted with its runs; print the job's id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "schedule_id",
            metavar="id",
            type=whole_number(1, PG_BIGINT_MAX),
            help="The schedule's id.",
        )

    def handle(self, *args: Any, schedule_id: int, **options: Any) -> None:
        try:
            run = run_now(schedule_id, requested_by=REQUESTED_BY)
        except Schedule.DoesNotExist:
            raise CommandError(f"No schedule with id {schedule_id}.") from None
        except ScheduleError as error:
            raise CommandError(f"Schedule {schedule_id}: {error}") from error
        self.stdout.write(
            self.style.SUCCESS(
                f"Schedule {schedule_id} ({run.schedule}): job {run.job_id} deferred."
            )
        )
