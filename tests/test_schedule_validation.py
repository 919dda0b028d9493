"""A stored schedule's arguments are checked against the function they go to."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs import schedules
from jobs.models import Schedule
from tests import eager_django_tasks

# full_clean() checks the unique constraints and the one-kind rule in the database.
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": 1, "c": 2}, "has no argument 'c'"),
        ({"a": 1}, "Missing required argument 'b'"),
        ({"a": "one", "b": 2}, "'a' must be"),
    ],
)
def test_schedule_clean__a_django_tasks_arguments_are_its_functions(
    kwargs: dict[str, object], message: str
) -> None:
    schedule = Schedule(task=eager_django_tasks.multiply.module_path, kwargs=kwargs, interval=5)

    with pytest.raises(ValidationError) as raised:
        schedule.full_clean()

    assert any(message in text for text in raised.value.message_dict["kwargs"])


def test_schedule_clean__a_django_task_with_its_arguments_is_accepted() -> None:
    schedule = Schedule(
        task=eager_django_tasks.multiply.module_path, kwargs={"a": 2, "b": 3}, interval=5
    )

    schedule.full_clean()


def test_schedule_clean__a_task_taking_context_is_checked_past_the_context() -> None:
    schedule = Schedule(
        task=eager_django_tasks.fail_first_attempt.module_path, kwargs={"context": 1}, interval=5
    )

    with pytest.raises(ValidationError) as raised:
        schedule.full_clean()

    assert "kwargs" in raised.value.message_dict


def test_run_due_schedules__gives_a_row_written_without_save_its_first_run() -> None:
    (written,) = Schedule.objects.bulk_create(
        [
            Schedule(
                task="jobs.prune_jobs", kwargs={"timestamp": 0}, interval=1, interval_unit="hours"
            )
        ]
    )
    assert Schedule.objects.get().next_run_at is None

    report = schedules.run_due_schedules()

    written.refresh_from_db()
    assert (report.deferred, written.enabled) == (0, True)
    assert written.next_run_at == written.created_at + dt.timedelta(hours=1)


def test_run_due_schedules__disables_a_row_written_without_save_that_ran() -> None:
    once = timezone.now() - dt.timedelta(hours=2)
    (written,) = Schedule.objects.bulk_create(
        [Schedule(task="jobs.prune_jobs", kwargs={"timestamp": 0}, once_at=once, last_run_at=once)]
    )

    schedules.run_due_schedules()

    written.refresh_from_db()
    assert (written.enabled, written.next_run_at, written.run_count) == (False, None, 0)
