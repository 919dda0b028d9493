"""What deferring a job costs the code that defers it (`manage.py bench_jobs`), in a process
whose default database is the benchmark's scratch database:

- defer rate: one job at a time on a sync view's code path (`atomic` + `defer`), on an async
  view's (`async_atomic` + `defer_async`), and with `batch_defer`;
- view overhead: response times under uvicorn of the same write with and without a defer
  (bench.views).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.db import connection, transaction

from bench import worker_tasks
from bench.http_load import Request, time_requests
from bench.processes import free_port, running, wait_accepting
from bench.timing import Latency
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
