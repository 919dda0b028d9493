"""The fetch's plans no longer depend on the table's statistics.

Each worker session plans the fetch's statements once, with whatever statistics the table
has at that moment, and keeps the plans (`plan_cache_mode = force_generic_plan`, 0014).
Statistics outlive the rows they describe: a site that once ran many jobs of a few `lock`s
keeps, after they are gone, statistics where a lock is common and a waiting job rare. With
those, the planner checked procrastinate's `lock` rule (no job of the candidate's lock
running, none waiting before it) by reading every waiting or running job, for each
candidate, lock or not. A fetch in a busy queue then spends milliseconds per candidate; the
jobs that other workers take meanwhile are candidates it must pass too, so it can fall
behind for good: in CI, one fetch of the 100,000-job drain ran for more than 16 minutes,
holding the row locks of the jobs it had claimed, and the snapshot that kept every finished
job's index entry alive for every other fetch.

Now the plans are the same whatever the statistics:

- the lock rule is looked at only for a job that has a lock: is it the first of its lock's
  waiting and running jobs, in the order of a new index of those (built concurrently)?
- each queue's candidates are read in the order of the index of waiting jobs by queue
  (jobs 0016), the only one that gives it (sorts are off), never in that of procrastinate's
  index of every queue's waiting jobs;
- sequential and bitmap scans, and incremental sorts, are off for the fetch, so that the
  planner keeps to those index scans;
- the waiting queues of a worker of every queue are found in that same index, by its full
  order (other indexes on `queue_name` also hold ended jobs).

The rules are unchanged (priority order, procrastinate's `lock`, paused queues, limits). The
candidates' statements also lose two filters that the list of queues they read already
applies: the worker's queues and the paused ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import import_module

from django.db import migrations

from jobs.migration_operations import CreateIndexConcurrently

# procrastinate's `lock` rule for the candidate `jobs`, as its own fetch has it: no job of
# its lock running, none waiting before it. That is, the first of its lock's jobs in the
# order of LOCK_TURN_INDEX (running ones first: 'doing' comes after 'todo' in procrastinate's
# status type) is itself. One index entry read, and only for a job that has a lock.
LOCK_IS_FREE = """(
    jobs.lock IS NULL
    OR jobs.id = (
        SELECT other_jobs.id FROM procrastinate_jobs AS other_jobs
         WHERE other_jobs.lock = jobs.lock AND other_jobs.status IN ('todo', 'doing')
         ORDER BY other_jobs.lock, other_jobs.status DESC, other_jobs.priority DESC,
                  other_jobs.id
         LIMIT 1
    )
)"""

# The only index that gives that order (sorts are off): the jobs of each lock that wait or
# run, a handful, where the other indexes on `lock` hold its whole history or need a scan of
# every waiting job.
LOCK_TURN_INDEX = (
    "procrastinate_jobs (lock, status DESC, priority DESC, id)"
    " WHERE status IN ('todo', 'doing') AND lock IS NOT NULL"
)

# The lock rule as 0014 wrote it (whitespace aside): a NOT EXISTS the planner turns into an
# anti join, run for every candidate, with an access path chosen from the statistics.
_OLD_LOCK_RULE = re.compile(
    r"NOT EXISTS \(\s*SELECT 1\s*FROM procrastinate_jobs AS other_jobs\s*WHERE\s*"
    r"jobs\.lock IS NOT NULL.*?other_jobs\.id < jobs\.id\s*\)\s*\)\s*\)\s*\)\s*\)",
    re.DOTALL,
)

_SETTINGS = (
    "    -- The candidates are read in the order of procrastinate's index on (priority, id) until\n"
    "    -- one passes: the planner cannot estimate the filters on paused queues and full limits\n"
    "    -- (arrays known only at run time), takes them for very selective, and would otherwise\n"
    "    -- read and sort every waiting job at each fetch.\n"
    "    SET enable_sort = off\n",
    "    -- Index scans only, and only those that give the order each statement asks for: the\n"
    "    -- plans are what the statements are written for, whatever the statistics (jobs 0017).\n"
    "    SET enable_sort = off\n"
    "    SET enable_incremental_sort = off\n"
    "    SET enable_seqscan = off\n"
    "    SET enable_bitmapscan = off\n",
)

# Each wanted queue's candidates in the order of jobs_job_todo_queue. The queue is a range of
# one value, not an equality: with an equality, the planner drops `queue_name` from the order
# (it is the same on every row) and procrastinate's index on (priority, id), which holds
# every queue's waiting jobs, would give that order too. The list of queues already leaves
# out the paused ones and keeps to the worker's.
_QUEUE = (
    "WHERE jobs.queue_name = wanted.name AND",
    "WHERE jobs.queue_name >= wanted.name AND jobs.queue_name <= wanted.name AND",
)
_ORDER = re.compile(r"ORDER BY jobs\.priority DESC, jobs\.id ASC LIMIT 1(\s*)FOR UPDATE OF jobs")
_REDUNDANT = re.compile(
    r"\s*AND \(target_queue_names IS NULL OR jobs\.queue_name = ANY\( target_queue_names \)\)"
    r"|\s*AND NOT jobs\.queue_name = ANY\( ARRAY\(SELECT queue_name FROM jobs_pausedqueue\) \)"
)

WAITING_QUEUES_SQL = r"""
CREATE OR REPLACE FUNCTION jobs_waiting_queues_v1()
    RETURNS character varying[]
    LANGUAGE sql
    STABLE
    -- Through jobs_job_todo_queue only (its full order: no other index gives it), whatever
    -- the statistics; other indexes on queue_name hold every ended job too.
    SET enable_sort = off
    SET enable_incremental_sort = off
    SET enable_seqscan = off
    SET enable_bitmapscan = off
