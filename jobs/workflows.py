"""Workflows: batches of jobs with callbacks, and chains of jobs run one after the other.

A **batch** is many jobs deferred together, in the caller's transaction, with up to three
callbacks, each an ordinary job of a registered task:

- `on_success`: every job of the batch succeeded;
- `on_failure`: every job ended and at least one failed for good (no retry left);
- `on_finish`: every job ended, however (succeeded, failed, cancelled, aborted).

A callback gets one argument more than those it was given: `batch`, a JSON object with the
batch's `id`, `kind`, `description`, `properties` (the caller's JSON object), `total` and
the counts `succeeded`, `failed` and `cancelled`. A job of the batch may add jobs to it while
it runs (`add_to_batch(current_batch_id(), [...])`): they keep the batch open until they end.

A **chain** is a sequence of jobs where each is deferred only when the one before succeeded.
A step built with `.result_as("name")` receives the previous step's return value as its
keyword argument `name` (the value as recorded in its result: JSON). A step that fails for
good stops the chain; its callbacks then run as a batch's do (a chain's `total` is its
number of steps, so `on_success` means every step succeeded).

How it is exactly once. The counts live in the batch's row (`jobs.models.Batch`) and are kept
by a trigger on procrastinate's job table (migration `jobs.0010`), deferred to the commit of
whatever ends a job: the worker's statement that records its end, stalled-job recovery, a
cancel, a retry by hand (which opens the batch again), or a deletion of a job that had not
ended. The trigger locks the batch's row, so two jobs ending at the same moment are counted
one after the other; the one that leaves nothing pending defers the callbacks, in its own
transaction, and records their job ids, and a callback with an id is never deferred again:
each callback runs at most once in a batch's life, even if jobs retried by hand end it again.
A worker killed in the middle of a job commits nothing: the job stays running until
stalled-job recovery puts it back, and it is counted when it ends. A job put back for a retry
is not counted: it has not ended. A waiting job rescheduled (jobs.job_actions.reschedule
replaces it with a copy) hands its place in the batch to the copy.

Deleted jobs. Retention deletes ended jobs only, already counted. A job deleted before it
ended (`cancel_job_by_id(delete_job=True)`, or by hand) counts as cancelled; a job a worker
run with `--delete-jobs` deletes as it ends counts as it ended (the worker's connector tells
the trigger), and a chain's step deleted as it succeeds hands its return value on all the
same (the connector gives it to the trigger too). The batch keeps its memberships
(`BatchJob`) and lists such jobs as deleted.

The cost for jobs of no batch is one look-up in jobs_batchjob's primary key when they end,
inside the statement that ends them; a batch's job adds one update of the batch's row there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
from collections.abc import Iterable, Sequence
from typing import Any, LiteralString

import psycopg
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.tasks import Task as DjangoTask
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import jobs as procrastinate_jobs
from procrastinate import tasks as procrastinate_tasks
from procrastinate.contrib.django import app

from jobs import job_actions
from jobs.deferring import defer_statement, job_to_defer
from jobs.http_tasks import task_function
from jobs.job_times import to_utc
from jobs.models import Batch, BatchJob
from jobs.postgres_values import text_problem

# The argument every callback receives.
BATCH_ARGUMENT = "batch"
CALLBACKS = ("on_success", "on_finish", "on_failure")
# Jobs deferred per statement when a batch starts: one statement for 100,000 jobs would
# hold a parameter of tens of megabytes.
DEFER_CHUNK = 5000
DESCRIPTION_LIMIT = 255


class BatchError(Exception):
    """The batch cannot take jobs: it does not exist, has finished, or is a chain."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One job of a workflow, made by `job()`: a task, its JSON arguments and its options."""

    task_name: str
    args: dict[str, Any]
    queue: str
    priority: int
    lock: str | None = None
    queueing_lock: str | None = None
    scheduled_at: dt.datetime | None = None
    # A chain's step: the keyword argument that receives the previous step's return value.
    receives_result_as: str | None = None
    # The task function's parameters (its context left out), for the arguments a
    # callback or a step gets later.
    signature: inspect.Signature | None = dataclasses.field(default=None, compare=False)
    positional: tuple[Any, ...] = dataclasses.field(default=(), compare=False)

    def result_as(self, name: str) -> JobSpec:
        """This job as a chain's step that receives the previous step's return value as its
        keyword argument `name`."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"result_as needs an argument name, not {name!r}.")
        if name in self.args:
            raise ValueError(f"{self.task_name} already gets {name!r}: it cannot be the result.")
        self._check_call(extra=(name,), partial=True)
        return dataclasses.replace(self, receives_result_as=name)

    def procrastinate_job(self) -> procrastinate_jobs.Job:
        return procrastinate_jobs.Job(
            id=None,
            queue=self.queue,
            task_name=self.task_name,
            task_kwargs=self.args,
            priority=self.priority,
            lock=self.lock,
            queueing_lock=self.queueing_lock,
            scheduled_at=self.scheduled_at,
        )

    def stored(self, role: str) -> dict[str, Any]:
        """The job as a batch keeps it, to defer later (a callback, or a chain's step after
        the first): without a queueing lock (two would make that deferral fail, and with it
        the end of the job that triggers it) and to run at once."""
        if self.queueing_lock is not None:
            raise ValueError(f"The {role} cannot have a queueing lock ({self.task_name}).")
        if self.scheduled_at is not None:
            raise ValueError(f"The {role} runs when it is due: it cannot be scheduled.")
        return {
            "queue_name": self.queue,
            "task_name": self.task_name,
            "priority": self.priority,
            "lock": self.lock,
            "args": self.args,
            "result_as": self.receives_result_as,
        }

    def _check_call(self, extra: Sequence[str] = (), *, partial: bool = False) -> None:
        """TypeError unless the task's function takes these arguments and `extra` too
        (with `partial`, some may still be missing: a callback's or a step's)."""
        if self.signature is None:
            return
        named = {name: None for name in extra}
        arguments = {key: value for key, value in self.args.items() if key != ARGS_KEY}
        bind = self.signature.bind_partial if partial else self.signature.bind
        try:
            bind(*self.positional, **arguments, **named)
        except TypeError as error:
            raise TypeError(f"{self.task_name}: {error}") from None


ARGS_KEY = "*args"  # where a Django task's positional arguments go (jobs.django_tasks)


def job(task: Any, /, *args: Any, **kwargs: Any) -> JobSpec:
    """A job of `task` with these arguments, for `defer_batch`, `defer_chain` and
    `add_to_batch`: a procrastinate task (or `task.configure(...)` for other options) or a
    Django `@task` function (or `task.using(...)`). Raises TypeError or ValueError for
    arguments the task does not take or that are not JSON, before anything is written."""
    from jobs.django_tasks import ProcrastinateBackend, ProcrastinateTask, json_arguments

    if isinstance(task, DjangoTask):
        backend = task.get_backend()
        if not isinstance(backend, ProcrastinateBackend):
            raise TypeError(f"{task.module_path} is not a task of the procrastinate backend.")
        backend.validate_task(task)  # registers it with procrastinate's app
        arguments = json_arguments(args, kwargs)
        locks = (
            (task.lock, task.queueing_lock) if isinstance(task, ProcrastinateTask) else (None, None)
        )
        spec = JobSpec(
            task_name=task.module_path,
            args=arguments,
            queue=task.queue_name,
            priority=task.priority,
            lock=locks[0],
            queueing_lock=locks[1],
            scheduled_at=to_utc(task.run_after) if task.run_after is not None else None,
            signature=_parameters(app.tasks[task.module_path]),
            positional=tuple(args),
        )
    else:
        if isinstance(task, procrastinate_tasks.Task):
            deferrer = task.configure()
        elif isinstance(task, procrastinate_jobs.JobDeferrer):
            deferrer = task
        else:
            raise TypeError(
                "A job needs a procrastinate task, task.configure(...), or a Django task; "
                f"not {task!r}."
            )
        if args:
            raise TypeError(f"{deferrer.job.task_name} takes keyword arguments only.")
        _check_json(kwargs)
        made = deferrer.make_new_job(**kwargs)
        spec = JobSpec(
            task_name=made.task_name,
            args=dict(made.task_kwargs),
            queue=made.queue,
            priority=made.priority,
            lock=made.lock,
            queueing_lock=made.queueing_lock,
            scheduled_at=made.scheduled_at,
            signature=_parameters(app.tasks[made.task_name]),
        )
    spec._check_call(partial=True)  # a callback's or a step's arguments come later
    return spec


def _parameters(task: procrastinate_tasks.Task[Any, Any, Any]) -> inspect.Signature:
    func, takes_context = task_function(task)
    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())[1 if takes_context else 0 :]
    return signature.replace(parameters=parameters)


def _check_json(value: Any) -> None:
    """TypeError or ValueError unless `value` goes to PostgreSQL's jsonb and comes back."""
    from jobs.django_tasks import check_jsonb

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise type(error)(f"Arguments must be JSON: {error}") from None
    check_jsonb(value)


