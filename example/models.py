"""The example's domain, which its tasks work on: notifications to send, reports to build,
and comments with a lifetime.

These were models of `jobs` until the example became an app of its own; their tables and
rows came along (example/migrations/0001_initial.py).
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from django.db import models
from django.db.models.functions import Now


class NotificationQuerySet(models.QuerySet["Notification"]):
    def sent_before(self, cutoff: dt.datetime) -> NotificationQuerySet:
        return self.filter(sent_at__lt=cutoff)

    def created_between(self, start: dt.datetime, end: dt.datetime) -> NotificationQuerySet:
        return self.filter(created_at__gte=start, created_at__lt=end)


class Notification(models.Model):
    """An email to one recipient, sent in the background by `jobs.send_notification`."""

    recipient = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The procrastinate job that sends it; a plain id, because procrastinate owns its
    # table and may delete finished jobs.
    job_id = models.BigIntegerField(null=True, blank=True, editable=False)

    objects: ClassVar[NotificationQuerySet] = NotificationQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["sent_at"], name="example_notification_sent_at")]

    def __str__(self) -> str:
        return f"{self.subject} → {self.recipient}"

    def attach_job(self, job_id: int) -> None:
        self.job_id = job_id
        self.save(update_fields=["job_id"])

    def mark_sent(self, *, at: dt.datetime) -> None:
        self.sent_at = at
        self.save(update_fields=["sent_at"])


class Report(models.Model):
    """A delivery report over a period, built in the background by `jobs.build_report`."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"

    title = models.CharField(max_length=200)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    requested_at = models.DateTimeField(db_default=Now(), editable=False)
    generated_at = models.DateTimeField(null=True, blank=True)
    notifications_total = models.PositiveIntegerField(null=True, blank=True)
    notifications_sent = models.PositiveIntegerField(null=True, blank=True)
    job_id = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return self.title

    async def aattach_job(self, job_id: int) -> None:
        self.job_id = job_id
        await self.asave(update_fields=["job_id"])

    async def apublish(self, *, total: int, sent: int, at: dt.datetime) -> None:
        self.notifications_total = total
        self.notifications_sent = sent
        self.generated_at = at
        self.status = self.Status.READY
        await self.asave(
            update_fields=["notifications_total", "notifications_sent", "generated_at", "status"]
        )


class CommentQuerySet(models.QuerySet["Comment"]):
    def created_before(self, cutoff: dt.datetime) -> CommentQuerySet:
        return self.filter(created_at__lt=cutoff)


class Comment(models.Model):
    """User content with a lifetime: comments disappear after EXAMPLE_COMMENT_LIFETIME_HOURS.

    `jobs.delete_expired_comments` (periodic) and `manage.py delete_expired_comments`
    remove them.
    """

    author = models.CharField(max_length=100)
    body = models.TextField()
    created_at = models.DateTimeField(db_default=Now(), db_index=True)

    objects: ClassVar[CommentQuerySet] = CommentQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.author}: {self.body[:40]}"
