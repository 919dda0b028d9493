"""The stored schedules' admin (`jobs.models.Schedule`): where operators add, change, pause
and run the recurring jobs that live in the database.

The list shows each schedule in words with its next and last run, and marks a schedule
whose task the code no longer has; below it, read-only, the periodic tasks declared in the
code (`@app.periodic`), so one page shows everything that runs on its own. A schedule's page
lists the jobs it deferred, newest first, a page at a time.

Every rule is the model's (`Schedule.clean`, jobs/schedules.py) and shows as a message on
its field; the actions call `jobs.schedules` and are recorded in the admin's history.
"""

from __future__ import annotations

import functools
import json
import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from procrastinate.contrib.django import app as procrastinate_app

from jobs import schedules
from jobs.access import may_view_jobs
from jobs.admin.checked import CheckedListAdmin
from jobs.admin.formatting import moment, plural
from jobs.conf import MAX_API_PRIORITY
from jobs.models import Schedule, ScheduleRun
from jobs.periodic import periodic_overview
from jobs.postgres_values import PG_INT_MAX, PG_INT_MIN, text_problem

# A schedule's page shows its runs this many at a time; a schedule that runs every second
# has tens of thousands.
RUNS_PER_PAGE = 50
# ...and pages up to this one (an OFFSET walks the index up to there).
RUNS_MAX_PAGE = 200
RUNS_PAGE = re.compile(r"[0-9]{1,6}")  # (str.isdigit takes "²", which int() refuses)
# "Run now" defers one job per selected schedule: "select all" over thousands of schedules
# is a slip, not a wish.
RUN_NOW_LIMIT = 100
BOTH_PAGES = [admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM]

if TYPE_CHECKING:
    ScheduleModelForm = forms.ModelForm[Schedule]
else:
    ScheduleModelForm = forms.ModelForm  # not subscriptable at run time


def task_names() -> list[str]:
    """The tasks a schedule may run: procrastinate's, and the Django tasks created so far
    (each registers under its path as its module is imported: apps' tasks.py at start)."""
    return sorted(dict.keys(procrastinate_app.tasks))


@functools.cache
def time_zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


class DatalistInput(forms.TextInput):
    """A text input that offers `options()` as the user types (an HTML datalist), and still
    takes any text: a Django task's path need not be imported yet to be valid."""

    def __init__(self, list_id: str, options: Callable[[], Iterable[str]]) -> None:
        super().__init__(attrs={"list": list_id, "autocomplete": "off", "class": "vTextField"})
        self.list_id = list_id
        self.options = options

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        field = super().render(name, value, attrs, renderer)
        options = format_html_join("", '<option value="{}">', ((o,) for o in self.options()))
        return format_html('{}<datalist id="{}">{}</datalist>', field, self.list_id, options)


class KwargsField(forms.JSONField):
    """Django's JSON field, without its server errors: `json.loads` raises more than the
    JSONDecodeError Django catches (ValueError for an integer of more than 4,300 digits,
    RecursionError for arrays nested thousands deep), when it checks and when it shows the
    text again."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except (ValueError, RecursionError) as error:
            raise ValidationError(
                f"Not JSON this site can read: {error}.", code="invalid"
            ) from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except (ValueError, RecursionError):
            return InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        text = super().prepare_value(value)
        # A string with a lone surrogate ("\ud800" typed as JSON) cannot go out in UTF-8.
        if isinstance(text, str) and text_problem(text):
            return json.dumps(value, cls=self.encoder)
        return text


class ScheduleForm(ScheduleModelForm):
    # The bounds the model checks, given to the form fields: a number beyond them then gets
    # one message, not one from the column's range and another from the rule.
    interval = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=PG_INT_MAX,
        help_text=Schedule._meta.get_field("interval").help_text,
    )
    priority = forms.IntegerField(
        required=False,
        min_value=PG_INT_MIN,
        max_value=MAX_API_PRIORITY,
        help_text=Schedule._meta.get_field("priority").help_text,
    )

    class Meta:
        model = Schedule
        fields = [
            "description",
            "task",
            "kwargs",
            "enabled",
            "cron",
            "interval",
            "interval_unit",
            "once_at",
            "timezone",
            "start_at",
            "end_at",
            "catch_up",
            "queue",
            "priority",
        ]
        field_classes = {"kwargs": KwargsField}
        labels = {"kwargs": "Keyword arguments", "cron": "Cron line", "timezone": "Time zone"}
        widgets = {
            "task": DatalistInput("jobs-schedule-tasks", task_names),
            "timezone": DatalistInput("jobs-schedule-time-zones", time_zone_names),
            "kwargs": forms.Textarea(attrs={"rows": 4, "class": "vLargeTextField"}),
        }
        help_texts = {
            "task": "A registered task (the list offers them): procrastinate's task name, "
            "or a Django task's path.",
            "timezone": 'The cron line\'s time zone, e.g. "Europe/Paris". The times below '
            "are typed in the site's time zone.",
        }

    def add_error(self, field: str | None, error: Any) -> None:
        # The model's checks (Schedule.clean) run on the instance, which keeps the old value
        # of a field whose text did not parse ("Enter a valid JSON"): what they say about
        # that old value would sit under the field's own error and mislead.
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            kept = {name: e for name, e in error.error_dict.items() if name not in self.errors}
            if not kept:
                return
            error = ValidationError(kept)
        super().add_error(field, error)


class BrokenFilter(admin.SimpleListFilter):
    """Schedules whose task the code does not have (they defer nothing)."""

    title = "task in the code"
    parameter_name = "broken"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Found"), ("yes", "Missing (broken)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if value not in ("yes", "no"):
            raise IncorrectLookupParameters(f"broken: {value!r} is neither yes nor no.")
        # One DISTINCT over the schedules' task names, then a look-up per name in the code.
        names = Schedule.objects.order_by().values_list("task", flat=True).distinct()
        missing = [name for name in names if schedules.is_broken(Schedule(task=name))]
        if value == "yes":
            return queryset.filter(task__in=missing)
        return queryset.exclude(task__in=missing)


@dataclass(frozen=True)
class RunsPage:
    """One page of a schedule's runs, newest first."""

    runs: list[ScheduleRun]
    number: int
    has_older: bool
    show_jobs: bool  # links to the job pages and the jobs' statuses


