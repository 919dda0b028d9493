"""Concurrency and rate limits (jobs/limits.py) and paused queues, as the workers' fetch
applies them (migration jobs.0012, run by jobs/connector.py).

- The fetch function itself, called as a worker calls it: which job it takes, which it
  holds back, with limits per key, per task and per queue, rate windows and paused queues.
- Declarations: what `@limit` and JOBS_QUEUE_LIMITS refuse, and what they accept reaching
  the fetch, the figures and the reasons shown for a held job.
- Three real worker processes: the runs of a key never overlap more than the limit allows
  (from a table each run writes as it starts and ends), starts never exceed the rate in any
  window (from procrastinate's `started` events), unlimited jobs flow while limited ones
  wait, a held job spends no attempt and starts once a slot frees, woken by the end of the
  job that held it (the workers do not poll there).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import DatabaseError, connection, transaction
from django.tasks import task
from procrastinate import sql
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob
from procrastinate.jobs import Status
from procrastinate.tasks import Task as ProcrastinateTask

from jobs import limits, queue_pauses
from jobs.connector import ReconnectingPsycopgConnector
from jobs.databases import connection_kwargs
from jobs.limits import Limit, LimitError, limit
from jobs.testing import WorkerProcess, wait_until
from tests import limit_tasks
from tests.limit_tasks import LIMIT_TASKS, QUEUE, RUNS_TABLE

FETCH_FUNCTION = "jobs_fetch_job_v1(character varying[], bigint, jsonb, boolean)"

# --- Calling the fetch function as a worker does --------------------------------------------


class Fetcher:
    """Fetches through `jobs_fetch_job_v1` as a registered worker, on the test's connection."""

    def __init__(self) -> None:
        self.worker_id = async_to_sync(app.job_manager.register_worker)()

    def __call__(
        self, limits_json: str | None = None, queues: list[str] | None = None
    ) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM jobs_fetch_job_v1(%s::varchar[], %s, %s::jsonb)",
                [
                    queues,
                    self.worker_id,
                    limits.limits_json() if limits_json is None else limits_json,
                ],
            )
            return cursor.fetchone()[0]

    def finish(self, job_id: int) -> None:
        async_to_sync(app.job_manager.finish_job_by_id_async)(
            job_id, status=Status.SUCCEEDED, delete_job=False
        )


@pytest.fixture
def fetch(db: None) -> Fetcher:
    return Fetcher()


def defer(task_name: str, **args: Any) -> int:
    return int(app.configure_task(task_name, queue=args.pop("queue", QUEUE)).defer(**args))


def kwargs(values: dict[str, Any]) -> dict[str, Any]:
    # Typed for batch_defer, whose stubs want JSON values, not the inferred int or float.
    return values


def only(*names: str) -> str:
    """The JSON of the declared limits called `names`."""
    return limits.limits_json_of([item for item in limits.declared_limits() if item.name in names])


def test_fetch__without_limits_takes_jobs_as_procrastinates_fetch_does(fetch: Fetcher) -> None:
    low = int(app.configure_task("tests.unlimited", queue=QUEUE, priority=0).defer(n=1))
    high = int(app.configure_task("tests.unlimited", queue=QUEUE, priority=5).defer(n=2))
    locked = [
        int(app.configure_task("tests.unlimited", queue=QUEUE, lock="l", priority=9).defer(n=n))
        for n in (3, 4)
    ]
    elsewhere = defer("tests.unlimited", n=5, queue="other")

    taken = [fetch("[]", [QUEUE]) for _ in range(5)]

    # The lock's second job waits for the first; the other queue is not asked for.
    assert taken == [locked[0], high, low, None, None]
    assert fetch("[]") == elsewhere
    job = ProcrastinateJob.objects.get(id=locked[0])
    assert (job.status, job.worker_id) == ("doing", fetch.worker_id)
    fetch.finish(locked[0])
    assert fetch("[]") == locked[1]


