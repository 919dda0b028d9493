"""The queue routes of the JSON API, sync and async: list the queues, pause and resume one.

    GET  /api/queues/                  every known queue: waiting, scheduled, running, pause
    POST /api/queues/<name>/pause/     pause it; body optional: {"reason": "..."}
    POST /api/queues/<name>/resume/    resume it; no body (or {})

Listing needs what reading a job's status needs of a session user (`jobs.view_job_status`);
pausing and resuming need `jobs.pause_queue`. A queue holds every task's jobs, not only a
token's tasks: a token needs the pause capability (`ApiToken.may_pause_queues`) for all
three, listing included. Pausing a queue that is paused already, or resuming one that is
not, changes nothing and says so (`"changed": false`); a name that cannot name a queue is a
400, one that no job, task, setting or pause uses a 404 (a typo, most likely), both naming
the field `queue`, and nothing is written. Both actions call jobs/queue_pauses.py, as the
admin's page and the commands do.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from jobs import queue_overview, queue_pauses
from jobs.api.auth import Principal, aauthenticate, authenticate
from jobs.api.errors import ApiError
from jobs.api.requests import json_object, read_body
from jobs.postgres_values import text_problem

ACTION_FIELDS = {"pause": {"reason"}, "resume": set[str]()}


def _require_queue_reader(principal: Principal) -> None:
    # A token's "view" covers the jobs of its tasks; queues are everybody's.
    principal.require("pause" if principal.token is not None else "view")


def _queue_list() -> dict[str, Any]:
    return {"queues": [queue_overview.row_data(row) for row in queue_overview.queue_rows()]}


def _reason(body: bytes, action: str) -> str:
    """The body's reason ("" without one); ApiError(400) naming the field that is wrong."""
    if not body.strip():
        return ""
    data = json_object(body)
    unknown = sorted(set(data) - ACTION_FIELDS[action])
    if unknown:
        raise ApiError(400, f"Unknown field {unknown[0]!r}.", unknown[0])
    reason = data.get("reason", "")
    limit = queue_pauses.REASON_LIMIT
    if not isinstance(reason, str) or len(reason) > limit:
        raise ApiError(400, f"Must be a string of at most {limit} characters.", "reason")
    if problem := text_problem(reason):
        raise ApiError(400, f"{problem.capitalize()}.", "reason")
    return reason


def _act(action: str, queue: str, reason: str, principal: Principal) -> dict[str, Any]:
    try:
        name = queue_overview.check_known_queue(queue)
        if action == "pause":
            changed = queue_pauses.pause(name, by=principal.name, reason=reason)
        else:
            changed = queue_pauses.resume(name)
    except ValidationError as error:
        raise ApiError(400, " ".join(error.messages), "queue") from None
    except queue_overview.UnknownQueue as error:
        raise ApiError(404, str(error), "queue") from None
    pause = queue_overview.pauses().get(name)
    return {
        "queue": name,
        "paused": pause is not None,
        "changed": changed,
        "pause": queue_overview.pause_data(pause),
    }


# --- Sync views -------------------------------------------------------------------------


@require_GET
def queue_list(request: HttpRequest) -> HttpResponse:
    try:
        _require_queue_reader(authenticate(request))
    except ApiError as error:
        return error.response()
    return JsonResponse(_queue_list())


@csrf_exempt  # enforced for session users in authenticate(); tokens need none
@require_POST
def queue_action(request: HttpRequest, queue: str, action: str) -> HttpResponse:
    try:
        body = read_body(request)
        principal = authenticate(request)
        principal.require("pause")
        result = _act(action, queue, _reason(body, action), principal)
    except ApiError as error:
        return error.response()
    return JsonResponse(result)


# --- Async views ------------------------------------------------------------------------


@require_GET
async def aqueue_list(request: HttpRequest) -> HttpResponse:
    try:
        _require_queue_reader(await aauthenticate(request))
    except ApiError as error:
        return error.response()
    return JsonResponse(await sync_to_async(_queue_list)())


@csrf_exempt
@require_POST
async def aqueue_action(request: HttpRequest, queue: str, action: str) -> HttpResponse:
    try:
        body = read_body(request)
        principal = await aauthenticate(request)
        principal.require("pause")
        reason = _reason(body, action)
        result = await sync_to_async(_act)(action, queue, reason, principal)
    except ApiError as error:
        return error.response()
    return JsonResponse(result)
