"""Stored schedules (`jobs.models.Schedule`): their rules, and the scheduler that runs them.

There is no scheduler process. procrastinate's workers defer the periodic task
`jobs.run_schedules` every second, each tick once whatever the number of workers (procrastinate's
periodic-defers table); whichever worker takes the tick runs `run_due_schedules`:

1. one query, on a partial index, takes the enabled schedules whose next run has come, and
   locks their rows (`FOR UPDATE SKIP LOCKED`: a second tick running at the same time takes
   other rows, or none);
2. one statement defers their jobs (procrastinate's own defer function, jobs/deferring.py);
3. one records the runs, one moves each schedule's next run on.

All in one transaction: a worker that dies in the middle of a tick leaves the schedules as
they were, and the next tick defers their jobs; a tick never defers a job its schedule's row
does not count. So each tick of a schedule is deferred once, with any number of workers.

Missed ticks. Ticks that came due within the last JOBS_SCHEDULE_MISSED_AFTER_SECONDS (60 by
default) are all deferred: a late scheduler tick (a busy or restarting worker) leaves no gap.
Ticks older than that were missed by an outage: a schedule with `catch_up` (the default) runs
once for all of them, one without waits for its next tick.

A schedule whose task is not in the code any more (renamed, removed) defers nothing: its next
run moves on, and the admin, `/health/` and `/metrics` report it as broken.

Django tasks scheduled here are deferred like procrastinate's (no `task_enqueued` signal).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, Min
from django.db.models.functions import Now
from django.utils import timezone
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import tasks as procrastinate_tasks
from procrastinate.jobs import Job

from jobs import schedule_times
from jobs.conf import MAX_API_PRIORITY, jobs_settings
from jobs.deferring import defer_jobs
from jobs.job_times import ScheduleError as TimeError
from jobs.job_times import to_utc
from jobs.models import Schedule, ScheduleRun
from jobs.out_of_range_times import EARLIEST, LATEST
from jobs.postgres_values import PG_INT_MIN, text_problem
from jobs.task_registry import find_task

logger = logging.getLogger(__name__)

# Schedules taken per transaction; a tick with more due runs several.
BATCH = 1000
# A schedule's timing: when one of these changes, its next run is computed again from now.
TIMING_FIELDS = ("cron", "interval", "interval_unit", "once_at", "timezone", "start_at", "end_at")
# A single time may lie this far in the past (it then runs at once, as a missed tick).
ONCE_MAX_PAST = dt.timedelta(days=1)
# The longest interval: about ten years.
MAX_INTERVAL = dt.timedelta(days=3660)


class ScheduleError(Exception):
    """A schedule cannot do what was asked (run a broken one now); the message says why."""


# --- when ------------------------------------------------------------------------------------


def ticks_after(schedule: Schedule, after: dt.datetime) -> Iterator[dt.datetime]:
    """The schedule's ticks strictly after `after`, within its start and end times."""
    if schedule.start_at is not None and after < schedule.start_at:
        after = schedule.start_at - dt.timedelta(microseconds=1)
    ticks: Iterator[dt.datetime]
    if schedule.cron:
        ticks = schedule_times.cron_ticks(schedule.cron, schedule.timezone, after=after)
    elif schedule.interval:
        anchor = schedule.start_at or schedule.created_at
        ticks = schedule_times.interval_ticks(
            schedule.interval, schedule.interval_unit, anchor=anchor, after=after
        )
    elif schedule.once_at is not None:
        ticks = iter([schedule.once_at] if schedule.once_at > after else [])
    else:
        return
    end = schedule.end_at
    yield from (ticks if end is None else itertools.takewhile(lambda tick: tick <= end, ticks))


def next_tick(schedule: Schedule, after: dt.datetime) -> dt.datetime | None:
    return next(ticks_after(schedule, after), None)


def next_run_on_save(schedule: Schedule) -> dt.datetime | None:
    """`next_run_at` for a schedule being saved (`Schedule.save`).

    Disabled: none. Timing unchanged: the tick it already waits for, even one that came due
    a moment ago (editing a description must not skip a run). New, enabled again, or timed
    differently: the first tick from now on; for a single time, that time even if it just
    passed (it runs at once), unless it ran already.
    """
    if not schedule.enabled:
        return None
    stored = None
    if schedule.pk is not None:
        stored = (
            Schedule.objects.filter(pk=schedule.pk)
            .values("enabled", "next_run_at", *TIMING_FIELDS)
            .first()
        )
    if (
        stored is not None
        and stored["enabled"]
        and all(stored[name] == getattr(schedule, name) for name in TIMING_FIELDS)
    ):
        return stored["next_run_at"]  # type: ignore[no-any-return]
    return first_run(schedule, timezone.now())


