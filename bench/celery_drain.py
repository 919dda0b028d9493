"""Celery + Redis beside this project's workers in `bench_jobs`' drain comparison.

The question every team asks before leaving Celery is whether a PostgreSQL queue keeps up,
so the benchmark drains the same number of no-op tasks through Celery with Redis in the same
run, in the same alternating rounds as the stock worker and `run_workers`: a Celery worker
(prefork pool, concurrency = cores by default, no result backend, acks by default) and a Redis
server of the benchmark's own (a free port, no persistence, a temporary folder), started here
and stopped at the end. Celery has no async tasks: its one no-op task is sync, and its row is
measured in the rounds of each no-op kind (sync and async), against which this project's rows
are compared.

Without `redis-server` on the PATH, or without celery and redis (the `bench` dependency
group), the row is skipped and the report says why in one line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.processes import free_port, running, wait_accepting
from bench.timing import Measure, rate
from bench.workers import worker_environment
from jobs.processes import start, stop

# The kinds of `bench_jobs --kinds` that get a Celery row: the no-op ones.
KINDS = ("noop_sync", "noop_async")
# Celery's default queue, and the hash kombu's Redis transport keeps unacknowledged tasks in.
QUEUE = "celery"
UNACKED = "unacked"


def unavailable(kinds: Iterable[str]) -> str | None:
    """Why the Celery row cannot be measured here with `kinds`, or None."""
    if not set(kinds) & set(KINDS):
        return f"--kinds has none of {', '.join(KINDS)}"
    if shutil.which("redis-server") is None:
        return "redis-server is not on the PATH"
    missing = [name for name in ("celery", "redis") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (the bench dependency group)"
    return None


def worker_command(concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server (from the PATH) on a free local port, without persistence,
    for the duration of the block; yields its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not on the PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        command = [
            executable, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", folder,
            "--logfile", os.path.join(folder, "redis.log"), "--loglevel", "warning",
        ]  # fmt: skip
        with running(command, env=dict(os.environ), stop_timeout=10) as process:
            wait_accepting(port, process, what="redis-server")
            yield f"redis://127.0.0.1:{port}/0"


def _records(folder: Path) -> list[tuple[int, float, float]]:
    from bench.celery_app import RECORD

    runs: list[tuple[int, float, float]] = []
    for path in sorted(folder.glob("*.bin")):
        runs += RECORD.iter_unpack(path.read_bytes())
    return runs


def _recorded(folder: Path) -> int:
    from bench.celery_app import RECORD

    return sum(path.stat().st_size for path in folder.glob("*.bin")) // RECORD.size


def check_ran_once(numbers: Iterable[int], count: int) -> None:
    """RuntimeError unless `numbers` (the `n` of each run) are 0 .. count-1, each once."""
    runs = Counter(numbers)
    missing = count - len(runs.keys() & range(count))
    twice = sorted(n for n, times in runs.items() if times > 1)
    strangers = sorted(n for n in runs if not 0 <= n < count)
    if missing or twice or strangers:
        raise RuntimeError(
            f"Celery: {count - missing} of {count} tasks ran; ran more than once: "
            f"{twice[:10] or 'none'}; not queued by this run: {strangers[:10] or 'none'}"
        )


def _left_in_redis(broker_url: str) -> int:
    """Tasks waiting in the queue or taken and not acknowledged."""
    import redis

    with redis.Redis.from_url(broker_url) as client:
        return int(client.llen(QUEUE)) + int(client.hlen(UNACKED))


def _queue(broker_url: str, count: int) -> None:
    """`count` no-op tasks (n = 0 .. count-1) into Redis, before any worker runs."""
    from bench import celery_app

    app = celery_app.make_app(broker_url)
    noop = app.tasks[celery_app.NOOP]
    try:
        with app.producer_or_acquire() as producer:
            for n in range(count):
                noop.apply_async(kwargs={"n": n}, producer=producer, ignore_result=True)
    finally:
        app.close()


def _run_worker(
    broker_url: str, count: int, *, concurrency: int, timeout: float
) -> list[tuple[int, float, float]]:
    """A Celery worker running until `count` tasks have run; their records."""
    from bench import celery_app

    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryFile() as log:
        records = Path(folder)
        env = worker_environment(
            **{celery_app.BROKER_ENV: broker_url, celery_app.RECORDS_ENV: folder}
        )
        worker = start(worker_command(concurrency), env=env, output=log)
        try:
            deadline = time.monotonic() + timeout
            while _recorded(records) < count:
                if worker.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(
                        f"Celery: {_recorded(records)} of {count} tasks ran before the worker "
                        f"exited or {timeout} s passed:\n{output}"
                    )
                time.sleep(0.2)
        finally:
            # Warm shutdown: the worker finishes the tasks it runs (none are left by now).
            stop([worker], timeout=60)
        return _records(records)


def drain_celery(
    broker_url: str, count: int, *, concurrency: int, timeout: float = 900
) -> dict[str, Any]:
    """Queue `count` no-op tasks into the Redis at `broker_url`, then let a Celery worker
    empty the queue; tasks/s from the first task's start to the last one's end (as this
    project's drains are timed, so that process start-up is not counted). RuntimeError if a
    task did not run exactly once, or if Celery left a task in Redis."""
    if _left_in_redis(broker_url):
        raise RuntimeError("Celery: tasks of an earlier drain are still in Redis")
    _queue(broker_url, count)
    if (queued := _left_in_redis(broker_url)) != count:
        raise RuntimeError(f"Celery: {queued} of {count} tasks reached Redis")
    runs = _run_worker(broker_url, count, concurrency=concurrency, timeout=timeout)
    check_ran_once((n for n, _, _ in runs), count)
    if left := _left_in_redis(broker_url):
        raise RuntimeError(f"Celery: {left} tasks were left in Redis after the drain")
    first_start = min(started for _, started, _ in runs)
    last_end = max(ended for _, _, ended in runs)
    return rate(count, last_end - first_start)


@dataclass(frozen=True)
class CeleryRow:
    """Celery + Redis in the drain comparison: its Redis's URL, or why it is `skipped`."""

    concurrency: int
    broker_url: str | None = None
    skipped: str | None = None

    def measures(self, kind: str, count: int) -> list[tuple[str, Measure]]:
        """The Celery drain to run in `kind`'s rounds (none without Redis or for a kind
        Celery has no row for), labelled `celery`."""
        if self.broker_url is None or kind not in KINDS:
            return []
        drain = partial(drain_celery, self.broker_url, count, concurrency=self.concurrency)
        return [("celery", drain)]

    def figures(self, drain: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The row's description and, per kind measured, the ratio of the recommended
        setup's median rate to Celery's (from bench_jobs' `drain` figures); or `skipped`."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        ratios = {
            kind: round(
                drain[f"{kind}/recommended"]["per_second"] / drain[f"{kind}/celery"]["per_second"],
                3,
            )
            for kind in KINDS
            if f"{kind}/celery" in drain
        }
        return {
            "pool": "prefork",
            "concurrency": self.concurrency,
            "celery_version": importlib.metadata.version("celery"),
            "redis_version": _redis_version(),
            "recommended_over_celery": ratios,
        }


def _redis_version() -> str:
    completed = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    )
    words = completed.stdout.split()
    return next((word[2:] for word in words if word.startswith("v=")), completed.stdout.strip())


@contextmanager
def celery_beside(kinds: Iterable[str], concurrency: int) -> Iterator[CeleryRow]:
    """Celery + Redis for the block's drain comparison: a Redis server of its own when it
    can be measured, else a row that says why not."""
    reason = unavailable(kinds)
    if reason is not None:
        yield CeleryRow(concurrency, skipped=reason)
        return
    with redis_server() as url:
        yield CeleryRow(concurrency, broker_url=url)


def report_lines(figures: dict[str, Any]) -> list[str]:
    """bench_jobs' lines on the Celery row (its `celery` figures)."""
    if "skipped" in figures:
        return [f"Celery + Redis: skipped, {figures['skipped']}"]
    lines = [
        f"celery = Celery {figures['celery_version']} + Redis {figures['redis_version']}, "
        f"celery worker --pool {figures['pool']} --concurrency {figures['concurrency']}; "
        "Celery has no async tasks: its sync no-op runs in both kinds' rounds"
    ]
    for kind, ratio in figures["recommended_over_celery"].items():
        note = " (Celery's sync no-op)" if kind != "noop_sync" else ""
        lines.append(f"{kind}: recommended / celery = {ratio:.2f}{note}")
    return lines


def chart_line(figures: dict[str, Any]) -> str:
    """The chart's one line on the Celery row."""
    if "skipped" in figures:
        return f"Celery + Redis: skipped, {figures['skipped']}"
    ratios = ", ".join(
        f"{kind} {ratio:.2f}" for kind, ratio in figures["recommended_over_celery"].items()
    )
    return (
        f"recommended / Celery + Redis (prefork, concurrency {figures['concurrency']}; "
        f"Celery's sync no-op in both kinds): {ratios}"
    )
