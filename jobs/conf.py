"""The settings of `jobs`: every one, its default and what it accepts, read through
`jobs_settings`.

    from jobs.conf import jobs_settings

    hours = jobs_settings.JOBS_DASHBOARD_HOURS

A site sets only the settings it wants to change, in its Django settings; the others keep the
defaults here, so a site that sets none of them gets a working job system (README, "Settings
of the jobs app", lists them). As procrastinate's `contrib/django/settings.py` does, the
site's value is read at each access, so `override_settings` works in tests.

Every value a site sets is checked. `manage.py check`, which every management command runs
first (`migrate` and `procrastinate worker` included), reports a bad one as `jobs.E001`,
naming the setting, what is wrong with it and what is expected; reading a bad value raises
ImproperlyConfigured with the same words, for processes that run no checks (an ASGI server).

This module imports nothing of `jobs` but `jobs.postgres_values` (constants, no imports) and
reads no setting when imported: a site's settings module may import it, to take a default as
the fallback of its own environment variable.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, overload

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from jobs.postgres_values import PG_INT_MAX, PG_INT_MIN, text_problem

# Every final status of a procrastinate job, with how long retention keeps its jobs; the keys
# are the statuses JOBS_RETENTION_HOURS accepts (jobs.job_statuses.FINISHED_STATUSES, which a
# test compares).
DEFAULT_RETENTION_HOURS: Mapping[str, int] = {
    "succeeded": 24 * 7,
    "failed": 24 * 30,
    "cancelled": 24 * 7,
    "aborted": 24 * 30,
}
# A hundred years: beyond it, "now" minus the age overflows Python's datetime; 0 already
# means "forever".
MAX_RETENTION_HOURS = 876_000
MAX_DAYS = 36_500
# The highest JOBS_API_MAX_PRIORITY: below jobs.tasks.RECOVERY_PRIORITY (1_000_000_000), so
# that no client's job runs ahead of stalled-job recovery and can starve it. A literal, as
# jobs.tasks loads the procrastinate app and cannot be imported here; a test compares them.
MAX_API_PRIORITY = 999_999_999


class Rule(Protocol):
    @property
    def expected(self) -> str:
        """What the setting accepts, in words: "a whole number of hours from 1 to 168"."""
        ...

    def refuse(self, value: object) -> str | None:
        """Why `value` is refused ("it is below 1"), or None if it is accepted."""
        ...


def _type_name(value: object) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class WholeNumber:
    unit: str
    minimum: int
    maximum: int | None = None

    @property
    def expected(self) -> str:
        if self.maximum is None:
            return f"a whole number of {self.unit}, at least {self.minimum}"
        return f"a whole number of {self.unit} from {self.minimum} to {self.maximum}"

    def refuse(self, value: object) -> str | None:
        # bool is an int to Python, but True hours is a mistake, not a number.
        if isinstance(value, bool) or not isinstance(value, int):
            return f"it is a {_type_name(value)}, not a whole number"
        if value < self.minimum:
            return f"it is below {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"it is above {self.maximum}"
        return None


@dataclass(frozen=True)
class Integer:
    """A whole number, negative ones included, between two bounds."""

    unit: str
    minimum: int
    maximum: int

    @property
    def expected(self) -> str:
        return f"a whole number ({self.unit}) from {self.minimum} to {self.maximum}"

    def refuse(self, value: object) -> str | None:
        return WholeNumber(self.unit, self.minimum, self.maximum).refuse(value)


@dataclass(frozen=True)
class Seconds:
    """A positive, finite number of seconds (int or float), or None where `optional`."""

    optional: bool = False

    @property
    def expected(self) -> str:
        number = "a number of seconds above 0"
        return f"{number}, or None for none" if self.optional else number

    def refuse(self, value: object) -> str | None:
        if value is None and self.optional:
            return None
        return seconds_problem(value)


def seconds_problem(value: object) -> str | None:
    """Why `value` is no positive, finite number of seconds ("it is below ..."), or None.
    The one rule of a time limit's seconds, for the setting and for a task's own."""
    # bool is an int to Python, but True seconds is a mistake, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"it is a {_type_name(value)}, not a number of seconds"
    if not math.isfinite(value):
        return "it is not a finite number"
    if value <= 0:
        return "it is not above 0"
    return None


@dataclass(frozen=True)
class Flag:
    expected: str = "True or False"

    def refuse(self, value: object) -> str | None:
        return None if isinstance(value, bool) else f"it is a {_type_name(value)}, not a bool"


# What an HTTP header carries without quoting: visible ASCII. A token with a space, a
# control or a non-ASCII character could never be presented, so it would lock everyone out.
_HEADER_TOKEN = re.compile(r"[!-~]*")


@dataclass(frozen=True)
class BearerToken:
    expected: str = "a string of visible ASCII characters (no spaces), or '' for none"

    def refuse(self, value: object) -> str | None:
        if not isinstance(value, str):
            return f"it is a {_type_name(value)}, not a string"
        if not _HEADER_TOKEN.fullmatch(value):
            return "it holds a space, a control or a non-ASCII character, which no client sends"
        return None


@dataclass(frozen=True)
class CommandNames:
    expected: str = "a list of management command names"

    def refuse(self, value: object) -> str | None:
        # A string would be read as an allow-list of its substrings: "prune_jobs" in it
        # would allow "prune", "jobs", ...
        if not isinstance(value, list | tuple | set | frozenset):
            return f"it is a {_type_name(value)}, not a list"
        wrong = [name for name in value if not isinstance(name, str) or not name]
        if wrong:
            return f"{wrong[0]!r} is not a command name"
        return None


@dataclass(frozen=True)
class RetentionHours:
    hours: WholeNumber = WholeNumber("hours", 0, MAX_RETENTION_HOURS)

    @property
    def expected(self) -> str:
        return (
            f"a dict of final statuses ({', '.join(DEFAULT_RETENTION_HOURS)}) to "
            f"{self.hours.expected} (0: kept forever)"
        )

    def refuse(self, value: object) -> str | None:
        if not isinstance(value, Mapping):
            return f"it is a {_type_name(value)}, not a dict"
        for status, hours in value.items():
            if status not in DEFAULT_RETENTION_HOURS:
                return f"{status!r} is not a final status"
            if (reason := self.hours.refuse(hours)) is not None:
                return f"the hours of {status!r}: {reason}"
        return None


# The longest period of a rate limit: a week ("at most 1,000 a day" fits, with room).
MAX_LIMIT_PERIOD_SECONDS = 7 * 86_400
# procrastinate's queue_name column is varchar(128).
QUEUE_NAME_LIMIT = 128


def limit_numbers_problem(
    concurrency: object = None, rate: object = None, per: object = None
) -> str | None:
    """Why a limit's numbers are refused, or None: the one check of `@limit(...)`
    (jobs.limits) and of JOBS_QUEUE_LIMITS. `concurrency`: at most that many of its jobs
    run at once; `rate` starts per `per` seconds; at least one of the two."""
    if concurrency is None and rate is None:
        return "it sets neither concurrency nor rate"
    for name, value in (("concurrency", concurrency), ("rate", rate)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} = {value!r} is not a whole number"
        if not 1 <= value <= PG_INT_MAX:
            return f"{name} = {value!r} is not from 1 to {PG_INT_MAX}"
    if (rate is None) != (per is None):
        return "rate and per go together (rate=100, per=60: 100 starts a minute)"
    if per is not None:
        if isinstance(per, bool) or not isinstance(per, int | float) or not math.isfinite(per):
            return f"per = {per!r} is not a number of seconds"
        if not 0 < per <= MAX_LIMIT_PERIOD_SECONDS:
            return f"per = {per!r} is not above 0 and at most {MAX_LIMIT_PERIOD_SECONDS} seconds"
    return None


@dataclass(frozen=True)
class QueueLimits:
    expected: str = (
        'a dict of queue names to limits, {"billing": {"concurrency": 5}} or '
        '{"mail": {"rate": 100, "per": 60}} (concurrency and rate: whole numbers from 1; '
        f"per: seconds above 0, at most {MAX_LIMIT_PERIOD_SECONDS})"
    )

    def refuse(self, value: object) -> str | None:
        if not isinstance(value, Mapping):
            return f"it is a {_type_name(value)}, not a dict"
        for queue, numbers in value.items():
            if (
                not isinstance(queue, str)
                or not queue
                or len(queue) > QUEUE_NAME_LIMIT
                or text_problem(queue)
            ):
                return f"{queue!r} is not a queue name"
            if not isinstance(numbers, Mapping):
                return f"the limit of queue {queue!r} is a {_type_name(numbers)}, not a dict"
            unknown = sorted(set(numbers) - {"concurrency", "rate", "per"}, key=str)
            if unknown:
                return (
                    f"the limit of queue {queue!r} has {unknown[0]!r}; it takes concurrency, "
                    "rate and per"
                )
            if (problem := limit_numbers_problem(**numbers)) is not None:
                return f"the limit of queue {queue!r}: {problem}"
        return None


def _unchanged[T](value: T) -> T:
    return value


class Setting[T]:
    """One setting of `jobs`: its default, what it accepts, and how a value is read.

    On an instance of `JobsSettings` it reads as the site's value (checked) or the default;
    on the class itself it is this object (`JobsSettings.JOBS_DASHBOARD_HOURS.default`).
    """

    name: str

    def __init__(
        self,
        default: T,
        rule: Rule,
        *,
        read: Callable[[Any], T] = _unchanged,
    ) -> None:
        self.default = default
        self.rule = rule
        self.read = read

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Setting[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> Setting[T] | T:
        if instance is None:
            return self
        return self.value()

    def value(self) -> T:
        value = getattr(django_settings, self.name, self.default)
        if (problem := self.problem_of(value)) is not None:
            raise ImproperlyConfigured(f"{problem.msg} {problem.hint}")
        return self.read(value)

    def problem(self) -> checks.Error | None:
        """What is wrong with the value the site sets, or None (also when it sets none)."""
        return self.problem_of(getattr(django_settings, self.name, self.default))

    def problem_of(self, value: object) -> checks.Error | None:
        reason = self.rule.refuse(value)
        if reason is None:
            return None
        return checks.Error(
            f"{self.name} = {value!r} is refused: {reason}.",
            hint=f"Expected {self.rule.expected}; the default is {self.default!r}.",
            id="jobs.E001",
        )


def _with_default_statuses(value: Mapping[str, int]) -> dict[str, int]:
    return {**DEFAULT_RETENTION_HOURS, **value}


class JobsSettings:
    """Every setting of `jobs`; README's table "Settings of the jobs app" lists the same
    names and defaults (a test compares them)."""

    # A job's result row is written when it ends; an attempt still running after this long
    # also gets a `running` row (worker, start) meanwhile. 0: at every start, which costs a
    # second write per job (jobs/results.py).
    JOBS_RESULT_RUNNING_AFTER_MS = Setting(1000, WholeNumber("milliseconds", 0))
    # The largest request body the JSON job API accepts (413 above it).
    JOBS_API_MAX_BODY_BYTES = Setting(64 * 1024, WholeNumber("bytes", 1024))
    # How far ahead a job may be scheduled, through the API or the admin (jobs/job_times.py).
    JOBS_API_MAX_SCHEDULE_DAYS = Setting(365, WholeNumber("days", 1, MAX_DAYS))
    # The highest priority the JSON job API accepts from a client (higher runs first). At 0,
    # the default priority of the site's own jobs, a client may lower its job's priority but
    # not put it ahead of them; negative keeps every API job behind the site's. Never as high
    # as stalled-job recovery's priority (MAX_API_PRIORITY).
    JOBS_API_MAX_PRIORITY = Setting(0, Integer("priority", PG_INT_MIN, MAX_API_PRIORITY))
    # The most jobs one request to the JSON API's `POST /api/batches/` may defer: the body's
    # limit bounds it too, but a site that raises that limit should not get batches of a
    # million jobs in one request, checked and deferred while the request waits.
    JOBS_API_MAX_BATCH_JOBS = Setting(10_000, WholeNumber("jobs", 1))
    # Expired or revoked API tokens are kept this long (for audit), then deleted.
    JOBS_EXPIRED_TOKEN_KEEP_DAYS = Setting(30, WholeNumber("days", 0, MAX_DAYS))
    # Retention of finished jobs, with their events and results, per final status; a site's
    # dict replaces only the statuses it names, so none is kept forever by omission.
    JOBS_RETENTION_HOURS: Setting[dict[str, int]] = Setting(
        dict(DEFAULT_RETENTION_HOURS), RetentionHours(), read=_with_default_statuses
    )
    # A worker with no heartbeat for this long is gone: its jobs are recovered, and it no
    # longer counts as live (dashboard, health, metrics). Workers beat every 10 s.
    JOBS_STALLED_WORKER_SECONDS = Setting(60, WholeNumber("seconds", 5))
    # Management commands `jobs.run_management_command` may run on a worker: job arguments
    # come from outside, and `flush` or `shell` must never be one call away.
    JOBS_BACKGROUND_COMMANDS: Setting[tuple[str, ...]] = Setting(
        (
            "clear_expired_sessions",
            "compute_daily_statistics",
            "delete_expired_tokens",
            "prune_jobs",
            "recover_stalled_jobs",
            "run_nightly_maintenance",
        ),
        CommandNames(),
        read=tuple,
    )
    # The steps of `run_nightly_maintenance`, in order: stalled jobs first, so that retention
    # and statistics see final states. A site with maintenance of its own lists all of them.
    JOBS_NIGHTLY_COMMANDS: Setting[tuple[str, ...]] = Setting(
        (
            "recover_stalled_jobs",
            "prune_jobs",
            "delete_expired_tokens",
            "clear_expired_sessions",
            "compute_daily_statistics",
        ),
        CommandNames(),
        read=tuple,
    )
    # The dashboard's window (throughput chart, percentiles, failures); at most a week, as
    # its throughput chart has a bar per minute.
    JOBS_DASHBOARD_HOURS = Setting(3, WholeNumber("hours", 1, 168))
    # How often the dashboard refreshes itself; browsers run a longer setInterval at once,
    # and so again and again.
    JOBS_DASHBOARD_REFRESH_SECONDS = Setting(10, WholeNumber("seconds", 1, 86_400))
    # The bearer token Prometheus sends to /metrics/; empty: only staff sessions may read it.
    JOBS_METRICS_TOKEN = Setting("", BearerToken())
    # The window of the metrics' histograms, finished jobs and failures before each scrape.
    JOBS_METRICS_WINDOW_SECONDS = Setting(300, WholeNumber("seconds", 10, 86_400))
    # Installing the app adds its result recorder and its restart-proof connector to
    # procrastinate's app (jobs/worker.py); False leaves both out.
    JOBS_INSTALL_WORKER_EXTRAS = Setting(True, Flag())
    # Stored schedules (jobs/schedules.py): ticks due within this many seconds are all
    # deferred (a late scheduler leaves no gap); older ones were missed by an outage, and
    # run once to catch up or not at all, per schedule.
    JOBS_SCHEDULE_MISSED_AFTER_SECONDS = Setting(60, WholeNumber("seconds", 1, 86_400))
    # The site's time limit of every task that declares none, in seconds (None: no limit).
    # An attempt past it is stopped and fails with jobs.time_limits.TimeLimitExceeded.
    JOBS_TIME_LIMIT: Setting[float | None] = Setting(None, Seconds(optional=True))
    # How long a sync task gets, once told to stop at its time limit, before its worker
    # process gives up on it and is replaced (jobs/time_limits.py).
    JOBS_TIME_LIMIT_GRACE_SECONDS: Setting[float] = Setting(10, Seconds())
    # Limits per queue, beside those tasks declare with `@limit` (jobs/limits.py): at most
    # N of the queue's jobs at once, at most R starts per period, across every worker.
    JOBS_QUEUE_LIMITS: Setting[dict[str, dict[str, float]]] = Setting({}, QueueLimits(), read=dict)
    # Workers fetch with the app's function, which skips paused queues and the jobs a limit
    # holds back (jobs/limits.py); False: procrastinate's own fetch, which knows neither.
    JOBS_FETCH_WITH_LIMITS = Setting(True, Flag())
    # With the app's fetch, a worker claims a job per free slot in one statement and hands
    # them to its slots one by one (jobs/prefetch.py); False: one job per fetch.
    JOBS_FETCH_MANY = Setting(True, Flag())
    # The ends of a worker's jobs that finish together are recorded by one statement, each
    # job's result with it (jobs/job_ends.py); False: one statement per job's end.
    JOBS_GATHER_JOB_ENDS = Setting(True, Flag())

    @classmethod
    def all(cls) -> list[Setting[Any]]:
        return [value for value in vars(cls).values() if isinstance(value, Setting)]


jobs_settings = JobsSettings()


def worker_shutdown_graceful_timeout() -> float | None:
    """Seconds a worker gives its running jobs to finish once asked to stop: the
    `shutdown_graceful_timeout` of `PROCRASTINATE_WORKER_DEFAULTS`, or, when the site sets
    none, procrastinate's own default (None: it waits for them however long they take)."""
    if (problem := _graceful_timeout_problem()) is not None:
        raise ImproperlyConfigured(f"{problem.msg} {problem.hint}")
    value = _worker_defaults().get("shutdown_graceful_timeout", _procrastinate_graceful_timeout())
    return None if value is None else float(value)


