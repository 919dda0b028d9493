"""Proof that `jobs` lifts: a second, minimal site (tests/bare_site/) installs it as README's
"Add the job system to your own site" says, and everything works there.

The bare site has Django's contrib apps, procrastinate's app, `jobs` and one app of its own
with one task; none of this project's settings, apps or URLs. One pytest process cannot hold
two settings modules, so the site runs in processes of its own (`python -m django ...`, a
worker, uvicorn), against a database of its own on the tests' PostgreSQL server: created and
migrated once for the module, dropped at its end.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, OpenerDirector, Request, build_opener

import psycopg
import pytest
from django.db import connection

from jobs.databases import connection_kwargs, create_database, drop_database
from jobs.processes import web_server_command, worker_command
from jobs.testing import wait_until

ROOT = Path(__file__).resolve().parent.parent
BARE_SITE = ROOT / "tests" / "bare_site"
SETTINGS_MODULE = "tests.bare_site.settings"
DATABASE = "test_bare_site"
ADMIN_PASSWORD = "bare-site-admin-password"  # of a throwaway test database
# Variables of this project's own site that must not reach the bare site's processes: it
# is configured by its settings module alone (and PostgreSQL by libpq's PG* variables).
SITE_VARIABLES = ("DATABASE_URL", "DJANGO_", "JOBS_", "PROCRASTINATE_", "PG", "EMBEDDED_")


def site_environment(database: str, server: dict[str, Any]) -> dict[str, str]:
    """The environment of a bare-site process: its settings, and libpq's variables naming
    the tests' PostgreSQL server and `database` on it."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(SITE_VARIABLES)}
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        PGHOST=str(server["host"]),
        PGPORT=str(server["port"]),
        PGUSER=str(server.get("user") or ""),
        PGDATABASE=database,
        PYTHONUNBUFFERED="1",
    )
    if server.get("password"):
        env["PGPASSWORD"] = str(server["password"])
    return env


