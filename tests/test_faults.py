"""What workers guarantee when things go wrong, proved with real processes and PostgreSQL.

- SIGTERM: running jobs finish, no job starts after the signal, the rest waits for the
  next worker. A second SIGTERM stops a worker at once; its jobs are recovered.
- `run_workers`: SIGTERM stops all of its workers the same graceful way.
- PostgreSQL restarted under running and waiting jobs: the workers reconnect by
  themselves, LISTEN/NOTIFY works again, every job runs once.
- Migrations applied while workers drain and jobs are deferred (this project's indexes,
  procrastinate's fetch function and events trigger): nothing is lost, events stay right.
- Thousands of jobs drained while workers are killed mid-job, PostgreSQL restarts and the
  workers run stalled-job recovery: every job ends, and runs again only after its worker
  died, once per recovery (README, "Guarantees").

Every check reads the database: job statuses, procrastinate's events (one "started" event
per run of a job) and, for the tasks that record them, the executions themselves (one row
per run in `test_job_runs`, see tests/slow_tasks.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.db import close_old_connections, connection, connections
from django.db.migrations.recorder import MigrationRecorder
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.types import JSONDict

from jobs import stalled, tasks, testing
from jobs.databases import listening_pids
from jobs.models import JobResult
from jobs.testing import WorkerProcess
from project import embedded_postgres
from tests.conftest import TEST_TASKS, JobRuns, child_processes, close_connections_cut_by_a_restart
from tests.slow_tasks import (
    RUNS_TABLE,
    query_around_wait,
    quick,
    record_run,
    wait_for_file,
    wait_quietly,
)

# Real processes under a PostgreSQL restart or a migration: a minute, not the default 30 s.
wait_until = functools.partial(testing.wait_until, timeout=60)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_dead_connection_left() -> Iterator[None]:
    """A PostgreSQL restart ends every open connection: the test's own, and the one Django
    keeps on asgiref's thread for the ORM calls of async tests, which a later async test
    would find closed ("terminating connection due to administrator command"). Each test
    here closes both after it, whatever it did; they reconnect when next used."""
    yield
    connections.close_all()
    asyncio.run(sync_to_async(connections.close_all)())


def statuses(job_ids: Iterable[int]) -> dict[int, str]:
    return dict(ProcrastinateJob.objects.filter(id__in=list(job_ids)).values_list("id", "status"))


def runs(job_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(number of "started" events, number of "succeeded" events) per job."""
    counts = {job_id: (0, 0) for job_id in job_ids}
    events = ProcrastinateEvent.objects.filter(
        job_id__in=list(counts), type__in=["started", "succeeded"]
    ).values_list("job_id", "type")
    for job_id, kind in events:
        started, succeeded = counts[job_id]
        counts[job_id] = (started + (kind == "started"), succeeded + (kind == "succeeded"))
    return counts


def assert_ran_once(job_ids: Iterable[int]) -> None:
    """Each job started once and succeeded once; the message shows what went wrong."""
    counts = runs(job_ids)
    offenders = sorted(job_id for job_id, count in counts.items() if count != (1, 1))
    if offenders:
        events = ProcrastinateEvent.objects.filter(job_id__in=offenders[:5]).order_by("id")
        results = JobResult.objects.filter(job_id__in=offenders[:5]).values_list(
            "job_id", "status", "worker_name", "attempt", "exception_type", "exception_message"
        )
        raise AssertionError(
            f"{len(offenders)} of {len(counts)} jobs did not run exactly once: "
            f"{[(job_id, counts[job_id]) for job_id in offenders[:5]]}\n"
            f"events: {list(events.values_list('job_id', 'type', 'at'))}\n"
            f"results: {list(results)}"
        )


def all_succeeded(job_ids: list[int]) -> bool:
    """Whether every job succeeded; a failed one (final) ends the wait at once."""
    found = statuses(job_ids)
    failed = sorted(job_id for job_id, status in found.items() if status == "failed")
    if failed:
        results = JobResult.objects.filter(job_id__in=failed[:5]).values_list(
            "job_id", "exception_type", "exception_message"
        )
        raise AssertionError(f"{len(failed)} jobs failed: {list(results)}")
    return len(found) == len(job_ids) and set(found.values()) == {"succeeded"}


