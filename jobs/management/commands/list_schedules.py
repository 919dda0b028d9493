from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.schedules import ScheduleInfo, schedule_overview


def utc(moment: dt.datetime | None, *, otherwise: str) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" if moment else otherwise


def write_schedule(command: BaseCommand, info: ScheduleInfo) -> None:
    """One schedule, in the layout `list_periodic_tasks` gives the periodic tasks."""
    heading = f"{info.task} [schedule {info.id}]"
    if info.broken:
        command.stdout.write(command.style.ERROR(heading))
        state = "BROKEN: enabled, but the code has no task of this name; nothing is deferred"
    else:
        command.stdout.write(command.style.MIGRATE_HEADING(heading))
        state = "enabled" if info.enabled else "disabled"
    if info.description:
        command.stdout.write(f"  about:     {info.description}")
    command.stdout.write(f"  state:     {state}")
    command.stdout.write(f"  schedule:  {info.when}")
    if info.queue:
        command.stdout.write(f"  queue:     {info.queue}")
    command.stdout.write(f"  next run:  {utc(info.next_run_at, otherwise='none')}")
    last = utc(info.last_run_at, otherwise="never")
    command.stdout.write(f"  last run:  {last} ({info.run_count} run(s) in all)")


def write_schedules(command: BaseCommand) -> None:
    """Every stored schedule, by id (this command, and `list_periodic_tasks`)."""
    empty = True
    for info in schedule_overview():
        write_schedule(command, info)
        empty = False
    if empty:
        command.stdout.write("No stored schedule.")


def to_json(schedules: list[ScheduleInfo]) -> str:
    def value(item: object) -> object:
        if isinstance(item, dt.datetime):
            return item.astimezone(dt.UTC).isoformat()
        return item

    return json.dumps(
        [{name: value(item) for name, item in asdict(info).items()} for info in schedules],
        indent=2,
    )


class Command(BaseCommand):
    help = "List the stored schedules: state, schedule in words, next and last run, run count."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            dest="in_json",
            help="A JSON array, times in ISO 8601 (UTC).",
        )

    def handle(self, *args: Any, in_json: bool, **options: Any) -> None:
        if in_json:
            self.stdout.write(to_json(list(schedule_overview())))
            return
        write_schedules(self)
