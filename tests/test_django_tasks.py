"""Django's task API (`django.tasks`) on this job system: jobs.django_tasks.ProcrastinateBackend.

What Django's own suite checks of its backends (`tests/tasks/` in Django 6.1: validation
messages, `using()`, result mismatch, pickling, timestamps in order, attempts, errors with
class path and traceback, SystemExit recorded as failed, a return value that is not JSON,
the `django.tasks` log lines, the context's attempt and id), run here against PostgreSQL and
real worker processes; then what this backend adds: the caller's transaction, the async ORM,
retries with every attempt's error and worker, stalled-job recovery, LISTEN/NOTIFY,
priorities, the system checks, signal receivers that raise, jobs of tasks that do not exist.

The task functions are in tests/django_task_functions.py; a worker imports that module by
the dotted path of the task it meets, so the workers here need no extra setting.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import pickle
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.tasks import TaskResult, TaskResultStatus, default_task_backend, task, task_backends
from django.tasks.exceptions import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.tasks.signals import task_enqueued
from django.test import override_settings
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob
from procrastinate.exceptions import AlreadyEnqueued

from jobs import stalled
from jobs.django_tasks import ProcrastinateBackend, ProcrastinateTask
from jobs.models import JobResult
from jobs.processes import site_directory
from jobs.task_registry import TaskMissing
from jobs.testing import WorkerProcess, wait_until, worker_environment
from jobs.transaction import async_atomic
from tests import django_task_functions as functions
from tests.conftest import JobRuns
from tests.slow_tasks import quick

pytestmark = pytest.mark.django_db(transaction=True)

RunWorker = Callable[..., subprocess.CompletedProcess[str]]
StartWorker = Callable[..., WorkerProcess]

BACKEND = "jobs.django_tasks.ProcrastinateBackend"
# Worker processes that import it connect receivers of task_started/task_finished that raise.
RAISING_RECEIVERS = {
    "PROCRASTINATE_IMPORT_PATHS": "tests.django_task_functions,tests.django_task_receivers"
}


def job_row(result: TaskResult) -> ProcrastinateJob:
    return ProcrastinateJob.objects.get(id=int(result.id))


def procrastinate(task: Any) -> ProcrastinateTask:
    """`task` as this backend's class, which `using()` takes `lock=` and `queueing_lock=` on
    (django-stubs type `@task` as Django's own Task)."""
    assert isinstance(task, ProcrastinateTask)
    return task


def assert_no_job() -> None:
    assert list(ProcrastinateJob.objects.values_list("id", "task_name")) == []


def assert_times_in_order(result: TaskResult) -> None:
    assert result.enqueued_at is not None
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at <= result.started_at <= result.last_attempted_at
    assert result.last_attempted_at <= result.finished_at


def visible_elsewhere(job_id: int) -> bool:
    """Whether another database connection (a worker's, say) sees the job: committed."""
    found: list[bool] = []

    def look() -> None:
        try:
            found.append(ProcrastinateJob.objects.filter(id=job_id).exists())
        finally:
            connection.close()

    reader = threading.Thread(target=look)
    reader.start()
    reader.join(timeout=30)
    assert found, "the reader thread failed"
    return found[0]


# --- Configuration ----------------------------------------------------------------------


def test_backend__is_the_default_with_every_capability() -> None:
    backend = task_backends["default"]

    assert isinstance(backend, ProcrastinateBackend)
    assert default_task_backend.alias == "default"
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority
    assert isinstance(functions.noop, ProcrastinateTask)
    assert backend.check() == []


@pytest.mark.parametrize(
    ("params", "error_id"),
    [
        ({"OPTIONS": {"no_such_option": 1}}, "jobs.E010"),
        ({"QUEUES": "default"}, "jobs.E011"),  # a string, not a list of names
        ({"QUEUES": [42]}, "jobs.E011"),
        ({"QUEUES": ["default", ""]}, "jobs.E011"),
    ],
    ids=["unknown-option", "queues-a-string", "queue-not-a-string", "queue-empty"],
)
def test_backend_check__reports_a_misconfiguration(params: dict[str, Any], error_id: str) -> None:
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, **params}}):
        errors = task_backends["default"].check()
        assert error_id in [error.id for error in errors], errors

        with pytest.raises(SystemCheckError, match=re.escape(error_id)):
            call_command("check")


def test_backend_check__reports_a_retry_option_procrastinate_cannot_use() -> None:
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": {"retry": "often"}}}):
        errors = task_backends["default"].check()
        assert [error.id for error in errors if error.id.startswith("jobs.E")], errors

        with pytest.raises(SystemCheckError, match="retry"):
            call_command("check")


