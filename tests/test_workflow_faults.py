"""Batches and chains (jobs/workflows.py) are exactly once under concurrency and faults,
proved with real worker processes and PostgreSQL.

- Two jobs of a batch ending at the same moment on two workers (many rounds, half of them
  with both ends held on the batch's row and let go together, half with one job failing),
  and 200 quick jobs on three busy workers: each callback is deferred once.
- A worker SIGKILLed while running a batch's last job: the batch stays open until
  stalled-job recovery reruns the job, then its callbacks are deferred once.
- A job retried by its task's policy counts once; a waiting job cancelled counts as
  cancelled and, as the last, ends the batch with on_finish only; a waiting job
  rescheduled (replaced by a copy) stays in its batch as the copy.
- Jobs deleted as they end (`--delete-jobs`), before they ran (`cancel_job_by_id(...,
  delete_job=True)`) or after (retention): each counts once, as it ended; the batch lists
  the deleted ones as such.
- A retry by hand reopens a finished batch or a stopped chain; the callbacks already
  deferred are not deferred again. A chain's step deleted as it succeeds hands its return
  value on.
- Procrastinate and Django `@task` functions, sync and async, as jobs, steps and callbacks.

A callback is counted from procrastinate's job table: every callback job deferred for a
batch carries the batch's id in its `batch` argument. Callbacks that must stay countable
after a worker run with `--delete-jobs` go to a queue no worker here takes (`parked`).
"""

from __future__ import annotations

import datetime as dt
import signal
from collections import Counter
from collections.abc import Callable, Iterable
from io import StringIO
from pathlib import Path
from typing import Any, TypedDict

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from jobs import job_actions, retention, stalled, workflows
from jobs.databases import listening_pids
from jobs.job_statuses import FINISHED_STATUSES
from jobs.models import Batch, BatchJob, JobResult
from jobs.testing import WorkerProcess, wait_until
from tests import workflow_tasks as wt

pytestmark = pytest.mark.django_db(transaction=True)

PARKED = "parked"  # a queue no worker of these tests takes
ROUNDS = 25


def on(tag: str, queue: str = "tests") -> workflows.JobSpec:
    """A callback that says which one it is."""
    return workflows.job(wt.callback.configure(queue=queue), tag=tag)


class Callbacks(TypedDict):
    on_success: workflows.JobSpec
    on_finish: workflows.JobSpec
    on_failure: workflows.JobSpec


def callbacks(queue: str = "tests") -> Callbacks:
    """The three callbacks, tagged "success", "finish" and "failure"."""
    return Callbacks(
        on_success=on("success", queue),
        on_finish=on("finish", queue),
        on_failure=on("failure", queue),
    )


def returned(job_id: int | None) -> Any:
    """What the job returned, as its result row keeps it."""
    return JobResult.objects.values_list("return_value", flat=True).get(job_id=job_id)


def deferred_callbacks(batch_id: int) -> Counter[str]:
    """The callback jobs deferred for the batch, by tag, whatever became of them since."""
    return Counter(
        ProcrastinateJob.objects.filter(
            task_name=wt.callback.name, args__batch__id=batch_id
        ).values_list("args__tag", flat=True)
    )


def counts(batch_id: int) -> tuple[int, int, int, int, int]:
    """total, pending, succeeded, failed, cancelled."""
    return Batch.objects.values_list("total", "pending", "succeeded", "failed", "cancelled").get(
        pk=batch_id
    )


def members(batch_id: int) -> list[int]:
    return list(
        BatchJob.objects.filter(batch_id=batch_id)
        .order_by("job_id")
        .values_list("job_id", flat=True)
    )


def statuses(job_ids: Iterable[int]) -> dict[int, str]:
    return dict(ProcrastinateJob.objects.filter(id__in=list(job_ids)).values_list("id", "status"))


def ended(job_ids: list[int]) -> bool:
    found = statuses(job_ids)
    return len(found) == len(job_ids) and set(found.values()) <= set(FINISHED_STATUSES)


def finished(batch_id: int) -> bool:
    return Batch.objects.filter(pk=batch_id, finished_at__isnull=False).exists()


def callbacks_ran(batch: Batch) -> bool:
    """Every callback the batch deferred succeeded."""
    batch.refresh_from_db()
    job_ids = [
        job_id
        for job_id in (batch.on_success_job_id, batch.on_finish_job_id, batch.on_failure_job_id)
        if job_id is not None
    ]
    return bool(job_ids) and set(statuses(job_ids).values()) == {"succeeded"}


