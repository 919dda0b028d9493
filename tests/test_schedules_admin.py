"""The stored schedules' admin (jobs/admin/schedules.py), through Django's test client, and
its pages in Chromium."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.sites import site
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import schedules
from jobs.admin.schedules import RUN_NOW_LIMIT, RUNS_PER_PAGE, ScheduleAdmin, ScheduleForm
from jobs.models import Schedule, ScheduleRun
from jobs.testing import wait_until
from tests import eager_django_tasks  # a Django task: registered as its module is imported

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/jobs/schedule/"
ADD_URL = "/admin/jobs/schedule/add/"
TASK = "jobs.delete_sent_notifications"  # (older_than_days: int)


def change_url(schedule: Schedule) -> str:
    return f"/admin/jobs/schedule/{schedule.pk}/change/"


def job_url(job_id: int) -> str:
    return f"/admin/procrastinate/procrastinatejob/{job_id}/change/"


def make_schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {"task": TASK, "kwargs": {"older_than_days": 30}, "cron": "0 3 * * *"}
    values.update(fields)
    schedule = Schedule(**values)
    schedule.full_clean()
    schedule.save()
    return schedule


def broken_schedule(**fields: Any) -> Schedule:
    """A schedule whose task left the code (saved without the checks the code would fail)."""
    return Schedule.objects.create(
        task="jobs.renamed_long_ago", description="Old export", interval=5, **fields
    )


def form_data(**overrides: Any) -> dict[str, Any]:
    """What the admin's add form posts for a nightly schedule of TASK; times split in a date
    and a time, as the admin's widget sends them."""
    data: dict[str, Any] = {
        "description": "Nightly clean-up",
        "task": TASK,
        "kwargs": '{"older_than_days": 30}',
        "enabled": "on",
        "cron": "0 3 * * *",
        "interval": "",
        "interval_unit": "minutes",
        "once_at_0": "",
        "once_at_1": "",
        "timezone": "Europe/Paris",
        "start_at_0": "",
        "start_at_1": "",
        "end_at_0": "",
        "end_at_1": "",
        "catch_up": "on",
        "queue": "",
        "priority": "",
    }
    data.update(overrides)
    return data


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def schedule_operator(db: None) -> Client:
    """Staff who may view and change schedules and view jobs: what an operator has."""
    user = User.objects.create_user("ops", password="pw-for-tests", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="jobs",
            codename__in=["view_schedule", "change_schedule", "add_schedule"],
        )
        | Permission.objects.filter(
            content_type__app_label="procrastinate", codename="view_procrastinatejob"
        )
    )
    client = Client()
    client.force_login(user)
    return client


# --- The list -----------------------------------------------------------------------------


