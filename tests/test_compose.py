"""compose.yaml cannot run here (no Docker engine), so it is checked against the code."""

from __future__ import annotations

import importlib
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from django.urls import resolve

from jobs import health
from jobs.management.commands import run_workers
from tests.test_settings import SETTINGS_VARIABLES, import_settings

ROOT = Path(settings.BASE_DIR)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose["services"]


WORKER_SERVICES = ("worker", "worker-reports")
APP_SERVICES = ("migrate", "web", *WORKER_SERVICES)


def test_compose__has_database_migrate_web_and_worker(services: dict[str, Any]) -> None:
    assert set(services) >= {"db", *APP_SERVICES}
    assert services["db"]["image"] == "postgres:18"
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])


def test_compose__app_services_share_one_image(services: dict[str, Any]) -> None:
    builds = {
        (str(services[name].get("build")), services[name].get("image")) for name in APP_SERVICES
    }
    assert builds == {(".", "pgjobs-site:latest")}
    assert (ROOT / "Dockerfile").exists()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --locked" in dockerfile
    assert "FROM python:3.13" in dockerfile


def test_compose__start_order(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("web", *WORKER_SERVICES):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }


def test_compose__commands_exist_in_the_code(services: dict[str, Any]) -> None:
    commands = get_commands()
    migrate = services["migrate"]["command"]
    assert migrate[:3] == ["python", "manage.py", "migrate"]
    assert {"migrate", "run_workers"} <= set(commands)
    for name in WORKER_SERVICES:
        worker = services[name]["command"]
        assert worker[:3] == ["python", "manage.py", "run_workers"]
        # The options are run_workers' own: argparse exits on one it does not know.
        run_workers.Command().create_parser("manage.py", "run_workers").parse_args(worker[3:])

    web = services["web"]["command"]
    assert web[0] == "uvicorn"
    module_name, attribute = web[1].split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute))
    assert web[1] == settings.ASGI_APPLICATION.replace(".application", ":application")


def test_compose__environment_matches_settings(services: dict[str, Any]) -> None:
    db_env = services["db"]["environment"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DJANGO_ENV"] == "production"
        expected = (
            f"postgres://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}"
            f"@db:5432/{db_env['POSTGRES_DB']}"
        )
        assert env["DATABASE_URL"] == expected


def test_compose__ships_no_secret_key(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        # `${SECRET_KEY:?message}`: compose stops with the message when it is not set.
        assert re.fullmatch(
            r"\$\{SECRET_KEY:\?[^}]+\}", services[name]["environment"]["SECRET_KEY"]
        )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose__environment_starts_the_production_settings(
    services: dict[str, Any], name: str
) -> None:
    environment = compose_environment(services, name, SECRET_KEY=secrets.token_urlsafe(50))

    result = import_settings("import django.conf; django.conf.settings.DEBUG", **environment)

    assert result.returncode == 0, result.stderr


def test_compose__without_a_secret_key_nothing_starts(services: dict[str, Any]) -> None:
    with pytest.raises(MissingVariable, match="set SECRET_KEY"):
        compose_environment(services, "web")


def test_dockerfile__collectstatic_step_passes_the_production_settings(tmp_path: Path) -> None:
    # The RUN instruction, joined and run by a shell like Docker's (`/bin/sh -c`), with this
    # environment's Python first on the PATH and the files collected into tmp_path.
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("#"))
    instructions = re.split(r"\n(?=[A-Z]+ )", text)
    (step,) = [line for line in instructions if "collectstatic" in line]
    assert step.startswith("RUN ")
    command = step.removeprefix("RUN ").replace("\\\n", " ")
    environment = {
        key: value for key, value in os.environ.items() if not SETTINGS_VARIABLES.fullmatch(key)
    }
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"

    result = subprocess.run(
        ["/bin/sh", "-c", f"STATIC_ROOT={shlex.quote(str(tmp_path))} {command}"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "staticfiles.json").exists()


def test_compose__worker_pools_fit_their_concurrency(services: dict[str, Any]) -> None:
    parser = run_workers.Command().create_parser("manage.py", "run_workers")
    for name in WORKER_SERVICES:
        options = parser.parse_args(services[name]["command"][3:])
        pool = int(services[name]["environment"]["DATABASE_POOL_MAX_SIZE"])
        # A connection for each running sync job and one for the async tasks' ORM thread.
        assert pool >= options.concurrency + 1


def test_compose__workers_get_time_to_finish_jobs(services: dict[str, Any]) -> None:
    timeout = settings.PROCRASTINATE_WORKER_DEFAULTS["shutdown_graceful_timeout"]
    for name in WORKER_SERVICES:
        assert "--shutdown-graceful-timeout" not in services[name]["command"]
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s")
        # run_workers kills a worker still busy 10 s after the graceful timeout; Docker
        # must not kill the container before that.
        assert float(grace[:-1]) > timeout + 10


def test_compose__web_healthcheck_asks_the_health_endpoint(services: dict[str, Any]) -> None:
    check = services["web"]["healthcheck"]
    command = check["test"]
    assert command[:3] == ["CMD", "python", "-c"]
    assert "python:3.13-slim" in (ROOT / "Dockerfile").read_text()  # no curl: urllib it is
    url = re.search(r"'(http://[^']+)'", command[3])
    assert url is not None
    parsed = urlsplit(url[1])
    assert parsed.hostname in settings_for_compose(services)["ALLOWED_HOSTS"].split(",")
    assert parsed.port == int(services["web"]["ports"][0].split(":")[-1])
    assert resolve(parsed.path).func is health.health
    assert "urlopen" in command[3]  # raises on a 503, so the check fails
    timeout = float(re.search(r"timeout=(\d+)", command[3])[1])  # type: ignore[index]
    assert timeout < float(check["timeout"].rstrip("s"))


class MissingVariable(Exception):
    """Compose stops: a `${NAME:?message}` variable is not set."""


def compose_environment(services: dict[str, Any], name: str, **given: str) -> dict[str, str]:
    """A service's environment as compose hands it over when the shell sets `given`:
    `${NAME:-default}` and `${NAME:?message}` resolved."""

    def resolve(match: re.Match[str]) -> str:
        variable, operator, text = match.groups()
        if given.get(variable):
            return given[variable]
        if operator == "?":
            raise MissingVariable(text)
        return str(text)

    pattern = re.compile(r"\$\{([A-Z_]+):([-?])([^}]*)\}")
    return {
        variable: pattern.sub(resolve, str(value))
        for variable, value in services[name]["environment"].items()
    }


def settings_for_compose(services: dict[str, Any]) -> dict[str, str]:
    """The web service's environment as compose hands it over with SECRET_KEY set."""
    return compose_environment(services, "web", SECRET_KEY=secrets.token_urlsafe(50))
