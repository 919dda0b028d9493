from importlib import import_module

from django.db import migrations

# The workers' fetch (jobs_fetch_job_v1, migration 0012), same rules, less work:
# - a fetch looks at what is full only once its candidate falls under a limit: a fetch of
#   jobs no limit covers costs what one without limits does (plus reading the limits);
# - it reads candidates in the order of procrastinate's index and plans each statement once
#   per session (see the SET clauses below).
# Measured on the server, fetching 300 no-op jobs with two limits declared (none covering
# them): about 0.8 ms a fetch before, against 0.3 ms for procrastinate's own; after, the
# same as procrastinate's within the (shared) machine's noise.
FETCH_SQL = r"""
CREATE OR REPLACE FUNCTION jobs_fetch_job_v1(
    target_queue_names character varying[],
    p_worker_id bigint,
    limits jsonb
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
    -- The candidates are read in the order of procrastinate's index on (priority, id) until
    -- one passes: the planner cannot estimate the filters on paused queues and full limits
    -- (arrays known only at run time), takes them for very selective, and would otherwise
    -- read and sort every waiting job at each fetch.
    SET enable_sort = off
    -- Each statement planned once per session: with arrays for parameters, the plan cache
    -- would otherwise plan the candidates' query again at every fetch (most of its cost).
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    _found procrastinate_jobs;
    _candidate procrastinate_jobs;
    _limits jobs_limit_v1[];
    _lim jobs_limit_v1;
    _key text;
    -- (limit, key) pairs found full, as name || chr(31) || key; looked for at the first
    -- candidate a limit covers (a fetch of jobs no limit covers never reads them).
    _held text[] := '{}';
    _held_known boolean := false;
    -- Whether this fetch may still wait for a limit's lock: until it has taken one.
    _may_wait boolean := true;
    _locks integer := 0;
    _rated boolean;
    _limited_tasks text[];
    _limited_queues text[];
    -- The tasks and queues of the full limits without a key (all their jobs are held),
    -- and of those with a key (only the jobs of the full keys are held).
    _held_tasks text[] := '{}';
    _held_queues text[] := '{}';
    _keyed_tasks text[] := '{}';
    _keyed_queues text[] := '{}';
    _keyed jobs_limit_v1[] := '{}';
    _full boolean;
    _round integer := 0;
BEGIN
    IF limits IS NULL OR jsonb_array_length(limits) = 0 THEN
        -- procrastinate_fetch_job_v2, and paused queues skipped.
        WITH candidate AS (
            SELECT jobs.*
                FROM procrastinate_jobs AS jobs
                WHERE
                    NOT EXISTS (
                        SELECT 1
                            FROM procrastinate_jobs AS other_jobs
                            WHERE
                                jobs.lock IS NOT NULL
                                AND other_jobs.lock = jobs.lock
                                AND (
                                    other_jobs.status = 'doing'
                                    OR
                                    (
                                        other_jobs.status = 'todo'
                                        AND (
                                            other_jobs.priority > jobs.priority
                                            OR (
                                            other_jobs.priority = jobs.priority
                                            AND other_jobs.id < jobs.id
                                            )
                                        )
                                    )
                                )
                    )
                    AND jobs.status = 'todo'
                    AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                    AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                    AND NOT jobs.queue_name = ANY( ARRAY(SELECT queue_name FROM jobs_pausedqueue) )
                ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
                FOR UPDATE OF jobs SKIP LOCKED
        )
        UPDATE procrastinate_jobs
            SET status = 'doing', worker_id = p_worker_id
            FROM candidate
            WHERE procrastinate_jobs.id = candidate.id
            RETURNING procrastinate_jobs.* INTO _found;
        RETURN _found;
    END IF;

    -- One statement (jobs_limits_v1 inlined: a call costs as much as its work): the limits,
    -- and the tasks and queues they cover (a job of none of them is taken without a further
    -- look at the limits).
    SELECT ARRAY(SELECT l FROM jsonb_populate_recordset(NULL::jobs_limit_v1, limits) l),
           ARRAY(SELECT jsonb_array_elements_text(e -> 'tasks') FROM jsonb_array_elements(limits) e
                  WHERE jsonb_typeof(e -> 'tasks') = 'array'),
           ARRAY(SELECT jsonb_array_elements_text(e -> 'queues') FROM jsonb_array_elements(limits) e
                  WHERE jsonb_typeof(e -> 'queues') = 'array')
      INTO _limits, _limited_tasks, _limited_queues;

    LOOP
        _round := _round + 1;
        IF cardinality(_held) > 0 THEN  -- else they stay empty: most fetches
            _held_tasks := ARRAY(
                SELECT unnest(l.tasks) FROM unnest(_limits) l
                 WHERE l.key IS NULL AND l.name || chr(31) = ANY(_held));
            _held_queues := ARRAY(
                SELECT unnest(l.queues) FROM unnest(_limits) l
                 WHERE l.key IS NULL AND l.name || chr(31) = ANY(_held));
            _keyed := ARRAY(
                SELECT l FROM unnest(_limits) l
                 WHERE l.key IS NOT NULL
                   AND EXISTS (SELECT 1 FROM unnest(_held) h WHERE starts_with(h, l.name || chr(31))));
            _keyed_tasks := ARRAY(SELECT unnest(l.tasks) FROM unnest(_keyed) l);
            _keyed_queues := ARRAY(SELECT unnest(l.queues) FROM unnest(_keyed) l);
        END IF;

        SELECT jobs.* INTO _candidate
            FROM procrastinate_jobs AS jobs
            WHERE
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND (
                                other_jobs.status = 'doing'
                                OR
                                (
                                    other_jobs.status = 'todo'
                                    AND (
                                        other_jobs.priority > jobs.priority
                                        OR (
                                        other_jobs.priority = jobs.priority
                                        AND other_jobs.id < jobs.id
                                        )
                                    )
                                )
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                AND NOT jobs.queue_name = ANY( ARRAY(SELECT queue_name FROM jobs_pausedqueue) )
                AND NOT jobs.task_name = ANY( _held_tasks )
                AND NOT jobs.queue_name = ANY( _held_queues )
                AND (
                    NOT (jobs.task_name = ANY( _keyed_tasks ) OR jobs.queue_name = ANY( _keyed_queues ))
                    OR NOT EXISTS (
                        SELECT 1 FROM unnest(_keyed) l
                         WHERE jobs_limit_covers_v1(l, jobs.task_name, jobs.queue_name)
                           AND l.name || chr(31) || jobs_limit_key_v1(jobs.args, jobs.task_name, l)
                               = ANY( _held )
                    )
                )
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED;
        IF _candidate.id IS NULL THEN
            RETURN _found;  -- no job: a row of nulls, as procrastinate's function returns
        END IF;
        IF NOT (_candidate.task_name = ANY(_limited_tasks)
                OR _candidate.queue_name = ANY(_limited_queues)) THEN
            UPDATE procrastinate_jobs
                SET status = 'doing', worker_id = p_worker_id
                WHERE id = _candidate.id
                RETURNING * INTO _found;
            RETURN _found;
        END IF;

        _full := false;
        _rated := false;
        FOR _lim IN
            SELECT * FROM unnest(_limits) l
             WHERE jobs_limit_covers_v1(l, _candidate.task_name, _candidate.queue_name)
             ORDER BY l.name
        LOOP
            IF NOT _held_known THEN
                -- The pairs that look full now, without locks: the next candidates skip
                -- their jobs. The candidate's own limits are checked under their locks.
                _held := ARRAY(
                    SELECT l.name || chr(31) || jobs_limit_key_v1(j.args, j.task_name, l)
                      FROM unnest(_limits) l
                      JOIN procrastinate_jobs j
                        ON j.status = 'doing' AND j.worker_id IS NOT NULL
                       AND jobs_limit_covers_v1(l, j.task_name, j.queue_name)
                     WHERE l.concurrency IS NOT NULL
                     GROUP BY l.name, jobs_limit_key_v1(j.args, j.task_name, l), l.concurrency
                    HAVING count(*) >= l.concurrency
                    UNION
                    SELECT l.name || chr(31) || s.key
                      FROM unnest(_limits) l
                      JOIN jobs_limitstart s
                        ON s.limit_name = l.name AND s.started_at > now() - make_interval(secs => l.period)
                     WHERE l.rate IS NOT NULL
                     GROUP BY l.name, s.key, l.rate
                    HAVING count(*) >= l.rate
                );
                _held_known := true;
            END IF;
            _key := jobs_limit_key_v1(_candidate.args, _candidate.task_name, _lim);
            _rated := _rated OR _lim.rate IS NOT NULL;
            IF _lim.name || chr(31) || _key = ANY(_held) THEN
                _full := true;  -- looks full: no need to wait for its lock
                EXIT;
            END IF;
            -- A fetch waits for locks only until it has taken one, and takes a candidate's
            -- in the order of the limits' names; after a held candidate it only tries
            -- (a lock another fetch holds: skipped for now). A fetch never waits while it
            -- holds a lock that another waiting fetch may want in another order, so two
            -- fetches never deadlock.
            IF _may_wait THEN
                PERFORM pg_advisory_xact_lock(
                    hashtext('jobs_limit'), hashtext(_lim.name || chr(31) || _key));
                _locks := _locks + 1;
            ELSIF pg_try_advisory_xact_lock(
                    hashtext('jobs_limit'), hashtext(_lim.name || chr(31) || _key)) THEN
                _locks := _locks + 1;
            ELSE
                _full := true;
            END IF;
            -- Each statement after the lock sees what fetches that held it committed.
            _full := _full
                OR (_lim.concurrency IS NOT NULL
                    AND jobs_limit_running_v1(_lim, _key) >= _lim.concurrency)
                OR (_lim.rate IS NOT NULL
                    AND jobs_limit_starts_v1(_lim, _key, now()) >= _lim.rate);
            IF _full THEN
                _held := _held || (_lim.name || chr(31) || _key);
                EXIT;
            END IF;
        END LOOP;
        IF _full AND _locks > 0 THEN
            _may_wait := false;
        END IF;

        IF NOT _full THEN
            UPDATE procrastinate_jobs
                SET status = 'doing', worker_id = p_worker_id
                WHERE id = _candidate.id
                RETURNING * INTO _found;
            IF NOT _rated THEN
                RETURN _found;
            END IF;
            FOR _lim IN
                SELECT * FROM unnest(_limits) l
                 WHERE l.rate IS NOT NULL
                   AND jobs_limit_covers_v1(l, _candidate.task_name, _candidate.queue_name)
            LOOP
                _key := jobs_limit_key_v1(_candidate.args, _candidate.task_name, _lim);
                INSERT INTO jobs_limitstart (limit_name, key, started_at)
                    VALUES (_lim.name, _key, now());
                -- Starts older than the period count no more (a minute's margin: see
                -- jobs_limit_starts_v1): those of the key, and now and then those of
                -- every key of the limit (keys that come no more).
                IF random() < 0.01 THEN
                    DELETE FROM jobs_limitstart
                     WHERE limit_name = _lim.name
                       AND started_at < now() - make_interval(secs => _lim.period + 60);
                ELSE
                    DELETE FROM jobs_limitstart
                     WHERE limit_name = _lim.name AND key = _key
                       AND started_at < now() - make_interval(secs => _lim.period + 60);
                END IF;
            END LOOP;
            RETURN _found;
        END IF;
        -- A bound on the work of one fetch; the worker fetches again at its next poll.
        IF _round >= 20 THEN
            RETURN _found;
        END IF;
    END LOOP;
END;
$$;
"""


def _fetch_of_0012() -> str:
    """Migration 0012's function, to go back to."""
    sql: str = import_module("jobs.migrations.0012_limits").LIMITS_SQL
    start = sql.index("CREATE FUNCTION jobs_fetch_job_v1(")
    end = sql.index("$$;", start) + 3
    return sql[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0013_queue_pause_surface")]

    operations = [migrations.RunSQL(FETCH_SQL, _fetch_of_0012())]
