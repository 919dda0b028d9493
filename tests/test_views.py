from __future__ import annotations

import pytest
from django.test import AsyncClient, Client
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.models import Notification, Report

pytestmark = pytest.mark.django_db(transaction=True)


def test_home__renders_forms_and_activity(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert b'id="notification-form"' in response.content
    assert b'id="report-form"' in response.content
    assert client.get("/activity/").status_code == 200


def test_create_notification__saves_row_and_defers_job(client: Client) -> None:
    response = client.post(
        "/notifications/",
        {"recipient": "ada@example.com", "subject": "Welcome", "body": "Hello"},
    )

    assert response.status_code == 302
    notification = Notification.objects.get()
    job = ProcrastinateJob.objects.get()
    assert notification.job_id == job.id
    assert job.task_name == "jobs.send_notification"
    assert job.args == {"notification_id": notification.pk}
    assert job.queue_name == "notifications"
    assert job.status == "todo"


def test_create_notification__invalid_form_writes_nothing(client: Client) -> None:
    response = client.post("/notifications/", {"recipient": "not-an-email", "subject": ""})

    assert response.status_code == 400
    assert b"Enter a valid email address" in response.content
    assert not Notification.objects.exists()
    assert not ProcrastinateJob.objects.exists()


def test_create_notification__failure_after_defer_rolls_back_both(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Notification, job_id: int) -> None:
        # The job row exists at this point: the defer ran in the same transaction.
        assert ProcrastinateJob.objects.filter(id=job_id).exists()
        raise RuntimeError("boom after defer")

    monkeypatch.setattr(Notification, "attach_job", fail)

    with pytest.raises(RuntimeError, match="boom after defer"):
        client.post("/notifications/", {"recipient": "ada@example.com", "subject": "Hi"})

    assert not Notification.objects.exists()
    assert not ProcrastinateJob.objects.exists()


async def test_create_report__async_view_saves_row_and_defers_job(
    async_client: AsyncClient,
) -> None:
    response = await async_client.post("/reports/", {"title": "Daily", "hours": "24"})

    assert response.status_code == 302
    report = await Report.objects.aget()
    job = await ProcrastinateJob.objects.aget()
    assert report.job_id == job.id
    assert job.task_name == "jobs.build_report"
    assert job.args == {"report_id": report.pk}
    assert job.queue_name == "reports"
    assert report.status == Report.Status.PENDING


async def test_create_report__invalid_form_writes_nothing(async_client: AsyncClient) -> None:
    response = await async_client.post("/reports/", {"title": "Daily", "hours": "0"})

    assert response.status_code == 400
    assert not await Report.objects.aexists()
    assert not await ProcrastinateJob.objects.aexists()


async def test_create_report__failure_after_defer_rolls_back_both(
    async_client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail(self: Report, job_id: int) -> None:
        assert await ProcrastinateJob.objects.filter(id=job_id).aexists()
        raise RuntimeError("boom after defer_async")

    monkeypatch.setattr(Report, "aattach_job", fail)

    with pytest.raises(RuntimeError, match="boom after defer_async"):
        await async_client.post("/reports/", {"title": "Daily", "hours": "24"})

    assert not await Report.objects.aexists()
    assert not await ProcrastinateJob.objects.aexists()


def test_create_report__requires_post(client: Client) -> None:
    assert client.get("/reports/").status_code == 405
