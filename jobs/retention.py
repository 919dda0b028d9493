"""Retention: delete finished procrastinate jobs once they are older than their status allows.

procrastinate's own `delete_old_jobs` applies one age to every final status it includes, in
one statement over the whole table. Sites keep failures longer than successes, and a table of
millions must be pruned without a long transaction. This module uses procrastinate's own
definition of a job's age (the time of its latest event) with a limit per final status
(`JOBS_RETENTION_HOURS`), and deletes in batches walking the primary key.

Only jobs in a final state are ever deleted: never `todo` or `doing`. Their events go with
them (procrastinate's foreign key cascades), and so do their results (jobs_jobresult's
foreign key cascades too); procrastinate's delete trigger unlinks periodic-defer rows.

Batches (jobs/workflows.py) go with their jobs: a finished batch none of whose jobs is left
is deleted once it finished longer ago than the shortest retention (a day if every status
is kept forever, when no job of it goes anyway). A batch with jobs left stays, listing its
deleted jobs as deleted; a running batch is never deleted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection, transaction

from jobs.job_statuses import FINISHED_STATUSES
from jobs.maintenance import Progress

# One batch: the oldest-id jobs of a status, after the last id seen, whose latest event is
# older than the cutoff (NOT EXISTS on the events' job_id index).
_SELECT_BATCH = """
SELECT j.id FROM procrastinate_jobs j
WHERE j.status = %(status)s::procrastinate_job_status AND j.id > %(after)s
  AND NOT EXISTS (
      SELECT 1 FROM procrastinate_events e WHERE e.job_id = j.id AND e.at >= %(cutoff)s
  )
ORDER BY j.id
LIMIT %(limit)s
"""
_DELETE = """
DELETE FROM procrastinate_jobs
WHERE id = ANY(%(ids)s) AND status = %(status)s::procrastinate_job_status
"""


_SELECT_BATCHES = """
SELECT b.id FROM jobs_batch b
WHERE b.finished_at < %(cutoff)s AND b.id > %(after)s
  AND NOT EXISTS (
      SELECT 1 FROM jobs_batchjob m JOIN procrastinate_jobs j ON j.id = m.job_id
      WHERE m.batch_id = b.id
  )
ORDER BY b.id
LIMIT %(limit)s
"""
# Again under the batches' row locks: a job retried by hand opens its batch meanwhile.
_DELETE_BATCHES = """
WITH gone AS (
    SELECT id FROM jobs_batch WHERE id = ANY(%(ids)s) AND finished_at IS NOT NULL FOR UPDATE
), memberships AS (
    DELETE FROM jobs_batchjob WHERE batch_id IN (SELECT id FROM gone)
)
DELETE FROM jobs_batch WHERE id IN (SELECT id FROM gone)
"""


@dataclass(frozen=True)
class Pruned:
    status: str
    cutoff: dt.datetime
    jobs: int


def retention_cutoffs(*, now: dt.datetime, hours: dict[str, int]) -> dict[str, dt.datetime]:
    """Cutoff per final status; a status with 0 hours (or absent) is kept forever."""
    return {
        status: now - dt.timedelta(hours=hours[status])
        for status in FINISHED_STATUSES
        if hours.get(status)
    }


def prune_jobs(
    *,
    now: dt.datetime,
    hours: dict[str, int],
    dry_run: bool = False,
    batch_size: int = 5000,
    on_progress: Progress = None,
) -> list[Pruned]:
    """Delete (or with `dry_run`, count) finished jobs older than their status's retention."""
    pruned = []
    total = 0
    for status, cutoff in retention_cutoffs(now=now, hours=hours).items():
        count = 0
        after = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    _SELECT_BATCH,
                    {"status": status, "after": after, "cutoff": cutoff, "limit": batch_size},
                )
                ids = [row[0] for row in cursor.fetchall()]
                if not ids:
                    break
                if not dry_run:
                    cursor.execute(_DELETE, {"ids": ids, "status": status})
            after = ids[-1]
            count += len(ids)
            total += len(ids)
            if on_progress is not None:
                on_progress(total)
        pruned.append(Pruned(status=status, cutoff=cutoff, jobs=count))
    return pruned


def prune_batches(
    *, now: dt.datetime, hours: dict[str, int], dry_run: bool = False, batch_size: int = 1000
) -> int:
    """Delete (or with `dry_run`, count) the finished batches whose jobs are all gone (see
    the module's docstring); how many."""
    kept_for = min((value for value in hours.values() if value), default=24)
    cutoff = now - dt.timedelta(hours=kept_for)
    count = 0
    after = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_SELECT_BATCHES, {"cutoff": cutoff, "after": after, "limit": batch_size})
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return count
            if not dry_run:
                cursor.execute(_DELETE_BATCHES, {"ids": ids})
        after = ids[-1]
        count += len(ids)
