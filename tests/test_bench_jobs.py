"""`manage.py bench_jobs` (bench/): the whole command at tiny sizes; its scaling figures
(bench/scaling.py, bench/ceiling.py and the latency under load in bench/workers.py) against
the test database with real workers; and its Celery + Redis row (bench.celery_drain) with a
real redis-server and a real Celery worker."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob, ProcrastinateWorker

from bench import celery_app, worker_tasks
from bench.ceiling import WORKER_NAME, ceiling
from bench.celery_drain import (
    celery_beside,
    chart_line,
    check_ran_once,
    drain_celery,
    redis_server,
)
from bench.celery_drain import report_lines as celery_report_lines
from bench.scaling import ceiling_connections, grid, grid_cells, report_lines
from bench.workers import PROBE_PRIORITY, pickup_latency_under_load, run_workers
from jobs.databases import database_url
from jobs.management.commands.run_workers import DEFAULT_CONCURRENCY
from jobs.models import JobResult
from tests.conftest import skip_outside_ci


# Every phase of the benchmark, batches and limits included, with real workers: longer than
# the suite's 300 s per test on a loaded 2-core machine.
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_bench_jobs__runs_every_phase_and_writes_figures_and_chart(tmp_path: Any) -> None:
    out = StringIO()

    call_command(
        "bench_jobs", "--jobs", "100", "--kinds", "noop_async,orm_sync", "--processes", "1",
        "--repeat", "2",
        "--defer-count", "10", "--latency-count", "10", "--polling-latency-count", "5",
        "--poll-interval", "0.2", "--requests", "20", "--batch-jobs", "100",
        "--big-batch", "300", "--idle-seconds", "1", "--held-jobs", "20",
        "--load-latency-count", "10", "--load-latency-rate", "50", "--grid", "1x1,1x2",
        "--celery-concurrency", "1", "--output", str(tmp_path), stdout=out,
    )  # fmt: skip

    text = out.getvalue()
    assert "Defer rate (jobs/s):" in text
    assert "noop_async/stock" in text
    assert "orm_sync/recommended" in text
    assert "Pickup latency, LISTEN/NOTIFY" in text
    assert "adds" in text
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["drain"]["orm_sync/recommended"]["jobs"] == 100
    assert len(figures["drain"]["noop_async/stock"]["runs_per_second"]) == 2
    assert "noop_async: recommended / stock = " in text
    assert figures["pickup_listen_notify"]["count"] == 10
    # What limits throughput (bench/scaling.py): latency under load, the ceiling, the grid.
    assert figures["pickup_under_load"]["count"] == 10
    assert "Pickup latency under load" in text
    # As many connections as the recommended setup's slots: 1 process x run_workers' default.
    assert (figures["ceiling"]["jobs"], figures["ceiling"]["connections"]) == (
        100,
        DEFAULT_CONCURRENCY,
    )
    assert "The machine's ceiling: no worker" in text
    assert list(figures["grid"]["cells"]) == ["1x1", "1x2"]
    assert re.search(r"  1x2 +[\d,.]+   \(100 jobs in", text)
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    # Django's task API beside procrastinate's, in the same run and the same rounds.
    assert "Django's task API beside procrastinate's" in text
    for row in (
        "enqueue() vs defer(), one per transaction",
        "aenqueue() vs defer_async(), one per transaction",
        "drain, no-op sync tasks",
        "drain, no-op async tasks",
    ):
        assert re.search(rf"{re.escape(row)} +[\d,.]+ vs +[\d,.]+ +ratio \d+\.\d\d", text), row
    django = figures["django_tasks"]
    assert django["enqueue"]["sync"]["enqueue"]["jobs"] == 10
    assert len(django["enqueue"]["async"]["aenqueue"]["runs_per_second"]) == 2
    assert django["drain"]["async"]["django"]["jobs"] == 100
    assert django["drain"]["sync"]["ratio"] == round(
        django["drain"]["sync"]["django"]["per_second"]
        / django["drain"]["sync"]["procrastinate"]["per_second"],
        3,
    )
    # Batches beside plain jobs, each batch's callback run once (drain checks it).
    batches = figures["batches"]
    for flavour in ("sync", "async"):
        assert batches[flavour]["batched"]["jobs"] == 100
        assert batches[flavour]["batched"]["callbacks"] == 1
        assert len(batches[flavour]["plain"]["runs_per_second"]) == 2
        assert re.search(
            rf"100 no-op {flavour} jobs, one batch vs plain +[\d,.]+ vs +[\d,.]+ +ratio", text
        )
    assert batches["big_batch"]["jobs"] == 300
    assert "one batch of 300 no-op sync jobs" in text
    assert "callback run 1 time(s)" in text
    # Limits: the app's fetch beside procrastinate's in the same rounds, a limited drain, the
    # CPU of workers with only held-back jobs.
    limits = figures["limits"]
    assert len(limits["unlimited"]["app_fetch"]["runs_per_second"]) == 2
    assert limits["unlimited"]["ratio"] == round(
        limits["unlimited"]["app_fetch"]["per_second"]
        / limits["unlimited"]["procrastinate_fetch"]["per_second"],
        3,
    )
    assert re.search(
        r"unlimited no-op async jobs, the app's fetch vs procrastinate's +[\d,.]+ vs +[\d,.]+ "
        r"+ratio \d+\.\d\d",
        text,
    )
    assert (limits["limited"]["jobs"], limits["limited"]["keys"]) == (100, 4)
    assert "no-op async jobs, 2 at once per key over 4 keys" in text
    assert limits["held_cpu"]["held_jobs"] == 20
    assert limits["held_cpu"]["held_cpu_seconds_per_minute"] >= 0
    assert "with only 20 held-back jobs" in text
    # Celery + Redis in the same rounds as the no-op kind (not the ORM one), with its ratio.
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing, and CI=true requires the Celery row to run")
        assert "  Celery + Redis: skipped, redis-server is not on the PATH\n" in text
        assert figures["celery"] == {"skipped": "redis-server is not on the PATH"}
        return
    celery_row = figures["drain"]["noop_async/celery"]
    assert celery_row["jobs"] == 100
    assert len(celery_row["runs_per_second"]) == 2
    assert "orm_sync/celery" not in figures["drain"]
    assert figures["celery"]["concurrency"] == 1
    assert figures["celery"]["recommended_over_celery"] == {
        "noop_async": round(
            figures["drain"]["noop_async/recommended"]["per_second"] / celery_row["per_second"], 3
        )
    }
    assert re.search(r"noop_async/celery +[\d,.]+ +\(100 jobs in [\d.]+ s; runs: ", text)
    assert re.search(r"noop_async: recommended / celery = \d+\.\d\d \(Celery's sync no-op\)", text)
    assert "Celery has no async tasks" in text


def test_bench_jobs__refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="choose among"):
        call_command("bench_jobs", "--kinds", "nope", stdout=StringIO())
    with pytest.raises(CommandError, match="--repeat"):
        call_command("bench_jobs", "--repeat", "0", stdout=StringIO())
    with pytest.raises(CommandError, match=r"between 0\.05 and 60"):
        call_command("bench_jobs", "--poll-interval", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="--celery-concurrency"):
        call_command("bench_jobs", "--celery-concurrency", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="scratch database"):
        call_command("bench_jobs", "--measure-into", "/tmp/x.json", stdout=StringIO())


# --- Celery + Redis (bench.celery_drain) ------------------------------------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throwaway redis-server of the benchmark's own; skipped without redis-server on the
    PATH, except under CI (.ci/run installs Debian's redis-server)."""
    if shutil.which("redis-server") is None:
        skip_outside_ci(
            "redis-server is not installed (apt install redis-server)",
            tests="the Celery + Redis benchmark tests",
        )
    with redis_server() as url:
        yield url


