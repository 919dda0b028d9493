"""The workers' database connector: procrastinate's own, made to ride out a database restart.

procrastinate 3.10's worker does not survive its database going away for a moment (a
restart, a failover, a dropped network path). Its LISTEN connection is reconnected once,
straight away, while the server is still down; that failure ends the side task that owns
it, and a failed side task stops the whole worker. A query of the main loop (fetching the
next job), of the heartbeat or of the periodic deferrer that fails stops it too. A
supervisor starts it again, but only after it has waited for its running jobs (up to the
graceful timeout) without taking new ones.

`ReconnectingPsycopgConnector` keeps the worker running instead:

- A statement that fails because the connection was lost or could not be made is run
  again after a growing pause (0.1 s doubling up to 2 s), for up to `reconnect_timeout`
  seconds; after that the error is raised as before, and the supervisor restarts the
  worker. The idle connections of procrastinate's pool, dead as well, are replaced at
  once: the pool would find them one at a time, pausing longer after each.
- The LISTEN connection is made again with the same pauses, for as long as it takes. Each
  time it is (the first time included), the worker is woken (see "What `listen_notify`
  delivers" below): notifications sent while nobody listened are lost, and the jobs they
  announced would otherwise wait for the next poll. It connects where the pool does: the
  pool's conninfo, kwargs and connection class, and the connector's `configure`.
- A notification that arrives while the worker is fetching a job is delivered again once
  the fetch is over. procrastinate's worker clears its "new job" flag after every fetch,
  so a job committed just after the fetch looked would wait for the next poll. (Measured
  here: with stock procrastinate, 7 of 240 rounds of four jobs deferred at once to two idle
  workers left a job waiting; with this, none of 300.)

Two changes make each of the worker's statements one round trip instead of four (with the
results written along with the job's end, see `write_with_job_end`, they took the stock
worker from about 130 to about 270 no-op jobs/s here, measured with `manage.py bench_jobs`):

- Its pool's connections are in autocommit. procrastinate's worker statements are single
  statements (calls to its SQL functions), so they commit exactly as before, without the
  BEGIN and COMMIT that psycopg would otherwise send around each.
- The pool checks a connection it hands out with a round trip only when the server may
  have closed it: when its socket has something to read (a closed session, a shutdown
  message) or it is already known to be broken. procrastinate's default pings every
  connection every time. A connection that dies without a word (a cut network path) is
  left to the retries above, which also replace every idle connection after a loss; a
  task that defers a job on such a connection (never retried, see below) fails, and its
  retry policy decides.

A job put back for an immediate retry wakes the worker that put it back, as an inserted
job would: procrastinate's trigger announces inserts only, so the retry would otherwise wait
for the next poll whenever the worker's other slots were idle.

Its connections load a time PostgreSQL holds but Python's datetime cannot (before year 1,
after 9999, infinity) as the nearest bound instead of failing the query: one such job row
made the worker that fetched it exit (see jobs/out_of_range_times.py).

It fetches jobs with the app's function (migration jobs.0012), not procrastinate's: the
same rules, and besides them the jobs of paused queues (jobs/queue_pauses.py) and the jobs a
concurrency or rate limit holds back (jobs/limits.py, with the limits this process's code
declares) are skipped. The end of a job that counts towards a concurrency limit wakes the
workers of the limit's queues, whose held jobs may now start. JOBS_FETCH_WITH_LIMITS = False
keeps procrastinate's fetch (no pause, no limit); so does a database without that function
(code deployed before `migrate`, or a migration rolled back), with a warning every minute,
rather than stopping the worker.

The ends of a worker's jobs that finish together are recorded by one statement, each
job's result with it (jobs/job_ends.py; JOBS_GATHER_JOB_ENDS = False records each alone).

With the app's fetch, a worker with several free slots claims a job for each in one
statement, hands the first to the slot that asked and the others to its next fetches
without a round trip, and gives back what it claimed and did not start when it stops
(jobs/prefetch.py; JOBS_FETCH_MANY = False fetches one job at a time).

`ReconnectingDjangoConnector` is the Django connector that hands this connector to
`manage.py procrastinate worker`; installing the app installs it (jobs/worker.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import select
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, LiteralString, TypeVar

import psycopg
import psycopg.sql
import psycopg_pool
from procrastinate import connector, exceptions, sql
from procrastinate.contrib.django import django_connector
from procrastinate.contrib.django.utils import connector_params
from procrastinate.psycopg_connector import PsycopgConnector

from jobs import limits
from jobs.conf import jobs_settings
from jobs.job_ends import GatheredJobEnds, JobEnd
from jobs.out_of_range_times import tolerant_adapters
from jobs.prefetch import FETCH_COLUMNS, FETCH_JOBS, ClaimedJobs

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 2.0
# How often an idle LISTEN connection is checked with a query: a peer that vanished
# without closing the connection (a failover, a cut network path) shows up no later.
LISTEN_CHECK_INTERVAL = 30.0
# The statements with which procrastinate's worker records that a job ended.
JOB_END_QUERIES = frozenset({sql.queries["finish_job"], sql.queries["retry_job"]})
# procrastinate's statement that records a job's end, when the job is deleted as it ends
# (`--delete-jobs`), telling the database first how it ended and what it returned (JSON
# text, '' if unknown): the trigger that counts the jobs of a batch and hands a chain's
# results on (migration jobs.0010) reads them, the job's row and its result being gone.
# The status is given twice, as two parameters: one parameter in both places would be
# typed text for both, and procrastinate's function takes its status type, which text is
# not cast to.
FINISH_AND_DELETE_JOB: LiteralString = (
    "SELECT procrastinate_finish_job_v1(%(job_id)s, %(status)s, %(delete_job)s) "
    "FROM (SELECT set_config('jobs.deleted_job_status', %(ended_as)s, true), "
    "set_config('jobs.deleted_job_return_value', %(return_value)s, true)) AS hint"
)
# procrastinate's fetch, with paused queues and limits (migration jobs.0012): the same
# columns, and the limits as JSON (jobs.limits.limits_json).
FETCH_JOB_WITH_LIMITS: LiteralString = (
    "SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, "
    "queue_name, attempts, worker_id "
    "FROM jobs_fetch_job_v1(%(queues)s::varchar[], %(worker_id)s, %(limits)s::jsonb)"
)
# The app's fetch function, its type or the paused queues' table does not exist: the code
# runs against a database that lacks migration jobs.0012 (migrated back, or not yet).
SCHEMA_MISSING_SQLSTATES = {"42883", "42704", "42P01"}  # function, type, table
FETCH_WARNING_INTERVAL = 60.0
# Wakes the workers of the given queues (and those of every queue): procrastinate's channels.
WAKE_UP_QUEUES: LiteralString = (
    "SELECT pg_notify(channel, %(payload)s) FROM unnest("
    "ARRAY['procrastinate_any_queue_v1'] || "
    "array(SELECT 'procrastinate_queue_v1#' || q FROM unnest(%(queues)s::text[]) q)) channel"
)
# The wake-up `listen_notify` delivers besides the database's notifications: what
# procrastinate's trigger sends when a job is inserted (the worker reads "type" only), with
# a job id the trigger never sends. See ReconnectingPsycopgConnector.
WAKE_UP = json.dumps({"type": "job_inserted", "job_id": None})

# Errors after which the statement did not take effect: the connection could not be made
# (no server, "the database system is starting up", pool timeout), or the server ended the
# session while shutting down or after a crash, which rolls back what it was running.
RETRIED_SQLSTATES = {"57P01", "57P02", "57P03"}  # admin shutdown, crash shutdown, starting
RETRIED_SQLSTATE_CLASSES = {"08"}  # connection exception


def _cause(error: BaseException) -> BaseException | None:
    """psycopg's error behind a connector error (procrastinate wraps them), or `error`."""
    return error.__cause__ if isinstance(error, exceptions.ConnectorException) else error


