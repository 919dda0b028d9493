"""The workers' connector (jobs/connector.py).

Its rules for a lost connection are pinned down with psycopg's side played by fakes (the
same behaviour is checked end to end, with a real PostgreSQL restart, in
tests/test_faults.py); where its connections are made, and what they read and hear, with the
real database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, Self

import psycopg
import psycopg_pool
import pytest
from asgiref.sync import async_to_sync
from procrastinate import exceptions, sql
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.psycopg_connector import PsycopgConnector
from psycopg.conninfo import make_conninfo
from psycopg.types.string import TextLoader

from jobs.connector import WAKE_UP, ReconnectingPsycopgConnector, connection_lost
from jobs.databases import connection_kwargs
from jobs.out_of_range_times import EARLIEST, LATEST

ADMIN_SHUTDOWN = "57P01"


def database_error(sqlstate: str | None) -> exceptions.ConnectorException:
    """What procrastinate's connector raises: its own exception, psycopg's as the cause."""
    cause = psycopg.OperationalError("the server went away")
    cause.sqlstate = sqlstate
    error = exceptions.ConnectorException()
    error.__cause__ = cause
    return error


class FakePool(psycopg_pool.AsyncConnectionPool):
    """The connector's pool, built from its arguments but never opened: no connection is
    made, and the tests count its drains."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drains = 0

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:  # noqa: ASYNC109  (the pool's)
        return None

    async def drain(self) -> None:
        self.drains += 1


async def opened_connector() -> tuple[ReconnectingPsycopgConnector, FakePool]:
    connector = ReconnectingPsycopgConnector(kwargs={"dbname": "jobs"}, pool_factory=FakePool)
    await connector.open_async()
    assert isinstance(connector.pool, FakePool)
    return connector, connector.pool


def parent_answers(monkeypatch: pytest.MonkeyPatch, *answers: Any) -> list[str]:
    """Make procrastinate's own connector return (or raise) `answers` in turn."""
    queries: list[str] = []
    pending = list(answers)

    async def execute(self: Any, query: str, **arguments: Any) -> Any:
        queries.append(query)
        answer = pending.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return await answer()
        return answer

    for name in ("execute_query_async", "execute_query_one_async", "execute_query_all_async"):
        monkeypatch.setattr(PsycopgConnector, name, execute)
    return queries


