"""The JSON job API, through the Django test client, in its sync and async implementations."""

from __future__ import annotations

import datetime as dt
import http.client
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient, Client
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from example import tasks as example_tasks
from example.models import Notification
from jobs import tasks as jobs_tasks
from jobs.api.auth import Principal
from jobs.http_tasks import api_lock
from jobs.models import ApiToken, JobResult
from jobs.postgres_values import text_problem
from jobs.tokens import issue_token
from tests import api_tasks  # noqa: F401  (registers the test-only tasks)
from tests.conftest import JobMaker

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
            "priority": -5,
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
    assert (job.queue_name, job.priority) == ("urgent", -5)
    assert job.queueing_lock == f"api:jobs.send_notification:notification-{notification.pk}"
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


def report_body(**options: Any) -> dict[str, Any]:
    return {"task": "jobs.build_report", "kwargs": {"report_id": 1}, **options}


@pytest.mark.parametrize(
    "when",
    [
        # Stored by PostgreSQL as a date before Christ, which psycopg cannot read back.
        "0001-01-01T00:00:00+14:00",
        # Past datetime.max once converted to UTC.
        "9999-12-31T23:59:59-14:00",
        "2001-01-01T00:00:00Z",
        "+002030-01-01T00:00:00Z",
        "2030-01-01T00:00:00+24:00",
        "2030-01-01T00:00:00+99:99",
    ],
)
def test_defer__schedule_at_out_of_bounds_is_400(
    client: Client, api: str, token: str, when: str
) -> None:
    response = post_json(client, f"{api}/jobs/", report_body(schedule_at=when), token)

    assert response.status_code == 400, response.content
    assert response.json()["field"] == "schedule_at"
    assert not ProcrastinateJob.objects.exists()


@pytest.mark.parametrize(
    ("ago", "ahead", "accepted"),
    [
        (dt.timedelta(hours=23), None, True),
        (dt.timedelta(hours=25), None, False),
        (None, dt.timedelta(days=364), True),
        (None, dt.timedelta(days=366), False),
    ],
)
def test_defer__schedule_at_bounds(
    client: Client,
    api: str,
    token: str,
    ago: dt.timedelta | None,
    ahead: dt.timedelta | None,
    accepted: bool,
) -> None:
    when = timezone.now() - (ago or dt.timedelta()) + (ahead or dt.timedelta())

    response = post_json(client, f"{api}/jobs/", report_body(schedule_at=when.isoformat()), token)

    assert response.status_code == (201 if accepted else 400), response.content
    assert ProcrastinateJob.objects.exists() == accepted


@pytest.mark.parametrize("offset", ["+23:59", "-23:59", "+15:59", "-16:00", "+05:45:30"])
def test_defer__schedule_at_with_any_offset_is_stored_in_utc(
    client: Client, api: str, token: str, offset: str
) -> None:
    sign = 1 if offset[0] == "+" else -1
    hours, minutes, *seconds = (int(part) for part in offset[1:].split(":"))
    zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes, seconds=sum(seconds)))
    when = (timezone.now() + dt.timedelta(hours=2)).replace(microsecond=0).astimezone(zone)
    assert when.isoformat().endswith(offset)

    response = post_json(client, f"{api}/jobs/", report_body(schedule_at=when.isoformat()), token)

    assert response.status_code == 201, response.content
    job = ProcrastinateJob.objects.get()
    assert job.scheduled_at == when
    assert job.scheduled_at.utcoffset() == dt.timedelta(0)
    status = client.get(f"{api}/jobs/{job.id}/", headers=bearer(token)).json()
    assert dt.datetime.fromisoformat(status["scheduled_at"]) == when


def test_defer__schedule_in_is_bounded_like_schedule_at(
    client: Client, api: str, token: str
) -> None:
    accepted = post_json(client, f"{api}/jobs/", report_body(schedule_in={"days": 365}), token)
    refused = post_json(
        client, f"{api}/jobs/", report_body(schedule_in={"days": 365, "seconds": 60}), token
    )

    assert accepted.status_code == 201, accepted.content
    assert refused.status_code == 400
    assert refused.json() == {"error": "At most 365 days ahead.", "field": "schedule_in"}
    assert ProcrastinateJob.objects.count() == 1


