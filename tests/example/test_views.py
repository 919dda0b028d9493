from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.tasks import TaskResultStatus
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from example import services, tasks
from example.models import Comment, Notification, Report
from jobs import tasks as jobs_tasks

pytestmark = pytest.mark.django_db(transaction=True)

# Every example page, with a request that would write something if it were let through.
PAGES = [
    ("get", "/", {}),
    ("get", "/activity/", {}),
    ("post", "/notifications/", {"recipient": "victim@example.com", "subject": "Spam"}),
    ("post", "/reports/", {"title": "Daily", "hours": "24"}),
    ("post", "/comments/", {"author": "Eve", "body": "Cheap pills"}),
    ("post", "/reports/1/recount/", {}),
]


def user_with(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw-for-tests")
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def example_user(transactional_db: None) -> User:
    return user_with("ada", *services.EXAMPLE_PERMISSIONS)


@pytest.fixture
def member(example_user: User) -> Client:
    """A client logged in as a user who may use every example page."""
    client = Client()
    client.force_login(example_user)
    return client


@pytest.fixture
async def amember(example_user: User) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(example_user)
    return client


def assert_nothing_written() -> None:
    assert not Notification.objects.exists()
    assert not Report.objects.exists()
    assert not Comment.objects.exists()
    assert not ProcrastinateJob.objects.exists()


def test_home__renders_forms_and_activity(member: Client) -> None:
    response = member.get("/")
    assert response.status_code == 200
    assert b'id="notification-form"' in response.content
    assert b'id="report-form"' in response.content
    assert member.get("/activity/").status_code == 200


def test_home__shows_comments_only_to_users_who_may_view_them() -> None:
    services.post_comment(author="Eve", body="Only for moderators' eyes")
    client = Client()
    # What the page needed before it showed comments: still enough for the page.
    client.force_login(user_with("viewer", *services.OVERVIEW_PERMISSIONS, "example.add_comment"))

    for response in (client.get("/"), client.get("/activity/")):
        assert response.status_code == 200
        assert b'id="comments-table"' not in response.content
        assert b"moderators" not in response.content
    assert b'id="comment-form"' not in client.get("/").content


def test_home__shows_only_the_forms_the_user_may_use() -> None:
    client = Client()
    client.force_login(user_with("viewer", *services.SEND_NOTIFICATION_PERMISSIONS))

    page = client.get("/").content

    assert b'id="notification-form"' in page
    assert b'id="report-form"' not in page


@pytest.mark.parametrize(("method", "path", "data"), PAGES)
def test_example_pages__anonymous_visitor_is_sent_to_the_login_page(
    client: Client, method: str, path: str, data: dict[str, str]
) -> None:
    response = getattr(client, method)(path, data)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"
    assert_nothing_written()


@pytest.mark.parametrize(("method", "path", "data"), PAGES)
def test_example_pages__logged_in_user_without_the_permissions_gets_403(
    staff_client: Client, method: str, path: str, data: dict[str, str]
) -> None:
    # Staff who may view procrastinate's jobs, but nothing of the example's.
    assert getattr(staff_client, method)(path, data).status_code == 403
    assert_nothing_written()


@pytest.mark.parametrize(
    ("missing", "method", "path", "data"),
    [
        ("example.add_notification", *PAGES[2]),
        ("example.add_report", *PAGES[3]),
        ("example.add_comment", *PAGES[4]),
        ("example.change_report", *PAGES[5]),
        ("example.view_notification", *PAGES[0]),
        ("example.view_report", *PAGES[1]),
        # Adding is not enough: a refused form shows the recent activity again.
        ("example.view_notification", *PAGES[2]),
        ("example.view_report", *PAGES[3]),
        ("example.view_comment", *PAGES[4]),
    ],
)
def test_example_pages__each_permission_is_needed(
    missing: str, method: str, path: str, data: dict[str, str]
) -> None:
    client = Client()
    permissions = [name for name in services.EXAMPLE_PERMISSIONS if name != missing]
    client.force_login(user_with("almost", *permissions))

    assert getattr(client, method)(path, data).status_code == 403
    assert_nothing_written()


@override_settings(EXAMPLE_PAGES=False)
@pytest.mark.parametrize(("method", "path", "data"), PAGES)
def test_example_pages__switched_off_answer_404_to_everyone(
    client: Client, member: Client, method: str, path: str, data: dict[str, str]
) -> None:
    assert getattr(client, method)(path, data).status_code == 404
    assert getattr(member, method)(path, data).status_code == 404
    assert_nothing_written()


async def test_create_report__async_view_is_guarded_too(async_client: AsyncClient) -> None:
    anonymous = await async_client.post("/reports/", {"title": "Daily", "hours": "24"})
    assert anonymous.status_code == 302
    assert anonymous["Location"] == "/admin/login/?next=/reports/"

    user = await User.objects.acreate_user("bob", password="pw-for-tests")
    await async_client.aforce_login(user)
    refused = await async_client.post("/reports/", {"title": "Daily", "hours": "24"})
    assert refused.status_code == 403

    with override_settings(EXAMPLE_PAGES=False):
        assert (
            await async_client.post("/reports/", {"title": "D", "hours": "1"})
        ).status_code == 404
    assert not await Report.objects.aexists()
    assert not await ProcrastinateJob.objects.aexists()


def test_activity__shows_the_example_jobs_and_no_other_task_s_arguments(member: Client) -> None:
    notification = services.queue_notification(recipient="ada@example.com", subject="Hi")
    comment = services.post_comment(author="Ada", body="Hello")  # a django.tasks task's job
    jobs_tasks.run_management_command.defer(
        command="prune_jobs", args=["--secret-looking-argument"]
    )
    tasks.delete_sent_notifications.defer(older_than_days=424242)

    for page in (member.get("/").content, member.get("/activity/").content):
        assert f'data-job-id="{notification.job_id}"'.encode() in page
        assert f'data-job-id="{comment.task_result_id}"'.encode() in page
        assert b"jobs.send_notification" in page
        assert b"secret-looking-argument" not in page
        assert b"run_management_command" not in page
        assert b"424242" not in page


def test_example_pages__setting_follows_the_environment() -> None:
    """On by default in development, off by default in production, EXAMPLE_PAGES decides."""

    def example_pages(**env: str) -> str:
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DJANGO_ENV", "EXAMPLE_PAGES", "DEBUG"}
        }
        environment.update(env, DJANGO_SETTINGS_MODULE="project.settings")
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from django.conf import settings; print(settings.EXAMPLE_PAGES)",
            ],
            cwd=settings.BASE_DIR,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() or result.stderr

    production = {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "example.com",
        "DATABASE_URL": "postgres://app:secret@db:5432/site",
    }
    assert example_pages() == "True"
    assert example_pages(EXAMPLE_PAGES="off") == "False"
    assert example_pages(**production) == "False"
    assert example_pages(**production, EXAMPLE_PAGES="on") == "True"
    assert "EXAMPLE_PAGES='maybe' is not a boolean" in example_pages(EXAMPLE_PAGES="maybe")


