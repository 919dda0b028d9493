"""Every queue the site knows, with its waiting and running jobs and its pause: what the
admin's page of queues, limits and pauses, `GET /api/queues/` and the dashboard show, and the
one rule of which queue a person may pause from them.

A queue is known when jobs in the table use it (one index probe per name), a task of the
code is declared on it, Django's `TASKS` setting lets Django tasks use it, JOBS_QUEUE_LIMITS
limits it, or it is paused. Its figures come from `queue_stats.queue_states`: counted below
`ACTIVE_LIMIT` waiting and running jobs, estimated above, as on the dashboard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.tasks import task_backends
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import limits, queue_pauses, queue_stats
from jobs.django_tasks import ProcrastinateBackend
from jobs.models import PausedQueue


class UnknownQueue(Exception):
    """A well-formed name that no job, task, setting or pause names."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"No queue {queue!r} is known: no job, task, TASKS or JOBS_QUEUE_LIMITS uses it. "
            "(`manage.py pause_queue` pauses a queue before its first job.)"
        )


@dataclass(frozen=True)
class Pause:
    since: dt.datetime
    by: str
    reason: str

    @classmethod
    def of(cls, row: PausedQueue) -> Pause:
        return cls(since=row.paused_at, by=row.paused_by, reason=row.reason)


@dataclass(frozen=True)
class QueueRow:
    """One queue now. `exact`: the counts are counted, not estimated."""

    queue: str
    waiting: int  # due now, not started
    scheduled: int  # waiting for a later time
    running: int
    exact: bool
    pause: Pause | None

    @property
    def paused(self) -> bool:
        return self.pause is not None


def configured_queues() -> set[str]:
    """The queues the settings name: Django tasks' (TASKS) and limited ones (JOBS_QUEUE_LIMITS)."""
    return django_task_queues() | {queue for item in limits.queue_limits() for queue in item.queues}


def django_task_queues() -> set[str]:
    """The queues Django's TASKS setting lets Django tasks use, on this app's backends."""
    queues: set[str] = set()
    for backend in task_backends.all():
        if isinstance(backend, ProcrastinateBackend):
            queues |= backend.queues
    return queues


def pauses() -> dict[str, Pause]:
    return {row.queue_name: Pause.of(row) for row in queue_pauses.paused_queues()}


def queue_rows() -> list[QueueRow]:
    """Every known queue, by name (see the module's docstring for which and at what cost)."""
    paused = pauses()
    states = {state.queue: state for state in queue_stats.queue_states()}
    names = set(states) | set(paused) | configured_queues()
    # The queues of jobs that are all finished are not in `states`, whose figures are of
    # waiting and running jobs (and estimates, which ANALYZE may not have made yet).
    names |= set(queue_stats.distinct_values("queue_name"))
    rows = []
    for name in sorted(names):
        state = states.get(name) or queue_stats.QueueState(queue=name)
        rows.append(
            QueueRow(
                queue=name,
                waiting=max(0, state.waiting),
                scheduled=state.scheduled,
                running=state.counts.get("doing", 0),
                exact=name not in states or {"todo", "doing"} <= state.exact,
                pause=paused.get(name),
            )
        )
    return rows


def is_known(queue: str) -> bool:
    registered, _ = queue_stats.registered_queues_and_tasks()
    return (
        queue in registered
        or queue in configured_queues()
        or PausedQueue.objects.filter(queue_name=queue).exists()
        or ProcrastinateJob.objects.filter(queue_name=queue).exists()  # on its index
    )


def check_known_queue(queue: object) -> str:
    """`queue` if it names a known queue; ValidationError if it cannot name a queue at all,
    UnknownQueue if no job, task, setting or pause names it (a typo, most likely)."""
    name = queue_pauses.check_queue_name(queue)
    if not is_known(name):
        raise UnknownQueue(name)
    return name


def row_data(row: QueueRow) -> dict[str, Any]:
    """A queue as JSON-safe data (the API's and the dashboard's JSON)."""
    return {
        "queue": row.queue,
        "waiting": row.waiting,
        "scheduled": row.scheduled,
        "running": row.running,
        "counts_exact": row.exact,
        "paused": row.paused,
        "pause": pause_data(row.pause),
    }


def pause_data(pause: Pause | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {"since": pause.since.isoformat(), "by": pause.by, "reason": pause.reason}
