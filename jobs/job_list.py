"""The admin's job and event lists on tables of millions of rows.

Django's changelist counts every matching row on each page load, offers a filter's choices
from a DISTINCT over the whole table, and searches with ILIKE '%term%': each of those reads
the whole table. Here instead:

- `CappedPaginator` counts at most `max_pages` pages of rows (a LIMITed subquery) and says
  "more than N", with the planner's estimate of the whole table when nothing is filtered;
  pages beyond the cap are not offered, so OFFSET stays small too;
- the filters' choices are fixed (statuses, event types) or come from the task registry and
  a loose index scan of the names in the table (queues and tasks: one probe per name);
- searching matches a job id, a task name, a lock or queueing lock (or the beginning of
  one, asked with a trailing "*"), each through an index;
- a date range becomes a range of ids: ids grow with time, and the `(type, at)` index on
  events finds the first job (or event) after a date in one probe. Jobs deferred by
  transactions that straddle a boundary may land on either side of it.

And every parameter is checked before a query runs (`CheckedChangeList`): a list takes only
the filters it shows, with text and times PostgreSQL can compare, and answers anything else
with its unfiltered page and a message, never with a server error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters, ModelAdmin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from jobs import job_statuses, queue_stats
from jobs.job_ids import parse_job_id
from jobs.postgres_values import text_problem

if TYPE_CHECKING:
    # django-stubs makes Paginator generic in what it pages; Django's class cannot be
    # subscripted at runtime. This one pages any rows (jobs, events, a plain list).
    _Paginator = Paginator[object]
else:
    _Paginator = Paginator


class CappedPaginator(_Paginator):
    """A paginator that counts at most `max_pages` pages of rows."""

    # 20 pages of 50: enough to browse; beyond, filtering finds jobs faster than paging,
    # and counting (up to 1,001 rows of a filter that an index covers only in part, e.g.
    # status and task) stays a few milliseconds.
    max_pages = 20
    noun = "rows"

    @cached_property
    def count(self) -> int:
        limit = self.per_page * self.max_pages
        if isinstance(self.object_list, QuerySet):
            # Only ids, unordered: the page's annotations and order do not change the count.
            counted: int = self.object_list.values("pk").order_by()[: limit + 1].count()
        else:
            counted = len(self.object_list)
        self.more = counted > limit
        return min(counted, limit)

    @cached_property
    def estimate(self) -> int | None:
        """About how many rows in all, when there are more than the cap and no filter."""
        queryset = self.object_list
        if not self.more or not isinstance(queryset, QuerySet) or queryset.query.where:
            return None
        return queue_stats.estimated_rows(queryset.model._meta.db_table)

    @property
    def label(self) -> str:
        count = self.count  # sets `more`
        if not self.more:
            return f"{count:,} {self.noun}"
        text = f"More than {count:,} {self.noun}"
        if self.estimate is not None:
            text += f" (about {self.estimate:,} in all)"
        return text


# --- Date ranges as id ranges ----------------------------------------------------------

_RELATIVE = re.compile(r"^-(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_moment(value: str, *, now: dt.datetime) -> dt.datetime:
    """An ISO date or date-time (naive ones in the site's time zone), or a time relative
    to now such as "-15m", "-24h", "-7d"; in UTC. ValueError if it is none of those, or if
    it is out of Python's range once in UTC.

    The result is in UTC because PostgreSQL refuses the offsets beyond ±15:59 that Python
    reads (`+23:59`); a time outside year 1 to 9999 once in UTC is a clear error here.
    """
    value = value.strip()
    try:
        if match := _RELATIVE.match(value):
            return now.astimezone(dt.UTC) - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is None:
                raise ValueError(f"{value!r} is not a date")
            moment = dt.datetime.combine(day, dt.time())
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None


def first_job_deferred_since(moment: dt.datetime) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job_id FROM procrastinate_events WHERE type = 'deferred' AND at >= %s "
            "ORDER BY at LIMIT 1",
            [moment],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def first_event_since(moment: dt.datetime) -> int | None:
    # One probe per event type. "scheduled" events are left out: their time is the one a
    # job was scheduled for, not when the row was written, so their ids do not follow it.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT min(x.id) FROM unnest(%(types)s::procrastinate_job_event_type[]) AS t(type)
            CROSS JOIN LATERAL (
                SELECT e.id FROM procrastinate_events e
                WHERE e.type = t.type AND e.at >= %(moment)s ORDER BY e.at LIMIT 1
            ) x
            """,
            {
                "types": [kind for kind in job_statuses.EVENT_TYPES if kind != "scheduled"],
                "moment": moment,
            },
        )
        row = cursor.fetchone()
    return row[0] if row else None


