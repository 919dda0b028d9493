"""Tasks callable over HTTP that only the job API's tests use.

`tests.echo` and `tests.aecho` take any JSON value and return it, so that a test can send a
value through the API, a real worker and the status API, and compare what comes back.
Worker processes load this module through PROCRASTINATE_IMPORT_PATHS; the tests import it.
"""

from __future__ import annotations

from typing import Any

from procrastinate.contrib.django import app

from jobs.http_tasks import callable_over_http

API_TASKS = {"PROCRASTINATE_IMPORT_PATHS": "tests.api_tasks"}


# No retry: a job that fails stays failed, so a one-shot worker leaves no job waiting.
@callable_over_http
@app.task(name="tests.echo", queue="tests")
def echo(value: Any = None) -> Any:
    return value


@callable_over_http
@app.task(name="tests.aecho", queue="tests")
async def aecho(value: Any = None) -> Any:
    return value


@callable_over_http
@app.task(name="tests.one_at_a_time", queue="tests", queueing_lock="tests.one_at_a_time")
def one_at_a_time() -> None:
    """A task whose definition allows one waiting job at a time."""


@callable_over_http
@app.task(name="tests.square", queue="tests")
def square(n: int) -> int:
    return n * n


@callable_over_http
@app.task(name="tests.fail", queue="tests")
def fail(n: int = 0) -> None:
    raise ValueError(f"job {n} fails")


@callable_over_http
@app.task(name="tests.batch_done", queue="tests")
def batch_done(batch: dict[str, Any], tag: str = "") -> dict[str, Any]:
    """A batch's callback over HTTP: returns what it got, which the tests read back."""
    return {"batch": batch, "tag": tag}
