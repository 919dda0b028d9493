from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import tasks
from jobs.background_commands import CommandExited, CommandNotAllowed
from jobs.models import ApiToken, JobResult
from jobs.tokens import authenticate

pytestmark = pytest.mark.django_db


def test_create_api_token__prints_the_token_once_and_stores_a_hash() -> None:
    out = StringIO()

    call_command(
        "create_api_token",
        "billing",
        "--tasks",
        "jobs.build_report, jobs.send_notification",
        stdout=out,
    )

    raw = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get()
    assert token.name == "billing"
    assert token.tasks == ["jobs.build_report", "jobs.send_notification"]
    assert raw.startswith("pgj_")
    assert token.key_hash != raw
    assert raw not in token.key_hash
    assert authenticate(raw) == token


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--tasks", "no.such"], "Unknown task 'no.such'"),
        (["x", "--tasks", "jobs.delete_sent_notifications"], "not callable over HTTP"),
        (["  ", "--tasks", "jobs.build_report"], "needs a name"),
    ],
)
def test_create_api_token__refuses_bad_arguments(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=StringIO())
    assert not ApiToken.objects.exists()


def test_create_api_token__refuses_a_duplicate_name() -> None:
    call_command("create_api_token", "ci", "--tasks", "jobs.build_report", stdout=StringIO())

    with pytest.raises(CommandError, match="already exists"):
        call_command("create_api_token", "ci", "--tasks", "jobs.build_report", stdout=StringIO())
    assert ApiToken.objects.count() == 1


def test_create_api_token__with_expiry() -> None:
    out = StringIO()

    call_command(
        "create_api_token",
        "temp",
        "--tasks",
        "jobs.build_report",
        "--expires-in-days",
        "7",
        stdout=out,
    )

    token = ApiToken.objects.get()
    assert token.expires_at is not None
    assert "It expires on" in out.getvalue()
    with pytest.raises(CommandError, match="at least 1"):
        call_command(
            "create_api_token", "x", "--tasks", "jobs.build_report", "--expires-in-days", "0"
        )


def test_create_api_token__requires_tasks_and_says_so() -> None:
    # argparse shows an ArgumentTypeError's reason; for a ValueError, "invalid ... value".
    with pytest.raises(CommandError, match="--tasks: give at least one task name"):
        call_command("create_api_token", "x", "--tasks", " , ", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_bench_api__runs_and_reports_figures(tmp_path: Any) -> None:
    out = StringIO()
    report = tmp_path / "figures.json"

    call_command(
        "bench_api",
        "--jobs",
        "1000",
        "--requests",
        "100",
        "--seconds",
        "0.5",
        "--clients",
        "2",
        "--json",
        str(report),
        stdout=out,
    )

    text = out.getvalue()
    assert "GET /api/jobs/<id>/" in text
    assert "requests/s" in text
    figures = json.loads(report.read_text())
    assert figures["jobs_seeded"] == 1000
    assert figures["status_sync"]["count"] == 100
    assert figures["defer_async_per_second"] > 0


def test_bench_api__refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="at least 1000"):
        call_command("bench_api", "--jobs", "10", stdout=StringIO())
    with pytest.raises(CommandError, match="between 0 and 3600"):
        call_command("bench_api", "--seconds", "-1", stdout=StringIO())


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
        "--output", str(tmp_path), stdout=out,
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
    assert (figures["ceiling"]["jobs"], figures["ceiling"]["connections"]) == (100, 4)
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


def test_bench_jobs__refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="choose among"):
        call_command("bench_jobs", "--kinds", "nope", stdout=StringIO())
    with pytest.raises(CommandError, match="--repeat"):
        call_command("bench_jobs", "--repeat", "0", stdout=StringIO())
    with pytest.raises(CommandError, match=r"between 0\.05 and 60"):
        call_command("bench_jobs", "--poll-interval", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="scratch database"):
        call_command("bench_jobs", "--measure-into", "/tmp/x.json", stdout=StringIO())