def _worker_defaults() -> Mapping[str, Any]:
    from procrastinate.contrib.django.settings import settings as procrastinate_settings

    return procrastinate_settings.WORKER_DEFAULTS or {}


def _procrastinate_graceful_timeout() -> float | None:
    from procrastinate.worker import Worker

    default: float | None = (
        inspect.signature(Worker).parameters["shutdown_graceful_timeout"].default
    )
    return default


def _graceful_timeout_problem() -> checks.Error | None:
    defaults = _worker_defaults()
    if not isinstance(defaults, Mapping):
        reason = f"PROCRASTINATE_WORKER_DEFAULTS = {defaults!r} is refused: it is not a dict"
    else:
        value = defaults.get("shutdown_graceful_timeout")
        if value is None or (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and value >= 0
        ):
            return None
        reason = (
            f"PROCRASTINATE_WORKER_DEFAULTS['shutdown_graceful_timeout'] = {value!r} is "
            "refused: it is not a finite number of seconds of at least 0"
        )
    return checks.Error(
        f"{reason}.",
        hint="Workers give running jobs that long to finish when asked to stop, and "
        "`run_workers` waits that long for them; leave it out for procrastinate's default "
        "(no limit).",
        id="jobs.E002",
    )


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """The system check of every setting `jobs` reads (registered by JobsConfig.ready)."""
    from django.core.management import get_commands

    messages: list[checks.CheckMessage] = [
        problem for setting in JobsSettings.all() if (problem := setting.problem()) is not None
    ]
    if (problem := _graceful_timeout_problem()) is not None:
        messages.append(problem)
    # Names that are no command: a job running one would fail (a nightly step, every night).
    for setting in (JobsSettings.JOBS_BACKGROUND_COMMANDS, JobsSettings.JOBS_NIGHTLY_COMMANDS):
        if setting.problem() is None:
            known = get_commands()
            messages += [
                checks.Warning(
                    f"{setting.name} names {name!r}, which is no management command.",
                    hint="A job running it would fail; correct the name or install its app.",
                    id="jobs.W001",
                )
                for name in setting.value()
                if name not in known
            ]
    return messages
