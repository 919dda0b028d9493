from __future__ import annotations

from jobs.management.commands import enable_schedules


class Command(enable_schedules.Command):
    help = "Disable stored schedules by id: all of them, or none if an id is unknown."

    enabled = False
