"""Job ends as a worker records them (jobs/connector.py, jobs/results.py), on the real database.

Ends that arrive together (a worker's jobs finishing at once) are each committed with their
result and events, one that fails leaves the others recorded, and none is lost when
PostgreSQL is away meanwhile. First with real worker processes, whose jobs end within a few
milliseconds of each other; then with the worker's side played by this process, where the
ends arrive at exactly the same moment: procrastinate's job manager on the connector its
workers get, the result written along with each end as `jobs.results.record_result` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.utils import timezone
from procrastinate import exceptions, jobs
from procrastinate.contrib.django import app
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from jobs.connector import ReconnectingPsycopgConnector
from jobs.models import JobResult
from jobs.results import JOB_END_CTE, json_text, upsert_parameters
from jobs.testing import WorkerProcess, wait_until
from project import embedded_postgres
from tests.conftest import TEST_TASKS, close_connections_cut_by_a_restart
from tests.slow_tasks import quick, wait_quietly

pytestmark = pytest.mark.django_db(transaction=True)


StartWorker = Callable[..., WorkerProcess]


def test_job_ends__a_workers_jobs_ending_together_are_each_recorded(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    flag = tmp_path / "end"
    start_worker("--concurrency", "6", "--queues", "tests", **TEST_TASKS)
    succeeding = [int(wait_quietly.defer(path=str(flag))) for _ in range(3)]
    failing = [
        int(wait_quietly.defer(path=str(tmp_path / "never"), give_up=str(flag))) for _ in range(3)
    ]
    job_ids = succeeding + failing
    wait_until(lambda: statuses(job_ids) == {job_id: "doing" for job_id in job_ids})

    flag.touch()  # every job ends now

    wait_until(lambda: "doing" not in statuses(job_ids).values())
    assert statuses(job_ids) == {
        **dict.fromkeys(succeeding, "succeeded"),
        **dict.fromkeys(failing, "failed"),
    }
    results = {result.job_id: result for result in JobResult.objects.filter(job_id__in=job_ids)}
    assert [results[job_id].return_value for job_id in succeeding] == [{"found": str(flag)}] * 3
    assert {results[job_id].exception_type for job_id in failing} == {"builtins.TimeoutError"}
    for job_id in job_ids:
        events = event_types(job_id)
        assert events.count("started") == 1
        assert events[-1] == statuses([job_id])[job_id]


def test_job_ends__a_job_ended_under_its_worker_leaves_the_others_recorded(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    """Stalled-job recovery that took a late worker for dead ends its job: the worker's own
    end of it then fails, and its other jobs' ends, arriving with it, are recorded."""
    flag = tmp_path / "end"
    worker = start_worker("--concurrency", "4", "--queues", "tests", **TEST_TASKS)
    job_ids = [int(wait_quietly.defer(path=str(flag))) for _ in range(4)]
    wait_until(lambda: statuses(job_ids) == {job_id: "doing" for job_id in job_ids})
    async_to_sync(app.job_manager.finish_job_by_id_async)(
        job_ids[1], status=jobs.Status.FAILED, delete_job=False
    )

    flag.touch()

    others = [job_id for job_id in job_ids if job_id != job_ids[1]]
    wait_until(lambda: set(statuses(others).values()) == {"succeeded"})
    assert statuses([job_ids[1]]) == {job_ids[1]: "failed"}  # as recovery left it
    assert set(JobResult.objects.values_list("job_id", flat=True)) == set(others)
    later = int(quick.defer(n=1))
    wait_until(lambda: statuses([later]) == {later: "succeeded"})  # the worker carries on
    assert worker.process.poll() is None


