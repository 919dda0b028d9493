"""Admin for the job system's models, and for procrastinate's jobs and events.

procrastinate's own job admin is replaced: it counts, filters and searches in ways that
read the whole table on every page (see jobs/job_list.py), which takes seconds at millions
of jobs. The job and event admins here are read-only, stay fast at that scale, show a
job's timeline, arguments and result, and act on jobs only through procrastinate's API
(jobs/job_actions.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters, ShowFacets
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet, TextField
from django.db.models.expressions import Combinable
from django.db.models.functions import Cast, Left, Length
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from procrastinate.contrib.django import admin as procrastinate_admin  # noqa: F401 (below)
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from jobs import job_actions, job_list, job_times
from jobs.charts import relative
from jobs.models import ApiToken, JobResult
from jobs.results import row_is_current
from jobs.tokens import TokenError, validate_task_names


class CheckedListAdmin(admin.ModelAdmin):
    """An admin whose list takes only the filters and search it shows, and whose actions
    take only ids: anything else gets the list back with a message, never a server error
    (see `job_list.CheckedChangeList`)."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return job_list.CheckedChangeList

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            # The admin answers by redirecting to the list without its parameters; say why.
            why = str(exc) or "that page or filter does not exist."
            self.message_user(
                request, f"The list is shown without its filters: {why}", messages.ERROR
            )
            raise

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        # Django filters by the selected values as they come: one that is not an id fails
        # only when the action reads the rows, as a server error.
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                self.opts.pk.to_python(value)
            except ValidationError:
                self.message_user(
                    request,
                    f"Nothing was done: {value!r} is not the id of a row of this list.",
                    messages.ERROR,
                )
                return None
        return super().response_action(request, queryset, *args, **kwargs)


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["tasks", "revoked_at"]

    def clean_tasks(self) -> list[str]:
        tasks = self.cleaned_data["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(name, str) for name in tasks):
            raise forms.ValidationError('A JSON list of task names, e.g. ["jobs.build_report"].')
        try:
            return validate_task_names(tasks)
        except TokenError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(ApiToken)
class ApiTokenAdmin(CheckedListAdmin):
    """Tokens are created with `manage.py create_api_token` (the clear token is shown once
    there); here they are listed, limited to other tasks, or revoked. A revoked token
    stays revoked: its revocation time is read-only here, and `ApiToken.clean` refuses a
    change to it from any form."""

    form = ApiTokenForm
    list_display = ["name", "key_id", "tasks", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "key_id"]
    ordering = ["name"]
    readonly_fields = ["name", "key_id", "created_at", "last_used_at"]
    fields = ["name", "key_id", "tasks", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is not None and obj.stored_revoked_at() is not None:
            return [*self.readonly_fields, "revoked_at"]
        return list(self.readonly_fields)

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        now = timezone.now()
        tokens = list(ApiToken.objects.active().filter(pk__in=queryset))
        for token in tokens:
            token.revoke(at=now)
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)


# --- procrastinate's jobs and events: read-only, fast on millions of rows ----------------

# procrastinate's job admin, replaced below; its module is imported above, so it is
# registered by now whatever the order of INSTALLED_APPS (autodiscovery follows it).
admin.site.unregister(ProcrastinateJob)

ARGS_PREVIEW_CHARS = 120  # in the list
ARGS_PAGE_CHARS = 20_000  # on the job page; beyond, the arguments are shortened
VALUE_PAGE_CHARS = 20_000  # return values, likewise
# At most this many jobs per action: "select all" may cover millions.
ACTION_LIMIT = 1000
BOTH_PAGES = [admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM]
# Event types that make a job due, and those that end an attempt, to name the intervals.
_DUE_EVENTS = {"deferred", "scheduled", "deferred_for_retry", "retried"}
_END_EVENTS = {"succeeded", "failed", "aborted", "deferred_for_retry", "cancelled"}


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _moment(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def _shortened(text: str, limit: int, total: int | None = None) -> SafeString:
    """`text` in a scrolling <pre>, cut at `limit` characters with a note of what is left."""
    total = len(text) if total is None else total
    note = ""
    if total > limit:
        note = format_html(
            '<p class="jobs-shortened">Shortened: {} of {} characters shown.</p>',
            f"{limit:,}",
            f"{total:,}",
        )
    return format_html('<pre class="jobs-pre">{}</pre>{}', text[:limit], note)


def status_badge(status: str) -> SafeString:
    return format_html('<span class="jobs-status jobs-status-{}">{}</span>', status, status)


class QueueTableAdmin(CheckedListAdmin):
    """Read-only, and no query that reads the whole table on a page load."""

    paginator = job_list.CappedPaginator
    show_full_result_count = False  # an exact count of the whole table
    show_facets = ShowFacets.NEVER  # a count per filter choice
    # Rendering a row costs more than reading it: 50 keep a page well under 100 ms.
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        paginator = job_list.CappedPaginator(queryset, per_page, orphans, allow_empty_first_page)
        paginator.noun = str(self.opts.verbose_name_plural)
        return paginator

    def action_checkbox(self, obj: Any) -> SafeString:
        # Django labels the checkbox with str(obj) (for a job, procrastinate's call string
        # with every argument, read row by row) and renders a widget template per row.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="Select {}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            obj.pk,
        )

    class Media:
        css = {"all": ["jobs/admin.css"]}


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
class JobAdmin(QueueTableAdmin):
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
        "worker_label",
        "arguments",
        "timeline",
        "result_status",
        "result_timing",
        "result_progress",
        "result_value",
        "result_error",
    ]
    actions = ["retry_failed", "cancel_waiting", "request_abort", "reschedule"]

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
        found = job_list.search_jobs(queryset, search_term, tasks=job_list.queue_stats.known_tasks)
        return found, False

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> ProcrastinateJob | None:
        queryset = self.get_queryset(request).annotate(
            args_text=Left(Cast("args", TextField()), ARGS_PAGE_CHARS),
            args_chars=Length(Cast("args", TextField())),
        )
        try:
            job = queryset.get(pk=int(object_id))
        except (ProcrastinateJob.DoesNotExist, ValidationError, ValueError, OverflowError):
            return None
        attach_events_and_results([job], result_fields=None)
        # str(job) is procrastinate's call string, with every argument, and the page shows
        # it in its title and breadcrumbs: give it the arguments only when they are short.
        short = job.args_chars <= 200
        job.args = json.loads(job.args_text) if short else {"...": "see below"}
        return job

    def has_manage_permission(self, request: HttpRequest) -> bool:
        # The permission the job API's cancel, abort and retry endpoints require.
        return request.user.has_perm("jobs.manage_job")

    # --- Columns and fields -----------------------------------------------------------

    @admin.display(description="Task, queue")
    def task(self, job: ProcrastinateJob) -> str:
        *modules, name = job.task_name.split(".")
        short = ".".join([*(module[:1] for module in modules), name])
        return format_html(
            '<span title="{}">{}</span> <span class="jobs-queue">{}</span>',
            job.task_name,
            short,
            job.queue_name,
        )

    @admin.display(description="Status, outcome")
    def status_and_outcome(self, job: ProcrastinateJob) -> str:
        outcome = self.outcome(job)
        label = self.status_label(job)
        return label if outcome == "-" else format_html("{} · {}", label, outcome)

    @admin.display(description="Status")
    def status_label(self, job: ProcrastinateJob) -> str:
        label = status_badge(job.status)
        if job.abort_requested and job.status == "doing":
            label = format_html("{} (abort requested)", label)
        return label

    @staticmethod
    def _events(job: ProcrastinateJob) -> list[EventRow]:
        return getattr(job, "_jobs_events", [])

    @admin.display(description="Deferred, last event")
    def events(self, job: ProcrastinateJob) -> str:
        events = self._events(job)
        first = next((e for e in events if e.type == "deferred"), None)
        deferred = _moment(first.at if first else None)
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
            return _seconds(result.duration.total_seconds())
        if result.progress is not None:
            return f"{result.progress:.0%}"
        return result.status

    @admin.display(description="Arguments")
    def arguments_preview(self, job: ProcrastinateJob) -> str:
        text = getattr(job, "args_preview", "")
        if len(text) > ARGS_PREVIEW_CHARS:
            text = text[:ARGS_PREVIEW_CHARS] + "…"
        return format_html('<code class="jobs-args-preview">{}</code>', text)

    @admin.display(description="Worker")
    def worker_label(self, job: ProcrastinateJob) -> str:
        return str(job.worker_id) if job.worker_id else "-"

    @admin.display(description="Arguments")
    def arguments(self, job: ProcrastinateJob) -> str:
        text: str = getattr(job, "args_text", "")
        total: int = getattr(job, "args_chars", len(text))
        if total <= ARGS_PAGE_CHARS:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            return _shortened(text, ARGS_PAGE_CHARS * 2)
        return _shortened(text, ARGS_PAGE_CHARS, total)

    @admin.display(description="Events")
    def timeline(self, job: ProcrastinateJob) -> str:
        return render_timeline(self._events(job))

    def _result(self, job: ProcrastinateJob) -> JobResult | None:
        """The row of the job's current attempt, or None if that attempt has none (yet)."""
        result: JobResult | None = getattr(job, "_jobs_result", None)
        if result is None:
            return None
        starts = sum(1 for event in self._events(job) if event.type == "started")
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
        ended = _moment(result.finished_at) if result.finished_at else "still running"
        took = f", {_seconds(result.duration.total_seconds())}" if result.duration else ""
        return f"started {_moment(result.started_at)}, finished {ended}{took}"

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
        return _shortened(text, VALUE_PAGE_CHARS)

    @admin.display(description="Error")
    def result_error(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or not result.exception_type:
            return "-"
        return format_html(
            "<strong>{}</strong>: {}{}",
            result.exception_type,
            result.exception_message[:2000],
            _shortened(result.traceback, VALUE_PAGE_CHARS),
        )

    # --- Actions, through procrastinate's job manager ---------------------------------

    @staticmethod
    def _selected_ids(queryset: QuerySet[ProcrastinateJob]) -> tuple[list[int], bool]:
        ids = list(queryset.order_by("-id").values_list("id", flat=True)[: ACTION_LIMIT + 1])
        return ids[:ACTION_LIMIT], len(ids) > ACTION_LIMIT

    def _report(
        self, request: HttpRequest, outcome: job_actions.Outcome, *, done: str, why: str, more: bool
    ) -> None:
        parts = [f"{done.capitalize()} {_plural(len(outcome.done), 'job')}."]
        if outcome.replaced:
            pairs = ", ".join(f"{old} → {new}" for old, new in sorted(outcome.replaced.items()))
            parts.append(f"Waiting jobs were replaced by copies with new ids: {pairs}.")
        if outcome.skipped:
            counts = ", ".join(f"{n:,} {status}" for status, n in sorted(outcome.skipped.items()))
            parts.append(f"Left alone: {counts} ({why}).")
        if more:
            parts.append(f"Only the {ACTION_LIMIT:,} newest selected jobs were considered.")
        level = messages.SUCCESS if outcome.done else messages.WARNING
        self.message_user(request, " ".join(parts), level)

    @admin.action(description="Retry failed jobs", permissions=["manage"], location=BOTH_PAGES)
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]) -> None:
        ids, more = self._selected_ids(queryset)
        outcome = job_actions.retry_failed(ids)
        self._report(
            request, outcome, done="retried", why="only failed jobs can be retried", more=more
        )

    @admin.action(
        description="Cancel jobs that have not started",
        permissions=["manage"],
        location=BOTH_PAGES,
    )
    def cancel_waiting(self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]) -> None:
        ids, more = self._selected_ids(queryset)
        outcome = job_actions.cancel_waiting(ids)
        self._report(
            request,
            outcome,
            done="cancelled",
            why="only jobs that have not started can be cancelled",
            more=more,
        )

    @admin.action(
        description="Request abort of running jobs", permissions=["manage"], location=BOTH_PAGES
    )
    def request_abort(self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]) -> None:
        ids, more = self._selected_ids(queryset)
        outcome = job_actions.request_abort(ids)
        self._report(
            request,
            outcome,
            done="requested abort of",
            why="only running jobs can be aborted",
            more=more,
        )

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
            self._report(
                request,
                outcome,
                done="rescheduled",
                why="only failed and waiting jobs can be rescheduled",
                more=more,
            )
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


