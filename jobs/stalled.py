"""Stalled-job recovery: jobs left in `doing` by a worker that died.

A worker killed with SIGKILL, or a machine that disappears, cannot finish its jobs; they stay
`doing` forever. Every worker writes a heartbeat (procrastinate's `procrastinate_workers`
table; `jobs.worker.stalled_worker_defaults` makes it beat four times per
`JOBS_STALLED_WORKER_SECONDS`).
Jobs whose worker's heartbeat is older than `JOBS_STALLED_WORKER_SECONDS` (or whose worker row
is gone) are stalled: each is retried if its task's retry policy still allows an attempt, or
marked failed otherwise, by procrastinate's own SQL functions.

A worker lost mid-job is treated like a retryable error whatever the task's
`retry_exceptions` say: the task did not raise, its process vanished.

Recovery changes a job only while it is still the attempt it found stalled. In one
transaction per job, the job's row is locked and checked again (still `doing`, same worker,
same number of attempts, that worker still silent) before it is retried or failed. So a job
whose worker was only late and ended it meanwhile is left alone (procrastinate would put a
failed job back in the queue, and refuse to retry a succeeded one, stopping the recovery of
every job after it), and two recoveries at once (the periodic task and the command, or a
slow run and the next) never recover one attempt twice, nor a job a live worker took since.

Only the columns recovery needs are read, so a job whose other fields the client library
cannot decode is recovered like any other.

The lost attempt is recorded in the same transaction: the job's `JobResult` row (made if the
attempt died before it wrote one) says it failed with `WorkerLost`, and its attempts log
gets a "lost" entry (jobs/results.py). If the worker was only late after all and ends the
attempt later, its own outcome replaces that entry.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from procrastinate.manager import get_channel_for_queues

from jobs.models import JobResult
from jobs.results import UPSERT_SQL, upsert_parameters
from jobs.task_registry import find_task

# Running jobs whose worker is silent for longer than `stalled_after` seconds, or gone:
# procrastinate's own definition (its `select_stalled_jobs_by_heartbeat` query).
STALLED_JOBS = """
SELECT job.id, job.task_name, job.queue_name, job.attempts, job.worker_id
  FROM procrastinate_jobs job
  LEFT JOIN procrastinate_workers worker ON worker.id = job.worker_id
 WHERE job.status = 'doing'
   AND (worker.id IS NULL
        OR worker.last_heartbeat < now() - make_interval(secs => %(stalled_after)s))
 ORDER BY job.id
"""

# The same attempt, still stalled: locked until the transaction ends, so that the job's own
# end (a worker that was only late) or another recovery waits for this one, then finds it
# changed and leaves it alone.
STILL_STALLED = """
SELECT job.id
  FROM procrastinate_jobs job
 WHERE job.id = %(job_id)s
   AND job.status = 'doing'
   AND job.attempts = %(attempts)s
   AND job.worker_id IS NOT DISTINCT FROM %(worker_id)s
   AND NOT EXISTS (
       SELECT 1 FROM procrastinate_workers worker
        WHERE worker.id = job.worker_id
          AND worker.last_heartbeat >= now() - make_interval(secs => %(stalled_after)s))
   FOR UPDATE OF job
"""

# The lost attempt: its number (the job's "started" events, as jobs/results.py counts them),
# its start, and what its result row, if it wrote one, knows of its worker.
LOST_ATTEMPT = """
SELECT started.at, result.worker_id, result.worker_name
  FROM (SELECT count(*) AS attempt, max(at) AS at
          FROM procrastinate_events
         WHERE job_id = %(job_id)s AND type = 'started') AS started
  LEFT JOIN jobs_jobresult result
         ON result.job_id = %(job_id)s AND result.attempt = started.attempt