def first_run(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The first run of a schedule new or timed anew at `now`: its first tick from now on;
    for a single time, that time even if it just passed (it runs at once), unless it ran."""
    if schedule.once_at is not None:
        if schedule.last_run_at is not None and schedule.last_run_at >= schedule.once_at:
            return None  # it ran
        if schedule.end_at is not None and schedule.once_at > schedule.end_at:
            return None
        return max(schedule.once_at, schedule.start_at or schedule.once_at)
    return next_tick(schedule, now)


# --- checks ----------------------------------------------------------------------------------


def validate_schedule(schedule: Schedule) -> None:
    """Every rule of a schedule, as `ValidationError`s on its fields (`Schedule.clean`)."""
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    for name in ("task", "description", "cron", "timezone", "queue"):
        if problem := text_problem(getattr(schedule, name) or ""):
            add(name, f"Not storable: {problem}.")
    for name in ("once_at", "start_at", "end_at"):
        if problem := _time_problem(getattr(schedule, name)):
            add(name, problem)
    if errors:
        raise ValidationError(errors)

    task = find_task(schedule.task) if schedule.task else None
    if not schedule.task:
        add("task", "Name the task to run.")
    elif task is None:
        add("task", f"No task named {schedule.task!r} in this site's code.")
    _check_kwargs(schedule, task, add)

    kinds = [
        name
        for name, given in (
            ("cron", bool(schedule.cron)),
            ("interval", schedule.interval is not None),
            ("once_at", schedule.once_at is not None),
        )
        if given
    ]
    if not kinds:
        add("cron", "Give a cron line, an interval or a single time.")
    for name in kinds[1:]:
        add(name, "Give only one of a cron line, an interval or a single time.")

    try:
        schedule_times.time_zone(schedule.timezone)
    except schedule_times.ScheduleTimeError as error:
        add("timezone", str(error))
    if schedule.cron and (problem := schedule_times.cron_problem(schedule.cron)):
        add("cron", problem)
    if schedule.interval is not None:
        unit = schedule_times.UNITS.get(schedule.interval_unit)
        if unit is None:
            add("interval_unit", "Seconds, minutes, hours or days.")
        elif schedule.interval < 1:
            add("interval", "At least 1.")
        elif schedule.interval > MAX_INTERVAL // unit:  # (multiplied, it could overflow)
            add("interval", "At most about ten years.")
    now = timezone.now()
    if schedule.once_at is not None and schedule.once_at < now - ONCE_MAX_PAST:
        add("once_at", "At most a day in the past.")
    if schedule.start_at and schedule.end_at and schedule.end_at <= schedule.start_at:
        add("end_at", "Must be after the start.")
    if schedule.queue and len(schedule.queue) > 128:
        add("queue", "At most 128 characters.")
    if schedule.priority is not None and not PG_INT_MIN <= schedule.priority <= MAX_API_PRIORITY:
        add("priority", f"From {PG_INT_MIN} to {MAX_API_PRIORITY}.")
    if errors:
        raise ValidationError(errors)
    if kinds != ["once_at"] and next_tick(schedule, max(now, schedule.start_at or now)) is None:
        field_name = "end_at" if schedule.end_at is not None else kinds[0]
        raise ValidationError({field_name: "This schedule would never run."})


def _time_problem(value: dt.datetime | None) -> str | None:
    """Why `value` cannot be a schedule's time: it must be readable back from PostgreSQL
    and shown in any time zone, which a time within a day of datetime's limits is not."""
    if value is None:
        return None
    try:
        in_utc = to_utc(value)
    except TimeError as error:
        return str(error)
    if not EARLIEST <= in_utc <= LATEST:
        return f"Out of range: from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)."
    return None


def _check_kwargs(
    schedule: Schedule,
    task: procrastinate_tasks.Task[Any, Any, Any] | None,
    add: Any,
) -> None:
    from jobs.django_tasks import check_jsonb
    from jobs.http_tasks import ArgumentError, check_arguments

    if not isinstance(schedule.kwargs, dict):
        add("kwargs", 'A JSON object of keyword arguments, such as {} or {"user_id": 3}.')
        return
    try:
        check_jsonb(schedule.kwargs)
    except (TypeError, ValueError) as error:
        add("kwargs", str(error))
        return
    if task is None:
        return
    try:
        # A Django task's own function, not the runner procrastinate calls (http_tasks).
        check_arguments(task, schedule.kwargs)
    except ArgumentError as error:
        add("kwargs", str(error))


# --- in words ----------------------------------------------------------------------------------


def describe(schedule: Schedule) -> str:
    """When the schedule runs, in words."""
    from jobs.periodic import describe_cron

    if schedule.cron:
        try:
            words = describe_cron(schedule.cron)
        except Exception:
            words = schedule.cron
        return f"{words} ({schedule.timezone})"
    if schedule.interval:
        unit = schedule.interval_unit
        if schedule.interval == 1:
            return f"Every {unit.removesuffix('s')}"
        return f"Every {schedule.interval} {unit}"
    if schedule.once_at is not None:
        return f"Once, at {schedule.once_at:%Y-%m-%d %H:%M:%S %Z}"
    return "Never"


def is_broken(schedule: Schedule) -> bool:
    """Whether the schedule's task is missing from the code."""
    return find_task(schedule.task) is None


def broken_schedules() -> list[Schedule]:
    """Enabled schedules whose task the code does not have."""
    names = Schedule.objects.filter(enabled=True).values_list("task", flat=True).distinct()
    missing = missing_tasks(names)
    if not missing:
        return []
    return list(Schedule.objects.filter(enabled=True, task__in=missing))


def missing_tasks(names: Iterable[str]) -> list[str]:
    """Of the task names `names`, those the code does not have, sorted."""
    return sorted({name for name in names if find_task(name) is None})


# --- running ----------------------------------------------------------------------------------


@dataclass
class TickReport:
    deferred: int = 0
    schedules: int = 0
    skipped: int = 0  # a queueing lock held: procrastinate's rule, as for periodic tasks
    broken: list[int] = field(default_factory=list)


def _plan(schedule: Schedule, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The ticks to defer now for a due schedule, and its next run after them."""
    first = schedule.next_run_at
    if first is None:
        # Written without `save()`: its first run is computed now, as `save()` would have.
        first = first_run(schedule, now)
        if first is None or first > now:
            return [], first
    window_start = now - dt.timedelta(seconds=jobs_settings.JOBS_SCHEDULE_MISSED_AFTER_SECONDS)
    missed = first <= window_start
    tick = next_tick(schedule, window_start) if missed else first
    recent = []
    while tick is not None and tick <= now:
        recent.append(tick)
        tick = next_tick(schedule, tick)
    if recent:
        return recent, tick
    return ([first] if missed and schedule.catch_up else []), tick


def _job(schedule: Schedule, task: procrastinate_tasks.Task[Any, Any, Any]) -> Job:
    options: dict[str, Any] = {"task_kwargs": dict(schedule.kwargs)}
    if schedule.queue:
        options["queue"] = schedule.queue
    if schedule.priority is not None:
        options["priority"] = schedule.priority
    return task.configure(**options).job


def _defer(jobs: list[Job]) -> list[tuple[int, dt.datetime] | None]:
    """Defer `jobs` in one statement; if a queueing lock is held, one by one, each in a
    savepoint, skipping the held ones (None).

    On Django's connection, inside the tick's transaction (jobs.deferring): the jobs of a
    tick that fails or is killed go with its runs and its next run.
    """
    if not jobs:
        return []
    try:
        with transaction.atomic():
            return list(defer_jobs(jobs))
    except procrastinate_exceptions.AlreadyEnqueued:
        pass
    results: list[tuple[int, dt.datetime] | None] = []
    for job in jobs:
        try:
            with transaction.atomic():
                results.append(defer_jobs([job])[0])
        except procrastinate_exceptions.AlreadyEnqueued:
            results.append(None)
    return results


def run_due_schedules(*, now: dt.datetime | None = None) -> TickReport:
    """Defer the jobs of every schedule whose next run has come (jobs.tasks.run_schedules)."""
    report = TickReport()
    while True:
        at = now or timezone.now()
        with transaction.atomic():
            due = list(
                Schedule.objects.due(at)
                .select_for_update(skip_locked=True)
                .order_by("next_run_at")[:BATCH]
            )
            if not due:
                return report
            _run(due, at, report)
        if len(due) < BATCH:
            return report


def _run(due: list[Schedule], at: dt.datetime, report: TickReport) -> None:
    planned: list[tuple[Schedule, dt.datetime]] = []
    jobs: list[Job] = []
    for schedule in due:
        ticks, schedule.next_run_at = _plan(schedule, at)
        task = find_task(schedule.task)
        if task is None:
            report.broken.append(schedule.pk)
            logger.warning(
                "Schedule %s: no task named %r in the code; nothing deferred",
                schedule.pk,
                schedule.task,
            )
            continue
        for tick in ticks:
            planned.append((schedule, tick))
            jobs.append(_job(schedule, task))
    runs = []
    for (schedule, tick), deferred in zip(planned, _defer(jobs), strict=True):
        if deferred is None:
            report.skipped += 1
            continue
        job_id, deferred_at = deferred
        runs.append(
            ScheduleRun(schedule=schedule, job_id=job_id, due_at=tick, deferred_at=deferred_at)
        )
        schedule.run_count += 1
        schedule.last_run_at = deferred_at
    for schedule in due:
        if schedule.next_run_at is None:
            schedule.enabled = False  # a single time that ran, or past its end: done
    ScheduleRun.objects.bulk_create(runs)
    _move_on(due)
    report.deferred += len(runs)
    report.schedules += len(due)


# The scheduler's own tick jobs, one a second, are of no interest once they succeeded: kept
# TICK_KEEP, then deleted by the scheduler itself, oldest first, a bounded batch a minute
# (JOBS_RETENTION_HOURS would keep 600,000 of them a week). Failed ones are left to
# retention, which keeps them for a look.
TICK_TASK = "jobs.run_schedules"
TICK_KEEP = dt.timedelta(minutes=10)
PRUNE_TICKS_SQL = """
DELETE FROM procrastinate_jobs WHERE id IN (
    SELECT j.id FROM procrastinate_jobs j
    WHERE j.task_name = %(task)s AND j.status = 'succeeded'
      AND NOT EXISTS (
          SELECT 1 FROM procrastinate_events e WHERE e.job_id = j.id AND e.at >= %(cutoff)s
      )
    ORDER BY j.id
    LIMIT 5000
)
"""


def prune_ticks(*, now: dt.datetime) -> int:
    """Delete the scheduler's succeeded tick jobs older than TICK_KEEP; how many."""
    with connection.cursor() as cursor:
        cursor.execute(PRUNE_TICKS_SQL, {"task": TICK_TASK, "cutoff": now - TICK_KEEP})
        return int(cursor.rowcount)


# Moves the scheduler's columns of a batch of schedules on, one array per column.
MOVE_ON_SQL = """
UPDATE jobs_schedule
SET next_run_at = moved.next_run_at, last_run_at = moved.last_run_at,
    run_count = moved.run_count, enabled = moved.enabled
FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::integer[], %s::boolean[])
    AS moved(id, next_run_at, last_run_at, run_count, enabled)
WHERE jobs_schedule.id = moved.id
"""


def _move_on(due: list[Schedule]) -> None:
    """Store the next run, last run, run count and enabled flag of `due` in one statement.

    Not `bulk_update`: it writes a CASE branch per row and column, which for a batch of a
    thousand schedules costs Django seconds to build and PostgreSQL a scan of a thousand
    branches for each row.
    """
    columns = ("pk", "next_run_at", "last_run_at", "run_count", "enabled")
    with connection.cursor() as cursor:
        cursor.execute(
            MOVE_ON_SQL, [[getattr(schedule, name) for schedule in due] for name in columns]
        )


def run_now(schedule_id: int, *, requested_by: str = "") -> ScheduleRun:
    """Defer one job of the schedule at once, counted with its runs ("run now")."""
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().get(pk=schedule_id)
        task = find_task(schedule.task)
        if task is None:
            raise ScheduleError(f"No task named {schedule.task!r} in this site's code.")
        deferred = _defer([_job(schedule, task)])[0]
        if deferred is None:
            raise ScheduleError("A job of this task with the same queueing lock is waiting.")
        job_id, deferred_at = deferred
        run = ScheduleRun.objects.create(
            schedule=schedule,
            job_id=job_id,
            due_at=deferred_at,
            deferred_at=deferred_at,
            by_hand=True,
            requested_by=requested_by[:150],
        )
        Schedule.objects.filter(pk=schedule.pk).update(
            run_count=schedule.run_count + 1, last_run_at=deferred_at
        )
    return run


def set_enabled(schedule: Schedule, enabled: bool) -> bool:
    """Enable or disable `schedule` (its next run computed again); whether it changed."""
    if schedule.enabled == enabled:
        return False
    schedule.enabled = enabled
    schedule.save(update_fields=["enabled", "updated_at"])
    return True


def enable(schedule: Schedule) -> bool:
    """Enable `schedule` if it passes the admin form's checks (its task exists, its arguments
    fit it, its single time is not long past) and would run again; whether it changed.
    `ScheduleError` says why not, and changes nothing."""
    if schedule.enabled:
        return False
    try:
        schedule.full_clean()
    except ValidationError as error:
        problems = "; ".join(
            " ".join(messages) if name == NON_FIELD_ERRORS else f"{name}: {' '.join(messages)}"
            for name, messages in error.message_dict.items()
        )
        raise ScheduleError(f"Schedule {schedule.pk} cannot be enabled: {problems}") from error
    with transaction.atomic():
        set_enabled(schedule, True)
        if schedule.next_run_at is None:
            raise ScheduleError(
                f"Schedule {schedule.pk} cannot be enabled: it would never run again."
            )
    return True


def set_enabled_by_id(ids: Collection[int], *, enabled: bool) -> list[tuple[Schedule, bool]]:
    """Enable or disable the schedules `ids`: all of them, or none (`ScheduleError` says why).

    None when an id is unknown, or when a schedule being enabled fails the admin form's
    checks (its task is missing, its arguments no longer fit it, its single time is long
    past) or would never run again (its end or its single time has passed). Each schedule
    comes back with whether it changed.
    """
    wanted = sorted(set(ids))
    with transaction.atomic():
        schedules = list(Schedule.objects.select_for_update().filter(pk__in=wanted).order_by("pk"))
        if unknown := sorted(set(wanted) - {schedule.pk for schedule in schedules}):
            raise ScheduleError(f"No schedule with id {', '.join(map(str, unknown))}.")
        changes = []
        for schedule in schedules:
            # Raised inside the transaction: the schedules enabled before it are not.
            changed = enable(schedule) if enabled else set_enabled(schedule, False)
            changes.append((schedule, changed))
    return changes


# --- for operators: commands, /health/, /metrics ------------------------------------------------


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as the console shows it."""

    id: int
    task: str
    description: str
    enabled: bool
    broken: bool  # enabled, and its task is missing from the code
    when: str  # in words
    queue: str
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    run_count: int


def schedule_overview(*, chunk_size: int = 1000) -> Iterator[ScheduleInfo]:
    """Every schedule, by id, read in chunks."""
    found: dict[str, bool] = {}  # one look-up per task name, not per schedule
    for schedule in Schedule.objects.order_by("pk").iterator(chunk_size=chunk_size):
        if schedule.task not in found:
            found[schedule.task] = find_task(schedule.task) is not None
        yield ScheduleInfo(
            id=schedule.pk,
            task=schedule.task,
            description=schedule.description,
            enabled=schedule.enabled,
            broken=schedule.enabled and not found[schedule.task],
            when=describe(schedule),
            queue=schedule.queue,
            next_run_at=schedule.next_run_at,
            last_run_at=schedule.last_run_at,
            run_count=schedule.run_count,
        )


@dataclass(frozen=True)
class ScheduleCounts:
    """Schedules by state, each in one: `enabled` (the scheduler runs them), `disabled`, and
    `broken` (enabled, but their task is missing from the code: see `broken_schedules`)."""

    enabled: int = 0
    disabled: int = 0
    broken: int = 0
    missing_tasks: tuple[str, ...] = ()  # the tasks of the broken ones


def schedule_counts() -> ScheduleCounts:
    """The schedules counted by state: one query, grouped by task."""
    rows = list(Schedule.objects.order_by().values_list("enabled", "task").annotate(Count("pk")))
    missing = missing_tasks(task for enabled, task, _ in rows if enabled)
    gone = set(missing)
    broken = sum(count for enabled, task, count in rows if enabled and task in gone)
    return ScheduleCounts(
        enabled=sum(count for enabled, _, count in rows if enabled) - broken,
        disabled=sum(count for enabled, _, count in rows if not enabled),
        broken=broken,
        missing_tasks=tuple(missing),
    )


def overdue_seconds() -> float:
    """How long the most overdue enabled schedule has waited past its next run, by the
    database's clock (0 if none is due): how far behind the scheduler is. A second or two
    when all is well; it grows while no worker serves the maintenance queue. One probe of
    the scheduler's index."""
    lag = (
        Schedule.objects.filter(enabled=True, next_run_at__lte=Now())
        .aggregate(lag=ExpressionWrapper(Now() - Min("next_run_at"), output_field=DurationField()))
        .get("lag")
    )
    return lag.total_seconds() if lag is not None else 0.0
