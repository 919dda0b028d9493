"""The scheduler's own tick jobs: run by a real worker, then pruned by the scheduler."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable

from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import schedules, tasks


def test_prune_ticks__deletes_old_succeeded_ticks_only(
    run_worker: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    ticks = [
        tasks.run_schedules.configure(queueing_lock=f"tick-{n}").defer(timestamp=n) for n in (1, 2)
    ]
    other = tasks.prune_jobs.configure(queueing_lock="p").defer(timestamp=1)
    run_worker("--queues", "maintenance")
    assert set(
        ProcrastinateJob.objects.filter(id__in=[*ticks, other]).values_list("status", flat=True)
    ) == {"succeeded"}
    waiting = tasks.run_schedules.configure(queueing_lock="t3").defer(timestamp=3)

    # Within TICK_KEEP: kept.
    assert schedules.prune_ticks(now=timezone.now()) == 0

    # The worker ran its own periodic ticks too, as it started.
    succeeded_ticks = ProcrastinateJob.objects.filter(
        task_name="jobs.run_schedules", status="succeeded"
    ).count()
    assert succeeded_ticks >= 2
    later = timezone.now() + schedules.TICK_KEEP + dt.timedelta(minutes=1)
    assert schedules.prune_ticks(now=later) == succeeded_ticks
    remaining = set(ProcrastinateJob.objects.values_list("id", flat=True))
    assert other in remaining  # another task's job: retention's business
    assert waiting in remaining  # not finished
    assert not remaining & set(ticks)