class EventRow(NamedTuple):
    type: str
    at: dt.datetime | None


# What the list shows of a result; the job page reads the whole row.
LIST_RESULT_FIELDS = (
    "job_id",
    "status",
    "attempt",
    "exception_type",
    "exception_message",
    "duration",
    "progress",
)


def attach_events_and_results(
    jobs: list[ProcrastinateJob], *, result_fields: Sequence[str] | None
) -> None:
    """Give each job its events (as light rows, in time order) and its result, in two
    queries: a page of jobs never costs a query per job."""
    ids = [job.pk for job in jobs]
    events: dict[int, list[EventRow]] = {job_id: [] for job_id in ids}
    rows = (
        ProcrastinateEvent.objects.filter(job_id__in=ids)
        .order_by("at", "id")
        .values_list("job_id", "type", "at")
    )
    for job_id, kind, at in rows:
        events[job_id].append(EventRow(kind, at))
    results = JobResult.objects.filter(job_id__in=ids)
    if result_fields is not None:
        results = results.only(*result_fields)
    by_job = {result.job_id: result for result in results}
    for job in jobs:
        job._jobs_events = events[job.pk]  # type: ignore[attr-defined]
        job._jobs_result = by_job.get(job.pk)  # type: ignore[attr-defined]


class JobChangeList(job_list.CheckedChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        jobs = list(self.result_list)
        attach_events_and_results(jobs, result_fields=LIST_RESULT_FIELDS)
        self.result_list = jobs


def render_timeline(events: Sequence[EventRow]) -> SafeString:
    """The job's events as a table: when, how long after the previous one (and what that
    interval was: waiting or running), how long after the job was deferred."""
    if not events:
        return format_html("{}", "-")
    first = events[0].at
    rows = []
    previous: EventRow | None = None
    for event in events:
        gap = since = ""
        if previous is not None and previous.at and event.at:
            seconds = (event.at - previous.at).total_seconds()
            meaning = ""
            if previous.type in _DUE_EVENTS and event.type == "started":
                meaning = "waited "
            elif previous.type == "started" and event.type in _END_EVENTS:
                meaning = "ran "
            gap = f"{meaning}{_seconds(max(0.0, seconds))}"
        if first and event.at:
            since = f"+{_seconds(max(0.0, (event.at - first).total_seconds()))}"
        rows.append((status_badge(event.type), _moment(event.at), gap, since))
        previous = event
    body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table class="jobs-timeline"><thead><tr><th>Event</th><th>At</th>'
        "<th>After the previous</th><th>Since the first</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        body,
    )