def runs_page(schedule: Schedule, *, page: str | None, show_jobs: bool) -> RunsPage:
    """The runs of `schedule` on `page` (1 is the newest; a page that is not a number up to
    RUNS_MAX_PAGE gives the first)."""
    number = int(page) if page and RUNS_PAGE.fullmatch(page) else 1
    number = number if 1 <= number <= RUNS_MAX_PAGE else 1
    start = (number - 1) * RUNS_PER_PAGE
    runs = list(
        ScheduleRun.objects.filter(schedule=schedule)
        .select_related("job")
        .only("schedule_id", "due_at", "deferred_at", "by_hand", "requested_by", "job__status")
        .order_by("-deferred_at", "-pk")[start : start + RUNS_PER_PAGE + 1]
    )
    has_older = len(runs) > RUNS_PER_PAGE and number < RUNS_MAX_PAGE
    return RunsPage(runs[:RUNS_PER_PAGE], number, has_older, show_jobs)


@admin.register(Schedule)
class ScheduleAdmin(CheckedListAdmin[Schedule]):
    form = ScheduleForm
    list_display = ["name", "when", "next_run", "last_run", "run_count", "enabled"]
    list_filter = ["enabled", BrokenFilter]
    search_fields = ["task", "description"]
    search_help_text = "Part of a task name or of a description."
    ordering = ["task", "pk"]
    list_per_page = 50
    actions = ["enable_schedules", "disable_schedules", "run_now"]
    readonly_fields = [
        "when",
        "task_status",
        "next_run_at",
        "last_run_at",
        "run_count",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["description", "task", "kwargs", "enabled"]}),
        (
            "When",
            {
                "description": "Exactly one of a cron line, an interval or a single time.",
                "fields": [
                    "cron",
                    "interval",
                    "interval_unit",
                    "once_at",
                    "timezone",
                    "start_at",
                    "end_at",
                    "catch_up",
                ],
            },
        ),
        ("Job options", {"fields": ["queue", "priority"]}),
        (
            "Runs",
            {
                "fields": [
                    "when",
                    "task_status",
                    "next_run_at",
                    "last_run_at",
                    "run_count",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]

    class Media:
        css = {"all": ["jobs/admin.css"]}

    # --- Pages ------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The schedules declared in the code, under the stored ones: one page for all that
        # runs on its own. Their last job and its outcome only for those who may see jobs.
        context = {
            **(extra_context or {}),
            "periodic_overview": periodic_overview(now=timezone.now()),
            "show_jobs": may_view_jobs(request.user),
        }
        return super().changelist_view(request, context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Schedule | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.pk is not None:
            show_jobs = may_view_jobs(request.user)
            context["runs_page"] = runs_page(
                obj, page=request.GET.get("runs_page"), show_jobs=show_jobs
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(
        self, request: HttpRequest, obj: Schedule, form: forms.ModelForm[Schedule], change: bool
    ) -> None:
        if not change:
            obj.save()
            return
        with transaction.atomic():
            # The scheduler moves the next run on and counts runs in rows it holds (and
            # skips held rows). Held here too, the next run is read after a tick that ends
            # meanwhile, and the count and last run, which the form does not have, are
            # left alone: a full save would undo that tick's work, and run it again.
            list(Schedule.objects.select_for_update().filter(pk=obj.pk).values_list("pk"))
            obj.save(update_fields=[*form.fields, "updated_at"])

    # --- Columns and fields -----------------------------------------------------------

    @admin.display(description="Schedule, task", ordering="task")
    def name(self, schedule: Schedule) -> SafeString:
        # The description (the link to the page), the task below it, and a mark when the
        # task is not in the code.
        broken = SafeString()
        if schedules.is_broken(schedule):
            broken = format_html(
                ' <strong class="jobs-broken" title="{}">broken</strong>',
                "This task is not in the code: the schedule defers nothing.",
            )
        return format_html(
            '{}<br><code class="jobs-task">{}</code>{}',
            schedule.description or "(no description)",
            schedule.task,
            broken,
        )

    @admin.display(description="Next run", ordering="next_run_at")
    def next_run(self, schedule: Schedule) -> str:
        return moment(schedule.next_run_at)

    @admin.display(description="Last run", ordering="last_run_at")
    def last_run(self, schedule: Schedule) -> str:
        return moment(schedule.last_run_at)

    @admin.display(description="When")
    def when(self, schedule: Schedule) -> str:
        return schedules.describe(schedule)

    @admin.display(description="Task in the code")
    def task_status(self, schedule: Schedule) -> SafeString:
        if schedules.is_broken(schedule):
            return format_html(
                '<strong class="jobs-broken">Broken:</strong> no task named <code>{}</code> '
                "in this site's code (renamed or removed). The schedule defers nothing "
                "until the task is back or the schedule names another.",
                schedule.task,
            )
        return SafeString("Found")

    # --- Actions ----------------------------------------------------------------------

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        changed, refused = [], []
        for schedule in queryset.order_by("pk"):
            try:
                if schedules.enable(schedule):
                    self.log_change(request, schedule, "Enabled.")
                    changed.append(schedule)
            except schedules.ScheduleError as error:
                schedule.enabled = False  # as stored: enable() changed nothing
                refused.append(f"“{schedule}”: {error}")
        self.message_user(request, f"Enabled {plural(len(changed), 'schedule')}.")
        if refused:
            self.message_user(request, "Left as they were: " + " ".join(refused), messages.ERROR)

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        changed = 0
        for schedule in queryset.order_by("pk"):
            if schedules.set_enabled(schedule, False):
                self.log_change(request, schedule, "Disabled.")
                changed += 1
        self.message_user(request, f"Disabled {plural(changed, 'schedule')}.")

    @admin.action(
        description="Run now (defer one job of each)", permissions=["change"], location=BOTH_PAGES
    )
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        selected = list(queryset.order_by("pk")[: RUN_NOW_LIMIT + 1])
        if len(selected) > RUN_NOW_LIMIT:
            self.message_user(
                request,
                f"Nothing was run: run now takes at most {RUN_NOW_LIMIT} schedules at once.",
                messages.ERROR,
            )
            return None
        deferred = []
        for schedule in selected:
            try:
                run = schedules.run_now(schedule.pk, requested_by=request.user.get_username())
            except schedules.ScheduleError as error:
                self.message_user(
                    request, f"“{schedule}”: nothing deferred. {error}", messages.ERROR
                )
                continue
            except Schedule.DoesNotExist:  # deleted meanwhile
                self.message_user(
                    request, f"“{schedule}”: nothing deferred, it was deleted.", messages.ERROR
                )
                continue
            self.log_change(request, schedule, f"Ran now: deferred job #{run.job_id}.")
            deferred.append((schedule, run.job_id))
        if deferred:
            jobs = format_html_join(
                ", ",
                "{} (“{}”)",
                ((self._job_link(request, job_id), str(s)) for s, job_id in deferred),
            )
            self.message_user(request, format_html("Deferred {}.", jobs), messages.SUCCESS)
        return None

    def _job_link(self, request: HttpRequest, job_id: int) -> SafeString:
        """The job's admin page, for those who may see jobs."""
        if not may_view_jobs(request.user):
            return format_html("job #{}", job_id)
        url = reverse(
            f"{self.admin_site.name}:procrastinate_procrastinatejob_change", args=[job_id]
        )
        return format_html('<a href="{}">job #{}</a>', url, job_id)
