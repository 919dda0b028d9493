"""Stored schedules created from code as README's "Stored schedules" shows (its code blocks,
run here): with the model, and in a data migration, whose historical model has no save()
or clean() of its own."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.models import Schedule
from jobs.schedules import run_due_schedules, validate_schedule

pytestmark = pytest.mark.django_db

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def readme_blocks() -> list[str]:
    """The ```python blocks of README's "Stored schedules"."""
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = readme.split("\n## Stored schedules\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)


def readme_block(containing: str) -> str:
    return next(block for block in readme_blocks() if containing in block)


def historical_apps() -> Any:
    """The `apps` a data migration that depends on jobs' 0009 gets."""
    return MigrationExecutor(connection).loader.project_state(("jobs", "0009_schedules")).apps


def test_schedule__from_code_as_readme_shows() -> None:
    exec(readme_block("schedule.full_clean()"), {})

    stored = Schedule.objects.get()
    assert stored.description == "Delete the notifications sent over 30 days ago"
    assert stored.next_run_at is not None
    assert stored.next_run_at.astimezone(PARIS).time() == dt.time(3, 0)


def test_schedule__from_a_data_migration_as_readme_shows() -> None:
    namespace: dict[str, Any] = {}
    exec(readme_block("def add_nightly_cleanup"), namespace)

    namespace["add_nightly_cleanup"](historical_apps(), None)

    stored = Schedule.objects.get()
    assert stored.next_run_at is not None
    assert stored.next_run_at.astimezone(dt.UTC).time() == dt.time(3, 0)
    assert run_due_schedules(now=stored.next_run_at).deferred == 1
    assert ProcrastinateJob.objects.get().args == {"older_than_days": 30}


def test_schedule__a_data_migration_without_readmes_two_calls_never_runs() -> None:
    # Why README asks for them: the historical model's save() computes no next run.
    historical = historical_apps().get_model("jobs", "Schedule")
    historical.objects.create(task="jobs.delete_sent_notifications", cron="0 3 * * *")

    assert Schedule.objects.get().next_run_at is None


def test_schedule__a_data_migration_gets_the_models_checks() -> None:
    historical = historical_apps().get_model("jobs", "Schedule")
    schedule = historical(task="jobs.delete_sent_notifications", cron="0 3 * *")

    with pytest.raises(ValidationError) as refused:
        validate_schedule(schedule)

    assert set(refused.value.message_dict) == {"kwargs", "cron"}
