"""What the job pages read besides the jobs: their events and results, for a whole page of
jobs in two queries (never a query per job)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

from django.http import HttpRequest
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from jobs import job_list
from jobs.models import JobResult


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
    queries: a page of jobs never costs a query per job. `events_of` and `result_of`
    read them back."""
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


def events_of(job: ProcrastinateJob) -> list[EventRow]:
    """The events `attach_events_and_results` gave the job (none if it was not called)."""
    events: list[EventRow] = getattr(job, "_jobs_events", [])
    return events


def result_of(job: ProcrastinateJob) -> JobResult | None:
    """The result row `attach_events_and_results` gave the job, whichever attempt it is of."""
    result: JobResult | None = getattr(job, "_jobs_result", None)
    return result


class JobChangeList(job_list.CheckedChangeList):
    """The job list, each job of the page with its events and (part of) its result."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        jobs = list(self.result_list)
        attach_events_and_results(jobs, result_fields=LIST_RESULT_FIELDS)
        self.result_list = jobs
