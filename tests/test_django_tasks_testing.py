"""Django's task API under the testing helpers of jobs.testing, used as a site's tests would."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.testing import InMemoryQueue
from tests import eager_django_tasks


def test_procrastinate_in_memory__runs_django_tasks(
    procrastinate_in_memory: InMemoryQueue,
) -> None:
    result = eager_django_tasks.multiply.enqueue(6, b=7)

    assert [job["task_name"] for job in procrastinate_in_memory.jobs(status="todo")] == [
        "tests.eager_django_tasks.multiply"
    ]
    assert eager_django_tasks.multiply.get_result(result.id).status == TaskResultStatus.READY

    procrastinate_in_memory.run()

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert (result.args, result.kwargs) == ([6], {"b": 7})
    assert result.attempts == 1


def test_procrastinate_in_memory__django_task_retried_lists_both_attempts(
    procrastinate_in_memory: InMemoryQueue,
) -> None:
    result = eager_django_tasks.fail_first_attempt.enqueue()

    procrastinate_in_memory.run()

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2
    assert result.attempts == 2
    assert [error.exception_class_path for error in result.errors] == ["builtins.RuntimeError"]


def test_procrastinate_in_memory__unknown_result_id(
    procrastinate_in_memory: InMemoryQueue,
) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        eager_django_tasks.multiply.get_result("12345")


def test_run_worker__runs_a_django_task(
    run_worker: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = eager_django_tasks.multiply.enqueue(3, 4)

    completed = run_worker()

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, completed.stderr[-3000:]
    assert result.return_value == 12
    assert len(result.worker_ids) == 1
    line = f"Task id={result.id} path=tests.eager_django_tasks.multiply state=SUCCESSFUL"
    assert line in completed.stderr + completed.stdout


def test_run_worker__a_task_enqueues_in_its_own_transaction(
    run_worker: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = eager_django_tasks.enqueue_then_fail.enqueue()

    run_worker()

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    # The worker's own connector commits each statement: the job must not go through it.
    assert not ProcrastinateJob.objects.filter(
        task_name=eager_django_tasks.multiply.module_path
    ).exists()
