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

from jobs import job_actions, workflows
from jobs.api.auth import Principal, aauthenticate, authenticate
from jobs.api.errors import ApiError
from jobs.api.requests import (
    BatchRequest,
    BatchToDefer,
    DeferRequest,
    parse_batch_request,
    parse_defer_request,
    prepare_batch,
    prepare_defer,
    read_body,
)
from jobs.http_tasks import describe_task
from jobs.job_ids import is_job_id, parse_job_id
from jobs.job_status import ajob_status, job_status
from jobs.models import Batch
from jobs.transaction import async_atomic


def _created(job_id: int) -> JsonResponse:
    url = reverse("jobs:api-job", args=[job_id])
    response = JsonResponse({"id": job_id, "status": "todo", "status_url": url}, status=201)
    response["Location"] = url
    return response


def _already_enqueued(request: DeferRequest, deferrer: procrastinate_jobs.JobDeferrer) -> ApiError:
    return _lock_held(request, deferrer.job.queueing_lock)


def _lock_held(request: DeferRequest, stored: str | None) -> ApiError:
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


# --- Batches ----------------------------------------------------------------------------


def _batch_created(batch: Batch) -> JsonResponse:
    url = reverse("jobs:api-batch", args=[batch.pk])
    response = JsonResponse(
        {"id": batch.pk, "status": workflows.batch_state(batch), "status_url": url}, status=201
    )
    response["Location"] = url
    return response


def _batch_lock_held(
    request: BatchRequest, batch: BatchToDefer, error: procrastinate_exceptions.AlreadyEnqueued
) -> ApiError:
    """The 409 for the job of the batch whose queueing lock a waiting job holds."""
    cause = error.__cause__
    stored = getattr(cause, "queueing_lock", None)
    for index, spec in enumerate(batch.jobs):
        if stored is not None and spec.queueing_lock == stored:
            return _lock_held(request.jobs[index], stored).within(f"jobs[{index}]")
    return ApiError(409, "A job of the batch has a queueing lock a waiting job holds.", "jobs")


def _defer_batch(request: BatchRequest, batch: BatchToDefer) -> Batch:
    try:
        with transaction.atomic():
            return workflows.defer_batch(
                batch.jobs,
                on_success=batch.callbacks.get("on_success"),
                on_finish=batch.callbacks.get("on_finish"),
                on_failure=batch.callbacks.get("on_failure"),
                description=batch.description,
                properties=batch.properties,
            )
    except procrastinate_exceptions.AlreadyEnqueued as error:
        raise _batch_lock_held(request, batch, error) from None


async def _adefer_batch(request: BatchRequest, batch: BatchToDefer) -> Batch:
    try:
        async with async_atomic():
            return await workflows.adefer_batch(
                batch.jobs,
                on_success=batch.callbacks.get("on_success"),
                on_finish=batch.callbacks.get("on_finish"),
                on_failure=batch.callbacks.get("on_failure"),
                description=batch.description,
                properties=batch.properties,
            )
    except procrastinate_exceptions.AlreadyEnqueued as error:
        raise _batch_lock_held(request, batch, error) from None


# The batch's page of jobs: a positive whole number; at most so many pages that the offset
# stays far inside PostgreSQL's bigint.
MAX_PAGE = 10**9


def _page(request: HttpRequest) -> tuple[int, int]:
    """`?page=` and `?page_size=`, checked; ApiError(400) naming the bad one."""
    values = {"page": 1, "page_size": workflows.PAGE_SIZE}
    bounds = {"page": MAX_PAGE, "page_size": workflows.MAX_PAGE_SIZE}
    for name, highest in bounds.items():
        raw = request.GET.get(name)
        if raw is None:
            continue
        number = parse_job_id(raw)  # ASCII digits within bigint, never a 4,300-digit int
        if number is None or not 1 <= number <= highest:
            raise ApiError(400, f"Must be a whole number from 1 to {highest}.", name)
        values[name] = number
    return values["page"], values["page_size"]