def test_schedule_list__shows_each_schedule_in_words_with_its_runs(admin_client: Client) -> None:
    nightly = make_schedule(description="Nightly clean-up", timezone="Europe/Paris")
    every_five = make_schedule(description="Every five", cron="", interval=5)
    schedules.run_now(every_five.pk, requested_by="admin")
    paused = make_schedule(description="Paused", enabled=False)

    response = admin_client.get(LIST_URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert "At 03:00 (Europe/Paris)" in page
    assert "Every 5 minutes" in page
    rows = {row.pk: row for row in response.context["cl"].result_list}
    assert set(rows) == {nightly.pk, every_five.pk, paused.pk}
    assert rows[every_five.pk].run_count == 1
    assert rows[paused.pk].next_run_at is None
    # Next run, last run, count and enabled are columns.
    for heading in ("Next run", "Last run", "Run count", "Enabled"):
        assert heading in page
    assert 'class="jobs-broken"' not in page


def test_schedule_list__marks_a_schedule_whose_task_left_the_code(admin_client: Client) -> None:
    make_schedule(description="Working")
    broken = broken_schedule()

    page = admin_client.get(LIST_URL).content.decode()

    row = next(r for r in page.split("<tr") if "Old export" in r)
    assert 'class="jobs-broken"' in row
    assert "jobs.renamed_long_ago" in row
    assert page.count('class="jobs-broken"') == 1
    detail = admin_client.get(change_url(broken)).content.decode()
    assert "no task named <code>jobs.renamed_long_ago</code>" in detail


def test_schedule_list__filters_by_enabled_and_broken_and_searches(admin_client: Client) -> None:
    working = make_schedule(description="Working")
    paused = make_schedule(description="Paused", enabled=False)
    broken = broken_schedule()

    def listed(query: str) -> set[int]:
        response = admin_client.get(LIST_URL + query)
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert listed("?enabled__exact=0") == {paused.pk}
    assert listed("?broken=yes") == {broken.pk}
    assert listed("?broken=no") == {working.pk, paused.pk}
    assert listed("?q=renamed") == {broken.pk}
    assert listed("?q=paus") == {paused.pk}


def test_schedule_list__reads_as_many_rows_in_as_many_queries(admin_client: Client) -> None:
    def queries_for_the_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(LIST_URL).status_code == 200
        return len(queries)

    for n in range(3):
        make_schedule(description=f"S{n}")
    few = queries_for_the_list()
    for n in range(3, 40):
        make_schedule(description=f"S{n}", cron="", interval=n)
    broken_schedule()

    assert queries_for_the_list() == few


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("?q=%00", "Null characters are not allowed."),
        ("?broken=maybe", "'maybe' is neither yes nor no"),
        ("?task__regex=[", "is not a filter of this list"),
        ("?enabled__exact=perhaps", None),
        ("?p=x", None),
    ],
)
def test_schedule_list__answers_bad_parameters_without_a_server_error(
    admin_client: Client, query: str, said: str | None
) -> None:
    make_schedule()

    response = admin_client.get(LIST_URL + query, follow=True)

    assert response.status_code == 200
    if said is not None:
        assert any(said in message for message in messages_of(response)), messages_of(response)


def test_schedule_list__shows_the_periodic_tasks_declared_in_the_code(
    admin_client: Client,
) -> None:
    make_schedule()

    response = admin_client.get(LIST_URL)

    section = response.content.decode().split('id="periodic-tasks-section"')[1]
    # Every decorator-declared task, in words, read-only (no form field, no action).
    assert "jobs.run_schedules" in section
    assert "jobs.recover_stalled_jobs" in section
    assert "Every minute" in section
    assert "<input" not in section
    assert "Outcome" in section  # this user may see the jobs


def test_schedule_list__hides_the_periodic_jobs_from_users_who_may_not_see_jobs(
    client: Client,
) -> None:
    user = User.objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_schedule"))
    client.force_login(user)

    response = client.get(LIST_URL)

    assert response.status_code == 200
    section = response.content.decode().split('id="periodic-tasks-section"')[1]
    assert "jobs.run_schedules" in section
    assert "Outcome" not in section
    assert "procrastinatejob" not in section


def test_periodic_tasks_page__links_to_the_stored_schedules(admin_client: Client) -> None:
    page = admin_client.get("/admin/procrastinate/procrastinatejob/periodic-tasks/")

    assert f'href="{LIST_URL}"' in page.content.decode()


# --- The form ---------------------------------------------------------------------------


def test_schedule_form__offers_the_registered_tasks_and_time_zones(admin_client: Client) -> None:
    page = admin_client.get(ADD_URL).content.decode()

    tasks = re.search(r'<datalist id="jobs-schedule-tasks">(.*?)</datalist>', page)
    assert tasks is not None
    assert f'<option value="{TASK}">' in tasks[1]
    assert f'<option value="{eager_django_tasks.multiply.module_path}">' in tasks[1]
    assert 'list="jobs-schedule-tasks"' in page
    assert '<option value="Europe/Paris">' in page