def run_command(
    command: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `command` to its end; fail with its output if it fails."""
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert completed.returncode == 0, (
        f"{' '.join(command)} exited with {completed.returncode}:\n"
        f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
    )
    return completed


@dataclass
class Browser:
    """An HTTP client with its own cookies, against a real server."""

    base_url: str
    opener: OpenerDirector = field(
        default_factory=lambda: build_opener(HTTPCookieProcessor(CookieJar()))
    )

    def request(
        self, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        url = path if path.startswith("http") else self.base_url + path
        try:
            with self.opener.open(Request(url, data=data, headers=headers or {}), timeout=30) as r:
                return r.status, r.read().decode()
        except HTTPError as error:
            with error:
                return error.code, error.read().decode()

    def log_in(self, username: str, password: str) -> None:
        """Log in through the admin's login form, as a person would."""
        status, page = self.request("/admin/login/")
        assert status == 200, brief(page)
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert found, brief(page)
        form = {"csrfmiddlewaretoken": found[1], "username": username, "password": password}
        status, page = self.request("/admin/login/?next=/admin/", data=urlencode(form).encode())
        assert status == 200, brief(page)
        assert "Site administration" in page, brief(page)


@dataclass
class BareSite:
    url: str
    env: dict[str, str]
    database: dict[str, Any]

    def manage(self, *args: str) -> str:
        """Run a management command of the bare site; return its output."""
        return run_command([sys.executable, "-m", "django", *args], cwd=ROOT, env=self.env).stdout

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(**self.database, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def defer_greeting(self, name: str) -> int:
        """Defer the site's task from code, as the site's own views would."""
        output = self.manage(
            "shell",
            "-c",
            f"from tests.bare_site.greetings.tasks import greet; print(greet.defer(name={name!r}))",
        )
        return int(output.split()[-1])


def brief(page: str) -> str:
    """What a page that failed says: the title and exception of Django's error page, or
    the page's start."""
    found = [
        match[1].strip()
        for match in (
            re.search(r"<title>(.*?)</title>", page, flags=re.DOTALL),
            re.search(r'<pre class="exception_value">(.*?)</pre>', page, flags=re.DOTALL),
        )
        if match
    ]
    return html.unescape(" | ".join(found)) if found else page[:2000]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _ready(process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> bool:
    """Whether `ready()` says the started `process` is ready; fails at once if it died."""
    if process.poll() is not None:
        raise AssertionError(f"{process.args!r} exited early:\n{log.read_text()[-4000:]}")
    return ready()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def bare_site(
    django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BareSite]:
    """The bare site, migrated, with a superuser, a running worker and a running web server."""
    with django_db_blocker.unblock():
        create_database(DATABASE)
        server = connection_kwargs(DATABASE)
        connection.close()
    logs = tmp_path_factory.mktemp("bare-site")
    port = _free_port()
    site = BareSite(
        url=f"http://127.0.0.1:{port}", env=site_environment(DATABASE, server), database=server
    )
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=site.env, stdout=log, stderr=subprocess.STDOUT
            )
        started.append(process)
        return process

    try:
        site.manage("migrate", "--noinput")
        # The worker and the web server start while the superuser is made. The worker runs
        # README's command, with no option: every setting of `jobs` is its default.
        worker = start("worker", worker_command())
        web = start(
            "uvicorn",
            web_server_command(
                "127.0.0.1",
                port,
                *("--log-level", "warning"),
                application="tests.bare_site.asgi:application",
            ),
        )
        run_command(
            [
                *(sys.executable, "-m", "django", "createsuperuser", "--noinput"),
                *("--username", "admin", "--email", "admin@example.com"),
            ],
            cwd=ROOT,
            env={**site.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        )
        # Listening, so that a job deferred from now on wakes it at once (no polling wait).
        listening = "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN %%'"
        wait_until(
            lambda: _ready(
                worker, logs / "worker.log", lambda: bool(site.query(listening, (DATABASE,)))
            ),
            timeout=60,
            what="the bare site's worker listens",
        )
        wait_until(
            lambda: _ready(web, logs / "uvicorn.log", lambda: _accepts(port)),
            timeout=60,
            what="the bare site's web server answers",
        )
        yield site
    finally:
        for process in reversed(started):
            _stop(process)
        with django_db_blocker.unblock():
            drop_database(DATABASE)
            connection.close()


@pytest.fixture(scope="module")
def greeting_job(bare_site: BareSite) -> int:
    """A job of the site's task, deferred from code and run by the site's worker."""
    job_id = bare_site.defer_greeting("Ada")
    finished = (
        "SELECT status FROM procrastinate_jobs WHERE id = %s AND status NOT IN ('todo', 'doing')"
    )
    wait_until(lambda: bare_site.query(finished, (job_id,)), what=f"job {job_id} finishes")
    return job_id


@pytest.fixture(scope="module")
def admin_browser(bare_site: BareSite) -> Browser:
    browser = Browser(bare_site.url)
    browser.log_in("admin", ADMIN_PASSWORD)
    return browser


def test_bare_site__check_finds_no_issue(bare_site: BareSite) -> None:
    output = bare_site.manage("check")

    assert output.strip() == "System check identified no issues (0 silenced)."


def test_bare_site__migrations_match_the_models(bare_site: BareSite) -> None:
    output = bare_site.manage("makemigrations", "--check", "--dry-run")

    assert output.strip() == "No changes detected"


def test_bare_site__worker_runs_its_task_and_records_the_result(
    bare_site: BareSite, greeting_job: int
) -> None:
    rows = bare_site.query(
        "SELECT job.status, result.status, result.task_name, result.return_value "
        "FROM procrastinate_jobs job JOIN jobs_jobresult result ON result.job_id = job.id "
        "WHERE job.id = %s",
        (greeting_job,),
    )

    assert rows == [("succeeded", "succeeded", "greetings.greet", {"greeting": "Hello, Ada!"})]


def test_bare_site__api_defers_over_http_and_reads_the_result(bare_site: BareSite) -> None:
    output = bare_site.manage("create_api_token", "greeter", "--tasks", "greetings.greet")
    token = output.strip().splitlines()[-1]
    client = Browser(bare_site.url)
    auth = {"Authorization": f"Bearer {token}"}

    status, body = client.request(
        "/api/jobs/",
        data=json.dumps({"task": "greetings.greet", "kwargs": {"name": "Grace"}}).encode(),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert status == 201, brief(body)
    created = json.loads(body)

    def finished() -> dict[str, Any] | None:
        status, body = client.request(created["status_url"], headers=auth)
        assert status == 200, brief(body)
        job: dict[str, Any] = json.loads(body)
        return job if job["status"] not in {"todo", "doing"} else None

    job = wait_until(finished, what="the job deferred over HTTP finishes")
    assert (job["id"], job["task"], job["status"]) == (
        created["id"],
        "greetings.greet",
        "succeeded",
    )
    assert job["result"] == {"greeting": "Hello, Grace!"}


def test_bare_site__worker_runs_a_django_task_found_by_its_path(bare_site: BareSite) -> None:
    output = bare_site.manage(
        "shell",
        "-c",
        "from tests.bare_site.greetings.emails import welcome; print(welcome.enqueue('Ada').id)",
    )
    read = (
        "from tests.bare_site.greetings.emails import welcome; "
        f"result = welcome.get_result({output.split()[-1]!r}); "
        "print(result.status, result.return_value if result.status == 'SUCCESSFUL' else '')"
    )

    def finished() -> str | None:
        said = bare_site.manage("shell", "-c", read).strip().splitlines()[-1]
        return said if said.startswith(("SUCCESSFUL", "FAILED")) else None

    assert wait_until(finished, what="the Django task runs") == "SUCCESSFUL Welcome, Ada!"


def test_bare_site__admin_lists_the_jobs_and_shows_one(
    admin_browser: Browser, greeting_job: int
) -> None:
    status, listing = admin_browser.request("/admin/procrastinate/procrastinatejob/")
    assert status == 200, brief(listing)
    assert f"/admin/procrastinate/procrastinatejob/{greeting_job}/change/" in listing
    assert "greetings.greet" in listing

    status, page = admin_browser.request(
        f"/admin/procrastinate/procrastinatejob/{greeting_job}/change/"
    )
    assert status == 200, brief(page)
    assert "greetings.greet" in page
    assert "Hello, Ada!" in page, "the job's page shows no recorded result"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/admin/", "Site administration"),
        # The job system's own admin pages, routed by its job admin (no URL of the site's).
        ("/admin/procrastinate/procrastinatejob/periodic-tasks/", "Periodic tasks"),
        ("/admin/procrastinate/procrastinatejob/run-command/", "prune_jobs"),
    ],
)
def test_bare_site__admin_pages_of_jobs_are_routed_without_the_site(
    admin_browser: Browser, path: str, text: str
) -> None:
    status, page = admin_browser.request(path)

    assert status == 200, brief(page)
    assert text in page


def test_bare_site__dashboard_shows_the_queue(admin_browser: Browser, greeting_job: int) -> None:
    status, page = admin_browser.request("/dashboard/")
    assert status == 200, brief(page)
    assert "Queue dashboard" in page

    status, panels = admin_browser.request("/dashboard/panels/")
    assert status == 200, brief(panels)
    assert "greetings" in panels  # the queue of the site's task


def test_bare_site__health_passes_with_a_live_worker(bare_site: BareSite) -> None:
    status, body = Browser(bare_site.url).request("/health/")

    assert status == 200, brief(body)
    assert json.loads(body) == {"status": "ok"}


def test_bare_site__metrics_need_a_login_and_count_the_jobs(
    bare_site: BareSite, admin_browser: Browser, greeting_job: int
) -> None:
    status, text = Browser(bare_site.url).request("/metrics/")
    assert status == 401, brief(text)

    status, text = admin_browser.request("/metrics/")
    assert status == 200, brief(text)
    assert "pgjobs_database_up 1.0" in text
    assert re.search(r'pgjobs_workers\{state="live"\} 1\.0', text), brief(text)


def test_bare_site__nothing_of_jobs_at_the_site_root(bare_site: BareSite) -> None:
    status, page = Browser(bare_site.url).request("/")

    assert status == 404, brief(page)


# --- README's section says what the bare site does -----------------------------------------


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of `text`, those indented in a list item too, dedented."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.DOTALL | re.MULTILINE)
    return [textwrap.dedent(block) for _, block in blocks]


def assigned_list(source: str, name: str) -> list[Any]:
    """The value of `name = [...]` in `source`, a Python snippet (may hold `...`)."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.List)
        ):
            return [
                element.value
                for element in node.value.elts
                if isinstance(element, ast.Constant) and element.value is not Ellipsis
            ]
    raise AssertionError(f"no {name} = [...] in:\n{source}")


def test_readme__installed_apps_are_the_bare_sites() -> None:
    section = readme_section("Add the job system to your own site")
    readme_apps = next(
        assigned_list(block, "INSTALLED_APPS")
        for block in python_blocks(section)
        if "INSTALLED_APPS" in block
    )
    site_apps = assigned_list((BARE_SITE / "settings.py").read_text(), "INSTALLED_APPS")

    # README's list is the bare site's, less the site's own app, in the same order.
    assert readme_apps == [app for app in site_apps if not app.startswith("tests.")]
    assert readme_apps[-2:] == ["procrastinate.contrib.django", "jobs"]


def test_readme__tasks_setting_is_the_bare_sites() -> None:
    section = readme_section("Add the job system to your own site")
    (block,) = [block for block in python_blocks(section) if "TASKS = " in block]

    def tasks_setting(source: str) -> Any:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "TASKS" for target in node.targets
            ):
                return ast.literal_eval(node.value)
        raise AssertionError("no TASKS")

    settings_source = (BARE_SITE / "settings.py").read_text()
    assert tasks_setting(block) == tasks_setting(settings_source)
    assert block.strip() in settings_source


def test_readme__url_include_is_the_bare_sites() -> None:
    section = readme_section("Add the job system to your own site")
    urls = (BARE_SITE / "urls.py").read_text()
    readme_paths = {
        line.strip().rstrip(",")
        for block in python_blocks(section)
        for line in block.splitlines()
        if line.strip().startswith("path(")
    }

    assert readme_paths, section
    assert readme_paths <= {line.strip().rstrip(",") for line in urls.splitlines()}
    assert 'path("", include("jobs.urls"))' in readme_paths


def test_readme__commands_are_the_ones_the_bare_site_runs() -> None:
    section = readme_section("Add the job system to your own site")

    assert "python manage.py migrate" in section
    # worker_command() is `python -m django procrastinate worker`: manage.py's, with no option.
    assert worker_command()[1:] == ["-m", "django", "procrastinate", "worker"]
    assert "python manage.py procrastinate worker\n" in section
    # Nothing else to set: no PROCRASTINATE_ON_APP_READY, no JOBS_* setting.
    assert "PROCRASTINATE_ON_APP_READY =" not in section
    settings_source = (BARE_SITE / "settings.py").read_text()
    assert not re.search(r"^(JOBS_|PROCRASTINATE_)", settings_source, flags=re.MULTILINE)


def test_readme__task_is_the_bare_sites() -> None:
    section = readme_section("Add the job system to your own site")
    (block,) = [block for block in python_blocks(section) if "def greet" in block]
    tasks = (BARE_SITE / "greetings" / "tasks.py").read_text()

    assert [line for line in block.splitlines() if line.strip()] == [
        line for line in tasks.splitlines() if line.strip() and not line.startswith('"""')
    ]
