"""The JSON job API: defer a task by name, read a job's status, list tasks, act on jobs.

Routes (see jobs/urls.py), each in a sync and an async implementation that share all
their checks; the async one (under /api/async/) uses `defer_async` and the async ORM:

    POST /api/jobs/                    defer: {"task": ..., "kwargs": {...}, options}
    GET  /api/jobs/<id>/               status, progress, result or error
    POST /api/jobs/<id>/cancel/        cancel a job that has not started
    POST /api/jobs/<id>/abort/         request abort of a running job (cancels a waiting one)
    POST /api/jobs/<id>/retry/         retry a failed job
    GET  /api/tasks/                   the task registry

Machine clients send `Authorization: Bearer <token>` (tokens are limited to named tasks);
session users need the `jobs.defer_job`, `jobs.view_job_status` or `jobs.manage_job`
permission, and CSRF applies to them. Every error is a JSON body `{"error": ..., "field":
...}` with its status code, and no error path writes a job row.

What a client sends is confined to what it was given: its locks are namespaced by the task
(`http_tasks.api_lock`), its priority is at most JOBS_API_MAX_PRIORITY, its schedule is
bounded (`job_times.scheduled_time`), and a job of a task it may not use is, to it, a job
that does not exist.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import jobs as procrastinate_jobs
from procrastinate import tasks as procrastinate_tasks
from procrastinate.contrib.django import app

from jobs import tokens
from jobs.conf import jobs_settings
from jobs.http_tasks import (
    ArgumentError,
    api_lock,
    check_arguments,
    describe_task,
    get_task,
    is_callable_over_http,
)
from jobs.job_times import ScheduleError, max_ahead, scheduled_time
from jobs.models import ApiToken
from jobs.results import ajob_status, job_status
from jobs.transaction import async_atomic

PERMISSIONS = {
    "defer": "jobs.defer_job",
    "view": "jobs.view_job_status",
    "manage": "jobs.manage_job",
}
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
SCHEDULE_UNITS = {"weeks", "days", "hours", "minutes", "seconds"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # used with fullmatch: no "\n" at the end
PG_INT_RANGE = (-(2**31), 2**31 - 1)
PG_BIGINT_MAX = 2**63 - 1
MAX_JSON_DEPTH = 32


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        response = JsonResponse(body, status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="jobs"'
        return response


# --- Who is asking ----------------------------------------------------------------------


@dataclass
class Principal:
    """A token or a session user, with what it may do."""

    token: ApiToken | None = None
    permissions: set[str] = field(default_factory=set)

    def require(self, action: str, task_name: str | None = None) -> None:
        if self.token is not None:
            if task_name is not None and not self.token.allows(task_name):
                raise ApiError(403, f"This token may not use task {task_name!r}.", "task")
            return
        if PERMISSIONS[action] not in self.permissions:
            raise ApiError(403, f"You need the {PERMISSIONS[action]!r} permission.")

    def sees(self, task_name: str) -> bool:
        return self.token is None or self.token.allows(task_name)

    @property
    def reads_tracebacks(self) -> bool:
        # A traceback shows the server's paths and code: for the site's own users only.
        return self.token is None


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(401, "The Authorization header must be 'Bearer <token>'.")
    return raw.strip()


def _enforce_csrf(request: HttpRequest) -> None:
    # Session cookies ride along on any cross-site request; bearer tokens do not.
    reason = CsrfViewMiddleware(lambda request: HttpResponse()).process_view(
        request, lambda request: HttpResponse(), (), {}
    )
    if reason is not None:
        raise ApiError(403, "CSRF check failed: send the X-CSRFToken header.")


def _require_session(request: HttpRequest, user: AbstractBaseUser | AnonymousUser) -> None:
    # Who is asking comes first: a visitor with neither token nor session is told to
    # authenticate (401), not that a CSRF token is missing; CSRF then protects sessions.
    if not user.is_authenticated:
        raise ApiError(401, "Authentication required: send a bearer token or log in.")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        _enforce_csrf(request)


def authenticate(request: HttpRequest) -> Principal:
    raw = _bearer(request)
    if raw is not None:
        token = tokens.authenticate(raw)
        if token is None:
            raise ApiError(401, "Invalid or revoked token.")
        return Principal(token=token)
    user = request.user
    _require_session(request, user)
    return Principal(permissions=user.get_all_permissions())


async def aauthenticate(request: HttpRequest) -> Principal:
    raw = _bearer(request)
    if raw is not None:
        token = await tokens.aauthenticate(raw)
        if token is None:
            raise ApiError(401, "Invalid or revoked token.")
        return Principal(token=token)
    user = await request.auser()
    _require_session(request, user)
    return Principal(permissions=await user.aget_all_permissions())


# --- What is asked ----------------------------------------------------------------------


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
    """Refuse a string PostgreSQL cannot store: text and jsonb hold no NUL, and a lone
    surrogate has no UTF-8 encoding."""
    if "\x00" in value:
        raise ApiError(400, "Strings may not contain the NUL character (\\u0000).", field_name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "Strings may not contain lone surrogates.", field_name) from None


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
    # task says otherwise) are not to wait behind a client's.
    lowest, highest = PG_INT_RANGE[0], min(jobs_settings.JOBS_API_MAX_PRIORITY, PG_INT_RANGE[1])
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


def parse_defer_request(body: bytes) -> DeferRequest:
    """Parse and check a defer request body; raise ApiError(400) naming the bad field."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.")
    unknown = sorted(set(data) - DEFER_FIELDS)
    if unknown:
        raise ApiError(400, f"Unknown field {unknown[0]!r}.", unknown[0])
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


