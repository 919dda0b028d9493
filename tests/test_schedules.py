"""Stored schedules (jobs/schedules.py): what the scheduler defers, tick by tick.

The scheduler itself (`run_due_schedules`) is called here with an explicit `now`, as the
periodic task would call it at that moment, stepping through days that hold a clock change.
The jobs it defers are real rows of procrastinate's table (rolled back with each test).
tests/test_schedules_workers.py proves the same with real worker processes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import zoneinfo
from collections.abc import Iterable
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import schedules
from jobs.databases import connection_kwargs
from jobs.models import Schedule, ScheduleRun
from jobs.schedules import TickReport, run_due_schedules
from jobs.testing import wait_until

pytestmark = pytest.mark.django_db

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
MINUTE = dt.timedelta(minutes=1)
SECOND = dt.timedelta(seconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=PARIS).astimezone(dt.UTC)


def schedule(
    *, waiting_from: dt.datetime | None = None, validate: bool = True, **fields: Any
) -> Schedule:
    """A saved schedule of `tests.quick`, validated as the admin validates it (unless its
    times lie in the past); with `waiting_from`, as if saved then: its next run is its
    first tick after that moment."""
    fields.setdefault("task", "tests.quick")
    fields.setdefault("kwargs", {"n": 1})
    made = Schedule(**fields)
    if validate:
        made.full_clean()
    made.save()
    if waiting_from is not None:
        Schedule.objects.filter(pk=made.pk).update(
            next_run_at=schedules.next_tick(made, waiting_from)
        )
        made.refresh_from_db()
    return made


def scheduler_every(step: dt.timedelta, start: dt.datetime, end: dt.datetime) -> list[TickReport]:
    """Run the scheduler at `start`, every `step`, until `end` (included)."""
    reports = []
    moment = start
    while moment <= end:
        reports.append(run_due_schedules(now=moment))
        moment += step
    return reports


def due_times(of: Schedule) -> list[dt.datetime]:
    return list(
        ScheduleRun.objects.filter(schedule=of).order_by("due_at").values_list("due_at", flat=True)
    )


def spacing(ticks: Iterable[dt.datetime]) -> set[dt.timedelta]:
    return {later - earlier for earlier, later in itertools.pairwise(ticks)}


# --- a day with a clock change -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected", "next_day"),
    [
        # 02:30 never shows: 03:30 CEST.
        (dt.date(2026, 3, 29), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)),
        # 02:30 shows twice: the first, in summer time.
        (dt.date(2026, 10, 25), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_run_due_schedules__daily_0230_in_paris_runs_once_on_a_clock_change_day(
    day: dt.date, expected: dt.datetime, next_day: dt.datetime
) -> None:
    start = paris(day.year, day.month, day.day)
    nightly = schedule(cron="30 2 * * *", timezone="Europe/Paris", waiting_from=start - MINUTE)

    scheduler_every(MINUTE, start, paris(day.year, day.month, day.day, 6))

    assert due_times(nightly) == [expected]
    nightly.refresh_from_db()
    assert nightly.run_count == 1
    assert nightly.next_run_at == next_day
    run = ScheduleRun.objects.get(schedule=nightly)
    assert run.job.task_name == "tests.quick"
    assert run.job.args == {"n": 1}
    assert run.job.status == "todo"


@pytest.mark.parametrize(
    ("day", "count"), [(dt.date(2026, 3, 29), 46), (dt.date(2026, 10, 25), 50)]
)
def test_run_due_schedules__every_30_minutes_through_a_clock_change(
    day: dt.date, count: int
) -> None:
    start = paris(day.year, day.month, day.day)
    end = paris(day.year, day.month, day.day + 1)
    half_hourly = schedule(
        cron="*/30 * * * *", timezone="Europe/Paris", waiting_from=start - MINUTE
    )

    scheduler_every(MINUTE, start, end - MINUTE)

    ticks = due_times(half_hourly)
    # A 23-hour day, or a 25-hour one: a run every 30 minutes of real time, none twice.
    assert len(ticks) == count
    assert ticks[0] == start
    assert spacing(ticks) == {dt.timedelta(minutes=30)}
    half_hourly.refresh_from_db()
    assert half_hourly.run_count == count
    assert half_hourly.next_run_at == end


# --- intervals, late ticks, outages ------------------------------------------------------------


def test_run_due_schedules__interval_counts_from_its_creation() -> None:
    created = utc(2026, 5, 1, 12, 0, 0)
    every_90s = schedule(
        interval=90, interval_unit="seconds", created_at=created, waiting_from=created
    )

    scheduler_every(10 * SECOND, created, created + dt.timedelta(minutes=10))

    assert due_times(every_90s) == [created + n * 90 * SECOND for n in range(1, 7)]


def test_run_due_schedules__a_late_scheduler_defers_every_tick_it_missed() -> None:
    created = utc(2026, 5, 1, 12, 0, 0)
    every_10s = schedule(
        interval=10, interval_unit="seconds", created_at=created, waiting_from=created
    )

    # The scheduler's ticks were held up 45 seconds (a busy worker): less than
    # JOBS_SCHEDULE_MISSED_AFTER_SECONDS, so every tick of the schedule still runs.
    report = run_due_schedules(now=created + 45 * SECOND)

    assert due_times(every_10s) == [created + n * 10 * SECOND for n in range(1, 5)]
    assert report.deferred == 4
    assert report.schedules == 1
    every_10s.refresh_from_db()
    assert every_10s.next_run_at == created + 50 * SECOND
    assert every_10s.run_count == 4
    assert ProcrastinateJob.objects.filter(task_name="tests.quick").count() == 4


@pytest.mark.parametrize(("catch_up", "runs"), [(True, 1), (False, 0)])
def test_run_due_schedules__after_an_outage_catch_up_runs_once_or_not(
    catch_up: bool, runs: int
) -> None:
    hourly = schedule(cron="0 * * * *", catch_up=catch_up, waiting_from=utc(2026, 5, 1, 9, 30))
    assert hourly.next_run_at == utc(2026, 5, 1, 10)

    # No scheduler ran from 09:30 to 15:20: the ticks of 10:00 to 15:00 were missed.
    run_due_schedules(now=utc(2026, 5, 1, 15, 20))

    assert due_times(hourly) == [utc(2026, 5, 1, 10)] * runs
    hourly.refresh_from_db()
    assert hourly.next_run_at == utc(2026, 5, 1, 16)

    # Then its ticks run again.
    scheduler_every(SECOND, utc(2026, 5, 1, 16), utc(2026, 5, 1, 16, 0, 2))

    assert due_times(hourly) == [utc(2026, 5, 1, 10)] * runs + [utc(2026, 5, 1, 16)]


def test_run_due_schedules__after_an_outage_ticks_within_the_window_all_run() -> None:
    every_20s = schedule(cron="* * * * * */20", catch_up=False, waiting_from=utc(2026, 5, 1, 9))

    # Out from 09:00 to 10:00: the ticks of the last minute (JOBS_SCHEDULE_MISSED_AFTER_SECONDS)
    # run, the older ones do not, even without catch-up.
    run_due_schedules(now=utc(2026, 5, 1, 10, 0, 5))

    assert due_times(every_20s) == [
        utc(2026, 5, 1, 9, 59, 20),
        utc(2026, 5, 1, 9, 59, 40),
        utc(2026, 5, 1, 10, 0, 0),
    ]


# --- start, end, once ---------------------------------------------------------------------


def test_run_due_schedules__start_and_end() -> None:
    created = utc(2026, 5, 1, 12)
    bounded = schedule(
        interval=1,
        interval_unit="minutes",
        created_at=created,
        start_at=created + 5 * MINUTE,
        end_at=created + 10 * MINUTE,
        waiting_from=created,
        validate=False,  # it ended in 2026
    )

    scheduler_every(30 * SECOND, created, created + 15 * MINUTE)

    assert due_times(bounded) == [created + n * MINUTE for n in range(5, 11)]
    bounded.refresh_from_db()
    assert bounded.next_run_at is None
    assert bounded.run_count == 6


def test_run_due_schedules__once_runs_once_then_disables_itself() -> None:
    now = dt.datetime.now(dt.UTC)
    once = schedule(once_at=now + MINUTE)
    assert once.next_run_at == now + MINUTE

    scheduler_every(20 * SECOND, now, now + 3 * MINUTE)

    assert due_times(once) == [now + MINUTE]
    once.refresh_from_db()
    assert not once.enabled
    assert once.next_run_at is None
    assert once.run_count == 1
    # Saved again (a description edited), it does not come back.
    once.description = "done"
    once.save()
    assert once.next_run_at is None


@pytest.mark.parametrize(("catch_up", "runs"), [(True, 1), (False, 0)])
def test_run_due_schedules__once_missed_by_an_outage(catch_up: bool, runs: int) -> None:
    now = dt.datetime.now(dt.UTC)
    once = schedule(once_at=now + MINUTE, catch_up=catch_up)

    run_due_schedules(now=now + dt.timedelta(hours=2))

    assert len(due_times(once)) == runs
    once.refresh_from_db()
    assert not once.enabled


# --- broken schedules, options -------------------------------------------------------------


def test_run_due_schedules__a_schedule_whose_task_is_gone_defers_nothing() -> None:
    created = utc(2026, 5, 1, 12)
    gone = schedule(interval=10, interval_unit="seconds", created_at=created, waiting_from=created)
    fine = schedule(interval=10, interval_unit="seconds", created_at=created, waiting_from=created)
    # The task was renamed in the code after the schedule was saved.
    Schedule.objects.filter(pk=gone.pk).update(task="tests.renamed_away")

    report = run_due_schedules(now=created + 15 * SECOND)

    assert report.broken == [gone.pk]
    assert report.deferred == 1
    assert due_times(gone) == []
    assert due_times(fine) == [created + 10 * SECOND]
    gone.refresh_from_db()
    assert gone.next_run_at == created + 20 * SECOND  # moved on, not retried every second
    assert gone.run_count == 0
    assert schedules.is_broken(gone)
    assert schedules.broken_schedules() == [gone]
    assert ProcrastinateJob.objects.filter(task_name="tests.renamed_away").count() == 0


def test_run_due_schedules__queue_and_priority_override() -> None:
    created = utc(2026, 5, 1, 12)
    custom = schedule(
        interval=1,
        interval_unit="minutes",
        queue="nightly",
        priority=-5,
        created_at=created,
        waiting_from=created,
    )

    run_due_schedules(now=created + MINUTE)

    job = ScheduleRun.objects.get(schedule=custom).job
    assert (job.queue_name, job.priority) == ("nightly", -5)


def test_run_due_schedules__django_task() -> None:
    created = utc(2026, 5, 1, 12)
    product = schedule(
        task="tests.eager_django_tasks.multiply",
        kwargs={"a": 6, "b": 7},
        interval=1,
        interval_unit="minutes",
        created_at=created,
        waiting_from=created,
    )

    run_due_schedules(now=created + MINUTE)

    job = ScheduleRun.objects.get(schedule=product).job
    assert (job.task_name, job.queue_name, job.args) == (
        "tests.eager_django_tasks.multiply",
        "default",
        {"a": 6, "b": 7},
    )


def test_run_due_schedules__nothing_due() -> None:
    schedule(cron="0 3 * * *", waiting_from=utc(2026, 5, 1, 4))

    report = run_due_schedules(now=utc(2026, 5, 1, 12))

    assert report == TickReport()
    assert ScheduleRun.objects.count() == 0


def test_validate_schedule__an_interval_from_the_end_of_time_would_never_run() -> None:
    late = Schedule(
        task="tests.quick",
        kwargs={"n": 1},
        interval=3000,
        interval_unit="days",
        start_at=utc(9999, 1, 1),
    )

    with pytest.raises(ValidationError) as raised:
        late.full_clean()

    assert raised.value.message_dict == {"interval": ["This schedule would never run."]}


# --- bounded cost -----------------------------------------------------------------------


def queries_of_a_tick(due: int) -> list[str]:
    """The statements of the scheduler's tick when `due` schedules are due."""
    created = utc(2026, 5, 1, 12)
    Schedule.objects.bulk_create(
        Schedule(
            task="tests.quick",
            kwargs={"n": n},
            interval=1,
            interval_unit="minutes",
            created_at=created,
            next_run_at=created + MINUTE,
        )
        for n in range(due)
    )
    with CaptureQueriesContext(connection) as captured:
        report = run_due_schedules(now=created + MINUTE)
    assert report.deferred == due
    # Savepoints stand for the transactions of a real tick (the test runs in one).
    return [
        query["sql"]
        for query in captured.captured_queries
        if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]


