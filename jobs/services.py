"""Operations that write data and defer the job that processes it, in one transaction.

Views call these; so can shells and other code. If anything fails after the defer, the
transaction rolls back the data and the job row together: procrastinate's Django connector
writes the job through Django's own connection.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from jobs import tasks
from jobs.models import Notification, Report
from jobs.transaction import async_atomic


def queue_notification(*, recipient: str, subject: str, body: str = "") -> Notification:
    """Create a notification and defer the job that sends it (sync ORM, `defer`)."""
    with transaction.atomic():
        notification = Notification.objects.create(recipient=recipient, subject=subject, body=body)
        job_id = tasks.send_notification.defer(notification_id=notification.pk)
        notification.attach_job(job_id)
    return notification


async def aqueue_report(
    *, title: str, period_start: dt.datetime, period_end: dt.datetime
) -> Report:
    """Create a report and defer the job that builds it (async ORM, `defer_async`)."""
    async with async_atomic():
        report = await Report.objects.acreate(
            title=title, period_start=period_start, period_end=period_end
        )
        job_id = await tasks.build_report.defer_async(report_id=report.pk)
        await report.aattach_job(job_id)
    return report
