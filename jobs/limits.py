"""Concurrency and rate limits across every worker: "at most 3 payment calls at once", "at
most 100 mails a minute", "one export per customer at a time".

    from jobs.limits import limit

    @limit("payments", concurrency=3)
    @app.task(name="shop.charge", queue="billing")
    def charge(order_id: int) -> None: ...

    @limit("exports", concurrency=1, key="customer_id")   # one per customer at a time
    @app.task(name="shop.export", queue="exports")
    def export(customer_id: int) -> None: ...

    @limit("mail", rate=100, per=60)                      # 100 starts a minute
    @task()                                               # Django's @task works too
    def send_mail(address: str) -> None: ...

`@limit` goes above the task decorator. The same name on several tasks makes one limit
shared by all of them; one task may have several limits. `key` names an argument of the
task: the limit then counts per value of it. Whole queues are limited by the setting
JOBS_QUEUE_LIMITS = {"billing": {"concurrency": 5}} (limit `queue:billing`).

How it works. The limits live in the code; each worker passes its own, as JSON
(`limits_json`), to the app's fetch function (migration jobs.0012), which the worker
connector (jobs/connector.py) calls instead of procrastinate's. The state lives in
PostgreSQL: running jobs are the `doing` rows of procrastinate's table, and starts for rate
limits are rows of `jobs_limitstart`. A job over a limit stays `todo`: no attempt spent,
nothing failed; the fetch takes the next job that no limit holds back. It starts when a slot
frees: the end of a job under a concurrency limit wakes every worker (a notification, as
for an inserted job), and workers poll at least every second (jobs/worker.py) for the rest
(a rate limit's window moving on).

What a worker knows of limits is what its code declared by the time it fetches: declare
them in the modules workers import as they start (each app's `tasks.py`, the modules of
PROCRASTINATE_IMPORT_PATHS). Workers without the app's worker extras
(JOBS_INSTALL_WORKER_EXTRAS = False), or with JOBS_FETCH_WITH_LIMITS = False, fetch with
procrastinate's function: no limit and no pause holds a job back for them.

A job that counts towards a concurrency limit is one `doing` on a live worker: a worker
removed as lost (after JOBS_STALLED_WORKER_SECONDS of silence) no longer holds slots.
"""

from __future__ import annotations

import inspect
import json
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.tasks import Task as DjangoTask
from django.utils import timezone
from procrastinate.contrib.django import procrastinate_app
from procrastinate.tasks import Task as ProcrastinateTask

from jobs.conf import jobs_settings, limit_numbers_problem
from jobs.postgres_values import text_problem

NAME_LIMIT = 100
QUEUE_LIMIT_PREFIX = "queue:"
# Where a Django task's job keeps the positional arguments (jobs.django_tasks.ARGS_KEY).
DJANGO_ARGS_KEY = "*args"

T = TypeVar("T")


class LimitError(ImproperlyConfigured):
    """A limit declared with `@limit` that cannot work: raised as the task's module loads."""