@dataclasses.dataclass
class Worker:
    """The database side of a worker: it takes jobs and records their ends."""

    connector: ReconnectingPsycopgConnector
    worker_id: int

    async def take(self, count: int) -> list[jobs.Job]:
        taken = [
            await app.job_manager.fetch_job(queues=["tests"], worker_id=self.worker_id)
            for _ in range(count)
        ]
        return [job for job in taken if job is not None]

    def _write_result(self, job: jobs.Job, status: str, **outcome: Any) -> None:
        now = timezone.now()
        row = upsert_parameters(
            job_id=job.id or 0,
            task_name=job.task_name,
            status=status,
            started_at=now,
            finished_at=now,
            duration=dt.timedelta(0),
            worker_id=self.worker_id,
            worker_name="ends",
            **outcome,
        )
        self.connector.write_with_job_end(
            job.id or 0, JOB_END_CTE, row, return_value=outcome.get("return_value")
        )

    async def succeed(self, job: jobs.Job, value: Any) -> None:
        self._write_result(job, "succeeded", return_value=json_text(value))
        await app.job_manager.finish_job(job=job, status=jobs.Status.SUCCEEDED, delete_job=False)

    async def fail(self, job: jobs.Job, *, retry_at: dt.datetime | None = None) -> None:
        self._write_result(job, "failed", exception_type="builtins.ValueError")
        if retry_at is None:
            await app.job_manager.finish_job(job=job, status=jobs.Status.FAILED, delete_job=False)
        else:
            await app.job_manager.retry_job(job=job, retry_at=retry_at)


def as_worker[T](scenario: Callable[[Worker], Awaitable[T]]) -> T:
    """Run `scenario` with a worker's connector (the one `procrastinate worker` gets)."""

    assert isinstance(app.connector, DjangoConnector)
    workers_connector = app.connector.get_worker_connector()

    async def run() -> T:
        with app.replace_connector(workers_connector):
            async with app.open_async():
                connector = app.connector
                assert isinstance(connector, ReconnectingPsycopgConnector)
                worker_id = await app.job_manager.register_worker()
                try:
                    return await scenario(Worker(connector, worker_id))
                finally:
                    await app.job_manager.unregister_worker(worker_id)

    return async_to_sync(run)()


def statuses(job_ids: list[int]) -> dict[int, str]:
    return dict(ProcrastinateJob.objects.filter(id__in=job_ids).values_list("id", "status"))


def event_types(job_id: int) -> list[str]:
    return list(
        ProcrastinateEvent.objects.filter(job_id=job_id)
        .order_by("id")
        .values_list("type", flat=True)
    )


def test_job_ends__ends_arriving_together_are_each_recorded_with_their_result() -> None:
    job_ids = [int(quick.defer(n=n)) for n in range(6)]
    later = timezone.now() + dt.timedelta(hours=1)

    async def scenario(worker: Worker) -> None:
        taken = await worker.take(6)
        await asyncio.gather(
            worker.succeed(taken[0], {"n": 0}),
            worker.fail(taken[1]),
            worker.succeed(taken[2], [2]),
            worker.fail(taken[3], retry_at=later),
            worker.fail(taken[4]),
            worker.succeed(taken[5], None),
        )

    as_worker(scenario)

    statuses = dict(ProcrastinateJob.objects.filter(id__in=job_ids).values_list("id", "status"))
    assert [statuses[job_id] for job_id in job_ids] == [
        "succeeded", "failed", "succeeded", "todo", "failed", "succeeded",
    ]  # fmt: skip
    results = {result.job_id: result for result in JobResult.objects.filter(job_id__in=job_ids)}
    assert [results[job_id].status for job_id in job_ids] == [
        "succeeded", "failed", "succeeded", "failed", "failed", "succeeded",
    ]  # fmt: skip
    assert [results[job_id].return_value for job_id in job_ids[::2]] == [{"n": 0}, [2], None]
    assert results[job_ids[1]].exception_type == "builtins.ValueError"
    assert all(len(results[job_id].attempts_log) == 1 for job_id in job_ids)
    ended_as = ["succeeded", "failed", "succeeded", "deferred_for_retry", "failed", "succeeded"]
    for job_id, end in zip(job_ids, ended_as, strict=True):
        events = event_types(job_id)
        assert events.count("started") == 1
        assert events.count(end) == 1