def test_run_due_schedules__the_same_statements_for_10_or_999_due_schedules() -> None:
    few = queries_of_a_tick(10)
    Schedule.objects.all().delete()
    many = queries_of_a_tick(999)

    # Taking the due rows, deferring their jobs, recording the runs, moving the next runs on.
    assert [sql.split()[0] for sql in few] == ["SELECT", "SELECT", "INSERT", "UPDATE"], few
    assert [sql.split()[0] for sql in many] == ["SELECT", "SELECT", "INSERT", "UPDATE"], many
    assert "FOR UPDATE SKIP LOCKED" in few[0]
    assert "procrastinate_defer_jobs_v1" in few[1]
    # No branch per schedule in the statements either (a CASE WHEN per row and column costs
    # Django seconds to build and PostgreSQL a scan of the branches for each row).
    assert [sql.count(" WHEN ") for sql in many] == [sql.count(" WHEN ") for sql in few]


def test_run_due_schedules__more_than_a_batch_takes_a_few_more_statements() -> None:
    one_batch = len(queries_of_a_tick(10))
    Schedule.objects.all().delete()

    # 2,500 due schedules: batches of 1,000, 1,000 and 500.
    three_batches = len(queries_of_a_tick(2500))

    assert three_batches == 3 * one_batch


# --- saving while the scheduler runs --------------------------------------------------------