# --- jobs.run_management_command (jobs/background_commands.py) -----------------------------


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--dry-run", "--he"], ["--version"]])
def test_run_management_command__refuses_options_that_only_print(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Deferred from code, or queued before the admin refused them.
    with pytest.raises(CommandNotAllowed, match="only prints"):
        tasks.run_management_command(command="prune_jobs", args=args)

    assert capsys.readouterr() == ("", "")


def test_run_management_command__a_command_that_exits_fails_with_its_status(
    settings: Any,
) -> None:
    settings.JOBS_BACKGROUND_COMMANDS = ["shell"]

    with pytest.raises(CommandExited, match="'shell' exited with status 3 instead of returning"):
        tasks.run_management_command(command="shell", args=["-c", "raise SystemExit(3)"])


def test_run_management_command__returns_who_asked() -> None:
    result = tasks.run_management_command(
        command="prune_jobs", args=["--dry-run"], requested_by="alice"
    )

    assert result["requested_by"] == "alice"
    assert "requested_by" not in tasks.run_management_command(command="prune_jobs")


@pytest.mark.django_db(transaction=True)
def test_run_management_command__a_worker_fails_bad_command_lines_and_runs_on(
    run_worker: Any,
) -> None:
    defer = tasks.run_management_command.defer
    exits = defer(command="shell", args=["-c", "raise SystemExit(3)"])
    prints = defer(command="prune_jobs", args=["--help"])
    queued_before = defer(command="prune_jobs", args=["--dry-run"])  # no requested_by
    asked = defer(command="prune_jobs", args=["--dry-run"], requested_by="alice")
    ours = [exits, prints, queued_before, asked]

    worker = run_worker("--queues", "maintenance", JOBS_BACKGROUND_COMMANDS="shell,prune_jobs")

    statuses = dict(ProcrastinateJob.objects.filter(id__in=ours).values_list("id", "status"))
    assert statuses == {
        exits: "failed",
        prints: "failed",
        queued_before: "succeeded",
        asked: "succeeded",
    }
    results = JobResult.objects.in_bulk(ours)
    assert results[exits].exception_type == "jobs.background_commands.CommandExited"
    assert "exited with status 3" in results[exits].exception_message
    assert "only prints" in results[prints].exception_message
    assert results[asked].return_value == {
        "command": "prune_jobs",
        "args": ["--dry-run"],
        "output": results[asked].return_value["output"],  # type: ignore[index]
        "requested_by": "alice",
    }
    assert "usage:" not in worker.stdout + worker.stderr


# --- run_workers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--shutdown-graceful-timeout", "-1"], "must be between 0 and 86400 seconds"),
        (["--fetch-job-polling-interval", "nan"], "must be between 0 and 86400 seconds"),
        (["--fetch-job-polling-interval", "soon"], "'soon' is not a number of seconds"),
        (["--queues", " , "], "give at least one queue"),
        (["--processes", "0"], "must be at least 1, not 0"),
    ],
)
def test_run_workers__refuses_bad_arguments_with_the_reason(args: list[str], reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        call_command("run_workers", *args)


def test_run_workers__refuses_a_database_with_a_pool_and_persistent_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Django refuses that database in every worker, which would be restarted forever.
    database = settings.DATABASES["default"]
    monkeypatch.setitem(database, "OPTIONS", {**database.get("OPTIONS", {}), "pool": True})
    monkeypatch.setitem(database, "CONN_MAX_AGE", None)

    with pytest.raises(CommandError, match=r"DATABASES\['default'\] sets both CONN_MAX_AGE"):
        call_command("run_workers", "--processes", "1")


@pytest.mark.django_db(transaction=True)
def test_run_workers__reads_no_environment_variable_of_the_site(start_run_workers: Any) -> None:
    # CONN_MAX_AGE is this project's variable: run_workers judges the settings the site
    # made of it (here persistent connections without a pool, which is fine).
    group = start_run_workers("--processes", "1", CONN_MAX_AGE="60")

    group.wait_for_output("Starting worker")

    assert group.stop() == 0
    assert "All worker processes stopped." in group.output()


@pytest.mark.django_db(transaction=True)
def test_run_workers__needs_no_base_dir_setting(start_run_workers: Any) -> None:
    # BASE_DIR is this project's setting; a site that installs jobs may have none.
    group = start_run_workers(
        "--processes", "1", DJANGO_SETTINGS_MODULE="tests.settings_without_base_dir"
    )

    group.wait_for_output("Starting worker")

    assert group.stop() == 0
    assert "All worker processes stopped." in group.output()
