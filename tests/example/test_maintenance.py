"""The example's clean-up of expired comments: the command (dry run, batches, bad values)
and the periodic task (from its tick)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from example import tasks
from example.models import Comment

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, text
    return int(match.group(1))


def make_comments(now: dt.datetime, ages_in_hours: list[float]) -> None:
    for age in ages_in_hours:
        Comment.objects.create(author="x", body="y", created_at=now - dt.timedelta(hours=age))


def test_delete_expired_comments__dry_run_then_run_then_again() -> None:
    now = timezone.now()
    make_comments(now, [1, 23, 25, 48, 100])

    dry = run("delete_expired_comments", "--dry-run")
    assert number(r"Would delete (\d+) comment", dry) == 3
    assert Comment.objects.count() == 5

    real = run("delete_expired_comments", "--batch-size", "2")
    assert number(r"Deleted (\d+) comment", real) == 3
    assert "2 deleted so far" in real  # progress per batch
    assert Comment.objects.count() == 2

    assert number(r"Deleted (\d+) comment", run("delete_expired_comments")) == 0
    assert Comment.objects.count() == 2


def test_delete_expired_comments__hours_option_and_bad_values() -> None:
    now = timezone.now()
    make_comments(now, [1, 3])
    assert number(r"Deleted (\d+)", run("delete_expired_comments", "--hours", "2")) == 1
    for bad in (["--hours", "0"], ["--hours", "soon"], ["--batch-size", "-5"]):
        with pytest.raises(CommandError, match=r"at least|not a whole number"):
            run("delete_expired_comments", *bad)


def test_delete_expired_comments__periodic_task_uses_its_timestamp() -> None:
    now = timezone.now()
    make_comments(now, [1, 30])
    a_day_ago = int((now - dt.timedelta(days=1)).timestamp())

    # A tick from a day ago sees the 30-hour-old comment as 6 hours old: nothing expires.
    assert tasks.delete_expired_comments(timestamp=a_day_ago) == {"deleted": 0}
    assert tasks.delete_expired_comments(timestamp=int(now.timestamp())) == {"deleted": 1}


def test_comment_lifetime__setting_reads_its_old_environment_name_too() -> None:
    def lifetime(**env: str) -> str:
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in {"EXAMPLE_COMMENT_LIFETIME_HOURS", "JOBS_COMMENT_LIFETIME_HOURS"}
        }
        environment.update(env, DJANGO_SETTINGS_MODULE="project.settings")
        code = "from django.conf import settings; print(settings.EXAMPLE_COMMENT_LIFETIME_HOURS)"
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=settings.BASE_DIR,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() or result.stderr

    assert lifetime() == "24"
    assert lifetime(JOBS_COMMENT_LIFETIME_HOURS="6") == "6"
    assert lifetime(EXAMPLE_COMMENT_LIFETIME_HOURS="3", JOBS_COMMENT_LIFETIME_HOURS="6") == "3"
    assert "must be at least 1" in lifetime(EXAMPLE_COMMENT_LIFETIME_HOURS="0")