def listening_workers() -> int:
    """One LISTEN connection per running worker process."""
    close_old_connections()  # this test's connection is replaced after a restart
    return len(listening_pids())


def wait_for_listeners(count: int, group: WorkerProcess | None = None) -> None:
    def ready() -> bool:
        if group is not None and group.process.poll() is not None:
            raise AssertionError(f"run_workers exited:\n{group.output()[-4000:]}")
        return listening_workers() == count

    wait_until(ready, what=f"{count} listening workers")


def running_jobs(job_ids: list[int]) -> int:
    return ProcrastinateJob.objects.filter(id__in=job_ids, status="doing").count()


class Deferrer(threading.Thread):
    """Defers jobs (`tests.quick` unless told) one at a time, as a busy site would, until
    stopped.

    A defer that fails (the database is restarting) is tried again on a new connection;
    only defers that returned a job id count as deferred.
    """

    def __init__(self, defer: Callable[[int], int] | None = None) -> None:
        super().__init__(daemon=True)
        self.defer = defer or (lambda n: int(quick.defer(n=n)))
        self.job_ids: list[int] = []
        self.failures = 0
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    def run(self) -> None:
        try:
            n = 0
            while not self._stop_requested.is_set():
                try:
                    self.job_ids.append(self.defer(n))
                    n += 1
                except Exception:
                    self.failures += 1
                    close_old_connections()  # a broken connection is replaced on next use
                    time.sleep(0.05)
                time.sleep(0.005)
        except BaseException as error:  # reported by the test, not lost in a thread
            self.error = error
        finally:
            connection.close()

    def stop(self) -> list[int]:
        self._stop_requested.set()
        self.join(timeout=30)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)
        return self.job_ids

    def wait_for(self, count: int) -> None:
        wait_until(lambda: len(self.job_ids) >= count, what=f"{count} deferred jobs")


@contextmanager
def deferring(defer: Callable[[int], int] | None = None) -> Iterator[Deferrer]:
    deferrer = Deferrer(defer)
    deferrer.start()
    try:
        yield deferrer
    finally:
        deferrer.stop()


# --- SIGTERM ------------------------------------------------------------------------------


def test_worker__sigterm_lets_running_jobs_finish_and_starts_no_new_one(
    start_worker: Callable[..., WorkerProcess], run_worker: Callable[..., Any], tmp_path: Path
) -> None:
    flag = tmp_path / "finish"
    worker = start_worker(
        "--queues", "tests", "--name", "stopping", "--concurrency", "2",
        "--shutdown-graceful-timeout", "120",
        **TEST_TASKS,
    )  # fmt: skip
    running = [int(wait_for_file.defer(path=str(flag), timeout=120)) for _ in range(2)]
    wait_until(lambda: running_jobs(running) == 2, what="two running jobs")
    waiting = [int(quick.defer(n=n)) for n in range(3)]

    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for_output("Stop requested")
    waiting.append(int(quick.defer(n=3)))  # notified to a stopping worker
    flag.touch()  # frees both slots: a worker that still took jobs would take these now
    code = worker.process.wait(timeout=60)

    assert code == 0
    assert set(statuses(running).values()) == {"succeeded"}
    assert set(statuses(waiting).values()) == {"todo"}
    assert set(runs(waiting).values()) == {(0, 0)}

    run_worker("--queues", "tests", "--name", "next", **TEST_TASKS)
    assert all_succeeded(running + waiting)
    assert set(runs(running + waiting).values()) == {(1, 1)}


