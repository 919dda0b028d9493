"""Measurements with real worker processes, run inside a process whose default database
is the benchmark's scratch database (`manage.py bench_jobs`):

- drain throughput: N queued jobs, a worker setup empties the queue; from the first job's
  start to the last job's end (process start-up is not counted);
- pickup latency: idle workers, one job at a time, from the job's `deferred` event to the
  start of its attempt as its worker recorded it (see _pickup_seconds);
- pickup latency under load: the same, for jobs of a higher priority deferred at a steady
  pace while the workers drain a backlog;
- soak: a long run with finished jobs deleted, reporting worker memory and table sizes;
- held-back CPU: the CPU of workers whose only jobs a limit holds back, beside idle ones.

The workers are the project's: `manage.py procrastinate worker` (the stock setup) and
`manage.py run_workers`, with the bench tasks loaded through PROCRASTINATE_IMPORT_PATHS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil
from django.db import connection
from procrastinate.types import JSONDict

from bench import worker_tasks
from bench.processes import running
from bench.timing import Latency, rate
from example.models import Notification
from jobs import workflows
from jobs.databases import listening_pids
from jobs.models import BatchJob
from jobs.processes import worker_command


def worker_environment(**extra: str) -> dict[str, str]:
    """The environment of the benchmark's processes: this one's, with the bench tasks, and
    Django's connection pool on, as in production (where DATABASE_POOL is on by default)."""
    return {
        **os.environ,
        "DATABASE_POOL": "1",
        "PROCRASTINATE_IMPORT_PATHS": "bench.worker_tasks",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def running_workers(
    command: list[str], **env: str
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`command` (a worker setup) running with the bench tasks for the block's duration."""
    return running(command, env=worker_environment(**env))


def stock_worker() -> list[str]:
    """`manage.py procrastinate worker` with its defaults, on the bench queue."""
    return worker_command("--queues", worker_tasks.QUEUE)


def run_workers(processes: int, concurrency: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "django", "run_workers", "--queues", worker_tasks.QUEUE,
        "--processes", str(processes), "--concurrency", str(concurrency), "--name", "bench",
        *extra,
    ]  # fmt: skip


def queued() -> int:
    """Jobs of the bench queue still waiting or running."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s "
            "AND status IN ('todo', 'doing')",
            [worker_tasks.QUEUE],
        )
        return int(cursor.fetchone()[0])


# --- Drain throughput -----------------------------------------------------------------


def _arguments(kind: str, count: int) -> list[JSONDict]:
    if kind == "noop_limited":
        return [worker_tasks.limited_kwargs(n) for n in range(count)]
    if kind.startswith("orm"):
        rows = Notification.objects.bulk_create(
            Notification(recipient="bench@example.com", subject="bench") for _ in range(count)
        )
        return [{"notification_id": row.pk} for row in rows]
    return [worker_tasks.noop_kwargs(n) for n in range(count)]


def _analyze() -> None:
    """Bring the planner's statistics up to date and clear the rows of earlier runs, as
    autovacuum does on a live site.

    Thousands of jobs were just queued into a young table: without this, the first setup
    measured would run on statistics that describe the table as it was, the next one on
    whatever autovacuum's latest pass left, and the comparison would measure that. And the
    index entries of the jobs the previous run finished come first in the order workers
    fetch in (same priority, lower ids): each fetch of the next run would walk past them,
    so that the second run of a round was the slower one, whichever setup it measured.
    """
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE procrastinate_jobs, procrastinate_events, jobs_jobresult")


def _defer_batch(kind: str, arguments: list[JSONDict]) -> tuple[list[int], int]:
    """Defer jobs of `kind` with `arguments` as one batch with an `on_finish` callback; their
    ids and the batch's."""
    task = worker_tasks.job_task(kind)
    batch = workflows.defer_batch(
        [workflows.job(task, **kwargs) for kwargs in arguments],
        on_finish=workflows.job(worker_tasks.batch_done),
        description=f"bench_jobs: {len(arguments):,} {kind} jobs",
    )
    ids = list(
        BatchJob.objects.filter(batch=batch).order_by("job_id").values_list("job_id", flat=True)
    )
    return ids, batch.pk


def drain(
    command: list[str],
    kind: str,
    count: int,
    timeout: float = 900,
    *,
    batched: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Queue `count` jobs of `kind` (worker_tasks.job_task), let `command`'s workers empty
    the queue; jobs/s. `batched`: the jobs are one batch (jobs.workflows) whose callback
    must have run, once, when the queue is empty. `env`: more environment variables for
    the workers."""
    task = worker_tasks.job_task(kind)
    arguments = _arguments(kind, count)
    ids: list[int] = []
    batch_id = None
    if batched:
        ids, batch_id = _defer_batch(kind, arguments)
    else:
        for first in range(0, count, 5000):
            ids += task.batch_defer(*arguments[first : first + 5000])
    _analyze()
    deadline = time.monotonic() + timeout
    with running_workers(command, **(env or {})):
        # A batch's callback is deferred with the end of its last job: the queue is never
        # empty between the two.
        while queued():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: the queue did not drain in {timeout} s")
            time.sleep(0.2)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT min(at) FILTER (WHERE type = 'started'),
                   max(at) FILTER (WHERE type IN ('succeeded', 'failed')),
                   count(*) FILTER (WHERE type = 'succeeded')
            FROM procrastinate_events WHERE job_id BETWEEN %s AND %s
            """,
            [min(ids), max(ids)],
        )
        first_start, last_end, succeeded = cursor.fetchone()
    if succeeded != count:
        raise RuntimeError(f"{kind}: {succeeded} of {count} jobs succeeded")
    figures = rate(count, (last_end - first_start).total_seconds())
    if batch_id is not None:
        figures["callbacks"] = _callbacks_run(batch_id)
        if figures["callbacks"] != 1:
            raise RuntimeError(f"{kind}: the batch's callback ran {figures['callbacks']} times")
    return figures


def _callbacks_run(batch_id: int) -> int:
    """How many jobs of the benchmark's batch callback ran for batch `batch_id`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s "
            "AND status = 'succeeded' AND (args -> 'batch' ->> 'id')::bigint = %s",
            [worker_tasks.batch_done.name, batch_id],
        )
        return int(cursor.fetchone()[0])


# --- Workers whose only jobs are held back ----------------------------------------------


def _workers_cpu_seconds(supervisor: subprocess.Popen[bytes]) -> float:
    """CPU time (user and system) the processes under `supervisor` used so far."""
    total = 0.0
    for child in psutil.Process(supervisor.pid).children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _cpu_per_minute(supervisor: subprocess.Popen[bytes], seconds: float) -> float:
    before = _workers_cpu_seconds(supervisor)
    time.sleep(seconds)
    return round((_workers_cpu_seconds(supervisor) - before) * 60 / seconds, 3)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def _job_status(job_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])
        return str(cursor.fetchone()[0])


def held_back_cpu(
    command: list[str], *, seconds: float, held: int, listeners: int
) -> dict[str, Any]:
    """The CPU `command`'s workers use, in seconds per minute over `seconds`: idle with an
    empty queue, then with only `held` jobs that a concurrency limit holds back (its one
    slot kept by a job that waits), all measured with psutil. The held jobs then drain."""
    before = listening_pids()
    with tempfile.TemporaryDirectory() as folder, running_workers(command) as supervisor:
        _wait_listening(before, listeners)
        idle = _cpu_per_minute(supervisor, seconds)
        flag = os.path.join(folder, "release")
        holder = int(worker_tasks.hold_slot.defer(path=flag))
        _wait(lambda: _job_status(holder) == "doing", "the slot was taken")
        for first in range(0, held, 5000):
            worker_tasks.noop_held.batch_defer(
                *(worker_tasks.noop_kwargs(n) for n in range(first, min(held, first + 5000)))
            )
        held_cpu = _cpu_per_minute(supervisor, seconds)
        Path(flag).touch()
        _wait(lambda: not queued(), "the held jobs drained", timeout=900)
    return {
        "seconds": seconds,
        "held_jobs": held,
        "idle_cpu_seconds_per_minute": idle,
        "held_cpu_seconds_per_minute": held_cpu,
    }


# --- Pickup latency ---------------------------------------------------------------------


def _wait_listening(before: set[int], expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(listening_pids() - before) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers never started listening")
        time.sleep(0.1)


def pickup_latency(command: list[str], count: int, *, listeners: int) -> Latency:
    """Defer `count` no-op jobs one at a time to idle workers; latency defer → start."""
    before = listening_pids()
    ids = []
    with running_workers(command):
        if listeners:
            _wait_listening(before, listeners)
        else:
            time.sleep(3)  # polling workers: let them all start
        for n in range(count):
            job_id = worker_tasks.noop_async.defer(n=n)
            ids.append(job_id)
            deadline = time.monotonic() + 30
            while queued():
                if time.monotonic() > deadline:
                    raise RuntimeError("a job was never picked up")
                time.sleep(0.001)
    return Latency.of(_pickup_seconds(ids))


def _pickup_seconds(ids: list[int]) -> list[float]:
    """Each job's pickup latency: from its `deferred` event (PostgreSQL's clock, as the
    deferring statement commits) to the start of its attempt as its worker recorded it (the
    result row's `started_at`, the worker's clock: the same machine's here).

    Not the `started` event: a worker that claims several jobs in one fetch (jobs.prefetch)
    marks them all started as it claims them, each at the time its fetch's transaction
    began, which can even precede the deferral of a job that a later pass of the same fetch
    took; the attempt's own start is when a slot actually runs it."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT result.started_at - min(event.at)
            FROM procrastinate_events AS event
            JOIN jobs_jobresult AS result ON result.job_id = event.job_id
            WHERE event.job_id = ANY(%s) AND event.type = 'deferred'
            GROUP BY event.job_id, result.started_at
            """,
            [ids],
        )
        return [row[0].total_seconds() for row in cursor.fetchall()]


# The jobs measured under load outrank the backlog's (priority 0, procrastinate's default):
# the fetch takes them first, so their latency is the wait for a free slot and a fetch.
PROBE_PRIORITY = 10
# The backlog of the latency under load is topped up whenever fewer jobs than this (or than
# half the backlog) wait: far more than the workers run between two looks (one per probe,
# 50 ms apart at 20 a second).
BACKLOG_LOW_WATER = 1000


def _backlog_waiting(at_most: int) -> int:
    """The backlog's jobs waiting to start, counted up to `at_most` (a bounded count: the
    look is repeated for every probe, and must not load the database it measures)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs WHERE queue_name = %s "
            "AND status = 'todo' AND priority < %s LIMIT %s) AS waiting",
            [worker_tasks.QUEUE, PROBE_PRIORITY, at_most],
        )
        return int(cursor.fetchone()[0])


