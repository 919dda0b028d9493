"""Tasks with time limits, for tests/test_time_limits.py.

Worker processes load this module through PROCRASTINATE_IMPORT_PATHS (the tests pass it);
the test process imports it too, so both see the same registry. Each run writes a row to
the `job_runs` fixture's table first (tests.slow_tasks), so a test counts executions.
"""

from __future__ import annotations

import asyncio
import socket
import time

from asgiref.sync import sync_to_async
from django.tasks import task
from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app

from jobs.time_limits import time_limit
from tests.slow_tasks import _record_run

# Longer than any test waits: a task that is not stopped fails the test by its timeout, not
# by ending on its own.
RUNAWAY_SECONDS = 120


@time_limit(1)
@app.task(
    name="tests.limited_async_sleep",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=1),
)
async def limited_async_sleep(context: JobContext) -> None:
    """Sleeps past its limit of 1 s, on every attempt (one retry)."""
    await sync_to_async(_record_run)(context)
    await asyncio.sleep(RUNAWAY_SECONDS)


@time_limit(1)
@app.task(
    name="tests.limited_busy_loop",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=1),
)
def limited_busy_loop(context: JobContext) -> None:
    """Spins in Python past its limit of 1 s, on every attempt (one retry)."""
    _record_run(context)
    deadline = time.monotonic() + RUNAWAY_SECONDS
    while time.monotonic() < deadline:
        pass


@time_limit(1)
@app.task(
    name="tests.limited_socket_read",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=1),
)
def limited_socket_read(context: JobContext, path: str) -> str:
    """Connects to the test's Unix socket at `path` and reads one byte, with no timeout:
    blocked in C until the test sends it, where no soft stop reaches."""
    _record_run(context)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        return connection.recv(1).decode()


@time_limit(30)
@app.task(name="tests.sleep_within_own_limit", queue="tests", pass_context=True)
async def sleep_within_own_limit(context: JobContext, seconds: float) -> str:
    """Declares 30 s: runs past a site's shorter JOBS_TIME_LIMIT."""
    await sync_to_async(_record_run)(context)
    await asyncio.sleep(seconds)
    return "slept"


@app.task(name="tests.sleep_without_own_limit", queue="tests", pass_context=True)
async def sleep_without_own_limit(context: JobContext, seconds: float) -> str:
    """Declares no limit: the site's JOBS_TIME_LIMIT applies."""
    await sync_to_async(_record_run)(context)
    await asyncio.sleep(seconds)
    return "slept"


@task(time_limit=1)  # type: ignore[call-overload]
def django_busy_loop() -> None:
    """A Django task that spins past its limit of 1 s (no retry: the backend's default)."""
    deadline = time.monotonic() + RUNAWAY_SECONDS
    while time.monotonic() < deadline:
        pass
