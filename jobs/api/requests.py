"""What a client asks the job API: the body, read within bounds, and a defer request,
checked field by field and resolved to a configured task; a batch request, each of its jobs
checked as a defer request is, and resolved to a workflow's jobs (jobs/workflows.py).

Each check raises `ApiError(400)` naming the field; nothing is deferred until all passed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from procrastinate import jobs as procrastinate_jobs
from procrastinate import tasks as procrastinate_tasks

from jobs import workflows
from jobs.api.auth import Principal
from jobs.api.errors import ApiError
from jobs.conf import jobs_settings
from jobs.django_tasks import FLOAT_AS_INTEGER
from jobs.http_tasks import (
    ArgumentError,
    api_lock,
    check_arguments,
    get_task,
    is_callable_over_http,
)
from jobs.job_times import ScheduleError, max_ahead, scheduled_time
from jobs.postgres_values import PG_INT_MIN, text_problem

DEFER_FIELDS = {
    "task",
    "kwargs",
    "queue",
    "priority",
    "schedule_in",
    "schedule_at",
    "queueing_lock",
    "lock",
}
LOCK_FIELDS = ("queueing_lock", "lock")
BATCH_FIELDS = {"jobs", "on_success", "on_finish", "on_failure", "description", "properties"}
# A callback is deferred by its batch, when the last job ends: at once, and once in the
# batch's life, so it takes no schedule and no queueing lock (workflows.JobSpec.stored).
CALLBACK_FIELDS = {"task", "kwargs", "queue", "priority", "lock"}
SCHEDULE_UNITS = {"weeks", "days", "hours", "minutes", "seconds"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # used with fullmatch: no "\n" at the end
MAX_JSON_DEPTH = 32


@dataclass
class DeferRequest:
    task: str
    kwargs: dict[str, Any]
    options: dict[str, Any]


def read_body(request: HttpRequest) -> bytes:
    """The body, never more than JOBS_API_MAX_BODY_BYTES of it read; ApiError(413) past that.

    Every POST view reads it first, before the CSRF check can parse a form body unbounded.
    """
    limit = jobs_settings.JOBS_API_MAX_BODY_BYTES
    too_large = ApiError(413, f"The body is larger than {limit} bytes.")
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    if not declared and "HTTP_TRANSFER_ENCODING" in request.META:
        # A chunked body declares no length: read one byte past the limit and no more.
        # (`request.body` would read all of it, and past DATA_UPLOAD_MAX_MEMORY_SIZE raise
        # RequestDataTooBig, which Django answers with an HTML 400.)
        body = request.read(limit + 1)
    else:
        try:
            body = request.body
        except RequestDataTooBig:  # a site whose Django limit is below JOBS_API_MAX_BODY_BYTES
            raise too_large from None
    if len(body) > limit:
        raise too_large
    return body


def _check_text(value: str, field_name: str) -> None:
    if problem := text_problem(value):
        raise ApiError(400, f"{problem.capitalize()}.", field_name)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_json_safe(value: Any, path: str, depth: int = 0) -> None:
    """Refuse what JSON parsing lets through but PostgreSQL's jsonb (or sanity) refuses."""
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, f"Nested deeper than {MAX_JSON_DEPTH} levels.", path)
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, "Numbers must be finite.", path)
    elif isinstance(value, float) and abs(value) >= FLOAT_AS_INTEGER:
        # jsonb writes such a number without a point: the task would get an integer.
        raise ApiError(
            400,
            "A number this large comes back from PostgreSQL as an integer: "
            "send an integer or a string.",
            path,
        )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json_safe(key, path, depth + 1)
            _check_json_safe(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_safe(item, f"{path}[{index}]", depth + 1)


def _name(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ApiError(
            400, "Must be 1 to 128 letters, digits or the characters _ . : -", field_name
        )
    return value


def _lock(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise ApiError(400, "Must be a string of 1 to 255 characters.", field_name)
    _check_text(value, field_name)
    # procrastinate reads a taken queueing lock back out of PostgreSQL's error message, with
    # a pattern a line break defeats (an AssertionError, so a 500, instead of the 409). A
    # lock names something; it has no use for control characters.
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ApiError(
            400, "Must not contain control characters (line breaks, tabs, ...).", field_name
        )
    return value


def _priority(value: Any) -> int:
    # An API client may lower its job's priority, down to PostgreSQL's int range, but not
    # raise it above JOBS_API_MAX_PRIORITY: the site's own jobs (priority 0 unless their
    # task says otherwise) are not to wait behind a client's. The setting itself stays below
    # stalled-job recovery's priority (jobs/conf.py).
    lowest, highest = PG_INT_MIN, jobs_settings.JOBS_API_MAX_PRIORITY
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ApiError(
            400,
            f"Must be an integer from {lowest} to {highest} (JOBS_API_MAX_PRIORITY); "
            "higher runs first.",
            "priority",
        )
    return value


def _scheduled(when: dt.datetime, field_name: str, now: dt.datetime | None = None) -> dt.datetime:
    try:
        return scheduled_time(when, now=now)
    except ScheduleError as exc:
        raise ApiError(400, str(exc), field_name) from None


def _schedule_in(value: Any) -> dt.datetime:
    if not isinstance(value, dict) or not value:
        raise ApiError(400, 'Must be an object such as {"minutes": 5}.', "schedule_in")
    for unit, amount in value.items():
        if unit not in SCHEDULE_UNITS:
            raise ApiError(
                400,
                f"Unknown unit {unit!r}; use {', '.join(sorted(SCHEDULE_UNITS))}.",
                "schedule_in",
            )
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ApiError(400, f"{unit!r} must be a number of at least 0.", "schedule_in")
    try:
        delay = dt.timedelta(**value)
    except OverflowError:
        delay = dt.timedelta.max
    # Turned into the time it names, which then meets the same rule as schedule_at. A delay
    # past the bound is shortened to just past it first, so that adding it cannot overflow.
    delay = min(delay, max_ahead() + dt.timedelta(seconds=1))
    now = timezone.now()
    return _scheduled(now + delay, "schedule_in", now=now)


def _schedule_at(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ApiError(400, "Must be an ISO 8601 date and time string.", "schedule_at")
    try:
        when = parse_datetime(value)
    except (ValueError, OverflowError):  # a date or an offset out of range
        when = None
    if when is None:
        raise ApiError(400, "Must be an ISO 8601 date and time string.", "schedule_at")
    return _scheduled(when, "schedule_at")


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; ApiError(400) if it is not one."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return data


@contextmanager
def _within(where: str) -> Iterator[None]:
    """Name the fields of refusals raised inside from the body's top (`jobs[3].kwargs.n`)."""
    try:
        yield
    except ApiError as error:
        raise error.within(where) from None


def _unknown_field(data: dict[str, Any], fields: AbstractSet[str]) -> None:
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ApiError(400, f"Unknown field {unknown[0]!r}.", unknown[0])


def parse_defer_request(body: bytes) -> DeferRequest:
    """Parse and check a defer request body; raise ApiError(400) naming the bad field."""
    return defer_request_from(json_object(body))


def defer_request_from(data: Any, fields: AbstractSet[str] = DEFER_FIELDS) -> DeferRequest:
    """Check one job object (a defer request's body, an item of a batch's `jobs`) field by
    field, its fields among `fields`; raise ApiError(400) naming the bad field."""
    if not isinstance(data, dict):
        raise ApiError(400, "Must be a JSON object.")
    _unknown_field(data, fields)
    if "task" not in data:
        raise ApiError(400, "The name of the task to defer is required.", "task")
    if not isinstance(data["task"], str) or not data["task"]:
        raise ApiError(400, "Must be a task name.", "task")
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ApiError(400, "Must be an object of keyword arguments.", "kwargs")
    _check_json_safe(kwargs, "kwargs")
    options: dict[str, Any] = {}
    if data.get("queue") is not None:
        options["queue"] = _name(data["queue"], "queue")
    if data.get("priority") is not None:
        options["priority"] = _priority(data["priority"])
    if data.get("schedule_in") is not None and data.get("schedule_at") is not None:
        raise ApiError(400, "Give schedule_in or schedule_at, not both.", "schedule_at")
    # Both become `schedule_at`: the time, in UTC, that reaches the job row.
    if data.get("schedule_in") is not None:
        options["schedule_at"] = _schedule_in(data["schedule_in"])
    if data.get("schedule_at") is not None:
        options["schedule_at"] = _schedule_at(data["schedule_at"])
    for lock_field in LOCK_FIELDS:
        if data.get(lock_field) is not None:
            options[lock_field] = _lock(data[lock_field], lock_field)
    return DeferRequest(task=data["task"], kwargs=kwargs, options=options)


@dataclass
class BatchRequest:
    jobs: list[DeferRequest]
    # "on_success", "on_finish", "on_failure" -> the callback asked for.
    callbacks: dict[str, DeferRequest]
    description: str
    properties: dict[str, Any]


def parse_batch_request(body: bytes) -> BatchRequest:
    """Parse and check a batch request body: each of its jobs as `POST /api/jobs/` checks
    one, and its callbacks; raise ApiError(400) naming the bad field (`jobs[3].kwargs.n`)."""
    data = json_object(body)
    _unknown_field(data, BATCH_FIELDS)
    description = data.get("description")
    if description is None:
        description = ""
    elif not isinstance(description, str) or len(description) > workflows.DESCRIPTION_LIMIT:
        raise ApiError(
            400,
            f"Must be a string of at most {workflows.DESCRIPTION_LIMIT} characters.",
            "description",
        )
    _check_text(description, "description")
    properties = data.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise ApiError(400, "Must be a JSON object.", "properties")
    _check_json_safe(properties, "properties")
    items = data.get("jobs")
    if not isinstance(items, list) or not items:
        raise ApiError(400, "Must be a list of at least one job.", "jobs")
    limit = jobs_settings.JOBS_API_MAX_BATCH_JOBS
    if len(items) > limit:
        raise ApiError(
            400, f"At most {limit} jobs in one request (JOBS_API_MAX_BATCH_JOBS).", "jobs"
        )
    jobs = []
    for index, item in enumerate(items):
        with _within(f"jobs[{index}]"):
            jobs.append(defer_request_from(item))
    callbacks = {}
    for role in workflows.CALLBACKS:
        if data.get(role) is not None:
            with _within(role):
                callbacks[role] = _callback_request(data[role])
    return BatchRequest(
        jobs=jobs, callbacks=callbacks, description=description, properties=properties
    )


def _callback_request(data: Any) -> DeferRequest:
    if isinstance(data, dict):
        scheduled = sorted(set(data) & (DEFER_FIELDS - CALLBACK_FIELDS))
        if scheduled:
            raise ApiError(
                400,
                "A callback has no schedule and no queueing lock: the batch defers it when "
                "its last job ends.",
                scheduled[0],
            )
    request = defer_request_from(data, CALLBACK_FIELDS)
    if workflows.BATCH_ARGUMENT in request.kwargs:
        raise ApiError(
            400,
            f"A callback gets its {workflows.BATCH_ARGUMENT!r} argument from the batch.",
            f"kwargs.{workflows.BATCH_ARGUMENT}",
        )
    return request


def resolve_task(name: str, principal: Principal) -> procrastinate_tasks.Task[Any, Any, Any]:
    """The task `name` that `principal` may defer; ApiError otherwise.

    A token is answered the same 404 whether the name is unknown, names a task not callable
    over HTTP or one the token is not limited to: different answers would tell any token the
    site's task names. A user trusted with jobs.defer_job gets the precise reason; one
    without it is refused before the name is looked at.
    """
    principal.require("defer")
    task = get_task(name)
    hidden = principal.token is not None and not (
        is_callable_over_http(name) and principal.sees(name)
    )
    if task is None or hidden:
        raise ApiError(404, f"No task named {name!r}.", "task")
    if not is_callable_over_http(name):
        raise ApiError(403, f"Task {name!r} is not callable over HTTP.", "task")
    return task


def prepare_defer(request: DeferRequest, principal: Principal) -> procrastinate_jobs.JobDeferrer:
    """Check that `principal` may defer the task with these arguments; return the deferrer
    configured with the request's options, its locks in the task's namespace."""
    task = resolve_task(request.task, principal)
    try:
        check_arguments(task, request.kwargs)
    except ArgumentError as exc:
        raise ApiError(400, exc.message, exc.field) from None
    return _configure(task, request.options)


def _configure(
    task: procrastinate_tasks.Task[Any, Any, Any], request_options: dict[str, Any]
) -> procrastinate_jobs.JobDeferrer:
    options = dict(request_options)
    for lock_field in LOCK_FIELDS:
        if lock_field in options:
            options[lock_field] = api_lock(task.name, options[lock_field])
    return task.configure(**options)


@dataclass
class BatchToDefer:
    """A batch request checked against the tasks, ready for `workflows.defer_batch`."""

    jobs: list[workflows.JobSpec]
    callbacks: dict[str, workflows.JobSpec]
    description: str
    properties: dict[str, Any]


def prepare_batch(request: BatchRequest, principal: Principal) -> BatchToDefer:
    """Check that `principal` may defer each job and callback of the batch, as
    `prepare_defer` checks a job; return them as the workflow's jobs, their locks in their
    task's namespace. A callback's task must take the `batch` argument the batch adds."""
    principal.require("defer")  # before any task name is looked at, and naming no job
    jobs = []
    for index, job_request in enumerate(request.jobs):
        with _within(f"jobs[{index}]"):
            jobs.append(_job_spec(prepare_defer(job_request, principal), job_request.kwargs))
    _check_queueing_locks(request.jobs, jobs)
    callbacks = {}
    for role, callback in request.callbacks.items():
        with _within(role):
            task = resolve_task(callback.task, principal)
            _check_callback_arguments(task, callback.kwargs)
            callbacks[role] = _job_spec(_configure(task, callback.options), callback.kwargs)
    return BatchToDefer(
        jobs=jobs,
        callbacks=callbacks,
        description=request.description,
        properties=request.properties,
    )


def _job_spec(
    deferrer: procrastinate_jobs.JobDeferrer, kwargs: dict[str, Any]
) -> workflows.JobSpec:
    try:
        return workflows.job(deferrer, **kwargs)
    except (TypeError, ValueError) as exc:
        # workflows.job refuses arguments its task does not take or that are not JSON;
        # the checks above refuse them first, this keeps any slip a 400 rather than a 500.
        raise ApiError(400, str(exc), "kwargs") from None


def _check_callback_arguments(
    task: procrastinate_tasks.Task[Any, Any, Any], kwargs: dict[str, Any]
) -> None:
    batch = workflows.BATCH_ARGUMENT
    try:
        # With the argument the batch adds: a JSON object.
        check_arguments(task, {**kwargs, batch: {}})
    except ArgumentError as exc:
        if exc.field == f"kwargs.{batch}":
            raise ApiError(
                400,
                f"{task.name} cannot be a callback: it must take the argument {batch!r}, "
                "a JSON object the batch passes it.",
                "task",
            ) from None
        raise ApiError(400, exc.message, exc.field) from None


def _check_queueing_locks(requests: list[DeferRequest], specs: list[workflows.JobSpec]) -> None:
    # One job with a queueing lock may wait at a time: two in one batch would make the
    # whole batch fail in the database.
    first: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.queueing_lock is None:
            continue
        if spec.queueing_lock in first:
            sent = "queueing_lock" in requests[index].options
            raise ApiError(
                400,
                f"jobs[{first[spec.queueing_lock]}] has the same queueing lock "
                f"({spec.queueing_lock!r}): one job with a queueing lock may wait at a time.",
                f"jobs[{index}].{'queueing_lock' if sent else 'task'}",
            )
        first[spec.queueing_lock] = index
