"""A task that reports what its worker process installed (tests/test_conf.py).

Worker processes started by those tests load it through PROCRASTINATE_IMPORT_PATHS; the test
process imports it to defer it by its function.
"""

from __future__ import annotations

from procrastinate import JobContext
from procrastinate.contrib.django import app

from jobs.results import record_result


@app.task(name="tests.report_worker_extras", queue="tests", pass_context=True)
def report_worker_extras(context: JobContext) -> dict[str, object]:
    """How many result recorders wrap this job, and which connector the worker uses."""
    middleware = context.app.worker_defaults.get("worker_middleware", [])
    return {
        "recorders": sum(1 for function in middleware if function is record_result),
        "connector": type(context.app.connector).__name__,
    }