def _check_workflow(
    description: str, properties: dict[str, Any] | None, callbacks: dict[str, JobSpec | None]
) -> dict[str, Any]:
    if not isinstance(description, str) or len(description) > DESCRIPTION_LIMIT:
        raise ValueError(f"The description is a string of at most {DESCRIPTION_LIMIT} characters.")
    if problem := text_problem(description):
        raise ValueError(f"The description is not storable: {problem}.")
    if properties is not None:
        if not isinstance(properties, dict):
            raise TypeError("The properties are a JSON object (a dict).")
        _check_json(properties)
    stored = {}
    for role, spec in callbacks.items():
        if spec is None:
            continue
        if not isinstance(spec, JobSpec):
            raise TypeError(f"{role} needs a job(...), not {spec!r}.")
        if BATCH_ARGUMENT in spec.args:
            raise ValueError(f"{role}: a callback gets its {BATCH_ARGUMENT!r} argument itself.")
        spec._check_call(extra=(BATCH_ARGUMENT,))
        stored[role] = spec.stored(role)
    return stored


def _specs(jobs: Iterable[JobSpec]) -> list[JobSpec]:
    specs = list(jobs)
    if not specs:
        raise ValueError("A workflow needs at least one job.")
    for spec in specs:
        if not isinstance(spec, JobSpec):
            raise TypeError(f"Each job is a job(...), not {spec!r}.")
        spec._check_call(
            extra=() if spec.receives_result_as is None else (spec.receives_result_as,)
        )
    return specs


