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

import asyncio
import os
from typing import Any

from django.tasks import Task as DjangoTask
from django.tasks import task
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.tasks import Task
from procrastinate.types import JSONDict

from example.models import Notification
from jobs.limits import limit

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


# Limited no-ops (jobs.limits): at most LIMITED_CONCURRENCY at once per key, over
# LIMITED_KEYS keys (`bench_jobs`' limited drain).
LIMITED_KEYS = 4
LIMITED_CONCURRENCY = 2


@limit("bench.per_key", concurrency=LIMITED_CONCURRENCY, key="k")
@app.task(name="bench.noop_limited", queue=QUEUE)
async def noop_limited(n: int, k: int) -> None:
    return None


# One job at a time: `hold_slot` keeps the slot while `noop_held` jobs wait behind it (the
# CPU of workers whose only jobs are held back).
@limit("bench.one_at_a_time", concurrency=1)
@app.task(name="bench.hold_slot", queue=QUEUE)
async def hold_slot(path: str) -> None:
    """Keep the limit's one slot until `path` exists (looking 5 times a second)."""
    while True:
        if await asyncio.to_thread(os.path.exists, path):
            return
        await asyncio.sleep(0.2)


@limit("bench.one_at_a_time", concurrency=1)
@app.task(name="bench.noop_held", queue=QUEUE)
async def noop_held(n: int) -> None:
    return None


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
    """The procrastinate task whose jobs run `kind`: one of TASKS, `noop_limited`, or for
    `django_<kind>` the task the Django task backend registered under the Django task's
    path. Its jobs are those `enqueue()` writes (the keyword arguments are the job's), so a
    benchmark can queue thousands with `batch_defer` before it measures how fast workers run
    them."""
    if kind in TASKS:
        return TASKS[kind]
    if kind == "noop_limited":
        return noop_limited
    return app.tasks[DJANGO_TASKS[kind].module_path]


def noop_kwargs(n: int) -> JSONDict:
    """The arguments of the n-th no-op job."""
    return {"n": n}


def limited_kwargs(n: int) -> JSONDict:
    """The arguments of the n-th limited no-op job: the keys in turn."""
    return {"n": n, "k": n % LIMITED_KEYS}