def test_schedule_form__adds_a_schedule_that_runs_as_typed(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data(kwargs='{"older_than_days": 12}'))

    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert schedule.kwargs == {"older_than_days": 12}
    assert schedule.timezone == "Europe/Paris"
    assert schedule.next_run_at is not None
    # The round trip: the list and page read it, run now defers the job with those kwargs.
    assert admin_client.get(LIST_URL).status_code == 200
    assert admin_client.get(change_url(schedule)).status_code == 200
    run = schedules.run_now(schedule.pk)
    assert ProcrastinateJob.objects.get(id=run.job_id).args == {"older_than_days": 12}
    entry = LogEntry.objects.get()
    assert entry.object_id == str(schedule.pk)


def test_schedule_form__takes_a_django_task(admin_client: Client) -> None:
    path = eager_django_tasks.multiply.module_path

    response = admin_client.post(
        ADD_URL, form_data(task=path, kwargs='{"a": 6, "b": 7}', cron="", interval="10")
    )

    assert response.status_code == 302
    run = schedules.run_now(Schedule.objects.get().pk)
    job = ProcrastinateJob.objects.get(id=run.job_id)
    assert (job.task_name, job.args) == (path, {"a": 6, "b": 7})


DEEP = "[" * 100_000 + "]" * 100_000
REFUSALS = [
    # (what was typed, the field that says so, part of its message)
    ({"task": "jobs.no_such_task"}, "task", "No task named 'jobs.no_such_task'"),
    ({"task": "tests.eager_django_tasks.divide"}, "task", "No task named"),
    ({"task": ""}, "task", "This field is required."),
    ({"task": "jobs.send\x00notification"}, "task", "Null characters are not allowed."),
    ({"kwargs": '{"older_than_days": 30, "verbose": true}'}, "kwargs", "has no argument"),
    ({"kwargs": "{}"}, "kwargs", "Missing required argument 'older_than_days'"),
    ({"kwargs": '{"older_than_days": "thirty"}'}, "kwargs", "must be an integer"),
    ({"kwargs": "[30]"}, "kwargs", "A JSON object of keyword arguments"),
    ({"kwargs": '{"older_than_days": '}, "kwargs", "Enter a valid JSON."),
    ({"kwargs": '{"older_than_days": NaN}'}, "kwargs", "JSON has no NaN"),
    ({"kwargs": '{"older_than_days": Infinity}'}, "kwargs", "JSON has no NaN or infinity"),
    ({"kwargs": '{"older_than_days": 1e400}'}, "kwargs", "JSON has no NaN or infinity"),
    ({"kwargs": '{"older_than_days": 1' + "0" * 5000 + "}"}, "kwargs", "Not JSON this site"),
    ({"kwargs": '{"older_than_days": 30, "x": ' + DEEP + "}"}, "kwargs", "Not JSON this site"),
    ({"kwargs": '{"older_than_days": 30, "note": "a\\u0000b"}'}, "kwargs", "null characters"),
    ({"kwargs": '{"older_than_days": 30, "note": "\\ud800"}'}, "kwargs", "lone surrogate"),
    ({"cron": "61 * * * *"}, "cron", "Not a cron line"),
    ({"cron": "every night"}, "cron", "this one has 2"),
    ({"cron": "0 3 30 2 *"}, "cron", "would never run"),
    ({"cron": ""}, "cron", "Give a cron line, an interval or a single time."),
    ({"interval": "5"}, "interval", "Give only one of"),
    ({"cron": "", "interval": "0"}, "interval", "greater than or equal to 1"),
    ({"cron": "", "interval": "-3"}, "interval", "greater than or equal to 1"),
    ({"cron": "", "interval": "100000", "interval_unit": "days"}, "interval", "ten years"),
    ({"cron": "", "interval": str(10**30)}, "interval", "less than or equal to"),
    ({"cron": "", "interval": "5", "interval_unit": "weeks"}, "interval_unit", "valid choice"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", "Unknown time zone"),
    ({"timezone": "../../etc/passwd"}, "timezone", "Unknown time zone"),
    ({"timezone": "Europe/Paris\x00"}, "timezone", "Null characters are not allowed."),
    (
        {
            "start_at_0": "2030-01-02",
            "start_at_1": "00:00",
            "end_at_0": "2030-01-01",
            "end_at_1": "00:00",
        },
        "end_at",
        "Must be after the start.",
    ),
    ({"end_at_0": "2020-01-01", "end_at_1": "00:00"}, "end_at", "would never run"),
    ({"cron": "", "once_at_0": "2001-01-01", "once_at_1": "00:00"}, "once_at", "in the past"),
    ({"cron": "", "once_at_0": "99999-01-01", "once_at_1": "00:00"}, "once_at", "valid date"),
    ({"priority": str(10**30)}, "priority", "less than or equal to 999999999"),
    ({"priority": "1000000000"}, "priority", "less than or equal to 999999999"),
    ({"description": "x" * 300}, "description", "at most 255 characters"),
    ({"queue": "q" * 200}, "queue", "at most 128 characters"),
]


@pytest.mark.parametrize(("typed", "field", "message"), REFUSALS)
def test_schedule_form__refuses_bad_input_on_its_field(
    admin_client: Client, typed: dict[str, str], field: str, message: str
) -> None:
    response = admin_client.post(ADD_URL, form_data(**typed))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors
    # On the field, and only the message that is about what was typed.
    assert "__all__" not in errors
    assert len(errors[field]) == 1, errors
    assert Schedule.objects.count() == 0
    assert ProcrastinateJob.objects.count() == 0


@pytest.mark.parametrize(
    ("zone", "typed", "field"),
    [
        # Year 9999 behind UTC, year 1 ahead of it: beyond Python's datetime once in UTC.
        (
            "America/Bogota",
            {"cron": "", "once_at_0": "9999-12-31", "once_at_1": "23:00"},
            "once_at",
        ),
        ("America/Bogota", {"end_at_0": "9999-12-31", "end_at_1": "23:00"}, "end_at"),
        ("Pacific/Kiritimati", {"start_at_0": "0001-01-01", "start_at_1": "00:00"}, "start_at"),
        # In range in UTC, but not in every zone a page may show it in.
        ("UTC", {"end_at_0": "9999-12-31", "end_at_1": "23:59"}, "end_at"),
    ],
)
def test_schedule_form__refuses_times_out_of_range(
    admin_client: Client, settings: Any, zone: str, typed: dict[str, str], field: str
) -> None:
    settings.TIME_ZONE = zone

    response = admin_client.post(ADD_URL, form_data(**typed))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Out of range" in " ".join(errors.get(field, [])), errors
    assert Schedule.objects.count() == 0


def test_schedule_form__shows_a_refused_value_again_as_typed(admin_client: Client) -> None:
    typed = '{"older_than_days": 1' + "0" * 5000 + "}"

    response = admin_client.post(ADD_URL, form_data(kwargs=typed))

    assert html.escape(typed) in response.content.decode()


def test_schedule_form__refuses_a_change_and_keeps_the_row(admin_client: Client) -> None:
    schedule = make_schedule(description="Nightly clean-up")
    before = Schedule.objects.values().get()

    response = admin_client.post(change_url(schedule), form_data(cron="0 25 * * *"))

    assert response.status_code == 200
    assert "cron" in response.context["adminform"].form.errors
    assert Schedule.objects.values().get() == before


def test_schedule_form__a_change_is_recorded_and_moves_the_next_run(
    admin_client: Client,
) -> None:
    schedule = make_schedule(description="Nightly clean-up", timezone="UTC")

    response = admin_client.post(change_url(schedule), form_data(cron="0 4 * * *", timezone="UTC"))

    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.cron == "0 4 * * *"
    assert schedule.next_run_at is not None
    assert (schedule.next_run_at.hour, schedule.next_run_at.minute) == (4, 0)
    entry = LogEntry.objects.get(action_flag=CHANGE)
    assert "Cron" in entry.get_change_message()


def test_schedule_admin__a_save_leaves_what_the_scheduler_wrote_meanwhile(
    admin_user: User,
) -> None:
    schedule = make_schedule(description="Nightly clean-up")
    shown = Schedule.objects.get(pk=schedule.pk)  # the row as the admin read it
    # Meanwhile the scheduler ran it and moved its next run on.
    ran_at = timezone.now()
    moved_to = ran_at + dt.timedelta(days=1)
    Schedule.objects.filter(pk=schedule.pk).update(
        run_count=5, last_run_at=ran_at, next_run_at=moved_to
    )
    form = ScheduleForm(form_data(description="Renamed", timezone="UTC"), instance=shown)
    assert form.is_valid(), form.errors
    request = RequestFactory().post("/")
    request.user = admin_user

    ScheduleAdmin(Schedule, site).save_model(request, form.instance, form, change=True)

    schedule.refresh_from_db()
    assert schedule.description == "Renamed"
    assert (schedule.run_count, schedule.last_run_at) == (5, ran_at)
    assert schedule.next_run_at == moved_to


# --- Actions ------------------------------------------------------------------------------


def act(client: Client, action: str, *selected: Schedule, url: str = LIST_URL) -> Any:
    return client.post(
        url, {"action": action, "_selected_action": [s.pk for s in selected]}, follow=True
    )


def test_schedule_actions__disable_and_enable(schedule_operator: Client) -> None:
    first = make_schedule(description="First")
    second = make_schedule(description="Second", enabled=False)

    response = act(schedule_operator, "disable_schedules", first, second)

    assert "Disabled 1 schedule." in messages_of(response)
    first.refresh_from_db()
    assert (first.enabled, first.next_run_at) == (False, None)
    history = LogEntry.objects.get(object_id=str(first.pk))
    assert (history.action_flag, history.change_message) == (CHANGE, "Disabled.")
    assert history.user.username == "ops"

    response = act(schedule_operator, "enable_schedules", first, second)

    assert "Enabled 2 schedules." in messages_of(response)
    assert all(s.enabled and s.next_run_at for s in Schedule.objects.all())
    assert LogEntry.objects.filter(change_message="Enabled.").count() == 2


def test_schedule_actions__refuse_to_enable_a_broken_schedule(admin_client: Client) -> None:
    broken = broken_schedule(enabled=False)

    response = act(admin_client, "enable_schedules", broken)

    assert response.status_code == 200
    assert any("Left as they were" in m and "No task named" in m for m in messages_of(response))
    broken.refresh_from_db()
    assert broken.enabled is False
    assert not LogEntry.objects.exists()


def test_schedule_actions__refuse_to_enable_a_schedule_that_would_never_run_again(
    admin_client: Client,
) -> None:
    ended = make_schedule(description="Ended", enabled=False)
    Schedule.objects.filter(pk=ended.pk).update(
        start_at=timezone.now() - dt.timedelta(days=3), end_at=timezone.now() - dt.timedelta(days=2)
    )

    response = act(admin_client, "enable_schedules", ended)

    assert any("Left as they were" in m for m in messages_of(response))
    ended.refresh_from_db()
    assert ended.enabled is False
    assert not LogEntry.objects.exists()


def test_schedule_actions__run_now_defers_a_counted_linked_job(schedule_operator: Client) -> None:
    schedule = make_schedule(description="Nightly clean-up", enabled=False)

    response = act(schedule_operator, "run_now", schedule)

    run = ScheduleRun.objects.get()
    job = ProcrastinateJob.objects.get(id=run.job_id)
    assert (job.task_name, job.args, job.status) == (TASK, {"older_than_days": 30}, "todo")
    assert (run.by_hand, run.requested_by) == (True, "ops")
    schedule.refresh_from_db()
    assert schedule.run_count == 1
    assert schedule.last_run_at == run.deferred_at
    [message] = messages_of(response)
    assert f'<a href="{job_url(job.id)}">job #{job.id}</a>' in message
    assert f'<a href="{job_url(job.id)}">job #{job.id}</a>' in response.content.decode()
    history = LogEntry.objects.get()
    assert history.change_message == f"Ran now: deferred job #{job.id}."


def test_schedule_actions__run_now_links_the_job_only_for_who_may_see_it(
    client: Client,
) -> None:
    user = User.objects.create_user("planner", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_schedule", "change_schedule"])
    )
    client.force_login(user)
    schedule = make_schedule(description="Nightly clean-up")

    response = act(client, "run_now", schedule)

    run = ScheduleRun.objects.get()
    assert messages_of(response) == [f"Deferred job #{run.job_id} (“Nightly clean-up”)."]


def test_schedule_actions__run_now_from_the_schedule_page(admin_client: Client) -> None:
    schedule = make_schedule()
    url = change_url(schedule)
    assert 'name="CHANGE_FORM-action"' in admin_client.get(url).content.decode()

    response = admin_client.post(
        url, {"CHANGE_FORM-action": "run_now", "_selected_action": [schedule.pk]}, follow=True
    )

    assert response.status_code == 200
    run = ScheduleRun.objects.get()
    assert f'href="{job_url(run.job_id)}"' in response.content.decode()


def test_schedule_actions__run_now_of_a_broken_schedule_says_why(admin_client: Client) -> None:
    working = make_schedule(description="Working")
    broken = broken_schedule()

    response = act(admin_client, "run_now", working, broken)

    assert response.status_code == 200
    said = messages_of(response)
    assert any("“Old export”: nothing deferred. No task named" in m for m in said), said
    assert ScheduleRun.objects.get().schedule == working
    assert ProcrastinateJob.objects.count() == 1
    broken.refresh_from_db()
    assert broken.run_count == 0
    assert not LogEntry.objects.filter(object_id=str(broken.pk)).exists()


def test_schedule_actions__run_now_takes_a_bounded_selection(admin_client: Client) -> None:
    chosen = [make_schedule(description=f"S{n}") for n in range(RUN_NOW_LIMIT + 1)]

    response = act(admin_client, "run_now", *chosen)

    assert any("at most" in m for m in messages_of(response))
    assert ProcrastinateJob.objects.count() == 0


def test_schedule_actions__need_the_change_permission(client: Client) -> None:
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_schedule"))
    client.force_login(user)
    schedule = make_schedule()

    assert 'value="run_now"' not in client.get(LIST_URL).content.decode()
    for action in ("run_now", "disable_schedules"):
        act(client, action, schedule)
    response = client.post(change_url(schedule), form_data(description="Changed"))

    assert response.status_code == 403
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.run_count, schedule.description) == (True, 0, "")
    assert ProcrastinateJob.objects.count() == 0
    assert not LogEntry.objects.exists()


