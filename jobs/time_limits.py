"""Time limits: an attempt that runs too long is stopped, fails, and frees its slot.

A task declares its limit in seconds, a procrastinate task with `@time_limit(30)` above
`@app.task(...)`, a Django task with `@task(time_limit=30)`; the others get the site's
`JOBS_TIME_LIMIT` (none by default). The worker middleware `enforce_time_limits` (installed
with the result recorder, jobs/worker.py) times every attempt on the worker's event loop.

- An async task past its limit is cancelled, as `asyncio.timeout` does.
- A sync task runs in a thread, which Python cannot kill. It first gets a soft stop:
  `TimeLimitExceeded` is raised in its thread (CPython's PyThreadState_SetAsyncExc), which
  Python code sees at its next bytecode, and which `except Exception` in the task may catch
  to clean up. A thread blocked in C (a socket read with no timeout) does not see it.
  `JOBS_TIME_LIMIT_GRACE_SECONDS` later, if the attempt still runs, its worker process is
  replaced: it takes no new job (procrastinate's graceful `worker.stop()`), lets its other
  running jobs finish within the worker's graceful timeout, then ends the stuck attempt as
  failed (so another process retries it) and exits with `REPLACE_EXIT_CODE`: `os._exit`, as
  Python would otherwise wait forever for the stuck thread at exit. `run_workers` starts a
  new worker at once; a standalone `procrastinate worker` leaves it to its supervisor.

Either way the attempt ends as failed with `TimeLimitExceeded` (its result row and attempts
log say so, jobs/results.py) and its retry policy decides whether it runs again: a policy
with `retry_exceptions` retries it only if it lists TimeLimitExceeded (or Exception).

A stuck attempt is ended only once nothing else runs in its process, and the process exits
right after that is recorded: the retry runs in another process, never beside the stuck
thread that could still wake up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import inspect
import logging
import os
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connections
from procrastinate.tasks import Task
from procrastinate.testing import InMemoryConnector

from jobs.conf import jobs_settings, seconds_problem
from jobs.prefetch import ClaimedJobs
from jobs.processes import REPLACE_EXIT_CODE

if TYPE_CHECKING:
    from procrastinate import job_context
    from procrastinate import worker as procrastinate_worker

logger = logging.getLogger(__name__)

__all__ = ["REPLACE_EXIT_CODE", "TimeLimitExceeded", "time_limit"]

TaskT = TypeVar("TaskT", bound=Task[Any, Any, Any])


class TimeLimitExceeded(Exception):
    """An attempt ran past its task's time limit and was stopped.

    An Exception, not a BaseException: a task may catch it to clean up, and retry policies
    that retry on any exception retry it."""


# --- Declaring ------------------------------------------------------------------------------

# The declared limit of each task, by task name (procrastinate tasks and Django tasks alike).
_declared: dict[str, float] = {}


def checked_seconds(value: object, *, what: str) -> float:
    """`value` as a time limit in seconds; a clear TypeError or ValueError otherwise."""
    if (problem := seconds_problem(value)) is not None:
        error = TypeError if "not a number" in problem else ValueError
        raise error(f"{what} = {value!r} is refused: {problem}; give a number of seconds above 0.")
    assert isinstance(value, int | float)
    return float(value)


def declare_time_limit(task_name: str, seconds: object) -> None:
    """Give the task called `task_name` a time limit of `seconds`. Declaring it again with
    the same limit changes nothing (a module imported twice); with another is an error."""
    limit = checked_seconds(seconds, what=f"The time limit of {task_name!r}")
    known = _declared.get(task_name)
    if known is not None and known != limit:
        raise ValueError(
            f"Task {task_name!r} already has a time limit of {known:g} s; it cannot also "
            f"have {limit:g} s."
        )
    _declared[task_name] = limit


def time_limit(seconds: float) -> Callable[[TaskT], TaskT]:
    """Give a procrastinate task a time limit, above its `@app.task(...)`:

        @time_limit(30)
        @app.task(name="shop.sync_stock", queue="shop")
        def sync_stock() -> None: ...

    Django tasks take `@task(time_limit=30)` instead.
    """
    limit = checked_seconds(seconds, what="time_limit")

    def decorate(task: TaskT) -> TaskT:
        if not isinstance(task, Task):
            raise TypeError(
                f"@time_limit goes above @app.task(...), on a procrastinate task, not on "
                f"{task!r}; a Django task takes @task(time_limit=...)."
            )
        declare_time_limit(task.name, limit)
        return task

    return decorate


def time_limit_of(task_name: str) -> float | None:
    """The time limit of the task called `task_name`: its own, else the site's."""
    declared = _declared.get(task_name)
    if declared is not None:
        return declared
    default = jobs_settings.JOBS_TIME_LIMIT
    return None if default is None else float(default)