class IdRangeFilter(admin.ListFilter):
    """Rows of a period, from `<prefix>_from` to `<prefix>_to` (either may be missing),
    turned into an id range by `first_id_since`. Offers presets and a form."""

    template = "admin/jobs/id_range_filter.html"
    prefix = ""
    presets = (("Last 15 minutes", "-15m"), ("Last hour", "-1h"), ("Last 24 hours", "-24h"))
    older_preset = ("Older than 7 days", "-7d")

    def __init__(
        self,
        request: HttpRequest,
        params: dict[str, Any],
        model: type[Model],
        model_admin: ModelAdmin[Any],
    ) -> None:
        super().__init__(request, params, model, model_admin)
        self.values: dict[str, str] = {}
        for name in self.expected_parameters():
            if name in params:
                raw = params.pop(name)
                self.values[name] = raw[-1] if isinstance(raw, list) else raw
        self.other_parameters = {
            key: value[-1] if isinstance(value, list) else value
            for key, value in request.GET.items()
            if key not in self.expected_parameters() and key != "p"
        }

    @property
    def from_parameter(self) -> str:
        return f"{self.prefix}_from"

    @property
    def to_parameter(self) -> str:
        return f"{self.prefix}_to"

    @property
    def from_value(self) -> str:
        return self.values.get(self.from_parameter, "")

    @property
    def to_value(self) -> str:
        return self.values.get(self.to_parameter, "")

    def expected_parameters(self) -> list[str | None]:
        return [self.from_parameter, self.to_parameter]

    def has_output(self) -> bool:
        return True

    def first_id_since(self, moment: dt.datetime) -> int | None:
        raise NotImplementedError

    def bounds(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        now = timezone.now()
        try:
            start, end = (
                parse_moment(self.values[name], now=now) if self.values.get(name) else None
                for name in (self.from_parameter, self.to_parameter)
            )
        except ValueError as exc:
            raise IncorrectLookupParameters(str(exc)) from exc
        return start, end

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        start, end = self.bounds()
        if start is not None:
            low = self.first_id_since(start)
            if low is None:
                return queryset.none()
            queryset = queryset.filter(id__gte=low)
        if end is not None:
            high = self.first_id_since(end)
            if high is not None:
                queryset = queryset.filter(id__lt=high)
        return queryset

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        current = (self.values.get(self.from_parameter), self.values.get(self.to_parameter))
        options: list[tuple[str, str | None, str | None]] = [("Any time", None, None)]
        options += [(label, value, None) for label, value in self.presets]
        options.append((self.older_preset[0], None, self.older_preset[1]))
        for label, start, end in options:
            yield {
                "selected": current == (start, end),
                "query_string": changelist.get_query_string(
                    {
                        name: value
                        for name, value in ((self.from_parameter, start), (self.to_parameter, end))
                        if value
                    },
                    remove=[self.from_parameter, self.to_parameter],
                ),
                "display": label,
            }


class DeferredFilter(IdRangeFilter):
    title = "deferred"
    prefix = "deferred"

    def first_id_since(self, moment: dt.datetime) -> int | None:
        return first_job_deferred_since(moment)


class EventTimeFilter(IdRangeFilter):
    title = "time"
    prefix = "at"

    def first_id_since(self, moment: dt.datetime) -> int | None:
        return first_event_since(moment)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # The id range keeps the scan short; the exact times keep the result exact.
        queryset = super().queryset(request, queryset)
        start, end = self.bounds()
        if start is not None:
            queryset = queryset.filter(at__gte=start)
        if end is not None:
            queryset = queryset.filter(at__lt=end)
        return queryset


class UtcDateTimeListFilter(admin.DateFieldListFilter):
    """Django's date filter for a date-time field, its bounds read by `parse_moment`.

    Django passes them to the database as typed, where an offset beyond ±15:59 is an
    error; here they arrive in UTC, or the list says what is wrong with them.
    """

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        now = timezone.now()
        for name in (self.lookup_kwarg_since, self.lookup_kwarg_until):
            values = self.used_parameters.get(name)
            if isinstance(values, list):  # one value per repetition of the parameter
                try:
                    self.used_parameters[name] = [
                        parse_moment(str(value), now=now) for value in values
                    ]
                except ValueError as exc:
                    raise IncorrectLookupParameters(f"{name}: {exc}.") from exc
        return super().queryset(request, queryset)


# --- Filters with fixed or registry choices ---------------------------------------------


class ChoiceFilter(admin.SimpleListFilter):
    """Equality on `field`, with choices from `options()`; unknown values match nothing
    (an unknown enum value would otherwise be a database error)."""

    field = ""
    free_values = False  # accept values outside the choices (tasks of other deployments)

    def options(self) -> list[str]:
        raise NotImplementedError

    @cached_property
    def _options(self) -> list[str]:
        return self.options()

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(value, value) for value in self._options]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not self.free_values and value not in self._options:
            return queryset.none()
        return queryset.filter(**{self.field: value})


