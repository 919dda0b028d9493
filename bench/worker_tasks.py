"""Tasks for `manage.py bench_jobs`: no-op and small ORM work, sync and async, and no-op
tasks on Django's task API (`django.tasks`) to compare with procrastinate's own.

Not in a `tasks.py`: procrastinate imports the `tasks` module of every installed app into
every process of the site, and the site's dashboard, admin filters and API would then list
the `bench` queue and its tasks. Only the benchmark's processes load these: its worker
processes through PROCRASTINATE_IMPORT_PATHS=bench.worker_tasks (bench.workers), the
benchmark's own process and web server by importing this module. The procrastinate tasks'
names are explicit (`bench.*`), so that moving this module changes none; the Django tasks'
are their dotted paths, as always (`bench.worker_tasks.django_noop_sync`).
"""

from __future__ import annotations

from typing import Any

from django.tasks import Task as DjangoTask
from django.tasks import task
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


# The same no-ops on Django's task API (its queue is in the TASKS setting's QUEUES).
@task(queue_name=QUEUE)
def django_noop_sync(n: int) -> None:
    return None


@task(queue_name=QUEUE)
async def django_noop_async(n: int) -> None:
    return None


@app.task(name="bench.batch_done", queue=QUEUE)
def batch_done(batch: dict[str, Any]) -> int:
    """The callback of the benchmark's batches: it only says how many jobs succeeded."""
    return int(batch["succeeded"])


# The kinds `bench_jobs --kinds` offers.
TASKS: dict[str, Task[Any, Any, Any]] = {
    "noop_sync": noop_sync,
    "noop_async": noop_async,
    "orm_sync": orm_sync,
    "orm_async": orm_async,
}


# Django's no-ops, by the kind `bench.workers.drain` queues.
DJANGO_TASKS: dict[str, DjangoTask[Any, Any]] = {
    "django_noop_sync": django_noop_sync,
    "django_noop_async": django_noop_async,
}


def job_task(kind: str) -> Task[Any, Any, Any]:
    """The procrastinate task whose jobs run `kind`: one of TASKS, or for `django_<kind>`
    the task the Django task backend registered under the Django task's path. Its jobs are
    those `enqueue()` writes (the keyword arguments are the job's), so a benchmark can queue
    thousands with `batch_defer` before it measures how fast workers run them."""
    if kind in TASKS:
        return TASKS[kind]
    return app.tasks[DJANGO_TASKS[kind].module_path]


def noop_kwargs(n: int) -> JSONDict:
    """The arguments of the n-th no-op job."""
    return {"n": n}