def test_job_ends__an_end_that_fails_leaves_the_others_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_ids = [int(quick.defer(n=n)) for n in range(4)]

    async def scenario(worker: Worker) -> list[BaseException | None]:
        taken = await worker.take(4)
        # Ended meanwhile by someone else (stalled-job recovery that took the worker for
        # dead): procrastinate's function refuses to end it again.
        await app.job_manager.finish_job_by_id_async(
            job_ids[2], status=jobs.Status.FAILED, delete_job=False
        )
        return await asyncio.gather(
            *(worker.succeed(job, job.id) for job in taken), return_exceptions=True
        )

    outcomes = as_worker(scenario)

    assert [type(outcome) for outcome in outcomes] == [
        type(None),
        type(None),
        exceptions.ConnectorException,
        type(None),
    ]
    statuses = dict(ProcrastinateJob.objects.filter(id__in=job_ids).values_list("id", "status"))
    assert [statuses[job_id] for job_id in job_ids] == [
        "succeeded",
        "succeeded",
        "failed",
        "succeeded",
    ]
    results = dict(JobResult.objects.values_list("job_id", "return_value"))
    assert results == {job_id: job_id for job_id in job_ids if job_id != job_ids[2]}
    assert "Could not write with the end" not in caplog.text


def server_pid(data_dir: Path) -> str | None:
    try:
        return (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "project.embedded_postgres",
    reason="DATABASE_URL points at an external PostgreSQL: this test restarts the embedded one",
)
def test_job_ends__ends_sent_while_postgresql_restarts_are_recorded_once_it_is_back() -> None:
    job_ids = [int(quick.defer(n=n)) for n in range(4)]
    data_dir = Path(settings.DATABASES["default"]["EMBEDDED_DATA_DIR"])

    async def scenario(worker: Worker) -> None:
        taken = await worker.take(4)
        running = server_pid(data_dir)
        restart = asyncio.create_task(asyncio.to_thread(embedded_postgres.restart, data_dir))
        # Until the server the pool's connections lead to is gone.
        await asyncio.to_thread(wait_until, lambda: server_pid(data_dir) != running)
        await asyncio.gather(*(worker.succeed(job, job.id) for job in taken))
        await restart

    try:
        as_worker(scenario)
    finally:
        close_connections_cut_by_a_restart()

    statuses = ProcrastinateJob.objects.filter(id__in=job_ids).values_list("status", flat=True)
    assert list(statuses) == ["succeeded"] * 4
    results = dict(JobResult.objects.values_list("job_id", "return_value"))
    assert results == {job_id: job_id for job_id in job_ids}
    assert [event_types(job_id)[-1] for job_id in job_ids] == ["succeeded"] * 4


def transactions_that_ended(job_ids: list[int]) -> int:
    """How many transactions recorded the jobs' ends: the `succeeded` event that
    procrastinate's trigger inserts, and the result written with it (their xmin)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event.xmin::text, result.xmin::text FROM procrastinate_events AS event "
            "JOIN jobs_jobresult AS result ON result.job_id = event.job_id "
            "WHERE event.job_id = ANY(%s) AND event.type = 'succeeded'",
            [job_ids],
        )
        written = cursor.fetchall()
    assert len(written) == len(job_ids)
    assert all(event == result for event, result in written)  # each result with its end
    return len(set(written))


@pytest.mark.parametrize("gather", [True, False], ids=["gathered", "alone"])
def test_job_ends__ends_arriving_together_are_one_statement_unless_told_otherwise(
    gather: bool, settings: Any
) -> None:
    settings.JOBS_GATHER_JOB_ENDS = gather
    job_ids = [int(quick.defer(n=n)) for n in range(5)]

    async def scenario(worker: Worker) -> None:
        taken = await worker.take(5)
        await asyncio.gather(*(worker.succeed(job, job.id) for job in taken[:4]))
        await worker.succeed(taken[4], "alone")  # a lone end goes at once, alone

    as_worker(scenario)

    assert transactions_that_ended(job_ids[:4]) == (1 if gather else 4)
    assert transactions_that_ended(job_ids) == (2 if gather else 5)
    assert (
        list(ProcrastinateJob.objects.filter(id__in=job_ids).values_list("status", flat=True))
        == ["succeeded"] * 5
    )
    results = dict(JobResult.objects.values_list("job_id", "return_value"))
    assert results == {**{job_id: job_id for job_id in job_ids[:4]}, job_ids[4]: "alone"}
    assert all(event_types(job_id)[-1] == "succeeded" for job_id in job_ids)