class FakeListenConnection:
    """A LISTEN connection whose notifications (or failure) the test pushes."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[psycopg.Notify | Exception] = asyncio.Queue()
        self.statements: list[str] = []

    async def __aenter__(self) -> FakeListenConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, query: Any) -> None:
        self.statements.append(query.as_string() if hasattr(query, "as_string") else query)

    async def notifies(self, **options: Any) -> AsyncIterator[psycopg.Notify]:
        while True:
            event = await self.events.get()
            if isinstance(event, Exception):
                raise event
            yield event


def fake_connect(
    monkeypatch: pytest.MonkeyPatch, *outcomes: FakeListenConnection | Exception
) -> list[dict[str, Any]]:
    """Make psycopg's connect (the pool's connection class) return or raise `outcomes` in
    turn; returns the arguments of each call, the conninfo under "conninfo"."""
    calls: list[dict[str, Any]] = []
    pending = list(outcomes)

    async def connect(conninfo: str = "", **kwargs: Any) -> FakeListenConnection:
        calls.append({"conninfo": conninfo, **kwargs})
        outcome = pending.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    return calls


def recorder() -> tuple[list[str], Callable[..., Any]]:
    received: list[str] = []

    async def on_notification(*, channel: str, payload: str) -> None:
        received.append(json.loads(payload)["type"])

    return received, on_notification


async def until(predicate: Callable[[], bool], within: float = 5) -> None:
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not met within {within} s")


@pytest.mark.parametrize(
    ("sqlstate", "lost"),
    [
        (None, True),  # refused, reset, closed: the client library gave up
        ("08006", True),  # connection failure
        (ADMIN_SHUTDOWN, True),
        ("57P03", True),  # the database system is starting up
        ("57014", False),  # statement timeout: the server is there
        ("40001", False),  # serialization failure
    ],
)
def test_connection_lost__by_sqlstate(sqlstate: str | None, lost: bool) -> None:
    assert connection_lost(database_error(sqlstate)) is lost


def test_connection_lost__not_for_errors_of_the_query() -> None:
    assert not connection_lost(exceptions.UniqueViolation(constraint_name="x", queueing_lock=None))


async def test_connector__statement_cut_by_a_restart_runs_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector, pool = await opened_connector()
    queries = parent_answers(monkeypatch, database_error(ADMIN_SHUTDOWN), {"id": 7})

    row = await connector.execute_query_one_async(sql.queries["finish_job"], job_id=7)

    assert row == {"id": 7}
    assert len(queries) == 2
    assert pool.drains == 1  # the pool's idle connections, dead too, are replaced at once


async def test_connector__gives_up_after_reconnect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector, _ = await opened_connector()
    connector.reconnect_timeout = 0.5
    queries = parent_answers(monkeypatch, *[database_error(None)] * 10)

    with pytest.raises(exceptions.ConnectorException):
        await connector.execute_query_async(sql.queries["update_heartbeat"], worker_id=1)

    assert 2 <= len(queries) < 10


async def test_connector__deferring_is_never_run_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    connector, _ = await opened_connector()
    queries = parent_answers(monkeypatch, database_error(None), [{"id": 1}])

    with pytest.raises(exceptions.ConnectorException):
        await connector.execute_query_all_async(sql.queries["defer_jobs"], jobs=[])

    assert len(queries) == 1  # the insert may have been committed before the reply was lost


async def test_connector__error_of_the_query_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector, _ = await opened_connector()
    queries = parent_answers(monkeypatch, database_error("57014"), {"id": 1})

    with pytest.raises(exceptions.ConnectorException):
        await connector.execute_query_one_async(sql.queries["fetch_job"], queues=None)

    assert len(queries) == 1


async def test_connector__listen_wakes_the_worker_once_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector, pool = await opened_connector()
    connection = FakeListenConnection()
    calls = fake_connect(monkeypatch, connection)
    received, on_notification = recorder()

    listener = asyncio.create_task(connector.listen_notify(on_notification, ["jobs_channel"]))
    await until(lambda: received == ["job_inserted"])
    connection.events.put_nowait(psycopg.Notify("c", '{"type": "abort_job_requested"}', 1))
    await until(lambda: len(received) == 2)
    listener.cancel()

    assert received == ["job_inserted", "abort_job_requested"]
    assert connection.statements == ['LISTEN "jobs_channel"']
    assert [(call["conninfo"], call["dbname"], call["autocommit"]) for call in calls] == [
        ("", "jobs", True)
    ]
    assert pool.drains == 0


async def test_connector__listen_reconnects_until_the_server_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector, pool = await opened_connector()
    first, second = FakeListenConnection(), FakeListenConnection()
    shutting_down = psycopg.OperationalError("the database system is shutting down")
    calls = fake_connect(monkeypatch, first, shutting_down, shutting_down, second)
    received, on_notification = recorder()

    listener = asyncio.create_task(connector.listen_notify(on_notification, ["jobs_channel"]))
    await until(lambda: len(received) == 1)
    first.events.put_nowait(psycopg.OperationalError("server closed the connection"))
    await until(lambda: len(received) == 2)
    listener.cancel()

    assert len(calls) == 4
    assert second.statements == ['LISTEN "jobs_channel"']
    # Woken after reconnecting: notifications sent meanwhile were lost.
    assert received == ["job_inserted", "job_inserted"]
    assert pool.drains == 1


async def test_connector__listen_stops_on_an_error_that_is_not_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector, _ = await opened_connector()
    refused = psycopg.OperationalError("password authentication failed")
    refused.sqlstate = "28P01"
    fake_connect(monkeypatch, refused)
    _, on_notification = recorder()

    with pytest.raises(psycopg.OperationalError):
        await connector.listen_notify(on_notification, ["jobs_channel"])


async def test_connector__notification_during_a_fetch_wakes_the_worker_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """procrastinate's worker clears its wake-up flag after each fetch; the job announced
    while the fetch ran (too late for it to see) must not wait for the next poll."""
    connector, _ = await opened_connector()
    connection = FakeListenConnection()
    fake_connect(monkeypatch, connection)
    received, on_notification = recorder()
    listener = asyncio.create_task(connector.listen_notify(on_notification, ["jobs_channel"]))
    await until(lambda: len(received) == 1)

    async def fetch_during_which_a_job_is_deferred() -> dict[str, Any]:
        connection.events.put_nowait(psycopg.Notify("c", '{"type": "job_inserted"}', 1))
        await until(lambda: len(received) == 2)
        return {"id": None}

    parent_answers(monkeypatch, fetch_during_which_a_job_is_deferred, {"id": None})
    await connector.execute_query_one_async(sql.queries["fetch_job"], queues=None)
    woken_during_fetch = len(received)
    await until(lambda: len(received) == 3)
    await connector.execute_query_one_async(sql.queries["fetch_job"], queues=None)
    await asyncio.sleep(0.05)
    listener.cancel()

    assert woken_during_fetch == 2
    assert received == ["job_inserted"] * 3  # and a quiet fetch wakes nobody


async def test_connector__wake_up_during_a_fetch_wakes_the_worker_again_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wake-up sent once LISTEN is up (to catch what was committed before) often lands
    while the worker's first fetch runs, and the worker clears it after that fetch."""
    connector, _ = await opened_connector()
    fake_connect(monkeypatch, FakeListenConnection())
    received, on_notification = recorder()
    listeners: list[asyncio.Task[None]] = []

    async def fetch_during_which_listen_comes_up() -> dict[str, Any]:
        listeners.append(
            asyncio.create_task(connector.listen_notify(on_notification, ["jobs_channel"]))
        )
        await until(lambda: len(received) == 1)
        return {"id": None}

    parent_answers(monkeypatch, fetch_during_which_listen_comes_up, {"id": None})
    await connector.execute_query_one_async(sql.queries["fetch_job"], queues=None)
    await until(lambda: len(received) == 2)
    await connector.execute_query_one_async(sql.queries["fetch_job"], queues=None)
    await asyncio.sleep(0.05)
    listeners[0].cancel()

    assert received == ["job_inserted"] * 2  # and a quiet fetch wakes nobody