@admin.register(ProcrastinateEvent)
class EventAdmin(QueueTableAdmin):
    list_display = ["id", "job_link", "task", "type_label", "at"]
    list_display_links = None
    list_select_related = ["job"]
    sortable_by = ()
    list_filter = [job_list.EventTypeFilter, job_list.EventTimeFilter]
    search_fields = ["job__id"]  # shows the search box; get_search_results does the work
    search_help_text = "A job id: that job's events."
    actions = None

    def get_ordering(self, request: HttpRequest) -> list[str | Combinable]:
        # With a type chosen, newest first is the (type, at) index read backwards;
        # without, the primary key's order (ids follow time).
        if request.GET.get(job_list.EventTypeFilter.parameter_name):
            return ["-at", "-id"]
        return ["-id"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateEvent], search_term: str
    ) -> tuple[QuerySet[ProcrastinateEvent], bool]:
        return job_list.search_events(queryset, search_term), False

    @admin.display(description="Job")
    def job_link(self, event: ProcrastinateEvent) -> str:
        url = reverse("admin:procrastinate_procrastinatejob_change", args=[event.job_id])
        return format_html('<a href="{}">{}</a>', url, event.job_id)

    @admin.display(description="Task")
    def task(self, event: ProcrastinateEvent) -> str:
        return event.job.task_name

    @admin.display(description="Type")
    def type_label(self, event: ProcrastinateEvent) -> str:
        return status_badge(event.type)
