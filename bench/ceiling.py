"""The machine's ceiling: what PostgreSQL itself costs per job, with the worker taken out.

No-op jobs are queued; then plain psycopg connections (sync, in autocommit, one thread
each) send, in a tight loop and as fast as they can, the statements a worker sends for
each job: the app's fetch, which claims up to CLAIMED_PER_FETCH jobs at once as a worker
with that many free slots does (jobs.prefetch's FETCH_JOBS; one job at a time with
JOBS_FETCH_MANY off, and procrastinate's own fetch with JOBS_FETCH_WITH_LIMITS off), then
the ends of the claimed jobs as the worker's connector records the ends of jobs that finish
together: procrastinate's finish for each, their result rows written by the same statement
(jobs.job_ends.FINISH_JOBS with jobs.results.JOB_END_CTE; one statement per job with
JOBS_GATHER_JOB_ENDS off). Nothing runs the jobs: no event loop, no pool, no task code,
no middleware. The rate is the most this machine's PostgreSQL does per second with these
statements, which no worker can beat; the CPU its processes used per job (read with psutil
when the server runs on this machine) is what each job costs PostgreSQL, whoever sends the
statements. The client's own CPU per job is given too: on a small machine it shares the
cores with the server, as workers do.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, LiteralString

import psutil
import psycopg
from django.db import connection
from django.utils import timezone
from procrastinate import sql
from psycopg.rows import dict_row

from bench import worker_tasks
from bench.timing import rate
from bench.workers import _analyze
from jobs import limits
from jobs.conf import jobs_settings
from jobs.connector import FETCH_JOB_WITH_LIMITS
from jobs.databases import connection_kwargs
from jobs.job_ends import FINISH_JOBS, finish_jobs_arguments
from jobs.models import JobResult
from jobs.prefetch import FETCH_JOBS
from jobs.results import JOB_END_CTE, upsert_parameters

# The statement with which the worker's connector records a successful job's end: its
# result row first, in the same round trip and transaction (jobs.connector,
# ReconnectingPsycopgConnector.write_with_job_end).
FINISH_WITH_RESULT: LiteralString = "WITH " + JOB_END_CTE + "\n" + sql.queries["finish_job"]
# The same for the ends of jobs that finish together (jobs.job_ends).
FINISH_ALL_WITH_RESULTS: LiteralString = "WITH " + JOB_END_CTE + "\n" + FINISH_JOBS
WORKER_NAME = "bench_jobs ceiling"
# Jobs per claim: what a worker with 4 free slots claims in one fetch (with 8 slots, the
# default, a worker claims up to 8, and fewer when its jobs end a few at a time). Kept at
# 4 so the ceiling compares with its earlier figures.
CLAIMED_PER_FETCH = 4


def _one(conn: psycopg.Connection[Any], query: LiteralString, arguments: Any = None) -> Any:
    """The first column of the one row `query` returns."""
    row = conn.execute(query, arguments).fetchone()
    assert row is not None, query
    return next(iter(row.values()))


def _fetch_statement() -> tuple[LiteralString, dict[str, Any]]:
    """The fetch a worker of this site sends, and its arguments besides queues and worker."""
    if not jobs_settings.JOBS_FETCH_WITH_LIMITS:
        return sql.queries["fetch_job"], {}
    if not jobs_settings.JOBS_FETCH_MANY:
        return FETCH_JOB_WITH_LIMITS, {"limits": limits.limits_json()}
    return FETCH_JOBS, {"limits": limits.limits_json(), "n": CLAIMED_PER_FETCH}


def _fetch_and_finish(
    conn: psycopg.Connection[Any], worker_id: int, start: threading.Barrier
) -> int:
    """Fetch and finish jobs of the bench queue on `conn` until none is left; how many."""
    fetch, fetch_arguments = _fetch_statement()
    arguments = {"queues": [worker_tasks.QUEUE], "worker_id": worker_id, **fetch_arguments}
    done = 0
    start.wait()
    while True:
        claimed = [job for job in conn.execute(fetch, arguments).fetchall() if job["id"]]
        if not claimed:
            return done
        _finish(conn, claimed, worker_id)
        done += len(claimed)


def _finish(conn: psycopg.Connection[Any], jobs: list[dict[str, Any]], worker_id: int) -> None:
    """End `jobs` as succeeded, with their result rows, as the worker's connector ends jobs
    that finish together: in one statement, or one each with JOBS_GATHER_JOB_ENDS off."""
    now = timezone.now()
    results = [
        upsert_parameters(
            job_id=job["id"],
            task_name=job["task_name"],
            status=JobResult.Status.SUCCEEDED,
            started_at=now,
            worker_id=worker_id,
            worker_name=WORKER_NAME,
            finished_at=now,
            duration=dt.timedelta(0),
            return_value="null",
        )
        for job in jobs
    ]
    if jobs_settings.JOBS_GATHER_JOB_ENDS and len(jobs) > 1:
        conn.execute(
            FINISH_ALL_WITH_RESULTS,
            finish_jobs_arguments([job["id"] for job in jobs], ["succeeded"] * len(jobs), results),
        )
        return
    for job, result in zip(jobs, results, strict=True):
        conn.execute(
            FINISH_WITH_RESULT,
            {"job_id": job["id"], "status": "succeeded", "delete_job": False, **result},
        )


# --- PostgreSQL's CPU, when it runs on this machine ---------------------------------------


def _server_processes(conn: psycopg.Connection[Any]) -> list[psutil.Process] | None:
    """The processes of `conn`'s server (its postmaster and every child) if it runs on this
    machine, else None: then every process the server lists (pg_stat_activity) is a child
    of the postmaster above `conn`'s backend here."""
    backend_pid = _one(conn, "SELECT pg_backend_pid()")
    listed = {row["pid"] for row in conn.execute("SELECT pid FROM pg_stat_activity")}
    try:
        postmaster = psutil.Process(backend_pid).parent()
        if postmaster is None:
            return None
        children = postmaster.children()
    except psutil.Error:
        return None
    if not listed <= {child.pid for child in children}:
        return None  # another machine's server: these pids are not its processes
    return [postmaster, *children]