@dataclass(frozen=True)
class Limit:
    """A limit as workers apply it: at most `concurrency` of its jobs at once, at most `rate`
    starts per `per` seconds, counted per value of the argument `key` (if set). Its jobs
    are those of `tasks` and of `queues`. `key_positions`: for tasks whose jobs may keep
    the key among positional arguments (Django tasks), its position there."""

    name: str
    concurrency: int | None = None
    rate: int | None = None
    per: float | None = None
    key: str | None = None
    tasks: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    key_positions: Mapping[str, int] = field(default_factory=dict, hash=False)

    def covers(self, task_name: str, queue_name: str) -> bool:
        return task_name in self.tasks or queue_name in self.queues

    def describe(self) -> str:
        """In words: "3 at once", "1 at once per customer_id, 100 starts per 60 s"."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"{self.rate} starts per {_seconds(self.per)} s")
        text = ", ".join(parts)
        return f"{text} per {self.key}" if self.key else text

    def as_json(self) -> dict[str, Any]:
        """What the fetch function reads (the composite type jobs_limit_v1)."""
        return {
            "name": self.name,
            "tasks": list(self.tasks),
            "queues": list(self.queues),
            "key": self.key,
            "key_positions": dict(self.key_positions) or None,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "period": self.per,
        }


def _seconds(value: float | None) -> str:
    return f"{value:g}"


@dataclass
class _Declaration:
    name: str
    concurrency: int | None
    rate: int | None
    per: float | None
    key: str | None
    # Task name -> the key's position among a Django task's positional arguments.
    tasks: dict[str, int | None] = field(default_factory=dict)
    where: list[str] = field(default_factory=list)

    def numbers(self) -> tuple[Any, ...]:
        return (self.concurrency, self.rate, self.per, self.key)

    def limit(self) -> Limit:
        return Limit(
            name=self.name,
            concurrency=self.concurrency,
            rate=self.rate,
            per=self.per,
            key=self.key,
            tasks=tuple(sorted(self.tasks)),
            key_positions={
                task: position for task, position in self.tasks.items() if position is not None
            },
        )


# Every limit the code declared, by name.
_declarations: dict[str, _Declaration] = {}
# Changed at each declaration: what was computed from the declarations is stale.
_version = 0


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > NAME_LIMIT:
        raise LimitError(f"A limit's name is a string of 1 to {NAME_LIMIT} characters: {name!r}.")
    if (
        text_problem(name)
        or name != name.strip()
        or any(unicodedata.category(char) == "Cc" for char in name)
    ):
        raise LimitError(
            f"Limit {name!r}: a limit's name has no control characters and no spaces around it."
        )
    if name.startswith(QUEUE_LIMIT_PREFIX):
        raise LimitError(
            f"Limit {name!r}: names starting with {QUEUE_LIMIT_PREFIX!r} are those of "
            "JOBS_QUEUE_LIMITS; limit a queue there."
        )
    return name


def _task_of(target: object, name: str) -> tuple[list[str], Callable[..., Any], bool, bool]:
    """The job names, function, whether the first parameter is a context, and whether the
    jobs keep positional arguments apart (Django tasks) of what `@limit` decorates."""
    if isinstance(target, ProcrastinateTask):
        return [target.name, *target.aliases], target.func, target.pass_context, False
    if isinstance(target, DjangoTask):
        return [target.module_path], target.func, target.takes_context, True
    raise LimitError(
        f"@limit({name!r}) goes above @app.task(...) or Django's @task(...), which make the "
        f"task; it was given {target!r}."
    )


def _key_position(
    func: Callable[..., Any], key: str, *, skip_first: bool, positional: bool, where: str
) -> int | None:
    """Check that `key` is an argument of `func`; its position among the positional
    arguments if the jobs keep those apart (Django tasks) and it may be passed so."""
    parameters = list(inspect.signature(func).parameters.values())
    if skip_first:
        parameters = parameters[1:]
    for position, parameter in enumerate(parameters):
        if parameter.name != key:
            continue
        if parameter.kind in {parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD}:
            break
        if parameter.kind is parameter.KEYWORD_ONLY:
            return None
        if not positional:
            if parameter.kind is parameter.POSITIONAL_ONLY:
                break  # procrastinate passes a job's arguments by name
            return None
        return position
    else:
        if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            return None  # **kwargs: any name may come
    raise LimitError(
        f"Limit key {key!r} of {where} is not an argument of the task that jobs pass by name "
        f"(its arguments: {', '.join(p.name for p in parameters) or 'none'})."
    )


def limit(
    name: str,
    *,
    concurrency: int | None = None,
    rate: int | None = None,
    per: float | None = None,
    key: str | None = None,
) -> Callable[[T], T]:
    """Declare that the task below runs at most `concurrency` jobs at once and starts at
    most `rate` jobs per `per` seconds, across every worker; per value of its argument
    `key` if given. Tasks declaring the same `name` share the limit (with the same numbers
    and key, or LimitError)."""
    _check_name(name)
    if (problem := limit_numbers_problem(concurrency, rate, per)) is not None:
        raise LimitError(f"Limit {name!r}: {problem}.")
    if key is not None and (not isinstance(key, str) or not key or key == DJANGO_ARGS_KEY):
        raise LimitError(f"Limit {name!r}: key is the name of an argument of the task: {key!r}.")

    def decorate(target: T) -> T:
        global _version
        job_names, func, skip_first, positional = _task_of(target, name)
        where = f"@limit({name!r}) on {job_names[0]}"
        position = None
        if key is not None:
            position = _key_position(
                func, key, skip_first=skip_first, positional=positional, where=where
            )
        numbers = (concurrency, rate, None if per is None else float(per), key)
        declaration = _declarations.get(name)
        if declaration is None:
            declaration = _declarations[name] = _Declaration(name, *numbers)
        elif declaration.numbers() != numbers:
            raise LimitError(
                f"Limit {name!r} is declared twice with different numbers: "
                f"{_numbers_text(*declaration.numbers())} ({', '.join(declaration.where)}) "
                f"and {_numbers_text(*numbers)} ({job_names[0]}). Tasks that share a limit "
                "declare the same numbers and key."
            )
        for job_name in job_names:
            declaration.tasks[job_name] = position
        if job_names[0] not in declaration.where:
            declaration.where.append(job_names[0])
        _version += 1
        return target

    return decorate


def _numbers_text(concurrency: Any, rate: Any, per: Any, key: Any) -> str:
    parts = [f"concurrency={concurrency}"] if concurrency is not None else []
    if rate is not None:
        parts.append(f"rate={rate}, per={per:g}")
    if key is not None:
        parts.append(f"key={key!r}")
    return ", ".join(parts)


def queue_limits() -> list[Limit]:
    """The limits of JOBS_QUEUE_LIMITS, one per queue, named `queue:<queue>`."""
    return [
        Limit(
            name=f"{QUEUE_LIMIT_PREFIX}{queue}",
            concurrency=_whole(numbers.get("concurrency")),
            rate=_whole(numbers.get("rate")),
            per=None if numbers.get("per") is None else float(numbers["per"]),
            queues=(queue,),
        )
        for queue, numbers in sorted(jobs_settings.JOBS_QUEUE_LIMITS.items())
    ]


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)  # checked whole by the setting's rule


def declared_limits() -> list[Limit]:
    """Every limit this process knows, by name: those its code declared with `@limit`, and
    the queues' of JOBS_QUEUE_LIMITS."""
    limits = [declaration.limit() for declaration in _declarations.values()]
    return sorted([*limits, *queue_limits()], key=lambda item: item.name)


