"""The health endpoint for load balancers and orchestrators: `GET /health/`.

Five checks, each answered in a few milliseconds:

- `database`: a connection and a first statement;
- `migrations`: every migration of procrastinate and of this project that the running code
  needs is applied. procrastinate's `…_post_…` migrations are the exception: its upgrade
  procedure (migrations_notes.md) runs the new code *before* them, so a pending one is
  reported but does not fail the check;
- `workers`: at least one worker sent a heartbeat in the last JOBS_STALLED_WORKER_SECONDS;
- `schedules`: the enabled stored schedules whose task is missing from the code (broken:
  jobs/schedules.py). A warning, never a failure: the web servers serve well without that
  task, and taking every one of them out of rotation for it would turn a missing nightly
  job into an outage. Staff see it under `warnings`; alerts come from /metrics/
  (`pgjobs_schedules{state="broken"}`);
- `queues`: the paused queues (jobs/queue_pauses.py), with since when, by whom and why.
  Information, neither failure nor warning: a pause is an operator's decision, and the web
  servers and the other queues' workers serve on.

200 when all pass, 503 otherwise. The JSON body is `{"status": "ok"}` or `{"status": "fail"}`
for anyone; logged-in staff also see which check failed and why: a database error names the
server's host and user, which are nobody else's business. A load balancer that should keep a
web server in rotation while the workers restart can ask for `/health/?skip=workers`.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from typing import Any

from django.db import Error, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from jobs import queue_overview, schedules
from jobs.conf import jobs_settings

# The apps whose migrations the code needs, and where they live.
MIGRATION_PACKAGES = {
    "procrastinate": "procrastinate.contrib.django.migrations",
    "jobs": "jobs.migrations",
}
# The checks that read the database, which `?skip=` may leave out.
CHECKS_AFTER_DATABASE = ("migrations", "workers", "schedules", "queues")
# A check that takes longer than this fails rather than hanging the load balancer's probe.
STATEMENT_TIMEOUT_MS = 2000


@dataclass
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)
    # Something for staff to fix that does not fail the check (nor the status code).
    warning: bool = False


@cache
def migrations_on_disk() -> dict[str, frozenset[str]]:
    """Migration names per app, from the packages' module names (nothing imported)."""
    return {
        app: frozenset(
            info.name
            for info in pkgutil.iter_modules(import_module(package).__path__)
            if not info.name.startswith("_")
        )
        for app, package in MIGRATION_PACKAGES.items()
    }


def _check_migrations(cursor: CursorWrapper) -> Check:
    cursor.execute(
        "SELECT app, name FROM django_migrations WHERE app = ANY(%s)", [list(MIGRATION_PACKAGES)]
    )
    applied = set(cursor.fetchall())
    missing, deferred = [], []
    for app, names in migrations_on_disk().items():
        for name in sorted(names):
            if (app, name) in applied:
                continue
            if app == "procrastinate" and "_post_" in name:
                deferred.append(f"{app}.{name}")
            else:
                missing.append(f"{app}.{name}")
    detail: dict[str, Any] = {"missing": missing}
    if deferred:
        detail["pending_post_migrations"] = deferred
    return Check(ok=not missing, detail=detail)


def _check_workers(cursor: CursorWrapper, live_within: float) -> Check:
    cursor.execute(
        """
        SELECT count(*) FILTER (WHERE last_heartbeat > now() - %(within)s * interval '1 second'),
               extract(epoch FROM now() - max(last_heartbeat))::float8
        FROM procrastinate_workers
        """,
        {"within": live_within},
    )
    live, newest_age = cursor.fetchone()
    return Check(
        ok=live > 0,
        detail={
            "live": live,
            "newest_heartbeat_age_seconds": round(newest_age, 1)
            if newest_age is not None
            else None,
            "live_within_seconds": live_within,
        },
    )


def _check_schedules() -> Check:
    counts = schedules.schedule_counts()
    return Check(
        ok=True,
        warning=counts.broken > 0,
        detail={"broken": counts.broken, "missing_tasks": list(counts.missing_tasks)},
    )


def _check_queues() -> Check:
    paused = queue_overview.pauses()
    return Check(
        ok=True,
        detail={
            "paused": [
                {"queue": queue, **(queue_overview.pause_data(pause) or {})}
                for queue, pause in paused.items()
            ]
        },
    )


def run_checks(*, skip: frozenset[str] = frozenset()) -> dict[str, Check]:
    """The checks not in `skip`, by name."""
    results: dict[str, Check] = {}
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # The first round trip: it also proves the database answers.
            cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            results["database"] = Check(ok=True)
            if "migrations" not in skip:
                results["migrations"] = _check_migrations(cursor)
            if "workers" not in skip:
                results["workers"] = _check_workers(
                    cursor, float(jobs_settings.JOBS_STALLED_WORKER_SECONDS)
                )
            if "schedules" not in skip:
                results["schedules"] = _check_schedules()
            if "queues" not in skip:
                results["queues"] = _check_queues()
    except Error as exc:  # OperationalError, InterfaceError, a statement timeout...
        error = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        results.setdefault("database", Check(ok=False, detail=error))
        for name in CHECKS_AFTER_DATABASE:
            if name not in skip and name not in results:
                results[name] = Check(ok=False, detail=error)
    return results


def sees_details(request: HttpRequest) -> bool:
    """Whether the request comes from an active staff user's session."""
    user = getattr(request, "user", None)  # a site may run without the auth middleware
    try:
        return bool(user is not None and user.is_active and user.is_staff)
    except Error:
        # The session and the user are read from the database, which may be the check that
        # failed: the probe still gets its answer, without the details.
        return False


@require_GET
@never_cache
def health(request: HttpRequest) -> HttpResponse:
    skip = frozenset(request.GET.get("skip", "").split(",")) & set(CHECKS_AFTER_DATABASE)
    results = run_checks(skip=skip)
    failed = [name for name, check in results.items() if not check.ok]
    body: dict[str, Any] = {"status": "fail" if failed else "ok"}
    if sees_details(request):
        body["failed"] = failed
        body["warnings"] = [name for name, check in results.items() if check.warning]
        body["checks"] = {name: {"ok": check.ok, **check.detail} for name, check in results.items()}
    return JsonResponse(body, status=503 if failed else 200)
