"""Stalled-job recovery (jobs/stalled.py), with real worker processes.

- A worker killed with SIGKILL mid-job: the job is recovered and finishes elsewhere, once.
- A worker that is only late (its heartbeat older than the heartbeat interval, or than
  procrastinate's own 30 s, but younger than JOBS_STALLED_WORKER_SECONDS) keeps its job.
- Recovery racing the job's own end: whichever commits first, the job runs once.
- A recovery whose own worker died is recovered by the next one; recovery runs ahead of a
  backlog.

Runs are counted from `test_job_runs` (one row per execution, see tests/slow_tasks.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db import connection, transaction
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.types import JSONDict

from jobs import stalled, tasks
from jobs.job_status import job_status
from jobs.models import JobResult
from jobs.testing import WorkerProcess, wait_until
from tests.conftest import TEST_TASKS, JobRuns
from tests.slow_tasks import quick, record_run, record_then_wait

pytestmark = pytest.mark.django_db(transaction=True)


def kill_mid_job(
    start_worker: Callable[..., WorkerProcess],
    task: Any,
    path: Path,
    *,
    after_progress: bool = False,
    **env: str,
) -> int:
    """SIGKILL a worker once it runs `task`: after its progress report if `after_progress`.

    The job is "doing" before the task's first line runs, so a test that reads what the
    task reported must wait for the report itself, not for the status.
    """
    doomed = start_worker("--queues", "tests", "--name", "doomed", **TEST_TASKS, **env)
    job_id = int(task.defer(path=str(path)))
    wait_until(lambda: ProcrastinateJob.objects.filter(id=job_id, status="doing").exists())
    if after_progress:
        wait_until(
            lambda: JobResult.objects.filter(job_id=job_id, status="running").exists(),
            what="the task's progress report",
        )
    doomed.stop(signal.SIGKILL)
    assert ProcrastinateJob.objects.get(id=job_id).status == "doing"
    return job_id


def recover(job_ids: list[int], stalled_after: int = 1) -> str:
    """Run the command once the dead worker's heartbeat is old enough for its jobs."""
    wait_until(
        lambda: (
            {
                r.job_id
                for r in stalled.recover_stalled_jobs(stalled_after=stalled_after, dry_run=True)
            }
            >= set(job_ids)
        ),
        what="the jobs stalled",
    )
    out = StringIO()
    call_command("recover_stalled_jobs", "--stalled-after", str(stalled_after), stdout=out)
    return out.getvalue()