@pytest.mark.parametrize("priority", [0, -1, -(2**31)])
def test_defer__priorities_up_to_the_setting_are_accepted(
    client: Client, api: str, token: str, priority: int
) -> None:
    response = post_json(client, f"{api}/jobs/", report_body(priority=priority), token)

    assert response.status_code == 201, response.content
    assert ProcrastinateJob.objects.get().priority == priority


def test_defer__priority_bound_comes_from_the_setting(
    client: Client, api: str, token: str, settings: Any
) -> None:
    settings.JOBS_API_MAX_PRIORITY = 10

    assert post_json(client, f"{api}/jobs/", report_body(priority=10), token).status_code == 201
    refused = post_json(client, f"{api}/jobs/", report_body(priority=11), token)

    assert refused.status_code == 400
    assert refused.json()["field"] == "priority"
    assert "JOBS_API_MAX_PRIORITY" in refused.json()["error"]
    assert ProcrastinateJob.objects.get().priority == 10


def test_defer__locks_are_namespaced_by_task(client: Client, api: str, token: str) -> None:
    response = post_json(
        client,
        f"{api}/jobs/",
        report_body(lock="jobs.recover_stalled_jobs", queueing_lock="jobs.prune_jobs"),
        token,
    )

    assert response.status_code == 201, response.content
    job = ProcrastinateJob.objects.get()
    assert job.lock == "api:jobs.build_report:jobs.recover_stalled_jobs"
    assert job.queueing_lock == "api:jobs.build_report:jobs.prune_jobs"
    status = client.get(f"{api}/jobs/{job.id}/", headers=bearer(token)).json()
    assert (status["lock"], status["queueing_lock"]) == (job.lock, job.queueing_lock)


def test_defer__clients_of_one_task_share_its_lock_namespace(client: Client, api: str) -> None:
    _, first = issue_token(name="first", tasks=["jobs.build_report"])
    _, second = issue_token(name="second", tasks=["jobs.build_report", "jobs.send_notification"])
    waiting = post_json(client, f"{api}/jobs/", report_body(queueing_lock="nightly"), first)
    assert waiting.status_code == 201, waiting.content

    same_task = post_json(client, f"{api}/jobs/", report_body(queueing_lock="nightly"), second)
    other_task = post_json(
        client,
        f"{api}/jobs/",
        {
            "task": "jobs.send_notification",
            "kwargs": {"notification_id": 1},
            "queueing_lock": "nightly",
        },
        second,
    )

    assert same_task.status_code == 409
    assert same_task.json() == {
        "error": "A job of jobs.build_report with queueing lock 'nightly' is already waiting "
        "(stored as 'api:jobs.build_report:nightly').",
        "field": "queueing_lock",
    }
    assert other_task.status_code == 201, other_task.content
    assert set(ProcrastinateJob.objects.values_list("queueing_lock", flat=True)) == {
        "api:jobs.build_report:nightly",
        "api:jobs.send_notification:nightly",
    }


def test_api_lock__cannot_be_forged_across_tasks() -> None:
    # A task name holding the separator must not let one task's lock equal another's.
    assert api_lock("a", "b:c") != api_lock("a:b", "c")
    assert api_lock("jobs.build_report", "x") == "api:jobs.build_report:x"