def test_schedule_save__keeps_the_runs_a_tick_counted_meanwhile() -> None:
    created = utc(2026, 5, 1, 12)
    every_10s = schedule(
        interval=10, interval_unit="seconds", created_at=created, waiting_from=created
    )
    loaded = Schedule.objects.get(pk=every_10s.pk)  # by code that edits it a moment later

    run_due_schedules(now=created + 15 * SECOND)
    loaded.description = "Renamed"
    loaded.save()

    every_10s.refresh_from_db()
    assert every_10s.description == "Renamed"
    assert every_10s.run_count == 1
    assert every_10s.last_run_at is not None
    assert every_10s.next_run_at == created + 20 * SECOND
    assert (loaded.run_count, loaded.last_run_at) == (1, every_10s.last_run_at)


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_schedule_save__during_a_tick_does_not_bring_its_tick_back() -> None:
    created = utc(2026, 5, 1, 12)
    every_10s = schedule(
        interval=10, interval_unit="seconds", created_at=created, waiting_from=created
    )
    errors: list[BaseException] = []

    def edit() -> None:
        try:
            every_10s.description = "Renamed"
            every_10s.save()
        except BaseException as error:  # reported by the test, not lost in a thread
            errors.append(error)
        finally:
            connection.close()

    # A tick under way on a worker's connection: it holds the row, has deferred the tick
    # of 12:00:10 and moved the schedule on, and has not committed yet.
    with psycopg.connect(**connection_kwargs()) as tick:
        tick.execute("SELECT id FROM jobs_schedule WHERE id = %s FOR UPDATE", [every_10s.pk])
        tick.execute(
            "UPDATE jobs_schedule SET next_run_at = %s, run_count = 1 WHERE id = %s",
            [created + 20 * SECOND, every_10s.pk],
        )
        editor = threading.Thread(target=edit)
        editor.start()
        wait_until(waiting_for_a_lock, what="the save waiting for the tick's row")
        tick.commit()
    editor.join(timeout=30)

    assert not errors
    every_10s.refresh_from_db()
    assert every_10s.description == "Renamed"
    # Not 12:00:10 again, which the next tick would defer a second time.
    assert every_10s.next_run_at == created + 20 * SECOND
    assert every_10s.run_count == 1
