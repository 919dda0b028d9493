"""Stalled-job recovery: jobs left in `doing` by a worker that died.

A worker killed with SIGKILL, or a machine that disappears, cannot finish its jobs; they stay
`doing` forever. Every worker writes a heartbeat (procrastinate's `procrastinate_workers`
table, every `update_heartbeat_interval` seconds). Jobs whose worker's heartbeat is older than
`JOBS_STALLED_WORKER_SECONDS` (or whose worker row is gone) are stalled: procrastinate's
`get_stalled_jobs` finds them, and each is retried if its task's retry policy still allows an
attempt, or marked failed otherwise, through procrastinate's job manager.

A worker lost mid-job is treated like a retryable error whatever the task's
`retry_exceptions` say: the task did not raise, its process vanished.
"""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.utils import timezone
from procrastinate import jobs as procrastinate_jobs
from procrastinate.contrib.django import app


@dataclass(frozen=True)
class Recovered:
    job_id: int
    task_name: str
    action: str  # "retried" or "failed"


def _may_retry(job: procrastinate_jobs.Job) -> bool:
    task = app.tasks.get(job.task_name)
    if task is None or task.retry_strategy is None:
        return False
    max_attempts = getattr(task.retry_strategy, "max_attempts", None)
    # procrastinate's `attempts` counts the retries already made.
    return max_attempts is None or job.attempts < max_attempts


async def arecover_stalled_jobs(*, stalled_after: float, dry_run: bool = False) -> list[Recovered]:
    manager = app.job_manager
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after)
    recovered = []
    for job in stalled:
        assert job.id is not None
        retry = _may_retry(job)
        if not dry_run:
            if retry:
                await manager.retry_job_by_id_async(job.id, retry_at=timezone.now())
            else:
                await manager.finish_job_by_id_async(
                    job.id, status=procrastinate_jobs.Status.FAILED, delete_job=False
                )
        recovered.append(
            Recovered(
                job_id=job.id, task_name=job.task_name, action="retried" if retry else "failed"
            )
        )
    return recovered


def recover_stalled_jobs(*, stalled_after: float, dry_run: bool = False) -> list[Recovered]:
    return async_to_sync(arecover_stalled_jobs)(stalled_after=stalled_after, dry_run=dry_run)
