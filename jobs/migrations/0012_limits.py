from django.db import migrations

# The workers' fetch with concurrency limits, rate limits and paused queues (see
# jobs/limits.py for the whole story, jobs/queue_pauses.py for pauses).
#
# `jobs_fetch_job_v1` is procrastinate's `procrastinate_fetch_job_v2` (3.10) with two more
# rules: the jobs of paused queues are skipped, and so are the jobs a limit holds back. The
# worker connector (jobs/connector.py) calls it instead of procrastinate's, with the limits
# its own code declares, as JSON: a list of {name, tasks, queues, key, key_positions,
# concurrency, rate, period}. With no limit it costs one look at jobs_pausedqueue more.
#
# A job is held back by a limit it falls under (its task is one of the limit's tasks, or
# its queue one of its queues) while, for the job's key (its value of the limit's key
# argument; one key for a limit without one):
# - `concurrency`: that many jobs of the limit with the key are `doing` on a live worker
#   (a worker that was lost and removed no longer runs them);
# - `rate`: that many of them were taken in the last `period` seconds (jobs_limitstart).
# The decision for a (limit, key) is taken under a transaction-level advisory lock on it,
# with a fresh snapshot after the lock: two workers fetching at once cannot both take its
# last slot. The lock is held until the fetch commits, so the next fetch sees the job doing.
LIMITS_SQL = r"""
CREATE TYPE jobs_limit_v1 AS (
    name text,
    tasks text[],
    queues text[],
    key text,
    key_positions jsonb,
    concurrency integer,
    rate integer,
    period double precision
);

CREATE TABLE jobs_limitstart (
    limit_name text NOT NULL,
    key text NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX jobs_limitstart_key_idx ON jobs_limitstart (limit_name, key, started_at);

-- A job's key under a limit: the JSON text of its value of the limit's key argument ('5',
-- '"acme"'); '' for a limit without a key, and for a job without that argument (or null).
-- A Django task's positional arguments are under "*args": key_positions gives, per task,
-- the position of the key argument among them.
CREATE FUNCTION jobs_limit_key_v1(args jsonb, task_name text, lim jobs_limit_v1)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lim.key IS NULL THEN '' ELSE coalesce(nullif(coalesce(
        args -> lim.key,
        args -> '*args' -> ((lim.key_positions ->> task_name)::integer)
    )::text, 'null'), '') END
$$;

-- Whether a job of `task_name` on `queue_name` falls under `lim`.
CREATE FUNCTION jobs_limit_covers_v1(lim jobs_limit_v1, task_name text, queue_name text)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT task_name = ANY(lim.tasks) OR queue_name = ANY(lim.queues)
$$;

-- The jobs of `lim` with key `key` running now (on a live worker).
CREATE FUNCTION jobs_limit_running_v1(lim jobs_limit_v1, p_key text)
    RETURNS bigint
    LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM procrastinate_jobs j
     WHERE j.status = 'doing' AND j.worker_id IS NOT NULL
       AND jobs_limit_covers_v1(lim, j.task_name, j.queue_name)
       AND jobs_limit_key_v1(j.args, j.task_name, lim) = p_key
$$;

-- The jobs of `lim` with key `key` taken within its period before `at` (or after it: a
-- fetch that waited for the lock may record a time earlier than one recorded before it).
CREATE FUNCTION jobs_limit_starts_v1(lim jobs_limit_v1, p_key text, p_at timestamptz)
    RETURNS bigint
    LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM jobs_limitstart s
     WHERE s.limit_name = lim.name AND s.key = p_key
       AND s.started_at > p_at - make_interval(secs => lim.period)
$$;

CREATE FUNCTION jobs_limits_v1(limits jsonb) RETURNS jobs_limit_v1[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(l ORDER BY l.name), '{}')
      FROM jsonb_populate_recordset(NULL::jobs_limit_v1, limits) l
$$;

CREATE FUNCTION jobs_fetch_job_v1(
    target_queue_names character varying[],
    p_worker_id bigint,
    limits jsonb
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
    _found procrastinate_jobs;
    _candidate procrastinate_jobs;
    _limits jobs_limit_v1[];
    _lim jobs_limit_v1;
    _key text;
    -- (limit, key) pairs found full, as name || chr(31) || key.
    _held text[];
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

    _limits := jobs_limits_v1(limits);
    -- The pairs that look full now, without locks: the candidates below skip their jobs.
    -- Each candidate's own limits are checked again under their locks.
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

        _full := false;
        FOR _lim IN
            SELECT * FROM unnest(_limits) l
             WHERE jobs_limit_covers_v1(l, _candidate.task_name, _candidate.queue_name)
             ORDER BY l.name
        LOOP
            _key := jobs_limit_key_v1(_candidate.args, _candidate.task_name, _lim);
            -- Only the first candidate waits for its locks, taken in the order of the
            -- limits' names; later ones only try theirs (a lock taken by another fetch:
            -- skipped for now). A fetch never waits while it holds a lock another waiting
            -- fetch may want in another order, so two fetches never deadlock.
            IF _round = 1 THEN
                PERFORM pg_advisory_xact_lock(
                    hashtext('jobs_limit'), hashtext(_lim.name || chr(31) || _key));
            ELSIF NOT pg_try_advisory_xact_lock(
                    hashtext('jobs_limit'), hashtext(_lim.name || chr(31) || _key)) THEN
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

        IF NOT _full THEN
            UPDATE procrastinate_jobs
                SET status = 'doing', worker_id = p_worker_id
                WHERE id = _candidate.id
                RETURNING * INTO _found;
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

REVERSE_SQL = """
DROP FUNCTION jobs_fetch_job_v1(character varying[], bigint, jsonb);
DROP FUNCTION jobs_limits_v1(jsonb);
DROP FUNCTION jobs_limit_starts_v1(jobs_limit_v1, text, timestamptz);
DROP FUNCTION jobs_limit_running_v1(jobs_limit_v1, text);
DROP FUNCTION jobs_limit_covers_v1(jobs_limit_v1, text, text);
DROP FUNCTION jobs_limit_key_v1(jsonb, text, jobs_limit_v1);
DROP TABLE jobs_limitstart;
DROP TYPE jobs_limit_v1;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0011_paused_queues"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [migrations.RunSQL(LIMITS_SQL, REVERSE_SQL)]
