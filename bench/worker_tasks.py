"""Tasks for `manage.py bench_jobs`: no-op and small ORM work, sync and async.

Not in a `tasks.py`: procrastinate imports the `tasks` module of every installed app into
every process of the site, and the site's dashboard, admin filters and API would then list
the `bench` queue and its tasks. Only the benchmark's processes load these: its worker
processes through PROCRASTINATE_IMPORT_PATHS=bench.worker_tasks (bench.workers), the
benchmark's own process and web server by importing this module. Their names are
explicit (`bench.*`), so that moving this module changes none.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.tasks import Task
from procrastinate.types import JSONDict

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


def noop_kwargs(n: int) -> JSONDict:
    """The arguments of the n-th no-op job."""
    return {"n": n}
