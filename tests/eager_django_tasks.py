"""Django tasks for the tests of jobs.testing's fixtures with Django's task API (workers
import this module through PROCRASTINATE_IMPORT_PATHS: tests/conftest.py)."""

from __future__ import annotations

from django.db import transaction
from django.tasks import TaskContext, task


@task
def multiply(a: int, b: int) -> int:
    return a * b


# django-stubs do not know the options Django forwards to the backend (retry, lock...).
@task(takes_context=True, retry=2)  # type: ignore[call-overload]
def fail_first_attempt(context: TaskContext) -> int:
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return context.attempt


@task
def enqueue_then_fail() -> None:
    # A task's own transaction: the job it enqueues must go when the transaction does.
    with transaction.atomic():
        multiply.enqueue(1, 1)
        raise RuntimeError("rolled back, with the job it enqueued")
