"""Django's task API (`django.tasks`) run by procrastinate: the `TASKS` backend of `jobs`.

    TASKS = {"default": {"BACKEND": "jobs.django_tasks.ProcrastinateBackend"}}

A Django task is a procrastinate task like any other. Created (by `@task`), it is registered
in procrastinate's Django app under its dotted path (`Task.module_path`, such as
`myapp.emails.send_digest`), so its jobs are listed, recovered, retried, cleaned up and
measured with the rest; a worker that meets the path of a module it has not imported imports
it (jobs/task_registry.py). A job's arguments are the task's keyword arguments, with the
positional ones, if any, under the key "*args".

- `enqueue()` defers through procrastinate's Django connector, on the caller's database
  connection: inside `transaction.atomic()` the job is written with the data and rolled back
  with it. `aenqueue()` runs `enqueue()` on the thread that Django's async ORM and
  `jobs.transaction.async_atomic` use, so the same holds in async views.
- Priorities are procrastinate's, unchanged: Django's -100 to 100, higher first, between
  the API clients' jobs (at most JOBS_API_MAX_PRIORITY, 0 by default) and stalled-job recovery.
- Results are the job itself (its status and events) and the row the result recorder keeps
  (jobs/results.py: the return value, and each ended attempt's worker and error). A result's
  id is the job's id.
- A job waiting for its next attempt is READY, with the errors of the attempts so far.
- procrastinate's options ride on the task: `@task(retry=3, lock=..., queueing_lock=...)`,
  and `lock` and `queueing_lock` on `using()` as well; so does a time limit in seconds,
  `@task(time_limit=30)` (jobs/time_limits.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import traceback
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, LiteralString, cast

from asgiref.sync import sync_to_async
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.dispatch import Signal
from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import (
    log_task_enqueued,
    log_task_finished,
    log_task_started,
    task_enqueued,
    task_finished,
    task_started,
)
from django.utils import timezone
from django.utils.json import normalize_json
from procrastinate import RetryStrategy
from procrastinate.contrib.django import procrastinate_app
from procrastinate.psycopg_connector import PsycopgConnector
from procrastinate.testing import InMemoryConnector

from jobs.conf import jobs_settings
from jobs.deferring import defer_jobs
from jobs.job_times import to_utc
from jobs.postgres_values import text_problem
from jobs.task_registry import find_task
from jobs.time_limits import checked_seconds, declare_time_limit

if TYPE_CHECKING:
    from procrastinate import job_context as procrastinate_job_context
    from procrastinate.retry import RetryValue

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    # django-stubs make Task and TaskResult generic; at run time they are not.
    AnyTask = Task[..., Any]
    AnyResult = TaskResult[..., Any]
    TaskBase = Task[..., Any]
else:
    TaskBase = Task

# procrastinate's columns: task_name and queue_name are varchar(128).
NAME_LIMIT = 128
# The key under which a job's arguments keep the task's positional arguments.
ARGS_KEY = "*args"
# Return values bigger than this are not kept (jobs.results.RETURN_VALUE_LIMIT): a Django
# task's attempt fails on one, rather than succeed with a value `get_result` cannot give.
RETURN_VALUE_LIMIT = 1_000_000
OPTIONS = frozenset({"retry"})
# Python writes floats from this size on with an exponent (1e+16), which jsonb does not keep.
FLOAT_AS_INTEGER = 1e16
# procrastinate's job statuses as Django's.
STATUSES = {
    "todo": TaskResultStatus.READY,
    "doing": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
    "aborted": TaskResultStatus.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcrastinateTask(TaskBase):
    """A Django task with procrastinate's options: `retry` (procrastinate's: True, a number
    of attempts, or a `RetryStrategy`; unset, the backend's OPTIONS["retry"]), the `lock`
    and `queueing_lock` every job of the task gets unless `using()` says otherwise, and its
    `time_limit` in seconds (unset: JOBS_TIME_LIMIT)."""

    retry: RetryValue | None = None
    lock: str | None = None
    queueing_lock: str | None = None
    time_limit: float | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: dt.datetime | None = None,
        backend: str | None = None,
        lock: str | None = None,
        queueing_lock: str | None = None,
    ) -> ProcrastinateTask:
        task = cast(
            ProcrastinateTask,
            Task.using(
                self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
            ),
        )
        changes = {
            name: value
            for name, value in (("lock", lock), ("queueing_lock", queueing_lock))
            if value is not None
        }
        return dataclasses.replace(task, **changes) if changes else task  # type: ignore[arg-type]


def json_arguments(args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A job's arguments for a call with `args` and `kwargs`: Django's JSON rules
    (`normalize_json`, TypeError or ValueError), and what PostgreSQL's jsonb refuses."""
    if ARGS_KEY in kwargs:
        raise TypeError(f"{ARGS_KEY!r} is not a keyword argument a task may take.")
    arguments: dict[str, Any] = normalize_json(dict(kwargs))  # type: ignore[assignment]
    if args:
        arguments[ARGS_KEY] = normalize_json(list(args))
    check_jsonb(arguments)
    return arguments


