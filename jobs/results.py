"""Job results: what each job's attempts did, and its progress while it runs.

procrastinate keeps no return values. The worker middleware `record_result` wraps every job
a worker runs (sync and async tasks alike) and keeps one `JobResult` row per job: the JSON
return value, or the exception type, message and traceback. A retried job keeps one row,
overwritten by each attempt: the row describes the last attempt, and `attempt` says which
one it was. Its `attempts_log` keeps every ended attempt (`AttemptEntry`: status, worker,
times, error), appended by the same statement; stalled-job recovery adds a "lost" entry for
an attempt whose worker died (jobs/stalled.py).

The outcome costs no statement of its own: the worker's connector (jobs/connector.py) adds
it to procrastinate's statement that records the job's end (finished, or to be retried), so
the two are committed together and a reader never sees one without the other. Writing a
"running" row at every start as well halved the throughput of short jobs (measured with
`manage.py bench_jobs`), so an attempt gets one only if it is still running after
`JOBS_RESULT_RUNNING_AFTER_MS` (1 s by default; 0 writes it at once): long jobs, the ones a
person watches, show their worker and start; until then the status API reads a running
attempt's start from procrastinate's events.

Tasks report progress with `report_progress(0.4, "4 of 10 files")` (or `areport_progress`
in async tasks): it finds the running attempt through a context variable the middleware
sets, and writes the "running" row at once if there is none yet.

This module writes; jobs/job_status.py reads a job's status, result included.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, LiteralString, TypedDict

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.psycopg_connector import PsycopgConnector
from procrastinate.testing import InMemoryConnector

from jobs.conf import jobs_settings
from jobs.connector import ReconnectingPsycopgConnector
from jobs.models import JobResult
from jobs.postgres_values import storable_text

if TYPE_CHECKING:
    from procrastinate import job_context
    from procrastinate import worker as procrastinate_worker

logger = logging.getLogger(__name__)

TRACEBACK_LIMIT = 20_000
MESSAGE_LIMIT = 5_000
# A return value is for a status page, not a file store: bigger ones are not kept.
RETURN_VALUE_LIMIT = 1_000_000
# A job keeps the newest this many ended attempts in `JobResult.attempts_log`, each with
# its traceback cut like the row's (TRACEBACK_LIMIT): a task retried forever keeps a row
# of bounded size.
ATTEMPTS_LOG_LIMIT = 50


def _dumps(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails still ends its job as failed
        return f"<{type(exc).__qualname__}: its message could not be read>"


def json_text(value: Any) -> str:
    """A return value as the JSON text to store: the value itself if it is JSON-safe and
    at most RETURN_VALUE_LIMIT characters long, else a small object that says why not.

    Made once, when the attempt ends: the statement then carries a plain string, which
    nothing can change or fail to encode on its way to the database.
    """
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError):
        return _dumps({"unserializable": repr(value)[:MESSAGE_LIMIT]})
    if len(text) > RETURN_VALUE_LIMIT:
        return _dumps(
            {"too_large": f"{len(text):,} characters of JSON; the limit is {RETURN_VALUE_LIMIT:,}"}
        )
    return text


def json_safe(value: Any) -> Any:
    """`value` if it can be stored as JSON (datetimes, decimals, UUIDs included), else its repr."""
    try:
        json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError):
        return {"unserializable": repr(value)[:MESSAGE_LIMIT]}
    return value


# One upsert writes every state of the row: "running", then the outcome. The attempt is
# counted from the "started" events: procrastinate's `attempts` also grows when a failed
# job is retried by hand, so it can run ahead of the real runs. Progress already written
# for the same attempt is kept when the statement brings none, and a late "running" write
# (progress from a thread the task left behind) never overwrites a finished attempt.
# (Parameters are prefixed: the outcome travels in procrastinate's statement that records
# the job's end.)
#
# It writes the rows of several jobs at once: each parameter is an array with one value
# per job (`upsert_parameters` gives one job's, jobs.job_ends.merge_rows joins them). The
# worker's connector records the ends of jobs that finish together in one statement, their
# rows with them (jobs/connector.py).
#
# An outcome (not a "running" write) also appends its entry to `attempts_log`, in the same
# statement. The entry comes as JSON without its attempt number, which is added here. An
# attempt already in the log is not appended again (the statement ran twice: a reply lost
# after the commit), except over a "lost" entry of the same attempt, which stalled-job
# recovery wrote while the worker was only late: the worker's own outcome replaces it.
# The log keeps the newest ATTEMPTS_LOG_LIMIT entries (the 50 below, written out: every
# parameter is an array of the jobs' values, which jobs.job_ends.merge_rows joins).
UPSERT_SQL = """
INSERT INTO jobs_jobresult AS result (job_id, task_name, status, attempt, worker_id,
    worker_name, started_at, finished_at, duration, return_value, exception_type,
    exception_message, traceback, progress, progress_message, attempts_log)