def _defer_backlog(count: int, first: int) -> None:
    """`count` no-op async jobs for the backlog, numbered from `first`."""
    for start in range(first, first + count, 5000):
        worker_tasks.noop_async.batch_defer(
            *(worker_tasks.noop_kwargs(n) for n in range(start, min(first + count, start + 5000)))
        )


def pickup_latency_under_load(
    command: list[str], *, backlog: int, count: int, per_second: int, listeners: int
) -> dict[str, Any]:
    """The pickup latency of jobs deferred while `command`'s workers drain a backlog.

    Once the workers listen, `backlog` no-op async jobs are queued, and as many again each
    time fewer than BACKLOG_LOW_WATER (at most half the backlog) wait, so that the workers
    never run dry. Meanwhile `count` no-op async jobs of a higher priority (PROBE_PRIORITY)
    are deferred one at a time, `per_second` a second at a steady pace, none waiting for
    the one before to start; each one's latency runs from its `deferred` event to its
    attempt's start, as for idle workers. `fewest_waiting` is the fewest backlog jobs seen
    waiting after a probe was deferred (counted up to that low-water mark): 0 would mean
    the workers ran dry at times, and the figure mixes in idle latency. The workers then
    drain what is left.
    """
    low_water = min(backlog // 2, BACKLOG_LOW_WATER)
    probe = worker_tasks.noop_async.configure(priority=PROBE_PRIORITY)
    interval = 1 / per_second
    before = listening_pids()
    ids: list[int] = []
    fewest_waiting = low_water
    queued_jobs = 0
    with running_workers(command):
        _wait_listening(before, listeners)
        _defer_backlog(backlog, queued_jobs)
        queued_jobs += backlog
        due = time.monotonic()
        for n in range(count):
            # The pace, not a synchronisation: the probes go at set times, whatever happens.
            time.sleep(max(0.0, due - time.monotonic()))
            ids.append(probe.defer(n=n))
            waiting = _backlog_waiting(low_water)
            fewest_waiting = min(fewest_waiting, waiting)
            if waiting < low_water:
                _defer_backlog(backlog, queued_jobs)
                queued_jobs += backlog
            # A probe that could not go on time (a top-up took longer than the interval)
            # goes at once, and the pace resumes from it: no burst to catch up.
            due = max(due + interval, time.monotonic())
        _wait(lambda: not queued(), "the backlog drained", timeout=900)
    return {
        **Latency.of(_pickup_seconds(ids)).__dict__,
        "per_second": per_second,
        "backlog": backlog,
        "backlog_jobs": queued_jobs,
        "fewest_waiting": fewest_waiting,
    }


# --- Soak -------------------------------------------------------------------------------


def _table_sizes() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
            "('procrastinate_jobs', 'procrastinate_events', 'jobs_jobresult')"
        )
        return {name: int(size) for name, size in cursor.fetchall()}