def test_fetch__skips_paused_queues_until_resumed(fetch: Fetcher) -> None:
    queue_pauses.pause("billing", reason="provider down")
    billed = defer("tests.unlimited", n=1, queue="billing")
    other = defer("tests.unlimited", n=2)

    assert fetch("[]") == other
    assert fetch("[]") is None
    assert fetch(only("tests.overall")) is None  # the limited path skips it too
    job = ProcrastinateJob.objects.get(id=billed)
    assert limits.held_reason(job) == "queue `billing` is paused"

    queue_pauses.resume("billing")
    assert limits.held_reason(job) is None
    assert fetch("[]") == billed


@pytest.mark.parametrize("limits_json", ["[]", None], ids=["without_limits", "with_limits"])
def test_fetch__takes_the_best_job_of_the_queues_asked_for(
    fetch: Fetcher, limits_json: str | None
) -> None:
    def job(queue: str, priority: int) -> int:
        return int(app.configure_task("tests.unlimited", queue=queue, priority=priority).defer())

    low_a, high_b, top_c, mid_a = job("a", 0), job("b", 5), job("c", 9), job("a", 3)
    queue_pauses.pause("d")
    paused = job("d", 20)

    # Across the queues a worker serves, in priority order, then in the order of deferral.
    assert [fetch(limits_json, ["a", "b"]) for _ in range(4)] == [high_b, mid_a, low_a, None]
    # A worker of every queue: every queue that has waiting jobs, paused ones left out.
    assert fetch(limits_json) == top_c
    assert fetch(limits_json) is None
    queue_pauses.resume("d")
    assert fetch(limits_json) == paused


@contextmanager
def statement_plans() -> Iterator[list[str]]:
    """The plans, with rows read, of the statements run meanwhile on the test's connection,
    those inside functions too (auto_explain, its output sent back as notices): what a
    failing count of reads is shown with."""
    plans: list[str] = []

    def keep(notice: psycopg.errors.Diagnostic) -> None:
        plans.append(notice.message_primary or "")

    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("LOAD 'auto_explain'")
    except DatabaseError:  # a role that may not load it: no plans, the test runs as ever
        yield plans
        return
    with connection.cursor() as cursor:
        for name, value in (
            ("log_min_duration", "0"),
            ("log_nested_statements", "on"),
            ("log_analyze", "on"),
            ("log_timing", "off"),
            ("log_level", "notice"),
        ):
            cursor.execute("SELECT set_config(%s, %s, true)", [f"auto_explain.{name}", value])
    connection.connection.add_notice_handler(keep)
    try:
        yield plans
    finally:
        connection.connection.remove_notice_handler(keep)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('auto_explain.log_min_duration', '-1', true)")


def _indexes_of_jobs() -> list[tuple[str, bool, bool, bool]]:
    """procrastinate_jobs' indexes: (name, valid, ready, usable only by newer snapshots)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, indisvalid, indisready, indcheckxmin "
            "FROM pg_index WHERE indrelid = 'procrastinate_jobs'::regclass ORDER BY 1"
        )
        return list(cursor.fetchall())


def _index_reads_of_jobs() -> int:
    """Rows of procrastinate_jobs read through an index by this transaction so far."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
            "WHERE relname = 'procrastinate_jobs'"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("limits_json", ["[]", None], ids=["without_limits", "with_limits"])
def test_fetch__reads_no_waiting_job_of_other_queues(
    fetch: Fetcher, limits_json: str | None
) -> None:
    # Backlogs ahead of the served queue's job in procrastinate's order (older, and higher):
    # a queue nobody serves and a paused one. A fetch used to read them all, every time.
    backlogs = {
        (queue, priority): app.configure_task(
            "tests.unlimited", queue=queue, priority=priority
        ).batch_defer(*[kwargs({"n": n}) for n in range(1000)])
        for queue, priority in (("nobody", 0), ("paused", 9), ("nobody", 9))
    }
    queue_pauses.pause("paused")
    served = defer("tests.unlimited", n=1)

    # A worker of its queue; then one of every queue, which takes the best unpaused job.
    for queues, expected in (([QUEUE], served), (None, int(backlogs["nobody", 9][0]))):
        before = _index_reads_of_jobs()
        with statement_plans() as plans:
            assert fetch(limits_json, queues) == expected
        # The job itself, the lock's and limits' look-ups: a handful, not thousands.
        reads = _index_reads_of_jobs() - before
        heading = f"{reads} rows read for queues {queues} (after {before})"
        assert reads < 50, "\n".join([heading, *map(str, _indexes_of_jobs()), *plans])