# --- Enforcing ------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Attempt:
    """A running attempt, as the time-limit middleware and the task's thread share it."""

    job_id: int
    task_name: str
    task: asyncio.Task[Any]
    seconds: float | None
    sync: bool
    # Cancellations of the asyncio task already requested when the attempt started.
    cancelling: int
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    # The thread running the task's own code (sync tasks), while it runs it.
    thread_id: int | None = None
    # The limit has passed: the soft stop is due (sent to the thread, or the thread is
    # told as it starts).
    stopped: bool = False
    sent: bool = False
    # The attempt did not stop within the grace period: its process is replaced.
    abandoned: bool = False
    # The middleware cancelled the asyncio task (async: at the limit; sync: abandoned).
    cancelled: bool = False
    timer: asyncio.TimerHandle | None = None

    def message(self) -> str:
        assert self.seconds is not None
        text = f"Job {self.job_id} ({self.task_name}) ran past its time limit of {self.seconds:g} s"
        if self.abandoned:
            grace = float(jobs_settings.JOBS_TIME_LIMIT_GRACE_SECONDS)
            text += (
                f" and did not stop within {grace:g} s more: its worker process is replaced, "
                "and the job is retried elsewhere if its retry policy allows"
            )
        return text + "."

    # The task's thread: `enter`, the task's code, `leave`. The soft stop is sent only in
    # between, under the lock, and one still pending when the thread leaves is withdrawn.

    def enter(self) -> None:
        with self.lock:
            if self.stopped:  # the limit passed while the task waited for a thread
                raise TimeLimitExceeded(self.message())
            self.thread_id = threading.get_ident()

    def leave(self) -> None:
        with self.lock:
            if self.sent and self.thread_id is not None:
                _set_async_exc(self.thread_id, None)  # withdraw it if not delivered yet
            self.thread_id = None

    def soft_stop(self) -> None:
        with self.lock:
            self.stopped = True
            if self.thread_id is not None and not self.sent:
                self.sent = True
                _set_async_exc(self.thread_id, TimeLimitExceeded)


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> None:
    """Raise `exception` in the thread `thread_id` at its next bytecode (None: withdraw a
    pending one). CPython's own way to interrupt another thread's Python code."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exception is None else ctypes.py_object(exception)
    )


@dataclasses.dataclass(eq=False)
class _WorkerState:
    """One worker's running attempts, and its replacement once one of them is stuck."""

    running: dict[int, _Attempt] = dataclasses.field(default_factory=dict)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    replacement: asyncio.Task[None] | None = None


_workers: weakref.WeakKeyDictionary[procrastinate_worker.Worker, _WorkerState] = (
    weakref.WeakKeyDictionary()
)
# Every running attempt of this process by job id, for the task middleware in the threads.
_attempts: dict[int, _Attempt] = {}


def _is_async(worker: procrastinate_worker.Worker, task_name: str) -> bool:
    task = worker.app.tasks.get(task_name)
    return task is None or inspect.iscoroutinefunction(task.func)


