from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection, connections
from django.test import Client
from procrastinate.contrib.django import app
from procrastinate.jobs import Status

from jobs.databases import database_url
from jobs.processes import web_server_command
from tests import slow_tasks, workflow_tasks  # noqa: F401  (registers the test-only tasks)

if TYPE_CHECKING:
    # Imported at run time by pytest_plugins below: importing it first here would keep
    # pytest from rewriting its asserts.
    from jobs.testing import WorkerProcess

pytest_plugins = ["jobs.testing"]
# The tests' Django task modules, for the worker processes the tests start: a task's name
# makes a worker import only modules of installed apps (jobs/task_registry.py), and `tests`
# is not one. In the environment, so that every worker gets them; tests that set their own
# import paths add them (TEST_TASKS).
DJANGO_TASK_MODULES = "tests.django_task_functions,tests.eager_django_tasks,tests.workflow_tasks"
os.environ.setdefault("PROCRASTINATE_IMPORT_PATHS", DJANGO_TASK_MODULES)
TEST_TASKS = {"PROCRASTINATE_IMPORT_PATHS": f"tests.slow_tasks,{DJANGO_TASK_MODULES}"}


@pytest.fixture(autouse=True)
def _empty_procrastinate_tables(procrastinate_tables_cleanup: None) -> None:
    """Every transactional test starts with no job (see jobs.testing)."""


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Disconnect stray sessions before the test database is dropped.

    Async tests run ORM calls on asgiref's thread-sensitive thread, whose connection
    stays open; worker processes killed by fault tests may leave theirs too.
    """
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def close_connections_cut_by_a_restart() -> None:
    """Close the Django connections a PostgreSQL restart cut: this thread's, and those of
    asgiref's thread-sensitive thread, where async tests run their ORM calls. That thread's
    connection stays open from one test to the next: left cut, it would fail the first
    query of whichever async test comes next."""
    connections.close_all()
    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def failing_mail_worker(
    start_worker: Callable[..., WorkerProcess], free_port: int
) -> Callable[[], WorkerProcess]:
    """Starts a worker whose notification mails all fail: nothing listens on its SMTP port,
    so every connection is refused (an OSError, which the task's retry policy retries)."""

    def start() -> WorkerProcess:
        return start_worker(
            "--fetch-job-polling-interval",
            "0.2",
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(free_port),
        )

    return start


@pytest.fixture
def staff_user(db: None) -> User:
    """A staff member who may view procrastinate's jobs and events, and nothing else."""
    user = User.objects.create_user("operator", password="pw-for-tests", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="procrastinate",
            codename__in=["view_procrastinatejob", "view_procrastinateevent"],
        )
    )
    return user


@pytest.fixture
def staff_client(staff_user: User) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


# --- Inspecting the queue: jobs in given states, a seeded history, a browser ------------


@dataclass
class JobMaker:
    """Creates jobs in a given state through procrastinate's own API (defer, fetch as a
    worker, finish, cancel), so that their events are the ones procrastinate writes."""

    worker_id: int | None = None
    priority: int = 1000

    def __call__(
        self,
        status: str = "todo",
        *,
        task: str = "jobs.send_notification",
        args: dict[str, Any] | None = None,
        **options: Any,
    ) -> int:
        manager = app.job_manager
        # Each job gets a higher priority than the last, so fetching takes this one.
        self.priority += 1
        job_id = app.configure_task(task, priority=self.priority, **options).defer(
            **(args if args is not None else {"notification_id": 1})
        )
        if status == "todo":
            return job_id
        if status == "cancelled":
            assert manager.cancel_job_by_id(job_id)
            return job_id
        if self.worker_id is None:
            self.worker_id = async_to_sync(manager.register_worker)()
        fetched = async_to_sync(manager.fetch_job)(queues=None, worker_id=self.worker_id)
        assert fetched is not None
        assert fetched.id == job_id, fetched
        if status != "doing":
            async_to_sync(manager.finish_job_by_id_async)(
                job_id, status=Status(status), delete_job=False
            )
        return job_id


@pytest.fixture
def make_job(db: None) -> JobMaker:
    return JobMaker()


@pytest.fixture
def seeded_history(transactional_db: None) -> Iterator[int]:
    """3,000 jobs of every status deferred over the last 3 hours, with their events,
    results, two live workers and periodic ticks (bench.seeding.seed_queue_history, as
    the admin benchmark seeds millions). Yields the number of jobs."""
    from bench import scratch, seeding
    from jobs import queue_stats

    count = 3000
    database = scratch.ScratchDatabase(
        name=str(connection.settings_dict["NAME"]), url=database_url()
    )
    queue_stats.forget_settled_buckets()
    seeding.seed_queue_history(database, count, hours=3, batch=1000)
    yield count
    queue_stats.forget_settled_buckets()


