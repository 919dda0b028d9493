"""Pausing and resuming queues (jobs/queue_pauses.py) and their commands. What workers do
with a paused queue is tested with the fetch that reads it (tests/test_limits.py)."""

from __future__ import annotations

from io import StringIO

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection

from jobs import queue_pauses
from jobs.models import PausedQueue

pytestmark = pytest.mark.django_db(transaction=True)


def test_pause_and_resume_commands__say_what_changed() -> None:
    out = StringIO()

    call_command("pause_queue", "billing", "--reason", "provider down", stdout=out)
    call_command("pause_queue", "billing", "--reason", "other", stdout=out)

    (paused,) = queue_pauses.paused_queues()
    assert (paused.queue_name, paused.reason) == ("billing", "provider down")
    assert paused.paused_by == "manage.py pause_queue"
    call_command("resume_queue", "billing", stdout=out)
    call_command("resume_queue", "billing", stdout=out)
    assert out.getvalue().splitlines() == [
        "Queue 'billing' paused.",
        "Queue 'billing' was already paused.",
        "Queue 'billing' resumed.",
        "Queue 'billing' was not paused.",
    ]
    assert not PausedQueue.objects.exists()


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("", "non-empty"),
        ("x" * 129, "at most 128"),
        ("bad\x00", "null characters"),
        ("line\nbreak", "control characters"),
        (" billing", "spaces around"),
    ],
)
def test_pause_queue__refuses_bad_names_and_writes_nothing(queue: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("pause_queue", queue, stdout=StringIO())
    with pytest.raises(ValidationError, match=message):
        queue_pauses.resume(queue)

    assert not PausedQueue.objects.exists()


def test_pause__refuses_a_reason_too_long_and_writes_nothing() -> None:
    with pytest.raises(ValidationError, match="at most 255"):
        queue_pauses.pause("billing", reason="x" * 256)

    assert not PausedQueue.objects.exists()


def test_resume__wakes_the_workers_on_procrastinate_channels() -> None:
    queue_pauses.pause("billing")
    params = connection.get_connection_params()
    with psycopg.connect(
        **{key: params[key] for key in ("dbname", "user", "host", "port") if key in params},
        password=params.get("password"),
        autocommit=True,
    ) as listener:
        listener.execute("LISTEN procrastinate_any_queue_v1")
        listener.execute('LISTEN "procrastinate_queue_v1#billing"')

        queue_pauses.resume("billing")

        received = {n.channel: n.payload for n in listener.notifies(timeout=10, stop_after=2)}
    assert received == {
        "procrastinate_any_queue_v1": '{"type": "job_inserted", "job_id": null}',
        "procrastinate_queue_v1#billing": '{"type": "job_inserted", "job_id": null}',
    }
