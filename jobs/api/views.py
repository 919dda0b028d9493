"""The job API's views, sync and async, and the shape of their answers (see the package's
docstring for the routes). Each view authenticates (auth.py), checks what is asked
(requests.py), acts, and answers JSON; any refusal is an `ApiError` answered as such.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import jobs as procrastinate_jobs
from procrastinate.contrib.django import app

from jobs import job_actions
from jobs.api.auth import Principal, aauthenticate, authenticate
from jobs.api.errors import ApiError
from jobs.api.requests import DeferRequest, parse_defer_request, prepare_defer, read_body
from jobs.http_tasks import describe_task
from jobs.job_ids import is_job_id
from jobs.job_status import ajob_status, job_status
from jobs.transaction import async_atomic


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
    if not is_job_id(raw):
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
    if not principal.reads_tracebacks:
        if status["error"] is not None:
            status["error"] = _without_traceback(status["error"])
        for entry in status["attempts_log"]:
            if entry.get("error") is not None:
                entry["error"] = _without_traceback(entry["error"])
    return status


def _without_traceback(error: dict[str, Any]) -> dict[str, Any]:
    return {key: error.get(key) for key in ("type", "message")}


# The job API's actions, each one function of jobs/job_actions.py (the admin's too).
ACTIONS: dict[str, Callable[[list[int]], job_actions.Outcome]] = {
    "cancel": job_actions.cancel_waiting,
    "abort": job_actions.abort,
    "retry": job_actions.retry_failed,
}


def _action_result(action: str, job_id: int, outcome: job_actions.Outcome) -> JsonResponse:
    if job_id not in outcome.done:
        status = next(iter(outcome.skipped), None)
        if status is None or status == "deleted":  # deleted since its status was read
            raise ApiError(404, f"No job {job_id}.")
        raise ApiError(409, f"Job {job_id} is {status}: {outcome.refusal}.")
    if action == "retry":
        return JsonResponse({"id": job_id, "status": "todo", "action": "retried"})
    if action == "abort" and job_id not in outcome.cancelled:
        return JsonResponse(
            {"id": job_id, "status": "doing", "action": "abort_requested"}, status=202
        )
    return JsonResponse({"id": job_id, "status": "cancelled", "action": "cancelled"})


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
        _visible_status(job_status(_job_id(job_id)), job_id, principal)
        response = _action_result(action, job_id, ACTIONS[action]([job_id]))
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
        _visible_status(await ajob_status(_job_id(job_id)), job_id, principal)
        outcome = await sync_to_async(ACTIONS[action])([job_id])
        response = _action_result(action, job_id, outcome)
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
