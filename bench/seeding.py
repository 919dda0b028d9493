"""Test data at scale in a scratch database: procrastinate's tables written directly with
`INSERT ... SELECT generate_series(...)`.

Deferring one job at a time cannot reach millions of rows in seconds; set operations can.
The rows have the shape procrastinate gives them, events and results included, and the
result rows this project's worker middleware writes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from croniter import croniter
from django.contrib.auth.hashers import make_password
from procrastinate.contrib.django import app

from bench.scratch import ScratchDatabase


def seed_finished_jobs(database: ScratchDatabase, count: int, *, batch: int = 250_000) -> float:
    """Insert `count` succeeded `jobs.build_report` jobs with their events and results.

    Returns the seconds it took. Batches keep each transaction's memory bounded.
    """
    started = time.monotonic()
    with database.connect() as conn:
        first = 1
        while first <= count:
            last = min(first + batch - 1, count)
            with conn.transaction():
                conn.execute(
                    """
                    INSERT INTO procrastinate_jobs
                        (queue_name, task_name, priority, args, status, attempts, scheduled_at)
                    SELECT 'reports', 'jobs.build_report', 0,
                           jsonb_build_object('report_id', g), 'succeeded', 1, NULL
                    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
                    """,
                    {"first": first, "last": last},
                )
            first = last + 1
        with conn.transaction():
            # Triggers write events only for jobs inserted as "todo": write the three a
            # finished job has (deferred, started, succeeded), spread over the last day.
            conn.execute(
                """
                INSERT INTO procrastinate_events (job_id, type, at)
                SELECT id, k.kind::procrastinate_job_event_type,
                       now() - interval '1 day' + (id % 86400) * interval '1 second' + k.delay
                FROM procrastinate_jobs,
                     (VALUES ('deferred', interval '0'), ('started', interval '1 second'),
                             ('succeeded', interval '1.5 seconds')) AS k(kind, delay)
                """
            )
            conn.execute(
                """
                INSERT INTO jobs_jobresult (job_id, task_name, status, attempt, worker_name,
                    started_at, finished_at, duration, return_value, exception_type,
                    exception_message, traceback, progress, progress_message)
                SELECT id, task_name, 'succeeded', 1, 'bench',
                       now() - interval '1 hour', now() - interval '1 hour' + interval '0.5 s',
                       interval '0.5 s', jsonb_build_object('total', id % 100), '', '', '',
                       NULL, ''
                FROM procrastinate_jobs
                """
            )
        conn.execute("ANALYZE")
    return time.monotonic() - started


# --- A queue's history at scale: jobs of every status, their events and results ----------

# Tasks of the seeded history, with their queue and their share in ten-thousandths. Most
# are the project's own; one share is a task no longer in the registry (jobs of a removed
# task stay in the table) and one is rare, to time filters on a task with few jobs.
SEED_TASKS: tuple[tuple[str, str, int], ...] = (
    ("jobs.send_notification", "notifications", 5500),
    ("jobs.build_report", "reports", 3000),
    ("jobs.delete_sent_notifications", "maintenance", 1000),
    ("jobs.run_management_command", "maintenance", 490),
    ("legacy.export_invoices", "legacy", 9),
    ("jobs.compute_daily_statistics", "maintenance", 1),
)
# Exceptions of the failed jobs: (type, message).
SEED_FAILURES: tuple[tuple[str, str], ...] = (
    ("smtplib.SMTPServerDisconnected", "Connection unexpectedly closed"),
    ("TimeoutError", "timed out after 30 s"),
    ("jobs.models.Report.DoesNotExist", "Report matching query does not exist."),
)

_SEED_BATCH_SQL = """
CREATE TEMP TABLE seed ON COMMIT DROP AS
WITH base AS (
    SELECT g AS id,
           %(start)s::timestamptz + (g - 1) * %(step)s::interval AS deferred_at,
           abs(hashint8extended(g, 1)) %% 10000 AS pick,
           abs(hashint8extended(g, 2)) %% 10000 AS fate,
           (50 + abs(hashint8extended(g, 3)) %% 2000) * interval '1 millisecond' AS wait,
           (100 + abs(hashint8extended(g, 4)) %% 3000) * interval '1 millisecond' AS run
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
), shaped AS (
    SELECT b.*, t.task_name, t.queue_name,
           CASE WHEN b.id > %(count)s - %(backlog)s THEN 'todo'
                WHEN b.id > %(count)s - %(backlog)s - %(running)s THEN 'doing'
                WHEN b.fate < 9700 THEN 'succeeded'
                WHEN b.fate < 9900 THEN 'failed'
                WHEN b.fate < 9970 THEN 'cancelled'
                ELSE 'aborted' END AS status
    FROM base b
    JOIN unnest(%(task_names)s::text[], %(task_queues)s::text[], %(task_from)s::int[],
                %(task_upto)s::int[]) AS t(task_name, queue_name, low, high)
      ON b.pick >= t.low AND b.pick < t.high
)
SELECT s.*,
       -- Half of the failures failed once, were retried 10 s later, and failed again.
       (s.status = 'failed' AND s.id %% 2 = 0) AS retried,
       s.deferred_at + s.wait AS first_start,
       CASE WHEN s.status = 'failed' AND s.id %% 2 = 0
            THEN s.deferred_at + s.wait + s.run + interval '10 seconds' + s.wait
            ELSE s.deferred_at + s.wait END AS started_at,
       CASE WHEN s.status = 'failed' AND s.id %% 2 = 0
            THEN s.deferred_at + s.wait + s.run + interval '10 seconds' + s.wait + s.run
            ELSE s.deferred_at + s.wait + s.run END AS finished_at,
       -- A tenth of the waiting jobs are scheduled for later.
       CASE WHEN s.status = 'todo' AND s.fate < 1000
            THEN now() + (s.fate + 1) * interval '1 minute' END AS scheduled_at
