"""A thread for every slot of a worker that runs sync tasks (jobs.task_threads)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.task_threads import ensure_task_threads, python_default_threads, threads_needed
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


def _at_once(calls: int, *workers: _Worker) -> bool:
    """Whether `calls` blocking calls sent to a new event loop's default executor run all
    at once, after the middleware's sizing for `workers` (none: the loop as Python makes
    it)."""

    async def run() -> bool:
        for worker in workers:
            ensure_task_threads(worker)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        barrier = threading.Barrier(calls, timeout=2)
        try:
            await asyncio.gather(*(loop.run_in_executor(None, barrier.wait) for _ in range(calls)))
        except threading.BrokenBarrierError:
            return False
        return True

    return asyncio.run(run())


def test_ensure_task_threads__a_thread_for_every_slot_of_every_worker_of_the_loop() -> None:
    first, second = _Worker(8), _Worker(python_default_threads())
    slots = first.concurrency + second.concurrency
    # Python's own executor runs fewer calls at once: the last check can fail.
    assert not _at_once(python_default_threads() + 1)
    # A worker seen again changes nothing; the two workers' slots add up.
    assert _at_once(slots, first, second, first)
    assert threads_needed(slots) == slots + python_default_threads()