AS $$
    -- From one queue to the next in jobs_job_todo_queue: one index descent per queue with
    -- waiting jobs, however many jobs wait in each.
    WITH RECURSIVE queues AS (
        (SELECT queue_name FROM procrastinate_jobs
          WHERE status = 'todo' ORDER BY queue_name, priority DESC, id LIMIT 1)
        UNION ALL
        SELECT (SELECT jobs.queue_name FROM procrastinate_jobs AS jobs
                 WHERE jobs.status = 'todo' AND jobs.queue_name > queues.queue_name
                 ORDER BY jobs.queue_name, jobs.priority DESC, jobs.id LIMIT 1)
          FROM queues
         WHERE queues.queue_name IS NOT NULL
    )
    SELECT coalesce(array_agg(queue_name) FILTER (WHERE queue_name IS NOT NULL), '{}')
      FROM queues
$$;
"""


def _previous() -> tuple[str, str]:
    """Migration 0016's fetch and waiting queues, to replace or go back to."""
    module = import_module("jobs.migrations.0016_fetch_per_queue")
    return module._fetch_per_queue(), module.WAITING_QUEUES_SQL


FETCH_OF_0016, WAITING_QUEUES_OF_0016 = _previous()


def _indented(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement of a match by `text`, its lines indented as the match's first one."""

    def replace(match: re.Match[str]) -> str:
        line_start = match.string.rfind("\n", 0, match.start()) + 1
        indent = " " * (match.start() - line_start)
        return text.replace("\n", "\n" + indent)

    return replace


def _fetch_planned_without_statistics() -> str:
    sql = FETCH_OF_0016
    old, new = _SETTINGS
    assert sql.count(old) == 1
    sql = sql.replace(old, new, 1)
    sql, replaced = _OLD_LOCK_RULE.subn(_indented(LOCK_IS_FREE), sql)
    assert replaced == 2, replaced  # the candidates without limits, and with
    sql, replaced = _ORDER.subn(
        r"ORDER BY jobs.queue_name, jobs.priority DESC, jobs.id ASC LIMIT 1\1FOR UPDATE OF jobs",
        sql,
    )
    assert replaced == 2, replaced
    assert sql.count(_QUEUE[0]) == 2
    sql = sql.replace(*_QUEUE)
    sql, replaced = _REDUNDANT.subn("", sql)
    assert replaced == 4, replaced
    return sql


class Migration(migrations.Migration):
    # The index is built concurrently: deferring and fetching go on meanwhile.
    atomic = False

    dependencies = [("jobs", "0016_fetch_per_queue")]

    operations = [
        CreateIndexConcurrently("jobs_job_lock_turn", LOCK_TURN_INDEX),
        migrations.RunSQL(_fetch_planned_without_statistics(), FETCH_OF_0016),
        migrations.RunSQL(WAITING_QUEUES_SQL, WAITING_QUEUES_OF_0016),
    ]
