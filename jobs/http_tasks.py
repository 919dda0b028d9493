"""Which tasks may be deferred by name over HTTP, and how their arguments are checked.

A task is callable over HTTP only if its definition says so, with `@callable_over_http`
above `@app.task(...)`. The job API never resolves a dotted path or any other task: an
"apply any task" endpoint would let a client run whatever code the worker can import.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from procrastinate import tasks as procrastinate_tasks
from procrastinate.contrib.django import app

from jobs.results import json_safe

_callable_over_http: set[str] = set()


def callable_over_http[T: procrastinate_tasks.Task[Any, Any, Any]](task: T) -> T:
    """Mark a procrastinate task as one the job API may defer by name."""
    _callable_over_http.add(task.name)
    return task


def is_callable_over_http(task_name: str) -> bool:
    return task_name in _callable_over_http


def get_task(task_name: str) -> procrastinate_tasks.Task[Any, Any, Any] | None:
    # A plain look-up: a name from a client never makes the site import a module (the
    # registry's `get` would, for a Django task's dotted path).
    return dict.get(app.tasks, task_name)


API_LOCK_PREFIX = "api:"


def api_lock(task_name: str, lock: str) -> str:
    """The lock (or queueing lock) stored for `lock` sent by an API client deferring `task_name`.

    procrastinate's locks are global strings: a client's lock taken as sent could be the lock
    of any of the site's tasks (a periodic task's, say) and hold its jobs back for as long as
    the client's job waits. Stored as `api:<task name>:<lock>`, a client's lock can only meet
    the locks of other clients of the same task. The task name is percent-encoded (`:` and
    `%` in it become `%3A` and `%25`), so that no pair of task and lock reads as another's.
    """
    return f"{API_LOCK_PREFIX}{quote(task_name, safe='')}:{lock}"


class ArgumentError(ValueError):
    """A task argument is missing, unexpected or of the wrong type; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_JSON_TYPES: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _matches(value: object, annotation: Any) -> bool:
    """Whether a JSON value fits a (simple) type annotation; unknown annotations accept all."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is not None:
        annotation = origin
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation in (str, list, dict):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(member) for member in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return _JSON_TYPES.get(origin or annotation, str(annotation))


def task_function(
    task: procrastinate_tasks.Task[Any, Any, Any],
) -> tuple[Callable[..., Any], bool]:
    """The function a task's arguments go to, and whether it takes a context first: for a
    Django task, its own function, not the runner that procrastinate calls."""
    from jobs.django_tasks import django_task_named

    django_task = django_task_named(task.name)
    if django_task is not None:
        return django_task.func, django_task.takes_context
    return task.func, task.pass_context


def check_arguments(task: procrastinate_tasks.Task[Any, Any, Any], kwargs: dict[str, Any]) -> None:
    """Check `kwargs` against the task function's signature and simple type hints."""
    func, takes_context = task_function(task)
    check_function_arguments(func, kwargs, task_name=task.name, takes_context=takes_context)


def check_function_arguments(
    func: Any, kwargs: dict[str, Any], *, task_name: str, takes_context: bool
) -> None:
    """Check `kwargs` against `func`'s signature and simple type hints (its first parameter
    left out when it `takes_context`); `task_name` names the task in the messages."""
    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())
    if takes_context:
        parameters = parameters[1:]
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that cannot be resolved: check names only
        hints = {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    named = {
        p.name: p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    for name in kwargs:
        if name not in named and not accepts_any:
            raise ArgumentError(f"kwargs.{name}", f"{task_name} has no argument {name!r}.")
    for name, parameter in named.items():
        if name not in kwargs:
            if parameter.default is inspect.Parameter.empty:
                raise ArgumentError(f"kwargs.{name}", f"Missing required argument {name!r}.")
            continue
        annotation = hints.get(name, parameter.annotation)
        if not _matches(kwargs[name], annotation):
            raise ArgumentError(f"kwargs.{name}", f"{name!r} must be {_describe(annotation)}.")


def describe_task(task: procrastinate_tasks.Task[Any, Any, Any]) -> dict[str, Any]:
    """A JSON description of a task for the registry endpoint."""
    func, takes_context = task_function(task)
    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())[1 if takes_context else 0 :]
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    arguments = []
    for parameter in parameters:
        annotation = hints.get(parameter.name, parameter.annotation)
        arguments.append(
            {
                "name": parameter.name,
                "type": None
                if annotation is inspect.Parameter.empty
                else getattr(annotation, "__name__", str(annotation)),
                "required": parameter.default is inspect.Parameter.empty,
                "default": None
                if parameter.default is inspect.Parameter.empty
                else json_safe(parameter.default),
            }
        )
    strategy = task.retry_strategy
    retry = None
    if strategy is not None:
        retry = {
            "max_attempts": getattr(strategy, "max_attempts", None),
            "wait": getattr(strategy, "wait", None),
            "linear_wait": getattr(strategy, "linear_wait", None),
            "exponential_wait": getattr(strategy, "exponential_wait", None),
            "retry_exceptions": sorted(
                f"{exc.__module__}.{exc.__qualname__}"
                for exc in (getattr(strategy, "retry_exceptions", None) or ())
            ),
        }
    periodic = [
        {"cron": periodic_task.cron, "periodic_id": periodic_task.periodic_id}
        for periodic_task in app.periodic_registry.periodic_tasks.values()
        if periodic_task.task.name == task.name
    ]
    return {
        "name": task.name,
        "queue": task.queue,
        "priority": task.priority,
        "callable_over_http": is_callable_over_http(task.name),
        "signature": f"{task.name}{signature}",
        "arguments": arguments,
        "retry": retry,
        "periodic": periodic,
    }
