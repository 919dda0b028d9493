"""pytest fixtures for testing code that defers procrastinate jobs.

Enable them in your `conftest.py`:

    pytest_plugins = ["jobs.testing"]

* `procrastinate_in_memory`: the eager mode Celery users know. Deferred jobs go to
  procrastinate's `InMemoryConnector` instead of PostgreSQL; `procrastinate_in_memory.run()`
  runs them all, on demand, with procrastinate's own worker code, and
  `procrastinate_in_memory.jobs()` shows them with their status.
* `run_worker`: runs a real `manage.py procrastinate worker --one-shot` process against the
  test database until the queue is empty, and returns its output.
* `start_worker`: starts a real, long-running worker process (stopped at the end of the
  test) for tests that need one alive while they act.

`procrastinate_tables_cleanup` empties procrastinate's tables after a transactional test:
Django's flush skips them, as they are not managed by Django's migrations state, so jobs
would otherwise leak from one test into the next. The fixtures below use it; add it to
`autouse` in your own conftest if your transactional tests defer jobs.

Every fixture here uses a transactional database (`transactional_db`): procrastinate runs
sync tasks in threads and the real worker in another process, with their own database
connections, which cannot see rows a test keeps in an uncommitted transaction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from procrastinate import testing
from procrastinate.contrib.django import app, procrastinate_app
from procrastinate.periodic import PeriodicRegistry

from jobs import processes
from jobs.databases import database_url, listening_pids
from jobs.processes import Process, site_directory, worker_command

if TYPE_CHECKING:
    from pytest_django import DjangoDbBlocker


def _settings_module() -> str | None:
    """The module the settings came from. Under `override_settings` (pytest-django's
    `settings` fixture) Django's settings are a holder whose SETTINGS_MODULE is None, over
    the settings of the module: look underneath."""
    current: object = getattr(settings, "_wrapped", None)
    while getattr(current, "SETTINGS_MODULE", None) is None and hasattr(
        current, "default_settings"
    ):
        current = current.default_settings
    module = getattr(current, "SETTINGS_MODULE", None)
    return module if isinstance(module, str) and module else None


def worker_environment(**extra: str) -> dict[str, str]:
    """Environment for a `manage.py` subprocess that must use the test database, with the
    settings module this process runs (whatever the site calls it)."""
    module = _settings_module()
    if not module:
        # settings.configure() has no module a subprocess could import.
        raise ImproperlyConfigured(
            "Worker processes need a settings module: set DJANGO_SETTINGS_MODULE (or pytest's "
            "--ds) instead of calling settings.configure()."
        )
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


@pytest.fixture
def procrastinate_tables_cleanup(
    request: pytest.FixtureRequest, django_db_blocker: DjangoDbBlocker
) -> Iterator[None]:
    yield
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    if not transactional:
        return  # the test's transaction was rolled back, jobs included
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        # Test-infrastructure cleanup, not application code: procrastinate's API has no
        # "delete everything", and TRUNCATE is what Django's own flush would have run.
        cursor.execute(f"TRUNCATE {', '.join(PROCRASTINATE_TABLES)} RESTART IDENTITY CASCADE")


@dataclass
class InMemoryQueue:
    connector: testing.InMemoryConnector

    def run(self, *, queues: list[str] | None = None) -> None:
        """Run every job that is due, with procrastinate's worker, until none is left.

        Periodic tasks do not tick here (a worker would defer their latest ticks as it
        starts): test them by calling them with a `timestamp`.
        """
        real_app = procrastinate_app.current_app
        schedules = real_app.periodic_registry
        # procrastinate's PeriodicRegistry.__init__ is not annotated (no `-> None`).
        real_app.periodic_registry = PeriodicRegistry()  # type: ignore[no-untyped-call]
        try:
            app.run_worker(
                queues=queues, wait=False, install_signal_handlers=False, listen_notify=False
            )
        finally:
            real_app.periodic_registry = schedules

    def jobs(self, *, status: str | None = None) -> list[dict[str, Any]]:
        rows = sorted(self.connector.jobs.values(), key=lambda row: row["id"])
        return [row for row in rows if status is None or row["status"] == status]


@pytest.fixture
def procrastinate_in_memory(
    transactional_db: None, procrastinate_tables_cleanup: None
) -> Iterator[InMemoryQueue]:
    connector = testing.InMemoryConnector()
    with app.replace_connector(connector):
        yield InMemoryQueue(connector=connector)


@pytest.fixture
def run_worker(
    transactional_db: None, procrastinate_tables_cleanup: None
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            worker_command("--one-shot", *args),
            cwd=site_directory(),
            env=worker_environment(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise AssertionError(
                f"worker exited with {completed.returncode}:\n{completed.stderr[-4000:]}"
            )
        return completed

    return run


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Poll `predicate` until it returns something true (returned), failing after `timeout` s.

    For tests that watch a real worker: the condition, not a sleep, decides how long to wait.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"not met within {timeout} s: {what or predicate}"
        time.sleep(0.05)
    return value


@dataclass
class WorkerProcess:
    process: Process
    log: IO[str]
    known_listeners: set[int] = field(default_factory=set)
    stopped: bool = field(default=False)

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not seen in worker output:\n{self.output()[-4000:]}"
                )
            time.sleep(0.05)

    def wait_until_listening(self, timeout: float = 30) -> None:
        """Wait until this worker's LISTEN connection is set up.

        The worker logs "Starting worker" before it runs LISTEN; a job deferred in between
        would only be found by the next poll.
        """
        deadline = time.monotonic() + timeout
        while not listening_pids() - self.known_listeners:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the worker never ran LISTEN")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.stopped = True
        return code


@pytest.fixture
def start_worker(
    transactional_db: None, procrastinate_tables_cleanup: None
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str, ready: bool = True, **env: str) -> WorkerProcess:
        listeners_before = listening_pids()
        # Closed and removed at teardown: the worker writes to it for the whole test.
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w+", prefix="worker-", suffix=".log", delete=False
        )
        process = processes.start(worker_command(*args), env=worker_environment(**env), output=log)
        worker = WorkerProcess(process=process, log=log, known_listeners=listeners_before)
        started.append(worker)
        if ready:
            worker.wait_for_output("Starting worker")
            if "--no-listen-notify" not in args:
                worker.wait_until_listening()
        return worker

    yield start
    processes.stop([worker.process for worker in started], timeout=30)
    for worker in started:
        worker.log.close()
        os.unlink(worker.log.name)