# --- Bad input: a clear exception, and no job row ---------------------------------------


def test_task__function_not_at_module_level_is_refused() -> None:
    def local_function() -> None:
        pass

    for function in (any, local_function):
        with pytest.raises(InvalidTask, match=re.escape("must be defined at a module level.")):
            task()(function)
    assert_no_job()


@pytest.mark.parametrize("priority", [-101, 101, 3.1, 1000])
def test_task__priority_out_of_range_is_refused(priority: float) -> None:
    message = re.escape("priority must be a whole number between -100 and 100.")
    with pytest.raises(InvalidTask, match=message):
        functions.noop.using(priority=priority)  # type: ignore[arg-type]
    with pytest.raises(InvalidTask, match=message):
        task(priority=priority)(functions.noop.func)  # type: ignore[call-overload]
    assert_no_job()


def test_task__unknown_queue_is_refused() -> None:
    with pytest.raises(InvalidTask, match=re.escape("Queue 'no-such-queue' is not valid")):
        functions.noop.using(queue_name="no-such-queue")
    assert_no_job()


def test_task__naive_run_after_is_refused() -> None:
    with pytest.raises(InvalidTask, match=re.escape("run_after must be an aware datetime.")):
        functions.noop.using(run_after=dt.datetime(2030, 1, 1))
    assert_no_job()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lock": ""}, "lock must be a non-empty string."),
        ({"lock": "a\x00b"}, "lock: "),
        ({"queueing_lock": "\ud800"}, "queueing_lock: "),
    ],
    ids=["empty-lock", "nul-in-lock", "surrogate-in-queueing-lock"],
)
def test_task_using__lock_procrastinate_cannot_store_is_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidTask, match=re.escape(message)):
        procrastinate(functions.noop).using(**options)
    assert_no_job()


def test_task__retry_procrastinate_cannot_use_is_refused() -> None:
    with pytest.raises(InvalidTask, match=re.escape("retry must be True, False, a number")):
        task(retry="often")(functions.noop.func)  # type: ignore[call-overload]
    assert_no_job()


def test_enqueue__run_after_out_of_range_once_in_utc_is_refused() -> None:
    # A valid aware datetime whose UTC time is past Python's year 9999: PostgreSQL would
    # store it, and no reader (worker, admin, get_result) could load it back.
    late = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-12)))

    with pytest.raises(ValueError, match="UTC"):
        functions.noop.using(run_after=late).enqueue()
    assert_no_job()


NOT_JSON_ARGUMENTS = [
    pytest.param((dt.datetime(2026, 1, 1, tzinfo=dt.UTC),), {}, TypeError, id="datetime"),
    pytest.param((object(),), {}, TypeError, id="object"),
    pytest.param((), {"value": {1, 2}}, TypeError, id="set"),
    pytest.param((b"\xff",), {}, ValueError, id="bytes-not-utf8"),
    pytest.param((float("nan"),), {}, ValueError, id="nan"),
    pytest.param((float("inf"),), {}, ValueError, id="infinity"),
    pytest.param((), {"value": -math.inf}, ValueError, id="minus-infinity"),
    pytest.param(("a\x00b",), {}, ValueError, id="nul"),
    pytest.param(("\ud800",), {}, ValueError, id="lone-surrogate"),
    pytest.param((), {"deep": {"list": [1, float("nan")]}}, ValueError, id="nested-nan"),
    pytest.param(([1, {"x": "\x00"}],), {}, ValueError, id="nested-nul"),
    pytest.param((), {"key\x00": 1}, ValueError, id="nul-in-a-key"),
    pytest.param((), {"value": {"\udc80": 1}}, ValueError, id="surrogate-in-a-nested-key"),
    # JSON would make the key a string: the task would get another value.
    pytest.param((), {"mapping": {1: "a"}}, TypeError, id="key-not-a-string"),
    pytest.param(([{"a": {(1, 2): "b"}}],), {}, TypeError, id="nested-tuple-key"),
    # jsonb writes these as integers (1e308 as another number): refused, as NaN is.
    pytest.param((1e16,), {}, ValueError, id="float-from-1e16"),
    pytest.param((), {"value": [-2.5e20]}, ValueError, id="big-negative-float"),
    pytest.param((1e308,), {}, ValueError, id="float-1e308"),
]


@pytest.mark.parametrize(("args", "kwargs", "error"), NOT_JSON_ARGUMENTS)
def test_enqueue__arguments_that_are_not_json_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as refused:
        functions.echo.enqueue(*args, **kwargs)

    assert str(refused.value)
    assert_no_job()


