"""Workers at scale, with real processes: many jobs through several workers, and groups of
workers that split the queues between them, as machines with different roles would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.types import JSONDict

from bench.worker_tasks import noop_async, noop_sync  # registered in this process too
from jobs.models import JobResult
from jobs.testing import WorkerProcess
from tests.conftest import TEST_TASKS
from tests.slow_tasks import quick
from tests.test_faults import all_succeeded, wait_for_listeners, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DRAINED_JOBS = 100_000
CHUNK = 5_000

# One row per job: how many times it started and succeeded, from procrastinate's events.
RUNS_PER_JOB = """
SELECT j.id,
       count(*) FILTER (WHERE e.type = 'started') AS started,
       count(*) FILTER (WHERE e.type = 'succeeded') AS succeeded
FROM procrastinate_jobs j
LEFT JOIN procrastinate_events e ON e.job_id = j.id
WHERE j.queue_name = 'bench'
GROUP BY j.id
"""


def wait_until_drained(timeout: float) -> None:
    # Once a second: a tighter loop would take CPU from the workers on a small machine.
    deadline = time.monotonic() + timeout
    while ProcrastinateJob.objects.filter(
        queue_name="bench", status__in=["todo", "doing"]
    ).exists():
        assert time.monotonic() < deadline, "the workers did not drain the queue in time"
        time.sleep(1)


@pytest.mark.timeout(1200)
def test_run_workers__drain_100000_jobs_each_exactly_once(
    start_run_workers: Callable[..., WorkerProcess],
) -> None:
    group = start_run_workers(
        "--processes", "2", "--concurrency", "8", "--queues", "bench", "--name", "drain",
        PROCRASTINATE_IMPORT_PATHS="bench.worker_tasks",
        PROCRASTINATE_LOG_LEVEL="WARNING",  # not two lines per job
    )  # fmt: skip
    wait_for_listeners(2, group)

    started = time.monotonic()
    deferred: list[int] = []
    # Deferred while the workers drain, half sync and half async tasks.
    for first in range(0, DRAINED_JOBS, CHUNK):
        task = noop_sync if first % (2 * CHUNK) == 0 else noop_async
        arguments: list[JSONDict] = [{"n": n} for n in range(first, first + CHUNK)]
        deferred += task.batch_defer(*arguments)
    deferring = time.monotonic() - started
    wait_until_drained(timeout=1000)
    draining = time.monotonic() - started

    with connection.cursor() as cursor:
        cursor.execute(RUNS_PER_JOB)
        runs = {job_id: (started_, succeeded) for job_id, started_, succeeded in cursor}
    print(f"deferred in {deferring:.1f} s, drained in {draining:.1f} s")
    assert len(set(deferred)) == DRAINED_JOBS
    assert set(runs) == set(deferred)  # none missing, none extra
    wrong = {job_id: count for job_id, count in runs.items() if count != (1, 1)}
    assert wrong == {}, f"{len(wrong)} jobs did not run exactly once: {list(wrong.items())[:10]}"
    assert (
        ProcrastinateJob.objects.filter(queue_name="bench").exclude(status="succeeded").count() == 0
    )
    assert "exited with code" not in group.output()


def test_run_workers__groups_on_separate_queues_run_only_their_own_jobs(
    start_run_workers: Callable[..., WorkerProcess],
) -> None:
    mail = start_run_workers(
        "--processes", "2", "--queues", "notifications,maintenance", "--name", "mail",
        **TEST_TASKS,
    )  # fmt: skip
    reports = start_run_workers(
        "--processes", "1", "--queues", "reports", "--name", "reports", **TEST_TASKS
    )
    wait_for_listeners(3, mail)

    by_queue = {
        queue: [int(quick.configure(queue=queue).defer(n=n)) for n in range(20)]
        for queue in ("notifications", "maintenance", "reports", "nobody")
    }
    served = by_queue["notifications"] + by_queue["maintenance"] + by_queue["reports"]
    wait_until(lambda: all_succeeded(served), what="every served job succeeded")

    ran_by = dict(JobResult.objects.filter(job_id__in=served).values_list("job_id", "worker_name"))
    assert len(ran_by) == len(served)
    mail_group = {"mail-1", "mail-2"}
    assert {ran_by[job_id] for job_id in by_queue["notifications"]} <= mail_group
    assert {ran_by[job_id] for job_id in by_queue["maintenance"]} <= mail_group
    assert {ran_by[job_id] for job_id in by_queue["reports"]} == {"reports-1"}
    # A queue no group serves keeps its jobs waiting.
    assert set(
        ProcrastinateJob.objects.filter(id__in=by_queue["nobody"]).values_list("status", flat=True)
    ) == {"todo"}
    assert reports.process.poll() is None