def listed(batch_id: int) -> dict[int, tuple[str, str | None]]:
    """The batch's jobs as its status page lists them: id -> (status, ended_as)."""
    status = workflows.batch_status(batch_id)
    assert status is not None
    return {job["id"]: (job["status"], job["ended_as"]) for job in status["jobs"]["results"]}


def start_workers(
    start_worker: Callable[..., WorkerProcess], count: int, *args: str, **env: str
) -> list[WorkerProcess]:
    """`count` workers started together (each pays its start-up while the others do)."""
    before = listening_pids()
    workers = [
        start_worker(*args, "--name", f"worker-{n}", ready=False, **env) for n in range(count)
    ]

    def listening() -> bool:
        for worker in workers:
            assert worker.process.poll() is None, f"a worker exited:\n{worker.output()[-4000:]}"
        return len(listening_pids() - before) >= count

    wait_until(listening, timeout=60, what=f"{count} workers listening")
    return workers


# --- Two last jobs ending at once ---------------------------------------------------------


def running_on_two_workers(job_ids: list[int]) -> bool:
    workers = ProcrastinateJob.objects.filter(id__in=job_ids, status="doing").values_list(
        "worker_id", flat=True
    )
    return len(set(workers)) == 2


def sessions_waiting_for_a_lock() -> int:
    """Sessions waiting for a lock: in these tests, for the one the test holds on a batch's
    row (directly, or queued behind another waiter for the same row)."""
    with connection.cursor() as cursor:
        # Inside a transaction pg_stat_activity shows the snapshot of its first read.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def test_batch__two_last_jobs_ending_at_once_on_two_workers_defer_each_callback_once(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # One slot each: the two jobs of a round run on the two workers, side by side.
    start_workers(start_worker, 2, "--queues", "tests", "--concurrency", "1")

    for round_ in range(ROUNDS):
        # Half the rounds hold both ends on the batch's row and let them go together; in
        # every other pair of rounds one of the two jobs fails.
        end_at_once(
            tmp_path / f"go-{round_}",
            held=bool(round_ % 2),
            one_fails=bool(round_ // 2 % 2),
            what=f"round {round_}",
        )


def end_at_once(flag: Path, *, held: bool, one_fails: bool, what: str) -> None:
    """A batch of two jobs that end at the same moment on two workers: each callback once."""
    second = wt.wait_then_fail if one_fails else wt.wait
    batch = workflows.defer_batch(
        [workflows.job(wt.wait, path=str(flag), n=1), workflows.job(second, path=str(flag), n=2)],
        **callbacks(),
    )
    job_ids = members(batch.pk)
    wait_until(lambda: running_on_two_workers(job_ids), what=f"{what}: both running")
    if held:
        # Both ends reach the batch's row and wait for the test's lock on it; they go on
        # together when the test lets go.
        with transaction.atomic():
            Batch.objects.select_for_update().get(pk=batch.pk)
            flag.touch()
            wait_until(
                lambda: sessions_waiting_for_a_lock() == 2,
                what=f"{what}: both ends waiting for the batch's row",
            )
    else:
        flag.touch()  # both jobs see it within one poll of theirs (20 ms)
    # Each end deferred what it deferred in its own commit: all is in once both ended.
    wait_until(lambda: ended(job_ids), what=f"{what}: both ended")

    if one_fails:
        assert counts(batch.pk) == (2, 0, 1, 1, 0), what
        assert deferred_callbacks(batch.pk) == {"failure": 1, "finish": 1}, what
    else:
        assert counts(batch.pk) == (2, 0, 2, 0, 0), what
        assert deferred_callbacks(batch.pk) == {"success": 1, "finish": 1}, what
    # The workers' slots are free again for the next round's two jobs.
    wait_until(lambda: callbacks_ran(batch), what=f"{what}: callbacks ran")


def test_batch__many_quick_jobs_on_busy_workers_defer_each_callback_once(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_workers(start_worker, 3, "--queues", "tests", "--concurrency", "4")

    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(200)], **callbacks()
    )
    wait_until(lambda: callbacks_ran(batch), timeout=60, what="the batch finished")

    assert counts(batch.pk) == (200, 0, 200, 0, 0)
    assert set(BatchJob.objects.filter(batch=batch).values_list("ended_as", flat=True)) == {
        "succeeded"
    }
    assert deferred_callbacks(batch.pk) == {"success": 1, "finish": 1}
    workers = ProcrastinateJob.objects.filter(id__in=members(batch.pk)).values_list(
        "worker_id", flat=True
    )
    assert len(set(workers)) > 1  # they did end side by side


# --- A worker killed while running the last job -------------------------------------------