@pytest.mark.parametrize(("args", "kwargs", "error"), NOT_JSON_ARGUMENTS)
async def test_aenqueue__arguments_that_are_not_json_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await functions.echo.aenqueue(*args, **kwargs)

    assert not await ProcrastinateJob.objects.aexists()


def test_enqueue__refused_arguments_leave_the_transaction_usable() -> None:
    """Refused before PostgreSQL sees them: the caller's transaction goes on and commits."""
    with transaction.atomic():
        User.objects.create(username="kept")
        with pytest.raises(ValueError):  # noqa: PT011 (the exception is Django's)
            functions.echo.enqueue("a\x00b")
        result = functions.echo.enqueue("fine")

    assert User.objects.filter(username="kept").exists()
    assert list(ProcrastinateJob.objects.values_list("id", flat=True)) == [int(result.id)]


def test_enqueue__accepted_arguments_reach_the_task_unchanged(run_worker: RunWorker) -> None:
    """Whatever is accepted is what the worker passes and what get_result shows (or it is
    refused, with no row): a keyword argument named like the positional ones' key, keys
    that JSON turns into strings, values at JSON's edges."""
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, "two"), {"*args": ["not", "positional"]}),
        ((), {"*args": [9]}),
        ((2**70, 1e-7, -0.5, "🙂\u2028", [], {}), {"nested": [[{"a": [None, True]}]]}),
        # The largest float written without an exponent, and the smallest with one.
        ((9999999999999998.0, 5e-324), {}),
        ((b"bytes",), {"tuple": (1, 2)}),
    ]
    accepted: list[TaskResult] = []
    for args, kwargs in cases:
        try:
            accepted.append(functions.echo.enqueue(*args, **kwargs))
        except (TypeError, ValueError):
            assert ProcrastinateJob.objects.count() == len(accepted), (args, kwargs)
    assert accepted

    run_worker()

    for enqueued in accepted:
        found = functions.echo.get_result(enqueued.id)
        assert found.status == TaskResultStatus.SUCCESSFUL, found.errors
        assert (found.args, found.kwargs) == (enqueued.args, enqueued.kwargs)
        assert found.return_value == {"args": enqueued.args, "kwargs": enqueued.kwargs}


# --- using() and the job row ------------------------------------------------------------


def test_task_using__makes_a_new_task_with_the_changes() -> None:
    now = timezone.now()
    noop = procrastinate(functions.noop)

    later = noop.using(run_after=now)
    urgent = later.using(priority=10)
    locked = noop.using(lock="the-lock", queueing_lock="the-queueing-lock")

    assert (later.run_after, later.priority) == (now, 0)
    assert (urgent.run_after, urgent.priority) == (now, 10)
    assert (noop.run_after, noop.priority) == (None, 0)
    assert noop.using() == noop
    assert noop.using() is not noop
    assert isinstance(locked, ProcrastinateTask)
    assert (locked.lock, locked.queueing_lock) == ("the-lock", "the-queueing-lock")
    assert (noop.lock, noop.queueing_lock) == (None, None)
    fail_until = procrastinate(functions.fail_until)
    assert fail_until.using(priority=1).retry == fail_until.retry == 2
    with pytest.raises(InvalidTaskBackend, match="unknown"):
        noop.using(backend="unknown")


def test_enqueue__task_options_reach_the_job_row_and_read_back() -> None:
    run_after = (timezone.now() + dt.timedelta(hours=1)).replace(microsecond=0)
    configured = procrastinate(functions.echo).using(
        priority=7, run_after=run_after, lock="lock-a", queueing_lock="queueing-lock-a"
    )

    result = configured.enqueue(1, two=2)

    job = job_row(result)
    assert result.id == str(job.id)
    assert job.task_name == functions.echo.module_path == "tests.django_task_functions.echo"
    assert job.queue_name == "default"
    assert job.priority == 7
    assert job.scheduled_at == run_after
    assert (job.lock, job.queueing_lock) == ("lock-a", "queueing-lock-a")
    assert job.args == {"two": 2, "*args": [1]}
    assert job.status == "todo"
    found = functions.echo.get_result(result.id)
    assert found.task.priority == 7
    assert found.task.run_after == run_after
    assert found.task.queue_name == "default"
    assert (found.args, found.kwargs) == ([1], {"two": 2})


def test_enqueue__queueing_lock_refuses_a_second_waiting_job() -> None:
    only_one = procrastinate(functions.noop).using(queueing_lock="only-one")
    only_one.enqueue()

    with pytest.raises(AlreadyEnqueued):
        only_one.enqueue()

    assert ProcrastinateJob.objects.count() == 1


# --- Results before the worker ----------------------------------------------------------


