"""A thread for every slot of a worker that runs sync tasks (jobs.task_threads)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.task_threads import (
    RESERVE_THREADS,
    ensure_task_threads,
    python_default_threads,
    threads_needed,
)
from jobs.testing import WorkerProcess, wait_until
from tests.slow_tasks import start_then_wait

StartWorker = Callable[..., WorkerProcess]


@pytest.mark.django_db(transaction=True)
def test_worker__runs_as_many_sync_tasks_at_once_as_it_has_slots(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    # More slots than the threads Python gives an event loop by itself on this machine.
    slots = python_default_threads() + 2
    start_worker("--queues", "tests", "--concurrency", str(slots))
    release = tmp_path / "release"
    started = [tmp_path / f"started-{n}" for n in range(slots)]
    # Each waits longer than the test looks: a task that never got a thread is not
    # mistaken for one that started after another gave up.
    ids = [
        start_then_wait.defer(started=str(path), path=str(release), timeout=120) for path in started
    ]

    def running() -> bool:
        return all(path.exists() for path in started)

    try:
        wait_until(running, what=f"{slots} sync tasks running at once")
    finally:
        release.touch()
    wait_until(
        lambda: ProcrastinateJob.objects.filter(id__in=ids, status="succeeded").count() == slots,
        what="every job succeeded",
    )


class _Worker:
    """As much of procrastinate's worker as the middleware reads."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency


def _at_once(calls: int, *workers: _Worker, wait: float = 30) -> bool:
    """Whether `calls` blocking calls sent to a new event loop's default executor run all
    at once (within `wait` seconds), after the middleware's sizing for `workers`."""

    async def run() -> bool:
        for worker in workers:
            ensure_task_threads(worker)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        barrier = threading.Barrier(calls, timeout=wait)
        try:
            await asyncio.gather(*(loop.run_in_executor(None, barrier.wait) for _ in range(calls)))
        except threading.BrokenBarrierError:
            return False
        return True

    return asyncio.run(run())


def test_ensure_task_threads__a_thread_for_every_slot_of_every_worker_of_the_loop() -> None:
    first, second = _Worker(python_default_threads()), _Worker(3)
    # One thread per slot of both workers (a worker seen again counts once) and the
    # reserve: that many calls run at once, and not one more.
    threads = first.concurrency + second.concurrency + RESERVE_THREADS
    assert _at_once(threads, first, second, first)
    assert not _at_once(threads + 1, first, second, first, wait=2)


def test_ensure_task_threads__few_slots_keep_pythons_executor() -> None:
    assert threads_needed(1) == python_default_threads()
    assert not _at_once(python_default_threads() + 1, _Worker(1), wait=2)
