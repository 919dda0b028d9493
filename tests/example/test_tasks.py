"""The task functions called directly, the first of the three layers of task tests,
send_notification's delivery guarantee through real workers, and the django.tasks tasks
enqueued as the views do, run by real workers and read back through `get_result()`."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Callable
from email import message_from_string
from email.message import Message
from pathlib import Path

import psycopg
import pytest
from django.core import mail
from django.db import connection
from django.tasks import TaskResult, TaskResultStatus
from django.test import Client, override_settings
from django.utils import timezone
from procrastinate import RetryStrategy
from procrastinate.contrib.django.models import ProcrastinateJob

from example import services, tasks
from example.models import Comment, Notification, Report
from jobs import stalled
from jobs.databases import database_url
from jobs.models import JobResult
from jobs.testing import WorkerProcess, wait_until

pytestmark = pytest.mark.django_db


def test_send_notification__sends_mail_once() -> None:
    notification = Notification.objects.create(
        recipient="ada@example.com", subject="Welcome", body="Hello Ada"
    )

    first = tasks.send_notification(notification_id=notification.pk)
    second = tasks.send_notification(notification_id=notification.pk)

    message_id = tasks.notification_message_id(notification)
    assert first == {"notification_id": notification.pk, "recipient": "ada@example.com"}
    assert second == {"notification_id": notification.pk, "already_sent": True}
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    assert mail.outbox[0].message()["Message-ID"] == message_id
    notification.refresh_from_db()
    assert notification.sent_at is not None


@override_settings(DEFAULT_FROM_EMAIL="Jobs <jobs@mail.example.com>")
def test_notification_message_id__same_for_a_notification_distinct_between_them() -> None:
    one = Notification.objects.create(recipient="a@example.com", subject="One")
    two = Notification.objects.create(recipient="a@example.com", subject="One")

    message_id = tasks.notification_message_id(one)

    assert message_id == tasks.notification_message_id(Notification.objects.get(pk=one.pk))
    assert message_id != tasks.notification_message_id(two)
    assert re.fullmatch(
        rf"<notification-{one.pk}\.\d{{8}}T\d{{12}}Z@mail\.example\.com>", message_id
    )


def sent_messages(folder: Path) -> list[Message]:
    """The messages the file mail backend wrote into `folder` (one file per connection)."""
    separator = "\n" + "-" * 79 + "\n"
    return [
        message_from_string(text)
        for path in sorted(folder.glob("*.log"))
        for text in path.read_text().split(separator)
        if text.strip()
    ]


FILE_MAIL = "django.core.mail.backends.filebased.EmailBackend"


@pytest.mark.django_db(transaction=True)
def test_send_notification__a_worker_killed_after_sending_mails_again_with_the_same_message_id(
    start_worker: Callable[..., WorkerProcess],
    run_worker: Callable[..., object],
    tmp_path: Path,
) -> None:
    """At least once, through real workers: the run lost with its worker is run again by
    stalled-job recovery, and mails again under the same Message-ID; once the sent mark is
    saved, a further run sends nothing."""
    outbox = tmp_path / "mail"
    doomed = start_worker(
        "--queues",
        "notifications",
        EMAIL_BACKEND="tests.mail_backends.CrashAfterSendingEmailBackend",
        EMAIL_FILE_PATH=str(outbox),
    )
    notification = services.queue_notification(
        recipient="ada@example.com", subject="Welcome", body="Hello Ada"
    )
    job_id = notification.job_id
    assert job_id is not None
    wait_until(lambda: doomed.process.poll() is not None, what="the worker to die after sending")
    assert len(sent_messages(outbox)) == 1
    notification.refresh_from_db()
    assert notification.sent_at is None  # the mark was never saved
    assert ProcrastinateJob.objects.get(id=job_id).status == "doing"

    # The dead worker's heartbeat ages; recovery then retries its job.
    recovered = wait_until(lambda: stalled.recover_stalled_jobs(stalled_after=1))
    assert [(r.job_id, r.action) for r in recovered] == [(job_id, "retried")]
    run_worker("--queues", "notifications", EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(outbox))

    first, second = sent_messages(outbox)
    assert (
        second["Message-ID"] == first["Message-ID"] == tasks.notification_message_id(notification)
    )
    assert (second["To"], second["Subject"]) == (first["To"], first["Subject"])
    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"
    notification.refresh_from_db()
    assert notification.sent_at is not None

    again = tasks.send_notification.defer(notification_id=notification.pk)
    run_worker("--queues", "notifications", EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(outbox))

    assert len(sent_messages(outbox)) == 2
    assert JobResult.objects.get(job_id=again).return_value == {
        "notification_id": notification.pk,
        "already_sent": True,
    }


@pytest.mark.django_db(transaction=True)
def test_send_notification__a_run_while_another_sends_waits_and_sends_nothing(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Two runs at once for one notification (two jobs deferred for it, or a run recovery
    started while the first still ran) mail once: the second waits for the first's lock."""
    outbox = tmp_path / "mail"
    notification = Notification.objects.create(recipient="ada@example.com", subject="Welcome")
    # The first run, played by the test: it holds the row while it "sends".
    with psycopg.connect(database_url()) as first_run:
        first_run.execute(
            "SELECT sent_at FROM example_notification WHERE id = %s FOR UPDATE", [notification.pk]
        )
        start_worker(
            "--queues", "notifications", EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(outbox)
        )
        job_id = tasks.send_notification.defer(notification_id=notification.pk)
        wait_until(
            lambda: waiting_for_a_row_lock("example_notification"),
            what="the second run to wait for the notification's row lock",
        )
        first_run.execute(
            "UPDATE example_notification SET sent_at = now() WHERE id = %s", [notification.pk]
        )

    wait_until(lambda: ProcrastinateJob.objects.get(id=job_id).status == "succeeded")
    assert sent_messages(outbox) == []
    assert JobResult.objects.get(job_id=job_id).return_value == {
        "notification_id": notification.pk,
        "already_sent": True,
    }


