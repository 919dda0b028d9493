"""Django's database connections around async tasks, without thread hops when there are none.

procrastinate's Django app wraps every async task in its `close_db_connections_async`, which
runs `close_old_connections()` (and `reset_queries()`) before and after the task in Django's
thread-sensitive thread, where the async ORM keeps its connections: two hops to that thread
and back per job, paid by tasks that never touch the database as well (measured: about
0.2 ms of worker CPU per async no-op job, see the CHANGELOG).

`close_db_connections_async` here does the same cleanup in the same thread, but only when
that thread may hold a connection: one was opened since the last cleanup (Django's
`connection_created` signal, in any thread), or the last cleanup left one open (a persistent
connection, CONN_MAX_AGE > 0). A task that uses the ORM gets the cleanup before and after
it as before; the next ones skip it once its connection is closed. Sync tasks keep
procrastinate's `close_db_connections`, which runs in the task's own thread, without a hop.

Installed by `jobs.worker.install_worker_extras` in place of procrastinate's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections, reset_queries
from django.db.backends.signals import connection_created

if TYPE_CHECKING:
    from procrastinate import job_context, worker
    from procrastinate.middleware import AsyncCallNext

# Whether the thread-sensitive thread may hold a connection. True until a cleanup there
# says otherwise: a connection opened before this module was loaded is not missed.
_may_hold_connection = True


def _connection_opened(**kwargs: Any) -> None:
    global _may_hold_connection
    # Any thread's: a sync task's thread as well, which costs the next async job a cleanup
    # it did not need, never a missed one.
    _may_hold_connection = True


connection_created.connect(_connection_opened, dispatch_uid="jobs.task_connections")


def _note_connections() -> None:
    """Record whether this thread (the thread-sensitive one) still holds a connection."""
    global _may_hold_connection
    _may_hold_connection = any(
        alias.connection is not None for alias in connections.all(initialized_only=True)
    )


def _cleanup_before() -> None:
    # As procrastinate's: drop a persistent connection that died while the thread was idle.
    close_old_connections()
    _note_connections()


def _cleanup_after() -> None:
    close_old_connections()
    reset_queries()  # DEBUG's query log, kept on the connection object even once closed
    _note_connections()


_cleanup_before_async = sync_to_async(_cleanup_before, thread_sensitive=True)
_cleanup_after_async = sync_to_async(_cleanup_after, thread_sensitive=True)


async def close_db_connections_async(
    call_next: AsyncCallNext,
    context: job_context.JobContext,
    worker: worker.Worker,
) -> Any:
    """Task middleware of async tasks: procrastinate's connection cleanup around the task,
    skipped when the thread-sensitive thread holds no connection (module docstring)."""
    if _may_hold_connection:
        await _cleanup_before_async()
    try:
        return await call_next()
    finally:
        if _may_hold_connection:
            await _cleanup_after_async()