@pytest.mark.django_db(transaction=True)
def test_defer__a_token_cannot_block_the_sites_own_locks(
    client: Client, run_worker: Callable[..., Any]
) -> None:
    """The attack of issue 10: a token for one task parks a job far ahead holding the lock
    and queueing lock of the site's periodic tasks, which then neither run nor defer."""
    _, raw = issue_token(name="mail", tasks=["jobs.send_notification"])
    parked = post_json(
        client,
        "/api/jobs/",
        {
            "task": "jobs.send_notification",
            "kwargs": {"notification_id": 1},
            "lock": "jobs.recover_stalled_jobs",
            "queueing_lock": "jobs.delete_expired_comments",
            "schedule_in": {"days": 300},
        },
        raw,
    )
    assert parked.status_code == 201, parked.content
    timestamp = int(timezone.now().timestamp())

    # procrastinate refuses a second waiting job with a queueing lock (AlreadyEnqueued)...
    comments = example_tasks.delete_expired_comments.configure().defer(timestamp=timestamp)
    # ...and runs no job while an earlier one with its lock waits, however far ahead.
    recovery = jobs_tasks.recover_stalled_jobs.configure().defer(timestamp=timestamp)
    run_worker("--queues", "maintenance")

    statuses = dict(
        ProcrastinateJob.objects.filter(id__in=[comments, recovery]).values_list("id", "status")
    )
    assert statuses == {comments: "succeeded", recovery: "succeeded"}
    assert ProcrastinateJob.objects.get(id=parked.json()["id"]).status == "todo"


def test_defer__the_tasks_own_queueing_lock_is_409(client: Client, api: str) -> None:
    _, raw = issue_token(name="once", tasks=["tests.one_at_a_time"])
    body = {"task": "tests.one_at_a_time"}

    assert post_json(client, f"{api}/jobs/", body, raw).status_code == 201
    response = post_json(client, f"{api}/jobs/", body, raw)

    assert response.status_code == 409
    assert response.json() == {
        "error": "A job of tests.one_at_a_time with its queueing lock 'tests.one_at_a_time' "
        "is already waiting.",
        "field": "queueing_lock",
    }
    assert ProcrastinateJob.objects.get().queueing_lock == "tests.one_at_a_time"


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
    # More digits than Python's int parser takes (4,300), and a number past float's range.
    (b'{"task": "tests.echo", "kwargs": {"value": 1' + b"0" * 5000 + b"}}", 400, None),
    (b'{"task": "tests.echo", "kwargs": {"value": 1e400}}', 400, "kwargs.value"),
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
    # PostgreSQL's text cannot hold NUL, and a lone surrogate cannot be encoded to UTF-8.
    *[
        ({"task": "jobs.build_report", "kwargs": {"report_id": 1}, lock: value}, 400, lock)
        for lock in ("lock", "queueing_lock")
        for value in ("a\u0000b", "\u0000", "a\ud800b", "\udfff")
    ],
    # procrastinate parses a taken queueing lock out of PostgreSQL's message with a pattern
    # a line break defeats: control characters are refused in both locks.
    *[
        ({"task": "jobs.build_report", "kwargs": {"report_id": 1}, lock: value}, 400, lock)
        for lock in ("lock", "queueing_lock")
        for value in ("a\nb", "\t", "\u0085")
    ],
    # A trailing newline slipped past a `$` in the pattern.
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "queue": "reports\n"},
        400,
        "queue",
    ),
    # Above JOBS_API_MAX_PRIORITY (0 by default): ahead of the site's own jobs.
    ({"task": "jobs.build_report", "kwargs": {"report_id": 1}, "priority": 1}, 400, "priority"),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "priority": 2**31 - 1},
        400,
        "priority",
    ),
    (
        {"task": "jobs.build_report", "kwargs": {"report_id": 1}, "priority": -(2**31) - 1},
        400,
        "priority",
    ),
    ({"task": "no.such.task", "kwargs": {}}, 404, "task"),
    ({"task": "os.system", "kwargs": {"command": "true"}}, 404, "task"),
    # To a token, a task not callable over HTTP is as missing as an unknown one.
    ({"task": "jobs.delete_sent_notifications", "kwargs": {"older_than_days": 1}}, 404, "task"),
]


@pytest.mark.parametrize("value", ["a\u0000b", "a\ud800b"])
def test_defer__text_postgresql_cannot_store_is_refused_in_the_shared_words(
    client: Client, api: str, token: str, value: str
) -> None:
    # One rule for "text PostgreSQL can store", the admin's filters' too.
    body = {"task": "jobs.build_report", "kwargs": {"report_id": 1, value: 1}}

    response = post_json(client, f"{api}/jobs/", body, token)

    problem = text_problem(value)
    assert problem is not None
    assert response.status_code == 400
    assert response.json() == {"error": f"{problem.capitalize()}.", "field": "kwargs"}
    assert not ProcrastinateJob.objects.exists()


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