def test_batch__last_job_of_a_killed_worker_keeps_it_open_until_recovery_reruns_it(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    doomed = start_worker("--queues", "tests", "--name", "doomed")
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=1), workflows.job(wt.wait, path=str(flag), n=2)],
        **callbacks(),
    )
    first, last = members(batch.pk)
    wait_until(
        lambda: statuses([first, last]) == {first: "succeeded", last: "doing"},
        what="the first job done, the last running",
    )
    doomed.stop(signal.SIGKILL)
    start_worker("--queues", "tests", "--name", "survivor")
    flag.touch()  # the killed run cannot see it; the rerun will

    # The job stays running for a dead worker: nothing ended it, the batch is open.
    assert statuses([last]) == {last: "doing"}
    assert counts(batch.pk) == (2, 1, 1, 0, 0)
    assert not finished(batch.pk)
    assert deferred_callbacks(batch.pk) == {}

    wait_until(
        lambda: (
            last in {r.job_id for r in stalled.recover_stalled_jobs(stalled_after=1, dry_run=True)}
        ),
        what="the dead worker's heartbeat older than a second",
    )
    out = StringIO()
    call_command("recover_stalled_jobs", "--stalled-after", "1", stdout=out)
    assert f"job {last} (tests.wf.wait): retried" in out.getvalue()
    wait_until(lambda: callbacks_ran(batch), what="the rerun ended the batch")

    assert counts(batch.pk) == (2, 0, 2, 0, 0)
    assert deferred_callbacks(batch.pk) == {"success": 1, "finish": 1}
    started = ProcrastinateEvent.objects.filter(job_id=last, type="started").count()
    assert started == 2  # the killed run, and the rerun


# --- Retries and cancels ------------------------------------------------------------------


def test_batch__a_job_retried_by_its_task_counts_once(run_worker: Callable[..., Any]) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.flaky, n=1), workflows.job(wt.double, n=2)], **callbacks()
    )
    flaky_id = members(batch.pk)[0]

    run_worker("--queues", "tests")

    events = Counter(
        ProcrastinateEvent.objects.filter(job_id=flaky_id).values_list("type", flat=True)
    )
    assert (events["started"], events["deferred_for_retry"], events["succeeded"]) == (2, 1, 1)
    assert counts(batch.pk) == (2, 0, 2, 0, 0)
    assert deferred_callbacks(batch.pk) == {"success": 1, "finish": 1}
    assert callbacks_ran(batch)
    success = returned(batch.on_success_job_id)
    assert success["batch"]["succeeded"] == 2


def test_batch__cancelling_its_last_waiting_job_ends_it_with_on_finish_only(
    run_worker: Callable[..., Any],
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=1), workflows.job(wt.double.configure(queue=PARKED), n=2)],
        **callbacks(),
    )
    run_worker("--queues", "tests")
    assert counts(batch.pk) == (2, 1, 1, 0, 0)
    assert deferred_callbacks(batch.pk) == {}

    assert workflows.cancel_rest(batch.pk) == workflows.CancelOutcome(
        cancelled=1, abort_requested=0
    )

    assert counts(batch.pk) == (2, 0, 1, 0, 1)
    batch.refresh_from_db()
    assert workflows.batch_state(batch) == "cancelled"
    assert deferred_callbacks(batch.pk) == {"finish": 1}
    # Nothing left to cancel: nothing changes.
    assert workflows.cancel_rest(batch.pk) == workflows.CancelOutcome(
        cancelled=0, abort_requested=0
    )
    assert counts(batch.pk) == (2, 0, 1, 0, 1)
    assert deferred_callbacks(batch.pk) == {"finish": 1}


def test_batch__a_waiting_job_rescheduled_stays_in_it_as_its_copy(
    run_worker: Callable[..., Any],
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=1), workflows.job(wt.double, n=2)], **callbacks()
    )
    first, second = members(batch.pk)

    # The admin's and the API's reschedule: a waiting job is cancelled and copied.
    copy = job_actions.reschedule([second], at=timezone.now()).replaced[second]

    assert members(batch.pk) == [first, copy]
    assert counts(batch.pk) == (2, 2, 0, 0, 0)
    run_worker("--queues", "tests")
    assert counts(batch.pk) == (2, 0, 2, 0, 0)
    assert deferred_callbacks(batch.pk) == {"success": 1, "finish": 1}
    assert listed(batch.pk) == {first: ("succeeded", "succeeded"), copy: ("succeeded", "succeeded")}


# --- Deleted jobs -------------------------------------------------------------------------