"""

# procrastinate's job manager runs the same functions (`retry_job_by_id`,
# `finish_job_by_id`); they are called here inside the transaction that holds the lock.
RETRY = "SELECT procrastinate_retry_job_v2(%(job_id)s, now(), NULL, NULL, NULL)"
FAIL = "SELECT procrastinate_finish_job_v1(%(job_id)s, 'failed', false)"
# procrastinate announces inserted jobs only; a job put back in the queue is announced the
# same way (its trigger's payload, on its channels), so that idle workers take it at once
# rather than at their next poll. Sent when the transaction commits.
ANNOUNCE = "SELECT pg_notify(channel, %(payload)s) FROM unnest(%(channels)s::text[]) AS channel"


class WorkerLost(Exception):
    """Recorded (never raised) as the error of an attempt whose worker stopped heartbeating
    while it ran: the worker was killed, or its machine vanished."""


@dataclass(frozen=True)
class Recovered:
    job_id: int
    task_name: str
    action: str  # "retried" or "failed"


@dataclass(frozen=True)
class _Stalled:
    job_id: int
    task_name: str
    queue: str
    attempts: int
    worker_id: int | None


def _may_retry(task_name: str, attempts: int) -> bool:
    task = find_task(task_name)
    if task is None or task.retry_strategy is None:
        return False
    max_attempts = getattr(task.retry_strategy, "max_attempts", None)
    # procrastinate's `attempts` counts the retries already made.
    return max_attempts is None or attempts < max_attempts


def _stalled_jobs(stalled_after: float) -> list[_Stalled]:
    with connection.cursor() as cursor:
        cursor.execute(STALLED_JOBS, {"stalled_after": stalled_after})
        return [_Stalled(*row) for row in cursor.fetchall()]


def _recover(job: _Stalled, *, stalled_after: float, retry: bool) -> bool:
    """Retry or fail `job` if it is still the stalled attempt; whether it was."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            STILL_STALLED,
            {
                "job_id": job.job_id,
                "attempts": job.attempts,
                "worker_id": job.worker_id,
                "stalled_after": stalled_after,
            },
        )
        if cursor.fetchone() is None:
            return False
        _record_lost_attempt(cursor, job, stalled_after=stalled_after)
        cursor.execute(RETRY if retry else FAIL, {"job_id": job.job_id})
        if retry:
            channels = [*get_channel_for_queues([job.queue]), *get_channel_for_queues(None)]
            payload = json.dumps({"type": "job_inserted", "job_id": job.job_id})
            cursor.execute(ANNOUNCE, {"payload": payload, "channels": channels})
        return True


def _lost_message(job: _Stalled, stalled_after: float) -> str:
    if job.worker_id is None:  # procrastinate nulls it when it deletes the worker's row
        return "Its worker stopped heartbeating while running the job (its worker row is gone)."
    return (
        f"Its worker (procrastinate worker {job.worker_id}) stopped heartbeating while "
        f"running the job: no heartbeat for more than {stalled_after:g} s."
    )


def _record_lost_attempt(cursor: CursorWrapper, job: _Stalled, *, stalled_after: float) -> None:
    cursor.execute(LOST_ATTEMPT, {"job_id": job.job_id})
    started_at, row_worker_id, worker_name = cursor.fetchone()
    now = timezone.now()
    started_at = started_at or now
    cursor.execute(
        UPSERT_SQL,
        upsert_parameters(
            job_id=job.job_id,
            task_name=job.task_name,
            status=JobResult.Status.FAILED,
            ended_as="lost",
            started_at=started_at,
            worker_id=job.worker_id if job.worker_id is not None else row_worker_id,
            worker_name=worker_name or "",
            finished_at=now,
            duration=max(now - started_at, dt.timedelta(0)),
            exception_type=f"{WorkerLost.__module__}.{WorkerLost.__qualname__}",
            exception_message=_lost_message(job, stalled_after),
        ),
    )


def recover_stalled_jobs(*, stalled_after: float, dry_run: bool = False) -> list[Recovered]:
    recovered = []
    for job in _stalled_jobs(stalled_after):
        retry = _may_retry(job.task_name, job.attempts)
        if dry_run or _recover(job, stalled_after=stalled_after, retry=retry):
            recovered.append(
                Recovered(
                    job_id=job.job_id,
                    task_name=job.task_name,
                    action="retried" if retry else "failed",
                )
            )
    return recovered


async def arecover_stalled_jobs(*, stalled_after: float, dry_run: bool = False) -> list[Recovered]:
    return await sync_to_async(recover_stalled_jobs)(stalled_after=stalled_after, dry_run=dry_run)