def waiting_for_a_row_lock(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s",
            [f'%FROM "{table}"%FOR UPDATE%'],
        )
        (count,) = cursor.fetchone() or (0,)
    return bool(count)


def test_send_notification__unknown_id_raises() -> None:
    with pytest.raises(Notification.DoesNotExist):
        tasks.send_notification(notification_id=999_999)


# Async ORM calls run on another thread and connection than the test's transaction.
@pytest.mark.django_db(transaction=True)
async def test_build_report__counts_notifications_of_its_period() -> None:
    now = timezone.now()
    await Notification.objects.acreate(recipient="a@example.com", subject="in", sent_at=now)
    await Notification.objects.acreate(recipient="b@example.com", subject="in, unsent")
    report = await Report.objects.acreate(
        title="Hour", period_start=now - dt.timedelta(hours=1), period_end=now + dt.timedelta(1)
    )

    result = await tasks.build_report(report_id=report.pk)

    assert result == {"report_id": report.pk, "total": 2, "sent": 1}
    await report.arefresh_from_db()
    assert report.status == Report.Status.READY
    assert report.generated_at is not None


def test_delete_sent_notifications__keeps_recent_and_unsent() -> None:
    now = timezone.now()
    old = Notification.objects.create(
        recipient="a@example.com", subject="old", sent_at=now - dt.timedelta(days=40)
    )
    recent = Notification.objects.create(
        recipient="b@example.com", subject="recent", sent_at=now - dt.timedelta(days=1)
    )
    unsent = Notification.objects.create(recipient="c@example.com", subject="unsent")

    assert tasks.delete_sent_notifications(older_than_days=30) == {"deleted": 1}
    assert set(Notification.objects.values_list("pk", flat=True)) == {recent.pk, unsent.pk}
    assert not Notification.objects.filter(pk=old.pk).exists()


def test_tasks__have_explicit_names_queues_and_retry_policies() -> None:
    from procrastinate.contrib.django import app

    ours = {name: task for name, task in app.tasks.items() if name.startswith("jobs.")}
    assert set(ours) >= {
        "jobs.send_notification",
        "jobs.build_report",
        "jobs.delete_sent_notifications",
    }
    assert ours["jobs.send_notification"].queue == "notifications"
    assert ours["jobs.build_report"].queue == "reports"
    assert ours["jobs.delete_sent_notifications"].queue == "maintenance"
    strategy = ours["jobs.send_notification"].retry_strategy
    assert isinstance(strategy, RetryStrategy)
    assert strategy.max_attempts == 2


# --- The django.tasks tasks: screen_comment (sync), recount_report (async) ------------------


def test_screen_comment__publishes_a_comment_or_holds_one_with_many_links() -> None:
    plain = Comment.objects.create(author="Ada", body="See https://example.com")
    spam = Comment.objects.create(
        author="Eve", body="https://a.example www.b.example http://c.example buy"
    )

    assert tasks.screen_comment.call(comment_id=plain.pk) == {
        "comment_id": plain.pk,
        "status": "published",
        "links": 1,
    }
    assert tasks.screen_comment.call(comment_id=spam.pk)["status"] == "held"
    plain.refresh_from_db()
    spam.refresh_from_db()
    assert (plain.status, spam.status) == (Comment.Status.PUBLISHED, Comment.Status.HELD)
    assert plain.screened_at is not None


def test_screen_comment__runs_again_without_changing_anything() -> None:
    comment = Comment.objects.create(author="Ada", body="Hello")
    tasks.screen_comment.call(comment_id=comment.pk)
    comment.refresh_from_db()
    # A moderator publishes... or holds it: a late second run must not undo that.
    comment.status = Comment.Status.HELD
    comment.save(update_fields=["status"])

    assert tasks.screen_comment.call(comment_id=comment.pk)["status"] == "held"
    assert Comment.objects.get(pk=comment.pk).screened_at == comment.screened_at


