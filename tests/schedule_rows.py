"""Stored schedules for tests: a healthy one as code creates it, and one made broken."""

from __future__ import annotations

from typing import Any

from jobs.models import Schedule

# A task name no code has.
GONE = "jobs.a_task_removed_from_the_code"


def make_schedule(**fields: Any) -> Schedule:
    """A schedule as code creates one: checked by full_clean(), then saved."""
    values: dict[str, Any] = {
        "task": "jobs.delete_sent_notifications",
        "kwargs": {"older_than_days": 30},
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        **fields,
    }
    schedule = Schedule(**values)
    schedule.full_clean()
    schedule.save()
    return schedule


def break_schedule(schedule: Schedule) -> None:
    """Its task gone from the code, as after a deploy that renamed it (update() skips the
    model's checks, which would refuse it)."""
    Schedule.objects.filter(pk=schedule.pk).update(task=GONE)
