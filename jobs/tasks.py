"""Background tasks.

Each task has an explicit `name` (the name stored in job rows must survive a refactoring),
a queue, and a retry policy chosen for what can go wrong in it. Arguments are ids and
JSON-safe values; the task loads what it needs.
"""

from __future__ import annotations

import datetime as dt
import smtplib

from django.core.mail import send_mail
from django.utils import timezone
from procrastinate import RetryStrategy
from procrastinate.contrib.django import app

from jobs.http_tasks import callable_over_http
from jobs.models import Notification, Report

# Queues this project uses. Workers started without `--queues` listen to all of them
# (and to procrastinate's `builtin` queue).
NOTIFICATIONS_QUEUE = "notifications"
REPORTS_QUEUE = "reports"
MAINTENANCE_QUEUE = "maintenance"


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
    """Send one notification email (sync task, sync ORM)."""
    notification = Notification.objects.get(pk=notification_id)
    if notification.sent_at is not None:
        # A retry after a crash between sending and saving must not mail twice.
        return {"notification_id": notification_id, "already_sent": True}
    send_mail(
        subject=notification.subject,
        message=notification.body,
        from_email=None,
        recipient_list=[notification.recipient],
    )
    notification.mark_sent(at=timezone.now())
    return {"notification_id": notification_id, "recipient": notification.recipient}


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
    in_period = Notification.objects.created_between(report.period_start, report.period_end)
    total = await in_period.acount()
    sent = await in_period.filter(sent_at__isnull=False).acount()
    await report.apublish(total=total, sent=sent, at=timezone.now())
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