def test_get_result__of_a_waiting_task_is_ready_and_equal_to_the_enqueued_one() -> None:
    result = functions.echo.enqueue(1, "two", [3], four={"five": 5})

    assert result.status == TaskResultStatus.READY
    assert result.id == str(job_row(result).id)
    assert result.enqueued_at is not None
    assert (result.started_at, result.last_attempted_at, result.finished_at) == (None, None, None)
    assert (result.args, result.kwargs) == ([1, "two", [3]], {"four": {"five": 5}})
    assert (result.errors, result.worker_ids, result.attempts) == ([], [], 0)
    assert result.is_finished is False
    assert result.task == functions.echo
    assert result.backend == "default"
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018

    found = functions.echo.get_result(result.id)
    assert found == result
    assert default_task_backend.get_result(result.id) == result
    result.refresh()
    assert result == found


def test_get_result__gives_the_enqueued_at_that_enqueue_gave() -> None:
    with transaction.atomic():
        User.objects.create(username="takes-a-moment")  # the transaction starts here
        result = functions.noop.enqueue()

    assert functions.noop.get_result(result.id).enqueued_at == result.enqueued_at


@pytest.mark.parametrize(
    "result_id", ["0", "-1", "987654321", str(2**63), "abc", "", "1.5", "1\x00", "٣"]
)
def test_get_result__unknown_id_does_not_exist(result_id: str) -> None:
    functions.noop.enqueue()  # the table is not empty

    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        functions.noop.get_result(result_id)


def test_get_result__of_a_procrastinate_job_does_not_exist() -> None:
    job_id = quick.defer(n=1)

    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(job_id))


async def test_aget_result__unknown_and_procrastinate_ids_do_not_exist() -> None:
    job_id = await quick.defer_async(n=1)

    for result_id in ("987654321", str(job_id), "abc"):
        with pytest.raises(TaskResultDoesNotExist):
            await default_task_backend.aget_result(result_id)
        with pytest.raises(TaskResultDoesNotExist):
            await functions.noop.aget_result(result_id)


def test_get_result__of_another_task_is_a_mismatch() -> None:
    result = functions.noop.enqueue()

    message = re.escape("Task does not match (received 'tests.django_task_functions.noop')")
    with pytest.raises(TaskResultMismatch, match=message):
        functions.calculate_meaning_of_life.get_result(result.id)


async def test_aget_result__of_another_task_is_a_mismatch() -> None:
    result = await functions.anoop.aenqueue()

    with pytest.raises(TaskResultMismatch, match="Task does not match"):
        await functions.noop.aget_result(result.id)


def test_get_result__of_a_cancelled_job_is_failed() -> None:
    result = functions.noop.enqueue()
    assert app.job_manager.cancel_job_by_id(int(result.id))

    found = functions.noop.get_result(result.id)

    assert found.status == TaskResultStatus.FAILED
    assert found.is_finished
    assert (found.started_at, found.last_attempted_at) == (None, None)
    assert found.finished_at is not None
    assert found.enqueued_at is not None
    assert found.enqueued_at <= found.finished_at
    assert (found.errors, found.attempts) == ([], 0)
    with pytest.raises(ValueError, match="Task failed"):
        found.return_value  # noqa: B018


def test_pickle__tasks_and_results_round_trip() -> None:
    tasks = [
        functions.noop,
        functions.anoop,
        functions.fail_until,
        functions.fail_then_wait,
        procrastinate(functions.noop).using(
            priority=3, lock="l", queueing_lock="q", run_after=timezone.now()
        ),
    ]
    for original in tasks:
        assert pickle.loads(pickle.dumps(original)) == original

    result = functions.echo.enqueue(1, k="v")
    assert pickle.loads(pickle.dumps(result)) == result


# --- A real worker: results, errors, context --------------------------------------------


def test_worker__runs_sync_and_async_tasks_to_their_results(run_worker: RunWorker) -> None:
    echoed = functions.echo.enqueue(1, [2, "three"], four={"five": None}, six="🙂")
    meaning = functions.calculate_meaning_of_life.enqueue()
    nothing = functions.noop.enqueue()
    async_nothing = functions.anoop.enqueue(1, two=3)
    tupled = functions.return_tuple.enqueue()
    results: list[TaskResult] = [echoed, meaning, nothing, async_nothing, tupled]

    run_worker()

    for result in results:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
        assert result.is_finished
        assert result.errors == []
        assert result.attempts == 1
        assert result.started_at == result.last_attempted_at
        assert_times_in_order(result)
        assert job_row(result).status == "succeeded"
    assert echoed.return_value == {
        "args": [1, [2, "three"]],
        "kwargs": {"four": {"five": None}, "six": "🙂"},
    }
    assert meaning.return_value == 42
    assert nothing.return_value is None
    assert async_nothing.return_value is None
    assert (async_nothing.args, async_nothing.kwargs) == ([1], {"two": 3})
    assert tupled.return_value == [1, "two"]
    # One worker ran them all.
    assert len({worker for result in results for worker in result.worker_ids}) == 1
    assert functions.echo.get_result(echoed.id) == echoed