SELECT given.job_id, given.task_name, given.status, this.attempt, given.worker_id,
    given.worker_name, given.started_at, given.finished_at, given.duration,
    given.return_value, given.exception_type, given.exception_message, given.traceback,
    given.progress, given.progress_message,
    CASE WHEN given.entry IS NULL THEN '[]'::jsonb
         ELSE jsonb_build_array(given.entry || jsonb_build_object('attempt', this.attempt))
    END
FROM unnest(%(result_job_id)s::bigint[], %(result_task_name)s::text[],
    %(result_status)s::text[], %(result_worker_id)s::bigint[],
    %(result_worker_name)s::text[], %(result_started_at)s::timestamptz[],
    %(result_finished_at)s::timestamptz[], %(result_duration)s::interval[],
    %(result_return_value)s::jsonb[], %(result_exception_type)s::text[],
    %(result_exception_message)s::text[], %(result_traceback)s::text[],
    %(result_progress)s::float8[], %(result_progress_message)s::text[],
    %(result_entry)s::jsonb[])
    AS given (job_id, task_name, status, worker_id, worker_name, started_at, finished_at,
              duration, return_value, exception_type, exception_message, traceback,
              progress, progress_message, entry)
CROSS JOIN LATERAL (
    SELECT GREATEST((SELECT count(*) FROM procrastinate_events
                     WHERE job_id = given.job_id AND type = 'started'), 1) AS attempt
    OFFSET 0  -- counted once per job, not once per use
) AS this
ON CONFLICT (job_id) DO UPDATE SET
    task_name = EXCLUDED.task_name, status = EXCLUDED.status, attempt = EXCLUDED.attempt,
    worker_id = EXCLUDED.worker_id, worker_name = EXCLUDED.worker_name,
    started_at = EXCLUDED.started_at,
    finished_at = EXCLUDED.finished_at, duration = EXCLUDED.duration,
    return_value = EXCLUDED.return_value, exception_type = EXCLUDED.exception_type,
    exception_message = EXCLUDED.exception_message, traceback = EXCLUDED.traceback,
    progress = CASE WHEN result.attempt = EXCLUDED.attempt AND EXCLUDED.progress IS NULL
                    THEN result.progress ELSE EXCLUDED.progress END,
    progress_message = CASE WHEN result.attempt = EXCLUDED.attempt
                                 AND EXCLUDED.progress IS NULL
                            THEN result.progress_message ELSE EXCLUDED.progress_message END,
    attempts_log = CASE
        WHEN EXCLUDED.attempts_log = '[]'::jsonb THEN result.attempts_log
        -- The usual case: a new attempt, room left.
        WHEN NOT result.attempts_log @> jsonb_build_array(
                     jsonb_build_object('attempt', EXCLUDED.attempt))
             AND jsonb_array_length(result.attempts_log) < 50
            THEN result.attempts_log || EXCLUDED.attempts_log
        WHEN result.attempts_log @> jsonb_build_array(
                 jsonb_build_object('attempt', EXCLUDED.attempt))
             AND NOT result.attempts_log @> jsonb_build_array(
                 jsonb_build_object('attempt', EXCLUDED.attempt, 'status', 'lost'))
            THEN result.attempts_log
        ELSE (SELECT jsonb_agg(kept.entry ORDER BY kept.position)
                FROM (SELECT logged.entry, logged.position
                        FROM jsonb_array_elements(result.attempts_log || EXCLUDED.attempts_log)
                             WITH ORDINALITY AS logged (entry, position)
                       WHERE logged.position > jsonb_array_length(result.attempts_log)
                          OR NOT logged.entry @> jsonb_build_object(
                                 'attempt', EXCLUDED.attempt, 'status', 'lost')
                       ORDER BY logged.position DESC
                       LIMIT 50) AS kept)
    END
