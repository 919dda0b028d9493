"""The scratch database a benchmark runs on: created next to the configured one, migrated,
and dropped afterwards, so that seeding millions of rows never touches the site's data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings

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
