"""Tasks only the tests use: they wait on a file so a test can watch a job while it runs,
or record each of their executions.

Worker processes started by tests load this module through PROCRASTINATE_IMPORT_PATHS;
the test process imports it from conftest.py so both see the same registry.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from django.db import connection
from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app

from jobs.results import report_progress


def _wait_for(context: JobContext, path: str, timeout: float) -> dict[str, str]:
    report_progress(0.5, "waiting for the file")
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if context.should_abort():
            from procrastinate.exceptions import JobAborted

            raise JobAborted("abort requested")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    report_progress(1.0, "done")
    return {"found": path}


# One retry allowed: a job of this task left stalled by a dead worker is retried.
@app.task(
    name="tests.wait_for_file",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=1),
)
def wait_for_file(context: JobContext, path: str, timeout: float = 30) -> dict[str, str]:
    """Report half progress, then wait until `path` exists (or an abort is requested)."""
    return _wait_for(context, path, timeout)


# No retry: a job of this task left stalled by a dead worker is marked failed.
@app.task(name="tests.wait_for_file_once", queue="tests", pass_context=True)
def wait_for_file_once(context: JobContext, path: str, timeout: float = 30) -> dict[str, str]:
    return _wait_for(context, path, timeout)


@app.task(name="tests.return_unserializable", queue="tests")
def return_unserializable() -> object:
    return {1, 2, 3}


# No retry: a run that fails (a database connection found broken, say) stays failed, so
# the fault tests see it instead of a quiet second attempt.
@app.task(name="tests.quick", queue="tests")
def quick(n: int) -> int:
    """A short job that writes through the worker thread's own Django connection."""
    report_progress(1.0, "done")
    return n


@app.task(name="tests.wait_quietly", queue="tests")
def wait_quietly(path: str, timeout: float = 30, give_up: str | None = None) -> dict[str, str]:
    """Wait until `path` exists without touching the database (`wait_for_file` does); fail
    with TimeoutError after `timeout` seconds, or as soon as `give_up` exists (a test's
    way to end an attempt when it is ready for it, whatever the machine's speed)."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline or (give_up is not None and Path(give_up).exists()):
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    return {"found": path}


@app.task(name="tests.start_then_wait", queue="tests")
def start_then_wait(started: str, path: str, timeout: float = 60) -> None:
    """Say it runs (create `started`), then wait without the database until `path` exists:
    a test counts the sync tasks running at once."""
    Path(started).touch()
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)


@app.task(name="tests.return_large", queue="tests")
def return_large(characters: int) -> str:
    return "x" * characters


@app.task(name="tests.sleep_async", queue="tests")
async def sleep_async(seconds: float) -> None:
    """An async task that waits: an abort cancels it."""
    await asyncio.sleep(seconds)


# One retry allowed: a run whose query is cut (the database restarted while it waited)
# fails like on any database error, and runs again.
@app.task(name="tests.query_around_wait", queue="tests", retry=RetryStrategy(max_attempts=1))
def query_around_wait(path: str, timeout: float = 30) -> None:
    """Query, wait until `path` exists, query again on the same connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


# --- Tasks that record every execution --------------------------------------------------
# Each run first writes a row to `test_job_runs`, a plain table with no unique key that the
# `job_runs` fixture creates: a job that ran twice has two rows, whatever procrastinate's
# events say. The row is committed at once (autocommit), before the job can end: a worker
# killed after it leaves the row of a run that happened.

RUNS_TABLE = "test_job_runs"


def _record_run(context: JobContext) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RUNS_TABLE} (job_id, pid, attempt) VALUES (%s, %s, %s)",
            [context.job.id, os.getpid(), context.job.attempts],
        )


# Retried on any error, four times: a run lost with its worker (stalled-job recovery puts
# it back) or cut by a database restart runs again.
@app.task(
    name="tests.record_run",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=4),
)
def record_run(context: JobContext, n: int, hold: float = 0.0) -> int:
    """Record this execution, then hold the worker's slot for `hold` seconds."""
    _record_run(context)
    time.sleep(hold)
    return n


# A lost worker is retried (stalled-job recovery retries whatever the exceptions say); the
# task's own failure is final.
@app.task(
    name="tests.record_then_wait",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=2, retry_exceptions={OSError}),
)
def record_then_wait(context: JobContext, path: str, fail: bool = False) -> None:
    """Record this execution, wait until `path` exists, then succeed, or fail if `fail`."""
    _record_run(context)
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    if fail:
        raise ValueError("failed, as asked")


# Retried at once, twice: its first two attempts fail, the third succeeds.
@app.task(
    name="tests.fail_twice",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=2),
)
def fail_twice(context: JobContext) -> dict[str, int]:
    attempt = context.job.attempts + 1  # procrastinate counts the attempts made before
    if attempt <= 2:
        raise ValueError(f"attempt {attempt} failed, as asked")
    return {"attempt": attempt}


@app.task(name="tests.fail_with_unstorable_message", queue="tests")
def fail_with_unstorable_message() -> None:
    # PostgreSQL's text holds neither: the outcome must be recorded all the same.
    raise ValueError("bad byte \x00 and half a pair \ud800")
