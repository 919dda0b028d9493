"""Django tasks (`django.tasks.task`) that only tests/test_django_tasks.py uses.

Written the way a site writes them: module-level functions decorated with Django's `@task`,
run by this project's backend (`jobs.django_tasks.ProcrastinateBackend`). A worker process
that meets one of their jobs imports this module by the task's dotted path (its
`module_path`), so nothing has to list it. Several mirror the tasks of Django's own test
suite (`tests/tasks/tasks.py`), to run Django's checks against this backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.tasks import TaskContext, task
from procrastinate import RetryStrategy

from tests.slow_tasks import RUNS_TABLE


@task()
def noop(*args: Any, **kwargs: Any) -> None:
    return None


@task()
async def anoop(*args: Any, **kwargs: Any) -> None:
    return None


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What the worker passed to the function, to compare with what was enqueued."""
    return {"args": list(args), "kwargs": kwargs}


@task()
def failing_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


# Return values PostgreSQL's jsonb cannot keep, or that are not JSON at all.
NOT_JSON: dict[str, Any] = {
    "set": {1, 2, 3},
    "datetime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "nan": float("nan"),
    "infinity": float("inf"),
    "nul": "a\x00b",
    "lone_surrogate": "\ud800",
    "nested_nan": {"values": [1.0, float("nan")]},
    "key_not_a_string": {1: "a"},
    "big_float": 1e20,
}


@task()
def return_not_json(kind: str) -> Any:
    return NOT_JSON[kind]


@task()
def return_tuple() -> tuple[int, str]:
    """A tuple: JSON makes it a list, as Django's backends do."""
    return (1, "two")


@task(takes_context=True)
def describe_context(context: TaskContext, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The context the worker gave, as JSON."""
    result = context.task_result
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": str(result.status),
        "started_at": result.started_at.isoformat() if result.started_at else None,
        "worker_ids": list(result.worker_ids),
        "args": result.args,
        "kwargs": result.kwargs,
        "main_thread": threading.current_thread() is threading.main_thread(),
    }


@task(takes_context=True)
async def adescribe_context(context: TaskContext) -> dict[str, Any]:
    """The context an async task gets, on the worker's event loop."""
    return {
        "id": context.task_result.id,
        "attempt": context.attempt,
        "main_thread": threading.current_thread() is threading.main_thread(),
    }


@task()
async def asleep(seconds: float) -> None:
    """An async task that waits: an abort cancels it."""
    await asyncio.sleep(seconds)


@task()
async def create_user(username: str) -> dict[str, Any]:
    """Writes and reads through Django's async ORM, on the worker's event loop."""
    user = await User.objects.acreate(username=username)
    found = await User.objects.filter(username=username).aexists()
    return {
        "pk": user.pk,
        "found": found,
        "main_thread": threading.current_thread() is threading.main_thread(),
    }


# Retried twice (three attempts at most), at once. (django-stubs' `task` does not know the
# keyword arguments Django 6.1 passes on to the backend's task class, such as `retry`.)
@task(takes_context=True, retry=2)  # type: ignore[call-overload]
def fail_until(context: TaskContext, succeed_on: int) -> int:
    """Fail every attempt before the `succeed_on`-th, then return the attempt's number."""
    if context.attempt < succeed_on:
        raise ValueError(f"attempt {context.attempt} fails")
    return context.attempt


# Retried once, an hour later: a one-shot worker leaves the job waiting for its retry.
@task(retry=RetryStrategy(max_attempts=1, wait=3600))  # type: ignore[call-overload]
def fail_then_wait() -> None:
    raise ValueError("the first attempt fails; the retry waits an hour")


def _wait_for(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)


@task(takes_context=True)
def wait_for_file(context: TaskContext, path: str, timeout: float = 60) -> dict[str, Any]:
    """Run until `path` exists (a test watches the job while it runs); return the workers
    the context named."""
    _wait_for(path, timeout)
    return {"path": path, "worker_ids": list(context.task_result.worker_ids)}


# Retried once: a job of this task left stalled by a dead worker is retried.
@task(takes_context=True, retry=1)  # type: ignore[call-overload]
def record_then_wait(context: TaskContext, path: str) -> dict[str, Any]:
    """Record this execution in the `job_runs` fixture's table (committed at once, so a
    killed worker leaves the row of a run that happened), then wait until `path` exists."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RUNS_TABLE} (job_id, pid, attempt) VALUES (%s, %s, %s)",
            [int(context.task_result.id), os.getpid(), context.attempt],
        )
    _wait_for(path, 60)
    return {"attempt": context.attempt, "pid": os.getpid()}
