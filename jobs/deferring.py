"""Deferring jobs with procrastinate's own SQL function, and learning when.

procrastinate's `defer()` returns a job's id. Django's task API and the stored schedules also
need the time the job was deferred as the database recorded it (its "deferred" event, at the
transaction's `now()`): `defer_jobs` runs procrastinate's `procrastinate_defer_jobs_v1`, the
function behind its `defer_jobs` query, and returns both in the same round trip, for any
number of jobs.

Always on Django's connection (procrastinate's database alias), inside the caller's
transaction, through procrastinate's Django connector. Not through the app's connector: in a
worker process that is the worker's own, whose connections commit each statement, so a job
deferred by a task (or a scheduler tick) would stay when the task's transaction rolls back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, LiteralString

from procrastinate import exceptions
from procrastinate.contrib.django import settings as procrastinate_settings
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.jobs import Job
from procrastinate.manager import QUEUEING_LOCK_CONSTRAINT
from procrastinate.types import JobToDefer

logger = logging.getLogger(__name__)

DEFER_SQL: LiteralString = """
SELECT id, now() AS deferred_at
FROM unnest(procrastinate_defer_jobs_v1(%(jobs)s::procrastinate_job_to_defer_v1[]))
    WITH ORDINALITY AS deferred(id, position)
ORDER BY position
"""


def django_connector() -> DjangoConnector:
    return DjangoConnector(alias=procrastinate_settings.settings.DATABASE_ALIAS)


def job_to_defer(job: Job) -> JobToDefer:
    """`job` as procrastinate's defer function takes it."""
    return JobToDefer(
        queue_name=job.queue,
        task_name=job.task_name,
        priority=job.priority,
        lock=job.lock,
        queueing_lock=job.queueing_lock,
        args=job.task_kwargs,
        scheduled_at=job.scheduled_at,
    )


@contextlib.contextmanager
def defer_statement() -> Iterator[Callable[..., list[dict[str, Any]]]]:
    """A function that runs a statement deferring jobs (`query`, then its parameters) on
    Django's connection and returns its rows; procrastinate's AlreadyEnqueued if a queueing
    lock is held (then the statement deferred nothing)."""
    connector = django_connector()

    def execute(query: LiteralString, **arguments: Any) -> list[dict[str, Any]]:
        return connector.execute_query_all(query, **arguments)

    try:
        yield execute
    except exceptions.UniqueViolation as exc:
        if exc.constraint_name == QUEUEING_LOCK_CONSTRAINT:
            raise exceptions.AlreadyEnqueued(
                "Job cannot be enqueued: there is already a job in the queue with the "
                f"queueing lock {exc.queueing_lock}"
            ) from exc
        raise


def defer_jobs(jobs: Sequence[Job]) -> list[tuple[int, dt.datetime]]:
    """Defer `jobs` (procrastinate's, as `task.configure(...).job` makes them, with their
    `task_kwargs`) in one statement; their ids and deferred time, in order.

    procrastinate's AlreadyEnqueued if one of them has a queueing lock already held: then
    none is deferred (the statement is one).
    """
    with defer_statement() as execute:
        rows = execute(DEFER_SQL, jobs=[job_to_defer(job) for job in jobs])
    logger.debug("Deferred %d job(s)", len(rows))
    return [(int(row["id"]), row["deferred_at"]) for row in rows]
