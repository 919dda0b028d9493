"""Stored schedules (jobs/schedules.py): what the scheduler defers, tick by tick.

The scheduler itself (`run_due_schedules`) is called here with an explicit `now`, as the
periodic task would call it at that moment, stepping through days that hold a clock change.
The jobs it defers are real rows of procrastinate's table (rolled back with each test).

Then the same with real worker processes: each tick deferred once by three workers (and two
more schedulers in the test), schedules created, edited and disabled while they run,
workers killed in the middle of ticks, an outage, and both kinds of task run.
"""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import threading
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import schedules
from jobs.databases import connection_kwargs
from jobs.models import JobResult, Schedule, ScheduleRun
from jobs.schedules import TickReport, run_due_schedules
from jobs.testing import WorkerProcess, wait_until
from tests.conftest import TEST_TASKS

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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": 6}, "Missing required argument 'b'."),
        ({"a": 6, "b": 7, "c": 8}, "has no argument 'c'."),
        ({"a": 6, "b": "seven"}, "'b' must be an integer."),
    ],
)
def test_validate_schedule__a_django_tasks_arguments_are_checked_against_its_function(
    kwargs: dict[str, Any], message: str
) -> None:
    product = Schedule(
        task="tests.eager_django_tasks.multiply", kwargs=kwargs, interval=1, interval_unit="hours"
    )

    with pytest.raises(ValidationError) as raised:
        product.full_clean()

    assert list(raised.value.message_dict) == ["kwargs"]
    assert message in raised.value.message_dict["kwargs"][0]


def test_validate_schedule__a_django_task_with_its_context() -> None:
    retried = Schedule(
        task="tests.eager_django_tasks.fail_first_attempt",
        kwargs={},
        interval=1,
        interval_unit="hours",
    )
    retried.full_clean()

    retried.kwargs = {"context": 1}
    with pytest.raises(ValidationError, match="has no argument 'context'"):
        retried.full_clean()


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


class TickFailed(Exception):
    pass


def failing_tick(now: dt.datetime) -> None:
    """A tick whose transaction ends without a commit (its worker killed, say)."""
    with transaction.atomic():
        run_due_schedules(now=now)
        raise TickFailed


@pytest.mark.django_db(transaction=True)
def test_run_due_schedules__on_a_workers_connector_jobs_commit_with_the_tick() -> None:
    created = utc(2026, 5, 1, 12)
    every_10s = schedule(
        interval=10, interval_unit="seconds", created_at=created, waiting_from=created
    )

    # What `manage.py procrastinate worker` gives procrastinate's app: its own connections.
    assert isinstance(app.connector, DjangoConnector)
    workers_connector = app.connector.get_worker_connector()
    with app.replace_connector(workers_connector), app.open(), pytest.raises(TickFailed):
        failing_tick(created + 15 * SECOND)

    # Nothing stays of the tick: the next one defers its job, once.
    assert ProcrastinateJob.objects.count() == 0
    assert due_times(every_10s) == []
    every_10s.refresh_from_db()
    assert every_10s.next_run_at == created + 10 * SECOND


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


# --- real worker processes ----------------------------------------------------------------
# The scheduler is jobs.run_schedules, which procrastinate defers every second on the
# "maintenance" queue: the workers below take that queue, and the queue of the scheduled
# task when its jobs should run too.


def runs_of(of: Schedule, *, due_after: dt.datetime | None = None) -> int:
    found = ScheduleRun.objects.filter(schedule=of)
    if due_after is not None:
        found = found.filter(due_at__gt=due_after)
    return found.count()


def has_runs(of: Schedule, count: int) -> bool:
    return runs_of(of) >= count


def scheduler_runs_since(moment: dt.datetime) -> int:
    """Ticks of the scheduler that started after `moment` and finished."""
    return JobResult.objects.filter(
        task_name="jobs.run_schedules", status="succeeded", started_at__gt=moment
    ).count()


