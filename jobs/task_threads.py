"""A thread for every slot of a worker that runs sync tasks.

procrastinate runs a sync task in a thread of the event loop's default executor (asgiref's
`sync_to_async`, not thread-sensitive). Python sizes that executor by the machine, not by
the worker: `min(32, CPUs + 4)` threads (the CPUs the process may use), 6 on 2 cores. A
worker started with more slots than that (`run_workers`' default is 8 per process) would
run at most that many sync tasks at once, the other slots' jobs claimed but waiting for a
thread: a site running blocking jobs (an HTTP call, a slow query) would get less
concurrency than it asked for, and a job's time limit would count its wait for a thread.

The worker middleware `size_task_threads` (installed with the app's worker extras,
jobs/worker.py) gives the event loop, as a worker runs its first job, a default executor
with a thread for each slot of the workers seen on that loop and RESERVE_THREADS more for
the executor's other uses (name lookups, a sync task past its time limit whose thread
cannot be stopped), when that is more than Python's own size and than what it gave the
loop before. Threads are still started only when a task needs one. The executor it
replaces (Python's, or one the site set itself) is no longer the loop's: the calls it runs
finish, and its idle threads exit with it.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procrastinate import job_context
    from procrastinate import worker as procrastinate_worker


# Threads beyond one per slot: the default executor's other uses (module docstring).
RESERVE_THREADS = 4


def python_default_threads() -> int:
    """The threads of the executor an event loop makes for itself (concurrent.futures:
    the CPUs this process may use, plus 4, at most 32)."""
    # What the executor itself counts from Python 3.13 (os.cpu_count before).
    cpus = getattr(os, "process_cpu_count", os.cpu_count)()
    return min(32, (cpus or 1) + 4)


class _LoopThreads:
    """The workers seen on one event loop, and the threads of the executor given to it."""

    def __init__(self) -> None:
        self.workers: weakref.WeakKeyDictionary[procrastinate_worker.Worker, int] = (
            weakref.WeakKeyDictionary()
        )
        self.threads = python_default_threads()


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopThreads] = (
    weakref.WeakKeyDictionary()
)


def threads_needed(slots: int) -> int:
    """The threads for workers with `slots` slots in all: one each and the reserve, never
    fewer than Python's own executor has."""
    return max(python_default_threads(), slots + RESERVE_THREADS)


def ensure_task_threads(worker: procrastinate_worker.Worker) -> None:
    """Give the running loop a default executor with a thread for each slot of `worker` and
    of the other workers seen on it (module docstring), if it has fewer."""
    loop = asyncio.get_running_loop()
    known = _loops.get(loop)
    if known is None:
        known = _loops[loop] = _LoopThreads()
    slots = max(1, int(worker.concurrency))
    if known.workers.get(worker) == slots:
        return
    known.workers[worker] = slots
    needed = threads_needed(sum(known.workers.values()))
    if needed > known.threads:
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=needed, thread_name_prefix="jobs-task")
        )
        known.threads = needed


async def size_task_threads(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Worker middleware: enough threads for the worker's sync tasks (module docstring),
    before its first job's task runs in one."""
    ensure_task_threads(worker)
    return await call_next()
