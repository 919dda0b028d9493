from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.models import ApiToken
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


def test_create_api_token__requires_tasks() -> None:
    with pytest.raises(CommandError):
        call_command("create_api_token", "x", "--tasks", " , ", stdout=StringIO())
