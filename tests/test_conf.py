"""The settings of `jobs` (jobs/conf.py): defaults inside the app, bad values named by
`manage.py check`, and the worker extras installed once by installing the app."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse
from procrastinate import Blueprint
from procrastinate.contrib.django import procrastinate_app
from procrastinate.contrib.django.apps import create_app
from procrastinate.contrib.django.django_connector import DjangoConnector

from jobs import background_commands, job_statuses, job_times
from jobs import tasks as jobs_tasks
from jobs.conf import (
    DEFAULT_RETENTION_HOURS,
    MAX_API_PRIORITY,
    JobsSettings,
    jobs_settings,
    worker_shutdown_graceful_timeout,
)
from jobs.connector import ReconnectingDjangoConnector
from jobs.models import JobResult
from jobs.postgres_values import PG_INT_MAX
from jobs.results import record_result
from jobs.tokens import issue_token
from jobs.worker import install_worker_extras, on_app_ready
from tests.worker_extras_tasks import report_worker_extras

SETTINGS = JobsSettings.all()
NAMES = [setting.name for setting in SETTINGS]


@pytest.fixture
def site_without_jobs_settings(settings: Any) -> None:
    """A site that sets none of the settings of `jobs`."""
    for name in NAMES:
        if hasattr(django_settings, name):
            delattr(settings, name)


def call_output(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def check_output(*args: str) -> str:
    """What `manage.py check` reports, as its error says it."""
    with pytest.raises(SystemCheckError) as failure:
        call_command("check", *args)
    return str(failure.value)


# --- Defaults ---------------------------------------------------------------------------


def test_jobs_settings__site_without_them_gets_the_defaults(
    site_without_jobs_settings: None,
) -> None:
    assert not [name for name in NAMES if hasattr(django_settings, name)]

    assert {name: getattr(jobs_settings, name) for name in NAMES} == {
        "JOBS_RESULT_RUNNING_AFTER_MS": 1000,
        "JOBS_API_MAX_BODY_BYTES": 65536,
        "JOBS_API_MAX_SCHEDULE_DAYS": 365,
        "JOBS_API_MAX_PRIORITY": 0,
        "JOBS_API_MAX_BATCH_JOBS": 10000,
        "JOBS_EXPIRED_TOKEN_KEEP_DAYS": 30,
        "JOBS_RETENTION_HOURS": {"succeeded": 168, "failed": 720, "cancelled": 168, "aborted": 720},
        "JOBS_STALLED_WORKER_SECONDS": 60,
        "JOBS_BACKGROUND_COMMANDS": (
            "clear_expired_sessions",
            "compute_daily_statistics",
            "delete_expired_tokens",
            "prune_jobs",
            "recover_stalled_jobs",
            "run_nightly_maintenance",
        ),
        "JOBS_NIGHTLY_COMMANDS": (
            "recover_stalled_jobs",
            "prune_jobs",
            "delete_expired_tokens",
            "clear_expired_sessions",
            "compute_daily_statistics",
        ),
        "JOBS_DASHBOARD_HOURS": 3,
        "JOBS_DASHBOARD_REFRESH_SECONDS": 10,
        "JOBS_METRICS_TOKEN": "",
        "JOBS_METRICS_WINDOW_SECONDS": 300,
        "JOBS_INSTALL_WORKER_EXTRAS": True,
        "JOBS_SCHEDULE_MISSED_AFTER_SECONDS": 60,
        "JOBS_TIME_LIMIT": None,
        "JOBS_TIME_LIMIT_GRACE_SECONDS": 10,
        "JOBS_QUEUE_LIMITS": {},
        "JOBS_FETCH_WITH_LIMITS": True,
        "JOBS_FETCH_MANY": True,
        "JOBS_GATHER_JOB_ENDS": True,
    }
    call_command("check", "--fail-level", "WARNING")  # every default command exists


@pytest.mark.django_db
def test_jobs_settings__readers_work_on_a_site_without_them(
    site_without_jobs_settings: None, client: Client, staff_client: Client
) -> None:
    _, token = issue_token(name="defaults", tasks=["jobs.build_report"])
    too_big = json.dumps({"task": "jobs.build_report", "kwargs": {"pad": "x" * 65536}})

    api = client.post(
        reverse("jobs:api-defer"),
        data=too_big,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    dashboard = staff_client.get(reverse("jobs:dashboard"))
    metrics = staff_client.get(reverse("jobs:metrics"))
    anonymous_metrics = client.get(reverse("jobs:metrics"))
    health = client.get(reverse("jobs:health"))
    prune = call_output("prune_jobs", "--dry-run")
    stalled = call_output("recover_stalled_jobs", "--dry-run")

    assert api.status_code == 413
    assert api.json()["error"] == "The body is larger than 65536 bytes."
    assert dashboard.status_code == 200
    assert "Refreshes every 10 s" in dashboard.content.decode()
    assert metrics.status_code == 200
    assert anonymous_metrics.status_code == 401  # no token by default: staff only
    assert health.status_code in {200, 503}  # 503: no worker alive, as health should say
    assert [line.split(":")[0].strip() for line in prune.splitlines()[:4]] == list(
        DEFAULT_RETENTION_HOURS
    )
    assert "(no heartbeat for 60 s)" in stalled
    assert job_times.max_ahead() == dt.timedelta(days=365)
    assert "prune_jobs" in background_commands.allowed_commands()


def test_jobs_settings__retention_statuses_are_the_final_statuses() -> None:
    assert tuple(DEFAULT_RETENTION_HOURS) == job_statuses.FINISHED_STATUSES


# --- Values a site sets -----------------------------------------------------------------


def test_jobs_settings__a_site_value_is_read_back(settings: Any) -> None:
    settings.JOBS_DASHBOARD_HOURS = 24
    settings.JOBS_BACKGROUND_COMMANDS = ["prune_jobs"]
    settings.JOBS_RETENTION_HOURS = {"failed": 24 * 90}

    assert jobs_settings.JOBS_DASHBOARD_HOURS == 24
    assert background_commands.allowed_commands() == ["prune_jobs"]
    # The statuses a site leaves out keep their defaults: none is kept forever by omission.
    assert jobs_settings.JOBS_RETENTION_HOURS == {
        "succeeded": 168,
        "failed": 2160,
        "cancelled": 168,
        "aborted": 720,
    }
    call_command("check", "--fail-level", "WARNING")


def test_jobs_api_max_priority__stays_below_stalled_job_recovery() -> None:
    # A client's job at the cap must still wait behind stalled-job recovery.
    assert MAX_API_PRIORITY < jobs_tasks.RECOVERY_PRIORITY <= PG_INT_MAX
    assert JobsSettings.JOBS_API_MAX_PRIORITY.rule.refuse(jobs_tasks.RECOVERY_PRIORITY)
    assert JobsSettings.JOBS_API_MAX_PRIORITY.rule.refuse(MAX_API_PRIORITY) is None


DASHBOARD_HOURS = "a whole number of hours from 1 to 168"
RETENTION = "a dict of final statuses (succeeded, failed, cancelled, aborted) to a whole number"
UNSENDABLE = "it holds a space, a control or a non-ASCII character, which no client sends"
TOKEN = "a string of visible ASCII characters (no spaces), or '' for none"
BAD_VALUES = [
    (
        "JOBS_API_MAX_PRIORITY",
        jobs_tasks.RECOVERY_PRIORITY,
        "it is above 999999999",
        "a whole number (priority) from -2147483648 to 999999999",
    ),
    (
        "JOBS_API_MAX_PRIORITY",
        2**31,
        "it is above 999999999",
        "a whole number (priority) from -2147483648 to 999999999",
    ),
    (
        "JOBS_API_MAX_PRIORITY",
        "10",
        "it is a str, not a whole number",
        "a whole number (priority) from -2147483648 to 999999999",
    ),
    (
        "JOBS_NIGHTLY_COMMANDS",
        "prune_jobs",
        "it is a str, not a list",
        "a list of management command names",
    ),
    ("JOBS_DASHBOARD_HOURS", -1, "it is below 1", DASHBOARD_HOURS),
    ("JOBS_DASHBOARD_HOURS", 169, "it is above 168", DASHBOARD_HOURS),
    ("JOBS_DASHBOARD_HOURS", "3", "it is a str, not a whole number", DASHBOARD_HOURS),
    (
        "JOBS_STALLED_WORKER_SECONDS",
        True,
        "it is a bool, not a whole number",
        "a whole number of seconds, at least 5",
    ),
    ("JOBS_STALLED_WORKER_SECONDS", 2, "it is below 5", "a whole number of seconds, at least 5"),
    (
        "JOBS_RESULT_RUNNING_AFTER_MS",
        1.5,
        "it is a float, not a whole number",
        "a whole number of milliseconds, at least 0",
    ),
    (
        "JOBS_RESULT_RUNNING_AFTER_MS",
        -1,
        "it is below 0",
        "a whole number of milliseconds, at least 0",
    ),
    ("JOBS_API_MAX_BODY_BYTES", 100, "it is below 1024", "a whole number of bytes, at least 1024"),
    (
        "JOBS_API_MAX_SCHEDULE_DAYS",
        10**9,
        "it is above 36500",
        "a whole number of days from 1 to 36500",
    ),
    (
        "JOBS_EXPIRED_TOKEN_KEEP_DAYS",
        -30,
        "it is below 0",
        "a whole number of days from 0 to 36500",
    ),
    ("JOBS_RETENTION_HOURS", {"done": 24}, "'done' is not a final status", RETENTION),
    ("JOBS_RETENTION_HOURS", {"failed": -1}, "the hours of 'failed': it is below 0", RETENTION),
    ("JOBS_RETENTION_HOURS", [("failed", 1)], "it is a list, not a dict", RETENTION),
    (
        "JOBS_BACKGROUND_COMMANDS",
        "prune_jobs",
        "it is a str, not a list",
        "a list of management command names",
    ),
    (
        "JOBS_BACKGROUND_COMMANDS",
        ["prune_jobs", None],
        "None is not a command name",
        "a list of management command names",
    ),
    (
        "JOBS_DASHBOARD_REFRESH_SECONDS",
        10**7,
        "it is above 86400",
        "a whole number of seconds from 1 to 86400",
    ),
    ("JOBS_METRICS_TOKEN", None, "it is a NoneType, not a string", TOKEN),
    ("JOBS_METRICS_TOKEN", "two words", UNSENDABLE, TOKEN),
    ("JOBS_METRICS_TOKEN", "jeton-\u00e9", UNSENDABLE, TOKEN),
    (
        "JOBS_METRICS_WINDOW_SECONDS",
        5,
        "it is below 10",
        "a whole number of seconds from 10 to 86400",
    ),
    ("JOBS_INSTALL_WORKER_EXTRAS", "no", "it is a str, not a bool", "True or False"),
    (
        "JOBS_SCHEDULE_MISSED_AFTER_SECONDS",
        0,
        "it is below 1",
        "a whole number of seconds from 1 to 86400",
    ),
]


@pytest.mark.parametrize(("name", "value", "reason", "expected"), BAD_VALUES)
def test_check__bad_value_is_named_with_what_is_expected(
    settings: Any, name: str, value: Any, reason: str, expected: str
) -> None:
    setattr(settings, name, value)

    reported = check_output()

    assert f"{name} = {value!r} is refused: {reason}" in reported
    assert f"Expected {expected}" in reported
    assert "(jobs.E001)" in reported
    # Processes that run no checks (an ASGI server) get the same words when they read it.
    with pytest.raises(ImproperlyConfigured, match=re.escape(f"{name} = {value!r} is refused")):
        getattr(jobs_settings, name)


def test_check__unknown_background_command_is_a_warning(settings: Any) -> None:
    settings.JOBS_BACKGROUND_COMMANDS = ["prune_jobs", "prune_jbos"]

    call_command("check")  # a warning does not stop the site...
    reported = check_output("--fail-level", "WARNING")

    assert "JOBS_BACKGROUND_COMMANDS names 'prune_jbos', which is no management command" in (
        reported
    )
    assert "(jobs.W001)" in reported


# --- The worker's graceful timeout --------------------------------------------------------


@pytest.mark.parametrize(
    ("worker_defaults", "expected"),
    [
        (None, None),  # procrastinate's own default: wait for running jobs however long
        ({"listen_notify": True}, None),
        ({"shutdown_graceful_timeout": 12}, 12.0),
        ({"shutdown_graceful_timeout": None}, None),
    ],
)
def test_worker_shutdown_graceful_timeout__procrastinate_default_when_unset(
    settings: Any, worker_defaults: dict[str, Any] | None, expected: float | None
) -> None:
    if worker_defaults is None:
        del settings.PROCRASTINATE_WORKER_DEFAULTS
    else:
        settings.PROCRASTINATE_WORKER_DEFAULTS = worker_defaults

    assert worker_shutdown_graceful_timeout() == expected


@pytest.mark.parametrize(
    ("worker_defaults", "reason"),
    [
        ({"shutdown_graceful_timeout": "30"}, "['shutdown_graceful_timeout'] = '30' is refused"),
        ({"shutdown_graceful_timeout": -1}, "['shutdown_graceful_timeout'] = -1 is refused"),
        ({"shutdown_graceful_timeout": float("inf")}, "= inf is refused"),
        ([("shutdown_graceful_timeout", 30)], "PROCRASTINATE_WORKER_DEFAULTS = [("),
    ],
)
def test_check__bad_graceful_timeout_is_named(
    settings: Any, worker_defaults: Any, reason: str
) -> None:
    settings.PROCRASTINATE_WORKER_DEFAULTS = worker_defaults

    reported = check_output()

    assert reason in reported
    assert "(jobs.E002)" in reported
    with pytest.raises(ImproperlyConfigured, match=re.escape(reason)):
        worker_shutdown_graceful_timeout()


# --- README -----------------------------------------------------------------------------


def readme_settings_table() -> dict[str, list[str]]:
    readme = (Path(django_settings.BASE_DIR) / "README.md").read_text()
    section = readme.split("\n### Settings of the jobs app\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return {cell[0].strip("`"): cell[1:] for cell in cells}


def test_readme__lists_every_setting_with_its_default() -> None:
    table = readme_settings_table()

    assert list(table) == NAMES
    for setting in SETTINGS:
        if isinstance(setting.default, int):  # bool included
            assert table[setting.name][0] == f"`{setting.default!r}`", setting.name
        if isinstance(setting.default, dict):
            assert table[setting.name][0] == f"`{json.dumps(setting.default)}`", setting.name


# --- Worker extras ----------------------------------------------------------------------


def recorders(app: Any) -> int:
    return sum(1 for f in app.worker_defaults.get("worker_middleware", []) if f is record_result)


def test_install_worker_extras__installed_by_installing_the_app() -> None:
    assert getattr(django_settings, "PROCRASTINATE_ON_APP_READY", None) is None
    app = procrastinate_app.current_app

    assert recorders(app) == 1
    assert type(app.connector) is ReconnectingDjangoConnector
    assert app.job_manager.connector is app.connector


def test_install_worker_extras__twice_installs_once() -> None:
    app = create_app(blueprint=Blueprint())
    assert type(app.connector) is DjangoConnector

    install_worker_extras(app)
    connector = app.connector
    on_app_ready(app)  # what a site that still sets PROCRASTINATE_ON_APP_READY calls

    assert recorders(app) == 1
    assert app.connector is connector
    assert type(connector) is ReconnectingDjangoConnector


SHOW_EXTRAS = (
    "import django; django.setup(); "
    "from procrastinate.contrib.django import procrastinate_app; "
    "from jobs.results import record_result; "
    "app = procrastinate_app.current_app; "
    "middleware = app.worker_defaults.get('worker_middleware', []); "
    "print(sum(f is record_result for f in middleware), type(app.connector).__name__, "
    "type(app.job_manager.connector).__name__)"
)


@pytest.mark.parametrize(
    ("settings_module", "expected"),
    [
        ("project.settings", "1 ReconnectingDjangoConnector ReconnectingDjangoConnector"),
        ("tests.settings_legacy_hook", "1 ReconnectingDjangoConnector ReconnectingDjangoConnector"),
        (
            "tests.settings_jobs_listed_first",
            "1 ReconnectingDjangoConnector ReconnectingDjangoConnector",
        ),
        ("tests.settings_without_worker_extras", "0 DjangoConnector DjangoConnector"),
    ],
)
def test_install_worker_extras__whatever_the_settings(settings_module: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SHOW_EXTRAS],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": settings_module},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    "settings_module",
    ["project.settings", "tests.settings_legacy_hook", "tests.settings_jobs_listed_first"],
)
def test_worker__records_each_result_once_with_the_reconnecting_connector(
    run_worker: Callable[..., Any], settings_module: str
) -> None:
    job_id = report_worker_extras.defer()

    run_worker(
        DJANGO_SETTINGS_MODULE=settings_module,
        PROCRASTINATE_IMPORT_PATHS="tests.worker_extras_tasks",
    )

    result = JobResult.objects.get(job_id=job_id)
    assert result.status == JobResult.Status.SUCCEEDED
    assert result.return_value == {"recorders": 1, "connector": "ReconnectingPsycopgConnector"}


def test_check__unknown_nightly_command_is_a_warning(settings: Any) -> None:
    # Else run_nightly_maintenance would fail every night, and only then say why.
    settings.JOBS_NIGHTLY_COMMANDS = ["prune_jobs", "prune_jbos"]

    call_command("check")  # a warning does not stop the site...
    reported = check_output("--fail-level", "WARNING")

    assert "JOBS_NIGHTLY_COMMANDS names 'prune_jbos', which is no management command" in reported
    assert "(jobs.W001)" in reported
