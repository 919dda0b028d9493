"""A task only tests/test_prefetch.py uses: it signals its own worker process.

Worker processes load this module through PROCRASTINATE_IMPORT_PATHS (the test's
PREFETCH_TASKS); the test process imports it to defer it by its function.
"""

from __future__ import annotations

import os

from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app


# One retry: its run in the worker it killed is retried by stalled-job recovery.
@app.task(
    name="tests.signal_own_worker",
    queue="tests",
    pass_context=True,
    retry=RetryStrategy(max_attempts=1),
)
async def signal_own_worker(context: JobContext, signal_number: int) -> None:
    """Send `signal_number` to the worker process that runs this job, at its first attempt
    only; async, so that it runs on the worker's event loop, between two of its fetches."""
    if context.job.attempts == 0:
        os.kill(os.getpid(), signal_number)