# Planner statistics of a site that ran many jobs of a few `lock`s (ANALYZE saw them ended).
# Statistics outlive the rows, and each worker session plans the fetch's statements once:
# with these, the plan of the lock check used to read every waiting job for each candidate,
# so that one fetch in a busy queue could run for minutes (CI, the 100,000-job drain).
# (VACUUM: the index entries of jobs that earlier tests rolled back are not counted.)
LOCK_HEAVY_STATISTICS = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, lock)
SELECT 'old', 'tests.unlimited', '{}', 'succeeded', 'lock-' || (n % 3)
  FROM generate_series(1, 5000) AS n
"""


def _fetch_in_new_session(limits_json: str, queues: list[str]) -> tuple[int | None, int]:
    """A fetch by a session that plans it now, as a worker starting: (job id, index entries
    of procrastinate_jobs it read). Rolled back: the job stays waiting."""
    with psycopg.connect(**connection_kwargs()) as session, session.cursor() as cursor:
        reads = (
            "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid))::bigint FROM pg_index "
            "WHERE indrelid = 'procrastinate_jobs'::regclass"
        )
        worker_id = async_to_sync(app.job_manager.register_worker)()
        cursor.execute(reads)
        before = cursor.fetchone()
        cursor.execute(
            "SELECT id FROM jobs_fetch_job_v1(%s::varchar[], %s, %s::jsonb)",
            [queues, worker_id, limits_json],
        )
        job = cursor.fetchone()
        cursor.execute(reads)
        after = cursor.fetchone()
        session.rollback()
    assert job is not None
    assert before is not None
    assert after is not None
    return job[0], after[0] - before[0]


@pytest.mark.parametrize("limits_json", ["[]", None], ids=["without_limits", "with_limits"])
def test_fetch__reads_a_handful_of_rows_whatever_statistics_it_was_planned_with(
    transactional_db: None, procrastinate_tables_cleanup: None, limits_json: str | None
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(LOCK_HEAVY_STATISTICS)
        cursor.execute("VACUUM (ANALYZE) procrastinate_jobs")
    waiting = app.configure_task("tests.unlimited", queue=QUEUE).batch_defer(
        *[kwargs({"n": n}) for n in range(2000)]
    )
    locked = app.configure_task("tests.unlimited", queue="locks", lock="lock-1").batch_defer(
        kwargs({"n": 1}), kwargs({"n": 2})
    )
    limits_json = limits.limits_json() if limits_json is None else limits_json

    job, reads = _fetch_in_new_session(limits_json, [QUEUE])
    assert job == int(waiting[0])
    # The job, the limits' look-ups: a handful, not the 2,000 waiting jobs.
    assert reads < 50
    # procrastinate's lock still holds (its first job, not the second), as cheaply.
    job, reads = _fetch_in_new_session(limits_json, ["locks"])
    assert job == int(locked[0])
    assert reads < 50


def test_fetch__concurrency_per_key_holds_that_key_and_takes_the_next_job(
    fetch: Fetcher,
) -> None:
    first, second, third = (defer("tests.limited_per_customer", customer=1) for _ in range(3))
    other_customer = defer("tests.limited_per_customer", customer=2)
    unlimited = defer("tests.unlimited", n=1)
    per_customer = only("tests.per_customer")

    taken = [fetch(per_customer) for _ in range(5)]

    assert taken == [first, second, other_customer, unlimited, None]
    held = ProcrastinateJob.objects.get(id=third)
    assert (held.status, held.attempts) == ("todo", 0)
    assert limits.held_reason(held) == (
        "waiting for limit `tests.per_customer` (customer=1): 2 of 2 running"
    )
    fetch.finish(first)
    assert limits.held_reason(held) is None
    assert fetch(per_customer) == third


def test_fetch__concurrency_without_key_counts_every_job_of_the_task(fetch: Fetcher) -> None:
    jobs = [defer("tests.limited_overall", n=n) for n in range(4)]
    overall = only("tests.overall")

    assert [fetch(overall) for _ in range(4)] == [*jobs[:3], None]
    assert limits.held_reason(ProcrastinateJob.objects.get(id=jobs[3])) == (
        "waiting for limit `tests.overall`: 3 of 3 running"
    )
    # procrastinate's own fetch knows no limit: what JOBS_FETCH_WITH_LIMITS = False keeps.
    assert async_to_sync(app.job_manager.fetch_job)(queues=None, worker_id=fetch.worker_id)


def test_fetch__a_lost_workers_jobs_no_longer_hold_slots(fetch: Fetcher) -> None:
    jobs = [defer("tests.limited_overall", n=n) for n in range(4)]
    overall = only("tests.overall")
    assert [fetch(overall) for _ in range(3)] == jobs[:3]

    # What procrastinate does to a worker silent for too long, as another worker starts
    # (its jobs stay `doing` until stalled-job recovery retries them).
    async_to_sync(app.job_manager.unregister_worker)(fetch.worker_id)
    fetch.worker_id = async_to_sync(app.job_manager.register_worker)()

    assert fetch(overall) == jobs[3]


def test_fetch__rate_counts_starts_within_the_period_per_key(fetch: Fetcher) -> None:
    rate = json.dumps(
        [
            {
                "name": "mail",
                "tasks": ["tests.rate_limited"],
                "key": "customer",
                "rate": 2,
                "period": 60,
            }
        ]
    )
    first_customer = [defer("tests.rate_limited", customer=1, n=n) for n in range(3)]
    second_customer = defer("tests.rate_limited", customer=2, n=9)

    taken = [fetch(rate) for _ in range(4)]

    assert taken == [*first_customer[:2], second_customer, None]
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, count(*) FROM jobs_limitstart GROUP BY key ORDER BY key")
        assert cursor.fetchall() == [("1", 2), ("2", 1)]
        # A minute later, as far as the window is concerned.
        cursor.execute("UPDATE jobs_limitstart SET started_at = started_at - interval '61 s'")
    assert fetch(rate) == first_customer[2]


def test_fetch__every_limit_of_a_job_must_allow_it(fetch: Fetcher) -> None:
    both = json.dumps(
        [
            {"name": "a", "tasks": ["tests.unlimited"], "concurrency": 2},
            {"name": "b", "queues": [QUEUE], "concurrency": 1},
        ]
    )
    jobs = [defer("tests.unlimited", n=n) for n in range(2)]
    elsewhere = defer("tests.unlimited", n=3, queue="other")

    assert [fetch(both) for _ in range(3)] == [jobs[0], elsewhere, None]


def test_fetch__queue_limits_come_from_the_setting(fetch: Fetcher, settings: Any) -> None:
    settings.JOBS_QUEUE_LIMITS = {QUEUE: {"concurrency": 1}}
    jobs = [defer("tests.unlimited", n=n) for n in range(2)]

    assert [fetch(), fetch()] == [jobs[0], None]
    (figure,) = [f for f in limits.limit_figures() if f.limit.name == f"queue:{QUEUE}"]
    assert (figure.key, figure.running, figure.waiting, figure.held) == (None, 1, 1, 1)
    assert figure.limit.describe() == "1 at once"


def test_fetch__a_django_tasks_key_counts_however_it_was_passed(fetch: Fetcher) -> None:
    positional = limit_tasks.django_per_customer.enqueue(7, "/nowhere")
    by_name = limit_tasks.django_per_customer.enqueue(customer=7, path="/nowhere")
    other = limit_tasks.django_per_customer.enqueue(8, "/nowhere")
    django_limit = only("tests.django_per_customer")

    assert [fetch(django_limit) for _ in range(3)] == [int(positional.id), int(other.id), None]
    held = ProcrastinateJob.objects.get(id=int(by_name.id))
    assert limits.held_reason(held) == (
        "waiting for limit `tests.django_per_customer` (customer=7): 1 of 1 running"
    )


def test_limit_figures__per_limit_and_key(fetch: Fetcher) -> None:
    for customer in (1, 1, 1, 2):
        defer("tests.limited_per_customer", customer=customer)
    for _ in range(3):
        fetch()
    rated = defer("tests.rate_limited", customer=4, n=1)
    assert fetch() == rated

    figures = {
        (f.limit.name, f.key): (f.running, f.starts, f.waiting, f.held, f.full)
        for f in limits.limit_figures()
    }

    assert figures[("tests.per_customer", "1")] == (2, 0, 1, 1, True)
    assert figures[("tests.per_customer", "2")] == (1, 0, 0, 0, False)
    assert figures[("tests.rate", "4")] == (1, 1, 0, 0, False)
    assert figures[("tests.overall", None)] == (0, 0, 0, 0, False)


# --- Declarations ----------------------------------------------------------------------------


@pytest.fixture
def declarations() -> Iterator[None]:
    """Declarations made by a test are forgotten after it."""
    saved = dict(limits._declarations)
    yield
    limits._declarations.clear()
    limits._declarations.update(saved)
    limits._version += 1


def make_task(name: str = "tests.declared") -> ProcrastinateTask[Any, Any, Any]:
    """A procrastinate task, left out of the app's registry (which takes a name once)."""

    def declared(customer: int, *, region: str = "") -> None:
        return None

    return ProcrastinateTask(declared, blueprint=app, name=name, queue=QUEUE)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"concurrency": 0}, "concurrency = 0 is not from 1"),
        ({"concurrency": True}, "concurrency = True is not a whole number"),
        ({"concurrency": 2.5}, "not a whole number"),
        ({"rate": 0, "per": 60}, "rate = 0 is not from 1"),
        ({"rate": 5, "per": 0}, "per = 0 is not above 0"),
        ({"rate": 5, "per": -1}, "per = -1 is not above 0"),
        ({"rate": 5}, "rate and per go together"),
        ({"concurrency": 1, "per": 60}, "rate and per go together"),
        ({}, "neither concurrency nor rate"),
        ({"concurrency": 1, "key": "customer_id"}, "'customer_id' of @limit('x') on tests.decl"),
    ],
)
def test_limit__refuses_numbers_and_keys_that_cannot_work(
    declarations: None, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(LimitError, match=re.escape(message)):
        limit("x", **arguments)(make_task())

    assert "x" not in {item.name for item in limits.declared_limits()}


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "1 to 100 characters"), (" x", "no spaces"), ("queue:billing", "JOBS_QUEUE_LIMITS")],
)
def test_limit__refuses_bad_names(declarations: None, name: str, message: str) -> None:
    with pytest.raises(LimitError, match=message):
        limit(name, concurrency=1)


