"""Maintenance commands through call_command: dry runs change nothing, real runs change
exactly what they announced, runs again are harmless, bad arguments fail clearly."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from example import tasks as example_tasks
from example.models import Comment
from jobs import tasks
from jobs.maintenance import from_timestamp
from jobs.models import ApiToken, DailyTaskStatistics, JobResult
from jobs.tokens import issue_token
from tests.example.test_maintenance import make_comments, number, run

pytestmark = pytest.mark.django_db


def test_clear_expired_sessions__dry_run_then_run() -> None:
    now = timezone.now()
    for key, delta in (("a", -1), ("b", -2), ("c", 5)):
        Session.objects.create(
            session_key=key, session_data="", expire_date=now + dt.timedelta(days=delta)
        )

    assert number(r"Would delete (\d+)", run("clear_expired_sessions", "--dry-run")) == 2
    assert Session.objects.count() == 3
    assert number(r"Deleted (\d+)", run("clear_expired_sessions")) == 2
    assert list(Session.objects.values_list("session_key", flat=True)) == ["c"]


def test_clear_expired_sessions__runs_as_a_background_command() -> None:
    Session.objects.create(
        session_key="old", session_data="", expire_date=timezone.now() - dt.timedelta(days=1)
    )

    result = tasks.run_management_command(command="clear_expired_sessions")

    assert "Deleted 1 expired session" in str(result["output"])
    assert not Session.objects.exists()


def test_delete_expired_tokens__keeps_active_and_recent() -> None:
    now = timezone.now()
    issue_token(name="active", tasks=["jobs.build_report"])
    old, _ = issue_token(name="old-revoked", tasks=["jobs.build_report"])
    old.revoke(at=now - dt.timedelta(days=40))
    recent, _ = issue_token(name="recently-expired", tasks=["jobs.build_report"])
    ApiToken.objects.filter(pk=recent.pk).update(expires_at=now - dt.timedelta(days=2))

    assert number(r"Would delete (\d+)", run("delete_expired_tokens", "--dry-run")) == 1
    assert ApiToken.objects.count() == 3
    assert number(r"Deleted (\d+)", run("delete_expired_tokens")) == 1
    assert set(ApiToken.objects.values_list("name", flat=True)) == {"active", "recently-expired"}
    assert number(r"Deleted (\d+)", run("delete_expired_tokens", "--days", "1")) == 1
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["active"]


def test_expired_token__is_refused() -> None:
    from jobs.tokens import authenticate

    token, raw = issue_token(name="short", tasks=["jobs.build_report"])
    assert authenticate(raw) == token
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert authenticate(raw) is None


def add_result(task_name: str, status: str, finished_at: dt.datetime, seconds: float) -> None:
    job_id = example_tasks.build_report.defer(report_id=1)
    JobResult.objects.create(
        job_id=job_id,
        task_name=task_name,
        status=status,
        attempt=1,
        started_at=finished_at - dt.timedelta(seconds=seconds),
        finished_at=finished_at,
        duration=dt.timedelta(seconds=seconds),
    )


def test_compute_daily_statistics__idempotent_for_a_given_date() -> None:
    day = dt.date(2026, 3, 1)
    noon = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    add_result("jobs.build_report", "succeeded", noon, 2)
    add_result("jobs.build_report", "succeeded", noon, 4)
    add_result("jobs.build_report", "failed", noon, 1)
    add_result("jobs.send_notification", "succeeded", noon, 1)
    add_result("jobs.send_notification", "succeeded", noon + dt.timedelta(days=1), 1)  # next day

    dry = run("compute_daily_statistics", "--date", "2026-03-01", "--dry-run")
    assert "Would store statistics of 2 task(s)" in dry
    assert not DailyTaskStatistics.objects.exists()

    run("compute_daily_statistics", "--date", "2026-03-01")
    first = list(
        DailyTaskStatistics.objects.values("task_name", "succeeded", "failed", "mean_duration")
    )
    run("compute_daily_statistics", "--date", "2026-03-01")
    second = list(
        DailyTaskStatistics.objects.values("task_name", "succeeded", "failed", "mean_duration")
    )

    assert first == second
    report = DailyTaskStatistics.objects.get(date=day, task_name="jobs.build_report")
    assert (report.succeeded, report.failed) == (2, 1)
    assert report.mean_duration == dt.timedelta(seconds=7 / 3)
    assert DailyTaskStatistics.objects.count() == 2


def test_compute_daily_statistics__periodic_task_computes_the_day_before_its_tick() -> None:
    add_result("jobs.build_report", "succeeded", dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.UTC), 1)
    tick = int(dt.datetime(2026, 3, 2, 0, 10, tzinfo=dt.UTC).timestamp())

    assert tasks.compute_daily_statistics(timestamp=tick) == {"date": "2026-03-01", "tasks": 1}
    assert tasks.compute_daily_statistics(timestamp=tick) == {"date": "2026-03-01", "tasks": 1}
    assert DailyTaskStatistics.objects.get().date == dt.date(2026, 3, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "yesterday"], "not a date"),
        (["--date", "2026-02-30"], "not a date"),
        (["--date", "2999-01-01"], "has not ended yet"),
    ],
)
def test_compute_daily_statistics__bad_dates(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("compute_daily_statistics", *args)


def test_run_management_command__refuses_commands_outside_the_allow_list() -> None:
    from jobs.background_commands import CommandNotAllowed

    with pytest.raises(CommandNotAllowed, match="not allowed"):
        tasks.run_management_command(command="flush", args=["--noinput"])
    with pytest.raises(CommandNotAllowed, match="list of strings"):
        tasks.run_management_command(command="prune_jobs", args=[3])  # type: ignore[list-item]


def test_run_nightly_maintenance__dry_run_runs_every_step_and_changes_nothing() -> None:
    make_comments(timezone.now(), [48])

    out = run("run_nightly_maintenance", "--dry-run")

    for step in (
        "recover_stalled_jobs",
        "prune_jobs",
        "delete_expired_comments",
        "delete_expired_tokens",
        "clear_expired_sessions",
        "compute_daily_statistics",
    ):
        assert f"{step}:" in out
    assert "Would delete 1 comment" in out
    assert Comment.objects.count() == 1
    assert "Nightly maintenance done (6 steps)." in out


def test_run_nightly_maintenance__without_the_setting_runs_the_job_system_s_steps(
    settings: Any,
) -> None:
    del settings.JOBS_NIGHTLY_COMMANDS

    out = run("run_nightly_maintenance", "--dry-run")

    steps = re.findall(r"^(\w+):$", out, flags=re.MULTILINE)
    assert steps == [
        "recover_stalled_jobs",
        "prune_jobs",
        "delete_expired_tokens",
        "clear_expired_sessions",
        "compute_daily_statistics",
    ]
    assert "Nightly maintenance done (5 steps)." in out


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["prune_jobs", "delete_expired_coments"], "do not exist: delete_expired_coments"),
        (["prune_jobs", "run_nightly_maintenance"], "must not contain run_nightly_maintenance"),
    ],
)
def test_run_nightly_maintenance__refuses_bad_steps_before_running_any(
    settings: Any, steps: list[str], message: str
) -> None:
    settings.JOBS_NIGHTLY_COMMANDS = steps
    make_comments(timezone.now(), [48])
    out = StringIO()

    with pytest.raises(CommandError, match=message):
        call_command("run_nightly_maintenance", stdout=out, stderr=out)

    assert out.getvalue() == ""  # not even the first step


def test_list_periodic_tasks__schedules_in_words() -> None:
    out = run("list_periodic_tasks")

    assert "jobs.delete_expired_comments [every-10-minutes]" in out
    assert "Every 10 minutes" in out
    assert "jobs.prune_jobs [hourly]" in out
    assert "jobs.run_management_command [clear-expired-sessions]" in out
    assert "At 03:15" in out
    assert "never deferred" in out


def test_prune_jobs__bad_arguments() -> None:
    with pytest.raises(CommandError, match="needs --status"):
        run("prune_jobs", "--older-than-hours", "2")
    with pytest.raises(CommandError, match="invalid choice"):
        run("prune_jobs", "--status", "todo")


HUGE = "1" + "0" * 30


@pytest.mark.parametrize(
    ("command", "option", "maximum"),
    [
        (["prune_jobs", "--status", "failed"], "--older-than-hours", "876000"),
        (["delete_expired_tokens"], "--days", "36500"),
        (["delete_expired_comments"], "--hours", "876000"),
        (["recover_stalled_jobs"], "--stalled-after", "86400"),
    ],
)
def test_maintenance_commands__refuse_a_huge_age_and_delete_nothing(
    command: list[str], option: str, maximum: str
) -> None:
    # The run-command page lets staff type these: a huge age overflowed Python's datetime or
    # PostgreSQL's interval inside the job.
    now = timezone.now()
    make_comments(now, [24 * 400])
    token, _ = issue_token(name="old-revoked", tasks=["jobs.build_report"])
    token.revoke(at=now - dt.timedelta(days=400))

    with pytest.raises(CommandError, match=f"must be at most {maximum}, not {HUGE}"):
        run(*command, option, HUGE)

    assert (Comment.objects.count(), ApiToken.objects.count()) == (1, 1)
    run(*command, option, maximum, "--dry-run")


def test_periodic_admin_page__lists_schedules_for_staff(admin_client: Any, client: Any) -> None:
    page = admin_client.get("/admin/procrastinate/procrastinatejob/periodic-tasks/")
    assert page.status_code == 200
    assert b"Every 10 minutes" in page.content
    assert b"jobs.recover_stalled_jobs" in page.content
    assert client.get("/admin/procrastinate/procrastinatejob/periodic-tasks/").status_code == 302


RUN_COMMAND_URL = "/admin/procrastinate/procrastinatejob/run-command/"


def test_run_command_admin_page__defers_an_allowed_command(admin_client: Any) -> None:
    refused = admin_client.post(
        "/admin/procrastinate/procrastinatejob/run-command/", {"command": "flush", "arguments": ""}
    )
    assert refused.status_code == 200
    assert not ProcrastinateJob.objects.exists()

    response = admin_client.post(
        "/admin/procrastinate/procrastinatejob/run-command/",
        {"command": "prune_jobs", "arguments": "--dry-run"},
    )

    job = ProcrastinateJob.objects.get()
    assert response.status_code == 302
    assert job.task_name == "jobs.run_management_command"
    assert job.args == {"command": "prune_jobs", "args": ["--dry-run"], "requested_by": "admin"}


def test_from_timestamp__is_utc() -> None:
    assert from_timestamp(0) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