@dataclass(frozen=True)
class _Compiled:
    """The declared limits as the worker connector uses them at every fetch."""

    json: str
    # The concurrency limits: the end of one of their jobs frees a slot.
    counted: tuple[Limit, ...]
    # Task names and queue names whose jobs count towards one of them.
    counted_tasks: frozenset[str]
    counted_queues: frozenset[str]


_compiled: tuple[tuple[int, object], _Compiled] | None = None


def _compile() -> _Compiled:
    global _compiled
    stamp = (_version, getattr(django_settings, "JOBS_QUEUE_LIMITS", None))
    if _compiled is not None and _compiled[0][0] == stamp[0] and _compiled[0][1] is stamp[1]:
        return _compiled[1]
    limits = declared_limits()
    counted = tuple(item for item in limits if item.concurrency is not None)
    compiled = _Compiled(
        json=limits_json_of(limits),
        counted=counted,
        counted_tasks=frozenset(name for item in counted for name in item.tasks),
        counted_queues=frozenset(queue for item in counted for queue in item.queues),
    )
    _compiled = (stamp, compiled)
    return compiled


def limits_json() -> str:
    """The declared limits as the fetch function takes them: a JSON list of {name, tasks,
    queues, key, key_positions, concurrency, rate, period}."""
    return _compile().json


def wake_up_queues(task_name: str, queue_name: str) -> tuple[str, ...] | None:
    """The queues whose idle workers the end of a job of `task_name` on `queue_name` wakes,
    or None if it counts towards no concurrency limit: the queues of each limit it counts
    towards, its tasks' own queues (where their jobs usually wait), and the job's queue."""
    compiled = _compile()
    if task_name not in compiled.counted_tasks and queue_name not in compiled.counted_queues:
        return None  # most jobs: two set look-ups
    tasks = procrastinate_app.current_app.tasks
    queues = {queue_name}
    for item in compiled.counted:
        if item.covers(task_name, queue_name):
            queues.update(item.queues)
            # `in` first: the registry's `[]` of a name it lacks would import modules.
            queues.update(tasks[name].queue for name in item.tasks if name in tasks)
    return tuple(sorted(queues))


# --- What the limits hold back now ---------------------------------------------------------


@dataclass(frozen=True)
class LimitFigure:
    """A limit's figures now, for one key (None: a limit without key, or its jobs without
    the key argument). `running`: its jobs running; `starts`: its jobs taken within its
    period (rate limits); `waiting`: its jobs due and waiting; `held`: those of them the
    limit holds back (all of them while the limit is full, else none)."""

    limit: Limit
    key: str | None
    running: int
    starts: int
    waiting: int

    @property
    def full(self) -> bool:
        return (self.limit.concurrency is not None and self.running >= self.limit.concurrency) or (
            self.limit.rate is not None and self.starts >= self.limit.rate
        )

    @property
    def held(self) -> int:
        return self.waiting if self.full else 0


