"""The JSON job API, through the Django test client, in its sync and async implementations."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient, Client
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from example.models import Notification
from jobs.models import ApiToken
from jobs.tokens import issue_token

pytestmark = pytest.mark.django_db

PREFIXES = ["/api", "/api/async"]


@pytest.fixture(params=PREFIXES, ids=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def token() -> str:
    _, raw = issue_token(name="billing", tasks=["jobs.send_notification", "jobs.build_report"])
    return raw


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def post_json(client: Client, url: str, body: Any, raw_token: str | None = None) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = bearer(raw_token) if raw_token else {}
    return client.post(url, data=data, content_type="application/json", headers=headers)


def grant(user: User, *codenames: str) -> User:
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames)
    )
    return User.objects.get(pk=user.pk)  # fresh permission cache


# --- Defer --------------------------------------------------------------------------------


def test_defer__token_creates_job_with_options(client: Client, api: str, token: str) -> None:
    notification = Notification.objects.create(recipient="a@example.com", subject="Hi")
    before = timezone.now()

    response = post_json(
        client,
        f"{api}/jobs/",
        {
            "task": "jobs.send_notification",
            "kwargs": {"notification_id": notification.pk},
            "queue": "urgent",
            "priority": 5,
            "schedule_in": {"minutes": 10},
            "queueing_lock": f"notification-{notification.pk}",
        },
        token,
    )

    assert response.status_code == 201, response.content
    body = response.json()
    job = ProcrastinateJob.objects.get()
    assert body == {"id": job.id, "status": "todo", "status_url": f"/api/jobs/{job.id}/"}
    assert response["Location"] == body["status_url"]
    assert job.task_name == "jobs.send_notification"
    assert job.args == {"notification_id": notification.pk}
    assert (job.queue_name, job.priority) == ("urgent", 5)
    assert job.queueing_lock == f"notification-{notification.pk}"
    assert job.scheduled_at is not None
    assert dt.timedelta(minutes=9) < job.scheduled_at - before < dt.timedelta(minutes=11)


def test_defer__schedule_at(client: Client, api: str, token: str) -> None:
    when = (timezone.now() + dt.timedelta(hours=2)).replace(microsecond=0)

    response = post_json(
        client,
        f"{api}/jobs/",
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "schedule_at": when.isoformat()},
        token,
    )

    assert response.status_code == 201, response.content
    assert ProcrastinateJob.objects.get().scheduled_at == when


def test_defer__duplicate_queueing_lock_is_409(client: Client, api: str, token: str) -> None:
    body = {"task": "jobs.build_report", "kwargs": {"report_id": 7}, "queueing_lock": "report-7"}

    assert post_json(client, f"{api}/jobs/", body, token).status_code == 201
    response = post_json(client, f"{api}/jobs/", body, token)

    assert response.status_code == 409
    assert response.json()["field"] == "queueing_lock"
    assert ProcrastinateJob.objects.count() == 1


BAD_BODIES: list[tuple[Any, int, str | None]] = [
    (b"{not json", 400, None),
    (b"\xff\xfe", 400, None),
    ([1, 2], 400, None),
    ({"kwargs": {}}, 400, "task"),
    ({"task": 3}, 400, "task"),
    (
        {"task": "jobs.send_notification", "kwargs": {"notification_id": 1}, "colour": "red"},
        400,
        "colour",
    ),
    ({"task": "jobs.send_notification", "kwargs": []}, 400, "kwargs"),
    ({"task": "jobs.send_notification", "kwargs": {}}, 400, "kwargs.notification_id"),
    (
        {"task": "jobs.send_notification", "kwargs": {"notification_id": "7"}},
        400,
        "kwargs.notification_id",
    ),
    (
        {"task": "jobs.send_notification", "kwargs": {"notification_id": True}},
        400,
        "kwargs.notification_id",
    ),
    (
        {"task": "jobs.send_notification", "kwargs": {"notification_id": 1, "cc": "x"}},
        400,
        "kwargs.cc",
    ),
    (b'{"task": "jobs.send_notification", "kwargs": {"notification_id": NaN}}', 400, None),
    ({"task": "jobs.build_report", "kwargs": {"report_id": 1, "x": "a\u0000b"}}, 400, "kwargs.x"),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "priority": "high"},
        400,
        "priority",
    ),
    ({"task": "jobs.build_report", "kwargs": {"report_id": 1}, "priority": 2**40}, 400, "priority"),
    ({"task": "jobs.build_report", "kwargs": {"report_id": 1}, "queue": "no spaces"}, 400, "queue"),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "schedule_in": 5},
        400,
        "schedule_in",
    ),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "schedule_in": {"fortnights": 1}},
        400,
        "schedule_in",
    ),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "schedule_in": {"days": -1}},
        400,
        "schedule_in",
    ),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "schedule_in": {"days": 10**9}},
        400,
        "schedule_in",
    ),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "schedule_at": "tomorrow"},
        400,
        "schedule_at",
    ),
    (
        {
            "task": "jobs.build_report",
            "kwargs": {"report_id": 1},
            "schedule_at": "2030-01-01T10:00:00",
        },
        400,
        "schedule_at",
    ),
    (
        {
            "task": "jobs.build_report",
            "kwargs": {"report_id": 1},
            "schedule_at": "2030-01-01T10:00:00Z",
            "schedule_in": {"days": 1},
        },
        400,
        "schedule_at",
    ),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "queueing_lock": ""},
        400,
        "queueing_lock",
    ),
    ({"task": "no.such.task", "kwargs": {}}, 404, "task"),
    ({"task": "os.system", "kwargs": {"command": "true"}}, 404, "task"),
    ({"task": "jobs.delete_sent_notifications", "kwargs": {"older_than_days": 1}}, 403, "task"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
def test_defer__bad_input_is_refused_and_writes_nothing(
    client: Client, api: str, token: str, body: Any, status: int, field: str | None
) -> None:
    response = post_json(client, f"{api}/jobs/", body, token)

    assert response.status_code == status, response.content
    payload = response.json()
    assert payload["error"]
    if field is not None:
        assert payload["field"] == field
    assert not ProcrastinateJob.objects.exists()


def test_defer__body_over_the_limit_is_413(
    client: Client, api: str, token: str, settings: Any
) -> None:
    settings.JOBS_API_MAX_BODY_BYTES = 2048
    body = {"task": "jobs.build_report", "kwargs": {"report_id": 1, "pad": "x" * 3000}}

    response = post_json(client, f"{api}/jobs/", body, token)

    assert response.status_code == 413
    assert not ProcrastinateJob.objects.exists()


def test_defer__token_limited_to_named_tasks(client: Client, api: str) -> None:
    _, raw = issue_token(name="reports-only", tasks=["jobs.build_report"])

    response = post_json(
        client,
        f"{api}/jobs/",
        {"task": "jobs.send_notification", "kwargs": {"notification_id": 1}},
        raw,
    )

    assert response.status_code == 403
    assert not ProcrastinateJob.objects.exists()


@pytest.mark.parametrize(
    "header", ["Bearer pgj_nope_nope", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"]
)
def test_defer__bad_credentials_are_401(client: Client, api: str, header: str) -> None:
    response = client.post(
        f"{api}/jobs/",
        data=json.dumps({"task": "jobs.build_report", "kwargs": {"report_id": 1}}),
        content_type="application/json",
        headers={"Authorization": header},
    )

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not ProcrastinateJob.objects.exists()


def test_defer__revoked_token_is_401(client: Client, api: str, token: str) -> None:
    ApiToken.objects.get().revoke(at=timezone.now())

    response = post_json(
        client, f"{api}/jobs/", {"task": "jobs.build_report", "kwargs": {"report_id": 1}}, token
    )

    assert response.status_code == 401


def test_defer__anonymous_is_401(client: Client, api: str) -> None:
    response = post_json(
        client, f"{api}/jobs/", {"task": "jobs.build_report", "kwargs": {"report_id": 1}}
    )

    assert response.status_code == 401
    assert not ProcrastinateJob.objects.exists()


def test_defer__session_user_needs_the_permission(client: Client, api: str) -> None:
    user = User.objects.create_user("alice", password="pw")
    client.force_login(user)
    body = {"task": "jobs.build_report", "kwargs": {"report_id": 1}}

    assert post_json(client, f"{api}/jobs/", body).status_code == 403
    grant(user, "defer_job")
    assert post_json(client, f"{api}/jobs/", body).status_code == 201


def test_defer__session_requests_need_csrf(api: str) -> None:
    client = Client(enforce_csrf_checks=True)
    user = grant(User.objects.create_user("bob", password="pw"), "defer_job")
    client.force_login(user)
    body = json.dumps({"task": "jobs.build_report", "kwargs": {"report_id": 1}})

    refused = client.post(f"{api}/jobs/", data=body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]
    assert not ProcrastinateJob.objects.exists()

    client.get("/admin/login/")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    accepted = client.post(
        f"{api}/jobs/", data=body, content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert accepted.status_code == 201


def test_defer__get_is_not_allowed(client: Client, api: str, token: str) -> None:
    assert client.get(f"{api}/jobs/", headers=bearer(token)).status_code == 405


@pytest.mark.django_db(transaction=True)
async def test_defer__async_client_through_async_view(
    async_client: AsyncClient, token: str
) -> None:
    response = await async_client.post(
        "/api/async/jobs/",
        data=json.dumps({"task": "jobs.build_report", "kwargs": {"report_id": 42}}),
        content_type="application/json",
        headers=bearer(token),
    )

    assert response.status_code == 201
    job = await ProcrastinateJob.objects.aget(id=response.json()["id"])
    assert job.args == {"report_id": 42}


# --- Status, registry, actions ----------------------------------------------------------


def defer_report(client: Client, api: str, token: str, report_id: int = 1) -> int:
    response = post_json(
        client,
        f"{api}/jobs/",
        {"task": "jobs.build_report", "kwargs": {"report_id": report_id}},
        token,
    )
    assert response.status_code == 201
    return int(response.json()["id"])


def test_status__of_a_waiting_job(
    client: Client, api: str, token: str, django_assert_max_num_queries: Any
) -> None:
    job_id = defer_report(client, api, token)

    with django_assert_max_num_queries(3):  # token, last_used_at (at most once a minute), job
        response = client.get(f"{api}/jobs/{job_id}/", headers=bearer(token))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == job_id
    assert body["task"] == "jobs.build_report"
    assert body["queue"] == "reports"
    assert body["status"] == "todo"
    assert body["attempts"] == 0
    assert body["deferred_at"] is not None
    assert body["started_at"] is None
    assert body["result"] is None
    assert body["error"] is None
    assert body["progress"] is None


@pytest.mark.parametrize("job_id", [999_999, 2**63 + 5])
def test_status__unknown_job_is_404(client: Client, api: str, token: str, job_id: int) -> None:
    assert client.get(f"{api}/jobs/{job_id}/", headers=bearer(token)).status_code == 404


def test_status__needs_permission_or_token(client: Client, api: str, token: str) -> None:
    job_id = defer_report(client, api, token)
    assert client.get(f"{api}/jobs/{job_id}/").status_code == 401
    user = User.objects.create_user("carol", password="pw")
    client.force_login(user)
    assert client.get(f"{api}/jobs/{job_id}/").status_code == 403
    grant(user, "view_job_status")
    assert client.get(f"{api}/jobs/{job_id}/").status_code == 200


def test_status__token_sees_only_its_tasks(client: Client, api: str, token: str) -> None:
    job_id = defer_report(client, api, token)
    _, other = issue_token(name="mail-only", tasks=["jobs.send_notification"])

    assert client.get(f"{api}/jobs/{job_id}/", headers=bearer(other)).status_code == 403


def test_tasks__registry(client: Client, api: str) -> None:
    user = grant(User.objects.create_user("dan", password="pw"), "view_job_status")
    client.force_login(user)

    response = client.get(f"{api}/tasks/")

    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    notification = tasks["jobs.send_notification"]
    assert notification["queue"] == "notifications"
    assert notification["callable_over_http"] is True
    assert notification["arguments"] == [
        {"name": "notification_id", "type": "int", "required": True, "default": None}
    ]
    assert notification["retry"]["max_attempts"] == 2
    assert "builtins.OSError" in notification["retry"]["retry_exceptions"]
    assert tasks["jobs.delete_sent_notifications"]["callable_over_http"] is False
    assert "builtin:procrastinate.builtin_tasks.remove_old_jobs" in tasks


def test_tasks__token_lists_its_tasks_only(client: Client, api: str) -> None:
    _, raw = issue_token(name="reports", tasks=["jobs.build_report"])

    response = client.get(f"{api}/tasks/", headers=bearer(raw))

    assert [task["name"] for task in response.json()["tasks"]] == ["jobs.build_report"]


def test_cancel__waiting_job_then_again(client: Client, api: str, token: str) -> None:
    job_id = defer_report(client, api, token)

    first = client.post(f"{api}/jobs/{job_id}/cancel/", headers=bearer(token))
    second = client.post(f"{api}/jobs/{job_id}/cancel/", headers=bearer(token))

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert ProcrastinateJob.objects.get(id=job_id).status == "cancelled"
    assert second.status_code == 409
    assert "only jobs that have not started" in second.json()["error"]


def test_abort__waiting_job_is_cancelled(client: Client, api: str, token: str) -> None:
    job_id = defer_report(client, api, token)

    response = client.post(f"{api}/jobs/{job_id}/abort/", headers=bearer(token))

    assert response.status_code == 200
    assert ProcrastinateJob.objects.get(id=job_id).status == "cancelled"


def test_retry__refuses_a_job_that_did_not_fail(client: Client, api: str, token: str) -> None:
    job_id = defer_report(client, api, token)

    response = client.post(f"{api}/jobs/{job_id}/retry/", headers=bearer(token))

    assert response.status_code == 409
    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


def test_actions__need_manage_permission(client: Client, api: str, token: str) -> None:
    job_id = defer_report(client, api, token)
    user = grant(User.objects.create_user("erin", password="pw"), "view_job_status", "defer_job")
    client.force_login(user)

    assert client.post(f"{api}/jobs/{job_id}/cancel/").status_code == 403
    assert client.post(f"{api}/jobs/404404/cancel/", headers=bearer(token)).status_code == 404
    grant(user, "manage_job")
    assert client.post(f"{api}/jobs/{job_id}/cancel/").status_code == 200