def test_stalled__job_of_a_killed_worker_finishes_once_on_another(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file

    flag = tmp_path / "go"
    job_id = kill_mid_job(start_worker, wait_for_file, flag)
    start_worker(
        "--queues",
        "tests",
        "--name",
        "survivor",
        "--fetch-job-polling-interval",
        "0.2",
        **TEST_TASKS,
    )
    flag.touch()

    dry = StringIO()
    call_command("recover_stalled_jobs", "--stalled-after", "1", "--dry-run", stdout=dry)
    output = recover([job_id])

    assert f"job {job_id} (tests.wait_for_file): retried" in output
    wait_until(lambda: ProcrastinateJob.objects.get(id=job_id).status == "succeeded")
    events = list(ProcrastinateEvent.objects.filter(job_id=job_id).values_list("type", flat=True))
    assert events.count("started") == 2
    assert events.count("succeeded") == 1
    result = JobResult.objects.get(job_id=job_id)
    assert (result.status, result.worker_name, result.attempt) == ("succeeded", "survivor", 2)


def test_stalled__the_lost_attempt_is_logged_before_the_success(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file

    flag = tmp_path / "go"
    job_id = kill_mid_job(start_worker, wait_for_file, flag, after_progress=True)
    doomed_id = ProcrastinateJob.objects.get(id=job_id).worker_id
    # The attempt reported progress: it has a "running" row, with its worker's name.
    assert JobResult.objects.get(job_id=job_id).worker_name == "doomed"

    recover([job_id])

    waiting = job_status(job_id)
    assert waiting is not None
    assert (waiting["status"], waiting["error"]["type"]) == ("todo", "jobs.stalled.WorkerLost")
    assert [e["status"] for e in waiting["attempts_log"]] == ["lost"]
    start_worker("--queues", "tests", "--name", "survivor", **TEST_TASKS)
    flag.touch()
    wait_until(lambda: ProcrastinateJob.objects.get(id=job_id).status == "succeeded")
    lost, succeeded = JobResult.objects.get(job_id=job_id).attempts_log
    assert (lost["attempt"], lost["status"]) == (1, "lost")
    assert (lost["worker_id"], lost["worker_name"]) == (doomed_id, "doomed")
    assert lost["error"]["type"] == "jobs.stalled.WorkerLost"
    assert lost["error"]["message"] == (
        f"Its worker (procrastinate worker {doomed_id}) stopped heartbeating while running "
        "the job: no heartbeat for more than 1 s."
    )
    assert lost["started_at"] <= lost["finished_at"]
    assert (succeeded["attempt"], succeeded["status"], succeeded["error"]) == (2, "succeeded", None)
    assert succeeded["worker_name"] == "survivor"
    assert succeeded["worker_id"] not in (None, doomed_id)
    assert lost["finished_at"] <= succeeded["started_at"]


def test_stalled__a_lost_attempt_without_a_result_row_gets_one(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_quietly

    # Killed before its "running" row: this task reports no progress, and the row would
    # come after ten minutes.
    job_id = kill_mid_job(
        start_worker, wait_quietly, tmp_path / "never", JOBS_RESULT_RUNNING_AFTER_MS="600000"
    )
    doomed_id = ProcrastinateJob.objects.get(id=job_id).worker_id
    assert not JobResult.objects.filter(job_id=job_id).exists()

    output = recover([job_id])

    assert f"job {job_id} (tests.wait_quietly): failed" in output
    result = JobResult.objects.get(job_id=job_id)
    assert (result.status, result.attempt, result.exception_type) == (
        "failed", 1, "jobs.stalled.WorkerLost",
    )  # fmt: skip
    assert result.worker_id == doomed_id
    [lost] = result.attempts_log
    assert (lost["attempt"], lost["status"], lost["worker_id"]) == (1, "lost", doomed_id)
    assert lost["worker_name"] == ""  # the worker wrote nothing that says
    shown = job_status(job_id)
    assert shown is not None
    assert (shown["status"], shown["error"]["type"]) == ("failed", "jobs.stalled.WorkerLost")


def test_stalled__task_without_retry_is_failed(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file_once

    job_id = kill_mid_job(start_worker, wait_for_file_once, tmp_path / "never")

    output = recover([job_id])

    assert f"job {job_id} (tests.wait_for_file_once): failed" in output
    assert ProcrastinateJob.objects.get(id=job_id).status == "failed"


def test_recover_stalled_jobs__nothing_stalled_is_harmless() -> None:
    out = StringIO()
    call_command("recover_stalled_jobs", stdout=out)
    assert "Recovered 0 stalled job(s)" in out.getvalue()


# --- A late worker keeps its job -------------------------------------------------------


def status(job_id: int) -> str:
    return str(ProcrastinateJob.objects.get(id=job_id).status)


def running(job_id: int) -> int:
    """The id of the worker running `job_id`, once it runs."""
    job = ProcrastinateJob.objects.get(id=job_id)
    assert job.status in ("todo", "doing"), job.status
    return int(job.worker_id) if job.status == "doing" and job.worker_id else 0


def age_heartbeat(worker_id: int, seconds: int) -> None:
    """Make a worker's last heartbeat `seconds` old, as a worker silent that long leaves it.

    A write to procrastinate's table only tests make: it stands for a pause the test need
    not sit through.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_workers "
            "SET last_heartbeat = now() - make_interval(secs => %s) WHERE id = %s",
            [seconds, worker_id],
        )


def started_events(job_id: int) -> int:
    return ProcrastinateEvent.objects.filter(job_id=job_id, type="started").count()


def logged(job_id: int) -> list[tuple[int, str]]:
    """The job's attempts log: attempt and status of each entry."""
    log = JobResult.objects.get(job_id=job_id).attempts_log
    return [(entry["attempt"], entry["status"]) for entry in log]


def test_recover_stalled_jobs__leaves_its_job_to_a_late_worker_while_another_starts(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    late = start_worker("--queues", "tests", "--name", "late", **TEST_TASKS)
    job_id = int(record_then_wait.defer(path=str(flag)))
    worker_id = wait_until(lambda: running(job_id), what="the job running")

    late.process.send_signal(signal.SIGSTOP)
    try:
        # Silent for 40 s: longer than procrastinate's default 30 s, within the 60 s of
        # JOBS_STALLED_WORKER_SECONDS. A worker that starts deletes the silent ones it finds.
        age_heartbeat(worker_id, 40)
        start_worker("--queues", "elsewhere", "--name", "newcomer", **TEST_TASKS)
        out = StringIO()
        call_command("recover_stalled_jobs", stdout=out)
    finally:
        late.process.send_signal(signal.SIGCONT)

    assert "Recovered 0 stalled job(s) (no heartbeat for 60 s)" in out.getvalue()
    assert ProcrastinateJob.objects.get(id=job_id).worker_id == worker_id
    flag.touch()
    wait_until(lambda: status(job_id) == "succeeded", what="the job succeeded")
    assert len(job_runs.of([job_id])[job_id]) == 1


def test_recover_stalled_jobs__a_busy_worker_beats_often_enough_for_a_short_threshold(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    start_worker("--queues", "tests", JOBS_STALLED_WORKER_SECONDS="5", **TEST_TASKS)
    job_id = int(record_then_wait.defer(path=str(flag)))
    wait_until(lambda: running(job_id), what="the job running")

    def ran_past_the_threshold() -> bool:
        assert stalled.recover_stalled_jobs(stalled_after=5) == [], "a live worker's job"
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT now() - max(at) > interval '7 seconds' FROM procrastinate_events "
                "WHERE job_id = %s AND type = 'started'",
                [job_id],
            )
            return bool(cursor.fetchone()[0])

    wait_until(ran_past_the_threshold, what="the job running for 7 s")
    flag.touch()
    wait_until(lambda: status(job_id) == "succeeded", what="the job succeeded")
    assert len(job_runs.of([job_id])[job_id]) == 1


# --- Recovery racing the job's own end -------------------------------------------------
# The worker is alive but its heartbeat is made an hour old, so recovery takes its job for
# stalled while the job ends. Row locks held by the test put the two in a chosen order:
# both wait on the test's lock on the job, and PostgreSQL grants it in the order asked.


def lock_waiters() -> int:
    """Sessions waiting on a row lock to end a job (the worker) or to recover it: all but
    the worker's heartbeat, which waits on the lock of its row too."""
    with connection.cursor() as cursor:
        # Inside a transaction pg_stat_activity shows the snapshot of its first read.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query NOT ILIKE '%%procrastinate_update_heartbeat%%'"
        )
        return int(cursor.fetchone()[0])


@contextmanager
def held_as_stalled(job_id: int, worker_id: int) -> Iterator[None]:
    """Until the block ends: the worker's heartbeat is an hour old and cannot be renewed,
    and nobody else may change the job (its end and recovery wait for the block's end)."""
    for _ in range(10):
        age_heartbeat(worker_id, 3600)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM procrastinate_workers WHERE id = %s "
                "AND last_heartbeat < now() - interval '30 minutes' FOR UPDATE",
                [worker_id],
            )
            if cursor.fetchone() is None:
                continue  # a heartbeat came in between: age it again
            cursor.execute("SELECT id FROM procrastinate_jobs WHERE id = %s FOR UPDATE", [job_id])
            yield
            return
    raise AssertionError("the worker's heartbeat could not be made old")


class Recovery(threading.Thread):
    """One run of stalled-job recovery in a thread (its own database connection)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.recovered: list[stalled.Recovered] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.recovered = stalled.recover_stalled_jobs(stalled_after=60)
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            connection.close()

    def result(self) -> list[stalled.Recovered]:
        self.join(timeout=30)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)
        assert self.recovered is not None
        return self.recovered


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails"])
def test_recover_stalled_jobs__a_job_that_ends_first_is_left_alone(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess], tmp_path: Path, fail: bool
) -> None:
    flag = tmp_path / "go"
    start_worker("--queues", "tests", "--name", "late", **TEST_TASKS)
    job_id = int(record_then_wait.defer(path=str(flag), fail=fail))
    worker_id = wait_until(lambda: running(job_id), what="the job running")

    with held_as_stalled(job_id, worker_id):
        flag.touch()
        wait_until(lambda: lock_waiters() == 1, what="the job's end waiting")
        recovery = Recovery()
        recovery.start()  # finds the job running on a silent worker, then waits
        wait_until(lambda: lock_waiters() == 2, what="recovery waiting")

    assert recovery.result() == []
    assert status(job_id) == ("failed" if fail else "succeeded")
    assert len(job_runs.of([job_id])[job_id]) == 1
    assert started_events(job_id) == 1
    assert logged(job_id) == [(1, "failed" if fail else "succeeded")]


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails"])
def test_recover_stalled_jobs__a_job_recovered_first_still_runs_once(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess], tmp_path: Path, fail: bool
) -> None:
    flag = tmp_path / "go"
    start_worker("--queues", "tests", "--name", "late", **TEST_TASKS)
    job_id = int(record_then_wait.defer(path=str(flag), fail=fail))
    worker_id = wait_until(lambda: running(job_id), what="the job running")

    with held_as_stalled(job_id, worker_id):
        recovery = Recovery()
        recovery.start()
        wait_until(lambda: lock_waiters() == 1, what="recovery waiting")
        flag.touch()
        wait_until(lambda: lock_waiters() == 2, what="the job's end waiting")

    # Put back in the queue, then ended by its late worker before anyone took it again.
    assert [(r.job_id, r.action) for r in recovery.result()] == [(job_id, "retried")]
    wait_until(lambda: status(job_id) != "todo", what="the job's end recorded")
    assert status(job_id) == ("failed" if fail else "succeeded")
    assert len(job_runs.of([job_id])[job_id]) == 1
    assert started_events(job_id) == 1
    # Logged as lost by the recovery, then as what it did by its late worker: once.
    assert logged(job_id) == [(1, "failed" if fail else "succeeded")]


# --- A recovery whose worker died ------------------------------------------------------


def test_recover_stalled_jobs_task__recovers_a_recovery_whose_worker_died(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # A worker that took the recovery job and a test job, then died (it never beats again).
    manager = app.job_manager
    dead = async_to_sync(manager.register_worker)()
    recovery = app.configure_task(tasks.recover_stalled_jobs.name)  # its queue and locks
    first = int(recovery.defer(timestamp=0))
    lost = int(quick.defer(n=1))
    for job_id, queue in ((first, "maintenance"), (lost, "tests")):
        fetched = async_to_sync(manager.fetch_job)(queues=[queue], worker_id=dead)
        assert fetched is not None
        assert fetched.id == job_id
    start_worker("--queues", "maintenance", JOBS_STALLED_WORKER_SECONDS="5", **TEST_TASKS)

    def lost_recovered() -> bool:
        # As the workers' scheduler does every minute; refused while one is waiting.
        with suppress(AlreadyEnqueued):
            recovery.defer(timestamp=int(time.time()))
        return status(lost) != "doing"

    wait_until(lost_recovered, what="the test job recovered")
    # Neither task retries: both failed, and the recovery that did it succeeded (its own end
    # is committed just after the jobs it recovered: waited for, not looked at once).
    assert (status(first), status(lost)) == ("failed", "failed")
    wait_until(
        lambda: ProcrastinateJob.objects.filter(
            task_name="jobs.recover_stalled_jobs", status="succeeded"
        ).exists(),
        what="the recovery succeeded",
    )


def test_recover_stalled_jobs_task__runs_ahead_of_a_backlog(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess]
) -> None:
    arguments: list[JSONDict] = [{"n": n, "hold": 0.1} for n in range(60)]
    backlog = record_run.batch_defer(*arguments)
    # As it starts, the worker's scheduler defers the minute's recovery: after the backlog.
    start_worker("--queues", "tests,maintenance", **TEST_TASKS)

    recovery = wait_until(
        lambda: ProcrastinateJob.objects.filter(
            task_name=tasks.recover_stalled_jobs.name, status="succeeded"
        ).first(),
        what="a recovery succeeded",
    )

    # Taken at the worker's next fetch, ahead of the jobs deferred before it: one at most
    # started in between (the one that fetch had taken as the recovery was deferred).
    events = dict(ProcrastinateEvent.objects.filter(job_id=recovery.id).values_list("type", "id"))
    backlog_started = ProcrastinateEvent.objects.filter(job_id__in=backlog, type="started")
    # There was a backlog: a job of it starts after the recovery did (the recovery may end
    # before the worker takes the next one, so wait for that start rather than look once).
    wait_until(
        lambda: backlog_started.filter(id__gt=events["started"]).exists(),
        what="a backlog job started after the recovery",
    )
    assert backlog_started.filter(id__gt=events["deferred"], id__lt=events["started"]).count() <= 1
