"""The admin of procrastinate's jobs: the list, the job page and the actions.

Read-only, fast on millions of jobs (jobs/job_list.py says how), and acting on jobs only
through procrastinate's API (jobs/job_actions.py).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast, Left, Length
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from procrastinate.contrib.django import admin as procrastinate_admin  # noqa: F401 (below)
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import job_actions, job_list, job_times, queue_stats
from jobs.access import MANAGE_JOBS
from jobs.admin.attempts import render_attempts
from jobs.admin.formatting import moment, plural, shortened, status_badge
from jobs.admin.loaders import JobChangeList, attach_events_and_results, events_of, result_of
from jobs.admin.queue_tables import QueueTableAdmin
from jobs.admin.timeline import render_timeline
from jobs.job_ids import parse_job_id
from jobs.job_status import held_by, row_is_current
from jobs.models import JobResult
from jobs.time_labels import duration_label, relative

# procrastinate's job admin, replaced below; its module is imported above, so it is
# registered by now whatever the order of INSTALLED_APPS (autodiscovery follows it).
admin.site.unregister(ProcrastinateJob)

ARGS_PREVIEW_CHARS = 120  # in the list
ARGS_PAGE_CHARS = 20_000  # on the job page; beyond, the arguments are shortened
VALUE_PAGE_CHARS = 20_000  # return values, likewise
# At most this many jobs per action: "select all" may cover millions.
ACTION_LIMIT = 1000
BOTH_PAGES = [admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM]


class RescheduleForm(forms.Form):
    run_at = forms.DateTimeField(
        label="Run at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=("In the site's time zone. A time in the past (up to a day) runs the jobs now."),
    )

    def clean_run_at(self) -> dt.datetime:
        # The one rule for a time that reaches a job row: bounded, and in UTC.
        try:
            return job_times.scheduled_time(self.cleaned_data["run_at"])
        except job_times.ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(ProcrastinateJob)
class JobAdmin(QueueTableAdmin[ProcrastinateJob]):
    # Few columns: each costs Django's admin about a millisecond per page of rows.
    list_display = ["id", "task", "status_and_outcome", "events", "arguments_preview"]
    list_display_links = ["id"]
    # Sorting by another column would sort the whole table.
    sortable_by = ["id"]
    ordering = ["-id"]
    list_filter = [
        job_list.StatusFilter,
        job_list.QueueFilter,
        job_list.TaskFilter,
        job_list.DeferredFilter,
    ]
    search_fields = ["id"]  # shows the search box; get_search_results does the work
    search_help_text = (
        "A job id, a task name (or its last part, e.g. build_report), a lock or queueing "
        "lock; end with * for the locks that begin with it (report-12*)."
    )
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "task_name",
                    "status_label",
                    "held_back",
                    "queue_name",
                    "priority",
                    "attempts",
                    "lock",
                    "queueing_lock",
                    "scheduled_at",
                    "abort_requested",
                    "worker_label",
                ]
            },
        ),
        ("Arguments", {"fields": ["arguments"]}),
        ("Timeline", {"fields": ["timeline"]}),
        ("Attempts", {"fields": ["attempts_table"]}),
        (
            "Result of the last attempt",
            {
                "fields": [
                    "result_status",
                    "result_timing",
                    "result_progress",
                    "result_value",
                    "result_error",
                ]
            },
        ),
    ]
    readonly_fields = [
        "status_label",
        "held_back",
        "worker_label",
        "arguments",
        "timeline",
        "attempts_table",
        "result_status",
        "result_timing",
        "result_progress",
        "result_value",
        "result_error",
    ]
    actions = ["retry_failed", "cancel_waiting", "request_abort", "reschedule"]

    def get_urls(self) -> list[URLPattern]:
        # The job system's staff pages that have no model of their own, in the admin's look
        # and login: routed here, under the job list, a site needs nothing but the admin's
        # own URLs for them. Before the model's patterns, whose `<object_id>/` takes any name.
        # Each page gets this admin site, so that a site's own AdminSite shows its own
        # header and links on them.
        from functools import partial

        from jobs import admin_views

        pages = [
            path(
                "periodic-tasks/",
                self.admin_site.admin_view(
                    partial(admin_views.periodic_tasks, admin_site=self.admin_site)
                ),
                name="jobs-admin-periodic-tasks",
            ),
            path(
                "run-command/",
                self.admin_site.admin_view(
                    partial(admin_views.run_command, admin_site=self.admin_site)
                ),
                name="jobs-admin-run-command",
            ),
        ]
        return pages + super().get_urls()

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProcrastinateJob]:
        # Arguments can be megabytes: the list reads their first characters only.
        return (
            super()
            .get_queryset(request)
            .defer("args")
            .annotate(args_preview=Left(Cast("args", TextField()), ARGS_PREVIEW_CHARS + 1))
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob], search_term: str
    ) -> tuple[QuerySet[ProcrastinateJob], bool]:
        found = job_list.search_jobs(queryset, search_term, tasks=queue_stats.known_tasks)
        return found, False

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> ProcrastinateJob | None:
        queryset = self.get_queryset(request).annotate(
            args_text=Left(Cast("args", TextField()), ARGS_PAGE_CHARS),
            args_chars=Length(Cast("args", TextField())),
        )
        job_id = parse_job_id(object_id)
        if job_id is None:
            return None
        try:
            job = queryset.get(pk=job_id)
        except ProcrastinateJob.DoesNotExist:
            return None
        attach_events_and_results([job], result_fields=None)
        # str(job) is procrastinate's call string, with every argument, and the page shows
        # it in its title and breadcrumbs: give it the arguments only when they are short.
        short = job.args_chars <= 200
        job.args = json.loads(job.args_text) if short else {"...": "see below"}
        return job

    def has_manage_permission(self, request: HttpRequest) -> bool:
        # The permission the job API's cancel, abort and retry endpoints require.
        return request.user.has_perm(MANAGE_JOBS)

    # --- Columns and fields -----------------------------------------------------------

    @admin.display(description="Task, queue")
    def task(self, job: ProcrastinateJob) -> SafeString:
        *modules, name = job.task_name.split(".")
        short = ".".join([*(module[:1] for module in modules), name])
        return format_html(
            '<span title="{}">{}</span> <span class="jobs-queue">{}</span>',
            job.task_name,
            short,
            job.queue_name,
        )

    @admin.display(description="Status, outcome")
    def status_and_outcome(self, job: ProcrastinateJob) -> SafeString:
        outcome = self.outcome(job)
        label = self.status_label(job)
        return label if outcome == "-" else format_html("{} · {}", label, outcome)

    @admin.display(description="Status")
    def status_label(self, job: ProcrastinateJob) -> SafeString:
        label = status_badge(job.status)
        if job.abort_requested and job.status == "doing":
            label = format_html("{} (abort requested)", label)
        return label

    @admin.display(description="Held back")
    def held_back(self, job: ProcrastinateJob) -> str:
        """Why a job that is due does not start: its queue is paused, or a limit is full
        ("waiting for limit `payments`: 3 of 3 running"); "-" for any other job."""
        if job.status != "todo":
            return "-"
        # The page keeps the arguments it shows; a limit's key is read from all of them.
        text: str = getattr(job, "args_text", "")
        total: int = getattr(job, "args_chars", ARGS_PAGE_CHARS + 1)
        if total <= ARGS_PAGE_CHARS:
            args = json.loads(text)
        else:
            args = ProcrastinateJob.objects.values_list("args", flat=True).get(pk=job.pk)
        reason = held_by(
            task_name=job.task_name,
            queue_name=job.queue_name,
            args=args,
            status=job.status,
            scheduled_at=job.scheduled_at,
        )
        return reason or "-"

    @admin.display(description="Deferred, last event")
    def events(self, job: ProcrastinateJob) -> str:
        events = events_of(job)
        first = next((e for e in events if e.type == "deferred"), None)
        deferred = moment(first.at if first else None)
        last = events[-1] if events else None
        if last is None or last.at is None or last is first:
            return deferred
        return f"{deferred}; {last.type} {relative(last.at, now=timezone.now())}"

    @admin.display(description="Outcome")
    def outcome(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None:
            return "-"
        if result.exception_type:
            return format_html(
                '<span title="{}">{}</span>',
                result.exception_message[:500],
                result.exception_type.rsplit(".", 1)[-1],
            )
        if result.duration is not None:
            return duration_label(result.duration.total_seconds())
        if result.progress is not None:
            return f"{result.progress:.0%}"
        return result.status

    @admin.display(description="Arguments")
    def arguments_preview(self, job: ProcrastinateJob) -> SafeString:
        text = getattr(job, "args_preview", "")
        if len(text) > ARGS_PREVIEW_CHARS:
            text = text[:ARGS_PREVIEW_CHARS] + "…"
        return format_html('<code class="jobs-args-preview">{}</code>', text)

    @admin.display(description="Worker")
    def worker_label(self, job: ProcrastinateJob) -> str:
        return str(job.worker_id) if job.worker_id else "-"

    @admin.display(description="Arguments")
    def arguments(self, job: ProcrastinateJob) -> SafeString:
        text: str = getattr(job, "args_text", "")
        total: int = getattr(job, "args_chars", len(text))
        if total <= ARGS_PAGE_CHARS:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            return shortened(text, ARGS_PAGE_CHARS * 2)
        return shortened(text, ARGS_PAGE_CHARS, total)

    @admin.display(description="Events")
    def timeline(self, job: ProcrastinateJob) -> SafeString:
        return render_timeline(events_of(job))

    @admin.display(description="Ended attempts")
    def attempts_table(self, job: ProcrastinateJob) -> SafeString:
        # Every attempt's row, whichever attempt the result row itself describes.
        result = result_of(job)
        return render_attempts(result.attempts_log if result is not None else [])

    def _result(self, job: ProcrastinateJob) -> JobResult | None:
        """The row of the job's current attempt, or None if that attempt has none (yet)."""
        result = result_of(job)
        if result is None:
            return None
        starts = sum(1 for event in events_of(job) if event.type == "started")
        return result if row_is_current(job.status, result.attempt, starts) else None

    @admin.display(description="Status")
    def result_status(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None:
            # A running attempt writes its row after a second (jobs/results.py).
            return "running" if job.status == "doing" else "not run yet"
        return f"{result.status} (attempt {result.attempt}, worker {result.worker_name or '?'})"

    @admin.display(description="Timing")
    def result_timing(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None:
            return "-"
        ended = moment(result.finished_at) if result.finished_at else "still running"
        took = f", {duration_label(result.duration.total_seconds())}" if result.duration else ""
        return f"started {moment(result.started_at)}, finished {ended}{took}"

    @admin.display(description="Progress")
    def result_progress(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or result.progress is None:
            return "-"
        return f"{result.progress:.0%} {result.progress_message}".strip()

    @admin.display(description="Return value")
    def result_value(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or result.status != JobResult.Status.SUCCEEDED:
            return "-"
        text = json.dumps(result.return_value, indent=2, default=str, ensure_ascii=False)
        return shortened(text, VALUE_PAGE_CHARS)

    @admin.display(description="Error")
    def result_error(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or not result.exception_type:
            return "-"
        return format_html(
            "<strong>{}</strong>: {}{}",
            result.exception_type,
            result.exception_message[:2000],
            shortened(result.traceback, VALUE_PAGE_CHARS),
        )

    # --- Actions, through procrastinate's job manager ---------------------------------

    @staticmethod
    def _selected_ids(queryset: QuerySet[ProcrastinateJob]) -> tuple[list[int], bool]:
        ids = list(queryset.order_by("-id").values_list("id", flat=True)[: ACTION_LIMIT + 1])
        return ids[:ACTION_LIMIT], len(ids) > ACTION_LIMIT

    def _report(
        self, request: HttpRequest, outcome: job_actions.Outcome, *, done: str, more: bool
    ) -> None:
        parts = [f"{done.capitalize()} {plural(len(outcome.done), 'job')}."]
        if outcome.cancelled:
            count = len(outcome.cancelled)
            parts.append(
                f"Of those, {plural(count, 'job')} had not started and "
                f"{'was' if count == 1 else 'were'} cancelled."
            )
        if outcome.replaced:
            pairs = ", ".join(f"{old} → {new}" for old, new in sorted(outcome.replaced.items()))
            parts.append(f"Waiting jobs were replaced by copies with new ids: {pairs}.")
        if outcome.skipped:
            counts = ", ".join(f"{n:,} {status}" for status, n in sorted(outcome.skipped.items()))
            parts.append(f"Left alone: {counts} ({outcome.refusal}).")
        if more:
            parts.append(f"Only the {ACTION_LIMIT:,} newest selected jobs were considered.")
        level = messages.SUCCESS if outcome.done else messages.WARNING
        self.message_user(request, " ".join(parts), level)

    @admin.action(description="Retry failed jobs", permissions=["manage"], location=BOTH_PAGES)
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]) -> None:
        ids, more = self._selected_ids(queryset)
        outcome = job_actions.retry_failed(ids)
        self._report(request, outcome, done="retried", more=more)

    @admin.action(
        description="Cancel jobs that have not started",
        permissions=["manage"],
        location=BOTH_PAGES,
    )
    def cancel_waiting(self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]) -> None:
        ids, more = self._selected_ids(queryset)
        outcome = job_actions.cancel_waiting(ids)
        self._report(request, outcome, done="cancelled", more=more)

    @admin.action(
        description="Abort jobs (cancel waiting ones, ask running ones to stop)",
        permissions=["manage"],
        location=BOTH_PAGES,
    )
    def request_abort(self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]) -> None:
        ids, more = self._selected_ids(queryset)
        outcome = job_actions.abort(ids)
        self._report(request, outcome, done="aborted", more=more)

    @admin.action(
        description="Reschedule failed or waiting jobs…",
        permissions=["manage"],
        location=BOTH_PAGES,
    )
    def reschedule(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]
    ) -> HttpResponse | None:
        ids, more = self._selected_ids(queryset)
        form = RescheduleForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            outcome = job_actions.reschedule(ids, at=form.cleaned_data["run_at"])
            self._report(request, outcome, done="rescheduled", more=more)
            return None
        if not form.is_bound:
            soon = timezone.localtime() + dt.timedelta(hours=1)
            form = RescheduleForm(initial={"run_at": soon.replace(second=0, microsecond=0)})
        context = {
            **self.admin_site.each_context(request),
            "title": "Reschedule jobs",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "job_ids": ids,
            "more": more,
            "limit": ACTION_LIMIT,
            "changelist_url": reverse("admin:procrastinate_procrastinatejob_changelist"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, "admin/procrastinate/procrastinatejob/reschedule.html", context
        )
