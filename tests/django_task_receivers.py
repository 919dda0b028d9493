"""Receivers of Django's task signals that raise, for worker processes of the tests only.

A worker started with `PROCRASTINATE_IMPORT_PATHS=tests.django_task_receivers` imports this
module, and so connects them: each attempt's `task_started` and `task_finished` then meet a
receiver that fails. The test process never imports it.
"""

from __future__ import annotations

from typing import Any

from django.tasks.signals import task_finished, task_started


def fail_on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    raise RuntimeError(f"the task_started receiver failed for {task_result.id}")


def fail_on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    raise RuntimeError(f"the task_finished receiver failed for {task_result.id}")


task_started.connect(fail_on_started, dispatch_uid="tests.django_task_receivers.started")
task_finished.connect(fail_on_finished, dispatch_uid="tests.django_task_receivers.finished")
