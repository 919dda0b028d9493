"""Tasks with concurrency and rate limits that only tests/test_limits.py uses.

Worker processes load this module through PROCRASTINATE_IMPORT_PATHS (LIMIT_TASKS below);
the test process imports it too, so both know the same tasks and limits. Each run writes a
row to `test_limit_runs` (the table the test's fixture creates) when it starts and stamps
it when it ends, with PostgreSQL's clock: the test computes from those rows how many runs
of a key overlapped.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.db import connection
from django.tasks import task
from procrastinate import JobContext
from procrastinate.contrib.django import app

from jobs.limits import limit

QUEUE = "limits"
RUNS_TABLE = "test_limit_runs"
# The environment of a worker that runs these tasks.
LIMIT_TASKS = {"PROCRASTINATE_IMPORT_PATHS": "tests.limit_tasks"}

PER_CUSTOMER = 2
OVERALL = 3
RATE, PERIOD = 3, 1.0


def _start(job_id: int, task_name: str, key: object) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RUNS_TABLE} (job_id, task_name, key) VALUES (%s, %s, %s) RETURNING id",
            [job_id, task_name, str(key)],
        )
        return int(cursor.fetchone()[0])


def _end(run_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUNS_TABLE} SET ended_at = clock_timestamp() WHERE id = %s", [run_id]
        )


def _hold(hold: float, path: str | None) -> None:
    if path is None:
        time.sleep(hold)
        return
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


@limit("tests.per_customer", concurrency=PER_CUSTOMER, key="customer")
@app.task(name="tests.limited_per_customer", queue=QUEUE, pass_context=True)
def per_customer(
    context: JobContext, customer: int, hold: float = 0.0, path: str | None = None
) -> None:
    """At most PER_CUSTOMER at once per customer; runs for `hold` s or until `path` exists."""
    run = _start(context.job.id or 0, "per_customer", customer)
    _hold(hold, path)
    _end(run)


@limit("tests.overall", concurrency=OVERALL)
@app.task(name="tests.limited_overall", queue=QUEUE, pass_context=True)
async def overall(context: JobContext, n: int, hold: float = 0.0) -> None:
    """At most OVERALL at once, whatever the arguments (an async task)."""
    import asyncio

    from asgiref.sync import sync_to_async

    run = await sync_to_async(_start)(context.job.id or 0, "overall", "")
    await asyncio.sleep(hold)
    await sync_to_async(_end)(run)


@limit("tests.rate", rate=RATE, per=PERIOD, key="customer")
@app.task(name="tests.rate_limited", queue=QUEUE, pass_context=True)
def rate_limited(context: JobContext, customer: int, n: int) -> None:
    """At most RATE starts per PERIOD s per customer."""
    _end(_start(context.job.id or 0, "rate_limited", customer))


@app.task(name="tests.unlimited", queue=QUEUE, pass_context=True)
def unlimited(context: JobContext, n: int) -> None:
    _end(_start(context.job.id or 0, "unlimited", n))


# A Django task: its key may come as a positional argument (under "*args" in the job).
@limit("tests.django_per_customer", concurrency=1, key="customer")
@task()
def django_per_customer(customer: int, path: str) -> None:
    run = _start(0, "django_per_customer", customer)
    _hold(0.0, path)
    _end(run)
