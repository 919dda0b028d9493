"""The scaling figures of `manage.py bench_jobs` (bench/scaling.py, bench/ceiling.py and the
latency under load in bench/workers.py), measured at a tiny scale against the test database
with real workers. The whole command, each phase at a small size, is run by
tests/test_commands.py."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob, ProcrastinateWorker

from bench import worker_tasks
from bench.ceiling import WORKER_NAME, ceiling
from bench.scaling import ceiling_connections, grid, grid_cells, report_lines
from bench.workers import PROBE_PRIORITY, pickup_latency_under_load, run_workers
from jobs.databases import database_url
from jobs.models import JobResult


@pytest.fixture
def bench_workers_on_test_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's workers take the database from the environment (bench_jobs runs them
    against its scratch database): here, the test database."""
    monkeypatch.setenv("DATABASE_URL", database_url())


def _embedded_server() -> bool:
    """Whether the tests' PostgreSQL is the embedded one, a process of this machine."""
    return bool(connection.settings_dict["ENGINE"] == "project.embedded_postgres")


def test_grid_cells__reads_processes_by_concurrency() -> None:
    assert grid_cells("1x1, 1x4,2x8 ") == [(1, 1), (1, 4), (2, 8)]
    assert grid_cells("") == grid_cells("  ") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2x", "'2x' is not PROCESSESxCONCURRENCY"),
        ("1x1,,2x2", "'' is not PROCESSESxCONCURRENCY"),
        ("2*4", "'2\\*4' is not PROCESSESxCONCURRENCY"),
        ("0x4", "0x4: from 1 to 64 processes, from 1 to 500 concurrency"),
        ("1x501", "1x501: from 1 to 64 processes"),
        ("1x4,2x2,1x4", "1x4 is given twice"),
    ],
)
def test_bench_jobs__refuses_a_bad_grid(value: str, message: str) -> None:
    with pytest.raises(CommandError, match=f"--grid: {message}"):
        call_command("bench_jobs", "--grid", value, stdout=StringIO())


def test_bench_jobs__refuses_bad_scaling_arguments() -> None:
    with pytest.raises(CommandError, match="--load-latency-count: must be at least 10"):
        call_command("bench_jobs", "--load-latency-count", "5", stdout=StringIO())
    with pytest.raises(CommandError, match="--load-latency-rate: must be at least 1"):
        call_command("bench_jobs", "--load-latency-rate", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="--ceiling-connections: must be at most 64"):
        call_command("bench_jobs", "--ceiling-connections", "65", stdout=StringIO())
    with pytest.raises(CommandError, match="--grid-repeat: must be at least 1"):
        call_command("bench_jobs", "--grid-repeat", "0", stdout=StringIO())


def test_ceiling_connections__one_per_slot_of_the_recommended_setup_unless_given() -> None:
    options = {"ceiling_connections": None, "processes": 2, "concurrency": 4}

    assert ceiling_connections(options) == 8
    assert ceiling_connections({**options, "ceiling_connections": 3}) == 3
    assert ceiling_connections({**options, "concurrency": 500}) == 64  # max_connections: 100


