"""Stored schedules at scale (`manage.py bench_schedules`), in a process whose default
database is the benchmark's scratch database.

N enabled schedules of a no-op task, all due on the same second (the worst case: every
customer's nightly export at 03:00), tick `rounds` times, `every` seconds apart. Real worker
processes on the "maintenance" queue run the scheduler (jobs.run_schedules, deferred by
procrastinate every second); no worker takes the bench queue, so the scheduled jobs wait
and the figures are the scheduler's alone. For each round:

- lag: from each run's due time (`ScheduleRun.due_at`) to its job's `deferred` event in
  procrastinate_events. PostgreSQL stamps that event with its transaction's start (`now()`),
  and the scheduler defers a batch of 1,000 schedules per transaction;
- committed: from the due time to the end of the last scheduler tick that deferred the
  round's jobs: when every one of them could be fetched by a worker;
- ticks: each scheduler job that deferred some of them (jobs_jobresult): when it started
  after the due time, how long it took, how many jobs it deferred, on which worker.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

from bench import worker_tasks
from bench.timing import Latency
from bench.workers import running_workers
from jobs.models import JobResult, Schedule, ScheduleRun
from jobs.processes import worker_command

SCHEDULER = "jobs.run_schedules"


def seed(count: int, every: int) -> None:
    """`count` schedules of the no-op task every `every` seconds, disabled until `start`
    enables them."""
    Schedule.objects.bulk_create(
        (
            Schedule(
                task=worker_tasks.noop_async.name,
                kwargs=worker_tasks.noop_kwargs(n),
                description=f"bench {n}",
                interval=every,
                interval_unit=Schedule.Unit.SECONDS,
                enabled=False,
            )
            for n in range(count)
        ),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_schedule")


def start(every: int, rounds: int, lead: float = 2.0) -> dt.datetime:
    """Enable every schedule: `rounds` ticks `every` seconds apart, all on the same second,
    the first `lead` seconds or so from now; the first tick."""
    first = timezone.now() + dt.timedelta(seconds=lead)
    first = first.replace(microsecond=0) + dt.timedelta(seconds=1)
    # One statement, as a data migration would: every schedule's next run is its start.
    Schedule.objects.update(
        enabled=True,
        start_at=first,
        end_at=first + dt.timedelta(seconds=every * (rounds - 1)),
        next_run_at=first,
    )
    return first


def _scheduler_ticked_since(moment: dt.datetime) -> bool:
    return JobResult.objects.filter(
        task_name=SCHEDULER, status=JobResult.Status.SUCCEEDED, started_at__gt=moment
    ).exists()


def _wait(condition: Callable[[], bool], timeout: float, what: str, workers: list[Any]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if any(worker.poll() is not None for worker in workers):
            raise RuntimeError(f"a worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def run(
    *, schedules: int, rounds: int, every: int, workers: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Seed, tick with real workers, measure; the figures."""
    log(f"Seeding {schedules:,} schedules...")
    seed(schedules, every)
    expected = schedules * rounds
    with ExitStack() as stack:
        started = timezone.now()
        processes = [
            stack.enter_context(
                running_workers(
                    worker_command("--queues", "maintenance", "--name", f"scheduler{n}")
                )
            )
            for n in range(workers)
        ]
        _wait(
            lambda: _scheduler_ticked_since(started), 120, "the scheduler's first tick", processes
        )
        first = start(every, rounds)
        log(f"{rounds} rounds every {every} s from {first:%H:%M:%S} UTC, {workers} worker(s)...")
        timeout = (first - timezone.now()).total_seconds() + every * rounds + 600
        _wait(lambda: ScheduleRun.objects.count() >= expected, timeout, "every run", processes)
    return figures(schedules=schedules, rounds=rounds, every=every, workers=workers)


def figures(*, schedules: int, rounds: int, every: int, workers: int) -> dict[str, Any]:
    """What the runs and the scheduler's ticks recorded."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT run.due_at, extract(epoch FROM event.at - run.due_at)
            FROM jobs_schedulerun run
            JOIN procrastinate_events event
                ON event.job_id = run.job_id AND event.type = 'deferred'
            """
        )
        lags: dict[dt.datetime, list[float]] = defaultdict(list)
        for due_at, seconds in cursor.fetchall():
            lags[due_at].append(float(seconds))
        cursor.execute(
            "SELECT count(*), count(DISTINCT (schedule_id, due_at)) FROM jobs_schedulerun"
        )
        runs, distinct = cursor.fetchone()
    dues = sorted(lags)
    ticks = _scheduler_ticks()
    per_round = []
    for number, due_at in enumerate(dues):
        until = dues[number + 1] if number + 1 < len(dues) else None
        mine = [
            tick
            for tick in ticks
            if tick.started_at >= due_at and (until is None or tick.started_at < until)
        ]
        committed = max((tick.finished_at for tick in mine), default=None)
        per_round.append(
            {
                "due_at": due_at.isoformat(),
                "runs": len(lags[due_at]),
                "lag": Latency.of(lags[due_at]).__dict__,
                "committed_ms": None if committed is None else _ms(committed - due_at),
                "ticks": [
                    {
                        "started_ms": _ms(tick.started_at - due_at),
                        "duration_ms": _ms(tick.finished_at - tick.started_at),
                        "deferred": tick.deferred,
                        "worker": tick.worker,
                    }
                    for tick in mine
                ],
            }
        )
    every_lag = [lag for due_at in dues for lag in lags[due_at]]
    return {
        "cpu_count": os.cpu_count(),
        "schedules": schedules,
        "rounds": rounds,
        "every_seconds": every,
        "workers": workers,
        "runs": runs,
        "runs_expected": schedules * rounds,
        "ticks_deferred_twice": runs - distinct,
        "lag": Latency.of(every_lag).__dict__ if every_lag else None,
        "per_round": per_round,
    }


@dataclass(frozen=True)
class Tick:
    """A run of the scheduler that deferred jobs."""

    started_at: dt.datetime
    finished_at: dt.datetime
    deferred: int
    worker: str


def _scheduler_ticks() -> list[Tick]:
    rows = (
        JobResult.objects.filter(
            task_name=SCHEDULER, status=JobResult.Status.SUCCEEDED, finished_at__isnull=False
        )
        .order_by("started_at")
        .values_list("started_at", "finished_at", "return_value", "worker_name")
    )
    return [
        Tick(started, finished, int(value["deferred"]), worker)
        for started, finished, value, worker in rows
        if finished is not None and isinstance(value, dict) and value.get("deferred")
    ]


def _ms(delta: dt.timedelta) -> float:
    return round(delta.total_seconds() * 1000, 1)


def check(figures: dict[str, Any]) -> list[str]:
    """What went wrong, if anything: a run missing or a tick deferred twice."""
    problems = []
    if figures["runs"] != figures["runs_expected"]:
        problems.append(f"{figures['runs']:,} runs instead of {figures['runs_expected']:,}")
    if figures["ticks_deferred_twice"]:
        problems.append(f"{figures['ticks_deferred_twice']:,} ticks deferred twice")
    if len(figures["per_round"]) != figures["rounds"]:
        problems.append(f"{len(figures['per_round'])} due times instead of {figures['rounds']}")
    return problems