def test_worker__second_sigterm_stops_at_once_and_its_jobs_are_recovered(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "finish"
    worker = start_worker(
        "--queues", "tests", "--name", "impatient", "--concurrency", "2",
        "--shutdown-graceful-timeout", "120",
        **TEST_TASKS,
    )  # fmt: skip
    job_ids = [int(wait_for_file.defer(path=str(flag), timeout=120)) for _ in range(2)]
    wait_until(lambda: running_jobs(job_ids) == 2, what="two running jobs")
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for_output("Stop requested")

    # Well before the 120 s graceful timeout: the first signal uninstalled the handler.
    code = worker.stop(signal.SIGTERM, timeout=20)

    assert code == -signal.SIGTERM
    assert set(statuses(job_ids).values()) == {"doing"}

    start_worker(
        "--queues", "tests", "--name", "survivor", "--fetch-job-polling-interval", "0.2",
        **TEST_TASKS,
    )  # fmt: skip
    flag.touch()
    wait_until(
        lambda: (
            {r.job_id for r in stalled.recover_stalled_jobs(stalled_after=1, dry_run=True)}
            >= set(job_ids)
        ),
        what="the stopped worker's heartbeat older than --stalled-after",
    )
    out = StringIO()
    call_command("recover_stalled_jobs", "--stalled-after", "1", stdout=out)

    for job_id in job_ids:
        assert f"job {job_id} (tests.wait_for_file): retried" in out.getvalue()
    wait_until(lambda: all_succeeded(job_ids), what="recovered jobs succeeded")
    assert set(runs(job_ids).values()) == {(2, 1)}
    results = JobResult.objects.filter(job_id__in=job_ids)
    assert {(r.status, r.worker_name, r.attempt) for r in results} == {("succeeded", "survivor", 2)}


def test_run_workers__sigterm_stops_every_worker_gracefully(
    start_run_workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "finish"
    group = start_run_workers(
        "--processes", "2", "--concurrency", "1", "--queues", "tests", "--name", "box",
        "--shutdown-graceful-timeout", "120",
        **TEST_TASKS,
    )  # fmt: skip
    wait_for_listeners(2, group)
    running = [int(wait_for_file.defer(path=str(flag), timeout=120)) for _ in range(2)]
    wait_until(lambda: running_jobs(running) == 2, what="a running job in each worker")
    waiting = [int(quick.defer(n=n)) for n in range(2)]

    group.process.send_signal(signal.SIGTERM)
    wait_until(lambda: group.output().count("Stop requested") == 2, what="both workers stopping")
    flag.touch()
    code = group.process.wait(timeout=60)

    assert code == 0, group.output()[-4000:]
    assert "All worker processes stopped." in group.output()
    assert "did not stop in time" not in group.output()
    results = JobResult.objects.filter(job_id__in=running)
    assert {(r.status, r.worker_name) for r in results} == {
        ("succeeded", "box-1"),
        ("succeeded", "box-2"),
    }
    assert set(statuses(waiting).values()) == {"todo"}
    assert set(runs(waiting).values()) == {(0, 0)}


# --- PostgreSQL restart -----------------------------------------------------------------


def embedded_data_dir() -> Path:
    return Path(settings.DATABASES["default"]["EMBEDDED_DATA_DIR"])


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "project.embedded_postgres",
    reason="DATABASE_URL points at an external PostgreSQL: this test restarts the embedded one",
)
def test_workers__survive_a_postgresql_restart(
    start_run_workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    flag = tmp_path / "finish"
    # Polling every 100 s: any job picked up quickly after the restart was announced
    # through LISTEN/NOTIFY on a connection the worker made again by itself.
    group = start_run_workers(
        "--processes", "2", "--concurrency", "3", "--queues", "tests", "--name", "restart",
        "--fetch-job-polling-interval", "100",
        **TEST_TASKS,
    )  # fmt: skip
    wait_for_listeners(2, group)
    # Running through the restart: two that leave the database alone, two that query
    # before it and again after it, on a connection the restart has cut, and two that
    # report progress before and after it on such a connection.
    quiet = [int(wait_quietly.defer(path=str(flag), timeout=120)) for _ in range(2)]
    cut = [int(query_around_wait.defer(path=str(flag), timeout=120)) for _ in range(2)]
    reporting = [int(wait_for_file.defer(path=str(flag), timeout=120)) for _ in range(2)]
    in_flight = quiet + cut + reporting
    wait_until(lambda: running_jobs(in_flight) == 6, what="every slot busy")
    queued = [int(quick.defer(n=n)) for n in range(20)]

    with deferring() as deferrer:
        deferrer.wait_for(20)
        embedded_postgres.restart(embedded_data_dir())
        close_connections_cut_by_a_restart()
        flag.touch()
        after_restart = len(deferrer.job_ids)
        deferrer.wait_for(after_restart + 50)
    known = in_flight + queued + deferrer.job_ids
    # A defer cut by the restart after its commit left a job nobody knows: it runs too.
    every_job = list(
        ProcrastinateJob.objects.filter(task_name__startswith="tests.").values_list("id", flat=True)
    )
    assert set(known) <= set(every_job)
    # Well under the 100 s poll: the cut jobs' retries are announced by the worker that
    # put them back (jobs/connector.py), not found by polling.
    wait_until(lambda: all_succeeded(every_job), timeout=60, what="every job succeeded")
    wait_for_listeners(2, group)
    started = time.monotonic()
    late = int(quick.defer(n=-1))
    wait_until(lambda: all_succeeded([late]), timeout=30, what="the job deferred last")
    pickup = time.monotonic() - started

    assert pickup < 3, f"picked up after {pickup:.1f} s: LISTEN/NOTIFY is not working"
    assert group.process.poll() is None
    assert "exited with code" not in group.output()  # run_workers restarted none of them
    # The task's own connection was cut mid-job: it failed like any database error, and
    # its retry policy ran it again. A progress report cut the same way is only logged:
    # progress must not decide a job's fate. The worker's bookkeeping lost nothing.
    assert set(runs(cut).values()) == {(2, 1)}
    assert set(runs(reporting).values()) == {(1, 1)}
    assert "Could not record the progress of job" in group.output()
    assert_ran_once([job_id for job_id in [*every_job, late] if job_id not in cut])


# --- Deploy under load ------------------------------------------------------------------

# Migrations applied while workers drain and jobs keep coming, as in a deploy:
# - the latest of `jobs` build indexes concurrently on the tables the workers write to (0004
#   on procrastinate's jobs and events, 0005 on results): rolled back, then applied again;
# - procrastinate's own cannot be rolled back (plain SQL with no reverse). Those of its latest
#   that can run twice, each dropping and creating again what it defines, are recorded as
#   not applied, then applied again: 0039 replaces the function every worker fetches its
#   jobs with, 0041 the trigger (and its function) that writes every job's events. 0040 (a
#   new value of an enum type, a new function) cannot run twice: it is only recorded.
BEFORE_DEPLOY = "0003_comments_statistics_token_expiry"
DEPLOYED_INDEXES = ("jobs_job_status_id", "jobs_event_type_at", "jobs_result_failed_at")
PROCRASTINATE_BEFORE = "0038_post_batch_defer_jobs"
PROCRASTINATE_REAPPLIED = "0039_pre_priority_lock_fetch_job"
PROCRASTINATE_RECORDED_ONLY = "0040_pre_retry_failed_job"
# What those two migrations of procrastinate create: new objects (new oids) once reapplied.
REAPPLIED_OBJECTS = """
SELECT 'fetch function', oid FROM pg_proc WHERE proname = 'procrastinate_fetch_job_v2'
UNION ALL SELECT 'events trigger', oid FROM pg_trigger
 WHERE tgname = 'procrastinate_trigger_status_events_update_v1'
UNION ALL SELECT 'events function', oid FROM pg_proc
 WHERE proname = 'procrastinate_trigger_function_status_events_update_v1'
"""


def existing_indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)", [list(DEPLOYED_INDEXES)]
        )
        return {row[0] for row in cursor.fetchall()}


