"""The measurements of `manage.py bench_jobs`, run inside a process whose default database
is the benchmark's scratch database.

- defer rate: one job at a time on a sync view's code path (`atomic` + `defer`), on an async
  view's (`async_atomic` + `defer_async`), and with `batch_defer`;
- drain throughput: N queued jobs, W worker processes with concurrency C, from the first
  job's start to the last job's end (process start-up is not counted), in rounds that
  alternate the stock and the recommended setup (the median run is reported);
- pickup latency: idle workers, one job at a time, from the job's `deferred` event to its
  `started` event (both stamped by PostgreSQL's clock), with LISTEN/NOTIFY and without;
- view overhead: response times under uvicorn of the same write with and without a defer;
- soak: a long run with retention on, reporting worker memory and table sizes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.db import connection, transaction
from procrastinate import tasks as procrastinate_tasks
from procrastinate.types import JSONDict

from example.models import Notification
from jobs import bench_tasks
from jobs.benchmarks import Latency, free_port, time_requests
from jobs.databases import listening_pids
from jobs.processes import web_server_command, worker_command
from jobs.transaction import async_atomic

Task = procrastinate_tasks.Task[Any, Any, Any]
KINDS = tuple(bench_tasks.TASKS)


def worker_environment(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PROCRASTINATE_IMPORT_PATHS": "jobs.bench_tasks",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def stock_worker() -> list[str]:
    """`manage.py procrastinate worker` with its defaults, on the bench queue."""
    return worker_command("--queues", bench_tasks.QUEUE)


def run_workers(processes: int, concurrency: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "django", "run_workers", "--queues", bench_tasks.QUEUE,
        "--processes", str(processes), "--concurrency", str(concurrency), "--name", "bench",
        *extra,
    ]  # fmt: skip


def _kwargs(n: int) -> JSONDict:
    return {"n": n}


def _arguments(kind: str, count: int) -> list[JSONDict]:
    if kind.startswith("orm"):
        rows = Notification.objects.bulk_create(
            Notification(recipient="bench@example.com", subject="bench") for _ in range(count)
        )
        return [{"notification_id": row.pk} for row in rows]
    return [{"n": n} for n in range(count)]


def _queued() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s "
            "AND status IN ('todo', 'doing')",
            [bench_tasks.QUEUE],
        )
        return int(cursor.fetchone()[0])


# --- Defer rate -------------------------------------------------------------------------


def defer_rates(count: int) -> dict[str, float]:
    task = bench_tasks.noop_sync
    started = time.perf_counter()
    for n in range(count):
        with transaction.atomic():
            task.defer(n=n)
    sync_rate = count / (time.perf_counter() - started)

    async def defer_async_one_by_one() -> float:
        began = time.perf_counter()
        for n in range(count):
            async with async_atomic():
                await bench_tasks.noop_async.defer_async(n=n)
        return count / (time.perf_counter() - began)

    async_rate = asyncio.run(defer_async_one_by_one())
    batch = 1000
    total = max(count * 5, batch)
    started = time.perf_counter()
    for first in range(0, total, batch):
        task.batch_defer(*(_kwargs(n) for n in range(first, first + batch)))
    batch_rate = total / (time.perf_counter() - started)
    _clear_bench_queue()
    return {
        "sync_one_by_one": round(sync_rate, 1),
        "async_one_by_one": round(async_rate, 1),
        "batch_defer": round(batch_rate, 1),
    }


def _clear_bench_queue() -> None:
    # Benchmark data in the scratch database only: deferred but never meant to run.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE queue_name = %s", [bench_tasks.QUEUE])


# --- Drain throughput -----------------------------------------------------------------


@contextmanager
def running(command: list[str], **env: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=worker_environment(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _analyze() -> None:
    """Bring the planner's statistics up to date, as autovacuum keeps them on a live site.

    Thousands of jobs were just queued into a young table: without this, the first setup
    measured would run on statistics that describe the table as it was, the next one on
    whatever autovacuum's latest pass left, and the comparison would measure that.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE procrastinate_jobs, procrastinate_events, jobs_jobresult")