@pytest.mark.django_db(transaction=True)
def test_ceiling__fetches_and_finishes_every_job_as_a_worker_does() -> None:
    other_queue = int(worker_tasks.noop_sync.configure(queue="elsewhere").defer(n=-1))

    figures = ceiling(60, 2)

    assert (figures["jobs"], figures["connections"]) == (60, 2)
    assert figures["per_second"] > 0
    assert figures["client_cpu_ms_per_job"] >= 0
    if _embedded_server():  # its processes are this machine's: their CPU is read
        assert figures["server_cpu_ms_per_job"] > 0
        assert 0 < figures["backend_cpu_ms_per_job"] <= figures["server_cpu_ms_per_job"]
        assert figures["cpu_bound_per_second"] > 0
    # Each job ended as a worker ends it, with its result row, once.
    bench_jobs = ProcrastinateJob.objects.filter(queue_name=worker_tasks.QUEUE)
    assert list(bench_jobs.values_list("status", flat=True).distinct()) == ["succeeded"]
    assert bench_jobs.count() == 60
    results = JobResult.objects.filter(job_id__in=bench_jobs.values("id"))
    assert results.count() == 60
    assert set(results.values_list("status", "attempt", "worker_name")) == {
        ("succeeded", 1, WORKER_NAME)
    }
    assert set(results.values_list("return_value", flat=True)) == {None}
    # Only the bench queue's jobs; the worker it registered is gone.
    assert ProcrastinateJob.objects.get(id=other_queue).status == "todo"
    assert not ProcrastinateWorker.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_pickup_latency_under_load__urgent_jobs_start_while_the_backlog_waits(
    bench_workers_on_test_database: None,
) -> None:
    figures = pickup_latency_under_load(
        run_workers(1, 2), backlog=300, count=10, per_second=50, listeners=1
    )

    assert figures["count"] == 10
    assert 0 <= figures["median_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert (figures["per_second"], figures["backlog"]) == (50, 300)
    # The workers never ran dry: every urgent job met a backlog.
    assert figures["fewest_waiting"] > 0
    jobs = ProcrastinateJob.objects.filter(queue_name=worker_tasks.QUEUE)
    assert jobs.filter(priority=PROBE_PRIORITY).count() == 10
    assert jobs.filter(priority=0).count() == figures["backlog_jobs"] >= 300
    assert not jobs.exclude(status="succeeded").exists()  # all drained before it returned


@pytest.mark.django_db(transaction=True)
def test_grid__drains_with_each_cell_and_reports_a_row_per_cell(
    bench_workers_on_test_database: None,
) -> None:
    lines: list[str] = []

    figures = grid([(1, 1), (1, 3)], 100, 1, lines.append)

    assert figures["kind"] == "noop_sync"
    assert list(figures["cells"]) == ["1x1", "1x3"]
    for label, (processes, concurrency) in (("1x1", (1, 1)), ("1x3", (1, 3))):
        row = figures["cells"][label]
        assert (row["processes"], row["concurrency"], row["jobs"]) == (processes, concurrency, 100)
        assert row["runs_per_second"] == [row["per_second"]]
    assert lines == [
        "Grid: drain 100 noop_sync jobs with 1x1 (1/1)...",
        "Grid: drain 100 noop_sync jobs with 1x3 (1/1)...",
    ]
    assert ProcrastinateJob.objects.filter(status="succeeded").count() == 200


def test_report_lines__say_each_figure() -> None:
    latency = {"count": 300, "median_ms": 2.5, "p95_ms": 9.0, "p99_ms": 31.25, "max_ms": 60.0}
    figures: dict[str, Any] = {
        "recommended": {"processes": 2, "concurrency": 4},
        "drain": {
            "noop_sync/stock": {"per_second": 200.0},
            "noop_sync/recommended": {"per_second": 500.0},
        },
        "pickup_under_load": {
            **latency,
            "per_second": 20,
            "backlog": 5000,
            "backlog_jobs": 10000,
            "fewest_waiting": 1000,
        },
        "ceiling": {
            "jobs": 5000,
            "seconds": 4.0,
            "per_second": 1250.0,
            "connections": 2,
            "server_cpu_ms_per_job": 1.25,
            "backend_cpu_ms_per_job": 1.0,
            "client_cpu_ms_per_job": 0.4,
            "cpu_bound_per_second": 1600.0,
        },
        "grid": {
            "kind": "noop_sync",
            "cells": {
                "1x1": {"jobs": 5000, "seconds": 25.0, "per_second": 200.0,
                        "runs_per_second": [200.0, 190.0], "processes": 1, "concurrency": 1},
                "2x4": {"jobs": 5000, "seconds": 10.0, "per_second": 500.0,
                        "runs_per_second": [480.0, 500.0], "processes": 2, "concurrency": 4},
            },
        },
    }  # fmt: skip

    text = "\n".join(report_lines(figures))

    assert (
        "Pickup latency under load (no-op async jobs of a higher priority, 20 a second, while "
        "run_workers --processes 2 --concurrency 4 drains a backlog of no-op async jobs, never "
        "fewer than 1,000 seen waiting): median 2.50 ms, p95 9.00 ms, p99 31.25 ms, "
        "max 60.00 ms (300 jobs)"
    ) in text
    assert (
        "from 2 plain connection(s) as fast as they go: 1,250.0 jobs/s (5,000 jobs in 4.0 s)"
    ) in text
    assert (
        "CPU per job: PostgreSQL 1.250 ms (its backends for these connections 1.000 ms), the "
        "client 0.400 ms; with every core given to PostgreSQL, at most 1,600 jobs/s"
    ) in text
    assert "the recommended setup's drains reach, of the ceiling: noop_sync 40%" in text
    assert "median of 2 run(s)" in text
    assert re.search(r"  1x1 +200\.0   \(5,000 jobs in 25\.0 s\)   \(runs: 200, 190\)", text)
    assert re.search(r"  2x4 +500\.0   \(5,000 jobs in 10\.0 s\)   \(runs: 480, 500\)", text)
    # A server whose processes are not this machine's: no CPU figure, said so.
    figures["ceiling"].update(
        server_cpu_ms_per_job=None, backend_cpu_ms_per_job=None, cpu_bound_per_second=None
    )
    del figures["grid"]

    text = "\n".join(report_lines(figures))

    assert "PostgreSQL's CPU per job: not measured (the server runs elsewhere)" in text
    assert "Scaling" not in text
