"""Several jobs per round trip: a worker's free slots filled by one claim.

procrastinate's worker fetches one job per free slot, one fetch after the other, each a round
trip to PostgreSQL and a transaction of its own. The worker connector (jobs/connector.py)
claims instead, at a fetch that finds nothing claimed for the worker already, up to one job
per free slot of the worker with `jobs_fetch_jobs_v1` (migration jobs.0015): the app's own
fetch, `jobs_fetch_job_v1`, run once per job in one statement, so the rules are the same
(procrastinate's lock and priority order, paused queues, limits), each later claim seeing
the earlier ones. The connector hands the first job to the slot that asked and keeps the
others, in the order they were claimed, for the worker's next fetches: the worker makes
them at once, one per free slot, and gets them without a round trip.

**Free slots.** A worker's concurrency minus the jobs the connector handed to it whose end
has not been sent yet. Its concurrency is told by the worker middleware
`register_worker_slots` (every job's, installed with the app's worker extras, jobs/worker.py)
when it runs the worker's first job; until then a fetch claims one job. A job ends, for the
count, when the worker sends its end through the connector (procrastinate's `finish_job` or
`retry_job` statement), not when its asyncio task is over: every job a worker started ends
with exactly one of them, however it ends (succeeded, failed, retried, aborted, past its
time limit, its task not found, which no middleware sees), so no job is counted running
forever. Once its end is sent, no code of the task runs any more: its slot is free but for
that round trip. Counting it free then lets one claim fill the slots of jobs that ended
together, whose ends are on their way (with no-op jobs, claims of 3 to 4 jobs for 4 slots
instead of 2): such a job is kept for the length of a round trip. No claimed job waits
behind a running task while another worker idles.

**Given back.** A worker that stops (SIGTERM, its process replaced after a time limit, a
failed side task) fetches no more: the jobs it claimed and did not start are given back at
once, with `jobs_release_jobs_v1` (`todo` again, no worker, their history as if they had
never been claimed, announced to idle workers), as soon as procrastinate's worker is told to
stop, not after its running jobs end. A claim that returns while its worker stops gives its
extra jobs back right away; anything left is given back when the worker unregisters and when
the connector closes.

**A crash** (SIGKILL, a lost machine) leaves the claimed jobs `doing` for a worker that no
longer beats: stalled-job recovery (jobs/stalled.py) retries them as it does the job the
worker was running, recording a lost attempt. A claim whose reply is lost after its commit
(a cut network path) leaves its jobs `doing` until the worker stops, as a single fetch
would leave one; recovery then retries them.

**Pauses and limits** are checked at each claim. A job claimed just before its queue was
paused may still start, as one fetched just before it would: claimed jobs are handed out at
once. A rate limit counts a given-back job's start (it stays in `jobs_limitstart`): the
window errs on the side of fewer starts, never more.

`JOBS_FETCH_MANY = False` fetches one job at a time, with the app's fetch; so does a worker
whose database lacks migration jobs.0015 (with a warning each minute). Workers that fetch
with procrastinate's function (JOBS_FETCH_WITH_LIMITS = False) fetch one job at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, LiteralString

if TYPE_CHECKING:
    from procrastinate import job_context
    from procrastinate import worker as procrastinate_worker

logger = logging.getLogger(__name__)

# The columns of procrastinate's fetch, in its order.
FETCH_COLUMNS = (
    "id",
    "status",
    "task_name",
    "priority",
    "lock",
    "queueing_lock",
    "args",
    "scheduled_at",
    "queue_name",
    "attempts",
    "worker_id",
)
# Up to %(n)s jobs, in the order they were claimed (migration jobs.0015).
FETCH_JOBS: LiteralString = (
    "SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, "
    "queue_name, attempts, worker_id "
    "FROM jobs_fetch_jobs_v1(%(queues)s::varchar[], %(worker_id)s, %(limits)s::jsonb, %(n)s) "
    "WITH ORDINALITY AS claimed ORDER BY claimed.ordinality"
)
RELEASE_JOBS: LiteralString = (
    "SELECT job_id, status::text FROM jobs_release_jobs_v1(%(ids)s::bigint[], %(worker_id)s)"
)

# Runs a statement (with the connector's retries) and returns its rows.
RunStatement = Callable[[LiteralString, dict[str, Any]], Awaitable[list[dict[str, Any]]]]


@dataclass
class _WorkerClaims:
    slots: int = 1  # its concurrency, once its middleware told it
    claimed: deque[dict[str, Any]] = field(default_factory=deque)  # not handed out yet
    running: set[int] = field(default_factory=set)  # handed out, not ended
    stopping: bool = False
    watcher: asyncio.Task[None] | None = None
    # Held while giving back: unregistering (which nulls the jobs' worker) waits for it.
    giving_back: asyncio.Lock = field(default_factory=asyncio.Lock)


class ClaimedJobs:
    """The jobs one connector claimed for its workers, by worker id (module docstring)."""

    def __init__(self, run: RunStatement) -> None:
        self._run = run
        self._workers: dict[int, _WorkerClaims] = {}
        self._worker_of_job: dict[int, int] = {}

    def _claims(self, worker_id: int) -> _WorkerClaims:
        claims = self._workers.get(worker_id)
        if claims is None:
            claims = self._workers[worker_id] = _WorkerClaims()
        return claims

    def know_worker(self, worker: procrastinate_worker.Worker) -> None:
        """Learn `worker`'s concurrency, and give its claimed jobs back when it stops."""
        if worker.worker_id is None:
            return
        claims = self._claims(worker.worker_id)
        claims.slots = max(1, int(worker.concurrency))
        # procrastinate 3.10 has no public way to hear that a worker stops: its stop event
        # is set by every stop (signals, worker.stop(), a failed side task). Without it the
        # jobs are given back when the worker unregisters.
        stop_event = getattr(worker, "_stop_event", None)
        if claims.watcher is None and isinstance(stop_event, asyncio.Event):
            claims.watcher = asyncio.create_task(
                self._give_back_on_stop(worker.worker_id, stop_event),
                name=f"give back claimed jobs of worker {worker.worker_id}",
                # Not the context of the job whose middleware calls this (its attempt).
                context=contextvars.Context(),
            )

    async def _give_back_on_stop(self, worker_id: int, stop_event: asyncio.Event) -> None:
        await stop_event.wait()
        self._claims(worker_id).stopping = True
        await self.give_back(worker_id)

    def take_claimed(self, worker_id: int) -> dict[str, Any] | None:
        """The next job claimed for `worker_id` and not handed out yet, if any."""
        claims = self._workers.get(worker_id)
        if claims is None or not claims.claimed:
            return None
        return claims.claimed.popleft()

    def slots_to_claim(self, worker_id: int) -> int:
        """How many jobs a claim for `worker_id` may take: its free slots, at least one (the
        slot that asks)."""
        claims = self._claims(worker_id)
        return max(1, claims.slots - len(claims.running) - len(claims.claimed))

    async def keep(self, worker_id: int, rows: list[dict[str, Any]]) -> None:
        """Keep the jobs of a claim that were not handed out, for the worker's next fetches
        (or give them back at once if it is stopping)."""
        if not rows:
            return
        claims = self._claims(worker_id)
        claims.claimed.extend(rows)
        if claims.stopping:
            await self.give_back(worker_id)

    def handed_out(self, worker_id: int, job_id: int) -> None:
        """Job `job_id` went to a slot of `worker_id` (whatever fetched it)."""
        self._claims(worker_id).running.add(job_id)
        self._worker_of_job[job_id] = worker_id

    def ended(self, job_id: int) -> None:
        """The end of job `job_id` is on its way: its slot is free but for that round trip."""
        worker_id = self._worker_of_job.pop(job_id, None)
        if worker_id is not None and (claims := self._workers.get(worker_id)) is not None:
            claims.running.discard(job_id)

    async def give_back(self, worker_id: int) -> None:
        """Give back the jobs claimed for `worker_id` that it did not start. A failure is
        logged: they stay `doing` until stalled-job recovery retries them."""
        claims = self._workers.get(worker_id)
        if claims is None:
            return
        async with claims.giving_back:
            ids = [int(row["id"]) for row in claims.claimed]
            claims.claimed.clear()
            if not ids:
                return
            try:
                rows = await self._run(RELEASE_JOBS, {"ids": ids, "worker_id": worker_id})
            except Exception:
                logger.exception(
                    "Could not give back jobs %s, claimed by worker %s and not started: "
                    "they stay doing until stalled-job recovery retries them",
                    ", ".join(map(str, ids)),
                    worker_id,
                )
                return
        given = {int(row["job_id"]): str(row["status"]) for row in rows}
        logger.info(
            "Gave back %s claimed jobs that worker %s did not start: %s",
            len(given),
            worker_id,
            ", ".join(map(str, sorted(given))),
        )
        cancelled = sorted(job_id for job_id, status in given.items() if status == "cancelled")
        if cancelled:
            logger.warning(
                "Jobs %s were cancelled as they were given back: an abort was asked for "
                "while they were claimed, or another waiting job holds their queueing lock",
                ", ".join(map(str, cancelled)),
            )

    async def forget(self, worker_id: int) -> None:
        """`worker_id` unregistered: drop what is known of it."""
        claims = self._workers.pop(worker_id, None)
        if claims is None:
            return
        for job_id in claims.running:
            self._worker_of_job.pop(job_id, None)
        await _stop_watching(claims)

    async def close(self) -> None:
        """Give back every worker's claimed jobs; stop watching the workers."""
        for worker_id in list(self._workers):
            await self.give_back(worker_id)
        for claims in self._workers.values():
            await _stop_watching(claims)


async def _stop_watching(claims: _WorkerClaims) -> None:
    watcher = claims.watcher
    if watcher is None or watcher is asyncio.current_task():
        return
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


async def register_worker_slots(
    call_next: Callable[[], Awaitable[Any]],
    context: job_context.JobContext,
    worker: procrastinate_worker.Worker,
) -> Any:
    """Worker middleware: tell the worker connector the worker's concurrency (its first
    job), so that its claims fill its free slots."""
    claimed_jobs = getattr(context.app.connector, "claimed_jobs", None)
    if isinstance(claimed_jobs, ClaimedJobs):
        claimed_jobs.know_worker(worker)
    return await call_next()
