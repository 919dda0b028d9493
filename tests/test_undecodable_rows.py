"""Job rows holding a time Python's datetime cannot hold, read by every reader of job rows.

PostgreSQL stores timestamps from 4713 BC to 294276 AD and infinity; Python's datetime
runs from year 1 to 9999. Before jobs.out_of_range_times, psycopg refused such a row
("timestamp too small") wherever it was read: the worker that fetched the job exited,
stalled-job recovery failed, and every page that listed the job answered 500.

The rows here are written as an API call could once write them: through procrastinate's
own defer function (`procrastinate_defer_jobs_v1`, which the API's defer calls) with the
time as PostgreSQL reads it, which also writes the job's `scheduled` event at that time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from io import StringIO
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob
from prometheus_client.parser import text_string_to_metric_families

from jobs.out_of_range_times import EARLIEST, LATEST
from jobs.testing import WorkerProcess, wait_until
from tests.conftest import TEST_TASKS

# As PostgreSQL reads them -> what a reader gets.
OUT_OF_RANGE = {
    "0001-01-01T00:00:00+14:00": EARLIEST,  # stored as 0001-12-31 10:00:00+00 BC
    "-infinity": EARLIEST,
    "10000-01-01T00:00:00+00:00": LATEST,
    "infinity": LATEST,
}
# Due now: a worker fetches them.
DUE = ["0001-01-01T00:00:00+14:00", "-infinity"]


def defer_at(when: str, *, task: str = "tests.quick", args: dict[str, Any] | None = None) -> int:
    """Defer a job of `task` scheduled at `when` (PostgreSQL's reading) on Django's connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, NULL, NULL, "
            "%s::jsonb, %s::timestamptz)::procrastinate_job_to_defer_v1]))",
            ["tests", task, json.dumps(args if args is not None else {"n": 1}), when],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def superuser_client(db: None) -> Client:
    """Someone every page of the site lets in, whatever its login and permission rules."""
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-for-tests"))
    return client


# --- The loader itself ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("stored", "loaded"), OUT_OF_RANGE.items())
def test_django_connection__loads_an_out_of_range_time_as_a_bound(
    stored: str, loaded: dt.datetime
) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz, '2026-11-30T12:00:00+01:00'::timestamptz", [stored])
        row = cursor.fetchone()

    assert row == (loaded, dt.datetime(2026, 11, 30, 11, tzinfo=dt.UTC))
    assert row[0].tzinfo == dt.UTC
    # As early / as late as a datetime goes, less the day that any time zone may need.
    assert (EARLIEST.year, LATEST.year) == (1, 9999)


@pytest.mark.django_db
@pytest.mark.parametrize(("stored", "loaded"), OUT_OF_RANGE.items())
def test_orm__reads_a_job_and_its_event_with_an_out_of_range_time(
    stored: str, loaded: dt.datetime
) -> None:
    job_id = defer_at(stored)

    job = ProcrastinateJob.objects.get(id=job_id)
    event = ProcrastinateEvent.objects.get(job_id=job_id, type="scheduled")

    assert job.scheduled_at == loaded
    assert event.at == loaded


@pytest.mark.django_db
@pytest.mark.parametrize(("stored", "loaded"), OUT_OF_RANGE.items())
def test_binary_results__load_an_out_of_range_time_as_a_bound(
    stored: str, loaded: dt.datetime
) -> None:
    connection.ensure_connection()
    # A server-side binding cursor: Django's own (client-side binding) cannot ask for binary.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute("SELECT %s::timestamptz", [stored], binary=True)
        row = cursor.fetchone()

    assert row == (loaded,)


@pytest.mark.django_db
def test_django_connection__a_time_that_is_not_out_of_range_still_fails() -> None:
    """Only the two ends are replaced: a value psycopg cannot parse for another reason is
    still an error (here a datestyle psycopg does not read)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL datestyle = 'German'")
        cursor.execute("SELECT '2026-11-30T12:00:00+00'::timestamptz")
        with pytest.raises(NotImplementedError):
            cursor.fetchone()


# --- The readers ------------------------------------------------------------------------

# Each answered 500 (or, for /metrics/, "database down") while such a row was on its page.
PAGES = {
    "status API": "/api/jobs/{job_id}/",
    "status API, async": "/api/async/jobs/{job_id}/",
    "admin job list": "/admin/procrastinate/procrastinatejob/",
    "admin job page": "/admin/procrastinate/procrastinatejob/{job_id}/change/",
    "admin event list": "/admin/procrastinate/procrastinateevent/",
    "home": "/",
    "activity": "/activity/",
    "dashboard": "/dashboard/",
    "dashboard panels": "/dashboard/panels/",
    "dashboard data": "/dashboard/data/",
}


@pytest.mark.django_db
@pytest.mark.parametrize(
    # Pages show times in TIME_ZONE: the bounds must convert to zones far from UTC too.
    "time_zone",
    ["UTC", "Etc/GMT-14", "Etc/GMT+12", "Pacific/Kiritimati"],
)
@pytest.mark.parametrize("page", PAGES)
def test_pages__answer_with_jobs_of_out_of_range_times_on_them(
    superuser_client: Client, settings: Any, page: str, time_zone: str
) -> None:
    settings.TIME_ZONE = time_zone
    job_ids = [defer_at(stored) for stored in OUT_OF_RANGE]

    for job_id in job_ids if "{job_id}" in PAGES[page] else job_ids[:1]:
        response = superuser_client.get(PAGES[page].format(job_id=job_id))

        assert response.status_code == 200, response.content[-2000:]
        if page.startswith("status API"):
            assert response.json()["id"] == job_id


@pytest.mark.django_db
@pytest.mark.parametrize("stored", OUT_OF_RANGE)
def test_metrics__read_the_queue_with_a_job_of_out_of_range_time(
    superuser_client: Client, stored: str
) -> None:
    defer_at(stored)

    response = superuser_client.get("/metrics/")

    assert response.status_code == 200
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    assert values["pgjobs_database_up"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize("stored", DUE)
def test_stalled_recovery__retries_a_job_of_out_of_range_time(stored: str) -> None:
    """A worker fetched the job and died; recovery reads the job row, and retries it."""
    job_id = defer_at(stored, task="tests.wait_for_file", args={"path": "/nonexistent"})
    manager = app.job_manager
    worker_id = async_to_sync(manager.register_worker)()
    fetched = async_to_sync(manager.fetch_job)(queues=None, worker_id=worker_id)
    assert fetched is not None
    assert (fetched.id, fetched.scheduled_at) == (job_id, EARLIEST)
    async_to_sync(manager.unregister_worker)(worker_id)  # gone: its jobs are stalled

    call_command("recover_stalled_jobs", "--stalled-after", "60", stdout=StringIO())

    job = ProcrastinateJob.objects.get(id=job_id)
    assert (job.status, job.attempts) == ("todo", 1)


# --- A real worker ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stored", DUE)
def test_worker__runs_a_job_of_out_of_range_time_and_stays_up(
    start_worker: Callable[..., WorkerProcess], stored: str
) -> None:
    worker = start_worker("--queues", "tests", **TEST_TASKS)
    job_id = defer_at(stored, args={"n": 7})

    def finished() -> bool:
        assert worker.process.poll() is None, f"the worker exited:\n{worker.output()[-4000:]}"
        return ProcrastinateJob.objects.filter(id=job_id, status="succeeded").exists()

    wait_until(finished, what="the job to succeed")
    second = defer_at(stored, args={"n": 8})
    wait_until(
        lambda: ProcrastinateJob.objects.filter(id=second, status="succeeded").exists(),
        what="a second job to succeed on the same worker",
    )
    assert worker.process.poll() is None