def test_limit__goes_above_the_task_decorator(declarations: None) -> None:
    with pytest.raises(LimitError, match=r"goes above @app.task\(...\) or Django's @task"):
        limit("x", concurrency=1)(lambda: None)


def test_limit__same_name_must_have_the_same_numbers(declarations: None) -> None:
    limit("shared", concurrency=2)(make_task("tests.declared_a"))

    with pytest.raises(LimitError, match="declared twice with different numbers: concurrency=2"):
        limit("shared", concurrency=3)(make_task("tests.declared_b"))
    with pytest.raises(LimitError, match="declared twice"):
        limit("shared", concurrency=2, key="customer")(make_task("tests.declared_c"))

    (shared,) = [item for item in limits.declared_limits() if item.name == "shared"]
    assert shared == Limit(name="shared", concurrency=2, tasks=("tests.declared_a",))


@pytest.mark.django_db
def test_limit__shared_by_tasks_and_stacked_on_one(declarations: None) -> None:
    limit("shared", concurrency=2)(make_task("tests.declared_a"))
    made = make_task("tests.declared_b")
    both = limit("shared", concurrency=2)(limit("per_region", rate=10, per=1.5, key="region")(made))

    declared = {item.name: item for item in limits.declared_limits()}
    assert both is made
    assert declared["shared"].tasks == ("tests.declared_a", "tests.declared_b")
    assert declared["per_region"].describe() == "10 starts per 1.5 s per region"
    # What the workers pass to the fetch, read back by PostgreSQL.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.name, l.tasks, l.key, l.rate, l.period "
            "FROM unnest(jobs_limits_v1(%s::jsonb)) l WHERE l.name = 'per_region'",
            [limits.limits_json()],
        )
        assert cursor.fetchone() == ("per_region", ["tests.declared_b"], "region", 10, 1.5)


