"""The ends of jobs that finish together, recorded in one statement.

A worker records each job's end with procrastinate's `finish_job` statement, and with it
the job's result (jobs/results.py): a round trip and a commit per job. Short jobs of a
worker with several slots end within a few hundred microseconds of each other, so the
connector (jobs/connector.py) gathers them: an end waits for the event loop's current
turn to finish, then it and every end that arrived meanwhile, or while the previous
statement was on its way, are recorded by one statement, in one transaction. No end waits
for another job to end: a lone end goes at once, as before.

What does not change: each job's result is committed with its end; a job ends once; the
jobs of a batch are counted by its trigger (migration jobs.0010) in the same transaction.
Ends are recorded in the order of their batch (jobs without one first), so that two
workers' transactions take batch rows' locks in the same order and never wait on each
other in a cycle.

When the statement fails (one job was ended meanwhile by stalled-job recovery, or removed
by hand), nothing of it is written, and each end is recorded again on its own, exactly as
without gathering: the others are recorded, the failing one gets the error it always had.
A lost connection is retried by the connector as any statement; what is still lost after
that reaches every end's job, as it would have each.

Only `finish_job` statements that keep the job are gathered. A job to retry
(`retry_job`), a job deleted as it ends (`--delete-jobs`) and an end written with a
statement of its own are recorded alone. `JOBS_GATHER_JOB_ENDS = False` records every
end alone (for comparing the two).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, LiteralString

logger = logging.getLogger(__name__)

# procrastinate's finish function for each of the jobs, in the order of their batches.
# (OFFSET 0 keeps the ordered list apart: the function then runs row by row in its order.)
FINISH_JOBS: LiteralString = (
    "SELECT procrastinate_finish_job_v1(ended.job_id, ended.status, false) FROM ("
    "SELECT given.job_id, given.status FROM unnest(%(end_job_ids)s::bigint[], "
    "%(end_statuses)s::procrastinate_job_status[]) AS given (job_id, status) "
    "LEFT JOIN jobs_batchjob AS member ON member.job_id = given.job_id "
    "ORDER BY member.batch_id NULLS FIRST, given.job_id OFFSET 0) AS ended"
)


@dataclasses.dataclass
class JobEnd:
    """A job's end to record: its id, status and the statement written with it, if any
    (a WITH query's part, `name AS (...)`, whose parameters are arrays: one value per job,
    see jobs.results.UPSERT_SQL)."""

    job_id: int
    status: str
    with_statement: LiteralString | None
    with_arguments: dict[str, list[Any]]
    recorded: asyncio.Future[None]


# Records one end alone, as the connector always did.
RecordOne = Callable[[JobEnd], Awaitable[None]]
# Runs one statement with the connector's retries.
Run = Callable[[LiteralString, dict[str, Any]], Awaitable[None]]
# Whether an error means the connection was lost (jobs.connector.connection_lost).
Lost = Callable[[BaseException], bool]


class GatheredJobEnds:
    """The ends waiting for the next statement, and the task that sends them."""

    def __init__(self, run: Run, record_one: RecordOne, lost: Lost) -> None:
        self._run = run
        self._record_one = record_one
        self._lost = lost
        self._waiting: list[JobEnd] = []
        self._sender: asyncio.Task[None] | None = None

    async def record(
        self,
        job_id: int,
        status: str,
        with_statement: LiteralString | None = None,
        with_arguments: dict[str, list[Any]] | None = None,
    ) -> None:
        """Record the end of `job_id` (with `with_statement`), gathered with the others."""
        end = JobEnd(
            job_id,
            status,
            with_statement,
            with_arguments or {},
            asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(end)
        # Done without its `finally`: cancelled before its first step (the loop closing).
        if self._sender is None or self._sender.done():
            # Not in the context of the job whose end starts it: it records others' too.
            self._sender = asyncio.create_task(
                self._send_waiting(), name="record job ends", context=contextvars.Context()
            )
        # Shielded: a job cancelled now (a shutdown) still has its end recorded.
        await asyncio.shield(end.recorded)

    async def _send_waiting(self) -> None:
        waiting: list[JobEnd] = []
        try:
            while self._waiting:
                await asyncio.sleep(0)  # the ends of this turn of the event loop join
                waiting, self._waiting = self._waiting, []
                for ends in _by_statement(waiting):
                    await self._send(ends)
        finally:
            self._sender = None
            # Cancelled (the event loop closes): no job waits for an end never sent.
            for end in [*waiting, *self._waiting]:
                end.recorded.cancel()
            self._waiting = []

    async def _send(self, ends: list[JobEnd]) -> None:
        if len(ends) == 1:
            await self._record_alone(ends[0])
            return
        statement = ends[0].with_statement
        query = FINISH_JOBS if statement is None else "WITH " + statement + "\n" + FINISH_JOBS
        try:
            arguments = finish_jobs_arguments(
                [end.job_id for end in ends],
                [end.status for end in ends],
                [end.with_arguments for end in ends],
            )
            await self._run(query, arguments)
        except Exception as error:
            if self._lost(error):
                for end in ends:
                    _settle(end, error)
                return
            # One of them cannot end (or the database lacks a table): each alone.
            logger.debug("Recording %s job ends one by one: %s", len(ends), error)
            for end in ends:
                await self._record_alone(end)
            return
        for end in ends:
            _settle(end, None)

    async def _record_alone(self, end: JobEnd) -> None:
        try:
            await self._record_one(end)
        except Exception as error:
            _settle(end, error)
        else:
            _settle(end, None)


def merge_rows(rows: Iterable[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """The arguments of a statement written for several jobs (each parameter an array, one
    value per job, as jobs.results.UPSERT_SQL) that give it all of `rows`' values at once.
    TypeError for a value that is not such an array (a statement written for one job)."""
    merged: dict[str, list[Any]] = {}
    for row in rows:
        for name, values in row.items():
            if not isinstance(values, list):
                raise TypeError(f"{name} is not an array of one value per job")
            merged.setdefault(name, []).extend(values)
    return merged


def finish_jobs_arguments(
    job_ids: list[int], statuses: list[str], with_arguments: Iterable[dict[str, list[Any]]]
) -> dict[str, Any]:
    """The arguments of FINISH_JOBS (preceded by a statement written for several jobs, whose
    arguments for each job are `with_arguments`) that end `job_ids` as `statuses`."""
    return {"end_job_ids": job_ids, "end_statuses": statuses, **merge_rows(with_arguments)}


def _by_statement(ends: list[JobEnd]) -> list[list[JobEnd]]:
    """`ends` in groups that share the statement written with them (in order of arrival)."""
    groups: dict[str | None, list[JobEnd]] = {}
    for end in ends:
        groups.setdefault(end.with_statement, []).append(end)
    return list(groups.values())


def _settle(end: JobEnd, error: BaseException | None) -> None:
    if end.recorded.done():
        return
    if error is None:
        end.recorded.set_result(None)
    else:
        end.recorded.set_exception(error)
        # A job cancelled while waiting no longer reads it: no "never retrieved" warning.
        end.recorded.add_done_callback(lambda future: future.exception())
