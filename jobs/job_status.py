"""A job's status as the API answers it: one query for the job, its events and its result.

The worker middleware in jobs/results.py writes the results; this module only reads them,
with procrastinate's job and events, and decides whether a result row describes the job's
latest attempt (`row_is_current`), for the API and the admin's job pages alike. The ended
attempts of a job (`ended_attempts`) come from the row's attempts log. Why a job that is
due does not start (`held_by`: its queue is paused, a limit is full) is jobs/limits.py's
answer, for the API and the admin's job page alike.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection

from jobs import limits
from jobs.models import JobResult
from jobs.results import AttemptEntry

# The status endpoint is the hottest read path of the API. One hand-written query (job,
# its result, its first "deferred" event, all by primary or indexed key) costs a fraction
# of a millisecond; the equivalent ORM query spends more time being built than run.
STATUS_SQL = """
SELECT j.id, j.task_name, j.queue_name, j.status, j.attempts, j.priority, j.lock,
       j.queueing_lock, j.abort_requested, j.scheduled_at,
       e.deferred_at, e.starts, e.last_start,
       r.status, r.attempt, r.worker_name, r.started_at, r.finished_at, r.duration,
       r.return_value::text, r.exception_type, r.exception_message, r.traceback,
       r.progress, r.progress_message, r.attempts_log::text,
       -- A waiting job's arguments: a limit's key is one of them (held_by).
       CASE WHEN j.status = 'todo' THEN j.args::text END
FROM procrastinate_jobs j
CROSS JOIN LATERAL (
    SELECT min(at) FILTER (WHERE type = 'deferred') AS deferred_at,
           count(*) FILTER (WHERE type = 'started') AS starts,
           max(at) FILTER (WHERE type = 'started') AS last_start
    FROM procrastinate_events WHERE job_id = j.id
) e
LEFT JOIN jobs_jobresult r ON r.job_id = j.id
WHERE j.id = %s
"""


@dataclass
class _Job:
    """What jobs.limits.held_reason reads of a job (procrastinate's model has it too)."""

    task_name: str
    queue_name: str
    args: Any
    status: str
    scheduled_at: dt.datetime | None


def held_by(
    *, task_name: str, queue_name: str, args: Any, status: str, scheduled_at: dt.datetime | None
) -> str | None:
    """Why a job does not start although it is due: "queue `billing` is paused", "waiting
    for limit `payments`: 3 of 3 running"; None for a job that is not held back (or not
    waiting). One query for a waiting job, none for another. The limits are those this
    process's code declares, which the workers running the same code apply."""
    if status != "todo":
        return None
    return limits.held_reason(_Job(task_name, queue_name, args, status, scheduled_at))


def row_is_current(job_status: str, row_attempt: int | None, starts: int) -> bool:
    """Whether a job's result row (its attempt number, None without a row) describes the
    job's latest attempt, given how many times the job started (its "started" events).

    A running attempt has no row until it has run JOBS_RESULT_RUNNING_AFTER_MS or reports
    progress; until then the row, if any, is an earlier attempt's.
    """
    if job_status != "doing":
        return True
    return row_attempt is not None and row_attempt >= starts


def _shape(row: tuple[Any, ...]) -> dict[str, Any]:
    (
        job_id, task, queue, status, attempts, priority, lock, queueing_lock, abort_requested,
        scheduled_at, deferred_at, starts, last_start, result_status, attempt, worker_name,
        started_at,
        finished_at, duration, return_value, exception_type, exception_message, trace,
        progress, progress_message, attempts_log, waiting_args,
    ) = row  # fmt: skip
    if not row_is_current(status, attempt if result_status is not None else None, starts):
        # The running attempt has no row yet (it writes one after a second, or when it
        # reports progress); the row, if any, is an earlier attempt's. Say what the
        # events know of the running one.
        result_status, attempt, worker_name, started_at = None, starts, "", last_start
        finished_at = duration = progress = None
    shaped: dict[str, Any] = {
        "id": job_id,
        "task": task,
        "queue": queue,
        "status": status,
        "attempts": attempts,
        "priority": priority,
        "lock": lock,
        "queueing_lock": queueing_lock,
        "abort_requested": abort_requested,
        "deferred_at": deferred_at,
        "scheduled_at": scheduled_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_seconds": duration.total_seconds() if duration is not None else None,
        "worker": worker_name or None,
        "last_attempt": attempt,
        "progress": None,
        "result": None,
        "error": None,
        # Every ended attempt, oldest first (jobs.results.AttemptEntry); the running one is
        # not in it.
        "attempts_log": json.loads(attempts_log) if attempts_log is not None else [],
        # Why a due job does not start, in words, or None.
        "held_by": None,
    }
    if waiting_args is not None:
        shaped["held_by"] = held_by(
            task_name=task,
            queue_name=queue,
            args=json.loads(waiting_args),
            status=status,
            scheduled_at=scheduled_at,
        )
    if progress is not None:
        shaped["progress"] = {"fraction": progress, "message": progress_message}
    if result_status == JobResult.Status.SUCCEEDED:
        shaped["result"] = json.loads(return_value) if return_value is not None else None
    elif result_status in {JobResult.Status.FAILED, JobResult.Status.ABORTED}:
        shaped["error"] = {"type": exception_type, "message": exception_message, "traceback": trace}
    return shaped


def job_status(job_id: int) -> dict[str, Any] | None:
    """A job's status, timings, progress and result or error; None if there is no such job."""
    with connection.cursor() as cursor:
        cursor.execute(STATUS_SQL, [job_id])
        row = cursor.fetchone()
    return _shape(row) if row is not None else None


ajob_status = sync_to_async(job_status)


def ended_attempts(job_id: int) -> list[AttemptEntry]:
    """Every ended attempt of a job, oldest first (the newest ATTEMPTS_LOG_LIMIT of them);
    empty for a job that has none, or no result row, or does not exist."""
    logs = JobResult.objects.filter(job_id=job_id).values_list("attempts_log", flat=True)
    return list(logs.first() or [])


aended_attempts = sync_to_async(ended_attempts)