def test_worker__failure_is_recorded_with_class_path_and_traceback(run_worker: RunWorker) -> None:
    cases = [
        (functions.failing_value_error, ValueError, "This task failed due to ValueError"),
        (functions.failing_system_exit, SystemExit, "This task failed due to SystemExit"),
        (functions.complex_exception, ValueError, "This task failed"),
    ]
    enqueued = [failing.enqueue() for failing, _, _ in cases]
    after = functions.calculate_meaning_of_life.enqueue()  # a SystemExit stops no worker

    run_worker()

    for (failing, exception, message), first in zip(cases, enqueued, strict=True):
        result = failing.get_result(first.id)
        assert result.status == TaskResultStatus.FAILED
        assert result.is_finished
        with pytest.raises(ValueError, match="Task failed"):
            result.return_value  # noqa: B018
        assert_times_in_order(result)
        assert result.attempts == 1
        assert len(result.errors) == 1
        error = result.errors[0]
        assert error.exception_class is exception
        assert error.exception_class_path == f"builtins.{exception.__name__}"
        assert error.traceback.startswith("Traceback (most recent call last):")
        assert error.traceback.endswith(f"{exception.__name__}: {message}\n"), error.traceback
        assert f"in {failing.name}" in error.traceback
        assert job_row(result).status == "failed"
        assert pickle.loads(pickle.dumps(result)) == result
    complex_error = functions.complex_exception.get_result(enqueued[2].id).errors[0]
    assert 'ValueError(ValueError("This task failed"))' in complex_error.traceback
    assert functions.calculate_meaning_of_life.get_result(after.id).return_value == 42


def test_worker__return_value_that_is_not_json_fails_the_task(run_worker: RunWorker) -> None:
    enqueued = {kind: functions.return_not_json.enqueue(kind) for kind in functions.NOT_JSON}

    run_worker()

    for kind, result in enqueued.items():
        result.refresh()
        assert result.status == TaskResultStatus.FAILED, kind
        assert [error.exception_class_path for error in result.errors] in (
            ["builtins.TypeError"],
            ["builtins.ValueError"],
        ), kind
        assert job_row(result).status == "failed", kind
    for kind in ("set", "datetime"):
        error = enqueued[kind].errors[0]
        assert error.exception_class is TypeError
        assert "Unsupported type" in error.traceback


def test_worker__context_gives_the_attempt_and_the_job_id(run_worker: RunWorker) -> None:
    result = functions.describe_context.enqueue(1, k="v")
    async_result = functions.adescribe_context.enqueue()

    run_worker()

    async_result.refresh()
    assert async_result.return_value == {
        "id": async_result.id,
        "attempt": 1,
        "main_thread": True,  # on the worker's event loop
    }

    result.refresh()
    seen = result.return_value
    assert seen["id"] == result.id == str(job_row(result).id)
    assert seen["attempt"] == 1
    assert seen["status"] == TaskResultStatus.RUNNING
    assert seen["worker_ids"] == result.worker_ids
    assert len(result.worker_ids) == 1
    assert result.started_at is not None
    assert seen["started_at"] == result.started_at.isoformat()
    assert (seen["args"], seen["kwargs"]) == ([1], {"k": "v"})
    assert seen["main_thread"] is False  # a sync task runs in one of the worker's threads


def test_worker__result_while_the_task_runs(start_worker: StartWorker, tmp_path: Path) -> None:
    start_worker()
    path = tmp_path / "go"
    result = functions.wait_for_file.enqueue(str(path))

    running = wait_until(
        lambda: (
            (found := functions.wait_for_file.get_result(result.id)).status
            == TaskResultStatus.RUNNING
            and found
        ),
        what="the task running",
    )
    assert running.started_at is not None
    assert running.last_attempted_at == running.started_at
    assert running.finished_at is None
    assert (running.attempts, running.errors) == (1, [])
    with pytest.raises(ValueError, match="Task has not finished yet"):
        running.return_value  # noqa: B018

    path.touch()
    done = wait_until(
        lambda: (found := functions.wait_for_file.get_result(result.id)).is_finished and found,
        what="the task finished",
    )
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value["path"] == str(path)
    assert len(done.worker_ids) == 1
    assert done.started_at == running.started_at
    assert_times_in_order(done)