def test_redis_url_fixture__fails_under_ci_without_redis_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server
    monkeypatch.setenv("CI", "true")

    # Caught either way, so that a skip shows as this test's failure, not as a skip.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:
        request.getfixturevalue("redis_url")

    assert outcome.type is pytest.fail.Exception
    assert "CI=true requires the Celery + Redis benchmark tests" in str(outcome.value)


def test_redis_server__runs_without_persistence(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.ping()
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    client.close()


def test_redis_server__is_stopped_after_the_block() -> None:
    if shutil.which("redis-server") is None:
        skip_outside_ci("redis-server is not installed", tests="the Celery + Redis tests")
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        assert client.ping()

    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_drain_celery__runs_each_task_once_and_leaves_redis_empty(redis_url: str) -> None:
    figures = drain_celery(redis_url, 200, concurrency=2, timeout=120)

    assert figures["jobs"] == 200
    assert figures["per_second"] > 0
    client = redis.Redis.from_url(redis_url)
    assert client.llen("celery") == 0
    assert client.hlen("unacked") == 0
    client.close()
    # A second drain on the same Redis finds it empty, as each round of bench_jobs does.
    assert drain_celery(redis_url, 100, concurrency=1, timeout=120)["jobs"] == 100


def test_drain_celery__refuses_a_queue_with_tasks_of_another_drain(redis_url: str) -> None:
    app = celery_app.make_app(redis_url)
    app.tasks[celery_app.NOOP].apply_async(kwargs={"n": 0}, ignore_result=True)
    app.close()

    # That task would have run twice with the drain's own n=0: refused before anything runs.
    with pytest.raises(RuntimeError, match="still in Redis"):
        drain_celery(redis_url, 100, concurrency=1, timeout=120)
    assert redis.Redis.from_url(redis_url).llen("celery") == 1


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ([0, 1, 2, 2], r"3 of 4 tasks ran; ran more than once: \[2\]"),
        ([0, 1, 2], r"3 of 4 tasks ran; ran more than once: none"),
        ([0, 1, 2, 3, 7], r"not queued by this run: \[7\]"),
    ],
)
def test_check_ran_once__refuses_a_task_run_twice_never_or_from_elsewhere(
    numbers: list[int], message: str
) -> None:
    with pytest.raises(RuntimeError, match=message):
        check_ran_once(numbers, 4)


