"""The workers' connector (jobs/connector.py), with psycopg's side played by fakes.

The same behaviour is checked end to end, with a real PostgreSQL restart, in
tests/test_faults.py; here each rule is pinned down deterministically.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from procrastinate import exceptions, sql
from procrastinate.psycopg_connector import PsycopgConnector

from jobs.connector import ReconnectingPsycopgConnector, connection_lost

ADMIN_SHUTDOWN = "57P01"


def database_error(sqlstate: str | None) -> exceptions.ConnectorException:
    """What procrastinate's connector raises: its own exception, psycopg's as the cause."""
    cause = psycopg.OperationalError("the server went away")
    cause.sqlstate = sqlstate
    error = exceptions.ConnectorException()
    error.__cause__ = cause
    return error


class FakePool:
    def __init__(self) -> None:
        self.drains = 0

    async def drain(self) -> None:
        self.drains += 1


async def opened_connector() -> tuple[ReconnectingPsycopgConnector, FakePool]:
    connector = ReconnectingPsycopgConnector(kwargs={"dbname": "jobs"})
    pool = FakePool()
    await connector.open_async(pool=pool)  # type: ignore[arg-type]  # the pool's stand-in
    return connector, pool


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
    calls: list[dict[str, Any]] = []
    pending = list(outcomes)

    async def connect(**kwargs: Any) -> FakeListenConnection:
        calls.append(kwargs)
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
    assert [(call["dbname"], call["autocommit"]) for call in calls] == [("jobs", True)]
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