def test_worker__an_attempts_worker_id_stays_the_same(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    path = tmp_path / "go"
    result = functions.wait_for_file.enqueue(str(path))
    running = wait_until(
        lambda: (
            (found := functions.wait_for_file.get_result(result.id)).status
            == TaskResultStatus.RUNNING
            and found
        ),
        what="the task running",
    )

    path.touch()
    done = wait_until(
        lambda: (found := functions.wait_for_file.get_result(result.id)).is_finished and found,
        what="the task finished",
    )

    assert done.return_value["worker_ids"] == running.worker_ids  # what the task saw
    assert done.worker_ids == running.worker_ids


def test_worker__an_aborted_task_is_failed(start_worker: StartWorker) -> None:
    start_worker("--abort-job-polling-interval", "0.1")
    result = functions.asleep.enqueue(600)
    wait_until(
        lambda: functions.asleep.get_result(result.id).status == TaskResultStatus.RUNNING,
        what="the task running",
    )

    assert app.job_manager.cancel_job_by_id(int(result.id), abort=True)

    done = wait_until(
        lambda: (found := functions.asleep.get_result(result.id)).is_finished and found,
        what="the task aborted",
    )
    assert done.status == TaskResultStatus.FAILED
    assert job_row(done).status == "aborted"
    assert (done.attempts, len(done.worker_ids)) == (1, 1)
    assert_times_in_order(done)
    with pytest.raises(ValueError, match="Task failed"):
        done.return_value  # noqa: B018


async def test_worker__aenqueue_aget_result_and_arefresh(run_worker: RunWorker) -> None:
    result = await functions.calculate_meaning_of_life.aenqueue()
    assert result.status == TaskResultStatus.READY
    assert await functions.calculate_meaning_of_life.aget_result(result.id) == result

    await sync_to_async(run_worker)()

    await result.arefresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result.attempts == 1
    found = await default_task_backend.aget_result(result.id)
    assert found == result


def test_worker__async_task_uses_the_async_orm_on_the_event_loop(run_worker: RunWorker) -> None:
    created = functions.create_user.enqueue("made-by-a-task")

    run_worker()

    created.refresh()
    assert created.status == TaskResultStatus.SUCCESSFUL, created.errors
    user = User.objects.get(username="made-by-a-task")
    assert created.return_value == {"pk": user.pk, "found": True, "main_thread": True}


# --- Logs and signals -------------------------------------------------------------------


def django_task_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " django.tasks: " in line]


def test_logs__worker_writes_django_tasks_lines_for_each_attempt(run_worker: RunWorker) -> None:
    succeeding = functions.noop.enqueue()
    failing = functions.failing_value_error.enqueue()

    output = run_worker().stderr

    lines = output.splitlines()
    ok, bad = (
        f"Task id={succeeding.id} path={functions.noop.module_path}",
        f"Task id={failing.id} path={functions.failing_value_error.module_path}",
    )
    assert f"INFO django.tasks: {ok} state=RUNNING" in output
    assert f"INFO django.tasks: {ok} state=SUCCESSFUL" in output
    assert f"INFO django.tasks: {bad} state=RUNNING" in output
    failed_line = next(
        index
        for index, line in enumerate(lines)
        if f"ERROR django.tasks: {bad} state=FAILED" in line
    )
    # Sent while the exception is handled: Django's receiver logs its traceback.
    assert lines[failed_line + 1] == "Traceback (most recent call last):"
    assert "ValueError: This task failed due to ValueError" in lines[failed_line + 1 :]
    assert all("NoneType" not in line for line in django_task_lines(output))


def test_logs__enqueue_writes_its_django_tasks_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="django.tasks"):
        result = functions.noop.enqueue()

    messages = [r.getMessage() for r in caplog.records if r.name == "django.tasks"]
    assert messages == [
        f"Task id={result.id} path={functions.noop.module_path} enqueued backend=default"
    ]


