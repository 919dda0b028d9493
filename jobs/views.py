"""The demo page: create data from a sync view and an async view, each deferring a job."""

from __future__ import annotations

import datetime as dt

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import services
from jobs.forms import NotificationForm, ReportForm
from jobs.models import Notification, Report

RECENT = 10


def _activity_context() -> dict[str, object]:
    return {
        "notifications": Notification.objects.all()[:RECENT],
        "reports": Report.objects.all()[:RECENT],
        "jobs": ProcrastinateJob.objects.order_by("-id")[:RECENT],
    }


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "notification_form": NotificationForm(),
        "report_form": ReportForm(),
        **_activity_context(),
    }
    return render(request, "jobs/home.html", context)


@require_GET
def activity(request: HttpRequest) -> HttpResponse:
    """The recent-activity fragment the page reloads every few seconds."""
    return render(request, "jobs/_activity.html", _activity_context())


@require_POST
def create_notification(request: HttpRequest) -> HttpResponse:
    """Sync view: create a notification and defer its sending in one transaction."""
    form = NotificationForm(request.POST)
    if not form.is_valid():
        context = {"notification_form": form, "report_form": ReportForm(), **_activity_context()}
        return render(request, "jobs/home.html", context, status=400)
    notification = services.queue_notification(**form.cleaned_data)
    messages.success(
        request, f"Notification #{notification.pk} saved; job #{notification.job_id} deferred."
    )
    return redirect("jobs:home")


@require_POST
async def create_report(request: HttpRequest) -> HttpResponse:
    """Async view: create a report and defer its building in one transaction."""
    form = ReportForm(request.POST)
    if not form.is_valid():
        context = {
            "notification_form": NotificationForm(),
            "report_form": form,
            **await sync_to_async(_activity_context)(),
        }
        return await sync_to_async(render)(request, "jobs/home.html", context, status=400)
    end = timezone.now()
    report = await services.aqueue_report(
        title=form.cleaned_data["title"],
        period_start=end - dt.timedelta(hours=form.cleaned_data["hours"]),
        period_end=end,
    )
    await sync_to_async(messages.success)(
        request, f"Report #{report.pk} saved; job #{report.job_id} deferred."
    )
    return redirect("jobs:home")
