"""What deferring a job costs the code that defers it (`manage.py bench_jobs`), in a process
whose default database is the benchmark's scratch database:

- defer rate: one job at a time on a sync view's code path (`atomic` + `defer`), on an async
  view's (`async_atomic` + `defer_async`), and with `batch_defer`;
- enqueue rate of Django's task API beside it: `enqueue()` against `defer()`, `aenqueue()`
  against `defer_async()`, one job per transaction, in alternating rounds;
- view overhead: response times under uvicorn of the same write with and without a defer
  (bench.views).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.db import connection, transaction

from bench import worker_tasks
from bench.http_load import Request, time_requests
from bench.processes import free_port, running, wait_accepting
from bench.timing import Latency, alternating_rounds, rate, with_ratio
from bench.workers import worker_environment
from jobs.processes import web_server_command
from jobs.transaction import async_atomic


def _clear_bench_queue() -> None:
    # Benchmark data in the scratch database only: deferred but never meant to run.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE queue_name = %s", [worker_tasks.QUEUE])


def defer_rates(count: int) -> dict[str, float]:
    task = worker_tasks.noop_sync
    started = time.perf_counter()
    for n in range(count):
        with transaction.atomic():
            task.defer(n=n)
    sync_rate = count / (time.perf_counter() - started)

    async def defer_async_one_by_one() -> float:
        began = time.perf_counter()
        for n in range(count):
            async with async_atomic():
                await worker_tasks.noop_async.defer_async(n=n)
        return count / (time.perf_counter() - began)

    async_rate = asyncio.run(defer_async_one_by_one())
    batch = 1000
    total = max(count * 5, batch)
    started = time.perf_counter()
    for first in range(0, total, batch):
        task.batch_defer(*(worker_tasks.noop_kwargs(n) for n in range(first, first + batch)))
    batch_rate = total / (time.perf_counter() - started)
    _clear_bench_queue()
    return {
        "sync_one_by_one": round(sync_rate, 1),
        "async_one_by_one": round(async_rate, 1),
        "batch_defer": round(batch_rate, 1),
    }


def _one_per_transaction(count: int, defer: Callable[[int], object]) -> dict[str, Any]:
    """`count` jobs, each deferred by `defer(n)` in a transaction of its own, as a view
    writes its data and its job."""
    started = time.perf_counter()
    for n in range(count):
        with transaction.atomic():
            defer(n)
    return rate(count, time.perf_counter() - started)


def _one_per_async_transaction(
    count: int, defer: Callable[[int], Awaitable[object]]
) -> dict[str, Any]:
    """As `_one_per_transaction`, on an async view's code path (`async_atomic`)."""

    async def run() -> dict[str, Any]:
        started = time.perf_counter()
        for n in range(count):
            async with async_atomic():
                await defer(n)
        return rate(count, time.perf_counter() - started)

    return asyncio.run(run())


def enqueue_rates(count: int, rounds: int) -> dict[str, Any]:
    """Jobs/s through Django's `enqueue()` and procrastinate's `defer()` (and their async
    twins), `count` jobs a run, in `rounds` alternating rounds; with Django's ratio."""
    procrastinate_sync, django_sync = worker_tasks.noop_sync, worker_tasks.django_noop_sync
    procrastinate_async, django_async = worker_tasks.noop_async, worker_tasks.django_noop_async
    sync = alternating_rounds(
        rounds,
        [
            ("defer", lambda: _one_per_transaction(count, lambda n: procrastinate_sync.defer(n=n))),
            ("enqueue", lambda: _one_per_transaction(count, lambda n: django_sync.enqueue(n=n))),
        ],
    )
    in_async = alternating_rounds(
        rounds,
        [
            (
                "defer_async",
                lambda: _one_per_async_transaction(
                    count, lambda n: procrastinate_async.defer_async(n=n)
                ),
            ),
            (
                "aenqueue",
                lambda: _one_per_async_transaction(count, lambda n: django_async.aenqueue(n=n)),
            ),
        ],
    )
    _clear_bench_queue()
    return {
        "sync": with_ratio(sync, "enqueue", "defer"),
        "async": with_ratio(in_async, "aenqueue", "defer_async"),
    }


def view_overhead(requests: int) -> dict[str, Any]:
    port = free_port()
    command = web_server_command(
        "127.0.0.1", port, "--no-access-log", "--log-level", "warning", "--factory",
        application="bench.asgi:application",
    )  # fmt: skip
    figures: dict[str, Any] = {}
    with running(command, env=worker_environment(DATABASE_POOL="1")) as server:
        wait_accepting(port, server)
        for flavour in ("sync", "async"):
            latencies: dict[str, Latency] = {}
            for path in ("write", "write-and-defer"):
                calls: list[Request] = [("POST", f"/bench/{flavour}/{path}/", b"")] * requests
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