# --- With the real database -------------------------------------------------------------

CHANNEL = "procrastinate_any_queue_v1"  # where procrastinate's trigger announces every job


def database_conninfo() -> str:
    """The test database's connection parameters as one conninfo string."""
    return make_conninfo(**connection_kwargs())


@pytest.fixture
def libpq_defaults_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's defaults reach the test server, but its default database (the user's name),
    not the test database: a connection made without the connector's parameters lands
    there, as it would on any machine where PGHOST and friends are set."""
    params = connection_kwargs()
    for variable, key in [("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user")]:
        if params.get(key):
            monkeypatch.setenv(variable, str(params[key]))
    if params.get("password"):
        monkeypatch.setenv("PGPASSWORD", str(params["password"]))
    monkeypatch.delenv("PGDATABASE", raising=False)
    assert params["dbname"] != params.get("user", "")


async def listen_while(
    connector: ReconnectingPsycopgConnector, act: Callable[[], Awaitable[None]], expected: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Listen through `connector` and, on a connection of our own, to what the database
    sends; run `act` once the connector listens; stop when it has received `expected`
    deliveries. Returns (what the connector delivered, what the database sent)."""
    delivered: list[tuple[str, str]] = []

    async def on_notification(*, channel: str, payload: str) -> None:
        delivered.append((channel, payload))

    async with await psycopg.AsyncConnection.connect(
        database_conninfo(), autocommit=True
    ) as witness:
        await witness.execute(f'LISTEN "{CHANNEL}"')
        await connector.open_async()
        listener = asyncio.create_task(connector.listen_notify(on_notification, [CHANNEL]))
        try:
            await until(lambda: len(delivered) == 1, within=30)  # the wake-up, once listening
            await act()
            await until(lambda: len(delivered) == expected, within=30)
            sent = [
                (notification.channel, notification.payload)
                async for notification in witness.notifies(timeout=1, stop_after=expected - 1)
            ]
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await connector.close_async()
    return delivered, sent


