"""`QueueTableAdmin`: the base of the admins of procrastinate's tables (jobs, events).

Read-only, and no query that reads the whole table on a page load: these tables hold
millions of rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import helpers
from django.contrib.admin.options import ShowFacets
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs import job_list
from jobs.admin.checked import CheckedListAdmin, M


class QueueTableAdmin(CheckedListAdmin[M]):
    """Read-only, and no query that reads the whole table on a page load."""

    paginator = job_list.CappedPaginator
    show_full_result_count = False  # an exact count of the whole table
    show_facets = ShowFacets.NEVER  # a count per filter choice
    # Rendering a row costs more than reading it: 50 keep a page well under 100 ms.
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator[Any]:
        paginator = job_list.CappedPaginator(queryset, per_page, orphans, allow_empty_first_page)
        paginator.noun = str(self.opts.verbose_name_plural)
        return paginator

    def action_checkbox(self, obj: M) -> SafeString:
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