def test_create_notification__saves_row_and_defers_job(member: Client) -> None:
    response = member.post(
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


def test_create_notification__invalid_form_writes_nothing(member: Client) -> None:
    response = member.post("/notifications/", {"recipient": "not-an-email", "subject": ""})

    assert response.status_code == 400
    assert b"Enter a valid email address" in response.content
    assert not Notification.objects.exists()
    assert not ProcrastinateJob.objects.exists()


def test_create_notification__failure_after_defer_rolls_back_both(
    member: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Notification, job_id: int) -> None:
        # The job row exists at this point: the defer ran in the same transaction.
        assert ProcrastinateJob.objects.filter(id=job_id).exists()
        raise RuntimeError("boom after defer")

    monkeypatch.setattr(Notification, "attach_job", fail)

    with pytest.raises(RuntimeError, match="boom after defer"):
        member.post("/notifications/", {"recipient": "ada@example.com", "subject": "Hi"})

    assert not Notification.objects.exists()
    assert not ProcrastinateJob.objects.exists()


async def test_create_report__async_view_saves_row_and_defers_job(
    amember: AsyncClient,
) -> None:
    response = await amember.post("/reports/", {"title": "Daily", "hours": "24"})

    assert response.status_code == 302
    report = await Report.objects.aget()
    job = await ProcrastinateJob.objects.aget()
    assert report.job_id == job.id
    assert job.task_name == "jobs.build_report"
    assert job.args == {"report_id": report.pk}
    assert job.queue_name == "reports"
    assert report.status == Report.Status.PENDING


async def test_create_report__invalid_form_writes_nothing(amember: AsyncClient) -> None:
    response = await amember.post("/reports/", {"title": "Daily", "hours": "0"})

    assert response.status_code == 400
    assert not await Report.objects.aexists()
    assert not await ProcrastinateJob.objects.aexists()


async def test_create_report__failure_after_defer_rolls_back_both(
    amember: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail(self: Report, job_id: int) -> None:
        assert await ProcrastinateJob.objects.filter(id=job_id).aexists()
        raise RuntimeError("boom after defer_async")

    monkeypatch.setattr(Report, "aattach_job", fail)

    with pytest.raises(RuntimeError, match="boom after defer_async"):
        await amember.post("/reports/", {"title": "Daily", "hours": "24"})

    assert not await Report.objects.aexists()
    assert not await ProcrastinateJob.objects.aexists()


def test_create_report__requires_post(member: Client) -> None:
    assert member.get("/reports/").status_code == 405


# --- The django.tasks tasks: a comment's screening (sync view), a report's recount (async) ---


def test_create_comment__saves_row_and_enqueues_its_screening(member: Client) -> None:
    response = member.post("/comments/", {"author": "Ada", "body": "Nice report"})

    assert response.status_code == 302
    comment = Comment.objects.get()
    job = ProcrastinateJob.objects.get()
    assert (comment.author, comment.body, comment.status) == ("Ada", "Nice report", "pending")
    assert job.task_name == "example.tasks.screen_comment"
    assert job.args == {"comment_id": comment.pk}
    assert job.queue_name == "comments"
    assert comment.task_result_id == str(job.id)
    result = tasks.screen_comment.get_result(comment.task_result_id)
    assert result.status == TaskResultStatus.READY
    assert result.kwargs == {"comment_id": comment.pk}


def test_create_comment__invalid_form_writes_nothing(member: Client) -> None:
    response = member.post("/comments/", {"author": "Ada", "body": ""})

    assert response.status_code == 400
    assert b'id="comment-form"' in response.content
    assert b"This field is required" in response.content
    assert_nothing_written()


def test_create_comment__failure_after_enqueue_rolls_back_both(
    member: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Comment, result_id: str) -> None:
        # The job row exists at this point: enqueue() wrote it in the same transaction.
        assert ProcrastinateJob.objects.filter(id=int(result_id)).exists()
        raise RuntimeError("boom after enqueue")

    monkeypatch.setattr(Comment, "attach_task_result", fail)

    with pytest.raises(RuntimeError, match="boom after enqueue"):
        member.post("/comments/", {"author": "Ada", "body": "Hello"})

    assert_nothing_written()


def ready_report() -> Report:
    now = timezone.now()
    return Report.objects.create(
        title="Daily",
        period_start=now - dt.timedelta(days=1),
        period_end=now,
        status=Report.Status.READY,
        notifications_total=0,
        notifications_sent=0,
    )


async def test_recount_report__async_view_enqueues_in_the_report_s_transaction(
    amember: AsyncClient,
) -> None:
    report = await sync_to_async(ready_report)()

    response = await amember.post(f"/reports/{report.pk}/recount/")

    assert response.status_code == 302
    await report.arefresh_from_db()
    job = await ProcrastinateJob.objects.aget()
    assert job.task_name == "example.tasks.recount_report"
    assert job.args == {"report_id": report.pk}
    assert job.queue_name == "reports"
    assert report.recount_result_id == str(job.id)
    result = await tasks.recount_report.aget_result(report.recount_result_id)
    assert result.status == TaskResultStatus.READY


async def test_recount_report__failure_after_aenqueue_rolls_back_both(
    amember: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = await sync_to_async(ready_report)()

    async def fail(self: Report, result_id: str) -> None:
        assert await ProcrastinateJob.objects.filter(id=int(result_id)).aexists()
        raise RuntimeError("boom after aenqueue")

    monkeypatch.setattr(Report, "aattach_recount", fail)

    with pytest.raises(RuntimeError, match="boom after aenqueue"):
        await amember.post(f"/reports/{report.pk}/recount/")

    assert not await ProcrastinateJob.objects.aexists()
    await report.arefresh_from_db()
    assert report.recount_result_id == ""


def test_recount_report__a_report_still_being_built_is_left_alone(member: Client) -> None:
    now = timezone.now()
    pending = Report.objects.create(
        title="Daily", period_start=now - dt.timedelta(days=1), period_end=now
    )

    response = member.post(f"/reports/{pending.pk}/recount/", follow=True)

    assert response.status_code == 200
    assert b"is still being built. Nothing was enqueued." in response.content
    assert not ProcrastinateJob.objects.exists()


@pytest.mark.parametrize("report_id", ["424242", "9" * 30])
def test_recount_report__unknown_report_is_404(member: Client, report_id: str) -> None:
    assert member.post(f"/reports/{report_id}/recount/").status_code == 404
    assert not ProcrastinateJob.objects.exists()


def test_recount_report__requires_post(member: Client) -> None:
    assert member.get(f"/reports/{ready_report().pk}/recount/").status_code == 405


def test_activity__shows_the_django_tasks_status_read_through_get_result(member: Client) -> None:
    comment = services.post_comment(author="Ada", body="Hello")
    report = ready_report()
    async_to_sync(services.arecount_report)(report_id=report.pk)
    # A result id whose job is gone (retention deleted it): nothing to show.
    forgotten = Comment.objects.create(author="Bob", body="Old", task_result_id="424242")

    page = member.get("/activity/").content.decode()

    comment_row = row_of(page, f'data-comment-id="{comment.pk}"')
    assert 'class="task-status task-ready">READY<' in comment_row
    assert "READY" not in row_of(page, f'data-comment-id="{forgotten.pk}"')
    assert 'class="task-status task-ready">READY<' in row_of(page, f'data-report-id="{report.pk}"')
    assert page.count("example.tasks.screen_comment") == 1  # in the recent jobs too
    assert page.count("example.tasks.recount_report") == 1


def row_of(page: str, marker: str) -> str:
    """The table row of `page` that holds `marker`."""
    start = page.index(marker)
    return page[start : page.index("</tr>", start)]


def test_activity__reads_one_result_per_row_of_a_django_task(member: Client) -> None:
    """The fragment reloads every 2 seconds: each comment or report with a result costs one
    `get_result` query, and nothing else grows with the rows."""

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert member.get("/activity/").status_code == 200
        return len(captured)

    services.post_comment(author="Ada", body="One")
    one = queries()
    services.post_comment(author="Ada", body="Two")
    services.post_comment(author="Ada", body="Three")
    async_to_sync(services.arecount_report)(report_id=ready_report().pk)

    assert queries() == one + 3