FROM shaped s
"""

_SEED_JOBS_SQL = """
INSERT INTO procrastinate_jobs (id, queue_name, task_name, priority, lock, queueing_lock,
    args, status, scheduled_at, attempts, abort_requested, worker_id)
SELECT id, queue_name, task_name, 0,
       CASE WHEN task_name = 'jobs.build_report' AND fate < 2000 AND status <> 'doing'
            THEN 'report-' || (id %% 5000) END,
       CASE WHEN status = 'todo' AND task_name = 'jobs.send_notification'
            THEN 'notification-' || id END,
       CASE WHEN id %% 1000000 = 0 OR id = %(count)s
            -- Now and then an argument far too large to show in full.
            THEN jsonb_build_object('report_id', id, 'payload', repeat('x', 200000))
            WHEN task_name = 'jobs.send_notification' THEN jsonb_build_object('notification_id', id)
            WHEN task_name = 'jobs.run_management_command'
            THEN jsonb_build_object('command', 'prune_jobs', 'args', jsonb_build_array())
            ELSE jsonb_build_object('report_id', id) END,
       status::procrastinate_job_status, scheduled_at,
       CASE WHEN retried THEN 1 ELSE 0 END,
       status = 'aborted',
       CASE WHEN status = 'doing' THEN %(worker_ids)s[1 + id %% 2] END
FROM seed
"""

_SEED_EVENTS_SQL = """
INSERT INTO procrastinate_events (job_id, type, at)
SELECT s.id, e.type::procrastinate_job_event_type, e.at
FROM seed s
CROSS JOIN LATERAL (VALUES
    ('deferred', s.deferred_at),
    (CASE WHEN s.scheduled_at IS NOT NULL THEN 'scheduled' END, s.scheduled_at),
    (CASE WHEN s.retried THEN 'started' END, s.first_start),
    (CASE WHEN s.retried THEN 'deferred_for_retry' END, s.first_start + s.run),
    (CASE WHEN s.retried THEN 'scheduled' END, s.first_start + s.run + interval '10 seconds'),
    (CASE WHEN s.status IN ('succeeded', 'failed', 'aborted', 'doing') THEN 'started' END,
     s.started_at),
    (CASE WHEN s.status = 'aborted' THEN 'abort_requested' END, s.started_at + s.run / 2),
    (CASE WHEN s.status IN ('succeeded', 'failed', 'aborted') THEN s.status
          WHEN s.status = 'cancelled' THEN 'cancelled' END,
     CASE WHEN s.status = 'cancelled' THEN s.deferred_at + s.wait ELSE s.finished_at END)
) AS e(type, at)
WHERE e.type IS NOT NULL
ORDER BY e.at
"""

_SEED_RESULTS_SQL = """
INSERT INTO jobs_jobresult (job_id, task_name, status, attempt, worker_name, started_at,
    finished_at, duration, return_value, exception_type, exception_message, traceback,
    progress, progress_message)