FIGURES_SQL = """
WITH l AS (SELECT * FROM unnest(jobs_limits_v1(%(limits)s::jsonb))),
running AS (
    SELECT l.name, jobs_limit_key_v1(j.args, j.task_name, l) AS key, count(*) AS n
      FROM l JOIN procrastinate_jobs j
        ON j.status = 'doing' AND j.worker_id IS NOT NULL
       AND jobs_limit_covers_v1(l, j.task_name, j.queue_name)
     GROUP BY 1, 2
),
waiting AS (
    SELECT l.name, jobs_limit_key_v1(j.args, j.task_name, l) AS key, count(*) AS n
      FROM l JOIN procrastinate_jobs j
        ON j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
       AND jobs_limit_covers_v1(l, j.task_name, j.queue_name)
     GROUP BY 1, 2
),
starts AS (
    SELECT l.name, s.key, count(*) AS n
      FROM l JOIN jobs_limitstart s
        ON s.limit_name = l.name AND s.started_at > now() - make_interval(secs => l.period)
     WHERE l.rate IS NOT NULL
     GROUP BY 1, 2
)
SELECT name, key, coalesce(running.n, 0), coalesce(starts.n, 0), coalesce(waiting.n, 0)
  FROM running FULL JOIN waiting USING (name, key) FULL JOIN starts USING (name, key)
 ORDER BY name, key
"""


def _key_label(key: str) -> str | None:
    """A key as stored ('' for none, else the value's JSON text) as people read it."""
    if key == "":
        return None
    value = json.loads(key)
    return value if isinstance(value, str) else key


def limit_figures() -> list[LimitFigure]:
    """Every declared limit's figures now: a row per key with jobs running, waiting or
    recently started, or a single row of zeros (key None) for a limit with none. One query;
    it reads the due `todo` jobs of the limited tasks and queues."""
    limits = declared_limits()
    if not limits:
        return []
    by_name = {item.name: item for item in limits}
    with connection.cursor() as cursor:
        cursor.execute(FIGURES_SQL, {"limits": limits_json_of(limits)})
        rows = cursor.fetchall()
    figures = [
        LimitFigure(
            limit=by_name[name],
            key=_key_label(key),
            running=running,
            starts=starts,
            waiting=waiting,
        )
        for name, key, running, starts, waiting in rows
    ]
    seen = {figure.limit.name for figure in figures}
    figures += [
        LimitFigure(limit=item, key=None, running=0, starts=0, waiting=0)
        for item in limits
        if item.name not in seen
    ]
    return sorted(figures, key=lambda figure: (figure.limit.name, figure.key or ""))


def limits_json_of(limits: list[Limit]) -> str:
    """`limits` as the SQL functions of migration jobs.0012 take them."""
    return json.dumps([item.as_json() for item in limits], separators=(",", ":"))


class JobRow(Protocol):
    """What `held_reason` reads of a job: procrastinate's Django model has it."""

    task_name: str
    queue_name: str
    args: Any
    status: str


HELD_SQL = """
SELECT EXISTS (SELECT 1 FROM jobs_pausedqueue WHERE queue_name = %(queue)s),
       coalesce(array_agg(ARRAY[l.name, k.key,
                                jobs_limit_running_v1(l, k.key)::text,
                                jobs_limit_starts_v1(l, k.key, now())::text]
                          ORDER BY l.name), '{}')
  FROM unnest(jobs_limits_v1(%(limits)s::jsonb)) l
 CROSS JOIN LATERAL (SELECT jobs_limit_key_v1(%(args)s::jsonb, %(task)s, l) AS key) k
"""


def held_reason(job: JobRow) -> str | None:
    """Why a `todo` job waits although it is due, or None: "queue `billing` is paused",
    "waiting for limit `payments`: 3 of 3 running", "waiting for limit `mail`: 100 starts
    in the last 60 s". One query (for one job: the admin's job page, the status API)."""
    if str(job.status) != "todo":
        return None
    scheduled_at = getattr(job, "scheduled_at", None)
    if scheduled_at is not None and scheduled_at > timezone.now():
        return None  # waiting for its time, which no limit decides
    limits = [item for item in declared_limits() if item.covers(job.task_name, job.queue_name)]
    with connection.cursor() as cursor:
        cursor.execute(
            HELD_SQL,
            {
                "queue": job.queue_name,
                "limits": limits_json_of(limits),
                "args": json.dumps(job.args),
                "task": job.task_name,
            },
        )
        paused, usage = cursor.fetchone()
    if paused:
        return f"queue `{job.queue_name}` is paused"
    by_name = {item.name: item for item in limits}
    for name, key, running, starts in usage:
        item = by_name[name]
        label = _key_label(key)
        where = f"`{name}`" + (f" ({item.key}={label})" if item.key and label is not None else "")
        if item.concurrency is not None and int(running) >= item.concurrency:
            return f"waiting for limit {where}: {running} of {item.concurrency} running"
        if item.rate is not None and int(starts) >= item.rate:
            return f"waiting for limit {where}: {starts} starts in the last {_seconds(item.per)} s"
    return None
