"""Tasks the workflow tests put in batches and chains: procrastinate tasks and Django
`@task` functions, sync and async.

Worker processes started by tests load this module through PROCRASTINATE_IMPORT_PATHS
(tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from django.tasks import task
from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app

from jobs import workflows


@app.task(name="tests.wf.double", queue="tests")
def double(n: int) -> int:
    return 2 * n


@app.task(name="tests.wf.adouble", queue="tests")
async def adouble(n: int) -> int:
    await asyncio.sleep(0)
    return 2 * n


@app.task(name="tests.wf.fail", queue="tests")
def fail(n: int) -> None:
    raise ValueError(f"job {n} fails")


# Fails on its first attempt, succeeds on its second: a retried job counts once.
@app.task(
    name="tests.wf.flaky", queue="tests", pass_context=True, retry=RetryStrategy(max_attempts=1)
)
def flaky(context: JobContext, n: int) -> int:
    if context.job.attempts == 0:
        raise RuntimeError("first attempt fails")
    return n


@app.task(name="tests.wf.wait", queue="tests", retry=RetryStrategy(max_attempts=2))
def wait(path: str, n: int = 0, timeout: float = 60) -> int:
    """Wait until `path` exists: a test holds the job running while it acts."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return n


# No retry: it fails for good as soon as `path` exists (a test ends it when it is ready).
@app.task(name="tests.wf.wait_then_fail", queue="tests")
def wait_then_fail(path: str, n: int = 0, timeout: float = 60) -> None:
    wait(path, n, timeout)
    raise ValueError(f"job {n} fails")


# No retry: it fails for good until the test creates `path`, then a retry by hand succeeds.
@app.task(name="tests.wf.fail_until", queue="tests")
def fail_until(path: str, n: int = 0) -> int:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist yet")
    return n


@app.task(name="tests.wf.fan_out", queue="tests")
def fan_out(count: int) -> int:
    """A job of a batch that adds `count` jobs to its own batch."""
    batch_id = workflows.current_batch_id()
    assert batch_id is not None, "not running in a batch"
    workflows.add_to_batch(batch_id, [workflows.job(double, n=n) for n in range(count)])
    return count


@app.task(name="tests.wf.callback", queue="tests")
def callback(batch: dict[str, Any], tag: str = "") -> dict[str, Any]:
    """A callback: returns what it was given, which the tests read from its result."""
    return {"batch": batch, "tag": tag}


@app.task(name="tests.wf.add", queue="tests")
def add(n: int, previous: int = 0) -> int:
    """A chain's step: adds `n` to the step before's result."""
    return previous + n


@task()
def django_square(n: int) -> int:
    return n * n


@task()
async def django_asquare(n: int, previous: int = 0) -> int:
    await asyncio.sleep(0)
    return n * n + previous


# A chain's step that fails for good until the test creates `path` (Django tasks do not
# retry here: the backend's OPTIONS set no retry).
@task()
def django_fail_until(path: str, previous: int = 0) -> int:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist yet")
    return previous + 1


@task()
def django_callback(batch: dict[str, Any]) -> int:
    return int(batch["succeeded"])


@task()
async def django_acallback(batch: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"total": batch["total"], "failed": batch["failed"]}
