"""What runs on a schedule: each periodic task, its cron in words, next and last run.

procrastinate's workers defer periodic tasks themselves (no separate scheduler): each tick
is inserted once through the `procrastinate_periodic_defers` table, whose unique key on
(task, periodic id, tick) makes concurrent workers agree. This module only reads: the
registry for schedules, that table and the jobs for the last run and its outcome.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cron_descriptor import get_description
from croniter import croniter
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob, ProcrastinatePeriodicDefer


def describe_cron(cron: str) -> str:
    """A cron line in words. procrastinate (croniter) puts seconds *last* in 6-field lines;
    cron-descriptor expects them first."""
    fields = cron.split()
    if len(fields) == 6:
        fields = [fields[5], *fields[:5]]
    return str(get_description(" ".join(fields)))


@dataclass(frozen=True)
class PeriodicTaskInfo:
    task_name: str
    periodic_id: str
    cron: str
    description: str
    queue: str
    next_run: dt.datetime
    last_run: dt.datetime | None
    last_job_id: int | None
    last_status: str | None


def periodic_overview(*, now: dt.datetime) -> list[PeriodicTaskInfo]:
    periodic_tasks = sorted(
        app.periodic_registry.periodic_tasks.values(), key=lambda p: (p.task.name, p.periodic_id)
    )
    last: dict[tuple[str, str], tuple[int, int | None]] = {}
    rows = ProcrastinatePeriodicDefer.objects.values_list(
        "task_name", "periodic_id", "defer_timestamp", "job_id"
    )
    for task_name, periodic_id, tick, tick_job_id in rows:
        key = (task_name, periodic_id)
        if tick is not None and (key not in last or tick > last[key][0]):
            last[key] = (tick, tick_job_id)
    job_ids = [job_id for _, job_id in last.values() if job_id is not None]
    statuses = dict(ProcrastinateJob.objects.filter(id__in=job_ids).values_list("id", "status"))
    overview = []
    for periodic in periodic_tasks:
        found = last.get((periodic.task.name, periodic.periodic_id))
        timestamp, job_id = found if found is not None else (None, None)
        next_run = croniter(periodic.cron, now).get_next(dt.datetime)
        overview.append(
            PeriodicTaskInfo(
                task_name=periodic.task.name,
                periodic_id=periodic.periodic_id,
                cron=periodic.cron,
                description=describe_cron(periodic.cron),
                queue=periodic.configure_kwargs.get("queue") or periodic.task.queue,
                next_run=next_run,
                last_run=dt.datetime.fromtimestamp(timestamp, tz=dt.UTC) if timestamp else None,
                last_job_id=job_id,
                last_status=statuses.get(job_id) if job_id is not None else None,
            )
        )
    return overview