def resolve_task(name: str) -> procrastinate_tasks.Task[Any, Any, Any]:
    task = get_task(name)
    if task is None:
        raise ApiError(404, f"No task named {name!r}.", "task")
    if not is_callable_over_http(name):
        raise ApiError(403, f"Task {name!r} is not callable over HTTP.", "task")
    return task


def prepare_defer(request: DeferRequest, principal: Principal) -> procrastinate_jobs.JobDeferrer:
    """Check that `principal` may defer the task with these arguments; return the deferrer
    configured with the request's options, its locks in the task's namespace."""
    task = resolve_task(request.task)
    principal.require("defer", task.name)
    try:
        check_arguments(task, request.kwargs)
    except ArgumentError as exc:
        raise ApiError(400, exc.message, exc.field) from None
    options = dict(request.options)
    for lock_field in LOCK_FIELDS:
        if lock_field in options:
            options[lock_field] = api_lock(task.name, options[lock_field])
    return task.configure(**options)


def _created(job_id: int) -> JsonResponse:
    url = reverse("jobs:api-job", args=[job_id])
    response = JsonResponse({"id": job_id, "status": "todo", "status_url": url}, status=201)
    response["Location"] = url
    return response


def _already_enqueued(request: DeferRequest, deferrer: procrastinate_jobs.JobDeferrer) -> ApiError:
    stored = deferrer.job.queueing_lock
    sent = request.options.get("queueing_lock")
    if sent is None:  # the task's own queueing lock, from its definition
        message = f"A job of {request.task} with its queueing lock {stored!r} is already waiting."
    else:
        message = (
            f"A job of {request.task} with queueing lock {sent!r} is already waiting "
            f"(stored as {stored!r})."
        )
    return ApiError(409, message, "queueing_lock")


def _job_id(raw: int) -> int:
    if raw > PG_BIGINT_MAX:
        raise ApiError(404, f"No job {raw}.")
    return raw


def _visible_status(
    status: dict[str, Any] | None, job_id: int, principal: Principal
) -> dict[str, Any]:
    """The status of a job `principal` may see, for status and actions alike.

    A job of a task the token may not use is answered like a missing job, in the same
    words: a different answer would tell which ids exist and which task they run.
    """
    if status is None or not principal.sees(status["task"]):
        raise ApiError(404, f"No job {job_id}.")
    if status["error"] is not None and not principal.reads_tracebacks:
        status["error"] = {key: status["error"][key] for key in ("type", "message")}
    return status