@task()
def export(customer: int) -> None:
    return None


def test_limit__a_django_tasks_key_must_be_one_of_its_arguments(declarations: None) -> None:
    django_task = export

    with pytest.raises(LimitError, match="Limit key 'client'"):
        limit("x", concurrency=1, key="client")(django_task)
    assert limit("x", concurrency=1, key="customer")(django_task) is django_task
    (declared,) = [item for item in limits.declared_limits() if item.name == "x"]
    assert declared.key_positions == {django_task.module_path: 0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([("billing", 5)], "it is a list, not a dict"),
        ({"": {"concurrency": 1}}, "'' is not a queue name"),
        ({"billing": 5}, "the limit of queue 'billing' is a int, not a dict"),
        ({"billing": {"concurrency": 0}}, "concurrency = 0 is not from 1"),
        ({"billing": {"concurency": 1}}, "has 'concurency'; it takes concurrency, rate and per"),
        ({"billing": {"rate": 10}}, "rate and per go together"),
    ],
)
def test_jobs_queue_limits__refused_by_the_check_with_the_reason(
    settings: Any, value: object, message: str
) -> None:
    settings.JOBS_QUEUE_LIMITS = value

    with pytest.raises(SystemCheckError) as failure:
        call_command("check")

    assert "JOBS_QUEUE_LIMITS" in str(failure.value)
    assert message in str(failure.value)
    assert "jobs.E001" in str(failure.value)


