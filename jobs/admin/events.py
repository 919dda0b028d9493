"""The admin of procrastinate's events: newest first, by type and time, or one job's."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.expressions import Combinable
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from procrastinate.contrib.django.models import ProcrastinateEvent

from jobs import job_list
from jobs.admin.formatting import status_badge
from jobs.admin.queue_tables import QueueTableAdmin


@admin.register(ProcrastinateEvent)
class EventAdmin(QueueTableAdmin[ProcrastinateEvent]):
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
    def job_link(self, event: ProcrastinateEvent) -> SafeString:
        url = reverse("admin:procrastinate_procrastinatejob_change", args=[event.job_id])
        return format_html('<a href="{}">{}</a>', url, event.job_id)

    @admin.display(description="Task")
    def task(self, event: ProcrastinateEvent) -> str:
        return event.job.task_name

    @admin.display(description="Type")
    def type_label(self, event: ProcrastinateEvent) -> SafeString:
        return status_badge(event.type)
