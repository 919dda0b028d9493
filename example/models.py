"""The example's domain, which its tasks work on: notifications to send, reports to build,
comments with a lifetime, screened before they are published, and contacts imported from a
pasted list, one job per row in one batch.

These were models of `jobs` until the example became an app of its own; their tables and
rows came along (example/migrations/0001_initial.py).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import ClassVar

from django.conf import settings
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
    # The latest recount (`example.tasks.recount_report`, a django.tasks task): the id of its
    # TaskResult, which `get_result()` reads back. Empty: never recounted.
    recount_result_id = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return self.title

    async def aattach_job(self, job_id: int) -> None:
        self.job_id = job_id
        await self.asave(update_fields=["job_id"])

    async def aattach_recount(self, result_id: str) -> None:
        self.recount_result_id = result_id
        await self.asave(update_fields=["recount_result_id"])

    async def acount_notifications(self, *, at: dt.datetime) -> tuple[int, int]:
        """Count the notifications of the period, and those sent, and publish the figures
        as of `at`; returns (total, sent). Counting again later gives today's figures."""
        in_period = Notification.objects.created_between(self.period_start, self.period_end)
        total = await in_period.acount()
        sent = await in_period.filter(sent_at__isnull=False).acount()
        await self.apublish(total=total, sent=sent, at=at)
        return total, sent

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
    remove them. A new comment waits for `example.tasks.screen_comment` (a django.tasks
    task), which publishes it or holds it for a moderator.
    """

    # More links than this and a comment looks like spam: it is held, not published.
    MAX_LINKS = 2
    LINK = re.compile(r"https?://|www\.", re.IGNORECASE)

    class Status(models.TextChoices):
        PENDING = "pending"
        PUBLISHED = "published"
        HELD = "held"

    author = models.CharField(max_length=100)
    body = models.TextField()
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    screened_at = models.DateTimeField(null=True, blank=True)
    # The id of the TaskResult of the task that screens it (`get_result()` reads it back).
    task_result_id = models.CharField(max_length=64, blank=True, editable=False)

    objects: ClassVar[CommentQuerySet] = CommentQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.author}: {self.body[:40]}"

    def attach_task_result(self, result_id: str) -> None:
        self.task_result_id = result_id
        self.save(update_fields=["task_result_id"])

    def links(self) -> int:
        return len(self.LINK.findall(self.body))

    def screen(self, *, at: dt.datetime) -> None:
        """Publish the comment, or hold it when it carries more than MAX_LINKS links."""
        self.status = self.Status.HELD if self.links() > self.MAX_LINKS else self.Status.PUBLISHED
        self.screened_at = at
        self.save(update_fields=["status", "screened_at"])


class Contact(models.Model):
    """An address-book entry, written by the import of a pasted row
    (`example.tasks.import_contact`)."""

    # Stored lower-cased (example.imports.normalized_email): one contact per address.
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class ContactImport(models.Model):
    """Contacts pasted into the import page, imported in the background: one job per row,
    all in one batch of `jobs.workflows`, whose `on_finish` callback
    (`example.tasks.send_import_summary`) mails the summary to whoever started it."""

    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contact_imports"
    )
    # Where the summary goes: the address of the user who started it, as it was then.
    summary_to = models.EmailField()
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    # The batch of its rows' jobs (jobs.models.Batch); a plain id, as the jobs' ids are
    # elsewhere: the job system owns its rows.
    batch_id = models.BigIntegerField(null=True, blank=True, editable=False)
    summary_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Contact import #{self.pk}"

    def attach_batch(self, batch_id: int) -> None:
        self.batch_id = batch_id
        self.save(update_fields=["batch_id"])

    async def aattach_batch(self, batch_id: int) -> None:
        self.batch_id = batch_id
        await self.asave(update_fields=["batch_id"])

    def mark_summary_sent(self, *, at: dt.datetime) -> None:
        self.summary_sent_at = at
        self.save(update_fields=["summary_sent_at"])


class ContactImportRow(models.Model):
    """One pasted line of an import, as typed, and what became of it."""

    ERROR_LENGTH = 200

    class Status(models.TextChoices):
        PENDING = "pending"
        IMPORTED = "imported"
        # Its address is not one: its job failed, and the import counts it failed.
        INVALID = "invalid"

    contact_import = models.ForeignKey(ContactImport, on_delete=models.CASCADE, related_name="rows")
    # The line of the pasted text, counted from 1, so that the user can find it.
    line = models.PositiveIntegerField()
    name = models.CharField(max_length=100, blank=True)
    # As typed: checked by the row's job, not by the form.
    email = models.CharField(max_length=254)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=ERROR_LENGTH, blank=True)
    contact = models.ForeignKey(
        Contact, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["contact_import", "line"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact_import", "line"], name="example_contactimportrow_line"
            )
        ]

    def __str__(self) -> str:
        return f"Line {self.line} of import #{self.contact_import_id}"

    def mark_imported(self, contact: Contact) -> None:
        self.status = self.Status.IMPORTED
        self.contact = contact
        self.error = ""
        self.save(update_fields=["status", "contact", "error"])

    def mark_invalid(self, error: str) -> None:
        self.status = self.Status.INVALID
        self.error = error[: self.ERROR_LENGTH]
        self.save(update_fields=["status", "error"])
