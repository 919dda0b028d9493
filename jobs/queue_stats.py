"""Figures about the queue that stay cheap on tables of millions of jobs.

The dashboard, the metrics endpoint and the admin read the queue through these functions.
None of them counts or scans the whole of procrastinate's tables; each one's cost is
bounded by something small:

- jobs waiting or running (`todo`, `doing`): counted exactly through the `(status, id)`
  index, as long as there are fewer than `ACTIVE_LIMIT` of them; a backlog beyond that is
  estimated like the finished jobs;
- finished jobs per queue and status: estimated from the statistics PostgreSQL's ANALYZE
  keeps (the `jobs_job_queue_status` extended statistics times the table's size);
- anything over time (throughput, failures, waiting and run times): a bounded time window
  read through the `(type, at)` index on events, or the partial index on failed results,
  and for the percentiles a sample of the most recent jobs;
- queue and task names: one index probe per distinct name (a loose index scan);
- workers: procrastinate's small workers table (periodic tasks, in jobs/periodic.py: one index
  probe per task for its last tick).

The indexes come from `jobs/migrations/0004_admin_indexes.py` and `0005_…`. SQL is written
by hand where the ORM would hide what the query costs; every timestamp arithmetic uses the
database's clock, the one that wrote the events.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from procrastinate.contrib.django import app

from jobs.job_statuses import (
    ACTIVE_STATUSES,
    ATTEMPT_END_EVENTS,
    DUE_EVENTS,
    FINISHED_STATUSES,
    STATUSES,
)

# Above this many waiting and running jobs, their counts are estimated too.
ACTIVE_LIMIT = 100_000


def _rows(sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def database_now() -> dt.datetime:
    now = _rows("SELECT now()")[0][0]
    assert isinstance(now, dt.datetime)
    return now


# --- Sizes and estimates ----------------------------------------------------------------


def estimated_rows(table: str) -> int | None:
    """The planner's estimate of `table`'s rows: rows per page at the last ANALYZE times
    the current number of pages. None before the first ANALYZE."""
    rows = _rows(
        """
        SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL
               ELSE c.reltuples / c.relpages
                    * (pg_relation_size(c.oid) / current_setting('block_size')::int) END
        FROM pg_class c WHERE c.oid = to_regclass(%s)
        """,
        [table],
    )
    # real times bigint: PostgreSQL answers with a float (or NULL).
    estimate: float | None = rows[0][0] if rows else None
    if estimate is None:
        return None
    return round(estimate)


def estimated_jobs_by_queue_and_status() -> dict[tuple[str, str], int]:
    """(queue, status) -> estimated jobs, from the most common pairs ANALYZE recorded.

    Pairs too rare to be among them are missing; empty before the first ANALYZE.
    """
    total = estimated_rows("procrastinate_jobs")
    rows = _rows(
        """
        SELECT most_common_vals, most_common_freqs FROM pg_stats_ext
        WHERE tablename = 'procrastinate_jobs' AND statistics_name = 'jobs_job_queue_status'
          AND most_common_vals IS NOT NULL
        ORDER BY inherited LIMIT 1
        """
    )
    if total is None or not rows:
        return {}
    values, frequencies = rows[0]
    return {
        (str(queue), str(status)): round(frequency * total)
        for (queue, status), frequency in zip(values, frequencies, strict=True)
    }


# A "loose index scan": one index descent per distinct value, through the index that
# starts with the column (procrastinate's on queue_name, jobs_job_task_id on task_name).
_DISTINCT_SQL = """
WITH RECURSIVE found(value) AS (
    (SELECT {column} FROM procrastinate_jobs ORDER BY {column} LIMIT 1)
    UNION ALL
    SELECT (SELECT {column} FROM procrastinate_jobs WHERE {column} > found.value
            ORDER BY {column} LIMIT 1)
    FROM found WHERE found.value IS NOT NULL
)
SELECT value FROM found WHERE value IS NOT NULL LIMIT %(limit)s
"""
DISTINCT_LIMIT = 200


def distinct_values(column: str, *, limit: int = DISTINCT_LIMIT) -> list[str]:
    """The distinct queue or task names in the jobs table (at most `limit`): a few index
    probes each, never a DISTINCT over the table."""
    if column not in {"queue_name", "task_name"}:
        raise ValueError(f"no index to read distinct {column!r} values from")
    return [value for (value,) in _rows(_DISTINCT_SQL.format(column=column), {"limit": limit})]


def registered_queues_and_tasks() -> tuple[list[str], list[str]]:
    """Queues and task names of procrastinate's registry (this code's tasks)."""
    tasks = {name: task for name, task in app.tasks.items() if not name.startswith("builtin:")}
    return sorted({task.queue for task in tasks.values()}), sorted(tasks)


def known_queues() -> list[str]:
    """Queues of the registry and of the jobs in the table (e.g. of removed tasks)."""
    queues, _ = registered_queues_and_tasks()
    return sorted({*queues, *distinct_values("queue_name")})


def known_tasks() -> list[str]:
    """Tasks of the registry and of the jobs in the table."""
    _, tasks = registered_queues_and_tasks()
    return sorted({*tasks, *distinct_values("task_name")})


# --- Waiting and running jobs -----------------------------------------------------------


@dataclass
class QueueState:
    """One queue now. `counts` holds jobs per status; `exact` the statuses counted exactly
    (the others are estimates)."""

    queue: str
    counts: dict[str, int] = field(default_factory=dict)
    exact: set[str] = field(default_factory=set)
    scheduled: int = 0  # of the `todo` jobs, those scheduled for later
    oldest_job_id: int | None = None
    oldest_since: dt.datetime | None = None
    oldest_age_seconds: float | None = None

    @property
    def waiting(self) -> int:
        """Jobs due now and not started."""
        return self.counts.get("todo", 0) - self.scheduled


_ACTIVE_SQL = """
WITH active AS MATERIALIZED (
    SELECT id, queue_name, status, scheduled_at FROM procrastinate_jobs
    WHERE status IN ('todo', 'doing')
    LIMIT %(limit)s
), per_queue AS (
    SELECT queue_name,
           count(*) FILTER (WHERE status = 'todo') AS todo,
           count(*) FILTER (WHERE status = 'doing') AS doing,
           count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS later,
           min(id) FILTER (WHERE status = 'todo' AND scheduled_at IS NULL) AS oldest_id,
           min(scheduled_at) FILTER (WHERE status = 'todo' AND scheduled_at <= now()) AS due_at
    FROM active GROUP BY queue_name
)
SELECT p.queue_name, p.todo, p.doing, p.later, p.oldest_id,
       (SELECT min(e.at) FROM procrastinate_events e
         WHERE e.job_id = p.oldest_id AND e.type = 'deferred') AS oldest_deferred_at,
       (SELECT min(a.id) FROM active a
         WHERE a.queue_name = p.queue_name AND a.status = 'todo' AND a.scheduled_at = p.due_at),
       p.due_at, now(), (SELECT count(*) FROM active)