def _action_result(action: str, job_id: int, before: str, done: bool) -> JsonResponse:
    if action == "retry":
        return JsonResponse({"id": job_id, "status": "todo", "action": "retried"})
    if not done:
        verb = "cancelled" if action == "cancel" else "aborted"
        only = "jobs that have not started" if action == "cancel" else "waiting or running jobs"
        raise ApiError(409, f"Job {job_id} is {before}: only {only} can be {verb}.")
    if before == "doing":
        return JsonResponse(
            {"id": job_id, "status": "doing", "action": "abort_requested"}, status=202
        )
    return JsonResponse({"id": job_id, "status": "cancelled", "action": "cancelled"})


def _check_retry(job_id: int, before: str) -> None:
    if before != "failed":
        raise ApiError(409, f"Job {job_id} is {before}: only failed jobs can be retried.")


def _tasks_payload(principal: Principal) -> JsonResponse:
    tasks = [
        describe_task(task) for name, task in sorted(app.tasks.items()) if principal.sees(name)
    ]
    return JsonResponse({"tasks": tasks})


# --- Sync views -------------------------------------------------------------------------


@csrf_exempt  # enforced for session users in authenticate(); tokens need none
@require_POST
def defer_job(request: HttpRequest) -> HttpResponse:
    try:
        body = read_body(request)
        principal = authenticate(request)
        defer_request = parse_defer_request(body)
        deferrer = prepare_defer(defer_request, principal)
        try:
            with transaction.atomic():
                job_id = deferrer.defer(**defer_request.kwargs)
        except procrastinate_exceptions.AlreadyEnqueued:
            raise _already_enqueued(defer_request, deferrer) from None
    except ApiError as error:
        return error.response()
    return _created(job_id)


@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    try:
        principal = authenticate(request)
        principal.require("view")
        status = _visible_status(job_status(_job_id(job_id)), job_id, principal)
    except ApiError as error:
        return error.response()
    return JsonResponse(status)


@csrf_exempt
@require_POST
def job_action(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    try:
        read_body(request)  # unused, but read within bounds
        principal = authenticate(request)
        principal.require("manage")
        status = _visible_status(job_status(_job_id(job_id)), job_id, principal)
        manager = app.job_manager
        done = True
        if action == "retry":
            _check_retry(job_id, status["status"])
            manager.retry_job_by_id(job_id, retry_at=timezone.now())
        else:
            done = manager.cancel_job_by_id(job_id, abort=action == "abort")
        response = _action_result(action, job_id, status["status"], done)
    except ApiError as error:
        return error.response()
    return response


@require_GET
def task_list(request: HttpRequest) -> HttpResponse:
    try:
        principal = authenticate(request)
        principal.require("view")
    except ApiError as error:
        return error.response()
    return _tasks_payload(principal)


# --- Async views ------------------------------------------------------------------------


@csrf_exempt
@require_POST
async def adefer_job(request: HttpRequest) -> HttpResponse:
    try:
        body = read_body(request)
        principal = await aauthenticate(request)
        defer_request = parse_defer_request(body)
        deferrer = prepare_defer(defer_request, principal)
        try:
            async with async_atomic():
                job_id = await deferrer.defer_async(**defer_request.kwargs)
        except procrastinate_exceptions.AlreadyEnqueued:
            raise _already_enqueued(defer_request, deferrer) from None
    except ApiError as error:
        return error.response()
    return _created(job_id)


@require_GET
async def ajob_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    try:
        principal = await aauthenticate(request)
        principal.require("view")
        status = _visible_status(await ajob_status(_job_id(job_id)), job_id, principal)
    except ApiError as error:
        return error.response()
    return JsonResponse(status)


@csrf_exempt
@require_POST
async def ajob_action(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    try:
        read_body(request)  # unused, but read within bounds
        principal = await aauthenticate(request)
        principal.require("manage")
        status = _visible_status(await ajob_status(_job_id(job_id)), job_id, principal)
        manager = app.job_manager
        done = True
        if action == "retry":
            _check_retry(job_id, status["status"])
            await manager.retry_job_by_id_async(job_id, retry_at=timezone.now())
        else:
            done = await manager.cancel_job_by_id_async(job_id, abort=action == "abort")
        response = _action_result(action, job_id, status["status"], done)
    except ApiError as error:
        return error.response()
    return response


@require_GET
async def atask_list(request: HttpRequest) -> HttpResponse:
    try:
        principal = await aauthenticate(request)
        principal.require("view")
    except ApiError as error:
        return error.response()
    return _tasks_payload(principal)
