"""`manage.py bench_admin` (jobs/management/commands/bench_admin.py), at a tiny scale: the
figures at 10 million jobs are for the command itself, not for tests."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.django_db(transaction=True)
def test_bench_admin__runs_and_reports_figures(tmp_path: Path) -> None:
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


def test_bench_admin__refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="at least 1000"):
        call_command("bench_admin", "--jobs", "10", stdout=StringIO())
    with pytest.raises(CommandError, match="at least 3"):
        call_command("bench_admin", "--requests", "1", stdout=StringIO())