def _chromium() -> tuple[str, str] | None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def skip_outside_ci(reason: str, *, tests: str) -> NoReturn:
    """Skip a test that lacks a tool, saying why; under CI (CI=true) fail it instead, so that
    CI cannot go green with `tests` left out (.ci/run installs what they need)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires {tests} to run")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by selenium; skipped when Chromium is not installed, except
    under CI (.ci/run installs Debian's chromium and chromium-driver)."""
    found = _chromium()
    if found is None:
        skip_outside_ci(
            "Chromium and chromedriver are not installed (apt install chromium chromium-driver)",
            tests="the browser tests",
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,2200",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site_server(
    transactional_db: None, free_port: int, tmp_path: Path
) -> Iterator[Callable[..., str]]:
    """Starts uvicorn (as run_site does) against the test database; returns its base URL.
    Keyword arguments become environment variables of the server process."""
    from jobs.testing import worker_environment  # a plugin: imported by pytest_plugins

    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> str:
        with (tmp_path / "uvicorn.log").open("wb") as log:
            process = subprocess.Popen(
                web_server_command(
                    "127.0.0.1",
                    free_port,
                    *("--log-level", "warning"),
                    application="project.asgi:application",
                ),
                cwd=settings.BASE_DIR,
                env=worker_environment(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", free_port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"uvicorn did not start:\n{(tmp_path / 'uvicorn.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        return f"http://127.0.0.1:{free_port}"

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def child_processes(pid: int) -> dict[int, str]:
    """Processes whose parent is `pid`, with their start times (Linux /proc; empty elsewhere).

    The start time tells a child from a later process that got its pid back.
    """
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[1]) == pid:
            children[int(stat.parent.name)] = fields[19]
    return children


def _kill_if_still(pid: int, started: str) -> None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return  # gone
    if fields[19] == started:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_run_workers(
    transactional_db: None, procrastinate_tables_cleanup: None
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `manage.py run_workers` (a machine's set of workers) against the test database.

    Its output and its workers' go to one log (`WorkerProcess.output()`). It is stopped at
    the end of the test as a service manager would: SIGTERM, then SIGKILL if it hangs.
    """
    from jobs.testing import WorkerProcess, worker_environment

    started: list[WorkerProcess] = []

    def start(*args: str, **env: str) -> WorkerProcess:
        # Closed and removed at teardown: the processes write to it for the whole test.
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w+", prefix="run-workers-", suffix=".log", delete=False
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "run_workers", *args],
            cwd=settings.BASE_DIR,
            env=worker_environment(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        group = WorkerProcess(process=process, log=log)
        started.append(group)
        return group

    yield start
    for group in started:
        if group.process.poll() is None:
            # The workers run in sessions of their own: a killed supervisor leaves them.
            workers = child_processes(group.process.pid)
            group.process.send_signal(signal.SIGTERM)
            try:
                group.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                group.process.kill()
                group.process.wait()
                for pid, started_at in workers.items():
                    _kill_if_still(pid, started_at)
        group.log.close()
        os.unlink(group.log.name)


@dataclass(frozen=True)
class Run:
    """One execution of a job, as tests.slow_tasks' recording tasks write it."""

    job_id: int
    pid: int  # the worker process
    attempt: int  # procrastinate's attempts before this run


class JobRuns:
    """Reads the executions recorded in the `job_runs` fixture's table."""

    def count(self) -> int:
        """Jobs that ran at least once."""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(DISTINCT job_id) FROM {slow_tasks.RUNS_TABLE}")
            return int(cursor.fetchone()[0])

    def of(self, job_ids: Iterable[int]) -> dict[int, list[Run]]:
        """Every job's runs, in the order they started (none: an empty list)."""
        runs: dict[int, list[Run]] = {job_id: [] for job_id in job_ids}
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT job_id, pid, attempt FROM {slow_tasks.RUNS_TABLE} "
                "WHERE job_id = ANY(%s) ORDER BY at",
                [list(runs)],
            )
            for job_id, pid, attempt in cursor.fetchall():
                runs[job_id].append(Run(job_id=job_id, pid=pid, attempt=attempt))
        return runs


@pytest.fixture
def job_runs(transactional_db: None) -> Iterator[JobRuns]:
    """The table tests.slow_tasks' recording tasks write one row per execution to: a plain
    table, no unique key, so that a second run of a job shows as a second row.

    Ask for it before the worker fixtures: it is dropped after their workers stopped.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {slow_tasks.RUNS_TABLE} (job_id bigint NOT NULL, "
            "pid integer NOT NULL, attempt integer NOT NULL, "
            "at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    yield JobRuns()
    connection.close()  # a fault test may have cut it (a PostgreSQL restart)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {slow_tasks.RUNS_TABLE}")