async def defer_quick_job() -> None:
    await app.configure_task("tests.quick").defer_async(n=1)


@pytest.mark.django_db(transaction=True)
def test_connector__made_from_a_conninfo_hears_notify_on_its_database(
    libpq_defaults_elsewhere: None,
) -> None:
    """procrastinate's usual way to make a connector: a conninfo, nothing in `kwargs`.

    Also what `listen_notify` delivers: what the database sent, unchanged, and wake-ups
    that tell themselves apart by a null job id."""
    connector = ReconnectingPsycopgConnector(conninfo=database_conninfo())

    delivered, sent = async_to_sync(listen_while)(connector, defer_quick_job, expected=2)

    (job,) = ProcrastinateJob.objects.all()
    assert [(channel, json.loads(payload)) for channel, payload in sent] == [
        (CHANNEL, {"type": "job_inserted", "job_id": job.id})
    ]
    assert delivered == [(CHANNEL, WAKE_UP), *sent]
    assert json.loads(WAKE_UP) == {"type": "job_inserted", "job_id": None}


class CountedConnection(psycopg.AsyncConnection[Any]):
    """A connection class of the caller's: the pool's and the LISTEN connection's."""

    made: ClassVar[int] = 0

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> Self:
        CountedConnection.made += 1
        return await super().connect(*args, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_connector__listen_connection_is_made_like_the_pools(
    libpq_defaults_elsewhere: None,
) -> None:
    """The pool's `configure` and `connection_class` apply to the LISTEN connection too."""

    async def configure(connection: psycopg.AsyncConnection[Any]) -> None:
        await connection.execute("SET application_name = 'configured-listener'")
        await connection.commit()  # the pool's connections are not in autocommit

    listening: list[tuple[str, str, str]] = []

    async def look() -> None:
        async with await psycopg.AsyncConnection.connect(database_conninfo()) as observer:
            cursor = await observer.execute(
                "SELECT datname, application_name, query FROM pg_stat_activity "
                "WHERE query ILIKE 'LISTEN %%' AND application_name = 'configured-listener'"
            )
            listening.extend(await cursor.fetchall())
        await defer_quick_job()

    CountedConnection.made = 0
    connector = ReconnectingPsycopgConnector(
        conninfo=database_conninfo(),
        configure=configure,
        connection_class=CountedConnection,
        min_size=1,
    )

    delivered, sent = async_to_sync(listen_while)(connector, look, expected=2)

    database = connection_kwargs()["dbname"]
    assert listening == [(database, "configured-listener", f'LISTEN "{CHANNEL}"')]
    assert delivered[1:] == sent
    assert CountedConnection.made >= 2  # the pool's connection and the LISTEN connection


class ShoutingLoader(TextLoader):
    """An adapter of the caller's own."""

    def load(self, data: Any) -> str:
        return str(super().load(data)).upper()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("stored", "loaded"), [("-infinity", EARLIEST), ("10000-01-01T00:00:00+00", LATEST)]
)
def test_connector__pool_connections_load_out_of_range_times_as_bounds(
    stored: str, loaded: dt.datetime
) -> None:
    """On top of the caller's own adapters (`context`) and `configure`."""
    configured: list[object] = []

    async def configure(connection: psycopg.AsyncConnection[Any]) -> None:
        configured.append(connection)

    own = psycopg.adapt.AdaptersMap(psycopg.adapters)
    own.register_loader("text", ShoutingLoader)

    async def read() -> dict[str, Any]:
        connector = ReconnectingPsycopgConnector(
            conninfo=database_conninfo(), kwargs={"context": own}, configure=configure, min_size=1
        )
        await connector.open_async()
        try:
            return await connector.execute_query_one_async(
                "SELECT %(stored)s::timestamptz AS at, 'kept'::text AS text", stored=stored
            )
        finally:
            await connector.close_async()

    row = async_to_sync(read)()

    assert row == {"at": loaded, "text": "KEPT"}
    assert configured
