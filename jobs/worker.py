"""How procrastinate's workers run the tasks of a site that installs `jobs`.

Installing the app is enough: `JobsConfig.ready` gives procrastinate's Django app the result
recorder of `jobs.results` and the time limits of `jobs.time_limits` as worker middleware of
every worker it starts (`manage.py procrastinate worker` included), and the connector of
`jobs.connector`, which rides out a database restart and fetches with paused queues and
limits (jobs/limits.py), a job per free slot of the worker in one statement
(jobs/prefetch.py, whose middleware tells it the worker's concurrency), and a thread for
each of its slots that runs a sync task (jobs/task_threads.py). Whatever the order
of `jobs` and `procrastinate.contrib.django` in INSTALLED_APPS: procrastinate creates its
app in its own `ready()`, so when that comes after ours the extras follow right after it.

`JOBS_INSTALL_WORKER_EXTRAS = False` leaves both out; a site that wants them under its own
`PROCRASTINATE_ON_APP_READY` hook can call `install_worker_extras(app)` there. Installing twice
changes nothing, so a site that still sets `PROCRASTINATE_ON_APP_READY =
"jobs.worker.on_app_ready"` (the way before) keeps one recorder and one connector.

Django connections around each task: procrastinate's Django app closes broken or expired ones
before and after every task, as Django does around a request. For async tasks its cleanup
hops to Django's thread-sensitive thread twice per job; `jobs.task_connections` takes its
place and hops only when that thread holds a connection.
"""

from __future__ import annotations

import procrastinate
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from procrastinate.app import WorkerOptions
from procrastinate.contrib.django import db_cleanup, procrastinate_app
from procrastinate.contrib.django.django_connector import DjangoConnector

from jobs.conf import jobs_settings
from jobs.task_registry import install_task_registry


def install_worker_extras(app: procrastinate.App) -> None:
    """Give `app` the result recorder, time limits and the reconnecting connector, once."""
    from jobs.connector import ReconnectingDjangoConnector
    from jobs.prefetch import register_worker_slots
    from jobs.results import record_result
    from jobs.task_connections import close_db_connections_async
    from jobs.task_threads import size_task_threads
    from jobs.time_limits import enforce_time_limits, run_in_limited_thread

    # Workers that survive a database restart (see jobs.connector). Only procrastinate's
    # plain Django connector is replaced: another one is the site's choice (or ours).
    # The connector holds no connection of its own, so one that was used is replaced too.
    if type(app.connector) is DjangoConnector:
        reconnecting = ReconnectingDjangoConnector(alias=app.connector.alias)
        app.connector = reconnecting
        app.job_manager.connector = reconnecting

    # A new dict: the current one may be the PROCRASTINATE_WORKER_DEFAULTS setting itself.
    defaults: WorkerOptions = {**stalled_worker_defaults(), **app.worker_defaults}
    middleware = list(defaults.get("worker_middleware", []))
    if record_result not in middleware:
        # Wraps every job, sync or async, on the worker's event loop.
        middleware.insert(0, record_result)
    if enforce_time_limits not in middleware:
        # Inside the recorder, which then records the TimeLimitExceeded it raises; around
        # the site's own middleware, whose time counts.
        middleware.insert(middleware.index(record_result) + 1, enforce_time_limits)
    if register_worker_slots not in middleware:
        # Tells the connector the worker's concurrency: its claims fill the free slots.
        middleware.append(register_worker_slots)
    if size_task_threads not in middleware:
        # A thread for each slot, before the first sync task asks the loop for one.
        middleware.append(size_task_threads)
    defaults["worker_middleware"] = middleware
    task_middleware = [
        # The same cleanup, without its thread hops when there is nothing to clean.
        close_db_connections_async if each is db_cleanup.close_db_connections_async else each
        for each in defaults.get("task_middleware", [])
    ]
    if run_in_limited_thread not in task_middleware:
        # Runs in a sync task's thread: where a time limit's soft stop is raised.
        task_middleware.insert(0, run_in_limited_thread)
    defaults["task_middleware"] = task_middleware
    app.worker_defaults = defaults


# Seconds between a worker's looks for jobs when no notification came (jobs/limits.py).
FETCH_JOB_POLLING_INTERVAL = 1.0


def stalled_worker_defaults() -> WorkerOptions:
    """procrastinate's worker options that must agree with JOBS_STALLED_WORKER_SECONDS, and
    its polling interval, at most a second for limits (a site's own
    PROCRASTINATE_WORKER_DEFAULTS win).

    Workers beat four times within it (every 10 s at most, procrastinate's default), so a
    live worker is never taken for a stalled one. And procrastinate's worker deletes, as it
    starts, the workers silent for `stalled_worker_timeout` (30 s by default), which hands
    their running jobs straight to recovery: the same age as recovery's keeps a starting
    worker from orphaning the jobs of one that is only late.
    """
    seconds = float(jobs_settings.JOBS_STALLED_WORKER_SECONDS)
    return {
        "update_heartbeat_interval": min(10.0, seconds / 4),
        "stalled_worker_timeout": seconds,
        # A job a rate limit held back may start once the limit's window moves on, which
        # nothing announces: workers look again within a second (procrastinate's default
        # is 5 s). A poll that finds nothing is one cheap query.
        "fetch_job_polling_interval": FETCH_JOB_POLLING_INTERVAL,
    }


# The name sites set as PROCRASTINATE_ON_APP_READY before installing the app did it.
on_app_ready = install_worker_extras


def install_on_app(app: procrastinate.App) -> None:
    """What `jobs` adds to procrastinate's Django app: the task registry that finds Django
    tasks by their path (always: Django's task API needs it), and the worker extras unless
    the site opted out."""
    install_task_registry(app)
    if jobs_settings.JOBS_INSTALL_WORKER_EXTRAS:
        install_worker_extras(app)


def install_on_procrastinate_app() -> None:
    """Install the above on procrastinate's Django app (JobsConfig.ready): now if the app
    exists, else right after procrastinate's `ready()` creates it."""
    if isinstance(procrastinate_app.current_app, procrastinate.App):
        install_on_app(procrastinate_app.current_app)
        return
    # `jobs` comes first in INSTALLED_APPS. Every app config exists by now and Django calls
    # their `ready()` in order, so procrastinate's is still to come: follow it. Its own hook,
    # PROCRASTINATE_ON_APP_READY, is the site's (a single dotted path), so it is left alone.
    try:
        config = apps.get_app_config("procrastinate")
    except LookupError:
        raise ImproperlyConfigured(
            "jobs needs procrastinate's Django app: add 'procrastinate.contrib.django' to "
            "INSTALLED_APPS."
        ) from None
    create_app = config.ready

    def ready() -> None:
        create_app()
        install_on_app(procrastinate_app.current_app)

    config.ready = ready