def _cpu_seconds(processes: Iterable[psutil.Process]) -> dict[int, float]:
    """CPU time (user and system) each of `processes` used so far, by pid."""
    used = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile (an autovacuum worker)
            continue
        used[process.pid] = times.user + times.system
    return used


def _used_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings; a process started meanwhile counts whole. (A
    process that ended meanwhile is missed: PostgreSQL's come and go rarely, autovacuum's
    workers aside.)"""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _ms_per_job(seconds: float | None, jobs: int) -> float | None:
    return None if seconds is None else round(seconds * 1000 / jobs, 3)


# --- The measure ------------------------------------------------------------------------


def ceiling(jobs: int, connections: int) -> dict[str, Any]:
    """Queue `jobs` no-op jobs, fetch and finish them all from `connections` plain psycopg
    connections at once; the rate, and the CPU per job of PostgreSQL's processes (all of
    them, and the backends of these connections alone), of this client, and the rate
    PostgreSQL's CPU per job allows if it had every core of the machine (None where the
    server's processes cannot be read: it runs elsewhere)."""
    ids: list[int] = []
    for first in range(0, jobs, 5000):
        ids += worker_tasks.noop_sync.batch_defer(
            *(worker_tasks.noop_kwargs(n) for n in range(first, min(jobs, first + 5000)))
        )
    _analyze()
    with ExitStack() as stack:
        conns = [
            stack.enter_context(
                psycopg.connect(**connection_kwargs(), autocommit=True, row_factory=dict_row)
            )
            for _ in range(connections)
        ]
        worker_id = _one(conns[0], sql.queries["register_worker"])
        try:
            backends = [psutil.Process(_one(conn, "SELECT pg_backend_pid()")) for conn in conns]
            server = _server_processes(conns[0])
            client = psutil.Process()
            start = threading.Barrier(connections + 1)
            with ThreadPoolExecutor(max_workers=connections) as pool:
                done = [pool.submit(_fetch_and_finish, conn, worker_id, start) for conn in conns]
                server_before = _cpu_seconds(server or [])
                backends_before = _cpu_seconds(backends if server else [])
                client_before = sum(client.cpu_times()[:2])
                start.wait()
                started = time.perf_counter()
                finished = sum(future.result() for future in done)
                seconds = time.perf_counter() - started
                client_seconds = sum(client.cpu_times()[:2]) - client_before
                server_seconds = backend_seconds = None
                if server:
                    # Listed again: a process the server started meanwhile counts too.
                    server_after = _cpu_seconds(_server_processes(conns[0]) or server)
                    server_seconds = _used_since(server_before, server_after)
                    backend_seconds = _used_since(backends_before, _cpu_seconds(backends))
        finally:
            conns[0].execute(sql.queries["unregister_worker"], {"worker_id": worker_id})
    _check_all_succeeded(ids, finished)
    server_ms = _ms_per_job(server_seconds, jobs)
    return {
        **rate(jobs, seconds),
        "connections": connections,
        "server_cpu_ms_per_job": server_ms,
        "backend_cpu_ms_per_job": _ms_per_job(backend_seconds, jobs),
        "client_cpu_ms_per_job": _ms_per_job(client_seconds, jobs),
        "cpu_bound_per_second": (
            round((os.cpu_count() or 1) * 1000 / server_ms, 1) if server_ms else None
        ),
    }


def _check_all_succeeded(ids: list[int], finished: int) -> None:
    """Each queued job was fetched once and ended as a worker ends it, its result row with it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) AND status = 'succeeded'",
            [ids],
        )
        succeeded = int(cursor.fetchone()[0])
    results = JobResult.objects.filter(job_id__in=ids, status=JobResult.Status.SUCCEEDED).count()
    if not finished == succeeded == results == len(ids):
        raise RuntimeError(
            f"ceiling: {finished} jobs fetched and finished, {succeeded} succeeded, "
            f"{results} result rows, of {len(ids)} queued"
        )
