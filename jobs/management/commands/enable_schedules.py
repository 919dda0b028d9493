from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.management.arguments import whole_number
from jobs.postgres_values import PG_BIGINT_MAX
from jobs.schedules import ScheduleError, set_enabled_by_id


class Command(BaseCommand):
    help = "Enable stored schedules by id: all of them, or none if one cannot be."

    enabled = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "ids",
            metavar="id",
            nargs="+",
            type=whole_number(1, PG_BIGINT_MAX),
            help="The schedules' ids.",
        )

    def handle(self, *args: Any, ids: list[int], **options: Any) -> None:
        try:
            changes = set_enabled_by_id(ids, enabled=self.enabled)
        except ScheduleError as error:
            raise CommandError(str(error)) from error
        state = "enabled" if self.enabled else "disabled"
        for schedule, changed in changes:
            verb = state if changed else f"already {state}"
            self.stdout.write(f"  schedule {schedule.pk} ({schedule}): {verb}")
        changed_count = sum(1 for _, changed in changes if changed)
        self.stdout.write(self.style.SUCCESS(f"{changed_count} schedule(s) {state}."))