SELECT id, task_name,
       CASE WHEN status = 'doing' THEN 'running' ELSE status END,
       CASE WHEN retried THEN 2 ELSE 1 END,
       'bench-' || (1 + id %% 2),
       started_at,
       CASE WHEN status <> 'doing' THEN finished_at END,
       CASE WHEN status <> 'doing' THEN run END,
       CASE WHEN status = 'succeeded' THEN jsonb_build_object('total', id %% 100) END,
       CASE WHEN status = 'failed' THEN (%(failure_types)s::text[])[1 + fate %% %(failures)s]
            WHEN status = 'aborted' THEN 'procrastinate.exceptions.JobAborted' ELSE '' END,
       CASE WHEN status = 'failed' THEN (%(failure_messages)s::text[])[1 + fate %% %(failures)s]
            WHEN status = 'aborted' THEN 'abort requested' ELSE '' END,
       CASE WHEN status IN ('failed', 'aborted')
            THEN E'Traceback (most recent call last):\\n  File "jobs/tasks.py", line 42, in '
                 || task_name || E'\\n' || (%(failure_types)s::text[])[1 + fate %% %(failures)s]
            ELSE '' END,
       CASE WHEN status = 'doing' THEN 0.5 END,
       CASE WHEN status = 'doing' THEN 'half way' ELSE '' END
