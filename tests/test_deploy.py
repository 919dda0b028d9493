"""deploy/: the systemd unit cannot run here, so it is checked against the code."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from django.conf import settings

from jobs.management.commands import run_workers

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
    example = (DEPLOY / "workers.env.example").read_text().splitlines()
    variables = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert variables["DJANGO_ENV"] == "production"
    assert {"DATABASE_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= set(variables)
    assert variables["DATABASE_URL"].startswith("postgres://")
