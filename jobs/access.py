"""Who may read and act on the job system: the permissions its pages and endpoints ask for,
the one check of the permission to view jobs, and the bearer token a request carries.

The dashboard, the periodic-tasks page and `/metrics/` (without its token) all show what the
admin's job list shows: each asks `may_view_jobs`, as the job list asks Django's view
permission of procrastinate's job model. The admin's actions and the job API's cancel,
abort and retry ask `MANAGE_JOBS`; pausing and resuming queues, from the admin or the API,
ask `PAUSE_QUEUES`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Protocol

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEW_JOBS = "procrastinate.view_procrastinatejob"
MANAGE_JOBS = "jobs.manage_job"
PAUSE_QUEUES = "jobs.pause_queue"


class User(Protocol):
    """What these checks read of a user: Django's users (and AnonymousUser) have it."""

    @property
    def is_active(self) -> bool: ...
    @property
    def is_staff(self) -> bool: ...
    def has_perm(self, perm: str) -> bool: ...


def may_view_jobs(user: User) -> bool:
    """An active staff user allowed to view procrastinate's jobs."""
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW_JOBS))


def staff_who_may_view_jobs[**P](
    view: Callable[P, HttpResponse],
) -> Callable[P, HttpResponse]:
    """A view for `may_view_jobs` users: others who are not staff go to the admin's login
    page (as the admin's own pages send them); staff without the permission get a 403."""

    @wraps(view)
    def checked(*args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        request = args[0]
        assert isinstance(request, HttpRequest)
        if not may_view_jobs(request.user):
            raise PermissionDenied
        return view(*args, **kwargs)

    return staff_member_required(checked)


class MalformedAuthorization(Exception):
    """An Authorization header that is not `Bearer <token>`."""


def bearer_token(request: HttpRequest) -> str | None:
    """The token of the request's `Authorization: Bearer <token>` header, None without that
    header; MalformedAuthorization if the header says something else (another scheme, no
    token). The scheme's case does not matter (RFC 9110)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MalformedAuthorization
    return token.strip()
