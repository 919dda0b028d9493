"""The stored schedules from the console: list_schedules, enable_schedules, disable_schedules,
run_schedule, and list_periodic_tasks showing both kinds."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.models import Schedule, ScheduleRun
from tests.schedule_rows import GONE, break_schedule, make_schedule

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def states() -> dict[int, tuple[bool, dt.datetime | None]]:
    rows = Schedule.objects.values_list("pk", "enabled", "next_run_at")
    return {pk: (enabled, next_run) for pk, enabled, next_run in rows}


# --- list_schedules ----------------------------------------------------------------------------


def test_list_schedules__none() -> None:
    assert run("list_schedules") == "No stored schedule.\n"


def test_list_schedules__state_words_runs_and_broken() -> None:
    nightly = make_schedule(description="Nightly clean-up")
    paused = make_schedule(cron="", interval=15, interval_unit="minutes", enabled=False)
    broken = make_schedule()
    break_schedule(broken)

    out = run("list_schedules")

    assert f"jobs.delete_sent_notifications [schedule {nightly.pk}]" in out
    assert "  about:     Nightly clean-up" in out
    assert "  schedule:  At 03:00 (Europe/Paris)" in out
    assert "  schedule:  Every 15 minutes" in out
    assert f"jobs.delete_sent_notifications [schedule {paused.pk}]" in out
    assert "  state:     disabled" in out
    assert "  next run:  none" in out
    assert "  last run:  never (0 run(s) in all)" in out
    assert f"{GONE} [schedule {broken.pk}]" in out
    assert "  state:     BROKEN: enabled, but the code has no task of this name" in out
    # By id, as created.
    assert out.index(f"[schedule {nightly.pk}]") < out.index(f"[schedule {paused.pk}]")
    assert out.index(f"[schedule {paused.pk}]") < out.index(f"[schedule {broken.pk}]")


def test_list_schedules__json() -> None:
    nightly = make_schedule(description="Nightly clean-up")
    broken = make_schedule(enabled=False)
    break_schedule(broken)
    Schedule.objects.filter(pk=broken.pk).update(enabled=True)
    run("run_schedule", str(nightly.pk))

    listed = json.loads(run("list_schedules", "--json"))

    assert [item["id"] for item in listed] == [nightly.pk, broken.pk]
    first = listed[0]
    nightly.refresh_from_db()
    assert first == {
        "id": nightly.pk,
        "task": "jobs.delete_sent_notifications",
        "description": "Nightly clean-up",
        "enabled": True,
        "broken": False,
        "when": "At 03:00 (Europe/Paris)",
        "queue": "",
        "next_run_at": nightly.next_run_at.astimezone(dt.UTC).isoformat(),  # type: ignore[union-attr]
        "last_run_at": nightly.last_run_at.astimezone(dt.UTC).isoformat(),  # type: ignore[union-attr]
        "run_count": 1,
    }
    assert first["next_run_at"].endswith("+00:00")
    assert listed[1]["broken"] is True
    assert listed[1]["task"] == GONE


def test_list_periodic_tasks__both_kinds_labelled() -> None:
    schedule = make_schedule(description="Nightly clean-up")

    out = run("list_periodic_tasks")

    code, stored = out.split("Stored schedules (in the database", 1)
    assert "Periodic tasks (declared in code, @app.periodic)" in code
    assert "jobs.prune_jobs [hourly]" in code
    assert f"jobs.delete_sent_notifications [schedule {schedule.pk}]" in stored
    assert "  about:     Nightly clean-up" in stored
    assert "[schedule" not in code


def test_list_periodic_tasks__no_stored_schedule() -> None:
    assert run("list_periodic_tasks").endswith("No stored schedule.\n")


# --- enable_schedules, disable_schedules ---------------------------------------------------


def test_disable_schedules__disables_each_and_says_so() -> None:
    first, second = make_schedule(), make_schedule(cron="30 4 * * *")

    out = run("disable_schedules", str(first.pk), str(second.pk))

    assert f"  schedule {first.pk} (jobs.delete_sent_notifications ({first.pk})): disabled" in out
    assert "2 schedule(s) disabled." in out
    assert states() == {first.pk: (False, None), second.pk: (False, None)}
    again = run("disable_schedules", str(first.pk))
    assert "already disabled" in again
    assert "0 schedule(s) disabled." in again


def test_enable_schedules__enables_with_a_next_run() -> None:
    schedule = make_schedule(enabled=False)
    assert schedule.next_run_at is None

    out = run("enable_schedules", str(schedule.pk))

    assert "1 schedule(s) enabled." in out
    schedule.refresh_from_db()
    assert schedule.enabled
    assert schedule.next_run_at is not None
    assert schedule.next_run_at > timezone.now()


@pytest.mark.parametrize("command", ["enable_schedules", "disable_schedules"])
def test_enable_disable_schedules__an_unknown_id_changes_none(command: str) -> None:
    known = make_schedule(enabled=command == "disable_schedules")
    before = states()

    with pytest.raises(CommandError, match=r"^No schedule with id 999999, 1000000\.$"):
        run(command, str(known.pk), "1000000", "999999")

    assert states() == before


def test_enable_schedules__a_broken_one_changes_none() -> None:
    # The healthy one comes first: it is enabled, then undone when the broken one is refused.
    healthy = make_schedule(enabled=False)
    broken = make_schedule(enabled=False)
    break_schedule(broken)
    before = states()

    with pytest.raises(
        CommandError, match=f"Schedule {broken.pk} cannot be enabled: task: No task named '{GONE}'"
    ):
        run("enable_schedules", str(healthy.pk), str(broken.pk))

    assert states() == before


def test_enable_schedules__a_single_time_that_ran_is_not_enabled_again() -> None:
    once = make_schedule(cron="", once_at=timezone.now() + dt.timedelta(hours=1))
    # It ran, and disabled itself (jobs.schedules._run does the same).
    Schedule.objects.filter(pk=once.pk).update(
        once_at=timezone.now() - dt.timedelta(minutes=5),
        last_run_at=timezone.now(),
        run_count=1,
        enabled=False,
        next_run_at=None,
    )

    with pytest.raises(CommandError, match="would never run again"):
        run("enable_schedules", str(once.pk))

    assert states() == {once.pk: (False, None)}


def test_disable_schedules__a_broken_one_may_be_disabled() -> None:
    broken = make_schedule()
    break_schedule(broken)

    assert "1 schedule(s) disabled." in run("disable_schedules", str(broken.pk))
    assert states() == {broken.pk: (False, None)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: id"),
        (["x"], "'x' is not a whole number"),
        (["0"], "must be at least 1"),
        (["1" + "0" * 30], "must be at most 9223372036854775807"),
    ],
)
@pytest.mark.parametrize("command", ["enable_schedules", "disable_schedules", "run_schedule"])
def test_schedule_commands__refuse_bad_ids(command: str, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(command, *args)


# --- run_schedule ----------------------------------------------------------------------------


def test_run_schedule__defers_a_job_and_prints_its_id() -> None:
    schedule = make_schedule(description="Nightly clean-up", enabled=False)

    out = run("run_schedule", str(schedule.pk))

    schedule_run = ScheduleRun.objects.get()
    assert out == (
        f"Schedule {schedule.pk} (Nightly clean-up): job {schedule_run.job_id} deferred.\n"
    )
    job = ProcrastinateJob.objects.get(pk=schedule_run.job_id)
    assert job.task_name == "jobs.delete_sent_notifications"
    assert job.args == {"older_than_days": 30}
    assert schedule_run.by_hand
    assert schedule_run.requested_by == "manage.py run_schedule"
    schedule.refresh_from_db()
    assert schedule.run_count == 1
    assert schedule.last_run_at == schedule_run.deferred_at
    assert not schedule.enabled  # running one now does not enable it


def test_run_schedule__unknown_id() -> None:
    with pytest.raises(CommandError, match=r"^No schedule with id 424242\.$"):
        run("run_schedule", "424242")

    assert not ProcrastinateJob.objects.exists()


def test_run_schedule__a_broken_one_defers_nothing() -> None:
    broken = make_schedule()
    break_schedule(broken)

    with pytest.raises(CommandError, match=f"Schedule {broken.pk}: No task named '{GONE}'"):
        run("run_schedule", str(broken.pk))

    assert not ProcrastinateJob.objects.exists()
    assert not ScheduleRun.objects.exists()
    broken.refresh_from_db()
    assert (broken.run_count, broken.last_run_at) == (0, None)