class StatusFilter(ChoiceFilter):
    title = "status"
    parameter_name = "status"
    field = "status"

    def options(self) -> list[str]:
        return list(job_statuses.STATUSES)


class QueueFilter(ChoiceFilter):
    title = "queue"
    parameter_name = "queue"
    field = "queue_name"
    free_values = True

    def options(self) -> list[str]:
        return queue_stats.known_queues()


class TaskFilter(ChoiceFilter):
    title = "task"
    parameter_name = "task"
    field = "task_name"
    free_values = True

    def options(self) -> list[str]:
        return queue_stats.known_tasks()


class EventTypeFilter(ChoiceFilter):
    title = "type"
    parameter_name = "type"
    field = "type"

    def options(self) -> list[str]:
        return list(job_statuses.EVENT_TYPES)


# --- Search -----------------------------------------------------------------------------


def search_jobs(
    queryset: QuerySet[Any], term: str, *, tasks: Callable[[], list[str]]
) -> QuerySet[Any]:
    """Jobs matching `term`: a task name (in full, or its last dotted part), else a job id,
    a lock or queueing lock, or an exact task name absent from `tasks()`. A term ending
    with "*" matches the locks that begin with it.

    A known task is searched alone: OR-ing it with the other columns would make PostgreSQL
    gather all of that task's jobs before sorting them. Locks match exactly unless asked:
    a short prefix can match a good part of the table.
    """
    term = term.strip()
    if not term:
        return queryset
    if term.endswith("*") and term.rstrip("*"):
        prefix = term.rstrip("*")
        return queryset.filter(Q(lock__startswith=prefix) | Q(queueing_lock__startswith=prefix))
    named = [name for name in tasks() if term in (name, name.rsplit(".", 1)[-1])]
    if named:
        return queryset.filter(task_name__in=named)
    condition = Q(lock=term) | Q(queueing_lock=term) | Q(task_name=term)
    if (job_id := parse_job_id(term)) is not None:
        condition |= Q(id=job_id)
    return queryset.filter(condition)


def search_events(queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
    """Events of the job whose id is `term`."""
    term = term.strip()
    if not term:
        return queryset
    job_id = parse_job_id(term)
    if job_id is None:
        return queryset.none()
    return queryset.filter(job_id=job_id)


# --- Parameters the lists accept ---------------------------------------------------------


class CheckedChangeList(ChangeList):
    """A changelist that takes only the filters it shows, with text PostgreSQL can hold.

    Django's changelist filters by any parameter that no list filter takes, as long as
    `ModelAdmin.lookup_allowed` agrees, and by default it agrees to every lookup on the
    model's own fields: `?args__icontains=x` reads the whole table on every page load,
    `?lock__regex=[` fails in the database with a server error. Here a parameter that no
    filter of the page takes is refused, and so is a value with a NUL character (the
    database refuses those). Refusals raise `IncorrectLookupParameters`, which the admin
    answers with the list without its parameters (and `CheckedListAdmin` says why).
    """

    def get_filters(self, request: HttpRequest) -> tuple[Any, ...]:
        for name, values in self.get_filters_params().items():
            for value in values:
                if problem := text_problem(value):
                    raise IncorrectLookupParameters(f"{name}: {problem}.")
                # Django asks again below, but answers a refusal with a bare 400 page.
                if not self.model_admin.lookup_allowed(name, value, request):
                    raise IncorrectLookupParameters(not_offered(name))
        specs, has_filters, remaining, duplicates, active = super().get_filters(request)
        # A date hierarchy turns its parameters into lookups of its own.
        hierarchy = {f"{self.date_hierarchy}__gte", f"{self.date_hierarchy}__lt"}
        if unknown := sorted(set(remaining) - (hierarchy if self.date_hierarchy else set())):
            raise IncorrectLookupParameters(not_offered(unknown[0]))
        return specs, has_filters, remaining, duplicates, active


def not_offered(name: str) -> str:
    return f"{name!r} is not a filter of this list; use the filters and the search it shows."