def connection_lost(error: BaseException) -> bool:
    """Whether `error` (a connector error or psycopg's own) means "no usable connection"."""
    cause = _cause(error)
    if isinstance(cause, psycopg_pool.PoolTimeout):
        return True
    if not isinstance(cause, psycopg.OperationalError):
        return False
    sqlstate = cause.sqlstate
    # No SQLSTATE: the client library gave up (refused, reset, closed), not the server.
    return (
        sqlstate is None
        or sqlstate in RETRIED_SQLSTATES
        or sqlstate[:2] in RETRIED_SQLSTATE_CLASSES
    )


def _due(moment: dt.datetime | None) -> bool:
    if moment is None or moment.tzinfo is None:  # procrastinate's are aware; assume due
        return True
    return moment <= dt.datetime.now(dt.UTC)


def _has_input(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))  # POLLHUP and POLLERR count too


async def check_idle_connection(connection: psycopg.AsyncConnection[Any]) -> None:
    """Pool check: a round trip only for a connection the server may have closed.

    An idle session receives nothing unless the server ends it (or, rarely, reports a
    changed setting): then the full check runs, reads what came, and fails if it is over.
    """
    if (
        connection.closed
        or connection.broken
        or not hasattr(select, "poll")  # Windows: no way to look without reading
        or _has_input(connection.fileno())
    ):
        await psycopg_pool.AsyncConnectionPool.check_connection(connection)