def test_jobs_queue_limits__accepted_ones_reach_the_workers(settings: Any) -> None:
    settings.JOBS_QUEUE_LIMITS = {"mail": {"rate": 100, "per": 60}, "billing": {"concurrency": 5}}

    queue_limits = limits.queue_limits()

    assert queue_limits == [
        Limit(name="queue:billing", concurrency=5, queues=("billing",)),
        Limit(name="queue:mail", rate=100, per=60.0, queues=("mail",)),
    ]
    (mail,) = [item for item in json.loads(limits.limits_json()) if item["name"] == "queue:mail"]
    assert mail == {
        "name": "queue:mail",
        "tasks": [],
        "queues": ["mail"],
        "key": None,
        "key_positions": None,
        "concurrency": None,
        "rate": 100,
        "period": 60.0,
    }
    assert limits.wake_up_queues("anything", "billing") == ("billing",)
    assert limits.wake_up_queues("anything", "mail") is None


# --- Three worker processes ----------------------------------------------------------------


@pytest.fixture
def limit_runs(transactional_db: None) -> Iterator[None]:
    """The table tests.limit_tasks' runs write to. Ask for it before the worker fixtures:
    it is dropped after their workers stopped."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {RUNS_TABLE} (id bigserial PRIMARY KEY, job_id bigint NOT NULL, "
            "task_name text NOT NULL, key text NOT NULL, "
            "started_at timestamptz NOT NULL DEFAULT clock_timestamp(), ended_at timestamptz)"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {RUNS_TABLE}")


def most_at_once() -> dict[tuple[str, str], int]:
    """Per task and key, the most runs that were running at the same moment."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT a.task_name, a.key, max((
                SELECT count(*) FROM {RUNS_TABLE} b
                 WHERE b.task_name = a.task_name AND b.key = a.key
                   AND b.started_at <= a.started_at AND b.ended_at > a.started_at))
              FROM {RUNS_TABLE} a GROUP BY 1, 2
            """
        )
        return {(task_name, key): int(most) for task_name, key, most in cursor.fetchall()}


def start_workers(
    start_worker: Callable[..., WorkerProcess], *args: str, count: int = 3
) -> list[WorkerProcess]:
    arguments = ["--queues", f"{QUEUE},default", *args]
    workers = [
        start_worker(*arguments, "--name", f"limits-{n}", ready=False, **LIMIT_TASKS)
        for n in range(count)
    ]
    for worker in workers:
        worker.wait_for_output("Starting worker")
    return workers


def statuses(job_ids: list[int]) -> dict[str, int]:
    rows = ProcrastinateJob.objects.filter(id__in=job_ids).values_list("status", flat=True)
    counts: dict[str, int] = {}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


def all_succeeded(job_ids: list[int]) -> bool:
    return statuses(job_ids) == {"succeeded": len(job_ids)}


@pytest.mark.django_db(transaction=True)
def test_workers__held_jobs_wait_without_an_attempt_and_start_when_a_slot_frees(
    limit_runs: None, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # No poll within the test's waits: what starts a held job below is the wake-up that the
    # end of the job holding its slot sends.
    start_workers(start_worker, "--concurrency", "3", "--fetch-job-polling-interval", "600")
    flags = [tmp_path / f"go-{n}" for n in range(5)]
    limited = [int(limit_tasks.per_customer.defer(customer=1, path=str(flag))) for flag in flags]
    wait_until(lambda: statuses(limited) == {"doing": 2, "todo": 3}, what="two of them running")

    unlimited = [int(limit_tasks.unlimited.defer(n=n)) for n in range(6)]
    wait_until(lambda: all_succeeded(unlimited), what="the unlimited jobs ran meanwhile")

    assert statuses(limited) == {"doing": 2, "todo": 3}
    held = ProcrastinateJob.objects.filter(id__in=limited, status="todo")
    assert {job.attempts for job in held} == {0}
    assert {limits.held_reason(job) for job in held} == {
        "waiting for limit `tests.per_customer` (customer=1): 2 of 2 running"
    }
    running = sorted(ProcrastinateJob.objects.filter(id__in=limited, status="doing"), key=id)
    # One slot frees: a held job takes it, and no more than that.
    flags[limited.index(running[0].id)].touch()
    wait_until(
        lambda: statuses(limited) == {"succeeded": 1, "doing": 2, "todo": 2},
        what="a held job started once a slot freed",
    )
    for flag in flags:
        flag.touch()
    wait_until(lambda: all_succeeded(limited), what="every limited job ran")

    assert most_at_once()[("per_customer", "1")] == 2
    events = ProcrastinateEvent.objects.filter(job_id__in=limited)
    assert events.filter(type="started").count() == 5  # each job once, none failed
    assert not events.exclude(type__in=["deferred", "started", "succeeded"]).exists()
    attempts = ProcrastinateJob.objects.filter(id__in=limited).values_list("attempts", flat=True)
    assert set(attempts) == {1}


# Rounds of the race below: enough that, without the advisory lock of the fetch, a key of
# `per_customer` got a third run at once in each of 3 runs out of 3 (and 3 of 3 passed
# with it).
ROUNDS = 8


def started_at(job_ids: list[int]) -> list[dt.datetime]:
    """When each job was taken (procrastinate's `started` events: the fetch's time), sorted."""
    return sorted(
        ProcrastinateEvent.objects.filter(job_id__in=job_ids, type="started").values_list(
            "at", flat=True
        )
    )


@pytest.mark.django_db(transaction=True)
def test_workers__never_more_than_the_limits_allow_under_contention(
    limit_runs: None, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_workers(start_worker, "--concurrency", "4")
    rated: dict[int, list[int]] = {
        customer: [
            int(job_id)
            for job_id in limit_tasks.rate_limited.batch_defer(
                *[kwargs({"customer": customer, "n": n}) for n in range(5)]
            )
        ]
        for customer in (1, 2)
    }
    for round_number in range(ROUNDS):
        # Each round's jobs are committed at once, mixed: the twelve slots of the three
        # workers all fetch at the same moment, racing for the same slots.
        jobs = [
            *limit_tasks.per_customer.batch_defer(
                *[kwargs({"customer": n % 3, "hold": 0.01 * (n % 4)}) for n in range(12)]
            ),
            *limit_tasks.overall.batch_defer(
                *[kwargs({"n": n, "hold": 0.01 * (n % 3)}) for n in range(12)]
            ),
            *limit_tasks.unlimited.batch_defer(*[kwargs({"n": n}) for n in range(6)]),
        ]
        wait_until(
            lambda jobs=jobs: all_succeeded([int(job_id) for job_id in jobs]),  # type: ignore[misc]
            what=f"round {round_number} drained",
        )
    wait_until(lambda: all_succeeded([*rated[1], *rated[2]]), what="the rate-limited jobs ran")

    most = most_at_once()
    assert max(most[("per_customer", str(customer))] for customer in range(3)) <= 2
    assert most[("overall", "")] <= 3
    # At most RATE starts in any PERIOD: each start is at least PERIOD after the one RATE
    # starts before it.
    for customer in (1, 2):
        times = started_at(rated[customer])
        assert len(times) == 5
        gaps = [
            later - earlier
            for earlier, later in zip(times, times[limit_tasks.RATE :], strict=False)
        ]
        assert min(gaps) >= dt.timedelta(seconds=limit_tasks.PERIOD)


@pytest.mark.django_db(transaction=True)
def test_workers__a_paused_queue_waits_and_resuming_wakes_the_workers(
    limit_runs: None, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_workers(start_worker, "--fetch-job-polling-interval", "600", count=1)
    queue_pauses.pause(QUEUE)
    paused = int(limit_tasks.unlimited.defer(n=1))
    elsewhere = int(limit_tasks.unlimited.configure(queue="default").defer(n=2))
    wait_until(lambda: all_succeeded([elsewhere]), what="the other queue's job ran")

    assert statuses([paused]) == {"todo": 1}
    assert limits.held_reason(ProcrastinateJob.objects.get(id=paused)) == (
        f"queue `{QUEUE}` is paused"
    )
    queue_pauses.resume(QUEUE)
    wait_until(lambda: all_succeeded([paused]), what="resumed: the job ran")


@pytest.mark.django_db(transaction=True)
def test_connector__without_the_apps_fetch_function_fetches_as_procrastinate_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Code deployed before `migrate`, or a migration rolled back under running workers:
    they go on with procrastinate's fetch, and say so, instead of stopping."""
    job_id = defer("tests.limited_overall", n=1)
    worker_id = async_to_sync(app.job_manager.register_worker)()

    async def fetch_twice() -> list[dict[str, Any]]:
        connector = ReconnectingPsycopgConnector(kwargs={**connection_kwargs(), "autocommit": True})
        await connector.open_async()
        try:
            return [
                await connector.execute_query_one_async(
                    sql.queries["fetch_job"], queues=None, worker_id=worker_id
                )
                for _ in range(2)
            ]
        finally:
            await connector.close_async()

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER FUNCTION {FETCH_FUNCTION} RENAME TO jobs_fetch_job_v1_away")
    try:
        rows = async_to_sync(fetch_twice)()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER FUNCTION {FETCH_FUNCTION.replace('v1(', 'v1_away(')} "
                "RENAME TO jobs_fetch_job_v1"
            )

    assert [row["id"] for row in rows] == [job_id, None]
    warnings = [r.getMessage() for r in caplog.records if r.name == "jobs.connector"]
    assert len(warnings) == 1  # once a minute at most
    assert warnings[0].startswith("The app's fetch function is missing")
    assert "run `manage.py migrate`" in warnings[0]