FROM per_queue p
"""

# When the backlog is too large to count, the oldest waiting job of each queue is still
# one probe per queue: the `(status, id)` index in id order, stopping at the first match.
_OLDEST_SQL = """
SELECT q.queue_name, j.id, coalesce(j.scheduled_at,
       (SELECT min(e.at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'deferred')), now()
FROM unnest(%(queues)s::text[]) AS q(queue_name)
CROSS JOIN LATERAL (
    SELECT id, scheduled_at FROM procrastinate_jobs
    WHERE status = 'todo' AND queue_name = q.queue_name
      AND (scheduled_at IS NULL OR scheduled_at <= now())
    ORDER BY id LIMIT 1
) j
"""


def _oldest(
    candidates: Iterable[tuple[int | None, dt.datetime | None]],
) -> tuple[int | None, dt.datetime | None]:
    present = [(since, job_id) for job_id, since in candidates if job_id and since]
    if not present:
        return None, None
    since, job_id = min(present)
    return job_id, since


def queue_states(*, limit: int = ACTIVE_LIMIT) -> list[QueueState]:
    """Every queue with jobs: waiting and running jobs (exact below `limit` of them), the
    oldest waiting job, and the estimated finished jobs."""
    states: dict[str, QueueState] = {}

    def state(queue: str) -> QueueState:
        return states.setdefault(queue, QueueState(queue=queue))

    # The code's own queues are listed even when empty (procrastinate's builtin queue
    # only when it has jobs).
    for queue in registered_queues_and_tasks()[0]:
        if queue != "builtin":
            state(queue)
    for (queue, status), count in estimated_jobs_by_queue_and_status().items():
        if status in STATUSES:
            state(queue).counts[status] = count

    rows = _rows(_ACTIVE_SQL, {"limit": limit + 1})
    scanned = rows[0][-1] if rows else 0
    if scanned <= limit:
        for queue, todo, doing, later, oldest_id, deferred_at, due_id, due_at, now, _ in rows:
            current = state(queue)
            current.counts.update(todo=todo, doing=doing)
            current.scheduled = later
            job_id, since = _oldest([(oldest_id, deferred_at), (due_id, due_at)])
            current.oldest_job_id, current.oldest_since = job_id, since
            if since is not None:
                current.oldest_age_seconds = max(0.0, (now - since).total_seconds())
        for current in states.values():
            current.exact.update(ACTIVE_STATUSES)
            for status in ACTIVE_STATUSES:
                current.counts.setdefault(status, 0)
    else:
        queues = sorted({*states, *known_queues()})
        for queue, job_id, since, now in _rows(_OLDEST_SQL, {"queues": queues}):
            current = state(queue)
            current.oldest_job_id, current.oldest_since = job_id, since
            if since is not None:
                current.oldest_age_seconds = max(0.0, (now - since).total_seconds())
    return sorted(states.values(), key=lambda s: s.queue)


# --- Over time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """Jobs finished per bucket (a minute by default), oldest bucket first."""

    start: dt.datetime
    bucket_seconds: int
    succeeded: list[int]
    failed: list[int]

    def times(self) -> list[dt.datetime]:
        step = dt.timedelta(seconds=self.bucket_seconds)
        return [self.start + i * step for i in range(len(self.succeeded))]


# Finished jobs per past bucket never change: events are written with the time of their
# transaction, which procrastinate commits within milliseconds. Each web process keeps the
# counts of buckets older than SETTLED, so a dashboard refreshing every few seconds reads
# only the last minutes from the database. Keyed by database and bucket width.
SETTLED = dt.timedelta(minutes=2)
_settled_lock = threading.Lock()
_settled: dict[tuple[str, int, dt.datetime], tuple[int, int]] = {}


def forget_settled_buckets() -> None:
    """Empty the cache of past buckets (tests that rewrite history use it)."""
    with _settled_lock:
        _settled.clear()


def throughput(*, hours: float, now: dt.datetime, bucket_seconds: int = 60) -> Throughput:
    """Succeeded and failed jobs per bucket over the last `hours`, read by an index-only
    range scan of `(type, at)` over the buckets not cached yet (see SETTLED)."""
    step = dt.timedelta(seconds=bucket_seconds)
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    current = epoch + ((now - epoch) // step) * step
    buckets = max(1, round(hours * 3600 / bucket_seconds))
    start = current - (buckets - 1) * step
    starts = [start + i * step for i in range(buckets)]
    database = str(connection.settings_dict["NAME"])
    with _settled_lock:
        known = {
            b: _settled[key] for b in starts if (key := (database, bucket_seconds, b)) in _settled
        }
    query_from = next((b for b in starts if b not in known), current + step)
    counts = dict(known)
    if query_from <= current:
        rows = _rows(
            """
            SELECT date_bin(%(step)s, at, %(start)s), type::text, count(*)
            FROM procrastinate_events
            WHERE type IN ('succeeded', 'failed') AND at >= %(from)s AND at < %(end)s
            GROUP BY 1, 2
            """,
            {"step": step, "start": start, "from": query_from, "end": current + step},
        )
        fresh: dict[dt.datetime, list[int]] = {b: [0, 0] for b in starts if b >= query_from}
        for bucket, kind, count in rows:
            if bucket in fresh:
                fresh[bucket][0 if kind == "succeeded" else 1] = count
        counts.update({b: (ok, bad) for b, (ok, bad) in fresh.items()})
        settled_before = now - SETTLED
        with _settled_lock:
            for b, (ok, bad) in fresh.items():
                if b + step <= settled_before:
                    _settled[(database, bucket_seconds, b)] = (ok, bad)
            for key in [k for k in _settled if k[2] < start - dt.timedelta(days=1)]:
                del _settled[key]
    return Throughput(
        start=start,
        bucket_seconds=bucket_seconds,
        succeeded=[counts[b][0] for b in starts],
        failed=[counts[b][1] for b in starts],
    )


def finished_counts(
    *, seconds: float, statuses: Sequence[str] = FINISHED_STATUSES
) -> dict[str, int]:
    """Jobs that reached each of `statuses` (final ones) in the last `seconds`."""
    rows = _rows(
        """
        SELECT type::text, count(*) FROM procrastinate_events
        WHERE type = ANY(%(statuses)s::procrastinate_job_event_type[])
          AND at >= now() - %(window)s
        GROUP BY 1
        """,
        {"window": dt.timedelta(seconds=seconds), "statuses": list(statuses)},
    )
    return {status: 0 for status in statuses} | dict(rows)


# The time a job became due before a given start (job_statuses.DUE_EVENTS), as SQL.
_DUE_TYPES = "(" + ", ".join(f"'{kind}'" for kind in DUE_EVENTS) + ")"

_WAITING_SQL = f"""
SELECT j.queue_name, extract(epoch FROM s.at - d.due)::float8
FROM (
    SELECT job_id, at FROM procrastinate_events
    WHERE type = 'started' AND at >= now() - %(window)s
    ORDER BY at DESC LIMIT %(sample)s
) s
CROSS JOIN LATERAL (
    SELECT max(e.at) AS due FROM procrastinate_events e
    WHERE e.job_id = s.job_id AND e.type IN {_DUE_TYPES} AND e.at <= s.at
) d
JOIN procrastinate_jobs j ON j.id = s.job_id
WHERE d.due IS NOT NULL
"""

# One ordered probe per type of end, merged: `type IN (...) ORDER BY at` cannot stop early.
_RUNNING_SQL = (
    """
SELECT j.queue_name, extract(epoch FROM f.at - s.started)::float8
FROM (
"""
    + "\n    UNION ALL\n".join(
        f"""    (SELECT job_id, at FROM procrastinate_events
     WHERE type = '{kind}' AND at >= now() - %(window)s ORDER BY at DESC LIMIT %(sample)s)"""
        for kind in ATTEMPT_END_EVENTS
    )
    + """
    ORDER BY at DESC LIMIT %(sample)s
) f
CROSS JOIN LATERAL (
    SELECT max(e.at) AS started FROM procrastinate_events e
    WHERE e.job_id = f.job_id AND e.type = 'started' AND e.at <= f.at
) s
JOIN procrastinate_jobs j ON j.id = f.job_id
WHERE s.started IS NOT NULL
"""
)


def waiting_times(*, seconds: float, sample: int) -> list[tuple[str, float]]:
    """(queue, seconds from due to start) of up to `sample` jobs started in the window,
    the most recent first."""
    rows = _rows(_WAITING_SQL, {"window": dt.timedelta(seconds=seconds), "sample": sample})
    return [(queue, max(0.0, value)) for queue, value in rows]


def run_times(*, seconds: float, sample: int) -> list[tuple[str, float]]:
    """(queue, seconds from start to end) of up to `sample` attempts ended in the window."""
    rows = _rows(_RUNNING_SQL, {"window": dt.timedelta(seconds=seconds), "sample": sample})
    return [(queue, max(0.0, value)) for queue, value in rows]


@dataclass(frozen=True)
class Percentiles:
    queue: str  # "" for all queues together
    samples: int
    p50: float
    p90: float
    p99: float
    max: float


def quantile(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile (0 to 1) of `ordered` (sorted, not empty): linear interpolation
    between closest ranks, as PostgreSQL's percentile_cont."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentiles(samples: Iterable[tuple[str, float]]) -> list[Percentiles]:
    """Percentiles of all samples (queue "") and of each queue's."""
    by_queue: dict[str, list[float]] = {"": []}
    for queue, value in samples:
        by_queue[""].append(value)
        by_queue.setdefault(queue, []).append(value)
    result = []
    for queue, values in sorted(by_queue.items()):
        if not values:
            continue
        ordered = sorted(values)
        result.append(
            Percentiles(
                queue=queue,
                samples=len(ordered),
                p50=quantile(ordered, 0.5),
                p90=quantile(ordered, 0.9),
                p99=quantile(ordered, 0.99),
                max=ordered[-1],
            )
        )
    return result


@dataclass(frozen=True)
class FailureGroup:
    task_name: str
    exception_type: str
    count: int
    last_at: dt.datetime
    job_ids: list[int]  # the most recent first
    last_message: str


def recent_failures(
    *, seconds: float, groups: int = 20, jobs_per_group: int = 5
) -> list[FailureGroup]:
    """Attempts that failed in the window (their job may be retried since), grouped by task
    and exception, the largest groups first (partial index on failed results)."""
    rows = _rows(
        """
        WITH failures AS (
            SELECT task_name, exception_type, count(*) AS count, max(finished_at) AS last_at,
                   (array_agg(job_id ORDER BY finished_at DESC))[1:%(jobs)s] AS job_ids
            FROM jobs_jobresult
            WHERE status = 'failed' AND finished_at >= now() - %(window)s
            GROUP BY task_name, exception_type
            ORDER BY count DESC, last_at DESC
            LIMIT %(groups)s
        )
        SELECT f.task_name, f.exception_type, f.count, f.last_at, f.job_ids,
               coalesce((SELECT r.exception_message FROM jobs_jobresult r
                          WHERE r.job_id = f.job_ids[1]), '')
        FROM failures f
        ORDER BY f.count DESC, f.last_at DESC
        """,
        {"window": dt.timedelta(seconds=seconds), "groups": groups, "jobs": jobs_per_group},
    )
    return [
        FailureGroup(
            task_name=task,
            exception_type=exception or "(unknown)",
            count=count,
            last_at=last_at,
            job_ids=list(job_ids),
            last_message=message,
        )
        for task, exception, count, last_at, job_ids, message in rows
    ]


# --- Workers and periodic tasks ----------------------------------------------------------


@dataclass(frozen=True)
class WorkerState:
    id: int
    last_heartbeat: dt.datetime
    age_seconds: float
    running_jobs: int
    live: bool


def workers(*, live_within: float, limit: int = 100) -> list[WorkerState]:
    """Workers procrastinate knows, the most recent heartbeat first; `live` if it is
    younger than `live_within` seconds."""
    rows = _rows(
        """
        SELECT w.id, w.last_heartbeat, extract(epoch FROM now() - w.last_heartbeat)::float8,
               (SELECT count(*) FROM procrastinate_jobs j
                 WHERE j.worker_id = w.id AND j.status = 'doing')
        FROM procrastinate_workers w
        ORDER BY w.last_heartbeat DESC
        LIMIT %(limit)s
        """,
        {"limit": limit},
    )
    return [
        WorkerState(
            id=worker_id,
            last_heartbeat=heartbeat,
            age_seconds=max(0.0, age),
            running_jobs=running,
            live=age < live_within,
        )
        for worker_id, heartbeat, age, running in rows
    ]
