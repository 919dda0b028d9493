"""Job results: what each job's last attempt did, and its progress while it runs.

procrastinate keeps no return values. The worker middleware `record_result` wraps every job
a worker runs (sync and async tasks alike) and writes one `JobResult` row per job: "running"
when an attempt starts, then its outcome: the JSON return value, or the exception type,
message and traceback. A retried job keeps one row, overwritten by each attempt: the row
always describes the last attempt, and `attempt` says which one it was (the events table
keeps the times of every attempt).

Tasks report progress with `report_progress(0.4, "4 of 10 files")` (or `areport_progress`
in async tasks): it finds the running job through a context variable the middleware sets.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, LiteralString

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections, connection
from django.utils import timezone
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.psycopg_connector import PsycopgConnector
from procrastinate.testing import InMemoryConnector
from psycopg.types.json import Jsonb

from jobs.models import JobResult

if TYPE_CHECKING:
    from procrastinate import job_context
    from procrastinate import worker as procrastinate_worker

logger = logging.getLogger(__name__)

_current_job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "jobs_current_job_id", default=None
)

TRACEBACK_LIMIT = 20_000
MESSAGE_LIMIT = 5_000


def _dumps(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def json_safe(value: Any) -> Any:
    """`value` if it can be stored as JSON (datetimes, decimals, UUIDs included), else its repr."""
    try:
        json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError):
        return {"unserializable": repr(value)[:MESSAGE_LIMIT]}
    return value


# Written through the worker's own procrastinate connector (its async psycopg pool, no
# thread hop) in one statement each: a job costs two extra round trips, not an ORM dance.
# The attempt is counted from the "started" events: procrastinate's `attempts` also grows
# when a failed job is retried by hand, so it can run ahead of the real runs.
START_SQL = """
INSERT INTO jobs_jobresult (job_id, task_name, status, attempt, worker_name, started_at,
    finished_at, duration, return_value, exception_type, exception_message, traceback,
    progress, progress_message)
VALUES (%(job_id)s, %(task_name)s, 'running',
    GREATEST((SELECT count(*) FROM procrastinate_events
              WHERE job_id = %(job_id)s AND type = 'started'), 1),
    %(worker_name)s, %(started_at)s, NULL, NULL, NULL, '', '', '', NULL, '')
ON CONFLICT (job_id) DO UPDATE SET
    task_name = EXCLUDED.task_name, status = EXCLUDED.status, attempt = EXCLUDED.attempt,
    worker_name = EXCLUDED.worker_name, started_at = EXCLUDED.started_at,
    finished_at = NULL, duration = NULL, return_value = NULL, exception_type = '',
    exception_message = '', traceback = '', progress = NULL, progress_message = ''
"""
FINISH_SQL = """
UPDATE jobs_jobresult SET status = %(status)s, finished_at = %(finished_at)s,
    duration = %(duration)s, return_value = %(return_value)s,
    exception_type = %(exception_type)s, exception_message = %(exception_message)s,
    traceback = %(traceback)s
WHERE job_id = %(job_id)s
"""


def _django_execute(query: str, arguments: dict[str, Any]) -> None:
    close_old_connections()  # a connection broken since the last job is replaced
    with connection.cursor() as cursor:
        cursor.execute(query, arguments)


async def _write(context: job_context.JobContext, query: LiteralString, **arguments: Any) -> None:
    """Run a result statement; a failure is logged, never raised.

    A result that cannot be written (database gone for a moment) must not change the job's
    own outcome, which procrastinate records separately.
    """
    connector = context.app.connector
    try:
        if isinstance(connector, InMemoryConnector):
            return  # eager mode in tests: jobs live in memory, there is no row to point at
        if isinstance(connector, PsycopgConnector):
            await connector.execute_query_async(query, **arguments)
        else:
            await sync_to_async(_django_execute, thread_sensitive=False)(query, arguments)
    except Exception:
        logger.exception("Could not record the result of job %s", arguments.get("job_id"))


async def record_result(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Worker middleware: record the attempt's start and outcome in `JobResult`."""
    job_id = context.job.id
    assert job_id is not None
    started = time.monotonic()
    await _write(
        context,
        START_SQL,
        job_id=job_id,
        task_name=context.job.task_name,
        worker_name=context.worker_name or "",
        started_at=timezone.now(),
    )
    token = _current_job_id.set(job_id)
    fields: dict[str, Any] = {
        "return_value": None,
        "exception_type": "",
        "exception_message": "",
        "traceback": "",
    }
    try:
        value = await call_next()
    except BaseException as exc:
        aborted = isinstance(exc, procrastinate_exceptions.JobAborted)
        fields |= {
            "status": JobResult.Status.ABORTED if aborted else JobResult.Status.FAILED,
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception_message": str(exc)[:MESSAGE_LIMIT],
            "traceback": "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:],
        }
        raise
    else:
        fields |= {
            "status": JobResult.Status.SUCCEEDED,
            "return_value": Jsonb(json_safe(value), dumps=_dumps),
        }
        return value
    finally:
        _current_job_id.reset(token)
        fields |= {
            "finished_at": timezone.now(),
            "duration": dt.timedelta(seconds=time.monotonic() - started),
        }
        await _write(context, FINISH_SQL, job_id=job_id, **fields)


def _progress_fields(fraction: float, message: str) -> dict[str, Any]:
    if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"progress must be a number from 0 to 1, not {fraction!r}")
    return {"progress": float(fraction), "progress_message": message[:255]}


def report_progress(fraction: float, message: str = "") -> None:
    """Record the running job's progress (0 to 1) and a short message. Sync tasks."""
    fields = _progress_fields(fraction, message)
    job_id = _current_job_id.get()
    if job_id is None:
        return  # called outside a worker (a direct call in a test or a shell)
    JobResult.objects.filter(job_id=job_id).update(**fields)


async def areport_progress(fraction: float, message: str = "") -> None:
    """`report_progress` for async tasks."""
    fields = _progress_fields(fraction, message)
    job_id = _current_job_id.get()
    if job_id is None:
        return
    await JobResult.objects.filter(job_id=job_id).aupdate(**fields)


# --- Reading: one query for a job's full status -----------------------------------------

# The status endpoint is the hottest read path of the API. One hand-written query (job,
# its result, its first "deferred" event, all by primary or indexed key) costs a fraction
# of a millisecond; the equivalent ORM query spends more time being built than run.
STATUS_SQL = """
SELECT j.id, j.task_name, j.queue_name, j.status, j.attempts, j.priority, j.lock,
       j.queueing_lock, j.abort_requested, j.scheduled_at,
       (SELECT min(e.at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'deferred') AS deferred_at,
       r.status, r.attempt, r.worker_name, r.started_at, r.finished_at, r.duration,
       r.return_value::text, r.exception_type, r.exception_message, r.traceback,
       r.progress, r.progress_message
FROM procrastinate_jobs j
LEFT JOIN jobs_jobresult r ON r.job_id = j.id
WHERE j.id = %s
"""


def _shape(row: tuple[Any, ...]) -> dict[str, Any]:
    (
        job_id, task, queue, status, attempts, priority, lock, queueing_lock, abort_requested,
        scheduled_at, deferred_at, result_status, attempt, worker_name, started_at,
        finished_at, duration, return_value, exception_type, exception_message, trace,
        progress, progress_message,
    ) = row  # fmt: skip
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
    }
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
