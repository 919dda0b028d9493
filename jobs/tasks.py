"""The job system's own tasks: maintenance of the queue, its results and tokens, and the
runner of allow-listed management commands.

Each task has an explicit `name` (the name stored in job rows must survive a refactoring),
a queue, and a retry policy chosen for what can go wrong in it. Arguments are ids and
JSON-safe values; the task loads what it needs.
"""

from __future__ import annotations

import datetime as dt

from procrastinate import RetryStrategy
from procrastinate.contrib.django import app

from jobs import background_commands, maintenance, retention, schedules, stalled
from jobs.conf import jobs_settings

# The queue of the job system's own work. Workers started without `--queues` listen to
# every queue (and to procrastinate's `builtin` queue).
MAINTENANCE_QUEUE = "maintenance"
# Stalled-job recovery's priority: above any the site's own jobs use. The job API must keep
# its clients' priorities below it, or a client could starve recovery.
RECOVERY_PRIORITY = 1_000_000_000
# The stored schedules' scheduler: just below recovery.
SCHEDULER_PRIORITY = RECOVERY_PRIORITY - 1


# --- Periodic maintenance -----------------------------------------------------------------
# procrastinate's workers defer these on schedule: each tick once, however many workers
# run (its periodic-defers table has a unique key per task and tick). Each task takes the
# tick's `timestamp` and works from it, not from "now", so a late run computes what its
# tick meant. `lock` keeps two runs of a task from running at once; `queueing_lock` keeps
# ticks from piling up behind a slow run (a tick whose predecessor still waits is skipped).


# Every day at 03:30 UTC.
@app.periodic(cron="30 3 * * *", periodic_id="daily")
@app.task(
    name="jobs.delete_expired_tokens",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.delete_expired_tokens",
    queueing_lock="jobs.delete_expired_tokens",
    retry=False,
)
def delete_expired_tokens(timestamp: int) -> dict[str, object]:
    """Delete API tokens expired or revoked more than JOBS_EXPIRED_TOKEN_KEEP_DAYS ago."""
    deleted = maintenance.delete_expired_tokens(
        now=maintenance.from_timestamp(timestamp),
        keep_for=dt.timedelta(days=jobs_settings.JOBS_EXPIRED_TOKEN_KEEP_DAYS),
    )
    return {"deleted": deleted}


# Every day at 00:10 UTC, for the day that just ended.
@app.periodic(cron="10 0 * * *", periodic_id="daily")
@app.task(
    name="jobs.compute_daily_statistics",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.compute_daily_statistics",
    queueing_lock="jobs.compute_daily_statistics",
    # Safe to repeat (update_or_create); a failed run is worth two more tries.
    retry=RetryStrategy(max_attempts=2, wait=300),
)
def compute_daily_statistics(timestamp: int) -> dict[str, object]:
    """Store yesterday's per-task statistics; the same day computed twice changes nothing."""
    tick = maintenance.from_timestamp(timestamp)
    day = maintenance.day_before(tick)
    days = maintenance.compute_daily_statistics(day=day, now=tick)
    return {"date": day.isoformat(), "tasks": len(days)}


# Every hour, on the hour.
@app.periodic(cron="0 * * * *", periodic_id="hourly")
@app.task(
    name="jobs.prune_jobs",
    queue=MAINTENANCE_QUEUE,
    lock="jobs.prune_jobs",
    queueing_lock="jobs.prune_jobs",
    retry=False,
)
def prune_jobs(timestamp: int) -> dict[str, object]:
    """Delete finished jobs (with events and results) past JOBS_RETENTION_HOURS, and the
    finished batches whose jobs are all gone."""
    now = maintenance.from_timestamp(timestamp)
    hours = jobs_settings.JOBS_RETENTION_HOURS
    pruned = retention.prune_jobs(now=now, hours=hours)
    batches = retention.prune_batches(now=now, hours=hours)
    return {**{item.status: item.jobs for item in pruned}, "batches": batches}


# Every minute, ahead of any backlog: workers take jobs by priority, then in the order they
# were deferred, so at the default priority a recovery would wait behind every job deferred
# before it. No `lock`: a recovery whose own worker died would stay `doing` holding it,
# and no later one could run to recover it. Two at once are harmless (jobs/stalled.py
# recovers each attempt once); the queueing lock keeps ticks from piling up.
@app.periodic(cron="* * * * *", periodic_id="every-minute")
@app.task(
    name="jobs.recover_stalled_jobs",
    queue=MAINTENANCE_QUEUE,
    priority=RECOVERY_PRIORITY,
    queueing_lock="jobs.recover_stalled_jobs",
    retry=False,
)
async def recover_stalled_jobs(timestamp: int) -> dict[str, object]:
    """Retry (or fail, per task policy) jobs whose worker stopped sending heartbeats."""
    recovered = await stalled.arecover_stalled_jobs(
        stalled_after=jobs_settings.JOBS_STALLED_WORKER_SECONDS
    )
    return {
        "retried": [r.job_id for r in recovered if r.action == "retried"],
        "failed": [r.job_id for r in recovered if r.action == "failed"],
    }


# Every second, the stored schedules (jobs/schedules.py): one indexed query when none is due.
# Above the site's jobs, so that a backlog does not delay the schedules; the queueing lock
# keeps ticks from piling up behind a slow one (the next tick does what it would have).
# No retry: the next tick is a second away.
@app.periodic(cron="* * * * * *", periodic_id="every-second")
@app.task(
    name="jobs.run_schedules",
    queue=MAINTENANCE_QUEUE,
    priority=SCHEDULER_PRIORITY,
    queueing_lock="jobs.run_schedules",
    retry=False,
)
def run_schedules(timestamp: int) -> dict[str, object]:
    """Defer the jobs of the stored schedules whose time has come."""
    report = schedules.run_due_schedules()
    if timestamp % 60 == 0:
        schedules.prune_ticks(now=maintenance.from_timestamp(timestamp))
    return {
        "deferred": report.deferred,
        "schedules": report.schedules,
        "skipped": report.skipped,
        "broken": report.broken,
    }


@app.task(name="jobs.run_management_command", queue=MAINTENANCE_QUEUE, retry=False)
def run_management_command(
    command: str,
    args: list[str] | None = None,
    timestamp: int | None = None,
    requested_by: str | None = None,
) -> dict[str, object]:
    """Run an allow-listed management command (JOBS_BACKGROUND_COMMANDS) on the worker.

    `timestamp` is given when the scheduler runs it (below); deferred from code or from the
    admin, it is absent. `requested_by` is the username of who deferred it from the admin,
    kept in the job's arguments and its result; jobs deferred otherwise (or queued before
    it existed) have none.
    """
    output = background_commands.run_command(command, list(args or []))
    result: dict[str, object] = {"command": command, "args": list(args or []), "output": output}
    if requested_by is not None:
        result["requested_by"] = requested_by
    return result


# Every day at 03:15 UTC: expired sessions, through the generic command runner. (Applied
# as a call rather than stacked: procrastinate's typing wants a periodic task's first
# parameter to be `timestamp`, which would hide `command` from type checkers.)
app.periodic(
    cron="15 3 * * *",
    periodic_id="clear-expired-sessions",
    task_kwargs={"command": "clear_expired_sessions"},
)(run_management_command)  # type: ignore[arg-type]