@pytest.mark.django_db(transaction=True)
def test_defer__oversized_chunked_body_is_json_413(site_server: Callable[..., str]) -> None:
    """A body sent without Content-Length (chunked), past Django's DATA_UPLOAD_MAX_MEMORY_SIZE:
    Django's own read of it answers an HTML 400."""
    _, raw = issue_token(name="big", tasks=["jobs.build_report"])
    address = urlsplit(site_server())
    assert address.hostname is not None
    assert address.port is not None
    chunk = b" " * 65536

    for path in ["/api/jobs/", "/api/async/jobs/"]:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            connection.request(
                "POST",
                path,
                body=iter([chunk] * 48),  # 3 MiB, past DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB)
                headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
                encode_chunked=True,
            )
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()

        assert response.status == 413, (path, body)
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(body) == {"error": "The body is larger than 65536 bytes."}
    assert not ProcrastinateJob.objects.exists()


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("no.such.task", {}),  # unknown
        ("jobs.delete_sent_notifications", {"older_than_days": 1}),  # not callable over HTTP
        ("jobs.send_notification", {"notification_id": 1}),  # callable, not the token's
    ],
)
def test_defer__token_gets_the_same_404_for_every_task_it_may_not_use(
    client: Client, api: str, task: str, kwargs: dict[str, Any]
) -> None:
    _, raw = issue_token(name="reports-only", tasks=["jobs.build_report"])

    response = post_json(client, f"{api}/jobs/", {"task": task, "kwargs": kwargs}, raw)

    # The body names only what the client sent: which of the three it is stays unknown.
    assert response.status_code == 404
    assert response.json() == {"error": f"No task named {task!r}.", "field": "task"}
    assert not ProcrastinateJob.objects.exists()


def test_defer__session_user_with_the_permission_gets_the_precise_refusal(
    client: Client, api: str
) -> None:
    client.force_login(grant(User.objects.create_user("ivy", password="pw"), "defer_job"))

    unknown = post_json(client, f"{api}/jobs/", {"task": "no.such.task"})
    not_http = post_json(
        client,
        f"{api}/jobs/",
        {"task": "jobs.delete_sent_notifications", "kwargs": {"older_than_days": 1}},
    )

    assert (unknown.status_code, not_http.status_code) == (404, 403)
    assert not_http.json() == {
        "error": "Task 'jobs.delete_sent_notifications' is not callable over HTTP.",
        "field": "task",
    }
    assert not ProcrastinateJob.objects.exists()


def test_defer__session_user_without_the_permission_learns_no_task_name(
    client: Client, api: str
) -> None:
    client.force_login(User.objects.create_user("jon", password="pw"))

    unknown = post_json(client, f"{api}/jobs/", {"task": "no.such.task"})
    known = post_json(client, f"{api}/jobs/", {"task": "jobs.delete_sent_notifications"})

    assert (unknown.status_code, known.status_code) == (403, 403)
    assert unknown.json() == known.json()


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


@pytest.mark.parametrize("path", ["jobs/", "jobs/1/cancel/", "jobs/1/abort/", "jobs/1/retry/"])
def test_post__anonymous_is_401_even_with_csrf_checks(api: str, path: str) -> None:
    client = Client(enforce_csrf_checks=True)

    response = post_json(client, f"{api}/{path}", report_body())

    assert response.status_code == 401
    assert response.json() == {"error": "Authentication required: send a bearer token or log in."}
    assert not ProcrastinateJob.objects.exists()


@pytest.mark.parametrize("path", ["jobs/", "jobs/1/cancel/", "jobs/1/abort/", "jobs/1/retry/"])
def test_post__logged_in_without_csrf_is_403(api: str, path: str) -> None:
    client = Client(enforce_csrf_checks=True)
    user = User.objects.create_user("gil", password="pw")
    client.force_login(grant(user, "defer_job", "manage_job"))

    response = post_json(client, f"{api}/{path}", report_body())

    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert not ProcrastinateJob.objects.exists()


