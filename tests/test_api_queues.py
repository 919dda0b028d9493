"""The queue routes of the JSON API (jobs/api/queues.py), sync and async, through Django's
test client; the token capability they need (`create_api_token --may-pause-queues`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import queue_pauses
from jobs.models import ApiToken, PausedQueue
from jobs.testing import WorkerProcess, wait_until
from jobs.tokens import issue_token
from tests import django_task_functions
from tests.conftest import JobMaker

pytestmark = pytest.mark.django_db

TASKS = ["jobs.send_notification"]


@pytest.fixture(params=["/api", "/api/async"], ids=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mail_queue(make_job: JobMaker) -> str:
    make_job(queue="mail")
    make_job("doing", queue="mail")
    return "mail"


def pausing_token() -> str:
    _, raw = issue_token(name="ops-bot", tasks=TASKS, may_pause_queues=True)
    return raw


def plain_token() -> str:
    _, raw = issue_token(name="billing", tasks=TASKS)
    return raw


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def post(client: Client, url: str, body: Any = None, raw: str | None = None) -> Any:
    data = "" if body is None else body if isinstance(body, str | bytes) else json.dumps(body)
    headers = bearer(raw) if raw else {}
    return client.post(url, data=data, content_type="application/json", headers=headers)


def session_user(client: Client, *codenames: str) -> User:
    user = User.objects.create_user("ops", password="pw")
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames)
    )
    client.force_login(user)
    return user


def test_queue_list__every_known_queue_with_its_jobs_and_pause(
    client: Client, api: str, mail_queue: str
) -> None:
    queue_pauses.pause("billing", by="alice", reason="provider down")

    response = client.get(f"{api}/queues/", headers=bearer(pausing_token()))

    assert response.status_code == 200, response.content
    queues = {queue["queue"]: queue for queue in response.json()["queues"]}
    assert queues["mail"] == {
        "queue": "mail",
        "waiting": 1,
        "scheduled": 0,
        "running": 1,
        "counts_exact": True,
        "paused": False,
        "pause": None,
    }
    billing = queues["billing"]
    assert billing["paused"] is True
    assert (billing["pause"]["by"], billing["pause"]["reason"]) == ("alice", "provider down")
    assert billing["pause"]["since"] == PausedQueue.objects.get().paused_at.isoformat()
    assert {"reports", "comments"} <= set(queues)  # TASKS["default"]["QUEUES"]


def test_queue_pause__a_token_with_the_capability_pauses_and_resumes(
    client: Client, api: str, mail_queue: str
) -> None:
    raw = pausing_token()

    paused = post(client, f"{api}/queues/mail/pause/", {"reason": "SMTP down"}, raw)
    again = post(client, f"{api}/queues/mail/pause/", {"reason": "other"}, raw)

    assert paused.status_code == 200, paused.content
    body = paused.json()
    assert (body["queue"], body["paused"], body["changed"]) == ("mail", True, True)
    assert (body["pause"]["by"], body["pause"]["reason"]) == ("API token ops-bot", "SMTP down")
    assert again.status_code == 200
    assert (again.json()["changed"], again.json()["pause"]["reason"]) == (False, "SMTP down")
    # Read back by the other readers: the pause module, and the list.
    assert queue_pauses.is_paused("mail")
    listed = client.get(f"{api}/queues/", headers=bearer(raw)).json()["queues"]
    assert [q["paused"] for q in listed if q["queue"] == "mail"] == [True]

    resumed = post(client, f"{api}/queues/mail/resume/", None, raw)
    not_paused = post(client, f"{api}/queues/mail/resume/", {}, raw)

    assert resumed.status_code == not_paused.status_code == 200
    assert resumed.json() == {"queue": "mail", "paused": False, "changed": True, "pause": None}
    assert not_paused.json()["changed"] is False
    assert not PausedQueue.objects.exists()


def test_queue_pause__the_body_is_optional(client: Client, api: str, mail_queue: str) -> None:
    response = post(client, f"{api}/queues/mail/pause/", None, pausing_token())

    assert response.status_code == 200, response.content
    assert PausedQueue.objects.get().reason == ""


def test_queue_routes__a_token_without_the_capability_is_refused(
    client: Client, api: str, mail_queue: str
) -> None:
    raw = plain_token()
    queue_pauses.pause("billing")

    listed = client.get(f"{api}/queues/", headers=bearer(raw))
    paused = post(client, f"{api}/queues/mail/pause/", {"reason": "x"}, raw)
    resumed = post(client, f"{api}/queues/billing/resume/", None, raw)

    for response in (listed, paused, resumed):
        assert response.status_code == 403
        assert "--may-pause-queues" in response.json()["error"]
    assert [p.queue_name for p in queue_pauses.paused_queues()] == ["billing"]


def test_queue_routes__session_users_need_their_permissions(
    client: Client, api: str, mail_queue: str
) -> None:
    user = session_user(client)

    assert client.get(f"{api}/queues/").status_code == 403
    refused = post(client, f"{api}/queues/mail/pause/")
    assert refused.status_code == 403
    assert refused.json() == {"error": "You need the 'jobs.pause_queue' permission."}
    assert not PausedQueue.objects.exists()

    # The list needs what reading a job's status needs; pausing, its own permission.
    user.user_permissions.add(Permission.objects.get(codename="view_job_status"))
    assert client.get(f"{api}/queues/").status_code == 200
    assert post(client, f"{api}/queues/mail/pause/").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="pause_queue"))
    paused = post(client, f"{api}/queues/mail/pause/", {"reason": "by hand"})
    assert paused.status_code == 200
    assert PausedQueue.objects.get().paused_by == "ops"


def test_queue_routes__anonymous_is_401(client: Client, api: str, mail_queue: str) -> None:
    assert client.get(f"{api}/queues/").status_code == 401
    assert post(client, f"{api}/queues/mail/pause/").status_code == 401
    assert not PausedQueue.objects.exists()


def test_queue_pause__session_requests_need_csrf(api: str, mail_queue: str) -> None:
    client = Client(enforce_csrf_checks=True)
    session_user(client, "pause_queue")

    refused = post(client, f"{api}/queues/mail/pause/")

    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]
    assert not PausedQueue.objects.exists()
    client.get("/admin/login/")  # sets the CSRF cookie
    accepted = client.post(
        f"{api}/queues/mail/pause/",
        data="",
        content_type="application/json",
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )
    assert accepted.status_code == 200


def test_queue_routes__a_revoked_token_is_401(client: Client, api: str, mail_queue: str) -> None:
    raw = pausing_token()
    ApiToken.objects.get().revoke(at=timezone.now())

    assert post(client, f"{api}/queues/mail/pause/", None, raw).status_code == 401
    assert not PausedQueue.objects.exists()


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("queues/nosuchqueue/pause/", None, 404, "queue"),
        ("queues/nosuchqueue/resume/", None, 404, "queue"),
        (f"queues/{'x' * 129}/pause/", None, 400, "queue"),
        ("queues/%20mail/pause/", None, 400, "queue"),
        ("queues/ma%0Ail/pause/", None, 400, "queue"),
        ("queues/mail%00/pause/", None, 400, "queue"),
        ("queues/mail/pause/", {"reason": "x" * 256}, 400, "reason"),
        ("queues/mail/pause/", {"reason": 3}, 400, "reason"),
        ("queues/mail/pause/", {"reason": "bad\u0000"}, 400, "reason"),
        ("queues/mail/pause/", {"reason": "ok", "until": "later"}, 400, "until"),
        ("queues/mail/resume/", {"reason": "ok"}, 400, "reason"),
        ("queues/mail/pause/", "not json", 400, None),
        ("queues/mail/pause/", ["reason"], 400, None),
    ],
)
def test_queue_actions__refuse_bad_input_naming_the_field_and_write_nothing(
    client: Client,
    api: str,
    mail_queue: str,
    path: str,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    raw = pausing_token()
    queue_pauses.pause("mail", by="alice", reason="kept")  # a resume must leave it

    response = post(client, f"{api}/{path}", body, raw)

    assert response.status_code == status, response.content
    assert response.json().get("field") == field
    assert response.json()["error"]
    (pause,) = queue_pauses.paused_queues()
    assert (pause.queue_name, pause.paused_by, pause.reason) == ("mail", "alice", "kept")


def test_queue_pause__a_queue_of_jobs_with_a_slash_in_its_name(
    client: Client, api: str, make_job: JobMaker
) -> None:
    # A queue's name may hold "/" and any printable character; the route takes them all.
    make_job(queue="billing/eu-ü")

    response = post(client, f"{api}/queues/billing/eu-%C3%BC/pause/", None, pausing_token())

    assert response.status_code == 200, response.content
    assert queue_pauses.is_paused("billing/eu-ü")


def test_queue_routes__wrong_methods_are_405(client: Client, api: str) -> None:
    raw = pausing_token()
    assert post(client, f"{api}/queues/", None, raw).status_code == 405
    assert client.get(f"{api}/queues/mail/pause/", headers=bearer(raw)).status_code == 405


def test_create_api_token__the_pause_capability_is_off_unless_asked() -> None:
    out = StringIO()

    call_command("create_api_token", "plain", "--tasks", TASKS[0], stdout=out)
    call_command("create_api_token", "ops", "--tasks", TASKS[0], "--may-pause-queues", stdout=out)

    assert dict(ApiToken.objects.values_list("name", "may_pause_queues")) == {
        "plain": False,
        "ops": True,
    }
    assert "It may also list, pause and resume queues." in out.getvalue()


def test_token_admin__only_who_may_pause_queues_hands_the_capability_on(client: Client) -> None:
    token, _ = issue_token(name="ops", tasks=TASKS)
    url = f"/admin/jobs/apitoken/{token.pk}/change/"
    form = {"tasks": json.dumps(TASKS), "may_pause_queues": "on", "revoked_at": ""}
    user = User.objects.create_user("token-keeper", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_apitoken", "change_apitoken"])
    )
    client.force_login(user)

    assert 'name="may_pause_queues"' not in client.get(url).content.decode()
    assert client.post(url, form).status_code == 302
    assert ApiToken.objects.get().may_pause_queues is False

    user.user_permissions.add(Permission.objects.get(codename="pause_queue"))
    assert 'name="may_pause_queues"' in client.get(url).content.decode()
    assert client.post(url, form).status_code == 302
    assert ApiToken.objects.get().may_pause_queues is True


@pytest.mark.django_db(transaction=True)
def test_queue_pause__a_real_worker_takes_none_of_its_jobs_until_resumed_over_the_api(
    client: Client, start_worker: Callable[..., WorkerProcess]
) -> None:
    raw = pausing_token()
    # Polling every 10 minutes: only the resume's wake-up can start the held job in time.
    start_worker("--fetch-job-polling-interval", "600")

    assert post(client, "/api/queues/comments/pause/", {"reason": "e2e"}, raw).status_code == 200
    held = int(django_task_functions.noop.using(queue_name="comments").enqueue().id)
    elsewhere = int(django_task_functions.noop.enqueue().id)

    wait_until(lambda: status_of(elsewhere) == "succeeded", what="the other queue's job ran")
    assert status_of(held) == "todo"
    assert post(client, "/api/queues/comments/resume/", None, raw).json()["changed"] is True
    wait_until(lambda: status_of(held) == "succeeded", timeout=20, what="resumed: the job ran")


def status_of(job_id: int) -> str:
    return str(ProcrastinateJob.objects.values_list("status", flat=True).get(id=job_id))
