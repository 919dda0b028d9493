"""The embedded PostgreSQL starts on first use when DATABASE_URL is unset, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from jobs.databases import database_url


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


QUERY = "from django.db import connection; print(connection.cursor().connection.info.dbname)"


def test_embedded_postgres__starts_on_first_use_then_stops_and_wipes(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg" / "data"

    # Importing settings and running a command that needs no database starts nothing.
    assert manage("check", EMBEDDED_POSTGRES_DIR=str(data_dir)).returncode == 0
    assert not data_dir.exists()

    first = manage("shell", "-c", QUERY, EMBEDDED_POSTGRES_DIR=str(data_dir))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "postgres"
    assert "Embedded PostgreSQL started" in first.stderr
    assert str(data_dir) in first.stderr
    assert (data_dir / "PG_VERSION").read_text().strip() == "18"

    # A second process shares the running server instead of starting another.
    second = manage("shell", "-c", QUERY, EMBEDDED_POSTGRES_DIR=str(data_dir))
    assert second.returncode == 0, second.stderr
    assert "Embedded PostgreSQL started" not in second.stderr

    stopped = manage("stop_postgres", "--wipe", EMBEDDED_POSTGRES_DIR=str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not data_dir.exists()


@pytest.mark.django_db
def test_embedded_postgres__not_started_when_database_url_is_set(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"

    result = manage(
        "shell", "-c", QUERY, DATABASE_URL=database_url(), EMBEDDED_POSTGRES_DIR=str(data_dir)
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("test_")
    assert "Embedded PostgreSQL" not in result.stderr
    assert not data_dir.exists()


@pytest.mark.django_db
def test_stop_postgres__refuses_when_database_url_is_set() -> None:
    result = manage("stop_postgres", DATABASE_URL=database_url())

    assert result.returncode == 1
    assert "DATABASE_URL is set" in result.stderr