ADD_SQL: LiteralString = (
    "SELECT jobs_batch_add_v1(%(batch_id)s, %(jobs)s::procrastinate_job_to_defer_v1[])"
)
START_CHAIN_SQL: LiteralString = (
    "SELECT jobs_batch_start_chain_v1(%(batch_id)s, %(job)s::procrastinate_job_to_defer_v1)"
)


def _add(batch_id: int, specs: list[JobSpec]) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(specs), DEFER_CHUNK):
        chunk = [
            job_to_defer(spec.procrastinate_job()) for spec in specs[start : start + DEFER_CHUNK]
        ]
        with defer_statement() as execute:
            (row,) = execute(ADD_SQL, batch_id=batch_id, jobs=chunk)
        ids.extend(row["jobs_batch_add_v1"])
    return ids


@dataclasses.dataclass(frozen=True)
class Callbacks:
    """A workflow's callbacks and the rest of what describes it, as its caller gave them."""

    on_success: JobSpec | None = None
    on_finish: JobSpec | None = None
    on_failure: JobSpec | None = None
    description: str = ""
    properties: dict[str, Any] | None = None

    def create(self, kind: str, **fields: Any) -> Batch:
        """The workflow's row, once its callbacks and its description are checked."""
        callbacks = _check_workflow(
            self.description,
            self.properties,
            {role: getattr(self, role) for role in CALLBACKS},
        )
        return Batch.objects.create(
            kind=kind,
            description=self.description,
            properties=self.properties or {},
            callbacks=callbacks,
            **fields,
        )


@transaction.atomic
def defer_batch(
    jobs: Iterable[JobSpec],
    *,
    on_success: JobSpec | None = None,
    on_finish: JobSpec | None = None,
    on_failure: JobSpec | None = None,
    description: str = "",
    properties: dict[str, Any] | None = None,
) -> Batch:
    """Defer `jobs` as one batch with its callbacks, in the caller's transaction (or one of
    its own): all of it, or nothing. procrastinate's AlreadyEnqueued if a job's queueing
    lock is held."""
    specs = _specs(jobs)
    batch = Callbacks(on_success, on_finish, on_failure, description, properties).create(
        Batch.Kind.BATCH
    )
    _add(batch.pk, specs)
    batch.refresh_from_db()
    return batch


