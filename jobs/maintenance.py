"""Maintenance work shared by periodic tasks and management commands.

Each function here is the one implementation of a maintenance job: the periodic task in
jobs/tasks.py and the management command of the same name both call it. Functions that
delete take `dry_run` (count what would go, change nothing) and delete in batches, each
in its own transaction, so that a large backlog never holds long locks; `on_progress`
receives the running total after each batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Avg, Count, Max, Q

from jobs.models import ApiToken, DailyTaskStatistics, JobResult

Progress = Callable[[int], None] | None


def delete_in_batches(
    queryset: models.QuerySet[Any], *, batch_size: int, dry_run: bool, on_progress: Progress = None
) -> int:
    """Delete what `queryset` selects, `batch_size` rows per transaction; return the count."""
    if dry_run:
        return queryset.count()
    total = 0
    while True:
        with transaction.atomic():
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return total
            queryset.model._base_manager.filter(pk__in=ids).delete()
        total += len(ids)
        if on_progress is not None:
            on_progress(total)


def clear_expired_sessions(
    *, now: dt.datetime, dry_run: bool = False, batch_size: int = 1000, on_progress: Progress = None
) -> int | None:
    """Delete expired sessions; None when the session engine cannot count them.

    The database engine is cleared in batches (Django's `clearsessions` deletes all rows in
    one statement); other engines get their own `clear_expired()`.
    """
    engine = settings.SESSION_ENGINE
    if engine in (
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cached_db",
    ):
        from django.contrib.sessions.models import Session

        expired = Session.objects.filter(expire_date__lt=now)
        return delete_in_batches(
            expired, batch_size=batch_size, dry_run=dry_run, on_progress=on_progress
        )
    if not dry_run:
        import_module(engine).SessionStore.clear_expired()
    return None


def delete_expired_tokens(
    *, now: dt.datetime, keep_for: dt.timedelta, dry_run: bool = False, on_progress: Progress = None
) -> int:
    """Delete API tokens that expired or were revoked more than `keep_for` before `now`."""
    stale = ApiToken.objects.expired_before(now - keep_for)
    return delete_in_batches(stale, batch_size=500, dry_run=dry_run, on_progress=on_progress)


@dataclass(frozen=True)
class TaskDay:
    task_name: str
    succeeded: int
    failed: int
    aborted: int
    mean_duration: dt.timedelta | None
    max_duration: dt.timedelta | None


def compute_daily_statistics(
    *, day: dt.date, now: dt.datetime, dry_run: bool = False
) -> list[TaskDay]:
    """Store what each task did on `day` (UTC); running it again changes nothing.

    Rows for tasks that no longer appear that day (their results were deleted) are
    removed, so the stored day always equals a fresh computation.
    """
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    rows = (
        JobResult.objects.filter(
            finished_at__gte=start, finished_at__lt=start + dt.timedelta(days=1)
        )
        .values("task_name")
        .annotate(
            succeeded=Count("pk", filter=Q(status=JobResult.Status.SUCCEEDED)),
            failed=Count("pk", filter=Q(status=JobResult.Status.FAILED)),
            aborted=Count("pk", filter=Q(status=JobResult.Status.ABORTED)),
            mean_duration=Avg("duration"),
            max_duration=Max("duration"),
        )
        .order_by("task_name")
    )
    days = [TaskDay(**row) for row in rows]
    if dry_run:
        return days
    with transaction.atomic():
        for task_day in days:
            DailyTaskStatistics.objects.update_or_create(
                date=day,
                task_name=task_day.task_name,
                defaults={
                    "succeeded": task_day.succeeded,
                    "failed": task_day.failed,
                    "aborted": task_day.aborted,
                    "mean_duration": task_day.mean_duration,
                    "max_duration": task_day.max_duration,
                    "computed_at": now,
                },
            )
        DailyTaskStatistics.objects.filter(date=day).exclude(
            task_name__in=[task_day.task_name for task_day in days]
        ).delete()
    return days


def day_before(moment: dt.datetime) -> dt.date:
    return (moment.astimezone(dt.UTC) - dt.timedelta(days=1)).date()


def from_timestamp(timestamp: int) -> dt.datetime:
    """The tick of a periodic task (its `timestamp` argument) as an aware datetime."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