def _worker_memory(supervisor: subprocess.Popen[bytes]) -> list[int]:
    try:
        children = psutil.Process(supervisor.pid).children()
    except psutil.NoSuchProcess:
        return []
    return sorted(child.memory_info().rss for child in children)


def soak(command: list[str], total: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Defer `total` no-op jobs in batches while the workers (deleting finished jobs) run."""
    batch = 2000
    samples: list[dict[str, Any]] = []
    with running_workers(command) as supervisor:
        time.sleep(5)
        started = time.monotonic()
        start_memory = _worker_memory(supervisor)
        deferred = 0
        while deferred < total:
            size = min(batch, total - deferred)
            worker_tasks.noop_async.batch_defer(
                *(worker_tasks.noop_kwargs(deferred + i) for i in range(size))
            )
            deferred += size
            while queued() > 20_000:  # keep a steady backlog, not an ever-growing one
                time.sleep(0.2)
            if deferred % 100_000 < batch:
                sample = {"deferred": deferred, "sizes": _table_sizes()}
                sample["rss"] = _worker_memory(supervisor)
                samples.append(sample)
                log(f"  soak: {deferred:,} deferred, worker RSS {sample['rss']}")
        while queued():
            time.sleep(0.5)
        seconds = time.monotonic() - started
        end_memory = _worker_memory(supervisor)
    return {
        "jobs": total,
        "seconds": round(seconds, 1),
        "per_second": round(total / seconds, 1),
        "worker_rss_start": start_memory,
        "worker_rss_end": end_memory,
        "table_sizes_end": _table_sizes(),
        "samples": samples,
    }
