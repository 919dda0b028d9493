"""The batches' admin (`jobs.models.Batch`): batches and chains of jobs (jobs/workflows.py),
read-only, with their progress, and two actions on their jobs.

The list shows each batch's state and how many of its jobs ended; a batch's page shows what
`workflows.batch_status` gives (the API's answer too): the counts, the properties, the
callbacks and a chain's steps, and the batch's jobs a page at a time, each linked to its
job page with its return value or error.

A batch's row belongs to the database's trigger (migration `jobs.0010`), which counts its
jobs as they end: nothing here writes it. "Change" permission on a batch means acting on its
jobs, through `workflows.cancel_rest` and `workflows.retry_failed` (procrastinate's cancel
and retry), whose ends the trigger counts as any other.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters, ShowFacets
from django.core.paginator import Paginator
from django.db.models import F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import job_list, workflows
from jobs.access import may_view_jobs
from jobs.admin.checked import CheckedListAdmin
from jobs.admin.formatting import moment, plural, shortened, status_badge
from jobs.job_ids import parse_job_id
from jobs.models import Batch

# A batch's page shows its jobs this many at a time (a batch may hold 100,000).
JOBS_PER_PAGE = workflows.PAGE_SIZE
JOBS_PAGE = re.compile(r"[0-9]{1,9}")  # (str.isdigit takes "²", which int() refuses)
# What a job's row shows of its return value or error; its job page shows all of it.
OUTCOME_CHARS = 200
PROPERTIES_CHARS = 20_000
# Each selected batch may hold 100,000 jobs to cancel or retry: "select all" over every
# batch is a slip, not a wish.
ACTION_LIMIT = 100
BOTH_PAGES = [admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM]

# `workflows.batch_state` in SQL, for the list's filter (the tests hold the two together).
_ENDED = Q(finished_at__isnull=False)
_ALL_SUCCEEDED = Q(succeeded=F("total"))
STATES = {
    "running": Q(finished_at__isnull=True),
    "succeeded": _ENDED & _ALL_SUCCEEDED,
    "failed": _ENDED & ~_ALL_SUCCEEDED & Q(failed__gt=0),
    "cancelled": _ENDED & ~_ALL_SUCCEEDED & Q(failed=0),
}


class StateFilter(admin.SimpleListFilter):
    """The batches in one state of `workflows.batch_state`."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("running", "Running"),
            ("succeeded", "Succeeded"),
            ("failed", "Failed (a job failed)"),
            ("cancelled", "Cancelled"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if value not in STATES:
            raise IncorrectLookupParameters(f"state: {value!r} is not a state of a batch.")
        return queryset.filter(STATES[value])


# --- A batch's page ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    id: int
    url: str | None  # the job's admin page: None once the job is deleted, or not allowed
    task: str | None  # None once the job is deleted
    status: str  # procrastinate's, or "deleted"
    ended_as: str | None  # how the batch counted it, once it ended
    step: int | None  # a chain's step, from 1
    value: str | None  # its return value, shortened, if it succeeded
    error: str | None  # its error's type and message, shortened


@dataclass(frozen=True)
class CallbackRow:
    role: str
    task: str
    job_id: int | None
    url: str | None
    status: str | None  # the callback job's, "deleted", or None before it is deferred


@dataclass(frozen=True)
class StepRow:
    number: int  # from 1
    task: str
    result_as: str | None
    job: JobRow | None  # on this page of jobs
    started: bool


@dataclass(frozen=True)
class BatchPage:
    """What a batch's page shows besides its row: `workflows.batch_status`, as rows."""

    status: dict[str, Any]
    callbacks: list[CallbackRow]
    steps: list[StepRow]
    jobs: list[JobRow]
    number: int
    pages: int
    show_jobs: bool  # links to the job pages, return values and errors

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.status["counts"]
        return counts

    @property
    def properties(self) -> SafeString:
        text = json.dumps(self.status["properties"], indent=2, ensure_ascii=False, sort_keys=True)
        return shortened(text, PROPERTIES_CHARS)


def short(text: str, limit: int = OUTCOME_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def batches(count: int) -> str:
    return f"{count:,} batch{'' if count == 1 else 'es'}"


def page_number(text: str | None) -> int | None:
    """The page `?page=` names: None if it names none (then the first is shown)."""
    if text is None:
        return 1
    return int(text) if JOBS_PAGE.fullmatch(text) and int(text) >= 1 else None


def batch_page(
    batch_id: int, *, number: int, job_url: Callable[[int], str], show_jobs: bool
) -> BatchPage | None:
    """Page `number` of the batch's jobs with its status (None if the batch is gone, or the
    page is past the last). `job_url(job_id)` is the job's admin page."""
    status = workflows.batch_status(batch_id, page=number, page_size=JOBS_PER_PAGE)
    if status is None:
        return None
    count = status["jobs"]["count"]
    pages = max(1, math.ceil(count / JOBS_PER_PAGE))
    if number > pages:
        return None
    jobs = [
        _job_row(job, job_url=job_url, show_jobs=show_jobs) for job in status["jobs"]["results"]
    ]
    callback_ids = [c["job_id"] for c in status["callbacks"].values() if c["job_id"] is not None]
    # Retention deletes callbacks' jobs as any other: a missing one shows as deleted.
    statuses = dict(
        ProcrastinateJob.objects.filter(id__in=callback_ids).values_list("id", "status")
    )
    callbacks = []
    for role, callback in status["callbacks"].items():
        job_id = callback["job_id"]
        state = None if job_id is None else statuses.get(job_id, "deleted")
        url = job_url(job_id) if show_jobs and state not in (None, "deleted") else None
        callbacks.append(CallbackRow(role, callback["task"], job_id, url, state))
    by_step = {job.step: job for job in jobs if job.step is not None}
    steps = [
        StepRow(
            number=position + 1,
            task=step["task"],
            result_as=step["result_as"],
            job=by_step.get(position + 1),
            started=position < count,
        )
        for position, step in enumerate(status["steps"])
    ]
    return BatchPage(status, callbacks, steps, jobs, number, pages, show_jobs)


def _job_row(job: dict[str, Any], *, job_url: Callable[[int], str], show_jobs: bool) -> JobRow:
    value = error = None
    if show_jobs and job["status"] == "succeeded":
        value = short(json.dumps(job["return_value"], ensure_ascii=False, default=str))
    if show_jobs and job["error"] is not None:
        error = short(f"{job['error']['type']}: {job['error']['message']}")
    deleted = job["status"] == "deleted"
    return JobRow(
        id=job["id"],
        url=job_url(job["id"]) if show_jobs and not deleted else None,
        task=job["task"],
        status=job["status"],
        ended_as=job["ended_as"],
        step=None if job["step"] is None else job["step"] + 1,
        value=value,
        error=error,
    )


# --- The admin --------------------------------------------------------------------------


@admin.register(Batch)
class BatchAdmin(CheckedListAdmin[Batch]):
    list_display = ["id", "label", "kind", "state", "progress", "created", "finished"]
    list_display_links = ["id", "label"]
    list_filter = ["kind", StateFilter]
    search_fields = ["description"]  # shows the search box; get_search_results does the work
    search_help_text = "Part of a description, or a batch's id."
    ordering = ["-created_at", "-pk"]
    # The other columns have no index to sort by.
    sortable_by = ["id", "created"]
    list_per_page = 50
    # Batches are never deleted by retention: their table grows. Counted up to a cap, and
    # no count per filter choice.
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    actions = ["cancel_rest", "retry_failed"]
    fields = ["id", "label", "kind", "state", "progress", "created", "finished"]
    readonly_fields = ["id", "label", "kind", "state", "progress", "created", "finished"]

    class Media:
        css = {"all": ["jobs/admin.css", "jobs/batches.css"]}

    # --- Permissions ------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Batches are made by code (workflows.defer_batch, defer_chain) or the JSON API.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Batch | None = None) -> bool:
        # "Change" is the actions' permission (asked without a batch); a batch's page is
        # read-only for everyone, as the trigger alone writes its row: a form's save would
        # write back counts read before jobs that ended meanwhile.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Batch | None = None) -> bool:
        # No deletion from the admin. A running batch deleted would end its jobs uncounted
        # and never run its callbacks; a finished one opens again when one of its failed
        # jobs is retried (here or on the job's page), and deleted it would not. And
        # Django's confirmation page lists every membership, 100,000 rows for a big batch.
        return False

    # --- The list ---------------------------------------------------------------------

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator[Any]:
        paginator = job_list.CappedPaginator(queryset, per_page, orphans, allow_empty_first_page)
        paginator.noun = "batches"
        return paginator

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Batch], search_term: str
    ) -> tuple[QuerySet[Batch], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        found = Q(description__icontains=term)
        # A batch's id is a bigint, as a job's is: the same check keeps a number past it
        # out of the query.
        number = parse_job_id(term.removeprefix("#"))
        if number is not None:
            found |= Q(pk=number)
        return queryset.filter(found), False

    @admin.display(description="Description")
    def label(self, batch: Batch) -> str:
        return batch.description or "(no description)"

    @admin.display(description="State")
    def state(self, batch: Batch) -> SafeString:
        return status_badge(workflows.batch_state(batch))

    @admin.display(description="Jobs ended")
    def progress(self, batch: Batch) -> SafeString:
        ended = batch.succeeded + batch.failed + batch.cancelled
        return format_html(
            '{}/{}<br><span class="jobs-batch-counts">{} succeeded · {} failed · '
            "{} cancelled</span>",
            f"{ended:,}",
            f"{batch.total:,}",
            f"{batch.succeeded:,}",
            f"{batch.failed:,}",
            f"{batch.cancelled:,}",
        )

    @admin.display(description="Created", ordering="created_at")
    def created(self, batch: Batch) -> str:
        return moment(batch.created_at)

    @admin.display(description="Finished")
    def finished(self, batch: Batch) -> str:
        return moment(batch.finished_at)

    # --- A batch's page ---------------------------------------------------------------

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Batch | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["batch_page"] = self._batch_page(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _batch_page(self, request: HttpRequest, batch: Batch) -> BatchPage:
        asked = request.GET.get("page")
        number = page_number(asked)
        show_jobs = may_view_jobs(request.user)
        found = None
        if number is not None:
            found = batch_page(batch.pk, number=number, job_url=self._job_url, show_jobs=show_jobs)
        if found is None:
            found = batch_page(batch.pk, number=1, job_url=self._job_url, show_jobs=show_jobs)
            if found is None:  # deleted by code since get_object read it
                raise Http404("No such batch.")
            self.message_user(
                request,
                f"There is no page {short(asked or '', 20)!r} of this batch's jobs "
                f"(pages 1 to {found.pages}): the first is shown.",
                messages.WARNING,
            )
        return found

    def _job_url(self, job_id: int) -> str:
        return reverse(
            f"{self.admin_site.name}:procrastinate_procrastinatejob_change", args=[job_id]
        )

    # --- Actions, through jobs.workflows ----------------------------------------------

    def _selected(self, request: HttpRequest, queryset: QuerySet[Batch]) -> list[Batch] | None:
        selected = list(queryset.order_by("pk")[: ACTION_LIMIT + 1])
        if len(selected) > ACTION_LIMIT:
            self.message_user(
                request,
                f"Nothing was done: these actions take at most {ACTION_LIMIT} batches at once.",
                messages.ERROR,
            )
            return None
        return selected

    @admin.action(
        description="Cancel the rest (waiting jobs; ask running ones to stop)",
        permissions=["change"],
        location=BOTH_PAGES,
    )
    def cancel_rest(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        selected = self._selected(request, queryset)
        if selected is None:
            return
        cancelled = abort_requested = 0
        for batch in selected:
            outcome = workflows.cancel_rest(batch.pk)
            cancelled += outcome.cancelled
            abort_requested += outcome.abort_requested
            if outcome.cancelled or outcome.abort_requested:
                self.log_change(
                    request,
                    batch,
                    f"Cancelled the rest: {plural(outcome.cancelled, 'waiting job')} "
                    f"cancelled, {plural(outcome.abort_requested, 'running job')} asked to stop.",
                )
        if not cancelled and not abort_requested:
            self.message_user(
                request,
                f"Nothing to cancel: no job of the {batches(len(selected))} is waiting or running.",
                messages.WARNING,
            )
            return
        self.message_user(
            request,
            f"Cancelled {plural(cancelled, 'waiting job')} and asked "
            f"{plural(abort_requested, 'running job')} to stop, in "
            f"{batches(len(selected))}. They count as cancelled when they end "
            "(a running task that never checks for an abort runs to its end).",
            messages.SUCCESS,
        )

    @admin.action(description="Retry failed jobs", permissions=["change"], location=BOTH_PAGES)
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        selected = self._selected(request, queryset)
        if selected is None:
            return
        retried = 0
        skipped: dict[str, int] = {}
        for batch in selected:
            outcome = workflows.retry_failed(batch.pk)
            retried += len(outcome.done)
            for status, count in outcome.skipped.items():
                skipped[status] = skipped.get(status, 0) + count
            if outcome.done:
                self.log_change(
                    request, batch, f"Retried {plural(len(outcome.done), 'failed job')}."
                )
        parts = [f"Retried {plural(retried, 'failed job')} of {batches(len(selected))}."]
        if retried:
            parts.append("Their batches are open again until these jobs end.")
        if skipped:
            counts = ", ".join(f"{n:,} {status}" for status, n in sorted(skipped.items()))
            parts.append(f"Left alone: {counts} (only failed jobs can be retried).")
        self.message_user(
            request, " ".join(parts), messages.SUCCESS if retried else messages.WARNING
        )