def reapplied_objects() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(REAPPLIED_OBJECTS)
        return {name: int(oid) for name, oid in cursor.fetchall()}


def restore_migrations() -> None:
    """The schema the other tests expect, from any point of the deploy below: procrastinate's
    objects are all there throughout (each reapplied migration runs in one transaction)."""
    call_command("migrate", "procrastinate", fake=True, verbosity=0)
    # jobs 0002 and 0003 lost their records with procrastinate's; faking back to them from
    # further on would also drop the records of later migrations whose columns stay.
    if (
        not MigrationRecorder(connection)
        .migration_qs.filter(app="jobs", name=BEFORE_DEPLOY)
        .exists()
    ):
        call_command("migrate", "jobs", BEFORE_DEPLOY, fake=True, verbosity=0)
    call_command("migrate", verbosity=0)


def test_migrate__applied_under_load_loses_no_job(
    job_runs: JobRuns, start_run_workers: Callable[..., WorkerProcess]
) -> None:
    call_command("migrate", "jobs", BEFORE_DEPLOY, verbosity=0)
    # Records only; `jobs` 0002 and 0003, which depend on procrastinate's latest, go too.
    call_command("migrate", "procrastinate", PROCRASTINATE_BEFORE, fake=True, verbosity=0)
    before = reapplied_objects()
    try:
        assert existing_indexes() == set()
        group = start_run_workers(
            "--processes", "2", "--concurrency", "4", "--queues", "tests", "--name", "deploy",
            **TEST_TASKS,
        )  # fmt: skip
        wait_for_listeners(2, group)
        with deferring(lambda n: int(record_run.defer(n=n))) as deferrer:
            deferrer.wait_for(100)
            call_command("migrate", "procrastinate", PROCRASTINATE_REAPPLIED, verbosity=0)
            deferrer.wait_for(len(deferrer.job_ids) + 50)
            call_command(
                "migrate", "procrastinate", PROCRASTINATE_RECORDED_ONLY, fake=True, verbosity=0
            )
            call_command("migrate", "procrastinate", verbosity=0)
            deferrer.wait_for(len(deferrer.job_ids) + 50)
            call_command("migrate", "jobs", BEFORE_DEPLOY, fake=True, verbosity=0)
            call_command("migrate", "jobs", verbosity=0)
            deferrer.wait_for(len(deferrer.job_ids) + 100)
        deferred = deferrer.job_ids
    finally:
        restore_migrations()

    after = reapplied_objects()
    assert set(after) == set(before) == {"fetch function", "events trigger", "events function"}
    assert all(after[name] != before[name] for name in before), (before, after)
    assert existing_indexes() == set(DEPLOYED_INDEXES)
    assert deferrer.failures == 0
    wait_until(lambda: all_succeeded(deferred), timeout=120, what="every job succeeded")
    # Each ran once, and its events (written by the replaced trigger) say so.
    assert {job_id: len(runs) for job_id, runs in job_runs.of(deferred).items()} == dict.fromkeys(
        deferred, 1
    )
    assert_ran_once(deferred)
    assert "exited with code" not in group.output()