def test_check_ran_once__accepts_each_task_once_in_any_order() -> None:
    check_ran_once([3, 0, 2, 1], 4)


def test_celery_beside__skipped_without_redis_server_on_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with celery_beside(["noop_sync", "noop_async"], 2) as celery:
        assert celery.measures("noop_sync", 100) == []
        figures = celery.figures({})

    assert figures == {"skipped": "redis-server is not on the PATH"}
    assert celery_report_lines(figures) == [
        "Celery + Redis: skipped, redis-server is not on the PATH"
    ]
    assert chart_line(figures) == "Celery + Redis: skipped, redis-server is not on the PATH"


def test_celery_beside__skipped_without_a_noop_kind() -> None:
    with celery_beside(["orm_sync", "orm_async"], 2) as celery:
        assert celery.broker_url is None
        figures = celery.figures({})

    assert celery_report_lines(figures) == [
        "Celery + Redis: skipped, --kinds has none of noop_sync, noop_async"
    ]


def test_celery_beside__measures_the_noop_kinds_and_reports_the_ratio(redis_url: str) -> None:
    with celery_beside(["noop_sync", "orm_sync"], 1) as celery:
        assert celery.measures("orm_sync", 100) == []
        ((label, measure),) = celery.measures("noop_sync", 100)
        row = measure()
        figures = celery.figures(
            {
                "noop_sync/recommended": {"per_second": row["per_second"] * 2},
                "noop_sync/celery": row,
            }
        )

    assert label == "celery"
    assert row["jobs"] == 100
    assert figures["recommended_over_celery"] == {"noop_sync": 2.0}
    assert (figures["pool"], figures["concurrency"]) == ("prefork", 1)
    lines = celery_report_lines(figures)
    assert lines[0].startswith(f"celery = Celery {figures['celery_version']} + Redis ")
    assert lines[1:] == ["noop_sync: recommended / celery = 2.00"]


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
