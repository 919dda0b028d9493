"""Background tasks.

Each task has an explicit `name` (the name stored in job rows must survive a refactoring),
a queue, and a retry policy chosen for what can go wrong in it. Arguments are ids and
JSON-safe values; the task loads what it needs.
"""

from __future__ import annotations

import datetime as dt
import smtplib

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone
from procrastinate import RetryStrategy
from procrastinate.contrib.django import app

from jobs import background_commands, maintenance, retention, stalled
from jobs.http_tasks import callable_over_http
from jobs.models import Notification, Report

# Queues this project uses. Workers started without `--queues` listen to all of them
# (and to procrastinate's `builtin` queue).
NOTIFICATIONS_QUEUE = "notifications"
REPORTS_QUEUE = "reports"
MAINTENANCE_QUEUE = "maintenance"
# Stalled-job recovery's priority: above any the site's own jobs use. The job API must keep
# its clients' priorities below it, or a client could starve recovery.
RECOVERY_PRIORITY = 1_000_000_000


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


# --- Periodic maintenance -----------------------------------------------------------------
# procrastinate's workers defer these on schedule: each tick once, however many workers
# run (its periodic-defers table has a unique key per task and tick). Each task takes the
# tick's `timestamp` and works from it, not from "now", so a late run computes what its
# tick meant. `lock` keeps two runs of a task from running at once; `queueing_lock` keeps
# ticks from piling up behind a slow run (a tick whose predecessor still waits is skipped).


# Every 10 minutes.
@app.periodic(cron="*/10 * * * *", periodic_id="every-10-minutes")
@app.task(
    name="jobs.delete_expired_comments",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.delete_expired_comments",
    queueing_lock="jobs.delete_expired_comments",
    retry=False,  # the next tick catches up
)
def delete_expired_comments(timestamp: int) -> dict[str, object]:
    """Delete comments older than their lifetime (JOBS_COMMENT_LIFETIME_HOURS)."""
    deleted = maintenance.delete_expired_comments(
        now=maintenance.from_timestamp(timestamp),
        lifetime=dt.timedelta(hours=settings.JOBS_COMMENT_LIFETIME_HOURS),
    )
    return {"deleted": deleted}


# Every day at 03:30 UTC.
@app.periodic(cron="30 3 * * *", periodic_id="daily")
@app.task(
    name="jobs.delete_expired_tokens",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.delete_expired_tokens",
    queueing_lock="jobs.delete_expired_tokens",
    retry=False,
)
def delete_expired_tokens(timestamp: int) -> dict[str, object]:
    """Delete API tokens expired or revoked more than JOBS_EXPIRED_TOKEN_KEEP_DAYS ago."""
    deleted = maintenance.delete_expired_tokens(
        now=maintenance.from_timestamp(timestamp),
        keep_for=dt.timedelta(days=settings.JOBS_EXPIRED_TOKEN_KEEP_DAYS),
    )
    return {"deleted": deleted}


# Every day at 00:10 UTC, for the day that just ended.
@app.periodic(cron="10 0 * * *", periodic_id="daily")
@app.task(
    name="jobs.compute_daily_statistics",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.compute_daily_statistics",
    queueing_lock="jobs.compute_daily_statistics",
    # Safe to repeat (update_or_create); a failed run is worth two more tries.
    retry=RetryStrategy(max_attempts=2, wait=300),
)
def compute_daily_statistics(timestamp: int) -> dict[str, object]:
    """Store yesterday's per-task statistics; the same day computed twice changes nothing."""
    tick = maintenance.from_timestamp(timestamp)
    day = maintenance.day_before(tick)
    days = maintenance.compute_daily_statistics(day=day, now=tick)
    return {"date": day.isoformat(), "tasks": len(days)}


# Every hour, on the hour.
@app.periodic(cron="0 * * * *", periodic_id="hourly")
@app.task(
    name="jobs.prune_jobs",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.prune_jobs",
    queueing_lock="jobs.prune_jobs",
    retry=False,
)
def prune_jobs(timestamp: int) -> dict[str, object]:
    """Delete finished jobs (with events and results) past JOBS_RETENTION_HOURS."""
    pruned = retention.prune_jobs(
        now=maintenance.from_timestamp(timestamp), hours=settings.JOBS_RETENTION_HOURS
    )
    return {item.status: item.jobs for item in pruned}


# Every minute, ahead of any backlog: workers take jobs by priority, then in the order they
# were deferred, so at the default priority a recovery would wait behind every job deferred
# before it. No `lock`: a recovery whose own worker died would stay `doing` holding it,
# and no later one could run to recover it. Two at once are harmless (jobs/stalled.py
# recovers each attempt once); the queueing lock keeps ticks from piling up.
@app.periodic(cron="* * * * *", periodic_id="every-minute")
@app.task(
    name="jobs.recover_stalled_jobs",
    queue=MAINTENANCE_QUEUE,
    priority=RECOVERY_PRIORITY,
    queueing_lock="jobs.recover_stalled_jobs",
    retry=False,
)
async def recover_stalled_jobs(timestamp: int) -> dict[str, object]:
    """Retry (or fail, per task policy) jobs whose worker stopped sending heartbeats."""
    recovered = await stalled.arecover_stalled_jobs(
        stalled_after=settings.JOBS_STALLED_WORKER_SECONDS
    )
    return {
        "retried": [r.job_id for r in recovered if r.action == "retried"],
        "failed": [r.job_id for r in recovered if r.action == "failed"],
    }


@app.task(name="jobs.run_management_command", queue=MAINTENANCE_QUEUE, retry=False)
def run_management_command(
    command: str, args: list[str] | None = None, timestamp: int | None = None
) -> dict[str, object]:
    """Run an allow-listed management command (JOBS_BACKGROUND_COMMANDS) on the worker.

    `timestamp` is given when the scheduler runs it (below); deferred from code or from the
    admin, it is absent.
    """
    output = background_commands.run_command(command, list(args or []))
    return {"command": command, "args": list(args or []), "output": output}


# Every day at 03:15 UTC: expired sessions, through the generic command runner. (Applied
# as a call rather than stacked: procrastinate's typing wants a periodic task's first
# parameter to be `timestamp`, which would hide `command` from type checkers.)
app.periodic(
    cron="15 3 * * *",
    periodic_id="clear-expired-sessions",
    task_kwargs={"command": "clear_expired_sessions"},
)(run_management_command)  # type: ignore[arg-type]
