"""Django's connections around async tasks (jobs/task_connections.py): the cleanup the app's
workers run around each async task, with the real thread-sensitive thread and database.

The thread-sensitive thread is asgiref's own executor, swapped for one that counts what is
sent to it: a hop there is what the cleanup costs a job.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connection, connections
from procrastinate.contrib.django import app

from example.models import Notification

pytestmark = pytest.mark.django_db(transaction=True)

Cleanup = Callable[..., Awaitable[Any]]


class CountingExecutor(ThreadPoolExecutor):
    """asgiref's thread-sensitive thread, counting the calls it runs."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def sensitive_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingExecutor]:
    executor = CountingExecutor()
    monkeypatch.setattr(SyncToAsync, "single_thread_executor", executor)
    yield executor
    executor.submit(connections.close_all).result()  # before the test database goes
    executor.shutdown()


def async_task_cleanup() -> Cleanup:
    """The async task middleware the app's workers run around every async task."""
    [cleanup] = [
        middleware
        for middleware in app.worker_defaults["task_middleware"]
        if inspect.iscoroutinefunction(middleware)
    ]
    return cleanup


async def run_task(cleanup: Cleanup, task: Callable[[], Awaitable[Any]]) -> Any:
    # Neither cleanup reads the job's context or its worker.
    return await cleanup(task, None, None)


async def no_queries() -> None:
    return None


async def one_query() -> int:
    return await Notification.objects.acount()


@sync_to_async  # in the thread-sensitive thread, where the async ORM keeps its connection
def holds_a_connection() -> bool:
    return connection.connection is not None


async def test_task_connections__an_async_task_without_queries_costs_no_thread_hop(
    sensitive_thread: CountingExecutor,
) -> None:
    cleanup = async_task_cleanup()
    await run_task(cleanup, no_queries)  # the first one may look: nothing is known yet
    before = sensitive_thread.calls

    for _ in range(3):
        await run_task(cleanup, no_queries)

    assert sensitive_thread.calls == before


async def test_task_connections__a_task_that_queries_gets_its_connection_closed(
    sensitive_thread: CountingExecutor,
) -> None:
    cleanup = async_task_cleanup()
    await run_task(cleanup, no_queries)

    assert await run_task(cleanup, one_query) == 0

    assert not await holds_a_connection()  # CONN_MAX_AGE = 0: closed after the task
    after_query = sensitive_thread.calls
    await run_task(cleanup, no_queries)
    assert sensitive_thread.calls == after_query  # and the next task skips the cleanup again


async def test_task_connections__a_persistent_connection_is_checked_around_every_task(
    sensitive_thread: CountingExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection kept open (CONN_MAX_AGE > 0) may die while the thread is idle: every
    async task then gets the cleanup before and after it, as procrastinate's does."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    cleanup = async_task_cleanup()
    await run_task(cleanup, one_query)
    assert await holds_a_connection()
    before = sensitive_thread.calls

    await run_task(cleanup, no_queries)

    assert sensitive_thread.calls == before + 2
    assert await holds_a_connection()  # healthy and not expired: kept
