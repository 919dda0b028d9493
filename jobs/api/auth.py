"""Who is asking the job API, and what it may do.

A machine client sends `Authorization: Bearer <token>`; the token names the tasks it may
use (jobs/tokens.py), and may have been given a capability beyond them (pausing queues).
Without that header, the site's session user is asked for, with the permission of each
action, and CSRF protects its POSTs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from jobs import tokens
from jobs.access import MANAGE_JOBS, PAUSE_QUEUES, MalformedAuthorization, bearer_token
from jobs.api.errors import ApiError
from jobs.models import ApiToken

PERMISSIONS = {
    "defer": "jobs.defer_job",
    "view": "jobs.view_job_status",
    "manage": MANAGE_JOBS,
    "pause": PAUSE_QUEUES,
}
# Actions beyond the jobs of a token's tasks: a token may do one only if it was issued with
# the capability (`create_api_token --may-pause-queues`); tokens issued before have none.
TOKEN_CAPABILITIES = {
    "pause": (
        "may_pause_queues",
        "This token may not list, pause or resume queues: "
        "issue one with `create_api_token --may-pause-queues`.",
    ),
}


@dataclass
class Principal:
    """A token or a session user, with what it may do."""

    token: ApiToken | None = None
    user: AbstractBaseUser | AnonymousUser | None = None
    permissions: set[str] = field(default_factory=set)

    def require(self, action: str) -> None:
        """Refuse a session user without the action's permission, a token without the
        action's capability (TOKEN_CAPABILITIES); a token does the other actions on jobs of
        its tasks only (`sees`)."""
        if self.token is not None:
            capability = TOKEN_CAPABILITIES.get(action)
            if capability is not None and not getattr(self.token, capability[0]):
                raise ApiError(403, capability[1])
            return
        if PERMISSIONS[action] not in self.permissions:
            raise ApiError(403, f"You need the {PERMISSIONS[action]!r} permission.")

    def sees(self, task_name: str) -> bool:
        return self.token is None or self.token.allows(task_name)

    @property
    def name(self) -> str:
        """Who is asking, in words, for what it changes (a queue's `paused_by`)."""
        if self.token is not None:
            return f"API token {self.token.name}"
        return self.user.get_username() if self.user is not None else ""

    @property
    def reads_tracebacks(self) -> bool:
        # A traceback shows the server's paths and code: for the site's staff only. Tokens
        # and other users get the exception's type and message.
        return bool(
            self.user is not None and self.user.is_active and getattr(self.user, "is_staff", False)
        )


def _bearer(request: HttpRequest) -> str | None:
    try:
        return bearer_token(request)
    except MalformedAuthorization:
        raise ApiError(401, "The Authorization header must be 'Bearer <token>'.") from None


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
    return Principal(user=user, permissions=user.get_all_permissions())


async def aauthenticate(request: HttpRequest) -> Principal:
    raw = _bearer(request)
    if raw is not None:
        token = await tokens.aauthenticate(raw)
        if token is None:
            raise ApiError(401, "Invalid or revoked token.")
        return Principal(token=token)
    user = await request.auser()
    _require_session(request, user)
    return Principal(user=user, permissions=await user.aget_all_permissions())