@pytest.mark.parametrize("header", ["Bearer pgj_ab\u0000cd_secret", "Bearer pgj_\u00e9_secret"])
def test_defer__token_with_odd_characters_is_401(client: Client, api: str, header: str) -> None:
    response = client.post(
        f"{api}/jobs/",
        data=json.dumps(report_body()),
        content_type="application/json",
        headers={"Authorization": header},
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

    # The token (its last_used_at, written at most once a minute, was written by the defer),
    # the job, and whether a pause or a limit holds it back.
    with django_assert_max_num_queries(3):
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


@pytest.mark.parametrize("action", [None, "cancel", "abort", "retry"])
def test_job__of_another_task_is_the_same_404_as_a_missing_one(
    client: Client, api: str, token: str, action: str | None
) -> None:
    job_id = defer_report(client, api, token)
    _, other = issue_token(name="mail-only", tasks=["jobs.send_notification"])
    missing = job_id + 1000
    path = "" if action is None else f"{action}/"

    def ask(some_id: int) -> Any:
        url = f"{api}/jobs/{some_id}/{path}"
        if action is None:
            return client.get(url, headers=bearer(other))
        return client.post(url, headers=bearer(other))

    hidden, absent = ask(job_id), ask(missing)

    assert (hidden.status_code, absent.status_code) == (404, 404)
    assert hidden.json() == {"error": f"No job {job_id}."}
    assert absent.json() == {"error": f"No job {missing}."}
    assert b"build_report" not in hidden.content
    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


def failed_job(make_job: JobMaker) -> int:
    job_id = make_job("failed", task="jobs.build_report", args={"report_id": 1})
    JobResult.objects.create(
        job_id=job_id,
        task_name="jobs.build_report",
        status=JobResult.Status.FAILED,
        attempt=1,
        started_at=timezone.now(),
        exception_type="jobs.models.Report.DoesNotExist",
        exception_message="Report matching query does not exist.",
        traceback='File "/srv/site/jobs/tasks.py", line 70, in build_report',
    )
    return job_id


def test_status__token_gets_the_error_without_the_traceback(
    client: Client, api: str, token: str, make_job: JobMaker
) -> None:
    job_id = failed_job(make_job)

    response = client.get(f"{api}/jobs/{job_id}/", headers=bearer(token))

    assert response.status_code == 200
    assert response.json()["error"] == {
        "type": "jobs.models.Report.DoesNotExist",
        "message": "Report matching query does not exist.",
    }
    assert b"/srv/site" not in response.content


def test_status__staff_user_with_the_permission_gets_the_traceback(
    client: Client, api: str, make_job: JobMaker
) -> None:
    job_id = failed_job(make_job)
    user = User.objects.create_user("fay", password="pw", is_staff=True)
    client.force_login(grant(user, "view_job_status"))

    response = client.get(f"{api}/jobs/{job_id}/")

    assert response.status_code == 200
    assert response.json()["error"]["traceback"].startswith('File "/srv/site/jobs/tasks.py"')


def test_status__non_staff_user_gets_the_error_without_the_traceback(
    client: Client, api: str, make_job: JobMaker
) -> None:
    job_id = failed_job(make_job)
    client.force_login(grant(User.objects.create_user("gus", password="pw"), "view_job_status"))

    response = client.get(f"{api}/jobs/{job_id}/")

    assert response.status_code == 200
    assert response.json()["error"] == {
        "type": "jobs.models.Report.DoesNotExist",
        "message": "Report matching query does not exist.",
    }
    assert b"/srv/site" not in response.content


def test_principal__only_an_active_staff_user_reads_tracebacks() -> None:
    # An inactive user cannot log in through Django's backends; the rule holds anyway.
    assert Principal(user=User(is_staff=True, is_active=True)).reads_tracebacks
    assert not Principal(user=User(is_staff=True, is_active=False)).reads_tracebacks
    assert not Principal(user=User(is_staff=False, is_active=True)).reads_tracebacks
    assert not Principal(token=ApiToken(name="t", tasks=[])).reads_tracebacks


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