@pytest.mark.parametrize("delete_jobs", ["always", "successful"])
def test_batch__jobs_a_worker_deletes_as_they_end_count_as_they_ended(
    run_worker: Callable[..., Any], delete_jobs: str
) -> None:
    batch = workflows.defer_batch(
        [
            workflows.job(wt.double, n=1),
            workflows.job(wt.flaky, n=2),  # deleted as it succeeds, after a retry
            workflows.job(wt.fail, n=3),
        ],
        **callbacks(PARKED),
    )
    doubled, flaky_id, failing = members(batch.pk)
    alone = int(wt.double.defer(n=4))  # a job of no batch goes the same way

    run_worker("--queues", "tests", "--delete-jobs", delete_jobs)

    assert statuses([alone]) == {}

    assert counts(batch.pk) == (3, 0, 2, 1, 0)
    batch.refresh_from_db()
    assert workflows.batch_state(batch) == "failed"
    assert deferred_callbacks(batch.pk) == {"failure": 1, "finish": 1}
    failed_job = ("deleted", "failed") if delete_jobs == "always" else ("failed", "failed")
    assert listed(batch.pk) == {
        doubled: ("deleted", "succeeded"),
        flaky_id: ("deleted", "succeeded"),
        failing: failed_job,
    }


def test_chain__a_step_deleted_as_it_succeeds_hands_its_result_on(
    run_worker: Callable[..., Any],
) -> None:
    chain = workflows.defer_chain(
        [
            workflows.job(wt.add, n=1),
            workflows.job(wt.add, n=10).result_as("previous"),
            # Fails with what it got, and so stays: a failed job is not deleted.
            workflows.job(wt.fail).result_as("n"),
        ],
        **callbacks(PARKED),
    )

    run_worker("--queues", "tests", "--delete-jobs", "successful")

    first, second, last = members(chain.pk)
    assert statuses([first, second, last]) == {last: "failed"}
    assert ProcrastinateJob.objects.get(id=last).args == {"n": 11}
    assert counts(chain.pk) == (3, 0, 2, 1, 0)
    assert deferred_callbacks(chain.pk) == {"failure": 1, "finish": 1}


def test_batch__waiting_jobs_deleted_by_their_cancel_count_as_cancelled() -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=1), workflows.job(wt.double, n=2)], **callbacks()
    )
    first, second = members(batch.pk)

    assert app.job_manager.cancel_job_by_id(first, delete_job=True)
    assert statuses([first]) == {}
    assert counts(batch.pk) == (2, 1, 0, 0, 1)
    assert not finished(batch.pk)

    assert app.job_manager.cancel_job_by_id(second, delete_job=True)
    assert counts(batch.pk) == (2, 0, 0, 0, 2)
    assert deferred_callbacks(batch.pk) == {"finish": 1}
    assert listed(batch.pk) == {first: ("deleted", "cancelled"), second: ("deleted", "cancelled")}


def test_batch__retention_deleting_its_ended_jobs_changes_nothing(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    start_worker("--queues", "tests")
    batch = workflows.defer_batch(
        [
            workflows.job(wt.double, n=1),
            workflows.job(wt.fail, n=2),
            workflows.job(wt.wait, path=str(flag), n=3),
        ],
        **callbacks(),
    )
    doubled, failing, waiting = members(batch.pk)
    wait_until(
        lambda: (
            statuses(members(batch.pk))
            == {doubled: "succeeded", failing: "failed", waiting: "doing"}
        ),
        what="two jobs ended, one running",
    )
    # Every finished job, as if hours had passed.
    later = timezone.now() + dt.timedelta(hours=2)
    hours = dict.fromkeys(FINISHED_STATUSES, 1)

    pruned = retention.prune_jobs(now=later, hours=hours)

    assert sum(p.jobs for p in pruned) == 2
    assert counts(batch.pk) == (3, 1, 1, 1, 0)  # still open: the running job
    assert deferred_callbacks(batch.pk) == {}
    flag.touch()
    wait_until(lambda: callbacks_ran(batch), what="the last job ended the batch")
    assert counts(batch.pk) == (3, 0, 2, 1, 0)
    assert deferred_callbacks(batch.pk) == {"failure": 1, "finish": 1}
    before = Batch.objects.filter(pk=batch.pk).values().get()

    pruned = retention.prune_jobs(now=later, hours=hours)

    assert sum(p.jobs for p in pruned) == 3  # the last job and both callbacks
    assert Batch.objects.filter(pk=batch.pk).values().get() == before
    assert listed(batch.pk) == {
        doubled: ("deleted", "succeeded"),
        failing: ("deleted", "failed"),
        waiting: ("deleted", "succeeded"),
    }


# --- Retries by hand ----------------------------------------------------------------------


def test_batch__retried_by_hand_reopens_and_defers_only_the_callbacks_not_yet_deferred(
    run_worker: Callable[..., Any], tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=1), workflows.job(wt.fail_until, path=str(fixed), n=2)],
        **callbacks(),
    )
    failing = members(batch.pk)[1]
    run_worker("--queues", "tests")
    batch.refresh_from_db()
    assert counts(batch.pk) == (2, 0, 1, 1, 0)
    assert workflows.batch_state(batch) == "failed"
    assert deferred_callbacks(batch.pk) == {"failure": 1, "finish": 1}
    first_callbacks = (batch.on_finish_job_id, batch.on_failure_job_id)

    fixed.touch()
    assert workflows.retry_failed(batch.pk).done == [failing]

    batch.refresh_from_db()
    assert counts(batch.pk) == (2, 1, 1, 0, 0)
    assert workflows.batch_state(batch) == "running"
    run_worker("--queues", "tests")

    batch.refresh_from_db()
    assert counts(batch.pk) == (2, 0, 2, 0, 0)
    assert workflows.batch_state(batch) == "succeeded"
    assert deferred_callbacks(batch.pk) == {"failure": 1, "finish": 1, "success": 1}
    assert (batch.on_finish_job_id, batch.on_failure_job_id) == first_callbacks
    success = returned(batch.on_success_job_id)
    assert (success["batch"]["succeeded"], success["batch"]["failed"]) == (2, 0)


