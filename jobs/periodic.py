"""What runs on a schedule: each periodic task, its cron in words, next and last run.

procrastinate's workers defer periodic tasks themselves (no separate scheduler): each tick
is inserted once through the `procrastinate_periodic_defers` table, whose unique key on
(task, periodic id, tick) makes concurrent workers agree. This module only reads: the
registry for schedules, that table and the jobs for the last run and its outcome.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from cron_descriptor import get_description
from croniter import croniter
from django.db import connection
from procrastinate.contrib.django import app


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


# The last tick of each periodic task is one backward probe of the periodic-defers table's
# unique index, which grows by one row per tick forever.
LAST_TICKS_SQL = """
SELECT p.task_name, p.periodic_id, d.defer_timestamp, d.job_id, j.status::text
FROM unnest(%(tasks)s::text[], %(ids)s::text[]) AS p(task_name, periodic_id)
LEFT JOIN LATERAL (
    SELECT defer_timestamp, job_id FROM procrastinate_periodic_defers d
    WHERE d.task_name = p.task_name AND d.periodic_id = p.periodic_id
      AND d.defer_timestamp IS NOT NULL
    ORDER BY d.defer_timestamp DESC LIMIT 1
) d ON true
LEFT JOIN procrastinate_jobs j ON j.id = d.job_id
"""

# Putting a cron line in words takes a millisecond, and the lines never change.
_describe_cron = functools.lru_cache(maxsize=256)(describe_cron)


def periodic_overview(*, now: dt.datetime) -> list[PeriodicTaskInfo]:
    """Every periodic task of the registry with its next tick and its last deferred one."""
    periodic = sorted(
        app.periodic_registry.periodic_tasks.values(), key=lambda p: (p.task.name, p.periodic_id)
    )
    if not periodic:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            LAST_TICKS_SQL,
            {"tasks": [p.task.name for p in periodic], "ids": [p.periodic_id for p in periodic]},
        )
        rows = cursor.fetchall()
    last = {(task, pid): (tick, job_id, status) for task, pid, tick, job_id, status in rows}
    overview = []
    for entry in periodic:
        tick, job_id, status = last.get((entry.task.name, entry.periodic_id), (None, None, None))
        overview.append(
            PeriodicTaskInfo(
                task_name=entry.task.name,
                periodic_id=entry.periodic_id,
                cron=entry.cron,
                description=_describe_cron(entry.cron),
                queue=entry.configure_kwargs.get("queue") or entry.task.queue,
                next_run=croniter(entry.cron, now).get_next(dt.datetime),
                last_run=dt.datetime.fromtimestamp(tick, tz=dt.UTC) if tick else None,
                last_job_id=job_id,
                last_status=status,
            )
        )
    return overview