def test_schedule_history__lists_the_actions(admin_client: Client) -> None:
    schedule = make_schedule()
    act(admin_client, "disable_schedules", schedule)
    act(admin_client, "run_now", schedule)

    page = admin_client.get(f"/admin/jobs/schedule/{schedule.pk}/history/").content.decode()

    assert "Disabled." in page
    assert "Ran now: deferred job #" in page


# --- A schedule's runs ----------------------------------------------------------------------


def test_schedule_page__lists_its_jobs_newest_first_with_links(admin_client: Client) -> None:
    schedule = make_schedule(cron="", interval=1, interval_unit="seconds")
    Schedule.objects.filter(pk=schedule.pk).update(
        next_run_at=timezone.now() - dt.timedelta(seconds=2)
    )
    schedules.run_due_schedules()
    by_hand = schedules.run_now(schedule.pk, requested_by="alice")
    ticks = list(ScheduleRun.objects.filter(by_hand=False).order_by("-deferred_at", "-pk"))
    assert ticks

    page = admin_client.get(change_url(schedule)).content.decode()

    table = page.split('id="schedule-runs"')[1]
    linked = [int(n) for n in re.findall(r'procrastinatejob/(\d+)/change/">#', table)]
    assert linked == [by_hand.job_id, *(run.job_id for run in ticks)]
    assert "by hand, by alice" in table
    assert "on schedule" in table
    assert "todo" in table


