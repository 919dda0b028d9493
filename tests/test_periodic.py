"""Periodic tasks: deferred at their ticks with the tick's timestamp, each tick once."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.periodic import PeriodicDeferrer

from jobs.testing import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def due_at(moment: dt.datetime) -> dict[str, int]:
    """What procrastinate's deferrer, started at `moment`, defers: {task: tick}."""
    deferrer = PeriodicDeferrer(registry=app.periodic_registry)
    jobs = list(deferrer.get_previous_tasks(at=moment.timestamp()))
    async_to_sync(deferrer.defer_jobs)(jobs)
    return {periodic.task.name: tick for periodic, tick in jobs}


def test_periodic__ticks_due_just_after_ten_past_midnight() -> None:
    moment = dt.datetime(2026, 3, 2, 0, 10, 1, tzinfo=dt.UTC)
    tick = int(dt.datetime(2026, 3, 2, 0, 10, tzinfo=dt.UTC).timestamp())

    due = due_at(moment)

    # Every minute, every 10 minutes and 00:10 daily fall on 00:10:00; the hourly prune's
    # last tick (00:00) is more than procrastinate's 10-minute catch-up window ago. The
    # stored schedules' scheduler ticks every second: its last tick before 00:10:01 too.
    assert due == {
        "jobs.recover_stalled_jobs": tick,
        "jobs.delete_expired_comments": tick,
        "jobs.compute_daily_statistics": tick,
        "jobs.run_schedules": tick,
    }
    jobs = {job.task_name: job for job in ProcrastinateJob.objects.all()}
    assert jobs["jobs.compute_daily_statistics"].args == {"timestamp": tick}
    assert jobs["jobs.compute_daily_statistics"].queue_name == "maintenance"


def test_periodic__generic_command_runner_ticks_with_its_kwargs() -> None:
    due = due_at(dt.datetime(2026, 3, 2, 3, 15, 1, tzinfo=dt.UTC))

    assert "jobs.run_management_command" in due
    job = ProcrastinateJob.objects.get(task_name="jobs.run_management_command")
    assert job.args == {
        "command": "clear_expired_sessions",
        "timestamp": due["jobs.run_management_command"],
    }


def test_periodic__same_tick_twice_is_deferred_once() -> None:
    moment = dt.datetime(2026, 3, 2, 0, 10, 1, tzinfo=dt.UTC)

    due_at(moment)
    due_at(moment)  # a second worker, same tick

    assert ProcrastinateJob.objects.filter(task_name="jobs.compute_daily_statistics").count() == 1


def test_periodic__several_worker_processes_defer_each_tick_once(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = {"PROCRASTINATE_IMPORT_PATHS": "tests.periodic_tasks"}
    workers = [start_worker("--queues", "tests", "--name", f"w{n}", **env) for n in range(3)]
    time.sleep(4)
    for worker in workers:
        assert worker.stop() == 0

    ticks = sorted(
        job["timestamp"]
        for job in ProcrastinateJob.objects.filter(task_name="tests.every_second").values_list(
            "args", flat=True
        )
    )
    assert len(ticks) >= 3
    assert len(ticks) == len(set(ticks)), "a tick was deferred more than once"
    assert ticks == list(range(ticks[0], ticks[-1] + 1)), "a tick was skipped"
