"""How procrastinate's worker runs this project's tasks.

`PROCRASTINATE_ON_APP_READY` points at `on_app_ready`, which adds worker-wide middleware to
every worker the app starts (`manage.py procrastinate worker` included): the result
recorder of `jobs.results`, and connection hygiene around each task.
It also gives workers the connector of `jobs.connector`, which rides out a database restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

if TYPE_CHECKING:
    import procrastinate
    from procrastinate import job_context
    from procrastinate import worker as procrastinate_worker


def close_connections_sync(
    call_next: Callable[[], Any],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Treat each sync job like a request: drop unusable or expired connections around it.

    Sync tasks run in worker threads, each with its own Django connection. Without this,
    a connection broken by a database restart would fail every later job on that thread,
    and CONN_MAX_AGE would never be honoured.
    """
    close_old_connections()
    try:
        return call_next()
    finally:
        close_old_connections()


async def close_connections_async(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """The same for async tasks, whose ORM calls share one thread-sensitive thread."""
    await sync_to_async(close_old_connections)()
    try:
        return await call_next()
    finally:
        await sync_to_async(close_old_connections)()


def on_app_ready(app: procrastinate.App) -> None:
    from procrastinate.contrib.django.django_connector import DjangoConnector

    from jobs.connector import ReconnectingDjangoConnector
    from jobs.results import record_result

    # Workers that survive a database restart (see jobs.connector). The app was built
    # with procrastinate's plain Django connector a moment ago; nothing has used it yet.
    if type(app.connector) is DjangoConnector:
        reconnecting = ReconnectingDjangoConnector(alias=app.connector.alias)
        app.connector = reconnecting
        app.job_manager.connector = reconnecting

    # A new dict: the current one may be the PROCRASTINATE_WORKER_DEFAULTS setting itself.
    app.worker_defaults = {
        **app.worker_defaults,
        # Wraps every job, sync or async, on the worker's event loop.
        "worker_middleware": [record_result, *app.worker_defaults.get("worker_middleware", [])],
        "task_middleware": [
            close_connections_sync,
            close_connections_async,
            *app.worker_defaults.get("task_middleware", []),
        ],
    }