def test_signals__task_enqueued_is_sent_once_the_job_is_written() -> None:
    received: list[tuple[Any, TaskResult, bool]] = []

    def receiver(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
        written = ProcrastinateJob.objects.filter(id=int(task_result.id)).exists()
        received.append((sender, task_result, written))

    task_enqueued.connect(receiver)
    try:
        result = functions.noop.enqueue(1)
    finally:
        task_enqueued.disconnect(receiver)

    assert len(received) == 1
    sender, sent, written = received[0]
    assert sender is ProcrastinateBackend
    assert written
    assert sent.id == result.id
    assert sent.status == TaskResultStatus.READY
    assert sent.enqueued_at is not None
    assert sent.args == [1]


def test_signals__a_raising_task_enqueued_receiver_loses_no_job(
    run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
        raise RuntimeError("the task_enqueued receiver failed")

    task_enqueued.connect(fail)
    try:
        result = functions.calculate_meaning_of_life.enqueue()
    finally:
        task_enqueued.disconnect(fail)

    assert "the task_enqueued receiver failed" in caplog.text
    assert visible_elsewhere(int(result.id))
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


def test_signals__raising_worker_receivers_lose_no_job(run_worker: RunWorker) -> None:
    succeeding = functions.calculate_meaning_of_life.enqueue()
    failing = functions.failing_value_error.enqueue()

    output = run_worker(**RAISING_RECEIVERS).stderr

    succeeding.refresh()
    failing.refresh()
    assert succeeding.status == TaskResultStatus.SUCCESSFUL
    assert succeeding.return_value == 42
    assert succeeding.attempts == 1
    assert failing.status == TaskResultStatus.FAILED
    # The task's own error, not the receivers'.
    assert [error.exception_class for error in failing.errors] == [ValueError]
    for result in (succeeding, failing):
        assert f"the task_started receiver failed for {result.id}" in output
        assert f"the task_finished receiver failed for {result.id}" in output


# --- The caller's transaction -----------------------------------------------------------


class RolledBack(Exception):
    pass


def test_enqueue__in_the_callers_transaction(run_worker: RunWorker) -> None:
    def enqueue_then_fail() -> None:
        with transaction.atomic():
            User.objects.create(username="rolled-back")
            result = functions.noop.enqueue()
            assert job_row(result).status == "todo"
            assert not visible_elsewhere(int(result.id))  # not committed yet
            raise RolledBack

    with pytest.raises(RolledBack):
        enqueue_then_fail()
    assert_no_job()
    assert not User.objects.filter(username="rolled-back").exists()

    with transaction.atomic():
        User.objects.create(username="committed")
        committed = functions.noop.enqueue()
    outside = functions.noop.enqueue()  # autocommit: written at once

    assert visible_elsewhere(int(committed.id))
    assert visible_elsewhere(int(outside.id))
    run_worker()
    for result in (committed, outside):
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL


async def test_aenqueue__in_the_callers_async_atomic_block() -> None:
    async def enqueue_then_fail() -> None:
        async with async_atomic():
            await User.objects.acreate(username="rolled-back")
            await functions.noop.aenqueue()
            raise RolledBack

    with pytest.raises(RolledBack):
        await enqueue_then_fail()
    assert not await ProcrastinateJob.objects.aexists()
    assert not await User.objects.filter(username="rolled-back").aexists()

    async with async_atomic():
        await User.objects.acreate(username="committed")
        committed = await functions.noop.aenqueue()
    assert await sync_to_async(visible_elsewhere)(int(committed.id))
    assert await User.objects.filter(username="committed").aexists()


# --- Retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("succeed_on", "status", "failed_attempts"),
    [(3, TaskResultStatus.SUCCESSFUL, 2), (4, TaskResultStatus.FAILED, 3)],
    ids=["succeeds-on-the-last-retry", "fails-every-attempt"],
)
def test_retry__every_attempt_lists_its_error_and_worker(
    run_worker: RunWorker, succeed_on: int, status: TaskResultStatus, failed_attempts: int
) -> None:
    result = functions.fail_until.enqueue(succeed_on=succeed_on)

    run_worker()

    result.refresh()
    assert result.status == status
    assert result.attempts == 3
    assert [error.exception_class for error in result.errors] == [ValueError] * failed_attempts
    for attempt, error in enumerate(result.errors, start=1):
        assert error.traceback.endswith(f"ValueError: attempt {attempt} fails\n")
    assert len(result.worker_ids) == 3
    assert len(set(result.worker_ids)) == 1  # one worker ran every attempt
    assert_times_in_order(result)
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.started_at < result.last_attempted_at
    if status == TaskResultStatus.SUCCESSFUL:
        assert result.return_value == 3


def test_retry__a_job_waiting_for_its_retry_is_ready_with_its_error(
    run_worker: RunWorker,
) -> None:
    result = functions.fail_then_wait.enqueue()

    run_worker()  # the retry is an hour away: the worker leaves it

    result.refresh()
    assert job_row(result).status == "todo"
    assert result.status == TaskResultStatus.READY
    assert result.is_finished is False
    assert [error.exception_class for error in result.errors] == [ValueError]
    assert (result.attempts, len(result.worker_ids)) == (1, 1)
    assert result.started_at is not None
    assert result.last_attempted_at == result.started_at
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018


# --- Stalled-job recovery ---------------------------------------------------------------


def recover_in_a_fresh_process(job_ids: Iterable[int]) -> str:
    """Run `manage.py recover_stalled_jobs` in a process of its own, as the periodic task
    or an operator does: one that never imported the Django task's module."""
    wanted = set(job_ids)
    wait_until(
        lambda: (
            {r.job_id for r in stalled.recover_stalled_jobs(stalled_after=1, dry_run=True)}
            >= wanted
        ),
        what="the jobs stalled",
    )
    completed = subprocess.run(
        [sys.executable, "-m", "django", "recover_stalled_jobs", "--stalled-after", "1"],
        cwd=site_directory(),
        env=worker_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_stalled__killed_workers_task_is_recovered_and_succeeds_once(
    job_runs: JobRuns, start_worker: StartWorker, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    doomed = start_worker("--queues", "default", "--name", "doomed")
    result = functions.record_then_wait.enqueue(str(flag))
    job_id = int(result.id)
    wait_until(lambda: job_runs.count() == 1, what="the first run")
    running = functions.record_then_wait.get_result(result.id)
    assert running.status == TaskResultStatus.RUNNING
    doomed.stop(signal.SIGKILL)

    start_worker("--queues", "default", "--name", "survivor")
    flag.touch()
    output = recover_in_a_fresh_process([job_id])

    assert f"job {job_id} ({functions.record_then_wait.module_path}): retried" in output
    done = wait_until(
        lambda: (found := functions.record_then_wait.get_result(result.id)).is_finished and found,
        what="the job finished",
    )
    assert done.status == TaskResultStatus.SUCCESSFUL, done.errors
    runs = job_runs.of([job_id])[job_id]
    assert [run.attempt for run in runs] == [1, 2]
    assert runs[0].pid != runs[1].pid
    assert done.return_value == {"attempt": 2, "pid": runs[1].pid}
    assert done.attempts == 2
    assert done.worker_ids[0] == running.worker_ids[0]
    assert len(set(done.worker_ids)) == 2
    events = ProcrastinateEvent.objects.filter(job_id=job_id).values_list("type", flat=True)
    assert list(events).count("succeeded") == 1


# --- Pickup and order -------------------------------------------------------------------


def test_listen_notify__wakes_an_idle_worker(start_worker: StartWorker) -> None:
    # Polling every 10 minutes: a job runs within the wait below only if NOTIFY woke it.
    start_worker("--fetch-job-polling-interval", "600")
    first = functions.noop.enqueue()
    wait_until(lambda: functions.noop.get_result(first.id).is_finished, what="the first job")

    # The worker is now idle, waiting on LISTEN.
    second = functions.calculate_meaning_of_life.enqueue()

    done = wait_until(
        lambda: (
            (found := functions.calculate_meaning_of_life.get_result(second.id)).is_finished
            and found
        ),
        timeout=60,
        what="the second job, woken by NOTIFY",
    )
    assert done.return_value == 42


def test_priority__higher_first_stored_unchanged(run_worker: RunWorker) -> None:
    priorities = [-100, 0, 100, 5, -3, 5]
    results = [functions.noop.using(priority=priority).enqueue() for priority in priorities]
    assert [job_row(result).priority for result in results] == priorities

    run_worker()

    ids = [int(result.id) for result in results]
    started = ProcrastinateEvent.objects.filter(job_id__in=ids, type="started").order_by("id")
    by_priority = sorted(
        range(len(ids)), key=lambda index: (-priorities[index], index)
    )  # equal priorities: first enqueued, first run
    assert list(started.values_list("job_id", flat=True)) == [ids[i] for i in by_priority]


# --- Jobs whose task does not exist -----------------------------------------------------


def test_task_missing__fails_the_job_with_a_clear_error(
    run_worker: RunWorker, tmp_path: Path
) -> None:
    kept = tmp_path / "kept"
    kept.touch()
    missing: dict[str, dict[str, Any]] = {
        "tests.django_task_functions.no_such_task": {},
        "tests.no_such_module.some_task": {},
        # A function that is no Django task: never called, whatever its arguments.
        "os.remove": {"*args": [str(kept)]},
        "tests.django_task_functions.NOT_JSON": {},
    }
    job_ids = {
        name: app.configure_task(name, queue="default").defer(**kwargs)
        for name, kwargs in missing.items()
    }
    after = functions.calculate_meaning_of_life.enqueue()

    run_worker()

    assert kept.exists()
    for name, job_id in job_ids.items():
        assert ProcrastinateJob.objects.get(id=job_id).status == "failed", name
        result = JobResult.objects.get(job_id=job_id)
        assert result.exception_type == f"{TaskMissing.__module__}.TaskMissing", name
        assert name in result.exception_message
    assert functions.calculate_meaning_of_life.get_result(after.id).return_value == 42
