"""The Celery app that `bench_jobs` drains beside this project's workers (bench.celery_drain):
one no-op task, and a record of each run of it that the drain is timed and checked with.

Its worker is `celery -A bench.celery_app worker ...`, with the broker's URL (the benchmark's
own throwaway Redis) in BENCH_CELERY_BROKER and a folder for the records in
BENCH_CELERY_RECORDS. It runs in the environment of this project's workers, Django settings
included, so Celery installs its Django fixup as it does on a Django site (django.setup() in
the worker, the database connections checked around each task): the row measures Celery as a
Django team runs it. No result backend (as `task_ignore_result` says), acks by default (early).
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

BROKER_ENV = "BENCH_CELERY_BROKER"
RECORDS_ENV = "BENCH_CELERY_RECORDS"
NOOP = "bench.celery_noop"
# One run of the no-op task: its argument `n`, then its start and end (time.time(), the same
# clock in every process of the machine).
RECORD = struct.Struct("<qdd")


def make_app(broker_url: str) -> Celery:
    """The benchmark's Celery app on `broker_url`: the worker's (below), and the one the
    benchmark queues tasks with, made for the Redis it started."""
    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        # Celery 5 warns at each start until this is said; retrying is its default anyway.
        broker_connection_retry_on_startup=True,
    )

    # Not shared: each app made here has its own, and Celery would warn of a second one.
    @app.task(name=NOOP, shared=False)
    def noop(n: int) -> None:
        return None

    return app


app = make_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))


# Each run is timed by Celery's own signals around the task, in the pool process that runs it,
# and written there with one unbuffered write to a file of that process: a few microseconds,
# against the millisecond or so Celery spends on a task. Counting in Redis instead (an INCR
# and the times from the task) would add a round trip to every task, which procrastinate's
# side does not pay for its `started` and `succeeded` events (its triggers write them within
# the statements the worker sends anyway), and would slow Celery's row by the benchmark's own
# doing. The records also name each task's `n`, so the drain sees a task that ran twice or
# never, not only a count.
_started = 0.0
_records: tuple[int, int] | None = None  # (pid, file descriptor): each pool process its own


def _record_file() -> int:
    global _records
    pid = os.getpid()
    if _records is None or _records[0] != pid:
        path = os.path.join(os.environ[RECORDS_ENV], f"{pid}.bin")
        _records = (pid, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return _records[1]


@task_prerun.connect
def _task_started(sender: Any = None, **extra: Any) -> None:
    global _started
    if getattr(sender, "name", None) == NOOP:
        _started = time.time()


@task_postrun.connect
def _task_ended(sender: Any = None, kwargs: Any = None, **extra: Any) -> None:
    if getattr(sender, "name", None) == NOOP and RECORDS_ENV in os.environ:
        os.write(_record_file(), RECORD.pack(int(kwargs["n"]), _started, time.time()))