def test_chain__a_failing_step_stops_it_and_its_retry_by_hand_goes_on(
    run_worker: Callable[..., Any], tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    chain = workflows.defer_chain(
        [
            workflows.job(wt.django_square, n=3),  # Django @task, sync: 9
            workflows.job(wt.django_fail_until, path=str(fixed)).result_as("previous"),  # 10
            workflows.job(wt.django_asquare, n=2).result_as("previous"),  # async: 4 + 10
        ],
        **callbacks(),
    )
    run_worker("--queues", "tests,default")

    chain.refresh_from_db()
    first, failing = members(chain.pk)  # the last step was never deferred
    assert statuses([first, failing]) == {first: "succeeded", failing: "failed"}
    assert not ProcrastinateJob.objects.filter(task_name=wt.django_asquare.module_path).exists()
    assert counts(chain.pk) == (3, 0, 1, 1, 0)
    status = workflows.batch_status(chain.pk)
    assert status is not None
    assert (status["status"], status["counts"]["not_started"]) == ("failed", 1)
    assert deferred_callbacks(chain.pk) == {"failure": 1, "finish": 1}

    fixed.touch()
    assert workflows.retry_failed(chain.pk).done == [failing]
    run_worker("--queues", "tests,default")

    status = workflows.batch_status(chain.pk)
    assert status is not None
    assert status["status"] == "succeeded"
    assert status["counts"]["not_started"] == 0
    assert [job["return_value"] for job in status["jobs"]["results"]] == [9, 10, 14]
    assert counts(chain.pk) == (3, 0, 3, 0, 0)
    assert deferred_callbacks(chain.pk) == {"failure": 1, "finish": 1, "success": 1}


# --- Every kind of task -------------------------------------------------------------------


def test_batch__of_every_kind_of_task_with_django_callbacks(
    run_worker: Callable[..., Any],
) -> None:
    batch = workflows.defer_batch(
        [
            workflows.job(wt.double, n=1),  # procrastinate, sync
            workflows.job(wt.adouble, n=2),  # procrastinate, async
            workflows.job(wt.django_square, 3),  # Django @task, sync
            workflows.job(wt.django_asquare, n=4),  # Django @task, async
        ],
        on_success=workflows.job(wt.django_callback),
        on_finish=workflows.job(wt.django_acallback),
    )

    run_worker("--queues", "tests,default")

    assert counts(batch.pk) == (4, 0, 4, 0, 0)
    status = workflows.batch_status(batch.pk)
    assert status is not None
    assert [job["return_value"] for job in status["jobs"]["results"]] == [2, 4, 9, 16]
    batch.refresh_from_db()
    assert callbacks_ran(batch)
    results = dict(
        JobResult.objects.filter(
            job_id__in=[batch.on_success_job_id, batch.on_finish_job_id]
        ).values_list("job_id", "return_value")
    )
    assert results == {
        batch.on_success_job_id: 4,
        batch.on_finish_job_id: {"total": 4, "failed": 0},
    }
    for task in (wt.django_callback, wt.django_acallback):
        assert ProcrastinateJob.objects.filter(task_name=task.module_path).count() == 1