def _worker_pool(**arguments: Any) -> psycopg_pool.AsyncConnectionPool:
    # procrastinate passes its own `check`, which pings every connection it hands out.
    arguments["check"] = check_idle_connection
    return psycopg_pool.AsyncConnectionPool(**arguments)


class ReconnectingPsycopgConnector(PsycopgConnector):
    """procrastinate's psycopg connector whose statements and LISTEN survive a restart.

    Inserting jobs is never run again: if the connection broke after the server committed
    the insert but before its reply arrived, a second run would defer the jobs twice. A
    task that defers while the database is away fails, and its retry policy decides.
    Other statements are safe to repeat, or fail harmlessly when repeated (finishing a job
    that is already finished). The one gap left is fetching jobs when the reply is lost
    after the commit (only on a broken network, not on a restart, where the server says
    it is shutting down): those jobs stay `doing` until this worker stops, and stalled-job
    recovery then retries them.

    The pool's connections get the adapters of `jobs.out_of_range_times` (as `context=`,
    added to the given one), unless `kwargs` is a callable, whose result is the caller's.

    What `listen_notify` delivers: every notification the database sends on the channels,
    unchanged, and besides them wake-ups the database did not send: `WAKE_UP`,
    `{"type": "job_inserted", "job_id": null}`, on the first channel listened to. One comes
    each time the LISTEN connection is made (the first time included), after a fetch during
    which a notification arrived, and after a job was put back for an immediate retry.
    procrastinate 3.10's worker can be told to look for jobs in no other way: it fetches on
    a `job_inserted` notification (reading its type only), and the event that sets is
    private to it. The database never sends a null `job_id` (procrastinate's trigger sends
    the inserted job's id): a caller that wants only what the database sent skips those.
    """

    def __init__(self, *, reconnect_timeout: float = 60.0, **kwargs: Any) -> None:
        kwargs.setdefault("pool_factory", _worker_pool)
        pool_kwargs = kwargs.get("kwargs")
        if not callable(pool_kwargs):  # a callable (psycopg_pool >= 3.3) is the caller's
            pool_kwargs = dict(pool_kwargs or {})
            pool_kwargs["context"] = tolerant_adapters(pool_kwargs.get("context"))
            kwargs["kwargs"] = pool_kwargs
        super().__init__(**kwargs)
        self.reconnect_timeout = reconnect_timeout
        self._fetching = False
        self._notified_while_fetching = False
        # Job id -> a statement (a WITH query) and its parameters, to run with the job's end,
        # and the job's return value (JSON text), to hand on if the job is deleted instead.
        self._with_job_end: dict[int, tuple[LiteralString, dict[str, Any], str | None]] = {}
        # Job id -> the queues whose workers its end wakes (it counts towards a concurrency
        # limit, whose held jobs may start once it is over).
        self._limited_jobs: dict[int, tuple[str, ...]] = {}
        self._fetch_warned_at: dict[str, float] = {}
        # The jobs claimed for this connector's workers' free slots (jobs/prefetch.py).
        self.claimed_jobs = ClaimedJobs(self._run_claims_statement)
        # The ends of jobs that finish together, recorded in one statement (jobs/job_ends.py).
        self._job_ends = GatheredJobEnds(
            self._run_job_ends, self._record_job_end_alone, connection_lost
        )
        self._wake_up: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._wake_ups: set[asyncio.Task[None]] = set()

    async def _retrying(self, query: LiteralString, run: Callable[[], Awaitable[T]]) -> T:
        if query == sql.queries["defer_jobs"]:
            return await run()
        deadline = time.monotonic() + self.reconnect_timeout
        pause = FIRST_PAUSE
        while True:
            try:
                return await run()
            except exceptions.ConnectorException as error:
                if not connection_lost(error) or time.monotonic() + pause > deadline:
                    raise
                logger.warning(
                    "Database unreachable (%s); trying again in %.1f s",
                    str(error.__cause__).strip(),
                    pause,
                )
                if pause == FIRST_PAUSE:
                    await self._replace_pooled_connections()
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)

    async def _replace_pooled_connections(self) -> None:
        """Swap the pool's idle connections for new ones after the server was lost.

        They are most likely dead too. The pool would find out one at a time, by checking
        each before handing it out, but it pauses 1, 2, 4… seconds after each failed check:
        with four dead connections a worker would wait seven seconds for its next job.
        """
        await self.pool.drain()

    def write_with_job_end(
        self,
        job_id: int,
        statement: LiteralString,
        arguments: dict[str, Any],
        *,
        return_value: str | None = None,
    ) -> None:
        """Run `statement` (`name AS (INSERT ...)`) as part of the query recording the end of
        job `job_id` (finished, or to be retried): in the same round trip and transaction.

        Each of its parameters is an array of one value, this job's: the ends of jobs that
        finish together are recorded by one statement (jobs/job_ends.py), which runs
        `statement` once with the arrays of all the jobs that gave it, joined.

        Not when the job is deleted as it finishes (`--delete-jobs`): what the statement
        writes about it would go with it. The job's `return_value` (JSON text) is then
        given to the database instead, for a chain's next step. If the statement fails
        (other than by a lost connection), the error is logged and the job's end is
        recorded without it.
        """
        self._with_job_end[job_id] = (statement, arguments, return_value)

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None:
        if query == sql.queries["unregister_worker"]:
            await self._unregister_worker(query, arguments)
            return
        if query in JOB_END_QUERIES:
            self.claimed_jobs.ended(arguments["job_id"])
        if (
            query == sql.queries["finish_job"]
            and not arguments.get("delete_job")
            and jobs_settings.JOBS_GATHER_JOB_ENDS
        ):
            # With the ends of this worker's other jobs that finish now (jobs/job_ends.py).
            extra = self._with_job_end.pop(arguments["job_id"], None)
            await self._job_ends.record(
                arguments["job_id"],
                str(arguments["status"]),
                *((extra[0], extra[1]) if extra is not None else ()),
            )
        else:
            await self._execute(query, arguments)
        if query in JOB_END_QUERIES and self._limited_jobs:
            queues = self._limited_jobs.pop(arguments["job_id"], None)
            if queues is not None:
                await self._wake_up_workers(queues)
        if query == sql.queries["retry_job"] and _due(arguments.get("retry_at")):
            # procrastinate announces inserted jobs only: a job put back for an immediate
            # retry would wait for the next poll if every slot of this worker were idle.
            self._wake_up_soon()

    async def _execute(self, query: LiteralString, arguments: dict[str, Any]) -> None:
        extra = None
        if query in JOB_END_QUERIES:
            extra = self._with_job_end.pop(arguments["job_id"], None)
        await self._execute_with(query, arguments, extra)

    async def _record_job_end_alone(self, end: JobEnd) -> None:
        """A gathered job end, recorded on its own (jobs/job_ends.py)."""
        extra = None
        if end.with_statement is not None:
            extra = (end.with_statement, end.with_arguments, None)
        arguments = {"job_id": end.job_id, "status": end.status, "delete_job": False}
        await self._execute_with(sql.queries["finish_job"], arguments, extra)

    async def _run_job_ends(self, query: LiteralString, arguments: dict[str, Any]) -> None:
        parent = super().execute_query_async
        await self._retrying(query, lambda: parent(query, **arguments))

    async def _execute_with(
        self,
        query: LiteralString,
        arguments: dict[str, Any],
        extra: tuple[LiteralString, dict[str, Any], str | None] | None,
    ) -> None:
        """Run `query`, a job's end written with `extra` (statement, arguments, return value)
        if given."""
        parent = super().execute_query_async
        if query == sql.queries["finish_job"] and arguments.get("delete_job"):
            hints = {
                "ended_as": str(arguments["status"]),
                "return_value": (extra[2] if extra is not None else None) or "",
            }
            await self._retrying(query, lambda: parent(FINISH_AND_DELETE_JOB, **arguments, **hints))
            return
        if extra is not None:
            statement, extra_arguments, _ = extra
            combined: LiteralString = "WITH " + statement + "\n" + query
            try:
                await self._retrying(
                    query, lambda: parent(combined, **arguments, **extra_arguments)
                )
                return
            except Exception as error:
                # A lost connection is the caller's to handle; an error raised by
                # procrastinate's own function (P0001) would be raised again without ours.
                if connection_lost(error) or getattr(_cause(error), "sqlstate", None) == "P0001":
                    raise
                logger.exception(
                    "Could not write with the end of job %s; recording its end alone",
                    arguments["job_id"],
                )
        await self._retrying(query, lambda: parent(query, **arguments))

    async def _wake_up_workers(self, queues: tuple[str, ...]) -> None:
        """Notify the workers of `queues` as procrastinate's insert trigger does. A failure
        is only logged: their next poll (every second at most) finds the jobs all the same."""
        try:
            await super().execute_query_async(WAKE_UP_QUEUES, payload=WAKE_UP, queues=list(queues))
        except Exception:
            logger.warning("Could not wake the workers of %s", ", ".join(queues), exc_info=True)

    def _wake_up_soon(self) -> None:
        if self._wake_up is not None:
            wake_up = asyncio.create_task(self._wake_up())
            self._wake_ups.add(wake_up)
            wake_up.add_done_callback(self._wake_ups.discard)

    async def _unregister_worker(self, query: LiteralString, arguments: dict[str, Any]) -> None:
        # Before its row goes (which nulls its jobs' worker): the jobs it claimed and did
        # not start go back to the queue (jobs/prefetch.py).
        worker_id = arguments["worker_id"]
        await self.claimed_jobs.give_back(worker_id)
        try:
            await self._execute(query, arguments)
        finally:
            await self.claimed_jobs.forget(worker_id)

    async def _run_claims_statement(
        self, query: LiteralString, arguments: dict[str, Any]
    ) -> list[dict[str, Any]]:
        parent = super().execute_query_all_async
        return await self._retrying(query, lambda: parent(query, **arguments))

    async def execute_query_one_async(
        self, query: LiteralString, **arguments: Any
    ) -> dict[str, Any]:
        parent = super().execute_query_one_async
        if query != sql.queries["fetch_job"]:
            return await self._retrying(query, lambda: parent(query, **arguments))
        self._fetching = True
        try:
            # procrastinate's worker always says which worker fetches; without it, one job.
            worker_id: int | None = arguments.get("worker_id")
            row = None if worker_id is None else self.claimed_jobs.take_claimed(worker_id)
            if row is None:
                row = await self._fetch(query, arguments, worker_id)
            if row.get("id") is not None:
                if worker_id is not None:
                    self.claimed_jobs.handed_out(worker_id, row["id"])
                queues = limits.wake_up_queues(
                    str(row.get("task_name", "")), str(row.get("queue_name", ""))
                )
                if queues is not None:
                    self._limited_jobs[row["id"]] = queues
            return row
        finally:
            self._fetching = False
            if self._notified_while_fetching and self._wake_up is not None:
                self._notified_while_fetching = False
                # A task runs after the worker's own code that follows the fetch, which
                # clears the flag this wake-up sets again.
                self._wake_up_soon()

    async def _fetch(
        self, query: LiteralString, arguments: dict[str, Any], worker_id: int | None
    ) -> dict[str, Any]:
        """The next job for the worker (a row of nulls: none): a claim of one job per free
        slot, the first returned and the others kept (jobs/prefetch.py); one job when the
        worker has one free slot, or the database lacks the multi-job fetch; procrastinate's
        own fetch without the app's."""
        parent = super().execute_query_one_async
        if not jobs_settings.JOBS_FETCH_WITH_LIMITS:
            return await self._retrying(query, lambda: parent(query, **arguments))
        limits_json = limits.limits_json()
        slots = 1
        if worker_id is not None and jobs_settings.JOBS_FETCH_MANY:
            slots = self.claimed_jobs.slots_to_claim(worker_id)
        if worker_id is not None and slots > 1:
            try:
                rows = await self._run_claims_statement(
                    FETCH_JOBS, {**arguments, "limits": limits_json, "n": slots}
                )
            except exceptions.ConnectorException as error:
                if getattr(_cause(error), "sqlstate", None) not in SCHEMA_MISSING_SQLSTATES:
                    raise
                self._warn_fetch_function_missing(
                    error, "fetches one job at a time (it cannot claim several in one statement)"
                )
            else:
                if not rows:
                    return dict.fromkeys(FETCH_COLUMNS)
                await self.claimed_jobs.keep(worker_id, rows[1:])
                return rows[0]
        try:
            row: dict[str, Any] = await self._retrying(
                query, lambda: parent(FETCH_JOB_WITH_LIMITS, **arguments, limits=limits_json)
            )
        except exceptions.ConnectorException as error:
            if getattr(_cause(error), "sqlstate", None) not in SCHEMA_MISSING_SQLSTATES:
                raise
            self._warn_fetch_function_missing(
                error,
                "fetches with procrastinate's function, which knows no limit and no paused queue",
            )
            return await self._retrying(query, lambda: parent(query, **arguments))
        return row

    def _warn_fetch_function_missing(self, error: BaseException, consequence: str) -> None:
        now = time.monotonic()
        last = self._fetch_warned_at.get(consequence)
        if last is not None and now < last + FETCH_WARNING_INTERVAL:
            return
        self._fetch_warned_at[consequence] = now
        logger.warning(
            "The app's fetch function is missing (%s): run `manage.py migrate`. Until then "
            "this worker %s.",
            str(_cause(error)).strip(),
            consequence,
        )

    async def close_async(self) -> None:
        # Jobs claimed and not started go back before the pool closes (jobs/prefetch.py).
        await self.claimed_jobs.close()
        await super().close_async()

    async def execute_query_all_async(
        self, query: LiteralString, **arguments: Any
    ) -> list[dict[str, Any]]:
        parent = super().execute_query_all_async
        return await self._retrying(query, lambda: parent(query, **arguments))

    async def listen_notify(
        self, on_notification: connector.Notify, channels: Iterable[str]
    ) -> None:
        channels = list(channels)

        async def wake_up() -> None:
            # Like a notification, a wake-up during a fetch is cleared by the worker once the
            # fetch is over (the first one after LISTEN often is): deliver it again then.
            if self._fetching:
                self._notified_while_fetching = True
            await on_notification(channel=channels[0], payload=WAKE_UP)

        self._wake_up = wake_up
        pause = FIRST_PAUSE
        while True:
            try:
                async with await self._listen_connection() as connection:
                    await self._listen(connection, channels)
                    if pause != FIRST_PAUSE:  # a reconnection: the server was away
                        await self._replace_pooled_connections()
                    pause = FIRST_PAUSE
                    await wake_up()
                    await self._relay_notifications(connection, channels, on_notification)
            except psycopg.OperationalError as error:
                if not connection_lost(error):
                    raise
                logger.warning(
                    "LISTEN connection lost (%s); reconnecting in %.1f s",
                    str(error).strip(),
                    pause,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)

    async def _listen_connection(self) -> psycopg.AsyncConnection[Any]:
        """A connection to where the pool connects, made as procrastinate makes its own LISTEN
        connection: the pool's conninfo, kwargs and connection class, then the `configure`
        given to this connector; in autocommit, so that notifications arrive between
        statements."""
        pool = self.pool
        # psycopg_pool >= 3.3 takes callables for both; the pool resolves them this way.
        conninfo = await pool._resolve_conninfo()
        kwargs = await pool._resolve_kwargs()
        kwargs = {key: value for key, value in kwargs.items() if key != "autocommit"}
        connection = await pool.connection_class.connect(conninfo, **kwargs, autocommit=True)
        configure = self._pool_args.get("configure")
        if configure is not None:
            try:
                await configure(connection)
            except BaseException:
                await connection.close()
                raise
        return connection

    async def _listen(self, connection: psycopg.AsyncConnection[Any], channels: list[str]) -> None:
        for channel in channels:
            await connection.execute(
                psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
            )

    async def _relay_notifications(
        self,
        connection: psycopg.AsyncConnection[Any],
        channels: list[str],
        on_notification: connector.Notify,
    ) -> None:
        while True:
            async for notification in connection.notifies(timeout=LISTEN_CHECK_INTERVAL):
                if self._fetching:
                    self._notified_while_fetching = True
                await on_notification(channel=notification.channel, payload=notification.payload)
            # The check is LISTEN itself: a no-op on a session that already listens, and
            # pg_stat_activity keeps showing what this connection is for (query: LISTEN …).
            await self._listen(connection, channels)


class ReconnectingDjangoConnector(django_connector.DjangoConnector):
    """procrastinate's Django connector (web, commands) whose workers use the one above."""

    def get_worker_connector(self) -> connector.BaseAsyncConnector:
        return ReconnectingPsycopgConnector(
            kwargs={**connector_params(self.alias), "autocommit": True}
        )
