"""deploy/: the systemd unit cannot run here, so it is checked against the code."""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path

import pytest
from django.conf import settings

from jobs.management.commands import run_workers
from tests.test_settings import import_settings

DEPLOY = Path(settings.BASE_DIR) / "deploy"


@pytest.fixture(scope="module")
def service() -> dict[str, str]:
    """The unit's `Key=value` lines (each key appears once in this unit)."""
    lines = (DEPLOY / "pgjobs-workers.service").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_service__starts_run_workers_with_options_it_knows(service: dict[str, str]) -> None:
    command = shlex.split(service["ExecStart"])
    assert command[1:3] == ["manage.py", "run_workers"]
    # argparse exits on an option run_workers does not know.
    run_workers.Command().create_parser("manage.py", "run_workers").parse_args(command[3:])


def test_service__stops_gracefully_before_systemd_kills(service: dict[str, str]) -> None:
    command = shlex.split(service["ExecStart"])
    options = (
        run_workers.Command().create_parser("manage.py", "run_workers").parse_args(command[3:])
    )
    graceful = options.shutdown_graceful_timeout
    if graceful is None:
        graceful = settings.PROCRASTINATE_WORKER_DEFAULTS["shutdown_graceful_timeout"]
    assert service["KillSignal"] == "SIGTERM"
    # Only run_workers gets the SIGTERM: a worker signalled twice stops at once.
    assert service["KillMode"] == "mixed"
    # run_workers kills a worker still busy 10 s after the graceful timeout.
    assert float(service["TimeoutStopSec"]) > graceful + 10
    assert service["Restart"] == "on-failure"


def test_service__environment_file_example_has_what_production_requires(
    service: dict[str, str],
) -> None:
    assert service["EnvironmentFile"].startswith("/")
    variables = example_environment()
    assert variables["DJANGO_ENV"] == "production"
    assert {"DATABASE_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= set(variables)
    assert variables["DATABASE_URL"].startswith("postgres://")


def example_environment() -> dict[str, str]:
    lines = (DEPLOY / "workers.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_environment_file_example__its_placeholder_key_is_refused() -> None:
    # A copy nobody edited must not start with a key published here.
    result = import_settings(
        "import django.conf; django.conf.settings.DEBUG", **example_environment()
    )

    assert result.returncode != 0
    assert "SECRET_KEY is refused when DJANGO_ENV=production" in result.stderr


def test_environment_file_example__filled_in_starts_the_production_settings() -> None:
    environment = {**example_environment(), "SECRET_KEY": secrets.token_urlsafe(50)}

    result = import_settings(
        "from django.conf import settings; print(settings.MAILERS['default']['BACKEND'])",
        **environment,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == environment["EMAIL_BACKEND"]