def assert_each_tick_once(of: Schedule, step: dt.timedelta) -> list[dt.datetime]:
    """Each tick of `of` deferred once, none skipped between its first and last, and as many
    jobs as runs counted; its ticks."""
    ticks = due_times(of)
    doubled = sorted(tick for tick, count in Counter(ticks).items() if count > 1)
    assert not doubled, f"ticks deferred more than once: {doubled}"
    assert spacing(ticks) == {step}, f"ticks skipped: {ticks}"
    of.refresh_from_db()
    jobs = ProcrastinateJob.objects.filter(task_name=of.task, args=of.kwargs).count()
    assert (of.run_count, jobs) == (len(ticks), len(ticks))
    return ticks


@pytest.mark.django_db(transaction=True)
def test_scheduler__three_workers_defer_each_tick_once(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    workers = [
        start_worker("--queues", "maintenance,tests", "--name", f"w{n}", **TEST_TASKS)
        for n in range(3)
    ]
    by_interval = schedule(interval=1, interval_unit="seconds", kwargs={"n": 1})
    by_cron = schedule(cron="* * * * * *", kwargs={"n": 2})
    # Two more schedulers in this process, running tick after tick without pause: they
    # meet each other, and the workers' ticks, on the same rows every second.
    hammering = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            while not hammering.is_set():
                run_due_schedules()
        except BaseException as error:  # reported by the test, not lost in a thread
            errors.append(error)
        finally:
            connection.close()

    hammers = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in hammers:
        thread.start()
    try:
        for each in (by_interval, by_cron):
            wait_until(partial(has_runs, each, 20), timeout=90, what=f"20 runs of {each}")
    finally:
        hammering.set()
        for thread in hammers:
            thread.join(timeout=30)
    for each in (by_interval, by_cron):
        schedules.set_enabled(each, False)
    for worker in workers:
        assert worker.stop() == 0

    assert not errors
    assert_each_tick_once(by_interval, SECOND)
    assert_each_tick_once(by_cron, SECOND)
    # Every job ran (the workers took the "tests" queue too); the scheduler's own ticks ran
    # on more than one worker.
    assert set(
        ProcrastinateJob.objects.filter(task_name="tests.quick").values_list("status", flat=True)
    ) <= {"succeeded", "todo"}
    tickers = JobResult.objects.filter(task_name="jobs.run_schedules").values("worker_name")
    assert len({row["worker_name"] for row in tickers}) >= 2


@pytest.mark.django_db(transaction=True)
def test_scheduler__created_edited_and_disabled_schedules_take_effect_without_a_restart(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    workers = [
        start_worker("--queues", "maintenance,tests", "--name", f"w{n}", **TEST_TASKS)
        for n in range(2)
    ]
    pids = [worker.process.pid for worker in workers]

    # Created: the workers run it from its first tick, a second after it was saved.
    every = schedule(interval=1, interval_unit="seconds", kwargs={"n": 3})
    wait_until(lambda: runs_of(every) >= 3, timeout=15, what="the new schedule's runs")
    assert due_times(every)[0] == every.created_at + SECOND

    # Edited: every 3 seconds from its next tick on the new timing.
    every.interval = 3
    every.full_clean()
    every.save()
    edited_at = every.updated_at
    wait_until(
        lambda: runs_of(every, due_after=edited_at) >= 3, timeout=30, what="runs after the edit"
    )
    ticks = due_times(every)
    before = [tick for tick in ticks if tick <= edited_at]
    after = [tick for tick in ticks if tick > edited_at]
    assert spacing(before) == {SECOND}
    assert spacing(after) == {3 * SECOND}
    assert after[0] - edited_at <= 3 * SECOND
    assert {(tick - every.created_at) % (3 * SECOND) for tick in after} == {dt.timedelta(0)}

    # Disabled: no run after it, through two more ticks of the scheduler.
    schedules.set_enabled(every, False)
    disabled_at = dt.datetime.now(dt.UTC)
    runs_when_disabled = runs_of(every)
    wait_until(lambda: scheduler_runs_since(disabled_at) >= 2, what="two scheduler ticks")

    assert runs_of(every) == runs_when_disabled
    every.refresh_from_db()
    assert every.next_run_at is None
    assert [worker.process.poll() for worker in workers] == [None, None]
    assert [worker.process.pid for worker in workers] == pids


def in_a_tick() -> bool:
    """Whether another connection is inside a scheduler's transaction: it holds the row lock
    mode that `SELECT ... FOR UPDATE` takes on the schedules' table until it ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks JOIN pg_class ON pg_class.oid = pg_locks.relation "
            "WHERE pg_class.relname = 'jobs_schedule' AND pg_locks.mode = 'RowShareLock' "
            "AND pg_locks.granted AND pg_locks.pid <> pg_backend_pid()"
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_scheduler__workers_killed_during_ticks_defer_nothing_twice(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    checked = schedule(cron="* * * * * *", kwargs={"n": 4})
    # 200 more schedules every second, so that a tick's transaction lasts long enough to be
    # caught. Their jobs are not run (no worker takes "tests").
    Schedule.objects.bulk_create(
        Schedule(
            task="tests.quick",
            kwargs={"n": 1000 + n},
            cron="* * * * * *",
            next_run_at=checked.next_run_at,
        )
        for n in range(200)
    )

    for round_ in range(3):
        worker = start_worker("--queues", "maintenance", "--name", f"killed{round_}", **TEST_TASKS)
        runs_before = runs_of(checked)
        wait_until(partial(has_runs, checked, runs_before + 2), what="ticks of this worker")
        # Killed in the middle of a tick: its transaction holds rows and has deferred jobs.
        wait_until(in_a_tick, what="a tick's transaction under way")
        worker.stop(signal.SIGKILL)

    last = start_worker("--queues", "maintenance", "--name", "last", **TEST_TASKS)
    runs_before = runs_of(checked)
    wait_until(lambda: runs_of(checked) >= runs_before + 3, what="ticks after the kills")
    Schedule.objects.update(enabled=False, next_run_at=None)
    assert last.stop() == 0

    assert_each_tick_once(checked, SECOND)
    pairs = list(ScheduleRun.objects.values_list("schedule_id", "due_at"))
    assert len(pairs) == len(set(pairs)), "a tick of a schedule deferred twice"
    assert ProcrastinateJob.objects.filter(task_name="tests.quick").count() == len(pairs)
    assert sum(Schedule.objects.values_list("run_count", flat=True)) == len(pairs)


@pytest.mark.django_db(transaction=True)
def test_scheduler__after_an_outage_a_worker_catches_up_once_or_waits(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    created = timezone.now() - dt.timedelta(hours=5, minutes=30)
    catching_up = schedule(interval=1, interval_unit="hours", created_at=created, kwargs={"n": 5})
    waiting = schedule(
        interval=1, interval_unit="hours", created_at=created, kwargs={"n": 6}, catch_up=False
    )
    next_tick = created + dt.timedelta(hours=6)
    assert catching_up.next_run_at == waiting.next_run_at == next_tick
    # No worker ran for the last four and a half hours: both still wait for the tick of
    # then (older than JOBS_SCHEDULE_MISSED_AFTER_SECONDS), and the four ticks after it.
    missed = created + dt.timedelta(hours=1)
    Schedule.objects.update(next_run_at=missed)

    worker = start_worker("--queues", "maintenance", "--name", "back", **TEST_TASKS)
    wait_until(
        lambda: set(Schedule.objects.values_list("next_run_at", flat=True)) == {next_tick},
        what="both schedules moved on",
    )
    assert worker.stop() == 0

    assert due_times(catching_up) == [missed]
    assert due_times(waiting) == []
    catching_up.refresh_from_db()
    assert catching_up.run_count == 1


@pytest.mark.django_db(transaction=True)
def test_scheduler__runs_procrastinate_and_django_tasks(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    now = timezone.now()
    procrastinate_task = schedule(once_at=now, kwargs={"n": 7})
    django_task = schedule(
        once_at=now, task="tests.eager_django_tasks.multiply", kwargs={"a": 6, "b": 7}
    )

    worker = start_worker("--queues", "maintenance,tests,default", **TEST_TASKS)
    wait_until(
        lambda: (
            JobResult.objects.filter(
                task_name__in=[procrastinate_task.task, django_task.task], status="succeeded"
            ).count()
            == 2
        ),
        what="both jobs run",
    )
    assert worker.stop() == 0

    for once, value in ((procrastinate_task, 7), (django_task, 42)):
        run = ScheduleRun.objects.get(schedule=once)
        assert JobResult.objects.get(job_id=run.job_id).return_value == value
        once.refresh_from_db()
        assert (once.enabled, once.next_run_at, once.run_count) == (False, None, 1)
