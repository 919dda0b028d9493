"""The JSON API for batches (jobs/api, over jobs/workflows.py), sync and async: a batch
deferred over HTTP, run by a real worker and read back; every refusal writes nothing."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient, Client
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.models import Batch, BatchJob
from jobs.tokens import issue_token
from tests import api_tasks  # noqa: F401  (registers the test-only tasks)
from tests.api_tasks import API_TASKS
from tests.test_api import bearer, grant, post_json

pytestmark = pytest.mark.django_db

PREFIXES = ["/api", "/api/async"]
TASKS = [
    "tests.echo",
    "tests.aecho",
    "tests.square",
    "tests.fail",
    "tests.batch_done",
    "tests.one_at_a_time",
]


@pytest.fixture(params=PREFIXES, ids=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def token() -> str:
    _, raw = issue_token(name="batches", tasks=TASKS)
    return raw


def echo(value: Any = None, **options: Any) -> dict[str, Any]:
    return {"task": "tests.echo", "kwargs": {"value": value}, **options}


def square(n: Any, **options: Any) -> dict[str, Any]:
    return {"task": "tests.square", "kwargs": {"n": n}, **options}


def done(tag: Any = "", **options: Any) -> dict[str, Any]:
    return {"task": "tests.batch_done", "kwargs": {"tag": tag}, **options}


def assert_nothing_written() -> None:
    assert not Batch.objects.exists()
    assert not BatchJob.objects.exists()
    assert not ProcrastinateJob.objects.exists()


def defer(client: Client, api: str, token: str, body: dict[str, Any]) -> int:
    response = post_json(client, f"{api}/batches/", body, token)
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


# --- Defer, run, read back ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_defer_batch__run_by_a_worker_then_read_back_with_its_callbacks(
    client: Client, api: str, token: str, run_worker: Callable[..., Any]
) -> None:
    values = [1, "two", {"three": [3, None]}]
    response = post_json(
        client,
        f"{api}/batches/",
        {
            "jobs": [
                *(echo(value) for value in values),
                {"task": "tests.aecho", "kwargs": {"value": 4.5}},
                square(5),
            ],
            "on_success": done("success"),
            "on_finish": done("finish", queue="callbacks", priority=-1),
            "on_failure": done("failure"),
            "description": "five jobs",
            "properties": {"import_id": 7, "owner": "é"},
        },
        token,
    )

    assert response.status_code == 201, response.content
    body = response.json()
    batch = Batch.objects.get()
    assert body == {"id": batch.pk, "status": "running", "status_url": f"/api/batches/{batch.pk}/"}
    assert response["Location"] == body["status_url"]
    assert (batch.total, batch.pending) == (5, 5)

    run_worker("--queues", "tests,callbacks", **API_TASKS)

    status = client.get(f"{api}/batches/{batch.pk}/", headers=bearer(token)).json()
    assert status["status"] == "succeeded"
    assert status["description"] == "five jobs"
    assert status["properties"] == {"import_id": 7, "owner": "é"}
    assert status["counts"] == {
        "total": 5,
        "waiting": 0,
        "running": 0,
        "succeeded": 5,
        "failed": 0,
        "cancelled": 0,
        "not_started": 0,
    }
    results = status["jobs"]["results"]
    assert [job["return_value"] for job in results] == [*values, 4.5, 25]
    assert {job["status"] for job in results} == {"succeeded"}
    assert set(status["callbacks"]) == {"on_success", "on_finish", "on_failure"}
    assert status["callbacks"]["on_failure"]["job_id"] is None  # never deferred
    for role, tag in [("on_success", "success"), ("on_finish", "finish")]:
        job_id = status["callbacks"][role]["job_id"]
        callback = client.get(f"{api}/jobs/{job_id}/", headers=bearer(token)).json()
        assert callback["status"] == "succeeded"
        assert callback["result"]["tag"] == tag
        assert callback["result"]["batch"]["properties"] == {"import_id": 7, "owner": "é"}
        assert callback["result"]["batch"]["succeeded"] == 5
    on_finish = ProcrastinateJob.objects.get(id=status["callbacks"]["on_finish"]["job_id"])
    assert (on_finish.queue_name, on_finish.priority) == ("callbacks", -1)
    assert ProcrastinateJob.objects.filter(task_name="tests.batch_done").count() == 2


@pytest.mark.django_db(transaction=True)
async def test_defer_batch__async_client_through_async_views(
    async_client: AsyncClient, token: str
) -> None:
    response = await async_client.post(
        "/api/async/batches/",
        data=json.dumps({"jobs": [square(2), square(3)], "on_finish": done()}),
        content_type="application/json",
        headers=bearer(token),
    )

    assert response.status_code == 201, response.content
    batch_id = response.json()["id"]
    status = await async_client.get(f"/api/async/batches/{batch_id}/", headers=bearer(token))
    assert status.status_code == 200
    assert status.json()["counts"]["waiting"] == 2
    assert await BatchJob.objects.filter(batch_id=batch_id).acount() == 2


def test_defer_batch__items_and_callbacks_get_the_job_options(
    client: Client, api: str, token: str
) -> None:
    before = timezone.now()

    batch_id = defer(
        client,
        api,
        token,
        {
            "jobs": [
                square(
                    1,
                    queue="urgent",
                    priority=-5,
                    lock="nightly",
                    queueing_lock="one",
                    schedule_in={"minutes": 10},
                ),
                square(2, schedule_at=(before + dt.timedelta(hours=2)).isoformat()),
            ],
            "on_success": done("x", queue="callbacks", priority=-3, lock="jobs.prune_jobs"),
        },
    )

    first, second = ProcrastinateJob.objects.order_by("id")
    assert (first.queue_name, first.priority) == ("urgent", -5)
    assert (first.lock, first.queueing_lock) == ("api:tests.square:nightly", "api:tests.square:one")
    assert first.scheduled_at is not None
    assert dt.timedelta(minutes=9) < first.scheduled_at - before < dt.timedelta(minutes=11)
    assert second.scheduled_at is not None
    assert second.scheduled_at > before + dt.timedelta(hours=1)
    assert set(BatchJob.objects.values_list("job_id", flat=True)) == {first.id, second.id}
    # The callback as the batch keeps it, its lock in its task's namespace too.
    assert Batch.objects.get(pk=batch_id).callbacks["on_success"] == {
        "queue_name": "callbacks",
        "task_name": "tests.batch_done",
        "priority": -3,
        "lock": "api:tests.batch_done:jobs.prune_jobs",
        "args": {"tag": "x"},
        "result_as": None,
    }


# --- Refusals -----------------------------------------------------------------------------


BAD_BATCHES: list[tuple[Any, int, str | None]] = [
    (b"{not json", 400, None),
    (b"\xff\xfe", 400, None),
    ([echo()], 400, None),
    ({}, 400, "jobs"),
    ({"jobs": []}, 400, "jobs"),
    ({"jobs": echo()}, 400, "jobs"),
    ({"jobs": [echo()], "colour": "red"}, 400, "colour"),
    ({"jobs": [echo(), 3]}, 400, "jobs[1]"),
    ({"jobs": [echo(), {"kwargs": {}}]}, 400, "jobs[1].task"),
    ({"jobs": [echo(), echo(colour="red")]}, 400, "jobs[1].colour"),
    ({"jobs": [echo(), {"task": "tests.square", "kwargs": []}]}, 400, "jobs[1].kwargs"),
    ({"jobs": [square(1), square(2), square(3), square("4")]}, 400, "jobs[3].kwargs.n"),
    ({"jobs": [square(True)]}, 400, "jobs[0].kwargs.n"),
    ({"jobs": [{"task": "tests.square"}]}, 400, "jobs[0].kwargs.n"),
    ({"jobs": [{"task": "tests.square", "kwargs": {"n": 1, "m": 2}}]}, 400, "jobs[0].kwargs.m"),
    ({"jobs": [echo("a\u0000b")]}, 400, "jobs[0].kwargs.value"),
    ({"jobs": [echo({"deep": 1e300})]}, 400, "jobs[0].kwargs.value.deep"),
    (b'{"jobs": [{"task": "tests.echo", "kwargs": {"value": NaN}}]}', 400, None),
    ({"jobs": [square(1, priority=1)]}, 400, "jobs[0].priority"),
    ({"jobs": [square(1, queue="no spaces")]}, 400, "jobs[0].queue"),
    ({"jobs": [square(1, lock="a\nb")]}, 400, "jobs[0].lock"),
    ({"jobs": [square(1, queueing_lock="")]}, 400, "jobs[0].queueing_lock"),
    ({"jobs": [square(1, schedule_in={"days": 400})]}, 400, "jobs[0].schedule_in"),
    ({"jobs": [square(1, schedule_at="2030-01-01T10:00:00")]}, 400, "jobs[0].schedule_at"),
    # Two jobs with one queueing lock: the second could never wait beside the first.
    (
        {"jobs": [square(1, queueing_lock="k"), square(2, queueing_lock="k")]},
        400,
        "jobs[1].queueing_lock",
    ),
    ({"jobs": [{"task": "tests.one_at_a_time"}] * 2}, 400, "jobs[1].task"),
    # To a token, unknown, not callable over HTTP and not its own are one 404.
    ({"jobs": [echo(), {"task": "no.such.task"}]}, 404, "jobs[1].task"),
    ({"jobs": [echo(), {"task": "os.system"}]}, 404, "jobs[1].task"),
    (
        {"jobs": [echo(), {"task": "jobs.delete_sent_notifications", "kwargs": {}}]},
        404,
        "jobs[1].task",
    ),
    (
        {"jobs": [echo(), {"task": "jobs.build_report", "kwargs": {"report_id": 1}}]},
        404,
        "jobs[1].task",
    ),
    # Callbacks: a task that takes `batch`, no `batch` of their own, no schedule, no
    # queueing lock, and the checks of a job otherwise.
    ({"jobs": [echo()], "on_success": 1}, 400, "on_success"),
    ({"jobs": [echo()], "on_success": echo()}, 400, "on_success.task"),
    (
        {"jobs": [echo()], "on_finish": {"task": "tests.square", "kwargs": {"n": 1}}},
        400,
        "on_finish.task",
    ),
    (
        {"jobs": [echo()], "on_success": {"task": "tests.batch_done", "kwargs": {"batch": {}}}},
        400,
        "on_success.kwargs.batch",
    ),
    ({"jobs": [echo()], "on_finish": done(queueing_lock="k")}, 400, "on_finish.queueing_lock"),
    (
        {"jobs": [echo()], "on_failure": done(schedule_in={"minutes": 1})},
        400,
        "on_failure.schedule_in",
    ),
    ({"jobs": [echo()], "on_failure": done(colour="red")}, 400, "on_failure.colour"),
    (
        {"jobs": [echo()], "on_success": {"task": "tests.batch_done"}, "on_finish": done(1)},
        400,
        "on_finish.kwargs.tag",
    ),
    ({"jobs": [echo()], "on_success": done(priority=5)}, 400, "on_success.priority"),
    ({"jobs": [echo()], "on_failure": {"task": "no.such.task"}}, 404, "on_failure.task"),
    # The batch's own fields.
    ({"jobs": [echo()], "description": 5}, 400, "description"),
    ({"jobs": [echo()], "description": "x" * 256}, 400, "description"),
    ({"jobs": [echo()], "description": "a\u0000b"}, 400, "description"),
    ({"jobs": [echo()], "description": "a\ud800b"}, 400, "description"),
    ({"jobs": [echo()], "properties": [1]}, 400, "properties"),
    ({"jobs": [echo()], "properties": {"x": "a\u0000b"}}, 400, "properties.x"),
    ({"jobs": [echo()], "properties": {"x": 1e300}}, 400, "properties.x"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BATCHES)
def test_defer_batch__bad_input_is_refused_and_writes_nothing(
    client: Client, api: str, token: str, body: Any, status: int, field: str | None
) -> None:
    response = post_json(client, f"{api}/batches/", body, token)

    assert response.status_code == status, response.content
    payload = response.json()
    assert payload["error"]
    if field is not None:
        assert payload["field"] == field
    assert_nothing_written()


def test_defer_batch__callback_without_a_batch_parameter_says_why(
    client: Client, api: str, token: str
) -> None:
    response = post_json(client, f"{api}/batches/", {"jobs": [echo()], "on_success": echo()}, token)

    assert response.status_code == 400
    assert response.json() == {
        "error": "tests.echo cannot be a callback: it must take the argument 'batch', "
        "a JSON object the batch passes it.",
        "field": "on_success.task",
    }
    assert_nothing_written()


def test_defer_batch__too_many_jobs_is_400(
    client: Client, api: str, token: str, settings: Any
) -> None:
    settings.JOBS_API_MAX_BATCH_JOBS = 3

    refused = post_json(client, f"{api}/batches/", {"jobs": [square(n) for n in range(4)]}, token)

    assert refused.status_code == 400
    assert refused.json() == {
        "error": "At most 3 jobs in one request (JOBS_API_MAX_BATCH_JOBS).",
        "field": "jobs",
    }
    assert_nothing_written()
    defer(client, api, token, {"jobs": [square(n) for n in range(3)]})
    assert BatchJob.objects.count() == 3


def test_defer_batch__body_over_the_limit_is_413(
    client: Client, api: str, token: str, settings: Any
) -> None:
    settings.JOBS_API_MAX_BODY_BYTES = 2048

    response = post_json(
        client, f"{api}/batches/", {"jobs": [square(n) for n in range(200)]}, token
    )

    assert response.status_code == 413
    assert_nothing_written()


def test_defer_batch__a_held_queueing_lock_is_409_and_leaves_no_batch(
    client: Client, api: str, token: str
) -> None:
    waiting = post_json(client, f"{api}/jobs/", square(1, queueing_lock="k"), token)
    assert waiting.status_code == 201, waiting.content

    response = post_json(
        client, f"{api}/batches/", {"jobs": [square(2), square(3, queueing_lock="k")]}, token
    )

    assert response.status_code == 409
    assert response.json() == {
        "error": "A job of tests.square with queueing lock 'k' is already waiting "
        "(stored as 'api:tests.square:k').",
        "field": "jobs[1].queueing_lock",
    }
    # The batch's row and its first job were written before the refusal: rolled back.
    assert not Batch.objects.exists()
    assert not BatchJob.objects.exists()
    assert list(ProcrastinateJob.objects.values_list("id", flat=True)) == [waiting.json()["id"]]


def test_defer_batch__the_tasks_own_queueing_lock_held_is_409(client: Client, api: str) -> None:
    _, raw = issue_token(name="once", tasks=["tests.one_at_a_time", "tests.echo"])
    assert (
        post_json(client, f"{api}/jobs/", {"task": "tests.one_at_a_time"}, raw).status_code == 201
    )

    response = post_json(
        client, f"{api}/batches/", {"jobs": [echo(), {"task": "tests.one_at_a_time"}]}, raw
    )

    assert response.status_code == 409
    assert response.json() == {
        "error": "A job of tests.one_at_a_time with its queueing lock 'tests.one_at_a_time' "
        "is already waiting.",
        "field": "jobs[1].queueing_lock",
    }
    assert not Batch.objects.exists()
    assert ProcrastinateJob.objects.count() == 1


@pytest.mark.parametrize("role", ["jobs", "on_success"])
def test_defer_batch__a_token_is_refused_a_task_it_may_not_use(
    client: Client, api: str, role: str
) -> None:
    _, raw = issue_token(name="echo-only", tasks=["tests.echo"])
    body: dict[str, Any] = {"jobs": [echo()]}
    if role == "jobs":
        body["jobs"].append(square(1))
    else:
        body["on_success"] = done()

    response = post_json(client, f"{api}/batches/", body, raw)

    task = "tests.square" if role == "jobs" else "tests.batch_done"
    assert response.status_code == 404
    assert response.json() == {
        "error": f"No task named {task!r}.",
        "field": "jobs[1].task" if role == "jobs" else "on_success.task",
    }
    assert_nothing_written()


def test_defer_batch__anonymous_is_401(client: Client, api: str) -> None:
    response = post_json(client, f"{api}/batches/", {"jobs": [echo()]})

    assert response.status_code == 401
    assert_nothing_written()


def test_defer_batch__session_user_needs_the_defer_permission_and_csrf(api: str) -> None:
    client = Client(enforce_csrf_checks=True)
    user = User.objects.create_user("ann", password="pw")
    client.force_login(user)
    body = json.dumps({"jobs": [echo()], "on_finish": done()})

    def post(**headers: str) -> Any:
        return client.post(
            f"{api}/batches/", data=body, content_type="application/json", headers=headers
        )

    client.get("/admin/login/")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    refused = post(**{"X-CSRFToken": csrf})
    assert refused.status_code == 403
    assert refused.json() == {"error": "You need the 'jobs.defer_job' permission."}
    assert_nothing_written()
    grant(user, "defer_job")
    without_csrf = post()
    assert without_csrf.status_code == 403
    assert "CSRF" in without_csrf.json()["error"]
    assert_nothing_written()
    assert post(**{"X-CSRFToken": csrf}).status_code == 201
    assert Batch.objects.count() == 1


def test_defer_batch__session_user_gets_the_precise_refusal(client: Client, api: str) -> None:
    client.force_login(grant(User.objects.create_user("ivy", password="pw"), "defer_job"))

    response = post_json(
        client,
        f"{api}/batches/",
        {"jobs": [echo(), {"task": "jobs.delete_sent_notifications", "kwargs": {}}]},
    )

    assert response.status_code == 403
    assert response.json() == {
        "error": "Task 'jobs.delete_sent_notifications' is not callable over HTTP.",
        "field": "jobs[1].task",
    }
    assert_nothing_written()


@pytest.mark.parametrize("path", ["jobs/", "batches/"])
def test_defer__a_float_postgresql_turns_into_an_integer_is_refused(
    client: Client, api: str, token: str, path: str
) -> None:
    # jsonb keeps 1e20 as the number 100000000000000000000: the task would get an int.
    job = echo(1e20)
    body = job if path == "jobs/" else {"jobs": [job]}

    response = post_json(client, f"{api}/{path}", body, token)

    assert response.status_code == 400, response.content
    prefix = "" if path == "jobs/" else "jobs[0]."
    assert response.json()["field"] == f"{prefix}kwargs.value"
    assert_nothing_written()


# --- Status -------------------------------------------------------------------------------


def test_batch_status__pages(client: Client, api: str, token: str) -> None:
    batch_id = defer(client, api, token, {"jobs": [square(n) for n in range(5)]})
    job_ids = sorted(BatchJob.objects.values_list("job_id", flat=True))

    def page(query: str) -> Any:
        response = client.get(f"{api}/batches/{batch_id}/{query}", headers=bearer(token))
        assert response.status_code == 200, response.content
        return response.json()

    first = page("")
    second = page("?page=2&page_size=2")
    last = page("?page=3&page_size=2")
    beyond = page("?page=4&page_size=2")

    assert first["jobs"]["page_size"] == 100
    assert [job["id"] for job in first["jobs"]["results"]] == job_ids
    assert first["counts"]["waiting"] == 5
    assert first["status"] == "running"
    assert (second["jobs"]["page"], second["jobs"]["count"]) == (2, 5)
    assert [job["id"] for job in second["jobs"]["results"]] == job_ids[2:4]
    assert [job["id"] for job in last["jobs"]["results"]] == job_ids[4:]
    assert beyond["jobs"]["results"] == []
    assert {job["task"] for job in first["jobs"]["results"]} == {"tests.square"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=%C2%B2", "page"),  # "²", a digit to str.isdigit
        ("page=" + "9" * 5000, "page"),
        ("page=1000000001", "page"),
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
        ("page_size=", "page_size"),
    ],
)
def test_batch_status__bad_paging_is_400(
    client: Client, api: str, token: str, query: str, field: str
) -> None:
    batch_id = defer(client, api, token, {"jobs": [square(1)]})

    response = client.get(f"{api}/batches/{batch_id}/?{query}", headers=bearer(token))

    assert response.status_code == 400
    assert response.json()["field"] == field


def test_batch_status__largest_page_is_accepted(client: Client, api: str, token: str) -> None:
    batch_id = defer(client, api, token, {"jobs": [square(1)]})

    response = client.get(
        f"{api}/batches/{batch_id}/?page=1000000000&page_size=1000", headers=bearer(token)
    )

    assert response.status_code == 200
    assert response.json()["jobs"]["results"] == []


@pytest.mark.parametrize("path", ["", "cancel/", "retry/"])
def test_batch__with_a_task_the_token_may_not_use_is_the_same_404_as_a_missing_one(
    client: Client, api: str, token: str, path: str
) -> None:
    batch_id = defer(client, api, token, {"jobs": [echo(), square(2)]})
    _, other = issue_token(name="echo-only", tasks=["tests.echo"])
    missing = batch_id + 1000

    def ask(some_id: int) -> Any:
        url = f"{api}/batches/{some_id}/{path}"
        return (
            client.post(url, headers=bearer(other))
            if path
            else client.get(url, headers=bearer(other))
        )

    hidden, absent = ask(batch_id), ask(missing)

    assert (hidden.status_code, absent.status_code) == (404, 404)
    assert hidden.json() == {"error": f"No batch {batch_id}."}
    assert absent.json() == {"error": f"No batch {missing}."}
    assert set(ProcrastinateJob.objects.values_list("status", flat=True)) == {"todo"}


def test_batch__a_callback_the_token_may_not_use_hides_the_batch(
    client: Client, api: str, token: str
) -> None:
    batch_id = defer(client, api, token, {"jobs": [echo()], "on_finish": done()})
    _, other = issue_token(name="echo-only", tasks=["tests.echo"])

    assert client.get(f"{api}/batches/{batch_id}/", headers=bearer(other)).status_code == 404
    assert client.get(f"{api}/batches/{batch_id}/", headers=bearer(token)).status_code == 200


def test_batch__whose_tasks_are_unknown_is_hidden_from_tokens(
    client: Client, api: str, token: str
) -> None:
    # As a batch whose jobs retention deleted, and without callbacks: nothing shows whose.
    batch = Batch.objects.create(description="someone else's import")
    user = grant(User.objects.create_user("vic", password="pw"), "view_job_status")

    hidden = client.get(f"{api}/batches/{batch.pk}/", headers=bearer(token))
    client.force_login(user)
    shown = client.get(f"{api}/batches/{batch.pk}/")

    assert hidden.status_code == 404
    assert hidden.json() == {"error": f"No batch {batch.pk}."}
    assert shown.status_code == 200
    assert shown.json()["description"] == "someone else's import"


@pytest.mark.parametrize("batch_id", [999_999, 2**63 + 5])
def test_batch_status__unknown_batch_is_404(
    client: Client, api: str, token: str, batch_id: int
) -> None:
    response = client.get(f"{api}/batches/{batch_id}/", headers=bearer(token))

    assert response.status_code == 404
    assert response.json() == {"error": f"No batch {batch_id}."}


def test_batch_status__needs_the_view_permission(client: Client, api: str, token: str) -> None:
    batch_id = defer(client, api, token, {"jobs": [square(1)]})

    assert client.get(f"{api}/batches/{batch_id}/").status_code == 401
    user = User.objects.create_user("carl", password="pw")
    client.force_login(user)
    assert client.get(f"{api}/batches/{batch_id}/").status_code == 403
    grant(user, "view_job_status")
    assert client.get(f"{api}/batches/{batch_id}/").status_code == 200
    assert client.get(f"{api}/batches/{batch_id + 1}/").status_code == 404


# --- Cancel and retry ---------------------------------------------------------------------


# The counts are kept at commit (a deferred trigger): the test's transaction must commit.
@pytest.mark.django_db(transaction=True)
def test_batch_cancel__cancels_the_waiting_jobs(client: Client, api: str, token: str) -> None:
    batch_id = defer(client, api, token, {"jobs": [square(n) for n in range(3)]})

    response = client.post(f"{api}/batches/{batch_id}/cancel/", headers=bearer(token))
    again = client.post(f"{api}/batches/{batch_id}/cancel/", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"id": batch_id, "cancelled": 3, "abort_requested": 0}
    assert again.json() == {"id": batch_id, "cancelled": 0, "abort_requested": 0}
    assert set(ProcrastinateJob.objects.values_list("status", flat=True)) == {"cancelled"}
    status = client.get(f"{api}/batches/{batch_id}/", headers=bearer(token)).json()
    assert status["status"] == "cancelled"
    assert status["counts"]["cancelled"] == 3


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_batch_actions__need_the_manage_permission(client: Client, api: str, action: str) -> None:
    user = grant(User.objects.create_user("erin", password="pw"), "defer_job", "view_job_status")
    client.force_login(user)
    batch_id = defer_as_user(client, api)

    assert client.post(f"{api}/batches/{batch_id}/{action}/").status_code == 403
    assert set(ProcrastinateJob.objects.values_list("status", flat=True)) == {"todo"}
    grant(user, "manage_job")
    assert client.post(f"{api}/batches/{batch_id}/{action}/").status_code == 200
    assert client.post(f"{api}/batches/{batch_id + 1}/{action}/").status_code == 404


def defer_as_user(client: Client, api: str) -> int:
    response = post_json(client, f"{api}/batches/", {"jobs": [square(1)]})
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_batch_actions__anonymous_is_401(client: Client, api: str, token: str, action: str) -> None:
    batch_id = defer(client, api, token, {"jobs": [square(1)]})

    assert client.post(f"{api}/batches/{batch_id}/{action}/").status_code == 401
    assert set(ProcrastinateJob.objects.values_list("status", flat=True)) == {"todo"}


@pytest.mark.django_db(transaction=True)
def test_batch_retry__puts_the_failed_jobs_back_and_opens_the_batch(
    client: Client, api: str, token: str, run_worker: Callable[..., Any]
) -> None:
    batch_id = defer(
        client,
        api,
        token,
        {
            "jobs": [square(3), {"task": "tests.fail", "kwargs": {"n": 1}}],
            "on_failure": done("failure"),
        },
    )
    run_worker(**API_TASKS)
    failed = client.get(f"{api}/batches/{batch_id}/", headers=bearer(token)).json()
    assert failed["status"] == "failed"
    assert failed["counts"]["failed"] == 1
    callback_id = failed["callbacks"]["on_failure"]["job_id"]
    assert ProcrastinateJob.objects.get(id=callback_id).status == "succeeded"
    (failed_job,) = [job for job in failed["jobs"]["results"] if job["status"] == "failed"]
    assert failed_job["error"] == {"type": "builtins.ValueError", "message": "job 1 fails"}

    response = client.post(f"{api}/batches/{batch_id}/retry/", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"id": batch_id, "retried": 1}
    assert ProcrastinateJob.objects.get(id=failed_job["id"]).status == "todo"
    reopened = client.get(f"{api}/batches/{batch_id}/", headers=bearer(token)).json()
    assert reopened["status"] == "running"
    assert (reopened["counts"]["waiting"], reopened["counts"]["failed"]) == (1, 0)