async def enforce_time_limits(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Worker middleware: stop an attempt at its time limit (module docstring). It must run
    inside the result recorder, which then records the TimeLimitExceeded it raises."""
    job = context.job
    assert job.id is not None
    task = asyncio.current_task()
    assert task is not None
    state = _workers.get(worker)
    if state is None:
        state = _workers[worker] = _WorkerState()
    seconds = time_limit_of(job.task_name)
    attempt = _Attempt(
        job_id=job.id,
        task_name=job.task_name,
        task=task,
        seconds=seconds,
        sync=seconds is not None and not _is_async(worker, job.task_name),
        cancelling=task.cancelling(),
    )
    # Every attempt is known, limited or not: a replaced process waits for all of them.
    state.running[job.id] = attempt
    _attempts[job.id] = attempt
    if seconds is not None:
        attempt.timer = asyncio.get_running_loop().call_later(
            seconds, _on_limit, state, attempt, worker
        )
    try:
        return await call_next()
    except asyncio.CancelledError:
        if attempt.cancelled:
            attempt.cancelled = False  # taken back below
            if task.uncancel() <= attempt.cancelling:  # no other cancellation meanwhile
                raise TimeLimitExceeded(attempt.message()) from None
        raise
    except Exception as exc:
        if isinstance(exc, TimeLimitExceeded):
            if not exc.args:  # raised in the thread by the soft stop, which cannot say why
                exc.args = (attempt.message(),)
        elif attempt.stopped:  # the task turned the stop into an error of its own
            raise TimeLimitExceeded(attempt.message()) from exc
        raise
    finally:
        if attempt.cancelled:
            task.uncancel()  # the task went on after its cancellation: how it ended stands
        if attempt.timer is not None:
            attempt.timer.cancel()
        del state.running[job.id]
        _attempts.pop(job.id, None)
        state.changed.set()


def run_in_limited_thread(
    call_next: Callable[[], Any],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Task middleware of sync tasks (it runs in the task's thread): lets the soft stop of
    `enforce_time_limits` reach this thread while, and only while, the task runs."""
    attempt = _attempts.get(context.job.id) if context.job.id is not None else None
    if attempt is None or not attempt.sync:
        return call_next()
    attempt.enter()
    try:
        value = call_next()
    except BaseException as exc:
        _leave(attempt)
        if isinstance(exc, TimeLimitExceeded):
            # Cut anywhere, maybe inside a query: the next job gets none of its connections.
            connections.close_all()
            if not exc.args:
                exc.args = (attempt.message(),)
        raise
    _leave(attempt)
    return value


def _leave(attempt: _Attempt) -> None:
    try:
        attempt.leave()
    except TimeLimitExceeded:
        # Delivered as the task ended: how the task ended stands. Sent once per attempt,
        # so leaving again meets no other.
        attempt.leave()


def _on_limit(state: _WorkerState, attempt: _Attempt, worker: procrastinate_worker.Worker) -> None:
    if attempt.task.done():
        return
    if not attempt.sync:
        logger.warning("%s Cancelling it.", attempt.message())
        attempt.stopped = attempt.cancelled = True
        attempt.task.cancel()
        return
    grace = float(jobs_settings.JOBS_TIME_LIMIT_GRACE_SECONDS)
    logger.warning(
        "%s Raising TimeLimitExceeded in its thread; it has %g s to stop.",
        attempt.message(),
        grace,
    )
    attempt.soft_stop()
    attempt.timer = asyncio.get_running_loop().call_later(grace, _on_grace, state, attempt, worker)


def _on_grace(state: _WorkerState, attempt: _Attempt, worker: procrastinate_worker.Worker) -> None:
    if attempt.task.done():
        return
    if isinstance(worker.app.connector, InMemoryConnector):
        # Eager mode in tests: the worker shares the test's process, which must not exit.
        logger.error("%s Its thread does not stop.", attempt.message())
        return
    attempt.abandoned = True
    logger.error(
        "%s The worker takes no new job, lets its other jobs finish, then exits with code %s.",
        attempt.message(),
        REPLACE_EXIT_CODE,
    )
    state.changed.set()
    if state.replacement is None:
        worker.stop()  # type: ignore[no-untyped-call]
        state.replacement = asyncio.get_running_loop().create_task(
            _replace_process(state, worker), name="replace worker process"
        )


async def _replace_process(state: _WorkerState, worker: procrastinate_worker.Worker) -> None:
    """Let the other attempts finish (within the worker's graceful timeout), end the stuck
    ones as failed, and exit, so that their retries run in another process."""
    loop = asyncio.get_running_loop()
    graceful = worker.shutdown_graceful_timeout
    deadline = None if graceful is None else loop.time() + graceful
    try:
        await _wait_for_others(state, deadline)
        stuck = [attempt for attempt in state.running.values() if attempt.abandoned]
        for attempt in stuck:
            attempt.cancelled = True
            attempt.task.cancel()
        # Their ends are recorded (failed, to retry) when their asyncio tasks are done.
        if stuck:
            await asyncio.wait([attempt.task for attempt in stuck])
        # The jobs the worker claimed and did not start go back to the queue: it exits
        # without unregistering (jobs/prefetch.py).
        claimed_jobs = getattr(worker.app.connector, "claimed_jobs", None)
        if isinstance(claimed_jobs, ClaimedJobs) and worker.worker_id is not None:
            await claimed_jobs.give_back(worker.worker_id)
    finally:
        # At once: from now on another process may take their retries. procrastinate does
        # not unregister the worker: its row ages out as a killed worker's does, which
        # leaves recovery nothing to find (its jobs all ended).
        _exit_for_replacement()


async def _wait_for_others(state: _WorkerState, deadline: float | None) -> None:
    loop = asyncio.get_running_loop()
    while any(not attempt.abandoned for attempt in state.running.values()):
        state.changed.clear()
        timeout = None if deadline is None else deadline - loop.time()
        if timeout is not None and timeout <= 0:
            return
        try:
            await asyncio.wait_for(state.changed.wait(), timeout)
        except TimeoutError:
            return


def _exit_for_replacement() -> None:
    logger.error(
        "Worker process %s exits with code %s, to be replaced: a job did not stop at its "
        "time limit.",
        os.getpid(),
        REPLACE_EXIT_CODE,
    )
    # os._exit skips Python's exit, which would wait for the stuck thread forever: flush
    # what it would have flushed.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(REPLACE_EXIT_CODE)
