"""The scratch database a benchmark runs on: created next to the configured one, migrated,
and dropped afterwards, so that seeding millions of rows never touches the site's data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection

from jobs.databases import connection_kwargs, create_database, database_url, drop_database


@dataclass(frozen=True)
class ScratchDatabase:
    name: str
    url: str

    @classmethod
    def named(cls, name: str) -> ScratchDatabase:
        """Database `name` on the configured database's server."""
        return cls(name=name, url=database_url(name=name))

    def environment(self, **extra: str) -> dict[str, str]:
        """The environment of a process (manage.py, web server, worker) using this database."""
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(**connection_kwargs(self.name), autocommit=True)

    def manage(self, *args: str) -> str:
        """Run a manage.py command against this database; return its output."""
        completed = subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=settings.BASE_DIR,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{completed.stderr[-3000:]}")
        return completed.stdout


@contextmanager
def scratch_database(name: str, *, keep: bool = False) -> Iterator[ScratchDatabase]:
    """A freshly created and migrated database `name`, dropped at the end unless `keep`."""
    create_database(name)
    database = ScratchDatabase.named(name)
    try:
        database.manage("migrate", "--noinput", "-v", "0")
        yield database
    finally:
        if not keep:
            drop_database(name)


def measure_in_scratch_database(
    command: str, forwarded: list[str], *, keep: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    """Run `manage.py <command> <forwarded> --measure-into FILE` against a fresh scratch
    database named after the command (dropped afterwards unless `keep`), and return the
    figures it wrote there.

    The measuring process runs apart, with the scratch database as its default one, so that
    nothing it seeds or defers can reach the site's own. CommandError if it fails.
    """
    name = f"{connection.settings_dict['NAME']}_{command}"
    log(f"Scratch database {name!r}: creating and migrating...")
    with tempfile.TemporaryDirectory() as scratch_dir:
        figures_file = Path(scratch_dir) / "figures.json"
        measure = [*forwarded, "--measure-into", str(figures_file)]
        try:
            with scratch_database(name, keep=keep) as database:
                subprocess.run(
                    [sys.executable, "-m", "django", command, *measure],
                    cwd=settings.BASE_DIR,
                    env=database.environment(),
                    check=True,
                )
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            raise CommandError(str(exc)) from exc
        figures: dict[str, Any] = json.loads(figures_file.read_text())
    return figures


def require_scratch_database(command: str) -> None:
    """The `--measure-into` half of a benchmark runs only against its scratch database."""
    if not str(connection.settings_dict["NAME"]).endswith(f"_{command}"):
        raise CommandError("--measure-into runs only against the benchmark's scratch database.")
