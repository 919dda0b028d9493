"""Operations that write data and defer (or enqueue) the job that processes it, in one
transaction.

Views call these; so can shells and other code. If anything fails after the defer, the
transaction rolls back the data and the job row together: procrastinate's Django connector
writes the job through Django's own connection.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.tasks import Task, TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist

from example import imports, tasks
from example.models import Comment, ContactImport, ContactImportRow, Notification, Report
from jobs import workflows
from jobs.transaction import async_atomic

# Who may use the example pages (example/views.py): the overview (the forms and the recent
# activity) needs the notifications' and reports' view permissions, each form also its
# model's add permission, a recount the reports' change permission. The comments show only
# to users who may view them, and posting one needs that too (a refused form shows the page
# again). The demo user `run_site` makes in development gets exactly these.
OVERVIEW_PERMISSIONS = ("example.view_notification", "example.view_report")
VIEW_COMMENT_PERMISSION = "example.view_comment"
SEND_NOTIFICATION_PERMISSIONS = (*OVERVIEW_PERMISSIONS, "example.add_notification")
BUILD_REPORT_PERMISSIONS = (*OVERVIEW_PERMISSIONS, "example.add_report")
# A recount changes an existing report's figures.
RECOUNT_REPORT_PERMISSIONS = (*OVERVIEW_PERMISSIONS, "example.change_report")
POST_COMMENT_PERMISSIONS = (*OVERVIEW_PERMISSIONS, VIEW_COMMENT_PERMISSION, "example.add_comment")
# The contact imports' page (the user's own imports, each with its progress) needs the
# imports' view permission; starting one also their add permission.
VIEW_IMPORTS_PERMISSIONS = ("example.view_contactimport",)
START_IMPORT_PERMISSIONS = (*VIEW_IMPORTS_PERMISSIONS, "example.add_contactimport")
EXAMPLE_PERMISSIONS = (
    *OVERVIEW_PERMISSIONS,
    "example.add_notification",
    "example.add_report",
    "example.change_report",
    VIEW_COMMENT_PERMISSION,
    "example.add_comment",
    *START_IMPORT_PERMISSIONS,
)
# The jobs the example's pages show: their own tasks' only, never other tasks' arguments. A
# procrastinate task's stored name is its `name`, a django.tasks task's its dotted path.
EXAMPLE_TASK_NAMES = (
    tasks.send_notification.name,
    tasks.build_report.name,
    tasks.screen_comment.module_path,
    tasks.recount_report.module_path,
)
DEMO_USERNAME = "demo"


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


def post_comment(*, author: str, body: str) -> Comment:
    """Create a comment and enqueue the task that screens it (sync ORM, django.tasks'
    `enqueue`: the backend writes the job through Django's connection, in this transaction)."""
    with transaction.atomic():
        comment = Comment.objects.create(author=author, body=body)
        result = tasks.screen_comment.enqueue(comment_id=comment.pk)
        comment.attach_task_result(result.id)
    return comment


def start_contact_import(
    *, user: User, summary_to: str, contacts: list[imports.PastedContact]
) -> ContactImport:
    """Create an import and its rows, and defer one job per row as one batch whose
    `on_finish` callback mails the summary to `summary_to` (sync ORM, `defer_batch`): all of
    it in one transaction, or nothing."""
    with transaction.atomic():
        contact_import = ContactImport.objects.create(started_by=user, summary_to=summary_to)
        rows = ContactImportRow.objects.bulk_create(imports.new_rows(contact_import, contacts))
        batch = workflows.defer_batch(
            [workflows.job(tasks.import_contact, row_id=row.pk) for row in rows],
            on_finish=workflows.job(tasks.send_import_summary, import_id=contact_import.pk),
            **_import_batch_options(contact_import),
        )
        contact_import.attach_batch(batch.pk)
    return contact_import


async def astart_contact_import(
    *, user: User, summary_to: str, contacts: list[imports.PastedContact]
) -> ContactImport:
    """`start_contact_import` from async code (async ORM, `adefer_batch` inside
    `async_atomic`): one transaction too."""
    async with async_atomic():
        contact_import = await ContactImport.objects.acreate(started_by=user, summary_to=summary_to)
        rows = await ContactImportRow.objects.abulk_create(
            imports.new_rows(contact_import, contacts)
        )
        batch = await workflows.adefer_batch(
            [workflows.job(tasks.import_contact, row_id=row.pk) for row in rows],
            on_finish=workflows.job(tasks.send_import_summary, import_id=contact_import.pk),
            **_import_batch_options(contact_import),
        )
        await contact_import.aattach_batch(batch.pk)
    return contact_import


def _import_batch_options(contact_import: ContactImport) -> dict[str, Any]:
    # The description and properties the batch admin and the callbacks' `batch` show.
    return {
        "description": f"Contact import #{contact_import.pk}",
        "properties": {"import_id": contact_import.pk},
    }


class ReportNotReady(Exception):
    """The report is still being built: there is nothing to recount yet."""


async def arecount_report(*, report_id: int) -> Report:
    """Enqueue a recount of a built report and keep its result id on the report (async ORM,
    django.tasks' `aenqueue`, in one transaction). Raises Report.DoesNotExist, or
    ReportNotReady while the report is still being built (its build counts anyway)."""
    async with async_atomic():
        # Locked, so that a recount asked for twice at once records one result id after
        # the other, each with its own job.
        report = await Report.objects.select_for_update().aget(pk=report_id)
        if report.status != Report.Status.READY:
            raise ReportNotReady(f"Report #{report.pk} is still being built.")
        result = await tasks.recount_report.aenqueue(report_id=report.pk)
        await report.aattach_recount(result.id)
    return report


def task_result(task: Task, result_id: str) -> TaskResult | None:
    """The result of one of `task`'s runs, read through Django's API (`get_result`); None
    when there is none: never enqueued, or its job was deleted since (retention)."""
    if not result_id:
        return None
    try:
        return task.get_result(result_id)
    except TaskResultDoesNotExist:
        return None


def reset_demo_user(*, username: str = DEMO_USERNAME) -> str:
    """Create or update the local demo user and return its new password.

    The user may log in through the admin's login page (which admits staff only) and holds
    EXAMPLE_PERMISSIONS and nothing else, and an address if it had none (`demo@example.com`,
    for the summaries of its contact imports); each call gives it a fresh random password,
    which `run_site` prints. A known user whose password is printed has no place in production:
    refused there (a site that does not say it is not in production counts as production).
    """
    if getattr(settings, "PRODUCTION", True):
        raise ImproperlyConfigured("The demo user is for development only, never in production.")
    wanted = Q()
    for name in EXAMPLE_PERMISSIONS:
        app_label, codename = name.split(".")
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    permissions = list(Permission.objects.filter(wanted))
    if len(permissions) != len(EXAMPLE_PERMISSIONS):
        raise ImproperlyConfigured(
            "The example's permissions do not exist yet: apply the migrations first."
        )
    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        user, _ = get_user_model().objects.get_or_create(username=username)
        # Exactly the example's rights, whatever the user had before.
        user.is_active = True
        user.is_staff = True
        user.is_superuser = False
        # Somewhere to mail an import's summary (the console backend prints it).
        user.email = user.email or f"{username}@example.com"
        user.set_password(password)
        user.save()
        user.user_permissions.set(permissions)
    return password