def check_jsonb(value: Any) -> None:
    """Raise TypeError or ValueError unless PostgreSQL's jsonb gives `value` (already
    normalized) back as it is."""
    match value:
        case float() if not math.isfinite(value):
            raise ValueError(f"Unsupported value: {value!r} (JSON has no NaN or infinity)")
        case float() if abs(value) >= FLOAT_AS_INTEGER:
            # jsonb keeps numbers as `numeric` and writes these without a point or an
            # exponent: they would come back as integers (1e308 as a 309-digit one).
            raise ValueError(
                f"Unsupported value: {value!r} (a float this large comes back from "
                "PostgreSQL as an integer: pass an int or a string)"
            )
        case str():
            if problem := text_problem(value):
                raise ValueError(f"Unsupported value: {problem}")
        case dict():
            for key, item in value.items():
                if not isinstance(key, str):
                    # JSON would turn it into a string: the task would get another key.
                    raise TypeError(f"Unsupported key: {key!r} (JSON object keys are strings)")
                check_jsonb(key)
                check_jsonb(item)
        case list():
            for item in value:
                check_jsonb(item)


def json_return_value(value: Any) -> Any:
    """A task's return value as stored and given back by `get_result`; TypeError or
    ValueError fails the attempt, as Django's backends do."""
    normalized = normalize_json(value)
    check_jsonb(normalized)
    size = len(json.dumps(normalized))
    if size > RETURN_VALUE_LIMIT:
        raise ValueError(
            f"The return value is {size:,} characters of JSON; at most "
            f"{RETURN_VALUE_LIMIT:,} are kept."
        )
    return normalized


def _is_retry_value(value: object) -> bool:
    if isinstance(value, bool | RetryStrategy) or value is None:
        return True
    return isinstance(value, int) and value >= 0


