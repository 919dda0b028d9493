"""Why a waiting job does not start, where people look: the admin's job page and the status
API (`jobs.job_status.held_by`, jobs/limits.py's answer), and the limits' figures on the
admin's page of queues, limits and pauses. Jobs are taken as a worker takes them, through
the app's fetch function with the declared limits (what tests/test_limits.py proves)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from procrastinate.contrib.django import app
from procrastinate.jobs import Status

from jobs import limits, queue_pauses
from tests import limit_tasks
from tests.limit_tasks import PER_CUSTOMER, QUEUE

pytestmark = pytest.mark.django_db

QUEUES_PAGE = "/admin/jobs/queuecontrol/"
HELD = "waiting for limit `tests.per_customer` (customer=1): 2 of 2 running"


def job_page(job_id: int) -> str:
    return f"/admin/procrastinate/procrastinatejob/{job_id}/change/"


def defer(task_name: str, **args: Any) -> int:
    return int(app.configure_task(task_name, queue=args.pop("queue", QUEUE)).defer(**args))


def take() -> int | None:
    """The next job, as a worker of this code takes it (its declared limits applied)."""
    worker_id = async_to_sync(app.job_manager.register_worker)()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM jobs_fetch_job_v1(NULL, %s, %s::jsonb)",
            [worker_id, limits.limits_json()],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def full_limit() -> dict[str, int]:
    """Customer 1's jobs under `tests.per_customer`: two running, which fill the limit, and
    one due and held back; one job of customer 2, running."""
    assert limit_tasks.PER_CUSTOMER == 2
    jobs = {name: defer("tests.limited_per_customer", customer=1) for name in ("a", "b", "held")}
    jobs["other"] = defer("tests.limited_per_customer", customer=2)
    taken = {take() for _ in range(PER_CUSTOMER + 2)}
    assert taken == {jobs["a"], jobs["b"], jobs["other"], None}
    return jobs


@pytest.fixture
def viewer(client: Client) -> Client:
    """A staff user who may view jobs (the admin) and read job statuses (the API)."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_procrastinatejob", "view_job_status"])
    )
    client.force_login(user)
    return client


@pytest.mark.parametrize("api", ["/api", "/api/async"], ids=["sync", "async"])
def test_status_api__says_why_a_due_job_is_held_back(
    viewer: Client, full_limit: dict[str, int], api: str
) -> None:
    def held_by(job_id: int) -> Any:
        response = viewer.get(f"{api}/jobs/{job_id}/")
        assert response.status_code == 200, response.content
        return response.json()["held_by"]

    assert held_by(full_limit["held"]) == HELD
    assert held_by(full_limit["a"]) is None  # running
    scheduled = int(
        app.configure_task("tests.limited_per_customer", schedule_in={"hours": 1}).defer(customer=1)
    )
    assert held_by(scheduled) is None  # waiting for its time, which no limit decides

    async_to_sync(app.job_manager.finish_job_by_id_async)(
        full_limit["a"], status=Status.SUCCEEDED, delete_job=False
    )
    assert held_by(full_limit["held"]) is None  # a slot is free: the next fetch takes it

    queue_pauses.pause(QUEUE)
    assert held_by(full_limit["held"]) == f"queue `{QUEUE}` is paused"


def test_job_page__says_why_a_due_job_is_held_back(
    viewer: Client, full_limit: dict[str, int]
) -> None:
    held = viewer.get(job_page(full_limit["held"])).content.decode()
    running = viewer.get(job_page(full_limit["a"])).content.decode()

    assert "Held back" in held
    assert HELD in held
    assert "Held back" in running
    assert HELD not in running


def test_job_page__reads_the_key_from_arguments_too_long_to_show(
    viewer: Client, full_limit: dict[str, int]
) -> None:
    # Beyond 20,000 characters the page shows the arguments shortened: the key is still
    # read from all of them.
    long = defer("tests.limited_per_customer", customer=1, path="x" * 30_000)

    assert HELD in viewer.get(job_page(long)).content.decode()


def test_queues_page__lists_the_limits_with_their_figures(
    viewer: Client, full_limit: dict[str, int], settings: Any
) -> None:
    settings.JOBS_QUEUE_LIMITS = {"billing": {"rate": 100, "per": 60}}

    page = viewer.get(QUEUES_PAGE).content.decode()

    start = page.index('<tr data-limit="tests.per_customer" data-key="1" class="jobs-limit-full">')
    row = page[start : page.index("</tr>", start)]
    cells = [cell.rsplit(">", 1)[-1] for cell in row.split("</td>")]
    assert "2 at once per customer" in row
    assert "2 of 2" in cells
    assert ">full</span> 1" in row  # held back: the one due job of customer 1
    assert '<tr data-limit="tests.per_customer" data-key="2">' in page
    assert '<tr data-limit="tests.rate"' in page  # declared, no job yet: zeros
    billing = page[page.index('<tr data-limit="queue:billing"') :]
    assert "100 starts per 60 s" in billing[: billing.index("</tr>")]
    assert '<tr data-queue="billing"' in page  # a queue the setting limits is known
    assert "errornote" not in page


def test_queues_page__says_when_the_workers_apply_no_limit(viewer: Client, settings: Any) -> None:
    settings.JOBS_FETCH_WITH_LIMITS = False

    page = viewer.get(QUEUES_PAGE).content.decode()

    assert "they apply neither these limits nor the pauses above" in page
