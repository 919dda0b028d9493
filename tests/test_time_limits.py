"""Time limits (jobs/time_limits.py), with real worker processes.

- An async task past its limit is cancelled; a sync one in a Python loop gets a soft stop
  (TimeLimitExceeded raised in its thread); either attempt fails with TimeLimitExceeded in
  its result and is retried per its policy, and its slot takes the next job.
- A sync task blocked in C (a socket read with no timeout) does not see the soft stop: its
  worker process stops taking jobs, lets its other job finish, ends the stuck attempt and
  exits with REPLACE_EXIT_CODE; the retry runs in another process, once; `run_workers`
  starts the replacement at once.
- The site's JOBS_TIME_LIMIT applies to tasks without a limit of their own; bad limits are
  refused when declared or by `manage.py check`.

Executions are counted from `test_job_runs` (one row per run, see tests/slow_tasks.py).
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.tasks import TaskResultStatus, task
from django.tasks.exceptions import InvalidTask
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.conf import jobs_settings
from jobs.models import JobResult
from jobs.processes import REPLACE_EXIT_CODE
from jobs.testing import WorkerProcess, wait_until
from jobs.time_limits import time_limit, time_limit_of
from project.settings import env_seconds
from tests import time_limit_tasks
from tests.conftest import DJANGO_TASK_MODULES, JobRuns
from tests.slow_tasks import record_run, record_then_wait

TASKS = {
    "PROCRASTINATE_IMPORT_PATHS": (f"tests.slow_tasks,tests.time_limit_tasks,{DJANGO_TASK_MODULES}")
}
ERROR_TYPE = "jobs.time_limits.TimeLimitExceeded"
FINAL = ("succeeded", "failed", "cancelled", "aborted")


def status(job_id: int) -> str:
    return str(ProcrastinateJob.objects.get(id=job_id).status)


def wait_for_end(job_id: int, timeout: float = 60) -> str:
    return str(
        wait_until(
            lambda: (s := status(job_id)) in FINAL and s,
            timeout=timeout,
            what=f"job {job_id} ended",
        )
    )


def logged_errors(job_id: int) -> list[tuple[str, str | None, str]]:
    """(status, error type, error message) of each ended attempt of the job."""
    log = JobResult.objects.get(job_id=job_id).attempts_log
    return [
        (
            entry["status"],
            entry["error"]["type"] if entry["error"] else None,
            entry["error"]["message"] if entry["error"] else "",
        )
        for entry in log
    ]


@pytest.fixture
def held_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket the test holds: its first connection never gets a byte (a read with no
    timeout blocks in C), every later one gets b"x" at once. Yields its path."""
    path = str(tmp_path / "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed at teardown
            if accepted:
                connection.sendall(b"x")
            accepted.append(connection)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield path
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    server.join(timeout=10)
    for connection in accepted:
        connection.close()


# --- Real workers ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_time_limit__async_task_is_cancelled_retried_and_frees_its_slot(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("--queues", "tests", "--concurrency", "1", **TASKS)
    limited = int(time_limit_tasks.limited_async_sleep.defer())
    after = int(record_run.defer(n=1))

    # One slot: the job behind runs only once the limited one's attempts gave it back.
    assert wait_for_end(limited) == "failed"
    assert wait_for_end(after) == "succeeded"

    runs = job_runs.of([limited, after])
    assert [run.attempt for run in runs[limited]] == [0, 1]  # retried once, per its policy
    assert len(runs[after]) == 1
    result = JobResult.objects.get(job_id=limited)
    assert (result.status, result.exception_type) == ("failed", ERROR_TYPE)
    assert "ran past its time limit of 1 s" in result.exception_message
    assert [(s, t) for s, t, _ in logged_errors(limited)] == [("failed", ERROR_TYPE)] * 2
    assert worker.process.poll() is None  # cancelling needs no new process


@pytest.mark.django_db(transaction=True)
def test_time_limit__sync_task_in_a_python_loop_gets_a_soft_stop(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A grace period longer than the test: the soft stop alone ends the attempts.
    worker = start_worker(
        "--queues", "tests", "--concurrency", "1", JOBS_TIME_LIMIT_GRACE_SECONDS="300", **TASKS
    )
    limited = int(time_limit_tasks.limited_busy_loop.defer())
    after = int(record_run.defer(n=1))

    assert wait_for_end(limited) == "failed"
    assert wait_for_end(after) == "succeeded"

    runs = job_runs.of([limited, after])
    assert [run.attempt for run in runs[limited]] == [0, 1]
    assert {run.pid for run in runs[limited] + runs[after]} == {worker.process.pid}
    errors = logged_errors(limited)
    assert [(s, t) for s, t, _ in errors] == [("failed", ERROR_TYPE)] * 2
    assert all("ran past its time limit of 1 s." in message for _, _, message in errors)
    traceback = JobResult.objects.get(job_id=limited).traceback
    assert "in limited_busy_loop" in traceback  # where the soft stop found it
    assert worker.process.poll() is None


@pytest.mark.django_db(transaction=True)
def test_time_limit__task_blocked_in_c_gets_its_worker_process_replaced(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess], held_socket: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    first = start_worker(
        "--queues",
        "tests",
        "--concurrency",
        "2",
        "--name",
        "first",
        "--shutdown-graceful-timeout",
        "60",
        JOBS_TIME_LIMIT_GRACE_SECONDS="1",
        **TASKS,
    )
    other = int(record_then_wait.defer(path=str(go)))
    wait_until(lambda: status(other) == "doing", what="the other job started")
    first_id = ProcrastinateJob.objects.get(id=other).worker_id
    stuck = int(time_limit_tasks.limited_socket_read.defer(path=held_socket))
    first.wait_for_output("did not stop within 1 s more")
    behind = int(record_run.defer(n=1))

    # The stuck attempt is not ended (so not retried) while its thread may still run
    # beside the other job, which has all its graceful timeout to finish.
    assert status(stuck) == "doing"
    assert first.process.poll() is None
    go.touch()
    assert first.process.wait(timeout=60) == REPLACE_EXIT_CODE
    first.stopped = True

    assert status(other) == "succeeded"
    assert status(stuck) == "todo"  # to be retried, elsewhere
    [(ended_as, error, message)] = logged_errors(stuck)
    assert (ended_as, error) == ("failed", ERROR_TYPE)
    assert "its worker process is replaced" in message
    assert status(behind) == "todo"  # the stopping worker took no new job
    # Not unregistered: the retry may start elsewhere the moment it is recorded, so the
    # process exits right then. Its row ages out as a killed worker's does.
    assert ProcrastinateJob.objects.filter(worker_id=first_id, status="doing").count() == 0
    assert f"exits with code {REPLACE_EXIT_CODE}" in first.output()

    second = start_worker("--queues", "tests", "--name", "second", **TASKS)
    assert wait_for_end(stuck) == "succeeded"
    assert wait_for_end(behind) == "succeeded"
    runs = job_runs.of([stuck, other, behind])
    assert [run.pid for run in runs[stuck]] == [first.process.pid, second.process.pid]
    assert [run.pid for run in runs[other]] == [first.process.pid]
    assert [run.pid for run in runs[behind]] == [second.process.pid]
    assert JobResult.objects.get(job_id=stuck).return_value == "x"


@pytest.mark.django_db(transaction=True)
def test_run_workers__replaces_a_worker_whose_job_did_not_stop_at_once(
    job_runs: JobRuns, start_run_workers: Callable[..., WorkerProcess], held_socket: str
) -> None:
    group = start_run_workers(
        "--processes",
        "1",
        "--concurrency",
        "1",
        "--queues",
        "tests",
        "--name",
        "limited",
        "--shutdown-graceful-timeout",
        "30",
        JOBS_TIME_LIMIT_GRACE_SECONDS="1",
        **TASKS,
    )
    stuck = int(time_limit_tasks.limited_socket_read.defer(path=held_socket))

    assert wait_for_end(stuck) == "succeeded"

    [first, second] = job_runs.of([stuck])[stuck]
    assert first.pid != second.pid
    assert f"limited-1 exited with code {REPLACE_EXIT_CODE} to be replaced" in group.output()
    assert [s for s, _, _ in logged_errors(stuck)] == ["failed", "succeeded"]
    assert group.process.poll() is None


@pytest.mark.django_db(transaction=True)
def test_time_limit__site_default_applies_to_tasks_without_their_own(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("--queues", "tests", JOBS_TIME_LIMIT="1", **TASKS)
    unlimited = int(time_limit_tasks.sleep_without_own_limit.defer(seconds=300))
    own = int(time_limit_tasks.sleep_within_own_limit.defer(seconds=1.5))

    assert wait_for_end(unlimited) == "failed"
    assert wait_for_end(own) == "succeeded"  # its own 30 s win over the site's 1 s

    result = JobResult.objects.get(job_id=unlimited)
    assert result.exception_type == ERROR_TYPE
    assert "ran past its time limit of 1 s" in result.exception_message


@pytest.mark.django_db(transaction=True)
def test_django_task__time_limit_fails_the_attempt(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(**TASKS)
    result = time_limit_tasks.django_busy_loop.enqueue()

    wait_until(lambda: result.refresh() or result.is_finished, what="the task ended")

    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == ERROR_TYPE
    assert "ran past its time limit of 1 s" in error.traceback


# --- Declaring ------------------------------------------------------------------------------

BAD_SECONDS = [
    (0, ValueError, "it is not above 0"),
    (-1, ValueError, "it is not above 0"),
    (math.inf, ValueError, "it is not a finite number"),
    (math.nan, ValueError, "it is not a finite number"),
    (True, TypeError, "it is a bool, not a number of seconds"),
    ("30", TypeError, "it is a str, not a number of seconds"),
    (None, TypeError, "it is a NoneType, not a number of seconds"),
]


@pytest.mark.parametrize(("seconds", "error", "reason"), BAD_SECONDS)
def test_time_limit__refuses_what_is_no_number_of_seconds(
    seconds: Any, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=f"time_limit = .* is refused: {reason}"):
        time_limit(seconds)


def test_time_limit__goes_above_a_procrastinate_task() -> None:
    def plain() -> None: ...

    with pytest.raises(TypeError, match=r"@time_limit goes above @app.task\(...\)"):
        time_limit(1)(plain)  # type: ignore[type-var]


def test_time_limit__a_task_has_one_limit() -> None:
    limited = time_limit_tasks.limited_busy_loop

    assert time_limit(1)(limited) is limited  # the same again (a module imported twice)
    with pytest.raises(ValueError, match="already has a time limit of 1 s; it cannot also"):
        time_limit(2)(limited)
    assert time_limit_of(limited.name) == 1


def test_time_limit_of__a_tasks_own_wins_over_the_site_default(settings: Any) -> None:
    settings.JOBS_TIME_LIMIT = 5

    assert time_limit_of("tests.limited_busy_loop") == 1
    assert time_limit_of("tests.sleep_without_own_limit") == 5
    settings.JOBS_TIME_LIMIT = None
    assert time_limit_of("tests.sleep_without_own_limit") is None


def module_level_task_function() -> None:
    """Declared as a Django task by the tests below, with limits they must refuse."""


@pytest.mark.parametrize(("seconds", "error", "reason"), BAD_SECONDS[:-1])
def test_django_task__refuses_a_bad_time_limit_when_declared(
    seconds: Any, error: type[Exception], reason: str
) -> None:
    with pytest.raises(InvalidTask, match=f"time_limit = .* is refused: {reason}"):
        task(time_limit=seconds)(module_level_task_function)  # type: ignore[call-overload]

    assert time_limit_of(f"{__name__}.module_level_task_function") is None


def test_django_task__time_limit_is_registered_by_name() -> None:
    name = time_limit_tasks.django_busy_loop.module_path

    assert time_limit_tasks.django_busy_loop.time_limit == 1
    assert time_limit_of(name) == 1


# --- Settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("JOBS_TIME_LIMIT", 0, "it is not above 0"),
        ("JOBS_TIME_LIMIT", -5, "it is not above 0"),
        ("JOBS_TIME_LIMIT", True, "it is a bool, not a number of seconds"),
        ("JOBS_TIME_LIMIT", "30", "it is a str, not a number of seconds"),
        ("JOBS_TIME_LIMIT_GRACE_SECONDS", None, "it is a NoneType, not a number of seconds"),
        ("JOBS_TIME_LIMIT_GRACE_SECONDS", 0, "it is not above 0"),
        ("JOBS_TIME_LIMIT_GRACE_SECONDS", math.inf, "it is not a finite number"),
    ],
)
def test_check__bad_time_limit_settings_are_named(
    settings: Any, name: str, value: Any, reason: str
) -> None:
    setattr(settings, name, value)

    with pytest.raises(SystemCheckError) as failure:
        call_command("check")

    assert f"{name} = {value!r} is refused: {reason}." in str(failure.value)
    assert "(jobs.E001)" in str(failure.value)
    with pytest.raises(ImproperlyConfigured, match=f"{name} = .* is refused"):
        getattr(jobs_settings, name)


def test_settings__time_limits_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_TIME_LIMIT", "2.5")
    assert env_seconds("JOBS_TIME_LIMIT", None) == 2.5
    monkeypatch.setenv("JOBS_TIME_LIMIT", "none")
    assert env_seconds("JOBS_TIME_LIMIT", 3) is None
    monkeypatch.setenv("JOBS_TIME_LIMIT", "")
    assert env_seconds("JOBS_TIME_LIMIT", 3) == 3
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("JOBS_TIME_LIMIT", bad)
        with pytest.raises(ImproperlyConfigured, match=f"JOBS_TIME_LIMIT='{bad}'"):
            env_seconds("JOBS_TIME_LIMIT", None)
