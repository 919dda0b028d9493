from __future__ import annotations

import pytest
from django.test import Client
from procrastinate.contrib.django.exceptions import ReadOnlyModel
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from jobs import tasks
from jobs.models import Notification

pytestmark = pytest.mark.django_db

JOBS_URL = "/admin/procrastinate/procrastinatejob/"


@pytest.fixture
def job_id() -> int:
    notification = Notification.objects.create(recipient="a@example.com", subject="Hi")
    return tasks.send_notification.defer(notification_id=notification.pk)


def test_job_list__renders_for_staff(staff_client: Client, job_id: int) -> None:
    response = staff_client.get(JOBS_URL)

    assert response.status_code == 200
    assert b"send_notification" in response.content


def test_job_detail__renders_for_staff_with_events(staff_client: Client, job_id: int) -> None:
    response = staff_client.get(f"{JOBS_URL}{job_id}/change/")

    assert response.status_code == 200
    assert b"notification_id" in response.content
    assert b"deferred" in response.content  # the event inline


@pytest.mark.parametrize("path", [JOBS_URL, "/admin/procrastinate/procrastinateevent/"])
def test_job_admin__redirects_anonymous_users_to_login(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_job_admin__refuses_changes(
    staff_client: Client, admin_client: Client, job_id: int
) -> None:
    before = ProcrastinateJob.objects.values().get(id=job_id)

    for client in (staff_client, admin_client):
        response = client.post(
            f"{JOBS_URL}{job_id}/change/", {"queue_name": "elsewhere", "status": "succeeded"}
        )
        assert response.status_code == 403
        assert client.get(f"{JOBS_URL}add/").status_code == 403
        assert client.post(f"{JOBS_URL}{job_id}/delete/", {"post": "yes"}).status_code == 403

    assert ProcrastinateJob.objects.values().get(id=job_id) == before


def test_job_admin__refuses_users_without_view_permission(client: Client, job_id: int) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("clerk", password="x", is_staff=True))

    assert client.get(JOBS_URL).status_code == 403


def test_procrastinate_models__refuse_orm_writes(job_id: int) -> None:
    job = ProcrastinateJob.objects.get(id=job_id)

    with pytest.raises(ReadOnlyModel):
        ProcrastinateJob.objects.filter(id=job_id).update(status="succeeded")
    with pytest.raises(ReadOnlyModel):
        job.save()
    with pytest.raises(ReadOnlyModel):
        job.delete()
    with pytest.raises(ReadOnlyModel):
        ProcrastinateEvent.objects.filter(job_id=job_id).delete()

    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


def test_token_admin__lists_and_validates_task_edits(admin_client: Client) -> None:
    from jobs.models import ApiToken
    from jobs.tokens import issue_token

    token, _ = issue_token(name="ops", tasks=["jobs.build_report"])
    url = f"/admin/jobs/apitoken/{token.pk}/change/"

    assert b"ops" in admin_client.get("/admin/jobs/apitoken/").content
    refused = admin_client.post(
        url, {"tasks": '["jobs.delete_sent_notifications"]', "revoked_at": ""}
    )
    assert refused.status_code == 200
    assert b"not callable over HTTP" in refused.content
    assert ApiToken.objects.get().tasks == ["jobs.build_report"]

    accepted = admin_client.post(url, {"tasks": '["jobs.send_notification"]', "revoked_at": ""})
    assert accepted.status_code == 302
    assert ApiToken.objects.get().tasks == ["jobs.send_notification"]


def test_token_admin__revoke_action(admin_client: Client) -> None:
    from jobs.models import ApiToken
    from jobs.tokens import authenticate, issue_token

    token, raw = issue_token(name="old", tasks=["jobs.build_report"])

    response = admin_client.post(
        "/admin/jobs/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )

    assert b"Revoked 1 token(s)." in response.content
    assert ApiToken.objects.get().revoked_at is not None
    assert authenticate(raw) is None
