"""The example's tasks: send a notification, build a report, and clean up after them (on
procrastinate's API), screen a comment and recount a report (on Django's, `django.tasks`),
and import contacts, one job per pasted row in one batch with a summary mail as its callback
(procrastinate's API, batched by `jobs.workflows`).

The procrastinate tasks keep the names they had when they were part of `jobs`
(`jobs.send_notification`, …): those names are stored in job rows, periodic defers and API
tokens, so renaming them would orphan queued jobs and refuse tokens (see
migrations_notes.md). A django.tasks task has no `name=`: its stored name is its dotted path
(`example.tasks.screen_comment`), so moving or renaming the function is a rename too. Each
task has a queue and a retry policy chosen for what can go wrong in it. Arguments are ids
and JSON-safe values; the task loads what it needs.
"""

from __future__ import annotations

import datetime as dt
import smtplib
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import InterfaceError, OperationalError, transaction
from django.tasks import task
from django.utils import timezone
from procrastinate import RetryStrategy
from procrastinate.contrib.django import app

from example import imports, maintenance
from example.mail import stable_message_id
from example.models import Comment, ContactImport, ContactImportRow, Notification, Report
from jobs.http_tasks import callable_over_http
from jobs.maintenance import from_timestamp
from jobs.tasks import MAINTENANCE_QUEUE

# The example's queues (next to the job system's `maintenance`); a django.tasks task's
# queue must also be listed in the TASKS setting's QUEUES (project/settings.py).
NOTIFICATIONS_QUEUE = "notifications"
REPORTS_QUEUE = "reports"
COMMENTS_QUEUE = "comments"
IMPORTS_QUEUE = "imports"


@callable_over_http
@app.task(
    name="jobs.send_notification",
    queue=NOTIFICATIONS_QUEUE,
    # A mail server that is down or refuses us for a moment is worth retrying, a little
    # later each time: procrastinate's max_attempts counts retries, so this is three runs
    # in all (waiting 2 s, then 4 s), then the job fails. Other errors are bugs: no retry.
    retry=RetryStrategy(
        max_attempts=2, exponential_wait=2, retry_exceptions={OSError, smtplib.SMTPException}
    ),
)
def send_notification(notification_id: int) -> dict[str, object]:
    """Send one notification email (sync task, sync ORM); made safe to run more than once.

    procrastinate runs a job *at least* once: a worker that dies mid-run (SIGKILL, out of
    memory, a lost machine, a second SIGTERM) leaves its job `doing` and stalled-job recovery
    runs it again, and a client may defer two jobs for one notification. So:

    - the notification's row stays locked while it is sent (`select_for_update`): a second
      run waits for the first, then finds it sent and sends nothing;
    - the sent mark is committed right after the mail server accepted the message;
    - the message's Message-ID is derived from the notification (`notification_message_id`),
      the same at every run, so that the receiving side can drop a duplicate.

    What remains, between the mail server accepting the message and the mark's commit: a
    worker that dies, a database lost, or a mail connection cut after the server took the
    message (an OSError, retried) leave the notification unsent here, and the next run
    mails again, with the same Message-ID.
    """
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=notification_id)
        if notification.sent_at is not None:
            return {"notification_id": notification_id, "already_sent": True}
        message_id = notification_message_id(notification)
        EmailMessage(
            subject=notification.subject,
            body=notification.body,
            to=[notification.recipient],
            headers={"Message-ID": message_id},
        ).send()
        notification.mark_sent(at=timezone.now())
    return {"notification_id": notification_id, "recipient": notification.recipient}


def notification_message_id(notification: Notification) -> str:
    """The Message-ID of a notification's email: the same for every run that sends it."""
    return stable_message_id("notification", notification.pk, notification.created_at)


@callable_over_http
@app.task(
    name="jobs.build_report",
    queue=REPORTS_QUEUE,
    # Only the database can fail here; one more try covers a connection lost mid-way.
    retry=RetryStrategy(max_attempts=2, wait=10),
)
async def build_report(report_id: int) -> dict[str, object]:
    """Count the notifications of the report's period (async task, async ORM)."""
    report = await Report.objects.aget(pk=report_id)
    total, sent = await report.acount_notifications(at=timezone.now())
    return {"report_id": report_id, "total": total, "sent": sent}


@app.task(
    name="jobs.delete_sent_notifications",
    queue=MAINTENANCE_QUEUE,
    # Idempotent clean-up: the next run catches up, so a failure is not retried.
    retry=False,
)
def delete_sent_notifications(older_than_days: int) -> dict[str, object]:
    """Delete notifications sent more than `older_than_days` days ago."""
    cutoff = timezone.now() - dt.timedelta(days=older_than_days)
    deleted, _ = Notification.objects.sent_before(cutoff).delete()
    return {"deleted": deleted}