# --- Every job ends, and runs again only after a fault -----------------------------------

DRAINED = 3000
# Every 100th job holds its worker for a second, so that a kill surely finds one mid-run.
LONG_EVERY = 100
# Workers beat every 2.5 s and take each other for dead after 10 s of silence (the recovery
# they run themselves): the PostgreSQL restart below cuts them off for a second or two, and
# their reconnection pauses grow to 2 s, so no live worker is taken for dead.
FAULT_ENV = {**TEST_TASKS, "JOBS_STALLED_WORKER_SECONDS": "10"}
QUEUES = "tests,maintenance"  # the recording jobs, and stalled-job recovery


class RecoveryScheduler(threading.Thread):
    """Defers `jobs.recover_stalled_jobs` twice a second, as the workers' scheduler does
    every minute, for the workers to run. One waiting at a time (its queueing lock)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    def run(self) -> None:
        task = app.configure_task(tasks.recover_stalled_jobs.name)
        try:
            while not self._stop_requested.wait(0.5):
                try:
                    task.defer(timestamp=int(time.time()))
                except AlreadyEnqueued:
                    pass  # the last one has not started yet
                except Exception:
                    close_old_connections()  # the database is restarting
        except BaseException as error:  # reported by the test, not lost in a thread
            self.error = error
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(timeout=30)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)


def long_job_running_in(pids: Iterable[int], long_jobs: list[int]) -> tuple[int, int] | None:
    """(worker pid, job id) of a long job that one of `pids` started recording less than
    half a second ago, and so still runs for half a second or more."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT run.pid, run.job_id FROM {RUNS_TABLE} run "
            "JOIN procrastinate_jobs job ON job.id = run.job_id AND job.attempts = run.attempt "
            "WHERE job.status = 'doing' AND run.pid = ANY(%s) AND run.job_id = ANY(%s) "
            "AND run.at > clock_timestamp() - interval '0.5 seconds' LIMIT 1",
            [list(pids), long_jobs],
        )
        row = cursor.fetchone()
        return (int(row[0]), int(row[1])) if row else None


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "project.embedded_postgres",
    reason="DATABASE_URL points at an external PostgreSQL: this test restarts the embedded one",
)
def test_workers__every_job_ends_and_runs_again_only_after_its_worker_died(
    job_runs: JobRuns,
    start_run_workers: Callable[..., WorkerProcess],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Thousands of jobs drained by `run_workers` (two processes) and the stock worker,
    while workers are killed mid-job (and replaced), PostgreSQL restarts once, and the
    workers run stalled-job recovery. README's promise, checked on every execution."""
    group = start_run_workers(
        "--processes", "2", "--concurrency", "4", "--queues", QUEUES, "--name", "drain",
        **FAULT_ENV,
    )  # fmt: skip
    stock = start_worker("--queues", QUEUES, "--name", "stock", "--concurrency", "4", **FAULT_ENV)
    wait_for_listeners(3, group)
    arguments: list[JSONDict] = [
        {"n": n, "hold": 1.0 if n % LONG_EVERY == 0 else 0.005} for n in range(DRAINED)
    ]
    job_ids = record_run.batch_defer(*arguments)
    long_jobs = job_ids[::LONG_EVERY]
    killed: set[int] = set()
    hit: dict[int, int] = {}  # job id -> the worker killed while it ran it

    def kill_mid_job(pids: Iterable[int]) -> None:
        not_hit = [job_id for job_id in long_jobs if job_id not in hit]
        pid, job_id = wait_until(lambda: long_job_running_in(pids, not_hit), what="a long job")
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
        hit[job_id] = pid

    def progress(share: float) -> None:
        wait_until(lambda: job_runs.count() >= DRAINED * share, timeout=120, what=f"{share:.0%}")

    scheduler = RecoveryScheduler()
    scheduler.start()
    try:
        progress(0.1)
        kill_mid_job(child_processes(group.process.pid))
        wait_for_listeners(3, group)  # run_workers started it again
        progress(0.3)
        kill_mid_job([stock.process.pid])
        stock.stop(signal.SIGKILL)  # reaped
        start_worker("--queues", QUEUES, "--name", "stock-2", "--concurrency", "4", **FAULT_ENV)
        progress(0.5)
        embedded_postgres.restart(embedded_data_dir())
        close_connections_cut_by_a_restart()
        wait_for_listeners(3, group)
        progress(0.7)
        kill_mid_job(child_processes(group.process.pid))
        wait_until(
            lambda: set(statuses(job_ids).values()) <= {"succeeded", "failed"},
            timeout=120,
            what="every job ended",
        )
    finally:
        scheduler.stop()

    # Every job ended, and succeeded: its retries covered every lost run.
    assert Counter(statuses(job_ids).values()) == {"succeeded": DRAINED}
    runs = job_runs.of(job_ids)
    assert [job_id for job_id, its_runs in runs.items() if not its_runs] == []
    # A job ran more than once only when a worker was killed while running it, and then
    # once more per recovery: every run but its last was in a killed worker.
    retries = Counter(
        ProcrastinateEvent.objects.filter(
            job_id__in=job_ids, type="deferred_for_retry"
        ).values_list("job_id", flat=True)
    )
    again = {job_id: its_runs for job_id, its_runs in runs.items() if len(its_runs) > 1}
    wrong = {
        job_id: [(run.pid, run.attempt) for run in its_runs]
        for job_id, its_runs in again.items()
        if any(run.pid not in killed for run in its_runs[:-1])
        or len(its_runs) - 1 > retries[job_id]
    }
    assert wrong == {}, f"killed: {killed}; jobs that ran again without cause: {wrong}"
    # The kills did find jobs running, and those ran again elsewhere, to the end.
    assert len(hit) == 3
    for job_id, pid in hit.items():
        assert runs[job_id][0].pid == pid
        assert len(runs[job_id]) >= 2
    assert group.output().count("exited with code -9") == 2  # and nothing else exited
    assert "exited with code 1" not in group.output()