@transaction.atomic
def defer_chain(
    steps: Iterable[JobSpec],
    *,
    on_success: JobSpec | None = None,
    on_finish: JobSpec | None = None,
    on_failure: JobSpec | None = None,
    description: str = "",
    properties: dict[str, Any] | None = None,
) -> Batch:
    """Start a chain: defer its first step now, each next one when the one before
    succeeded (see the module's docstring). In the caller's transaction."""
    specs = _specs(steps)
    if specs[0].receives_result_as is not None:
        raise ValueError("The first step of a chain has no result to receive.")
    stored_steps = [
        {"task_name": specs[0].task_name, "result_as": None},
        *(spec.stored(f"step {position + 2}") for position, spec in enumerate(specs[1:])),
    ]
    batch = Callbacks(on_success, on_finish, on_failure, description, properties).create(
        Batch.Kind.CHAIN, steps=stored_steps, total=len(specs)
    )
    with defer_statement() as execute:
        execute(START_CHAIN_SQL, batch_id=batch.pk, job=job_to_defer(specs[0].procrastinate_job()))
    batch.refresh_from_db()
    return batch


def add_to_batch(batch_id: int, jobs: Iterable[JobSpec]) -> list[int]:
    """Defer `jobs` into a batch that has not finished (a job of the batch adding more);
    their ids. BatchError if the batch is unknown, finished, or a chain."""
    specs = _specs(jobs)
    try:
        with transaction.atomic():
            return _add(batch_id, specs)
    except procrastinate_exceptions.ConnectorException as error:
        refusal = _refusal(error)
        if refusal is None:
            raise
        raise BatchError(refusal) from None


def _refusal(error: BaseException) -> str | None:
    """The message of `jobs_batch_add_v1`'s refusal, if `error` is one."""
    cause = error.__cause__
    while cause is not None and not isinstance(cause, psycopg.Error):
        cause = cause.__cause__
    if isinstance(cause, psycopg.Error) and cause.sqlstate in ("P0002", "55000"):
        return cause.diag.message_primary
    return None


adefer_batch = sync_to_async(defer_batch)
adefer_chain = sync_to_async(defer_chain)
aadd_to_batch = sync_to_async(add_to_batch)


def current_batch_id() -> int | None:
    """The batch of the job this code runs in (a task run by a worker), if any."""
    from jobs.results import current_job_id

    job_id = current_job_id()
    if job_id is None:
        return None
    return BatchJob.objects.filter(job_id=job_id).values_list("batch_id", flat=True).first()


async def acurrent_batch_id() -> int | None:
    return await sync_to_async(current_batch_id)()


# --- reading ----------------------------------------------------------------------------------

PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_LIVE_COUNTS_SQL = """
SELECT j.status, count(*) FROM jobs_batchjob m JOIN procrastinate_jobs j ON j.id = m.job_id
WHERE m.batch_id = %(batch_id)s AND m.ended_as IS NULL
GROUP BY j.status
"""
_JOBS_SQL = """
SELECT m.job_id, m.step, m.ended_as, j.status, j.task_name, r.return_value,
       r.exception_type, r.exception_message
FROM jobs_batchjob m
LEFT JOIN procrastinate_jobs j ON j.id = m.job_id
LEFT JOIN jobs_jobresult r ON r.job_id = m.job_id
WHERE m.batch_id = %(batch_id)s
ORDER BY m.job_id
LIMIT %(limit)s OFFSET %(offset)s
"""


def batch_state(batch: Batch) -> str:
    """running, succeeded, failed (at least one job failed) or cancelled."""
    if batch.finished_at is None:
        return "running"
    if batch.succeeded == batch.total:
        return "succeeded"
    return "failed" if batch.failed else "cancelled"