FROM seed
WHERE status IN ('succeeded', 'failed', 'aborted', 'doing')
"""


@dataclass(frozen=True)
class _SavedSchema:
    indexes: list[str]
    foreign_keys: list[tuple[str, str, str]]


def _drop_secondary_structures(conn: psycopg.Connection[Any], tables: list[str]) -> _SavedSchema:
    """Drop the tables' indexes (except those of constraints) and foreign keys; return them.

    Loading millions of rows and building each index once afterwards is several times
    faster than maintaining a dozen indexes row by row (pg_restore does the same).
    """
    indexes = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY(%s::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        [tables],
    ).fetchall()
    foreign_keys = conn.execute(
        """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE contype = 'f'
          AND (conrelid = ANY(%s::regclass[]) OR confrelid = ANY(%s::regclass[]))
        """,
        [tables, tables],
    ).fetchall()
    for table, name, _ in foreign_keys:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    return _SavedSchema(indexes=[sql for _, sql in indexes], foreign_keys=foreign_keys)


def _restore_secondary_structures(conn: psycopg.Connection[Any], saved: _SavedSchema) -> None:
    conn.execute("SET maintenance_work_mem = '1GB'")
    for statement in saved.indexes:
        conn.execute(statement)
    for table, name, definition in saved.foreign_keys:
        # NOT VALID: the seeded rows are consistent by construction, and validating tens of
        # millions of references would only lengthen the benchmark.
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition} NOT VALID')


def _task_shares() -> dict[str, list[Any]]:
    low: list[int] = []
    high: list[int] = []
    for _, _, share in SEED_TASKS:
        low.append(high[-1] if high else 0)
        high.append(low[-1] + share)
    assert high[-1] == 10000, "SEED_TASKS shares must add up to 10,000"
    return {
        "task_names": [name for name, _, _ in SEED_TASKS],
        "task_queues": [queue for _, queue, _ in SEED_TASKS],
        "task_from": low,
        "task_upto": high,
    }


def _seed_periodic_defers(
    conn: psycopg.Connection[Any], *, start: dt.datetime, end: dt.datetime
) -> None:
    """One periodic-defers row per tick of each periodic task over the seeded period."""
    rows = []
    for periodic in app.periodic_registry.periodic_tasks.values():
        ticks = croniter(periodic.cron, start)
        while (tick := ticks.get_next(dt.datetime)) < end:
            rows.append((periodic.task.name, int(tick.timestamp()), periodic.periodic_id))
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO procrastinate_periodic_defers (task_name, defer_timestamp, periodic_id) "
            "VALUES (%s, %s, %s)",
            rows,
        )


def seed_queue_history(
    database: ScratchDatabase,
    count: int,
    *,
    hours: float = 24 * 7,
    batch: int = 500_000,
    on_progress: Callable[[str], None] | None = None,
) -> float:
    """Insert `count` jobs deferred evenly over the last `hours`, as a busy queue leaves them.

    The oldest are finished (97 % succeeded, 2 % failed, half of them after a retry, 0.7 %
    cancelled, 0.3 % aborted), a few are running on two live workers, the newest wait (a
    tenth of them scheduled for later). Each job has the events procrastinate's triggers
    would have written, at consistent times (waiting 0.05-2 s, running 0.1-3 s), and the
    result row this project's worker middleware writes; periodic tasks have their ticks.
    Tasks, queues and shares are `SEED_TASKS`. Returns the seconds it took.
    """
    started = time.monotonic()
    report = on_progress or (lambda message: None)
    tables = [
        "procrastinate_jobs",
        "procrastinate_events",
        "jobs_jobresult",
        "procrastinate_periodic_defers",
    ]
    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(hours=hours)
    backlog = max(1, count // 2000)
    running = min(50, max(1, count // 100_000))
    params: dict[str, Any] = {
        "start": start,
        "step": dt.timedelta(hours=hours) / count,
        "count": count,
        "backlog": backlog,
        "running": running,
        "failure_types": [kind for kind, _ in SEED_FAILURES],
        "failure_messages": [message for _, message in SEED_FAILURES],
        "failures": len(SEED_FAILURES),
        **_task_shares(),
    }
    with database.connect() as conn:
        worker_ids = [
            conn.execute(
                "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
            ).fetchone()[0]  # type: ignore[index]
            for _ in range(2)
        ]
        params["worker_ids"] = worker_ids
        saved = _drop_secondary_structures(conn, tables)
        # The rows are written as procrastinate's triggers would have: the triggers must
        # not add their own events (at "now") nor NOTIFY ten million times.
        conn.execute("ALTER TABLE procrastinate_jobs DISABLE TRIGGER USER")
        try:
            first = 1
            while first <= count:
                last = min(first + batch - 1, count)
                with conn.transaction():
                    conn.execute(_SEED_BATCH_SQL, {**params, "first": first, "last": last})
                    conn.execute(_SEED_JOBS_SQL, params)
                    conn.execute(_SEED_EVENTS_SQL, params)
                    conn.execute(_SEED_RESULTS_SQL, params)
                report(f"{last:,} jobs")
                first = last + 1
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('procrastinate_jobs', 'id'), %s)", [count]
            )
            _seed_periodic_defers(conn, start=start, end=end)
        finally:
            conn.execute("ALTER TABLE procrastinate_jobs ENABLE TRIGGER USER")
            report("building indexes")
            _restore_secondary_structures(conn, saved)
        report("vacuuming and analyzing")
        # Sets the visibility map (index-only scans) and the planner's statistics, as
        # autovacuum would have on a table that grew over days.
        for table in tables:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now()")
    return time.monotonic() - started


def create_superuser(database: ScratchDatabase, username: str, password: str) -> None:
    """A superuser in `database` (its password hashed here, with the site's hashers)."""
    with database.connect() as conn:
        conn.execute(
            """
            INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,
                                   email, is_staff, is_active, date_joined)
            VALUES (%s, true, %s, '', '', '', true, true, now())
            ON CONFLICT (username) DO UPDATE SET password = EXCLUDED.password
            """,
            [make_password(password), username],
        )


def refresh_heartbeats(database: ScratchDatabase) -> None:
    """Set the seeded workers' heartbeats to now, as running workers keep doing."""
    with database.connect() as conn:
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now()")