def test_screen_comment__a_comment_deleted_meanwhile_needs_nothing() -> None:
    assert tasks.screen_comment.call(comment_id=999_999) == {
        "comment_id": 999_999,
        "status": "deleted",
    }


@pytest.mark.django_db(transaction=True)
async def test_recount_report__counts_the_period_again() -> None:
    now = timezone.now()
    report = await Report.objects.acreate(
        title="Hour", period_start=now - dt.timedelta(hours=1), period_end=now + dt.timedelta(1)
    )
    await tasks.build_report(report_id=report.pk)
    await Notification.objects.acreate(recipient="a@example.com", subject="later", sent_at=now)

    result = await tasks.recount_report.acall(report_id=report.pk)

    assert result == {"report_id": report.pk, "total": 1, "sent": 1}
    await report.arefresh_from_db()
    assert (report.notifications_total, report.notifications_sent) == (1, 1)


def example_client() -> Client:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("ada", password="pw-for-tests")
    for name in services.EXAMPLE_PERMISSIONS:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_comments__a_real_worker_screens_them_and_the_page_reads_the_results(
    run_worker: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    client = example_client()
    client.post("/comments/", {"author": "Ada", "body": "Nice report"})
    client.post("/comments/", {"author": "Eve", "body": "http://a.x http://b.x http://c.x"})
    plain, spam = Comment.objects.order_by("pk")
    assert plain.task_result_id
    assert spam.task_result_id

    run_worker("--queues", "comments")

    plain.refresh_from_db()
    spam.refresh_from_db()
    assert (plain.status, spam.status) == (Comment.Status.PUBLISHED, Comment.Status.HELD)
    result = tasks.screen_comment.get_result(spam.task_result_id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"comment_id": spam.pk, "status": "held", "links": 3}
    assert result.attempts == 1
    assert result.errors == []
    page = client.get("/activity/").content.decode()
    assert page.count('class="task-status task-successful">SUCCESSFUL<') == 2


@pytest.mark.django_db(transaction=True)
def test_comments__a_rolled_back_enqueue_leaves_nothing_for_the_worker(
    start_worker: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job enqueue() wrote goes with the transaction: the listening worker is never
    told of it (NOTIFY is sent at commit) and finds no row; the next comment runs."""
    worker = start_worker("--queues", "comments")
    rolled_back: list[int] = []

    def fail(self: Comment, result_id: str) -> None:
        rolled_back.append(int(result_id))
        raise RuntimeError("boom after enqueue")

    with monkeypatch.context() as patch:
        patch.setattr(Comment, "attach_task_result", fail)
        with pytest.raises(RuntimeError, match="boom after enqueue"):
            services.post_comment(author="Ada", body="Lost")
    kept = services.post_comment(author="Ada", body="Kept")

    def finished() -> TaskResult | None:
        result = tasks.screen_comment.get_result(kept.task_result_id)
        return result if result.is_finished else None

    result = wait_until(finished, what="the kept comment's screening to finish")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert [comment.body for comment in Comment.objects.all()] == ["Kept"]
    # (The worker deferred its periodic tasks' jobs as it started: those are not ours.)
    screenings = ProcrastinateJob.objects.filter(task_name="example.tasks.screen_comment")
    assert list(screenings.values_list("id", flat=True)) == [int(kept.task_result_id)]
    assert len(rolled_back) == 1
    assert rolled_back[0] < int(kept.task_result_id)
    assert f"[{rolled_back[0]}]" not in worker.output()


@pytest.mark.django_db(transaction=True)
def test_screen_comment__a_failed_run_shows_failed_with_its_error_on_the_page(
    run_worker: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    comment = Comment.objects.create(author="Ada", body="Hello")
    # An argument the ORM refuses (JSON, so enqueue() takes it): a bug, not retried.
    broken = tasks.screen_comment.enqueue(comment_id="not a number")
    comment.attach_task_result(broken.id)

    run_worker("--queues", "comments")

    result = tasks.screen_comment.get_result(broken.id)
    assert result.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in result.errors] == ["builtins.ValueError"]
    row = example_client().get("/activity/").content.decode()
    assert 'class="task-status task-failed">FAILED</span> <span class="muted">after 1 error<' in row


@pytest.mark.django_db(transaction=True)
def test_recount_report__a_real_worker_runs_the_async_task_enqueued_by_the_async_view(
    run_worker: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    now = timezone.now()
    report = Report.objects.create(
        title="Day", period_start=now - dt.timedelta(days=1), period_end=now + dt.timedelta(1)
    )
    report.notifications_total = report.notifications_sent = 0
    report.status = Report.Status.READY
    report.save()
    Notification.objects.create(recipient="a@example.com", subject="since", sent_at=now)

    response = example_client().post(f"/reports/{report.pk}/recount/")
    assert response.status_code == 302
    report.refresh_from_db()
    run_worker("--queues", "reports")

    result = tasks.recount_report.get_result(report.recount_result_id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"report_id": report.pk, "total": 1, "sent": 1}
    report.refresh_from_db()
    assert (report.notifications_total, report.notifications_sent) == (1, 1)
