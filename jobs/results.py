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
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

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


def json_safe(value: Any) -> Any:
    """`value` if it can be stored as JSON (datetimes, decimals, UUIDs included), else its repr."""
    try:
        json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError):
        return {"unserializable": repr(value)[:MESSAGE_LIMIT]}
    return value


def _attempt_started(context: job_context.JobContext, started_at: dt.datetime) -> None:
    job = context.job
    assert job.id is not None
    JobResult.objects.update_or_create(
        job_id=job.id,
        defaults={
            "task_name": job.task_name,
            "status": JobResult.Status.RUNNING,
            # Counted from the "started" events: procrastinate's `attempts` also grows when
            # a failed job is retried by hand, so it can run ahead of the real runs.
            "attempt": ProcrastinateEvent.objects.filter(job_id=job.id, type="started").count()
            or job.attempts + 1,
            "worker_name": context.worker_name or "",
            "started_at": started_at,
            "finished_at": None,
            "duration": None,
            "return_value": None,
            "exception_type": "",
            "exception_message": "",
            "traceback": "",
            "progress": None,
            "progress_message": "",
        },
    )


def _attempt_finished(job_id: int, fields: dict[str, Any]) -> None:
    JobResult.objects.filter(job_id=job_id).update(**fields)


async def _safely(function: Callable[..., None], *args: Any) -> None:
    # A result that cannot be written (database gone for a moment) must not change the
    # job's own outcome, which procrastinate records separately.
    try:
        await sync_to_async(function)(*args)
    except Exception:
        logger.exception("Could not record the result of a job")


async def record_result(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Worker middleware: record the attempt's start and outcome in `JobResult`."""
    job_id = context.job.id
    assert job_id is not None
    started_at = timezone.now()
    started = time.monotonic()
    await _safely(_attempt_started, context, started_at)
    token = _current_job_id.set(job_id)
    fields: dict[str, Any] = {}
    try:
        value = await call_next()
    except BaseException as exc:
        aborted = isinstance(exc, procrastinate_exceptions.JobAborted)
        fields = {
            "status": JobResult.Status.ABORTED if aborted else JobResult.Status.FAILED,
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception_message": str(exc)[:MESSAGE_LIMIT],
            "traceback": "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:],
        }
        raise
    else:
        fields = {"status": JobResult.Status.SUCCEEDED, "return_value": json_safe(value)}
        return value
    finally:
        _current_job_id.reset(token)
        finished_at = timezone.now()
        fields |= {
            "finished_at": finished_at,
            "duration": dt.timedelta(seconds=time.monotonic() - started),
        }
        await _safely(_attempt_finished, job_id, fields)


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

STATUS_FIELDS = (
    "id",
    "task_name",
    "queue_name",
    "status",
    "attempts",
    "priority",
    "lock",
    "queueing_lock",
    "scheduled_at",
    "abort_requested",
    "deferred_at",
    "result__status",
    "result__attempt",
    "result__worker_name",
    "result__started_at",
    "result__finished_at",
    "result__duration",
    "result__return_value",
    "result__exception_type",
    "result__exception_message",
    "result__traceback",
    "result__progress",
    "result__progress_message",
)


def _status_queryset(job_id: int) -> Any:
    first_deferred = (
        ProcrastinateEvent.objects.filter(job_id=OuterRef("id"), type="deferred")
        .values("job_id")
        .annotate(first=Min("at"))
        .values("first")
    )
    return (
        ProcrastinateJob.objects.filter(id=job_id)
        .annotate(deferred_at=Subquery(first_deferred))
        .values(*STATUS_FIELDS)
    )


def _shape(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    has_result = row["result__status"] is not None
    duration = row["result__duration"]
    status: dict[str, Any] = {
        "id": row["id"],
        "task": row["task_name"],
        "queue": row["queue_name"],
        "status": row["status"],
        "attempts": row["attempts"],
        "priority": row["priority"],
        "lock": row["lock"],
        "queueing_lock": row["queueing_lock"],
        "abort_requested": row["abort_requested"],
        "deferred_at": row["deferred_at"],
        "scheduled_at": row["scheduled_at"],
        "started_at": row["result__started_at"],
        "finished_at": row["result__finished_at"],
        "duration_seconds": duration.total_seconds() if duration is not None else None,
        "worker": row["result__worker_name"] or None,
        "last_attempt": row["result__attempt"],
        "progress": None,
        "result": None,
        "error": None,
    }
    if has_result and row["result__progress"] is not None:
        status["progress"] = {
            "fraction": row["result__progress"],
            "message": row["result__progress_message"],
        }
    if row["result__status"] == JobResult.Status.SUCCEEDED:
        status["result"] = row["result__return_value"]
    elif row["result__status"] in {JobResult.Status.FAILED, JobResult.Status.ABORTED}:
        status["error"] = {
            "type": row["result__exception_type"],
            "message": row["result__exception_message"],
            "traceback": row["result__traceback"],
        }
    return status


def job_status(job_id: int) -> dict[str, Any] | None:
    """A job's status, timings, progress and result or error; None if there is no such job."""
    return _shape(_status_queryset(job_id).first())


async def ajob_status(job_id: int) -> dict[str, Any] | None:
    return _shape(await _status_queryset(job_id).afirst())
