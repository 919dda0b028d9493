from importlib import import_module

from django.db import migrations

# Several jobs per round trip (jobs/prefetch.py): a worker with free slots claims up to one
# job per free slot in one statement, then hands them to its slots one by one.
#
# - `jobs_fetch_jobs_v1` claims up to `n` jobs by calling `jobs_fetch_job_v1` (the rules:
#   procrastinate's lock and priority order, paused queues, limits) again and again in one
#   statement, stopping at the first call that finds none. Each call sees the claims of
#   the calls before it (the same transaction): a second job of a lock that the first call
#   took is not taken, a limit's running jobs and starts count the earlier claims. The jobs
#   come back in the order they were claimed.
# - `jobs_fetch_job_v1` gets a fourth argument, `may_wait` (true by default, so callers of
#   the three-argument form, older code during a deploy included, are unchanged): whether
#   the fetch may wait for a limit's advisory lock. Only the first call of a multi-job
#   fetch may; the later ones only try (a lock another fetch holds: its job is skipped for
#   now). A fetch that held a lock taken by an earlier call while waiting for another
#   could otherwise deadlock with a second fetch doing the same in the other order.
#   PostgreSQL cannot add an argument to an existing function: it is dropped and created
#   again, in one transaction (callers name it, and find the new one once it commits).
# - `jobs_release_jobs_v1` gives back jobs that a worker claimed but never started (it is
#   stopping): each, if it is still `doing` for that worker, goes back to `todo` with no
#   worker, and its history says nothing happened: the claim's "started" event and the
#   events procrastinate's triggers write for doing -> todo ("deferred_for_retry", and
#   "scheduled" for a job with a schedule) are deleted, so no page counts an attempt, a
#   retry or a failure that never was. `attempts` is left alone: procrastinate counts an
#   attempt when it ends, not when a job is taken. A job that cannot go back to `todo`
#   ends `cancelled`, with procrastinate's "cancelled" event: one whose abort was asked
#   for while it was claimed (procrastinate cancels a waiting job that it is asked to
#   abort), or one whose queueing lock another waiting job holds by now (procrastinate
#   allowed that job in while this one was taken: two waiting jobs of one queueing lock
#   cannot be). Given-back jobs are announced as an insert is, so that idle workers take
#   them at once. Returns each given-back job's id and new status.
DROP_FETCH_SQL = r"""
DROP FUNCTION jobs_fetch_job_v1(character varying[], bigint, jsonb);
"""

CLAIM_AND_RELEASE_SQL = r"""
CREATE FUNCTION jobs_fetch_jobs_v1(
    target_queue_names character varying[],
    p_worker_id bigint,
    limits jsonb,
    n integer
)
    RETURNS SETOF procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
    _job procrastinate_jobs;
BEGIN
    FOR _i IN 1..coalesce(n, 1) LOOP
        _job := jobs_fetch_job_v1(target_queue_names, p_worker_id, limits, _i = 1);
        EXIT WHEN _job.id IS NULL;
        RETURN NEXT _job;
    END LOOP;
END;
$$;

CREATE FUNCTION jobs_release_jobs_v1(ids bigint[], p_worker_id bigint)
    RETURNS TABLE (job_id bigint, status procrastinate_job_status)
    LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    _job record;
    _last_event bigint;
    _payload text;
BEGIN
    FOR _job IN
        SELECT jobs.id, jobs.queue_name, jobs.abort_requested
          FROM procrastinate_jobs AS jobs
         WHERE jobs.id = ANY(ids) AND jobs.status = 'doing' AND jobs.worker_id = p_worker_id
         ORDER BY jobs.id
           FOR UPDATE
    LOOP
        -- The claim's "started" event: the job's latest (its row is locked, by the claim
        -- before and by this loop now, so no other event of it came since).
        DELETE FROM procrastinate_events
         WHERE id = (SELECT max(e.id) FROM procrastinate_events AS e
                      WHERE e.job_id = _job.id AND e.type = 'started');
        _last_event := coalesce(
            (SELECT max(e.id) FROM procrastinate_events AS e WHERE e.job_id = _job.id), 0);
        job_id := _job.id;
        status := NULL;
        IF NOT _job.abort_requested THEN
            BEGIN
                UPDATE procrastinate_jobs
                   SET status = 'todo', worker_id = NULL
                 WHERE id = _job.id;
                -- What procrastinate's triggers wrote for doing -> todo.
                DELETE FROM procrastinate_events AS e
                 WHERE e.job_id = _job.id AND e.id > _last_event;
                status := 'todo';
            EXCEPTION WHEN unique_violation THEN
                NULL;  -- its queueing lock: another job waits with it (rolled back to here)
            END;
        END IF;
        IF status IS NULL THEN
            -- doing -> cancelled: procrastinate's trigger writes no event for it.
            UPDATE procrastinate_jobs
               SET status = 'cancelled', worker_id = NULL
             WHERE id = _job.id;
            INSERT INTO procrastinate_events (job_id, type) VALUES (_job.id, 'cancelled');
            status := 'cancelled';
        ELSE
            -- procrastinate's insert trigger's announcement.
            _payload := json_build_object('type', 'job_inserted', 'job_id', _job.id)::text;
            PERFORM pg_notify('procrastinate_queue_v1#' || _job.queue_name, _payload);
            PERFORM pg_notify('procrastinate_any_queue_v1', _payload);
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
"""

REVERSE_CLAIM_AND_RELEASE_SQL = """
DROP FUNCTION jobs_release_jobs_v1(bigint[], bigint);
DROP FUNCTION jobs_fetch_jobs_v1(character varying[], bigint, jsonb, integer);
"""


def _fetch_of_0014() -> str:
    """Migration 0014's function: the rules, which this migration's keeps unchanged."""
    sql: str = import_module("jobs.migrations.0014_fetch_job").FETCH_SQL
    assert sql.count("CREATE OR REPLACE FUNCTION jobs_fetch_job_v1(") == 1
    return sql


def _fetch_with_may_wait() -> str:
    """0014's function with the argument `may_wait`, which sets where its own waiting starts."""
    sql = _fetch_of_0014()
    for old, new in [
        ("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION"),
        ("    limits jsonb\n)", "    limits jsonb,\n    may_wait boolean DEFAULT true\n)"),
        (
            "    _may_wait boolean := true;",
            "    _may_wait boolean := coalesce(may_wait, true);",
        ),
    ]:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new, 1)
    return sql


REVERSE_FETCH_SQL = """
DROP FUNCTION jobs_fetch_job_v1(character varying[], bigint, jsonb, boolean);
"""


class Migration(migrations.Migration):
    dependencies = [("jobs", "0014_fetch_job")]

    operations = [
        migrations.RunSQL(
            DROP_FETCH_SQL + _fetch_with_may_wait(),
            REVERSE_FETCH_SQL + _fetch_of_0014().replace("CREATE OR REPLACE", "CREATE", 1),
        ),
        migrations.RunSQL(CLAIM_AND_RELEASE_SQL, REVERSE_CLAIM_AND_RELEASE_SQL),
    ]