def drain(command: list[str], kind: str, count: int, timeout: float = 900) -> dict[str, float]:
    """Queue `count` jobs of `kind`, let `command`'s workers empty the queue; jobs/s."""
    task = bench_tasks.TASKS[kind]
    arguments = _arguments(kind, count)
    ids: list[int] = []
    for first in range(0, count, 5000):
        ids += task.batch_defer(*arguments[first : first + 5000])
    _analyze()
    deadline = time.monotonic() + timeout
    with running(command):
        while _queued():
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
    seconds = (last_end - first_start).total_seconds()
    if succeeded != count:
        raise RuntimeError(f"{kind}: {succeeded} of {count} jobs succeeded")
    return {"jobs": count, "seconds": round(seconds, 2), "per_second": round(count / seconds, 1)}


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
    with running(command):
        if listeners:
            _wait_listening(before, listeners)
        else:
            time.sleep(3)  # polling workers: let them all start
        for n in range(count):
            job_id = bench_tasks.noop_async.defer(n=n)
            ids.append(job_id)
            deadline = time.monotonic() + 30
            while _queued():
                if time.monotonic() > deadline:
                    raise RuntimeError("a job was never picked up")
                time.sleep(0.001)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT max(at) FILTER (WHERE type = 'started')
                   - min(at) FILTER (WHERE type = 'deferred')
            FROM procrastinate_events WHERE job_id = ANY(%s) GROUP BY job_id
            """,
            [ids],
        )
        return Latency.of([row[0].total_seconds() for row in cursor.fetchall()])


# --- A deferring view under ASGI ----------------------------------------------------------


def view_overhead(requests: int) -> dict[str, Any]:
    port = free_port()
    command = web_server_command(
        "127.0.0.1", port, "--no-access-log", "--log-level", "warning", "--factory",
        application="jobs.bench_asgi:application",
    )  # fmt: skip
    figures: dict[str, Any] = {}
    with running(command, DATABASE_POOL="1"):
        deadline = time.monotonic() + 30
        while True:
            try:
                time_requests(port, [("GET", "/bench/none/", None)], {})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark web server did not start") from None
                time.sleep(0.2)
        for flavour in ("sync", "async"):
            latencies = {}
            for path in ("write", "write-and-defer"):
                calls: list[tuple[str, str, bytes | None]] = [
                    ("POST", f"/bench/{flavour}/{path}/", b"")
                ] * requests
                time_requests(port, calls[: requests // 10], {})  # warm-up
                latency, statuses = time_requests(port, calls, {})
                if set(statuses) != {201}:
                    raise RuntimeError(f"bench view {path} answered {sorted(set(statuses))}")
                latencies[path] = latency
            figures[flavour] = {
                "without_defer": latencies["write"].__dict__,
                "with_defer": latencies["write-and-defer"].__dict__,
                "overhead_median_ms": round(
                    latencies["write-and-defer"].median_ms - latencies["write"].median_ms, 3
                ),
                "overhead_p95_ms": round(
                    latencies["write-and-defer"].p95_ms - latencies["write"].p95_ms, 3
                ),
            }
    _clear_bench_queue()
    return figures


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
    with running(command) as supervisor:
        time.sleep(5)
        started = time.monotonic()
        start_memory = _worker_memory(supervisor)
        deferred = 0
        while deferred < total:
            size = min(batch, total - deferred)
            bench_tasks.noop_async.batch_defer(*(_kwargs(deferred + i) for i in range(size)))
            deferred += size
            while _queued() > 20_000:  # keep a steady backlog, not an ever-growing one
                time.sleep(0.2)
            if deferred % 100_000 < batch:
                sample = {"deferred": deferred, "sizes": _table_sizes()}
                sample["rss"] = _worker_memory(supervisor)
                samples.append(sample)
                log(f"  soak: {deferred:,} deferred, worker RSS {sample['rss']}")
        while _queued():
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


# --- The whole run ----------------------------------------------------------------------


def run_all(options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}
    log("Defer rate...")
    figures["defer_per_second"] = defer_rates(options["defer_count"])
    processes, concurrency = options["processes"], options["concurrency"]
    recommended = run_workers(processes, concurrency)
    figures["recommended"] = {"processes": processes, "concurrency": concurrency}
    figures["drain"] = {}
    setups = (("stock", stock_worker()), ("recommended", recommended))
    rounds = options["repeat"]
    for kind in options["kinds"]:
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in setups}
        # Rounds alternate the setups, so that a slow spell of a shared machine slows
        # both; each setup's median run (the lower middle one for an even count) is
        # reported, with every run's rate.
        for number in range(1, rounds + 1):
            # Each setup goes first in every other round: the tables grow run after run.
            for label, command in setups if number % 2 else setups[::-1]:
                what = f"{options['jobs']:,} {kind} jobs with the {label} setup"
                log(f"Drain {what} ({number}/{rounds})...")
                runs[label].append(drain(command, kind, options["jobs"]))
        for label, results in runs.items():
            ranked = sorted(results, key=lambda result: result["per_second"])
            figures["drain"][f"{kind}/{label}"] = {
                **ranked[(len(ranked) - 1) // 2],
                "runs_per_second": [result["per_second"] for result in results],
            }
    log("Pickup latency with LISTEN/NOTIFY...")
    figures["pickup_listen_notify"] = pickup_latency(
        recommended, options["latency_count"], listeners=processes
    ).__dict__
    poll = options["poll_interval"]
    log(f"Pickup latency with polling only (every {poll} s)...")
    polling = run_workers(
        processes, concurrency, "--no-listen-notify", "--fetch-job-polling-interval", str(poll)
    )
    figures["pickup_polling"] = pickup_latency(
        polling, options["polling_latency_count"], listeners=0
    ).__dict__
    figures["pickup_polling"]["interval_seconds"] = poll
    log("View overhead under uvicorn...")
    figures["view_overhead"] = view_overhead(options["requests"])
    if options["soak"]:
        log(f"Soak: {options['soak']:,} jobs, finished jobs deleted...")
        figures["soak"] = soak(
            run_workers(processes, concurrency, "--delete-jobs", "successful"), options["soak"], log
        )
    return figures


def write_chart(figures: dict[str, Any], path: Path) -> None:
    """A PNG with pickup latency percentiles and drain throughput per setup."""
    from PIL import Image, ImageDraw

    width, height, margin = 1000, 640, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (margin, 15), "bench_jobs: pickup latency (ms) and drain throughput (jobs/s)", fill="black"
    )

    def bars(top: int, title: str, items: list[tuple[str, float]], colour: str) -> None:
        draw.text((margin, top), title, fill="black")
        area_top, area_bottom = top + 20, top + 250
        peak = max((value for _, value in items), default=1) or 1
        slot = (width - 2 * margin) / max(len(items), 1)
        for index, (label, value) in enumerate(items):
            left = margin + index * slot + 8
            bar_height = (area_bottom - area_top - 20) * value / peak
            draw.rectangle(
                (left, area_bottom - bar_height, left + slot - 16, area_bottom), fill=colour
            )
            draw.text((left, area_bottom - bar_height - 14), f"{value:,.1f}", fill="black")
            draw.text((left, area_bottom + 4), label, fill="black")

    notify = figures["pickup_listen_notify"]
    bars(
        40,
        "Pickup latency with LISTEN/NOTIFY (ms)",
        [(name, notify[f"{name}_ms"]) for name in ("median", "p95", "p99", "max")],
        "#3b82f6",
    )
    bars(
        340,
        "Drain throughput (jobs/s)",
        [(key.replace("/", "\n"), value["per_second"]) for key, value in figures["drain"].items()],
        "#10b981",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