class ProcrastinateBackend(BaseTaskBackend):
    """Django tasks deferred as procrastinate jobs, in the caller's transaction."""

    task_class = ProcrastinateTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        self.alias = alias
        # Kept as given for `check()`, which reports what is wrong; the backend itself
        # refuses to defer until then (`_refuse_misconfiguration`).
        self.params = params
        queues = params.get("QUEUES", [DEFAULT_TASK_QUEUE_NAME])
        valid_queues = not _queue_problems(queues)
        self.queues = set(queues) if valid_queues else set()
        options = params.get("OPTIONS", {})
        self.options = options if isinstance(options, dict) else {}
        self.default_retry: RetryValue = self.options.get("retry", False)
        self._problems = [error.msg for error in self.check() if error.is_serious()]

    # --- checks ----------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = []
        where = f"TASKS[{self.alias!r}]"
        options = self.params.get("OPTIONS", {})
        if not isinstance(options, dict):
            errors.append(checks.Error(f"{where}['OPTIONS'] must be a dict.", id="jobs.E010"))
        else:
            unknown = sorted(str(key) for key in set(options) - OPTIONS)
            if unknown:
                errors.append(
                    checks.Error(
                        f"{where}['OPTIONS'] has unknown option(s): {', '.join(unknown)}.",
                        hint=f"Known options: {', '.join(sorted(OPTIONS))}.",
                        id="jobs.E010",
                    )
                )
            if not _is_retry_value(options.get("retry")):
                errors.append(
                    checks.Error(
                        f"{where}['OPTIONS']['retry'] must be True, False, a number of "
                        "attempts (0 or more) or a procrastinate RetryStrategy.",
                        id="jobs.E010",
                    )
                )
        for problem in _queue_problems(self.params.get("QUEUES", [DEFAULT_TASK_QUEUE_NAME])):
            errors.append(checks.Error(f"{where}['QUEUES'] {problem}", id="jobs.E011"))
        if not _worker_extras_installed():
            errors.append(
                checks.Warning(
                    f"{where}: JOBS_INSTALL_WORKER_EXTRAS is off, so the workers record no "
                    "result: get_result() gives no return value, error or worker.",
                    hint="Call jobs.worker.install_worker_extras(app) from your "
                    "PROCRASTINATE_ON_APP_READY hook, or turn the setting back on.",
                    id="jobs.W010",
                )
            )
        return errors

    def _refuse_misconfiguration(self) -> None:
        if self._problems:
            raise InvalidTaskBackend(" ".join(self._problems))

    # --- tasks -----------------------------------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        self._refuse_misconfiguration()
        super().validate_task(task)
        if len(task.module_path) > NAME_LIMIT:
            raise InvalidTask(
                f"The task's path ({task.module_path}) is longer than {NAME_LIMIT} characters."
            )
        if not isinstance(task.queue_name, str) or not task.queue_name:
            raise InvalidTask("queue_name must be a non-empty string.")
        if len(task.queue_name) > NAME_LIMIT or text_problem(task.queue_name):
            raise InvalidTask(f"Queue {task.queue_name!r} is not a valid queue name.")
        if isinstance(task, ProcrastinateTask):
            for name in ("lock", "queueing_lock"):
                value = getattr(task, name)
                if value is None:
                    continue
                if not isinstance(value, str) or not value:
                    raise InvalidTask(f"{name} must be a non-empty string.")
                if problem := text_problem(value):
                    raise InvalidTask(f"{name}: {problem}.")
            if not _is_retry_value(task.retry):
                raise InvalidTask(
                    "retry must be True, False, a number of attempts (0 or more) or a "
                    "procrastinate RetryStrategy."
                )
            if task.time_limit is not None:
                try:
                    checked_seconds(task.time_limit, what="time_limit")
                except (TypeError, ValueError) as exc:
                    raise InvalidTask(str(exc)) from None
        register(task, self)

    def enqueue[**P, R](
        self, task: Task[P, R], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        self.validate_task(task)
        arguments = json_arguments(args, kwargs)
        options: dict[str, Any] = {"queue": task.queue_name, "priority": task.priority}
        if task.run_after is not None:
            options["schedule_at"] = to_utc(task.run_after)
        if isinstance(task, ProcrastinateTask):
            options["lock"] = task.lock
            options["queueing_lock"] = task.queueing_lock
        # The registered task itself: the app's `configure_task` imports the site's task
        # modules again at every call.
        deferrer = procrastinate_app.app.tasks[task.module_path].configure(**options)
        connector = procrastinate_app.app.connector
        if isinstance(connector, InMemoryConnector):
            job_id, enqueued_at = deferrer.defer(**arguments), timezone.now()
        else:
            # When the database says: `get_result()` reads that time back, and every time
            # of a result comes from the database's clock.
            ((job_id, enqueued_at),) = defer_jobs([deferrer.make_new_job(**arguments)])
        call_args, call_kwargs = _call_arguments(arguments)
        result: TaskResult[P, R] = TaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus.READY,
            enqueued_at=enqueued_at,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=call_args,
            kwargs=call_kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        if isinstance(connector, InMemoryConnector):
            _eager_results.setdefault(connector, {})[job_id] = result
        send_robust(task_enqueued, result)
        return result

    # --- results ---------------------------------------------------------------------------

    def get_result(self, result_id: str) -> AnyResult:
        job_id = _job_id(result_id)
        connector = procrastinate_app.app.connector
        if isinstance(connector, InMemoryConnector):
            return _eager_result(connector, job_id)
        with connection.cursor() as cursor:
            cursor.execute(RESULT_SQL, {"job_id": job_id})
            row = cursor.fetchone()
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return _stored_result(self, job_id, row)


def _worker_extras_installed() -> bool:
    try:
        return bool(jobs_settings.JOBS_INSTALL_WORKER_EXTRAS)
    except ImproperlyConfigured:
        return True  # a bad value: reported by jobs.E001, not again here


def _queue_problems(queues: object) -> list[str]:
    if isinstance(queues, str | bytes) or not isinstance(queues, Iterable):
        return ["must be a list of queue names."]
    problems = []
    for queue in queues:
        if not isinstance(queue, str) or not queue:
            problems.append(f"has {queue!r}: a queue name is a non-empty string.")
        elif len(queue) > NAME_LIMIT or text_problem(queue):
            problems.append(
                f"has {queue!r}: at most {NAME_LIMIT} characters, no NUL or lone surrogate."
            )
    return problems


def _job_id(result_id: object) -> int:
    if isinstance(result_id, int) and not isinstance(result_id, bool):
        text = str(result_id)
    elif isinstance(result_id, str):
        text = result_id
    else:
        raise TaskResultDoesNotExist(result_id)
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # bigint's range
        raise TaskResultDoesNotExist(result_id)
    return int(text)


# --- registration and the worker's side ------------------------------------------------------

# The Django task each procrastinate task name stands for.
_django_tasks: dict[str, AnyTask] = {}


def register(task: AnyTask, backend: ProcrastinateBackend) -> None:
    """Make `task` a procrastinate task of procrastinate's Django app, under its path.

    Every copy of a task (`using()`) comes here; the first registers it. Before the app is
    ready the registry is procrastinate's blueprint, whose tasks the app takes over.
    """
    name = task.module_path
    if name in _django_tasks:
        return
    runner = _async_runner(task) if iscoroutinefunction(task.func) else _sync_runner(task)
    retry = getattr(task, "retry", None)
    procrastinate_app.current_app.task(  # type: ignore[call-overload]
        runner,
        name=name,
        pass_context=True,
        queue=task.queue_name,
        retry=backend.default_retry if retry is None else retry,
        # The task's own locks, for the jobs deferred without `enqueue()` (stored schedules).
        lock=getattr(task, "lock", None),
        queueing_lock=getattr(task, "queueing_lock", None),
    )
    time_limit = getattr(task, "time_limit", None)
    if time_limit is not None:
        declare_time_limit(name, time_limit)
    _django_tasks[name] = task


def django_task_named(name: str) -> AnyTask | None:
    """The Django task registered as `name`, if any (importing nothing)."""
    return _django_tasks.get(name)


def find_django_task(name: str) -> AnyTask | None:
    """The Django task whose jobs are called `name`, importing its module if needed (and
    allowed: jobs.task_registry)."""
    if name not in _django_tasks:
        find_task(name)
    return _django_tasks.get(name)


def _call_arguments(job_kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    kwargs = dict(job_kwargs)
    args = kwargs.pop(ARGS_KEY, [])
    return list(args), kwargs


def _sync_runner(task: AnyTask) -> Callable[..., Any]:
    def run(job_context: procrastinate_job_context.JobContext, /, **job_kwargs: Any) -> Any:
        args, kwargs = _call_arguments(job_kwargs)
        attempts = _read_attempts(job_context) if _history_wanted(task, job_context) else NO_HISTORY
        result = _running_result(task, job_context, args, kwargs, attempts)
        _keep_eager(job_context, result)
        send_robust(task_started, result)
        try:
            if task.takes_context:
                value = task.func(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.func(*args, **kwargs)
            value = json_return_value(value)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # Sent while the exception is handled: Django's log line takes its traceback.
            send_robust(task_finished, _keep_eager(job_context, _ended(result, exc)))
            raise
        send_robust(task_finished, _keep_eager(job_context, _ended(result, None, value)))
        return value

    run.__name__ = run.__qualname__ = task.func.__name__
    return run


def _async_runner(task: AnyTask) -> Callable[..., Any]:
    async def run(job_context: procrastinate_job_context.JobContext, /, **job_kwargs: Any) -> Any:
        args, kwargs = _call_arguments(job_kwargs)
        attempts = (
            await _aread_attempts(job_context) if _history_wanted(task, job_context) else NO_HISTORY
        )
        result = _running_result(task, job_context, args, kwargs, attempts)
        _keep_eager(job_context, result)
        await asend_robust(task_started, result)
        try:
            if task.takes_context:
                value = await task.func(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = await task.func(*args, **kwargs)
            value = json_return_value(value)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            await asend_robust(task_finished, _keep_eager(job_context, _ended(result, exc)))
            raise
        await asend_robust(task_finished, _keep_eager(job_context, _ended(result, None, value)))
        return value

    run.__name__ = run.__qualname__ = task.func.__name__
    return run


# What the worker reads as an attempt starts: the job's enqueue and first start, and its
# ended attempts (jobs.results keeps them).
ATTEMPTS_SQL: LiteralString = """
SELECT (SELECT min(at) FROM procrastinate_events
         WHERE job_id = %(job_id)s AND type = 'deferred') AS enqueued_at,
       (SELECT min(at) FROM procrastinate_events
         WHERE job_id = %(job_id)s AND type = 'started') AS first_started_at,
       (SELECT attempts_log FROM jobs_jobresult WHERE job_id = %(job_id)s) AS log
"""


@dataclass(frozen=True)
class _Attempts:
    """What a starting attempt knows of its job: when it was enqueued and first started,
    and the errors and workers of the attempts before it."""

    enqueued_at: dt.datetime | None
    first_started_at: dt.datetime | None
    errors: list[TaskError]
    worker_ids: list[str]

    @classmethod
    def from_row(cls, row: Any) -> _Attempts:
        if row is None:
            return cls(None, None, [], [])
        if isinstance(row, dict):  # procrastinate's connector gives named columns
            row = (row["enqueued_at"], row["first_started_at"], row["log"])
        enqueued_at, started_at, log = row
        if isinstance(log, str):
            log = json.loads(log)
        log = list(log or [])
        return cls(enqueued_at, started_at, _errors(log), _worker_ids(log))


# What a running attempt's result says when nothing will read its history (_history_wanted).
NO_HISTORY = _Attempts(None, None, [], [])


def _read_attempts(job_context: procrastinate_job_context.JobContext) -> _Attempts:
    if isinstance(job_context.app.connector, InMemoryConnector):
        return _eager_attempts(job_context)
    with connection.cursor() as cursor:
        cursor.execute(ATTEMPTS_SQL, {"job_id": job_context.job.id})
        return _Attempts.from_row(cursor.fetchone())


async def _aread_attempts(job_context: procrastinate_job_context.JobContext) -> _Attempts:
    connector = job_context.app.connector
    if isinstance(connector, InMemoryConnector):
        return _eager_attempts(job_context)
    if isinstance(connector, PsycopgConnector):
        row = await connector.execute_query_one_async(ATTEMPTS_SQL, job_id=job_context.job.id)
        return _Attempts.from_row(row)
    return await sync_to_async(_read_attempts)(job_context)


# Eager mode in tests (`procrastinate_in_memory` of jobs.testing): the jobs live in
# procrastinate's InMemoryConnector, not in tables; their results live here, by connector.
_eager_results: weakref.WeakKeyDictionary[InMemoryConnector, dict[int, AnyResult]] = (
    weakref.WeakKeyDictionary()
)


def _keep_eager(job_context: procrastinate_job_context.JobContext, result: AnyResult) -> AnyResult:
    connector = job_context.app.connector
    if isinstance(connector, InMemoryConnector):
        _eager_results.setdefault(connector, {})[int(result.id)] = result
    return result


def _eager_attempts(job_context: procrastinate_job_context.JobContext) -> _Attempts:
    connector = job_context.app.connector
    assert isinstance(connector, InMemoryConnector)
    assert job_context.job.id is not None
    before = _eager_results.get(connector, {}).get(job_context.job.id)
    if before is None:
        return _Attempts(None, None, [], [])
    return _Attempts(before.enqueued_at, before.started_at, before.errors, before.worker_ids)


def _eager_result(connector: InMemoryConnector, job_id: int) -> AnyResult:
    row = connector.jobs.get(job_id)
    kept = _eager_results.get(connector, {}).get(job_id)
    if row is None or kept is None:
        raise TaskResultDoesNotExist(str(job_id))
    status = STATUSES.get(row["status"], TaskResultStatus.FAILED)
    result = dataclasses.replace(kept, status=status)
    if kept.status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", kept.return_value)
    return result


def _errors(log: list[dict[str, Any]]) -> list[TaskError]:
    return [
        TaskError(
            exception_class_path=entry["error"].get("type", ""),
            traceback=entry["error"].get("traceback", ""),
        )
        for entry in log
        if entry.get("error")
    ]


def _worker_ids(log: list[dict[str, Any]]) -> list[str]:
    return [worker_label(entry.get("worker_id")) for entry in log]


def worker_label(worker_id: object) -> str:
    """How a result names the worker of an attempt: procrastinate's id of the worker, unique
    per worker process (its name, if it has one, is in the attempt's log entry)."""
    return str(worker_id) if worker_id is not None else "?"


def _running_result(
    task: AnyTask,
    job_context: procrastinate_job_context.JobContext,
    args: list[Any],
    kwargs: dict[str, Any],
    attempts: _Attempts,
) -> AnyResult:
    now = timezone.now()
    job = job_context.job
    return TaskResult(
        task=task,
        id=str(job.id),
        status=TaskResultStatus.RUNNING,
        enqueued_at=attempts.enqueued_at,
        started_at=attempts.first_started_at or now,
        last_attempted_at=now,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=task.backend,
        errors=attempts.errors,
        worker_ids=[
            *attempts.worker_ids,
            worker_label(job.worker_id),
        ],
    )


def _ended(result: AnyResult, exc: BaseException | None, value: Any = None) -> AnyResult:
    """The running attempt's result once it ended: with `exc` raised, or `value` returned."""
    now = timezone.now()
    if exc is None:
        ended = dataclasses.replace(result, status=TaskResultStatus.SUCCESSFUL, finished_at=now)
        object.__setattr__(ended, "_return_value", value)
        return ended
    error = TaskError(
        exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
    )
    return dataclasses.replace(
        result,
        status=TaskResultStatus.FAILED,
        finished_at=now,
        errors=[*result.errors, error],
    )


def send_robust(signal: Signal, result: AnyResult) -> None:
    """Send `signal` for `result`; a receiver that raises is logged, the job goes on."""
    _log_failures(signal, signal.send_robust(sender=ProcrastinateBackend, task_result=result))


async def asend_robust(signal: Signal, result: AnyResult) -> None:
    if _only_django_loggers(signal):
        # Django's own receivers only log: called here, on the event loop, rather than on
        # a thread (each thread hop costs an async no-op task a tenth of its run).
        send_robust(signal, result)
        return
    responses = await signal.asend_robust(sender=ProcrastinateBackend, task_result=result)
    _log_failures(signal, responses)


# Django's receivers of its task signals: each logs a line, and reads only the result's id,
# task path, status and backend.
DJANGO_LOGGERS = frozenset({log_task_enqueued, log_task_started, log_task_finished})


def _only_django_loggers(signal: Signal) -> bool:
    sync_receivers, async_receivers = signal._live_receivers(ProcrastinateBackend)
    return not async_receivers and all(r in DJANGO_LOGGERS for r in sync_receivers)


def _history_wanted(task: AnyTask, job_context: procrastinate_job_context.JobContext) -> bool:
    """Whether anything will look at the running attempt's earlier errors, workers and
    enqueue time: the task's context, or a receiver of the worker's signals other than
    Django's loggers (or eager mode, which keeps the results themselves, in memory). If
    not, the attempt skips the query that reads them."""
    if task.takes_context or isinstance(job_context.app.connector, InMemoryConnector):
        return True
    return not (_only_django_loggers(task_started) and _only_django_loggers(task_finished))


def _log_failures(signal: Signal, responses: list[tuple[Any, Any]]) -> None:
    names = {task_enqueued: "task_enqueued", task_started: "task_started"}
    for receiver, response in responses:
        if isinstance(response, BaseException):
            logger.error(
                "A receiver of %s failed: %r",
                names.get(signal, "task_finished"),
                receiver,
                exc_info=response,
            )


# --- reading a stored result -------------------------------------------------------------

RESULT_SQL: LiteralString = """
SELECT j.task_name, j.status, j.args, j.queue_name, j.priority, j.scheduled_at, j.worker_id,
       e.deferred_at, e.first_start, e.last_start, e.ended_at,
       r.return_value::text, r.attempts_log
FROM procrastinate_jobs j
CROSS JOIN LATERAL (
    SELECT min(at) FILTER (WHERE type = 'deferred') AS deferred_at,
           min(at) FILTER (WHERE type = 'started') AS first_start,
           max(at) FILTER (WHERE type = 'started') AS last_start,
           max(at) FILTER (WHERE type IN ('succeeded', 'failed', 'cancelled', 'aborted'))
               AS ended_at
    FROM procrastinate_events WHERE job_id = j.id
) e
LEFT JOIN jobs_jobresult r ON r.job_id = j.id
WHERE j.id = %(job_id)s
"""


def _stored_result(backend: ProcrastinateBackend, job_id: int, row: tuple[Any, ...]) -> AnyResult:
    (
        task_name, status, job_args, queue, priority, scheduled_at, worker_id,
        deferred_at, first_start, last_start, ended_at,
        return_value, log,
    ) = row  # fmt: skip
    task = find_django_task(task_name)
    if task is None:
        raise TaskResultDoesNotExist(str(job_id))
    if isinstance(job_args, str):
        job_args = json.loads(job_args)
    if isinstance(log, str):
        log = json.loads(log)
    log = list(log or [])
    args, kwargs = _call_arguments(job_args or {})
    worker_ids = _worker_ids(log)
    if status == "doing":
        worker_ids.append(worker_label(worker_id))
    django_status = STATUSES.get(status, TaskResultStatus.FAILED)
    finished = django_status in {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}
    result: AnyResult = TaskResult(
        task=_as_deferred(task, queue=queue, priority=priority, run_after=scheduled_at),
        id=str(job_id),
        status=django_status,
        enqueued_at=deferred_at,
        started_at=first_start,
        last_attempted_at=last_start,
        finished_at=(ended_at or last_start) if finished else None,
        args=args,
        kwargs=kwargs,
        backend=backend.alias,
        errors=_errors(log),
        worker_ids=worker_ids,
    )
    if django_status == TaskResultStatus.SUCCESSFUL and return_value is not None:
        object.__setattr__(result, "_return_value", json.loads(return_value))
    return result


def _as_deferred(task: AnyTask, **job: Any) -> AnyTask:
    """`task` with the queue, priority and time its job was deferred with, where Django's
    rules still allow them (a queue since removed from QUEUES does not)."""
    try:
        return dataclasses.replace(
            task, queue_name=job["queue"], priority=job["priority"], run_after=job["run_after"]
        )
    except (InvalidTask, InvalidTaskBackend, TypeError, ValueError):
        return task
