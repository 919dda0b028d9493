"""Acting on many jobs at once through procrastinate's API: retry, cancel, abort, reschedule.

procrastinate's tables change only through its job manager (its SQL functions write the
events and keep the locks consistent). Each function here takes job ids, acts on those in
a state where the action makes sense, and returns what happened to how many jobs, so that
the admin and the job API (one job at a time) can say so, in the same words. Jobs in other
states are counted, never touched.

Aborting a job that has not started cancels it (it will never run), as procrastinate's own
`cancel_job_by_id(abort=True)` does; a running job is asked to stop.

Rescheduling has no direct counterpart in procrastinate for a job that waits: its retry
function only accepts failed (or running) jobs. A waiting job is therefore rescheduled by
cancelling it and deferring a copy (same task, arguments, queue, priority, locks) at the
new time, in one transaction: the copy has a new id, which the outcome reports, and takes
the job's place in its batch or chain.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone
from procrastinate import jobs as procrastinate_jobs
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.models import BatchJob


@dataclass
class Outcome:
    """What an action did: the ids it acted on, and the others by their status."""

    # Why the jobs left alone were: "only failed jobs can be retried".
    refusal: str
    done: list[int] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    # Rescheduling a waiting job replaces it: old id -> new id.
    replaced: dict[int, int] = field(default_factory=dict)
    # Aborting a job that has not started cancels it: those ids (among `done`).
    cancelled: list[int] = field(default_factory=list)

    def skip(self, status: str) -> None:
        self.skipped[status] += 1


def _jobs(job_ids: list[int]) -> list[ProcrastinateJob]:
    return list(
        ProcrastinateJob.objects.filter(id__in=job_ids)
        .only(
            "id", "status", "task_name", "queue_name", "priority", "lock", "queueing_lock", "args"
        )
        .order_by("id")
    )


def _status_now(job_id: int) -> str:
    """The job's status, read again: it changed since `_jobs` read it (a race with a
    worker), and a refusal should name the state the job is in."""
    status = ProcrastinateJob.objects.filter(id=job_id).values_list("status", flat=True).first()
    return status or "deleted"


def retry_failed(job_ids: list[int], *, at: dt.datetime | None = None) -> Outcome:
    """Put failed jobs back in their queue, to run now (or at `at`)."""
    outcome = Outcome(refusal="only failed jobs can be retried")
    when = at or timezone.now()
    for job in _jobs(job_ids):
        if job.status != "failed":
            outcome.skip(job.status)
            continue
        app.job_manager.retry_job_by_id(job.id, retry_at=when)
        outcome.done.append(job.id)
    return outcome


def cancel_waiting(job_ids: list[int]) -> Outcome:
    """Cancel jobs that have not started; they will never run."""
    outcome = Outcome(refusal="only jobs that have not started can be cancelled")
    for job in _jobs(job_ids):
        if job.status != "todo":
            outcome.skip(job.status)
        # The job may have started since it was read: procrastinate says.
        elif app.job_manager.cancel_job_by_id(job.id, abort=False):
            outcome.done.append(job.id)
        else:
            outcome.skip(_status_now(job.id))
    return outcome


def abort(job_ids: list[int]) -> Outcome:
    """Abort jobs: one that has not started is cancelled (it will never run); a running one
    is asked to stop. The task sees it through `context.should_abort()` (sync) or is
    cancelled (async); a task that never checks runs to its end."""
    outcome = Outcome(refusal="only waiting or running jobs can be aborted")
    for job in _jobs(job_ids):
        if job.status not in ("todo", "doing"):
            outcome.skip(job.status)
        elif job.status == "todo" and app.job_manager.cancel_job_by_id(job.id, abort=False):
            outcome.done.append(job.id)
            outcome.cancelled.append(job.id)
        # Running, or started since it was read: asked to stop.
        elif app.job_manager.cancel_job_by_id(job.id, abort=True):
            outcome.done.append(job.id)
        else:
            outcome.skip(_status_now(job.id))
    return outcome


def reschedule(job_ids: list[int], *, at: dt.datetime) -> Outcome:
    """Run failed and waiting jobs at `at`: a failed job is retried then; a waiting job is
    replaced by a copy scheduled then (see the module's docstring)."""
    outcome = Outcome(refusal="only failed and waiting jobs can be rescheduled")
    for job in _jobs(job_ids):
        if job.status == "failed":
            app.job_manager.retry_job_by_id(job.id, retry_at=at)
            outcome.done.append(job.id)
        elif job.status == "todo":
            new_id = _replace_waiting(job, at=at)
            if new_id is None:
                outcome.skip(_status_now(job.id))
            else:
                outcome.done.append(job.id)
                outcome.replaced[job.id] = new_id
        else:
            outcome.skip(job.status)
    return outcome


def _replace_waiting(job: ProcrastinateJob, *, at: dt.datetime) -> int | None:
    # procrastinate's Django connector runs on Django's connection: the cancel and the
    # defer share this transaction, so the queueing lock passes from one to the other and
    # a failure leaves the original job waiting.
    with transaction.atomic():
        if not app.job_manager.cancel_job_by_id(job.id, abort=False):
            return None  # started meanwhile
        copy = procrastinate_jobs.Job(
            id=None,
            queue=job.queue_name,
            task_name=job.task_name,
            task_kwargs=job.args,
            priority=job.priority,
            lock=job.lock,
            queueing_lock=job.queueing_lock,
            scheduled_at=at,
        )
        created = app.job_manager.defer_job(copy)
        assert created.id is not None
        # The copy takes the job's place in its batch (jobs/workflows.py), if it has one,
        # before the commit counts the cancel: else the batch would count the job as
        # cancelled and end without the copy.
        BatchJob.objects.filter(job_id=job.id).update(job_id=created.id)
    return created.id
