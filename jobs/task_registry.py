"""The worker's view of the tasks it can run: procrastinate's registry, plus Django tasks
found by their path, plus a clear failure for a task the code no longer has.

procrastinate's worker looks a job's task up with `app.tasks.get(name)`. It knows the tasks
of the modules it imported at start (each app's `tasks.py`, PROCRASTINATE_IMPORT_PATHS).
Django's task API names a task by its dotted path instead, and lets it live in any module:
a job whose task is a `django.tasks` function in a module nothing imported yet is found by
importing that module (`jobs.django_tasks` registers a Django task as it is created).

A job whose task still cannot be found would otherwise fail before procrastinate's worker
middleware runs, leaving no result to say why. Looked up through `get`, such a name gives a
stand-in that raises `TaskMissing`, so the job fails like any other, with the reason recorded
as its error. Code that asks whether a task exists uses `find_task`, which says None.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import procrastinate
from django.utils.module_loading import import_string
from procrastinate.tasks import Task

logger = logging.getLogger(__name__)

# A dotted path of Python identifiers, as Django tasks are named.
DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", re.ASCII)


class TaskMissing(Exception):
    """A job's task does not exist in the code the worker runs."""


class TaskRegistry(dict[str, Task[Any, Any, Any]]):
    """procrastinate's `app.tasks`, which finds Django tasks by their path on demand."""

    def __init__(self, app: procrastinate.App, tasks: dict[str, Task[Any, Any, Any]]) -> None:
        super().__init__(tasks)
        self.app = app

    def find(self, name: str) -> Task[Any, Any, Any] | None:
        """The task called `name`, importing the module a Django task's path names; None
        if there is none."""
        task = super().get(name)
        if task is not None or not DOTTED_PATH.fullmatch(name):
            return task
        try:
            import_string(name)  # creating a Django task registers it here
        except ImportError:
            return None
        except Exception:
            logger.exception("Importing the task %s failed", name)
            return None
        return super().get(name)

    def get(self, name: str, default: Any = None) -> Any:
        return self.find(name) or missing_task(self.app, name)


def missing_task(app: procrastinate.App, name: str) -> Task[Any, Any, Any]:
    """A stand-in for the task `name`, which fails its job with `TaskMissing`."""

    def missing(**kwargs: Any) -> None:
        raise TaskMissing(
            f"No task named {name!r} in the code this worker runs: it was renamed or removed, "
            "or its module is not imported by the worker (an app's tasks.py, "
            "PROCRASTINATE_IMPORT_PATHS, or a Django task's own module)."
        )

    return Task(missing, blueprint=app, name=name, queue="default")


def install_task_registry(app: procrastinate.App) -> None:
    """Give `app` the registry above, once, keeping the tasks it has."""
    if not isinstance(app.tasks, TaskRegistry):
        app.tasks = TaskRegistry(app, app.tasks)


def find_task(name: str) -> Task[Any, Any, Any] | None:
    """The task called `name` in procrastinate's Django app, or None."""
    from procrastinate.contrib.django import app

    tasks = app.tasks
    if isinstance(tasks, TaskRegistry):
        return tasks.find(name)
    return tasks.get(name)
