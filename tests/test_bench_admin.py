"""`manage.py bench_admin` (bench/management/commands/bench_admin.py), at a tiny scale: the
figures at 10 million jobs are for the command itself, not for tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from jobs.databases import drop_database


@pytest.fixture
def scratch_name(django_db_blocker: Any) -> Iterator[str]:
    """The scratch database's name; the database is dropped afterwards (kept or not)."""
    name = f"{connection.settings_dict['NAME']}_bench_admin"
    yield name
    with django_db_blocker.unblock():
        drop_database(name)


@pytest.mark.django_db(transaction=True)
def test_bench_admin__runs_and_reports_figures(tmp_path: Path, scratch_name: str) -> None:
    out = StringIO()
    report = tmp_path / "figures.json"

    call_command(
        "bench_admin",
        "--jobs",
        "2000",
        "--hours",
        "3",
        "--requests",
        "3",
        "--keep",
        "--json",
        str(report),
        stdout=out,
    )

    text = out.getvalue()
    assert "Admin, dashboard and metrics on 2,000 jobs" in text
    assert "admin job list" in text
    assert "procrastinate's stock job list runs" in text
    figures = json.loads(report.read_text())
    assert figures["jobs_seeded"] == 2000
    assert figures["events_seeded"] > 2000
    pages = figures["pages"]
    assert {"admin job page", "dashboard data (JSON)", "metrics (Prometheus)"} <= set(pages)
    assert all(row["count"] == 3 and row["median_ms"] > 0 for row in pages.values())
    assert set(figures["stock_queries_ms"]) == {
        "exact count of all jobs",
        "DISTINCT task_name (a filter)",
        "DISTINCT lock (a filter)",
    }
    assert figures["metrics_window_seconds"] >= 300

    again = StringIO()
    call_command("bench_admin", "--reuse", "--requests", "3", "--no-stock-queries", stdout=again)

    assert f"Scratch database {scratch_name!r}: reusing it" in again.getvalue()
    assert "Admin, dashboard and metrics on 2,000 jobs" in again.getvalue()


def test_bench_admin__reuse_needs_a_kept_database(scratch_name: str) -> None:
    with pytest.raises(CommandError, match=scratch_name):
        call_command("bench_admin", "--reuse", stdout=StringIO())


def test_bench_admin__refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="at least 1000"):
        call_command("bench_admin", "--jobs", "10", stdout=StringIO())
    with pytest.raises(CommandError, match="at least 3"):
        call_command("bench_admin", "--requests", "1", stdout=StringIO())