# Every 10 minutes. (Periodic tasks take their tick's `timestamp` and work from it, not from
# "now"; `lock` keeps two runs apart, `queueing_lock` keeps ticks from piling up behind a
# slow run: see jobs/tasks.py.)
@app.periodic(cron="*/10 * * * *", periodic_id="every-10-minutes")
@app.task(
    name="jobs.delete_expired_comments",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.delete_expired_comments",
    queueing_lock="jobs.delete_expired_comments",
    retry=False,  # the next tick catches up
)
def delete_expired_comments(timestamp: int) -> dict[str, object]:
    """Delete comments older than their lifetime (EXAMPLE_COMMENT_LIFETIME_HOURS)."""
    deleted = maintenance.delete_expired_comments(
        now=from_timestamp(timestamp),
        lifetime=dt.timedelta(hours=settings.EXAMPLE_COMMENT_LIFETIME_HOURS),
    )
    return {"deleted": deleted}


# --- Tasks on Django's task API (django.tasks), run by the same workers ----------------------
# `@task` from django.tasks, enqueued with `.enqueue()` / `.aenqueue()`, read back with
# `.get_result(id)`: code a reusable app could ship unchanged for any Django task backend.
# The backend here (jobs.django_tasks) passes procrastinate's `retry`, `lock` and
# `queueing_lock` on to the job. (django-stubs' `task` does not know that Django 6.1 hands
# extra keyword arguments to the backend's task class: hence the `type: ignore`.)


# Only the database can fail in these two, and doing their work again is harmless: one
# more try covers a connection lost mid-way. Other errors are bugs: no retry.
DATABASE_LOST = {OperationalError, InterfaceError}


@task(  # type: ignore[call-overload]
    queue_name=COMMENTS_QUEUE,
    retry=RetryStrategy(max_attempts=1, wait=5, retry_exceptions=DATABASE_LOST),
)
def screen_comment(comment_id: int) -> dict[str, object]:
    """Publish a new comment, or hold it for a moderator when it looks like spam (sync task,
    sync ORM). Runs at least once like any job: a comment already screened stays as it is,
    and one deleted meanwhile (its lifetime ended) needs nothing."""
    with transaction.atomic():
        comment = Comment.objects.select_for_update().filter(pk=comment_id).first()
        if comment is None:
            return {"comment_id": comment_id, "status": "deleted"}
        if comment.status == Comment.Status.PENDING:
            comment.screen(at=timezone.now())
    return {"comment_id": comment_id, "status": str(comment.status), "links": comment.links()}


@task(  # type: ignore[call-overload]
    queue_name=REPORTS_QUEUE,
    retry=RetryStrategy(max_attempts=1, wait=10, retry_exceptions=DATABASE_LOST),
)
async def recount_report(report_id: int) -> dict[str, object]:
    """Count a report's notifications again, as `build_report` did (async task, async ORM):
    mail sent since then changes the figures. Counting twice gives the same figures."""
    report = await Report.objects.aget(pk=report_id)
    total, sent = await report.acount_notifications(at=timezone.now())
    return {"report_id": report_id, "total": total, "sent": sent}


# --- A contact import: one job per row, in one batch (jobs.workflows) -----------------------
# example.services.start_contact_import defers them, with send_import_summary as the batch's
# on_finish callback: deferred once, when the last row's job has ended, however it ended.


class InvalidContactRow(Exception):
    """A pasted row whose address is not one: its job fails, for good."""


@app.task(
    name="example.import_contact",
    queue=IMPORTS_QUEUE,
    # A bad row stays bad: only a lost database connection is worth another try.
    retry=RetryStrategy(max_attempts=1, wait=5, retry_exceptions=DATABASE_LOST),
)
def import_contact(row_id: int) -> dict[str, object]:
    """Import one pasted row into the address book (sync task, sync ORM); fail with
    InvalidContactRow if its address is not one. Runs again harmlessly (see
    `example.imports.import_row`)."""
    row = imports.import_row(row_id=row_id)
    if row is None:
        return {"row_id": row_id, "status": "deleted"}
    if row.status == ContactImportRow.Status.INVALID:
        raise InvalidContactRow(f"Line {row.line}: {row.error}")
    return {"row_id": row_id, "status": str(row.status), "contact_id": row.contact_id}


@app.task(
    name="example.send_import_summary",
    queue=NOTIFICATIONS_QUEUE,
    # A mail, retried as send_notification's are.
    retry=RetryStrategy(
        max_attempts=2, exponential_wait=2, retry_exceptions={OSError, smtplib.SMTPException}
    ),
)
def send_import_summary(import_id: int, batch: dict[str, Any]) -> dict[str, object]:
    """The import's batch callback: mail whoever started the import the counts of `batch`
    (the argument every callback gets) and the lines that failed (sync task, sync ORM).

    The batch defers it exactly once, but a job runs at least once (a worker may die in
    it): so, as send_notification does, it locks the import, sends nothing if the summary
    was sent, marks it sent right after the mail server took it, with a Message-ID that is
    the same at every run.
    """
    with transaction.atomic():
        contact_import = ContactImport.objects.select_for_update().filter(pk=import_id).first()
        if contact_import is None:
            return {"import_id": import_id, "status": "deleted"}
        if contact_import.summary_sent_at is not None:
            return {"import_id": import_id, "already_sent": True}
        imports.summary_message(contact_import, batch).send()
        contact_import.mark_summary_sent(at=timezone.now())
    return {
        "import_id": import_id,
        "to": contact_import.summary_to,
        "succeeded": batch["succeeded"],
        "failed": batch["failed"],
    }