def batch_status(
    batch_id: int, *, page: int = 1, page_size: int = PAGE_SIZE
) -> dict[str, Any] | None:
    """The batch's status, counts and one page of its jobs (with the return values of those
    that succeeded), as JSON-ready data; None if there is no such batch."""
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None:
        return None
    page = max(1, page)
    page_size = min(max(1, page_size), MAX_PAGE_SIZE)
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_COUNTS_SQL, {"batch_id": batch_id})
        live = dict(cursor.fetchall())
        cursor.execute(
            _JOBS_SQL,
            {"batch_id": batch_id, "limit": page_size, "offset": (page - 1) * page_size},
        )
        rows = cursor.fetchall()
    deferred = batch.memberships.count()
    jobs = []
    for job_id, step, ended_as, status, task_name, return_value, exc_type, exc_message in rows:
        jobs.append(
            {
                "id": job_id,
                "task": task_name,
                "status": status or "deleted",
                "ended_as": ended_as,
                "step": step,
                "return_value": _loaded(return_value) if status == "succeeded" else None,
                "error": {"type": exc_type, "message": exc_message}
                if exc_type and status in ("failed", "todo", "doing")
                else None,
            }
        )
    return {
        "id": batch.pk,
        "kind": batch.kind,
        "description": batch.description,
        "properties": batch.properties,
        "status": batch_state(batch),
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "counts": {
            "total": batch.total,
            "waiting": live.get("todo", 0),
            "running": live.get("doing", 0),
            "succeeded": batch.succeeded,
            "failed": batch.failed,
            "cancelled": batch.cancelled,
            # A chain's steps not deferred: still to come, or never (the chain stopped).
            "not_started": batch.total - deferred,
        },
        "callbacks": {
            role: {
                "task": batch.callbacks[role]["task_name"],
                "job_id": getattr(batch, f"{role}_job_id"),
            }
            for role in CALLBACKS
            if role in batch.callbacks
        },
        "steps": [
            {"task": step["task_name"], "result_as": step.get("result_as")} for step in batch.steps
        ],
        "jobs": {"page": page, "page_size": page_size, "count": deferred, "results": jobs},
    }


def _loaded(value: Any) -> Any:
    # Django's connection gives jsonb back as its text (the ORM decodes it per field).
    return json.loads(value) if isinstance(value, str) else value


abatch_status = sync_to_async(batch_status)


def batch_task_names(batch_id: int) -> set[str]:
    """Every task a batch runs or will run: its jobs', its steps' and its callbacks'."""
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None:
        return set()
    names = {step["task_name"] for step in batch.steps}
    names.update(spec["task_name"] for spec in batch.callbacks.values())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT j.task_name FROM jobs_batchjob m "
            "JOIN procrastinate_jobs j ON j.id = m.job_id WHERE m.batch_id = %s",
            [batch_id],
        )
        names.update(row[0] for row in cursor.fetchall())
    return names


# --- acting -----------------------------------------------------------------------------------

_CANCEL_REST_SQL = """
SELECT j.status::text, procrastinate_cancel_job_v1(j.id, j.status = 'doing', false)
FROM jobs_batchjob m JOIN procrastinate_jobs j ON j.id = m.job_id
WHERE m.batch_id = %(batch_id)s AND m.ended_as IS NULL AND j.status IN ('todo', 'doing')
ORDER BY j.id
"""


@dataclasses.dataclass(frozen=True)
class CancelOutcome:
    cancelled: int  # waiting jobs cancelled: they will never run
    abort_requested: int  # running jobs asked to stop


@transaction.atomic
def cancel_rest(batch_id: int) -> CancelOutcome:
    """Cancel the batch's waiting jobs and ask its running ones to stop, through
    procrastinate's cancel function: they count as cancelled when they end (a running
    task that never checks for an abort runs to its end and counts as it ends)."""
    with connection.cursor() as cursor:
        cursor.execute(_CANCEL_REST_SQL, {"batch_id": batch_id})
        rows = cursor.fetchall()
    acted = [status for status, job_id in rows if job_id is not None]
    return CancelOutcome(cancelled=acted.count("todo"), abort_requested=acted.count("doing"))


def retry_failed(batch_id: int) -> job_actions.Outcome:
    """Put the batch's failed jobs back in their queues (procrastinate's retry): the batch
    is open again until they end."""
    job_ids = list(
        BatchJob.objects.filter(batch_id=batch_id, ended_as="failed")
        .order_by("job_id")
        .values_list("job_id", flat=True)
    )
    return job_actions.retry_failed(job_ids)
