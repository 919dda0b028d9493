"""The example pages: create data from sync and async views, each deferring a job in the same
transaction (procrastinate's `defer` or django.tasks' `enqueue`), or a batch of jobs
(`jobs.workflows.defer_batch`: the contact imports).

They let a user mail any address with any text, so every one of them is guarded by
`example_page`: it exists only while the EXAMPLE_PAGES setting is on (404 otherwise; off in
production unless switched on), needs a login (the admin's login page) and the example
models' permissions (services.*_PERMISSIONS; 403 without them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.models import AnonymousUser
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from procrastinate.contrib.django.models import ProcrastinateJob

from example import imports, services, tasks
from example.forms import CommentForm, ContactImportForm, NotificationForm, ReportForm
from example.models import Comment, ContactImport, Notification, Report
from jobs import access, workflows
from jobs.models import Batch

RECENT = 10

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


def example_page(*permissions: str) -> Callable[[ViewT], ViewT]:
    """Guard an example view, sync or async: the switch, then the login, then `permissions`.

    The switch comes first so that a site with the pages off answers 404 to everyone, as if
    the routes did not exist, rather than sending visitors to a login page.
    """

    def decorate(view: ViewT) -> ViewT:
        guarded = login_required(permission_required(permissions, raise_exception=True)(view))
        if iscoroutinefunction(view):

            @wraps(view)
            async def async_page(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                _require_example_pages()
                return await guarded(request, *args, **kwargs)

            return cast(ViewT, async_page)

        @wraps(view)
        def page(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            _require_example_pages()
            return guarded(request, *args, **kwargs)

        return cast(ViewT, page)

    return decorate


def _require_example_pages() -> None:
    # Read at each request (not when the URLs load) so the setting is the only switch; a
    # site that does not define it has no example pages.
    if not getattr(settings, "EXAMPLE_PAGES", False):
        raise Http404("The example pages are switched off (EXAMPLE_PAGES).")


def _activity_context(user: access.User) -> dict[str, object]:
    # The django.tasks tasks' status, read through Django's API (`get_result`) with the
    # result id each row keeps: one lookup per row, on RECENT rows at most.
    reports = [
        (report, services.task_result(tasks.recount_report, report.recount_result_id))
        for report in Report.objects.all()[:RECENT]
    ]
    # Comments only for those who may view them: the page itself needs no more than it did
    # before comments were shown.
    comments = (
        [
            (comment, services.task_result(tasks.screen_comment, comment.task_result_id))
            for comment in Comment.objects.all()[:RECENT]
        ]
        if user.has_perm(services.VIEW_COMMENT_PERMISSION)
        else None
    )
    return {
        "notifications": Notification.objects.all()[:RECENT],
        "reports": reports,
        "comments": comments,
        # The example's own jobs only: other tasks' arguments (commands, recipients of
        # other sites' mail) are not the example's to show.
        "jobs": ProcrastinateJob.objects.filter(task_name__in=services.EXAMPLE_TASK_NAMES).order_by(
            "-id"
        )[:RECENT],
    }


def _page_context(user: access.User, **forms: Form) -> dict[str, object]:
    """The page's context for `user`: its forms (`forms` replaces the blank ones, e.g. by a
    refused one with its errors) and the recent activity."""
    blank = {
        "notification_form": NotificationForm(),
        "report_form": ReportForm(),
        "comment_form": CommentForm(),
    }
    return {**blank, **forms, **_activity_context(user)}


@example_page(*services.OVERVIEW_PERMISSIONS)
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "example/home.html", _page_context(request.user))


@example_page(*services.OVERVIEW_PERMISSIONS)
@require_GET
def activity(request: HttpRequest) -> HttpResponse:
    """The recent-activity fragment the page reloads every few seconds."""
    return render(request, "example/_activity.html", _activity_context(request.user))


@example_page(*services.SEND_NOTIFICATION_PERMISSIONS)
@require_POST
def create_notification(request: HttpRequest) -> HttpResponse:
    """Sync view: create a notification and defer its sending in one transaction."""
    form = NotificationForm(request.POST)
    if not form.is_valid():
        context = _page_context(request.user, notification_form=form)
        return render(request, "example/home.html", context, status=400)
    notification = services.queue_notification(**form.cleaned_data)
    messages.success(
        request, f"Notification #{notification.pk} saved; job #{notification.job_id} deferred."
    )
    return redirect("example:home")


@example_page(*services.BUILD_REPORT_PERMISSIONS)
@require_POST
async def create_report(request: HttpRequest) -> HttpResponse:
    """Async view: create a report and defer its building in one transaction."""
    form = ReportForm(request.POST)
    if not form.is_valid():
        user = await request.auser()
        context = await sync_to_async(_page_context)(user, report_form=form)
        return await sync_to_async(render)(request, "example/home.html", context, status=400)
    end = timezone.now()
    report = await services.aqueue_report(
        title=form.cleaned_data["title"],
        period_start=end - dt.timedelta(hours=form.cleaned_data["hours"]),
        period_end=end,
    )
    await sync_to_async(messages.success)(
        request, f"Report #{report.pk} saved; job #{report.job_id} deferred."
    )
    return redirect("example:home")


@example_page(*services.RECOUNT_REPORT_PERMISSIONS)
@require_POST
async def recount_report(request: HttpRequest, report_id: int) -> HttpResponse:
    """Async view: enqueue a recount of a built report (django.tasks' `aenqueue`), keeping
    its result id on the report in the same transaction."""
    try:
        report = await services.arecount_report(report_id=report_id)
    except Report.DoesNotExist:
        raise Http404(f"No report #{report_id}.") from None
    except services.ReportNotReady as error:
        await sync_to_async(messages.info)(request, f"{error} Nothing was enqueued.")
        return redirect("example:home")
    await sync_to_async(messages.success)(
        request, f"Report #{report.pk}: recount enqueued (result {report.recount_result_id})."
    )
    return redirect("example:home")


@example_page(*services.POST_COMMENT_PERMISSIONS)
@require_POST
def create_comment(request: HttpRequest) -> HttpResponse:
    """Sync view: create a comment and enqueue its screening (django.tasks' `enqueue`) in one
    transaction."""
    form = CommentForm(request.POST)
    if not form.is_valid():
        context = _page_context(request.user, comment_form=form)
        return render(request, "example/home.html", context, status=400)
    comment = services.post_comment(**form.cleaned_data)
    messages.success(
        request,
        f"Comment #{comment.pk} saved; its screening enqueued (result {comment.task_result_id}).",
    )
    return redirect("example:home")


# --- Contact imports: one job per pasted row, in one batch with a summary mail -------------


def _address_of(user: AbstractBaseUser | AnonymousUser) -> str:
    """The user's email address, where an import's summary goes ("" if none)."""
    if isinstance(user, AnonymousUser):
        return ""
    return str(getattr(user, user.get_email_field_name(), "") or "")


def _imports_context(
    user: AbstractBaseUser | AnonymousUser, form: ContactImportForm | None = None
) -> dict[str, object]:
    """The imports page's context: its form (a refused one with its errors), and the user's
    own recent imports with their batches' states (two queries)."""
    own = list(ContactImport.objects.filter(started_by=user.pk)[:RECENT])
    batches = Batch.objects.in_bulk([item.batch_id for item in own if item.batch_id is not None])
    return {
        "import_form": form or ContactImportForm(summary_to=_address_of(user)),
        "imports": [
            (
                item,
                workflows.batch_state(batches[item.batch_id])
                if item.batch_id in batches
                else "unknown",
            )
            for item in own
        ],
    }


def _own_import(user: AbstractBaseUser | AnonymousUser, import_id: int) -> ContactImport:
    # Another user's import is not found: its rows are what that user pasted.
    contact_import = ContactImport.objects.filter(pk=import_id, started_by=user.pk).first()
    if contact_import is None:
        raise Http404(f"No contact import #{import_id} of yours.")
    return contact_import


@example_page(*services.VIEW_IMPORTS_PERMISSIONS)
@require_GET
def contact_imports(request: HttpRequest) -> HttpResponse:
    return render(request, "example/imports.html", _imports_context(request.user))


@example_page(*services.START_IMPORT_PERMISSIONS)
@require_POST
def start_contact_import(request: HttpRequest) -> HttpResponse:
    """Sync view: create the import and its rows and defer one job per row as one batch, in
    one transaction."""
    form = ContactImportForm(request.POST, summary_to=_address_of(request.user))
    if not form.is_valid():
        context = _imports_context(request.user, form)
        return render(request, "example/imports.html", context, status=400)
    contact_import = services.start_contact_import(
        user=request.user,  # type: ignore[arg-type]  # a logged-in user (example_page)
        summary_to=form.summary_to,
        contacts=form.cleaned_data["contacts"],
    )
    messages.success(request, _started(contact_import, form))
    return redirect("example:contact_import", import_id=contact_import.pk)


@example_page(*services.START_IMPORT_PERMISSIONS)
@require_POST
async def astart_contact_import(request: HttpRequest) -> HttpResponse:
    """Async view: the same, with `adefer_batch` inside `async_atomic`."""
    user = await request.auser()
    form = ContactImportForm(request.POST, summary_to=_address_of(user))
    if not form.is_valid():
        context = await sync_to_async(_imports_context)(user, form)
        return await sync_to_async(render)(request, "example/imports.html", context, status=400)
    contact_import = await services.astart_contact_import(
        user=user,  # type: ignore[arg-type]  # a logged-in user (example_page)
        summary_to=form.summary_to,
        contacts=form.cleaned_data["contacts"],
    )
    await sync_to_async(messages.success)(request, _started(contact_import, form))
    return redirect("example:contact_import", import_id=contact_import.pk)


def _started(contact_import: ContactImport, form: ContactImportForm) -> str:
    rows = len(form.cleaned_data["contacts"])
    return (
        f"Import #{contact_import.pk} saved; {rows} job{'s' if rows != 1 else ''} deferred as "
        f"batch #{contact_import.batch_id}. The summary goes to {contact_import.summary_to}."
    )


@example_page(*services.VIEW_IMPORTS_PERMISSIONS)
@require_GET
def contact_import(request: HttpRequest, import_id: int) -> HttpResponse:
    """One import's progress; the page polls `contact_import_progress` until it is done."""
    found = _own_import(request.user, import_id)
    context = {"contact_import": found, "progress": imports.progress(found)}
    return render(request, "example/import.html", context)


@example_page(*services.VIEW_IMPORTS_PERMISSIONS)
@require_GET
def contact_import_progress(request: HttpRequest, import_id: int) -> JsonResponse:
    """The import's progress as JSON (`example.imports.progress`)."""
    return JsonResponse(imports.progress(_own_import(request.user, import_id)))