def _batch_id(raw: int) -> int:
    if not is_job_id(raw):  # a batch's id is a bigint too
        raise ApiError(404, f"No batch {raw}.")
    return raw


def _check_visible(batch_id: int, principal: Principal) -> None:
    """404 unless the batch exists and `principal` sees every task it runs or will run.

    To a token, a batch with a task it may not use is a batch that does not exist, in the
    same words; so is a batch none of whose tasks is known any more (its jobs deleted by
    retention, no callback): nothing shows whose it was.
    """
    if principal.token is None:
        visible = Batch.objects.filter(pk=batch_id).exists()
    else:
        names = workflows.batch_task_names(batch_id)
        visible = bool(names) and all(principal.sees(name) for name in names)
    if not visible:
        raise ApiError(404, f"No batch {batch_id}.")


def _batch_status(batch_id: int, principal: Principal, page: int, page_size: int) -> dict[str, Any]:
    _check_visible(batch_id, principal)
    status = workflows.batch_status(batch_id, page=page, page_size=page_size)
    if status is None:  # deleted since
        raise ApiError(404, f"No batch {batch_id}.")
    return status


def _cancel_rest(batch_id: int) -> dict[str, Any]:
    outcome = workflows.cancel_rest(batch_id)
    return {
        "id": batch_id,
        "cancelled": outcome.cancelled,
        "abort_requested": outcome.abort_requested,
    }


def _retry_failed(batch_id: int) -> dict[str, Any]:
    return {"id": batch_id, "retried": len(workflows.retry_failed(batch_id).done)}


# The batch API's actions, each one function of jobs/workflows.py (the admin's too).
BATCH_ACTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "cancel": _cancel_rest,
    "retry": _retry_failed,
}


def _batch_action(action: str, batch_id: int, principal: Principal) -> dict[str, Any]:
    _check_visible(batch_id, principal)
    return BATCH_ACTIONS[action](batch_id)


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


@csrf_exempt
@require_POST
def defer_batch(request: HttpRequest) -> HttpResponse:
    try:
        body = read_body(request)
        principal = authenticate(request)
        batch_request = parse_batch_request(body)
        batch = _defer_batch(batch_request, prepare_batch(batch_request, principal))
    except ApiError as error:
        return error.response()
    return _batch_created(batch)


@require_GET
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    try:
        principal = authenticate(request)
        principal.require("view")
        page, page_size = _page(request)
        status = _batch_status(_batch_id(batch_id), principal, page, page_size)
    except ApiError as error:
        return error.response()
    return JsonResponse(status)


@csrf_exempt
@require_POST
def batch_action(request: HttpRequest, batch_id: int, action: str) -> HttpResponse:
    try:
        read_body(request)  # unused, but read within bounds
        principal = authenticate(request)
        principal.require("manage")
        result = _batch_action(action, _batch_id(batch_id), principal)
    except ApiError as error:
        return error.response()
    return JsonResponse(result)


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


@csrf_exempt
@require_POST
async def adefer_batch(request: HttpRequest) -> HttpResponse:
    try:
        body = read_body(request)
        principal = await aauthenticate(request)
        batch_request = parse_batch_request(body)
        batch = await _adefer_batch(batch_request, prepare_batch(batch_request, principal))
    except ApiError as error:
        return error.response()
    return _batch_created(batch)


@require_GET
async def abatch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    try:
        principal = await aauthenticate(request)
        principal.require("view")
        page, page_size = _page(request)
        status = await sync_to_async(_batch_status)(_batch_id(batch_id), principal, page, page_size)
    except ApiError as error:
        return error.response()
    return JsonResponse(status)


@csrf_exempt
@require_POST
async def abatch_action(request: HttpRequest, batch_id: int, action: str) -> HttpResponse:
    try:
        read_body(request)  # unused, but read within bounds
        principal = await aauthenticate(request)
        principal.require("manage")
        result = await sync_to_async(_batch_action)(action, _batch_id(batch_id), principal)
    except ApiError as error:
        return error.response()
    return JsonResponse(result)