WHERE EXCLUDED.status <> 'running' OR result.status = 'running'
    OR result.attempt <> EXCLUDED.attempt
"""
# The same, run as part of procrastinate's statement that records a job's end.
JOB_END_CTE: LiteralString = "job_result AS (" + UPSERT_SQL + ")"


class AttemptError(TypedDict):
    type: str  # the exception's class path, "module.Class"
    message: str
    traceback: str


class AttemptEntry(TypedDict):
    """One ended attempt in `JobResult.attempts_log` (times as ISO 8601 text, UTC)."""

    attempt: int
    status: str  # succeeded, failed, aborted, or lost (its worker died: jobs/stalled.py)
    worker_id: int | None  # procrastinate's worker id
    worker_name: str
    started_at: str
    finished_at: str
    error: AttemptError | None


def upsert_parameters(
    *,
    job_id: int,
    task_name: str,
    status: str,
    started_at: dt.datetime,
    ended_as: str | None = None,
    worker_id: int | None = None,
    worker_name: str = "",
    finished_at: dt.datetime | None = None,
    duration: dt.timedelta | None = None,
    return_value: str | None = None,
    exception_type: str = "",
    exception_message: str = "",
    traceback: str = "",
    progress: float | None = None,
    progress_message: str = "",
) -> dict[str, Any]:
    """The parameters of `UPSERT_SQL` that write the row of one attempt (`return_value` as
    JSON text) and, unless it is still running, its entry of the attempts log, whose status
    is `ended_as` (the row's `status` by default): each an array of one value."""
    entry = None
    if status != JobResult.Status.RUNNING:
        error = None
        if exception_type:
            error = {"type": exception_type, "message": exception_message, "traceback": traceback}
        entry = _dumps(
            {
                "status": ended_as or status,
                "worker_id": worker_id,
                "worker_name": worker_name,
                "started_at": started_at,
                "finished_at": finished_at,
                "error": error,
            }
        )
    fields = {
        "job_id": job_id,
        "task_name": task_name,
        "status": status,
        "worker_id": worker_id,
        "worker_name": worker_name,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration": duration,
        "return_value": return_value,
        "exception_type": exception_type,
        "exception_message": exception_message,
        "traceback": traceback,
        "progress": progress,
        "progress_message": progress_message,
        "entry": entry,
    }
    return {f"result_{name}": [value] for name, value in fields.items()}


@dataclasses.dataclass
class Attempt:
    """The attempt a worker is running, shared by its middleware and `report_progress`."""

    context: job_context.JobContext
    job_id: int
    started_at: dt.datetime
    worker_id: int | None = None
    progress: float | None = None
    progress_message: str = ""
    # A "running" row for this attempt is written, or being written.
    running_row: bool = False
    # The delayed "running" row's timer went off: its write must land before the outcome.
    timer_fired: bool = False

    def row(self, status: str, **outcome: Any) -> dict[str, Any]:
        """The parameters of `UPSERT_SQL` for this attempt."""
        return upsert_parameters(
            job_id=self.job_id,
            task_name=self.context.job.task_name,
            status=status,
            started_at=self.started_at,
            worker_id=self.worker_id,
            worker_name=self.context.worker_name or "",
            progress=self.progress,
            progress_message=self.progress_message,
            **outcome,
        )


_current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "jobs_current_attempt", default=None
)


def current_job_id() -> int | None:
    """The id of the job whose task is running here (in a worker), else None."""
    attempt = _current_attempt.get()
    return None if attempt is None else attempt.job_id


def _django_execute(query: LiteralString, arguments: dict[str, Any]) -> None:
    close_old_connections()  # a connection broken since the last job is replaced
    with connection.cursor() as cursor:
        cursor.execute(query, arguments)


async def _write(attempt: Attempt, row: dict[str, Any]) -> None:
    """Upsert the attempt's row; a failure is logged, never raised.

    A result that cannot be written (database gone for a moment) must not change the job's
    own outcome, which procrastinate records separately.
    """
    connector = attempt.context.app.connector
    try:
        if isinstance(connector, InMemoryConnector):
            return  # eager mode in tests: jobs live in memory, there is no row to point at
        if isinstance(connector, PsycopgConnector):
            await connector.execute_query_async(UPSERT_SQL, **row)
        else:
            await sync_to_async(_django_execute, thread_sensitive=False)(UPSERT_SQL, row)
    except Exception:
        logger.exception("Could not record the result of job %s", attempt.job_id)