def test_schedule_page__pages_through_many_runs(admin_client: Client) -> None:
    schedule = make_schedule()
    runs = [schedules.run_now(schedule.pk) for _ in range(RUNS_PER_PAGE + 3)]
    newest_first = [run.job_id for run in reversed(runs)]

    def linked(query: str) -> list[int]:
        page = admin_client.get(change_url(schedule) + query).content.decode()
        table = page.split('id="schedule-runs"')[1]
        return [int(n) for n in re.findall(r'procrastinatejob/(\d+)/change/">#', table)]

    first = admin_client.get(change_url(schedule)).content.decode()
    assert "?runs_page=2" in first
    assert linked("") == newest_first[:RUNS_PER_PAGE]
    assert linked("?runs_page=2") == newest_first[RUNS_PER_PAGE:]
    # A page that is not one gives the first, never an error.
    for bad in ("?runs_page=x", "?runs_page=-1", "?runs_page=²", "?runs_page=" + "9" * 30):
        assert linked(bad) == newest_first[:RUNS_PER_PAGE]


def test_schedule_page__hides_the_jobs_from_users_who_may_not_see_jobs(client: Client) -> None:
    user = User.objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_schedule"))
    client.force_login(user)
    schedule = make_schedule()
    run = schedules.run_now(schedule.pk, requested_by="ops")

    table = client.get(change_url(schedule)).content.decode().split('id="schedule-runs"')[1]

    assert f"#{run.job_id}" in table
    assert "procrastinatejob" not in table
    assert "todo" not in table


