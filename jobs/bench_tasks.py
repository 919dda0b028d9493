"""Tasks for `manage.py bench_jobs`: no-op and small ORM work, sync and async.

They are not in `tasks.py` so that a site's workers never carry them: the benchmark loads
them into its own worker processes (PROCRASTINATE_IMPORT_PATHS=jobs.bench_tasks) and into
its own process by importing this module.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.tasks import Task

from example.models import Notification

QUEUE = "bench"


@app.task(name="bench.noop_sync", queue=QUEUE)
def noop_sync(n: int) -> None:
    return None


@app.task(name="bench.noop_async", queue=QUEUE)
async def noop_async(n: int) -> None:
    return None


@app.task(name="bench.orm_sync", queue=QUEUE)
def orm_sync(notification_id: int) -> None:
    """A typical small job: read one row, write one column."""
    notification = Notification.objects.get(pk=notification_id)
    notification.mark_sent(at=timezone.now())


@app.task(name="bench.orm_async", queue=QUEUE)
async def orm_async(notification_id: int) -> None:
    notification = await Notification.objects.aget(pk=notification_id)
    notification.sent_at = timezone.now()
    await notification.asave(update_fields=["sent_at"])


TASKS: dict[str, Task[Any, Any, Any]] = {
    "noop_sync": noop_sync,
    "noop_async": noop_async,
    "orm_sync": orm_sync,
    "orm_async": orm_async,
}