async def _write_running_row_after(attempt: Attempt, delay: float) -> None:
    await asyncio.sleep(delay)  # cancelled here if the attempt ends first
    attempt.timer_fired = True
    if not attempt.running_row:  # progress reported meanwhile has written it
        attempt.running_row = True
        await _write(attempt, attempt.row(JobResult.Status.RUNNING))


async def record_result(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Worker middleware: record the attempt's outcome (and, if it runs long, its start)."""
    job_id = context.job.id
    assert job_id is not None
    started = time.monotonic()
    attempt = Attempt(
        context=context, job_id=job_id, started_at=timezone.now(), worker_id=worker.worker_id
    )
    delay = jobs_settings.JOBS_RESULT_RUNNING_AFTER_MS / 1000
    running_row: asyncio.Task[None] | None = None
    if delay:
        running_row = asyncio.create_task(_write_running_row_after(attempt, delay))
    else:
        attempt.running_row = True
        await _write(attempt, attempt.row(JobResult.Status.RUNNING))
    token = _current_attempt.set(attempt)
    outcome: dict[str, Any] = {}
    try:
        value = await call_next()
    except BaseException as exc:
        # Sync tasks raise JobAborted; async ones are cancelled.
        aborted = isinstance(exc, procrastinate_exceptions.JobAborted | asyncio.CancelledError)
        outcome = {
            "status": JobResult.Status.ABORTED if aborted else JobResult.Status.FAILED,
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            # A message may hold what PostgreSQL's text refuses: the outcome is kept anyway.
            "exception_message": storable_text(_message(exc))[:MESSAGE_LIMIT],
            "traceback": storable_text("".join(traceback.format_exception(exc)))[-TRACEBACK_LIMIT:],
        }
        raise
    else:
        outcome = {
            "status": JobResult.Status.SUCCEEDED,
            "return_value": json_text(value),
        }
        return value
    finally:
        _current_attempt.reset(token)
        finished_at = timezone.now()
        try:
            if running_row is not None and not running_row.done():
                if attempt.timer_fired:
                    await _settle(running_row)  # its write must land before the outcome's
                else:
                    running_row.cancel()
        finally:
            row = attempt.row(
                **outcome,
                finished_at=finished_at,
                duration=dt.timedelta(seconds=time.monotonic() - started),
            )
            if isinstance(context.app.connector, ReconnectingPsycopgConnector):
                # Written by the statement that records the job's end: no round trip of
                # its own, and the outcome and the job's end are committed together.
                context.app.connector.write_with_job_end(
                    job_id, JOB_END_CTE, row, return_value=outcome.get("return_value")
                )
            else:
                await _write(attempt, row)


async def _settle(write: asyncio.Task[None]) -> None:
    """Wait for `write` to finish, even if this task is cancelled meanwhile (an abort, a
    shutdown): the outcome is recorded after it either way."""
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        await write
        raise


def _record_progress(fraction: float, message: str) -> Attempt | None:
    if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"progress must be a number from 0 to 1, not {fraction!r}")
    attempt = _current_attempt.get()
    if attempt is None:
        return None  # called outside a worker (a direct call in a test or a shell)
    if isinstance(attempt.context.app.connector, InMemoryConnector):
        return None  # eager mode in tests: the job is in memory, no row may point at it
    attempt.progress = float(fraction)
    attempt.progress_message = storable_text(str(message))[:255]
    attempt.running_row = True
    return attempt


def report_progress(fraction: float, message: str = "") -> None:
    """Record the running job's progress (0 to 1) and a short message. Sync tasks."""
    attempt = _record_progress(fraction, message)
    if attempt is None:
        return
    try:
        # A savepoint when the task reports from inside its own transaction: a failed
        # progress write must not take the task's transaction down with it.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(UPSERT_SQL, attempt.row(JobResult.Status.RUNNING))
    except Exception:
        logger.exception("Could not record the progress of job %s", attempt.job_id)


async def areport_progress(fraction: float, message: str = "") -> None:
    """`report_progress` for async tasks."""
    attempt = _record_progress(fraction, message)
    if attempt is not None:
        await _write(attempt, attempt.row(JobResult.Status.RUNNING))
