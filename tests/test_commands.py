from __future__ import annotations

import json
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
