"""Benchmark building blocks: a scratch database, seeding with SQL set operations, a real
ASGI server, and HTTP timing.

Benchmarks never run against the site's data: `scratch_database` creates a database next
to the configured one, migrates it, and drops it afterwards. Seeding writes procrastinate's
tables directly with `INSERT ... SELECT generate_series(...)`: this is test data at a scale
(millions of rows in seconds) that deferring one job at a time cannot reach; the rows have
the shape procrastinate gives them, events and results included.
"""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings

from jobs.databases import connection_kwargs, create_database, database_url, drop_database
from jobs.processes import web_server_command


@dataclass(frozen=True)
class ScratchDatabase:
    name: str
    url: str

    def environment(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(**connection_kwargs(self.name), autocommit=True)

    def manage(self, *args: str) -> str:
        """Run a manage.py command against this database; return its output."""
        completed = subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=settings.BASE_DIR,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{completed.stderr[-3000:]}")
        return completed.stdout


@contextmanager
def scratch_database(name: str, *, keep: bool = False) -> Iterator[ScratchDatabase]:
    """A freshly created and migrated database `name`, dropped at the end unless `keep`."""
    create_database(name)
    database = ScratchDatabase(name=name, url=database_url(name=name))
    try:
        database.manage("migrate", "--noinput", "-v", "0")
        yield database
    finally:
        if not keep:
            drop_database(name)


def seed_finished_jobs(database: ScratchDatabase, count: int, *, batch: int = 250_000) -> float:
    """Insert `count` succeeded `jobs.build_report` jobs with their events and results.

    Returns the seconds it took. Batches keep each transaction's memory bounded.
    """
    started = time.monotonic()
    with database.connect() as conn:
        first = 1
        while first <= count:
            last = min(first + batch - 1, count)
            with conn.transaction():
                conn.execute(
                    """
                    INSERT INTO procrastinate_jobs
                        (queue_name, task_name, priority, args, status, attempts, scheduled_at)
                    SELECT 'reports', 'jobs.build_report', 0,
                           jsonb_build_object('report_id', g), 'succeeded', 1, NULL
                    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
                    """,
                    {"first": first, "last": last},
                )
            first = last + 1
        with conn.transaction():
            # Triggers write events only for jobs inserted as "todo": write the three a
            # finished job has (deferred, started, succeeded), spread over the last day.
            conn.execute(
                """
                INSERT INTO procrastinate_events (job_id, type, at)
                SELECT id, k.kind::procrastinate_job_event_type,
                       now() - interval '1 day' + (id % 86400) * interval '1 second' + k.delay
                FROM procrastinate_jobs,
                     (VALUES ('deferred', interval '0'), ('started', interval '1 second'),
                             ('succeeded', interval '1.5 seconds')) AS k(kind, delay)
                """
            )
            conn.execute(
                """
                INSERT INTO jobs_jobresult (job_id, task_name, status, attempt, worker_name,
                    started_at, finished_at, duration, return_value, exception_type,
                    exception_message, traceback, progress, progress_message)
                SELECT id, task_name, 'succeeded', 1, 'bench',
                       now() - interval '1 hour', now() - interval '1 hour' + interval '0.5 s',
                       interval '0.5 s', jsonb_build_object('total', id % 100), '', '', '',
                       NULL, ''
                FROM procrastinate_jobs
                """
            )
        conn.execute("ANALYZE")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def web_server(database: ScratchDatabase, **env: str) -> Iterator[int]:
    """uvicorn on a free local port against `database`; yields the port."""
    port = free_port()
    process = subprocess.Popen(
        web_server_command("127.0.0.1", port, "--no-access-log", "--log-level", "warning"),
        cwd=settings.BASE_DIR,
        env=database.environment(**env),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the web server did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class Latency:
    count: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ms = sorted(value * 1000 for value in seconds)
        quantiles = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(
            count=len(ms),
            median_ms=statistics.median(ms),
            p95_ms=quantiles[94],
            p99_ms=quantiles[98],
            max_ms=ms[-1],
        )


def time_requests(
    port: int, requests: list[tuple[str, str, bytes | None]], headers: dict[str, str]
) -> tuple[Latency, list[int]]:
    """Send `(method, path, body)` requests one after another on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    durations: list[float] = []
    statuses: list[int] = []
    try:
        for method, path, body in requests:
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            durations.append(time.perf_counter() - started)
            statuses.append(response.status)
    finally:
        connection.close()
    return Latency.of(durations), statuses


def requests_per_second(
    port: int,
    make_request: Callable[[int], tuple[str, str, bytes | None]],
    headers: dict[str, str],
    *,
    seconds: float,
    clients: int,
) -> tuple[float, dict[int, int]]:
    """Run `clients` keep-alive clients for `seconds`; return requests/s and status counts."""
    counts: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = 0
        local: dict[int, int] = {}
        try:
            while time.monotonic() < stop_at:
                method, path, body = make_request(number * 10_000_000 + sent)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                local[response.status] = local.get(response.status, 0) + 1
                sent += 1
        finally:
            connection.close()
            with lock:
                for status, n in local.items():
                    counts[status] = counts.get(status, 0) + n

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return sum(counts.values()) / elapsed, counts
