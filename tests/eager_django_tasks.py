"""Django tasks for the tests of jobs.testing's eager mode with Django's task API. No worker
imports this module at start: a worker finds it from the task's path."""

from __future__ import annotations

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
