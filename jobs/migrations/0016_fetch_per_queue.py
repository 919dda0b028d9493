"""The fetch reads each wanted queue's waiting jobs, not every waiting job.

Until now `jobs_fetch_job_v1` walked procrastinate's index on (priority, id) of every
waiting job and dropped those of other queues as it went. Waiting jobs of a queue the worker
does not serve, or of a paused queue, that come first in that order (a backlog at the same
or a higher priority, older) were read again at every fetch: with tens of thousands of
them, a fetch took milliseconds instead of a fraction of one, and a 100,000-job drain beside
such a backlog slowed to a crawl. Now:

- an index of waiting jobs by (queue, priority, id), built without blocking writes;
- the candidate is the best of each wanted queue's first job (one short index scan per
  queue, in the order procrastinate takes jobs), and of those the best is taken. The queues
  are the worker's, or, for a worker of every queue, those that have waiting jobs (found by
  skipping from one queue to the next in the new index, one index descent per queue),
  without the paused ones.

The rules are unchanged (priority order, procrastinate's `lock`, paused queues, limits):
only the text that reads candidates changes, by the replacements below on migration 0015's
function. A fetch now locks each wanted queue's first free job while it chooses (so at most
one job per queue it serves, for the few milliseconds of the fetch); another fetch skips
those and takes the next ones, as procrastinate's own fetch skips rows another one locked.
"""

from __future__ import annotations

from importlib import import_module

from django.db import migrations

from jobs.migration_operations import CreateIndexConcurrently

WAITING_QUEUES_SQL = r"""
CREATE OR REPLACE FUNCTION jobs_waiting_queues_v1()
    RETURNS character varying[]
    LANGUAGE sql
    STABLE
AS $$
    -- From one queue to the next in jobs_job_todo_queue: one index descent per queue with
    -- waiting jobs, however many jobs wait in each.
    WITH RECURSIVE queues AS (
        (SELECT queue_name FROM procrastinate_jobs
          WHERE status = 'todo' ORDER BY queue_name LIMIT 1)
        UNION ALL
        SELECT (SELECT jobs.queue_name FROM procrastinate_jobs AS jobs
                 WHERE jobs.status = 'todo' AND jobs.queue_name > queues.queue_name
                 ORDER BY jobs.queue_name LIMIT 1)
          FROM queues
         WHERE queues.queue_name IS NOT NULL
    )
    SELECT coalesce(array_agg(queue_name) FILTER (WHERE queue_name IS NOT NULL), '{}')
      FROM queues
$$;
"""

# The candidates' statements of the function (both: without limits, and with), read per
# wanted queue in the new index's order; then the best of each queue's first.
_REPLACEMENTS = [
    (
        "    _round integer := 0;\nBEGIN\n",
        "    _round integer := 0;\n"
        "    _queues character varying[];\n"
        "BEGIN\n"
        "    -- The queues to read: the worker's, or every queue with waiting jobs; not paused.\n"
        "    IF target_queue_names IS NULL THEN\n"
        "        _queues := jobs_waiting_queues_v1();\n"
        "    ELSE\n"
        "        _queues := target_queue_names;\n"
        "    END IF;\n"
        "    _queues := ARRAY(\n"
        "        SELECT wanted FROM unnest(_queues) AS wanted\n"
        "         WHERE wanted <> ALL( ARRAY(SELECT queue_name FROM jobs_pausedqueue) ));\n",
    ),
    (
        "            SELECT jobs.*\n"
        "                FROM procrastinate_jobs AS jobs\n"
        "                WHERE\n",
        "            SELECT jobs.* FROM unnest(_queues) AS wanted(name) CROSS JOIN LATERAL (\n"
        "            SELECT jobs.*\n"
        "                FROM procrastinate_jobs AS jobs\n"
        "                WHERE jobs.queue_name = wanted.name AND\n",
    ),
    (
        "        SELECT jobs.* INTO _candidate\n"
        "            FROM procrastinate_jobs AS jobs\n"
        "            WHERE\n",
        "        SELECT jobs.* INTO _candidate FROM unnest(_queues) AS wanted(name)"
        " CROSS JOIN LATERAL (\n"
        "        SELECT jobs.*\n"
        "            FROM procrastinate_jobs AS jobs\n"
        "            WHERE jobs.queue_name = wanted.name AND\n",
    ),
    (
        "                FOR UPDATE OF jobs SKIP LOCKED\n        )\n",
        "                FOR UPDATE OF jobs SKIP LOCKED\n"
        "            ) AS jobs\n"
        "            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1\n"
        "        )\n",
    ),
    (
        "            FOR UPDATE OF jobs SKIP LOCKED;\n",
        "            FOR UPDATE OF jobs SKIP LOCKED\n"
        "        ) AS jobs\n"
        "        ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1;\n",
    ),
]


def _fetch_of_0015() -> str:
    """Migration 0015's function (0014's with `may_wait`), to replace or go back to."""
    sql: str = import_module("jobs.migrations.0015_fetch_jobs")._fetch_with_may_wait()
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _fetch_per_queue() -> str:
    sql = _fetch_of_0015()
    for old, new in _REPLACEMENTS:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new, 1)
    return sql


class Migration(migrations.Migration):
    # The index is built concurrently: deferring and fetching go on meanwhile.
    atomic = False

    dependencies = [("jobs", "0015_fetch_jobs")]

    operations = [
        CreateIndexConcurrently(
            "jobs_job_todo_queue",
            "procrastinate_jobs (queue_name, priority DESC, id) WHERE status = 'todo'",
        ),
        migrations.RunSQL(WAITING_QUEUES_SQL, "DROP FUNCTION IF EXISTS jobs_waiting_queues_v1()"),
        migrations.RunSQL(_fetch_per_queue(), _fetch_of_0015()),
    ]