# --- In a browser ------------------------------------------------------------------------


def test_schedule_admin__list_and_page_in_chromium(
    browser: Any, site_server: Callable[..., str]
) -> None:
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("boss", password="pw-for-tests")
    schedule = make_schedule(description="Nightly clean-up", timezone="Europe/Paris")
    broken_schedule()
    schedules.run_now(schedule.pk, requested_by="boss")
    url = site_server()

    browser.get(f"{url}/admin/login/?next={LIST_URL}")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("pw-for-tests")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    assert browser.current_url.endswith(LIST_URL)
    # The URL changes as the redirect starts: wait for the list itself.
    rows = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"),
        timeout=15,
        what="the schedule list",
    )
    assert len(rows) == 2
    assert "broken" in browser.find_element(By.CSS_SELECTOR, "#result_list").text
    assert "jobs.run_schedules" in browser.find_element(By.ID, "periodic-tasks-section").text
    artifacts = Path(settings.BASE_DIR) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    browser.save_screenshot(str(artifacts / "schedules-list.png"))

    assert console_errors(browser) == []

    browser.find_element(By.PARTIAL_LINK_TEXT, "Nightly clean-up").click()
    # The task field offers the registered tasks as it is typed.
    task_input = browser.find_element(By.NAME, "task")
    assert task_input.get_attribute("list") == "jobs-schedule-tasks"
    runs = browser.find_element(By.ID, "schedule-runs")
    assert "by hand, by boss" in runs.text
    browser.execute_script("arguments[0].scrollIntoView()", runs)
    screenshot = artifacts / "schedule-page.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert console_errors(browser) == []


def console_errors(browser: Any) -> list[dict[str, Any]]:
    """The errors the pages logged since the last call (Chromium's own request for a
    favicon, which the site does not have, left out)."""
    return [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]


def test_schedule_clean__an_interval_beyond_any_duration_is_a_field_error() -> None:
    # From code (a data migration, a signup) no form bounds the number first.
    schedule = Schedule(task=TASK, kwargs={"older_than_days": 1}, interval=10**30)

    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()

    assert "interval" in refused.value.message_dict
