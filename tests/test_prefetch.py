"""Several jobs per round trip (jobs/prefetch.py, migration jobs.0015).

- The SQL functions, called as the connector calls them: a claim takes up to n jobs with the
  fetch's rules (priority, procrastinate's lock, limits, each claim seeing the ones before),
  waits for a limit's lock only at its first claim; a give-back puts jobs back as if they
  had never been taken, or cancels those that cannot wait again.
- The worker connector, on the real database: one claim per free slot, handed out in order
  without a round trip, given back when the worker stops, unregisters or the connector
  closes; one job per fetch when turned off or when the database lacks the function.
- Real worker processes: thousands of jobs drained by several processes, each exactly once;
  priority order and procrastinate's lock; SIGTERM with jobs claimed and not started gives
  them back; SIGKILL leaves them to stalled-job recovery; SIGTERM mid-drain loses and
  doubles nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection, transaction
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob
from procrastinate.jobs import Status
from procrastinate.manager import JobManager
from procrastinate.psycopg_connector import PsycopgConnector
from procrastinate.types import JSONDict
from procrastinate.worker import Worker

from jobs import stalled
from jobs.connector import ReconnectingPsycopgConnector
from jobs.databases import connection_kwargs, listening_pids
from jobs.prefetch import FETCH_JOBS, RELEASE_JOBS
from jobs.testing import WorkerProcess, wait_until
from tests.conftest import DJANGO_TASK_MODULES, JobRuns
from tests.prefetch_tasks import signal_own_worker
from tests.slow_tasks import quick, record_run, wait_quietly

PREFETCH_TASKS = {
    "PROCRASTINATE_IMPORT_PATHS": f"tests.prefetch_tasks,tests.slow_tasks,{DJANGO_TASK_MODULES}"
}
NO_LIMITS = "[]"


def claim(worker_id: int, n: int, limits_json: str = NO_LIMITS) -> list[int]:
    """The ids `jobs_fetch_jobs_v1` claims for `worker_id`, on the test's connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            FETCH_JOBS, {"queues": None, "worker_id": worker_id, "limits": limits_json, "n": n}
        )
        return [row[0] for row in cursor.fetchall()]


def release(worker_id: int, job_ids: Iterable[int]) -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(RELEASE_JOBS, {"ids": list(job_ids), "worker_id": worker_id})
        return {job_id: status for job_id, status in cursor.fetchall()}


def register_worker() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT worker_id FROM procrastinate_register_worker_v1()")
        return int(cursor.fetchone()[0])


def defer(task_name: str = "tests.quick", **options: Any) -> int:
    return int(app.configure_task(task_name, **options).defer(n=1))


def events(job_id: int) -> tuple[str, ...]:
    found = ProcrastinateEvent.objects.filter(job_id=job_id).order_by("id")
    return tuple(found.values_list("type", flat=True))


def rows(job_ids: Iterable[int]) -> dict[int, tuple[str, int | None, int]]:
    """(status, worker id, attempts) per job."""
    found = ProcrastinateJob.objects.filter(id__in=list(job_ids))
    return {job.id: (job.status, job.worker_id, job.attempts) for job in found}


def finish(job_id: int) -> None:
    async_to_sync(app.job_manager.finish_job_by_id_async)(
        job_id, status=Status.SUCCEEDED, delete_job=False
    )


def limit_json(name: str, *, tasks: list[str], concurrency: int) -> str:
    return json.dumps(
        [
            {
                "name": name,
                "tasks": tasks,
                "queues": [],
                "key": None,
                "key_positions": None,
                "concurrency": concurrency,
                "rate": None,
                "period": None,
            }
        ]
    )


# --- The SQL functions ----------------------------------------------------------------------


@pytest.mark.django_db
def test_fetch_jobs__claims_in_priority_order_and_honours_locks() -> None:
    worker_id = register_worker()
    low, high, middle = (defer(priority=priority) for priority in (1, 5, 3))
    first_of_lock, second_of_lock = (defer(priority=9, lock="a") for _ in range(2))
    later = defer(priority=10, schedule_at=timezone.now() + dt.timedelta(hours=1))

    claimed = claim(worker_id, 10)

    # The lock's second job waits for its first, even within one claim; the scheduled job
    # is not due.
    assert claimed == [first_of_lock, high, middle, low]
    assert rows(claimed) == dict.fromkeys(claimed, ("doing", worker_id, 0))
    assert {job_id: events(job_id) for job_id in claimed} == dict.fromkeys(
        claimed, ("deferred", "started")
    )
    assert claim(worker_id, 10) == []
    finish(first_of_lock)
    assert claim(worker_id, 10) == [second_of_lock]
    assert rows([later]) == {later: ("todo", None, 0)}


@pytest.mark.django_db
def test_fetch_jobs__takes_no_more_than_n() -> None:
    worker_id = register_worker()
    job_ids = [defer(priority=-n) for n in range(5)]

    assert claim(worker_id, 2) == job_ids[:2]
    assert claim(worker_id, 1) == job_ids[2:3]
    assert set(rows(job_ids[3:]).values()) == {("todo", None, 0)}


@pytest.mark.django_db
def test_fetch_jobs__each_claim_counts_towards_the_limits_of_the_next() -> None:
    worker_id = register_worker()
    limited = [defer(priority=10) for _ in range(4)]
    unlimited = defer("tests.return_large", priority=0)

    claimed = claim(worker_id, 10, limit_json("two", tasks=["tests.quick"], concurrency=2))

    assert claimed == [*limited[:2], unlimited]
    assert set(rows(limited[2:]).values()) == {("todo", None, 0)}


@pytest.mark.django_db
def test_fetch_jobs__only_the_first_claim_waits_for_a_limits_lock() -> None:
    """A later claim that waited for a limit's lock while the statement holds others could
    deadlock with another fetch: it only tries, and skips the jobs it cannot lock now."""
    worker_id = register_worker()
    first = defer("tests.return_large", priority=10)
    limited = [defer(priority=5) for _ in range(2)]
    last = defer("tests.return_large", priority=0)
    limits_json = limit_json("busy", tasks=["tests.quick"], concurrency=5)

    with psycopg.connect(**connection_kwargs()) as other:
        # Another fetch deciding for limit `busy` (no key) holds its lock.
        other.execute(
            "SELECT pg_advisory_xact_lock(hashtext('jobs_limit'), hashtext('busy' || chr(31)))"
        )
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '10s'")  # a wait fails the test
        claimed = claim(worker_id, 10, limits_json)
        other.rollback()

    assert claimed == [first, last]
    assert set(rows(limited).values()) == {("todo", None, 0)}


@pytest.mark.django_db
def test_release_jobs__gives_back_with_the_history_of_a_job_never_taken() -> None:
    worker_id = register_worker()
    plain = defer(priority=3)
    scheduled = defer(priority=2, schedule_at=timezone.now() - dt.timedelta(hours=1))
    retried = defer(priority=1)
    # `retried` ran once and failed, to be retried now: its history has that attempt.
    assert claim(worker_id, 10) == [plain, scheduled, retried]
    release(worker_id, [plain, scheduled])
    # (In the past: this test's transaction, hence PostgreSQL's now(), began earlier.)
    past = timezone.now() - dt.timedelta(hours=1)
    async_to_sync(app.job_manager.retry_job_by_id_async)(retried, retry_at=past)
    job_ids = [plain, scheduled, retried]
    before = {job_id: events(job_id) for job_id in job_ids}
    assert before[retried] == ("deferred", "started", "scheduled", "deferred_for_retry")

    assert claim(worker_id, 10) == job_ids
    given = release(worker_id, job_ids)

    assert given == dict.fromkeys(job_ids, "todo")
    # No attempt spent, no retry, no failure: procrastinate counts an attempt at its end.
    assert rows(job_ids) == {plain: ("todo", None, 0), scheduled: ("todo", None, 0),
                             retried: ("todo", None, 1)}  # fmt: skip
    assert {job_id: events(job_id) for job_id in job_ids} == before
    assert claim(worker_id, 10) == job_ids  # waiting as before, in the same order


@pytest.mark.django_db
def test_release_jobs__only_the_workers_jobs_still_doing() -> None:
    worker_id, other_worker = register_worker(), register_worker()
    mine = [defer(priority=10 - n) for n in range(3)]
    theirs = defer(priority=0)
    assert claim(worker_id, 3) == mine
    assert claim(other_worker, 1) == [theirs]
    finish(mine[0])

    given = release(worker_id, [*mine, theirs])

    assert given == {mine[1]: "todo", mine[2]: "todo"}
    assert rows([mine[0], theirs]) == {
        mine[0]: ("succeeded", worker_id, 1),
        theirs: ("doing", other_worker, 0),
    }
    assert release(worker_id, mine) == {}  # twice: nothing more


@pytest.mark.django_db
def test_release_jobs__cancels_a_job_that_cannot_wait_again() -> None:
    worker_id = register_worker()
    aborted = defer(priority=2)
    locked = defer(priority=1, queueing_lock="one-waiting")
    assert claim(worker_id, 10) == [aborted, locked]
    # While claimed: an abort is asked for, and procrastinate lets another job with the
    # queueing lock in (the claimed one is no longer waiting).
    assert app.job_manager.cancel_job_by_id(aborted, abort=True)
    newer = defer(queueing_lock="one-waiting")

    given = release(worker_id, [aborted, locked])

    assert given == {aborted: "cancelled", locked: "cancelled"}
    assert rows([aborted, locked, newer]) == {
        aborted: ("cancelled", None, 0),
        locked: ("cancelled", None, 0),
        newer: ("todo", None, 0),
    }
    assert events(aborted) == ("deferred", "abort_requested", "cancelled")
    assert events(locked) == ("deferred", "cancelled")


@pytest.mark.django_db(transaction=True)
def test_release_jobs__announces_the_jobs_as_an_insert_does() -> None:
    worker_id = register_worker()
    job_id = defer()
    assert claim(worker_id, 1) == [job_id]

    with psycopg.connect(**connection_kwargs(), autocommit=True) as listener:
        listener.execute('LISTEN "procrastinate_queue_v1#tests"')
        release(worker_id, [job_id])
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]

    assert [json.loads(payload) for payload in heard] == [
        {"type": "job_inserted", "job_id": job_id}
    ]


# --- The worker connector -------------------------------------------------------------------


class Fetches:
    """A worker's fetches through a real worker connector, counting its statements."""

    def __init__(self, connector: ReconnectingPsycopgConnector, worker: Worker) -> None:
        self.connector = connector
        self.worker = worker
        self.manager = JobManager(connector)

    async def fetch(self) -> int | None:
        job = await self.manager.fetch_job(queues=None, worker_id=self.worker_id)
        return None if job is None else job.id

    @property
    def worker_id(self) -> int:
        assert self.worker.worker_id is not None
        return self.worker.worker_id

    async def finish(self, job_id: int) -> None:
        await self.manager.finish_job_by_id_async(job_id, status=Status.SUCCEEDED, delete_job=False)


def with_worker_connector(
    scenario: Callable[[Fetches], Awaitable[Any]], *, concurrency: int = 4, know: bool = True
) -> Fetches:
    """Run `scenario` with a worker connector on the test database and a registered
    procrastinate worker of `concurrency` slots, which the connector knows (as the app's
    middleware tells it at the worker's first job) if `know`; then close the connector."""

    async def run() -> Fetches:
        connector = ReconnectingPsycopgConnector(kwargs={**connection_kwargs(), "autocommit": True})
        await connector.open_async()
        worker = Worker(app=app, concurrency=concurrency, install_signal_handlers=False)
        fetches = Fetches(connector, worker)
        try:
            worker.worker_id = await fetches.manager.register_worker()
            if know:
                connector.claimed_jobs.know_worker(worker)
            await scenario(fetches)
        finally:
            await connector.close_async()
        return fetches

    return async_to_sync(run)()


def fetch_statements(statements: list[str]) -> int:
    return sum(1 for query in statements if "jobs_fetch_job" in query)


@pytest.fixture
def counted_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement procrastinate's connector sends for a worker connector's reads
    (fetches, claims, give-backs): a spy, the statements still run."""
    sent: list[str] = []
    for name in ("execute_query_one_async", "execute_query_all_async"):
        original = getattr(PsycopgConnector, name)

        async def counted(
            self: Any, query: Any, _original: Any = original, **arguments: Any
        ) -> Any:
            sent.append(query)
            return await _original(self, query, **arguments)

        monkeypatch.setattr(PsycopgConnector, name, counted)
    return sent


@pytest.mark.django_db(transaction=True)
def test_connector__claims_one_job_per_free_slot_and_hands_them_out_in_order(
    counted_statements: list[str],
) -> None:
    first_four = [defer(priority=10 - n) for n in range(4)]
    later = [defer(priority=0) for _ in range(3)]

    async def scenario(fetches: Fetches) -> None:
        got = [await fetches.fetch()]
        # One claim took a job per slot; the slots' next fetches need no round trip.
        assert fetch_statements(counted_statements) == 1
        assert await sync_to_async(rows)(first_four) == dict.fromkeys(
            first_four, ("doing", fetches.worker_id, 0)
        )
        got += [await fetches.fetch() for _ in range(3)]
        assert got == first_four
        assert fetch_statements(counted_statements) == 1
        # Two end: the next claim takes two jobs, for the two free slots.
        for job_id in first_four[:2]:
            await fetches.finish(job_id)
        assert await fetches.fetch() == later[0]
        assert fetch_statements(counted_statements) == 2
        assert Counter(status for status, _, _ in (await sync_to_async(rows)(later)).values()) == {
            "doing": 2,
            "todo": 1,
        }
        assert await fetches.fetch() == later[1]
        assert fetch_statements(counted_statements) == 2

    with_worker_connector(scenario)


@pytest.mark.django_db(transaction=True)
def test_connector__a_stopping_worker_gives_back_what_it_claimed() -> None:
    job_ids = [defer(priority=10 - n) for n in range(8)]

    async def scenario(fetches: Fetches) -> None:
        assert await fetches.fetch() == job_ids[0]
        fetches.worker.stop()  # SIGTERM's handler does this
        await until(lambda: rows(job_ids[1:4]) == dict.fromkeys(job_ids[1:4], ("todo", None, 0)))
        # A claim that returns while its worker stops gives its extra jobs back at once
        # (procrastinate's worker may make one more fetch after the stop).
        assert await fetches.fetch() == job_ids[1]
        assert await sync_to_async(rows)(job_ids[2:]) == dict.fromkeys(
            job_ids[2:], ("todo", None, 0)
        )

    fetches = with_worker_connector(scenario)

    assert rows(job_ids[:2]) == dict.fromkeys(job_ids[:2], ("doing", fetches.worker_id, 0))
    assert {job_id: events(job_id) for job_id in job_ids[2:]} == dict.fromkeys(
        job_ids[2:], ("deferred",)
    )


async def until(predicate: Callable[[], bool], within: float = 10) -> None:
    """Wait, on the event loop, until `predicate` (a synchronous look at the database) holds."""
    look = sync_to_async(predicate)
    for _ in range(int(within / 0.02)):
        if await look():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not met within {within} s")


@pytest.mark.django_db(transaction=True)
def test_connector__unregistering_gives_back_what_it_claimed() -> None:
    job_ids = [defer(priority=10 - n) for n in range(4)]

    async def scenario(fetches: Fetches) -> None:
        assert await fetches.fetch() == job_ids[0]
        await fetches.manager.unregister_worker(fetches.worker_id)

    with_worker_connector(scenario)

    # The job handed out stays with the (gone) worker, for stalled-job recovery.
    assert rows(job_ids) == {job_ids[0]: ("doing", None, 0)} | dict.fromkeys(
        job_ids[1:], ("todo", None, 0)
    )


@pytest.mark.django_db(transaction=True)
def test_connector__closing_gives_back_what_it_claimed() -> None:
    job_ids = [defer(priority=10 - n) for n in range(4)]

    async def scenario(fetches: Fetches) -> None:
        assert await fetches.fetch() == job_ids[0]

    fetches = with_worker_connector(scenario)

    assert rows(job_ids) == {job_ids[0]: ("doing", fetches.worker_id, 0)} | dict.fromkeys(
        job_ids[1:], ("todo", None, 0)
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("why", ["JOBS_FETCH_MANY is off", "slots not known yet"])
def test_connector__fetches_one_job_at_a_time(
    why: str, settings: Any, counted_statements: list[str]
) -> None:
    if why == "JOBS_FETCH_MANY is off":
        settings.JOBS_FETCH_MANY = False
    job_ids = [defer(priority=10 - n) for n in range(3)]

    async def scenario(fetches: Fetches) -> None:
        assert await fetches.fetch() == job_ids[0]
        assert await sync_to_async(rows)(job_ids[1:]) == dict.fromkeys(
            job_ids[1:], ("todo", None, 0)
        )
        assert await fetches.fetch() == job_ids[1]

    with_worker_connector(scenario, know=why != "slots not known yet")

    assert fetch_statements(counted_statements) == 2


MULTI_FETCH_FUNCTION = "jobs_fetch_jobs_v1(character varying[], bigint, jsonb, integer)"


@pytest.mark.django_db(transaction=True)
def test_connector__without_the_multi_job_fetch_fetches_one_job_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Code deployed before `migrate` (or the migration rolled back under running workers):
    one job per fetch, with the app's rules, and a warning, rather than stopping."""
    job_ids = [defer(priority=10 - n) for n in range(3)]

    async def scenario(fetches: Fetches) -> None:
        assert [await fetches.fetch() for _ in range(2)] == job_ids[:2]
        assert await sync_to_async(rows)(job_ids[2:]) == {job_ids[2]: ("todo", None, 0)}

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER FUNCTION {MULTI_FETCH_FUNCTION} RENAME TO jobs_fetch_jobs_v1_away")
    try:
        with_worker_connector(scenario)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER FUNCTION {MULTI_FETCH_FUNCTION.replace('v1(', 'v1_away(')} "
                "RENAME TO jobs_fetch_jobs_v1"
            )

    warnings = [r.getMessage() for r in caplog.records if r.name == "jobs.connector"]
    assert len(warnings) == 1  # once a minute at most
    assert warnings[0].startswith("The app's fetch function is missing")
    assert "fetches one job at a time" in warnings[0]


# --- Real worker processes ------------------------------------------------------------------


def wait_for_listeners(count: int, group: WorkerProcess | None = None) -> None:
    def ready() -> bool:
        if group is not None and group.process.poll() is not None:
            raise AssertionError(f"run_workers exited:\n{group.output()[-4000:]}")
        return len(listening_pids()) == count

    wait_until(ready, what=f"{count} listening workers")


def statuses(job_ids: Iterable[int]) -> dict[int, str]:
    found = ProcrastinateJob.objects.filter(id__in=list(job_ids))
    return dict(found.values_list("id", "status"))


def all_succeeded(job_ids: list[int]) -> bool:
    found = statuses(job_ids)
    assert "failed" not in found.values(), found
    return set(found.values()) == {"succeeded"} and len(found) == len(job_ids)


def event_counts(job_ids: Iterable[int]) -> dict[int, Counter[str]]:
    counts: dict[int, Counter[str]] = {job_id: Counter() for job_id in job_ids}
    found = ProcrastinateEvent.objects.filter(job_id__in=list(counts))
    for job_id, kind in found.values_list("job_id", "type"):
        counts[job_id][kind] += 1
    return counts


def assert_ran_once(job_runs: JobRuns, job_ids: list[int]) -> None:
    """Each job ran once (one execution recorded), started once and succeeded once, and
    nothing else happened to it (no retry, no failure)."""
    runs = {job_id: len(its_runs) for job_id, its_runs in job_runs.of(job_ids).items()}
    assert {job_id: count for job_id, count in runs.items() if count != 1} == {}
    once = Counter({"deferred": 1, "started": 1, "succeeded": 1})
    wrong = {job_id: dict(c) for job_id, c in event_counts(job_ids).items() if c != once}
    assert wrong == {}


def claims_of_several(job_ids: list[int]) -> int:
    """How many claims took more than one of the jobs: their "started" events carry the
    time of the claim's transaction."""
    starts = ProcrastinateEvent.objects.filter(job_id__in=job_ids, type="started")
    return sum(1 for count in Counter(starts.values_list("at", flat=True)).values() if count > 1)


DRAINED = 2000


@pytest.mark.django_db(transaction=True)
def test_workers__drain_each_job_once_with_claims_of_several(
    job_runs: JobRuns,
    start_run_workers: Callable[..., WorkerProcess],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    group = start_run_workers(
        "--processes", "2", "--concurrency", "4", "--queues", "tests", "--name", "claims",
        **PREFETCH_TASKS,
    )  # fmt: skip
    start_worker("--queues", "tests", "--name", "stock", "--concurrency", "4", **PREFETCH_TASKS)
    wait_for_listeners(3, group)
    arguments: list[JSONDict] = [{"n": n} for n in range(DRAINED)]
    job_ids = record_run.batch_defer(*arguments)

    wait_until(lambda: all_succeeded(job_ids), timeout=180, what="every job succeeded")

    assert_ran_once(job_runs, job_ids)
    assert {(status, attempts) for status, _, attempts in rows(job_ids).values()} == {
        ("succeeded", 1)
    }
    assert claims_of_several(job_ids) > 0
    assert "Gave back" not in group.output()
    assert "exited with code" not in group.output()


@pytest.mark.django_db(transaction=True)
def test_worker__takes_jobs_in_priority_order_across_its_claims(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker("--queues", "tests", "--name", "ordered", "--concurrency", "4", **PREFETCH_TASKS)
    priorities = [random.randint(-5, 5) for _ in range(300)]
    with transaction.atomic():  # all waiting at once, when the worker first looks
        job_ids = [int(quick.configure(priority=p).defer(n=n)) for n, p in enumerate(priorities)]

    wait_until(lambda: all_succeeded(job_ids), timeout=120, what="every job succeeded")

    starts = ProcrastinateEvent.objects.filter(job_id__in=job_ids, type="started").order_by("id")
    taken = list(starts.values_list("job_id", flat=True))
    priority_of = dict(zip(job_ids, priorities, strict=True))
    assert taken == sorted(job_ids, key=lambda job_id: (-priority_of[job_id], job_id))
    assert claims_of_several(job_ids) > 0


@pytest.mark.django_db(transaction=True)
def test_workers__jobs_of_a_lock_run_one_at_a_time_in_order(
    start_run_workers: Callable[..., WorkerProcess],
) -> None:
    group = start_run_workers(
        "--processes", "2", "--concurrency", "4", "--queues", "tests", "--name", "locks",
        **PREFETCH_TASKS,
    )  # fmt: skip
    wait_for_listeners(2, group)
    with transaction.atomic():
        locked = [int(quick.configure(lock="one-at-a-time").defer(n=n)) for n in range(30)]
        free = [int(quick.defer(n=n)) for n in range(300)]

    wait_until(lambda: all_succeeded(locked + free), timeout=120, what="every job succeeded")

    found = ProcrastinateEvent.objects.filter(job_id__in=locked, type__in=["started", "succeeded"])
    history = list(found.order_by("id").values_list("job_id", "type"))
    # Each job of the lock started after the one before it ended, in the order deferred.
    assert history == [(job_id, kind) for job_id in locked for kind in ("started", "succeeded")]
    assert claims_of_several(free) > 0
    assert "exited with code" not in group.output()


def given_back(output: str) -> int:
    return sum(
        int(line.split("Gave back ", 1)[1].split(" ", 1)[0])
        for line in output.splitlines()
        if "Gave back " in line
    )


def warm_up(worker: WorkerProcess) -> None:
    """Run a first job: the worker's middleware tells the connector its concurrency then."""
    job_id = int(quick.defer(n=0))
    wait_until(lambda: all_succeeded([job_id]), what="the first job ran")


@pytest.mark.django_db(transaction=True)
def test_worker__sigterm_gives_back_at_once_the_jobs_it_claimed_and_did_not_start(
    job_runs: JobRuns,
    start_worker: Callable[..., WorkerProcess],
    run_worker: Callable[..., Any],
    tmp_path: Path,
) -> None:
    flag = tmp_path / "finish"
    worker = start_worker(
        "--queues", "tests", "--name", "stopping", "--concurrency", "8",
        "--shutdown-graceful-timeout", "120",
        **PREFETCH_TASKS,
    )  # fmt: skip
    warm_up(worker)
    long_job = int(wait_quietly.defer(path=str(flag), timeout=120))
    wait_until(lambda: statuses([long_job]) == {long_job: "doing"}, what="a long job running")
    with transaction.atomic():  # one claim takes them all (7 free slots), the signal first
        signal_own_worker.configure(priority=10).defer(signal_number=int(signal.SIGTERM))
        arguments: list[JSONDict] = [{"n": n} for n in range(6)]
        job_ids = record_run.batch_defer(*arguments)

    # The worker started one more after the signal's job, before the signal's handler ran.
    # The others go back to the queue as if never taken, while the worker still waits for
    # its long job: another worker may take them meanwhile.
    wait_until(
        lambda: "Gave back" in worker.output() and "doing" not in statuses(job_ids).values(),
        what="the jobs not started given back",
    )
    assert worker.process.poll() is None
    back = [job_id for job_id, status in statuses(job_ids).items() if status == "todo"]
    assert given_back(worker.output()) == len(back) > 0
    assert set(statuses(job_ids).values()) == {"succeeded", "todo"}
    assert rows(back) == dict.fromkeys(back, ("todo", None, 0))
    assert {job_id: events(job_id) for job_id in back} == dict.fromkeys(back, ("deferred",))
    assert all(not runs for runs in job_runs.of(back).values())
    flag.touch()
    assert worker.process.wait(timeout=60) == 0, worker.output()[-4000:]
    assert statuses([long_job]) == {long_job: "succeeded"}

    run_worker("--queues", "tests", "--name", "next", "--concurrency", "4", **PREFETCH_TASKS)
    assert all_succeeded(job_ids)
    assert_ran_once(job_runs, job_ids)


@pytest.mark.django_db(transaction=True)
def test_worker__sigkill_leaves_claimed_jobs_to_stalled_job_recovery(
    job_runs: JobRuns, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(
        "--queues", "tests", "--name", "killed", "--concurrency", "4", **PREFETCH_TASKS
    )
    warm_up(worker)
    with transaction.atomic():
        killer = int(
            signal_own_worker.configure(priority=10).defer(signal_number=int(signal.SIGKILL))
        )
        arguments: list[JSONDict] = [{"n": n} for n in range(3)]
        claimed = record_run.batch_defer(*arguments)

    assert worker.process.wait(timeout=60) == -signal.SIGKILL
    # Claimed with the job that killed the worker, never started.
    assert set(statuses([killer, *claimed]).values()) == {"doing"}
    assert all(not runs for runs in job_runs.of(claimed).values())

    start_worker("--queues", "tests", "--name", "survivor", "--concurrency", "4", **PREFETCH_TASKS)
    wait_until(
        lambda: (
            {r.job_id for r in stalled.recover_stalled_jobs(stalled_after=1, dry_run=True)}
            >= {killer, *claimed}
        ),
        what="the killed worker's heartbeat older than 1 s",
    )
    recovered = stalled.recover_stalled_jobs(stalled_after=1)

    assert {(r.job_id, r.action) for r in recovered} == {
        (job_id, "retried") for job_id in [killer, *claimed]
    }
    wait_until(lambda: all_succeeded([killer, *claimed]), what="the recovered jobs ran")
    runs = job_runs.of(claimed)
    assert {job_id: len(its_runs) for job_id, its_runs in runs.items()} == dict.fromkeys(claimed, 1)


@pytest.mark.django_db(transaction=True)
def test_run_workers__sigterm_mid_drain_loses_and_doubles_nothing(
    job_runs: JobRuns,
    start_run_workers: Callable[..., WorkerProcess],
    run_worker: Callable[..., Any],
) -> None:
    group = start_run_workers(
        "--processes", "2", "--concurrency", "4", "--queues", "tests", "--name", "draining",
        **PREFETCH_TASKS,
    )  # fmt: skip
    wait_for_listeners(2, group)
    arguments: list[JSONDict] = [{"n": n} for n in range(DRAINED)]
    job_ids = record_run.batch_defer(*arguments)
    wait_until(lambda: job_runs.count() >= DRAINED // 3, timeout=120, what="a third ran")

    group.process.send_signal(signal.SIGTERM)
    assert group.process.wait(timeout=90) == 0, group.output()[-4000:]

    found = statuses(job_ids)
    waiting = [job_id for job_id, status in found.items() if status == "todo"]
    assert set(found.values()) == {"succeeded", "todo"}
    assert {job_id: events(job_id) for job_id in waiting} == dict.fromkeys(waiting, ("deferred",))
    assert set(rows(waiting).values()) == {("todo", None, 0)}
    assert all(not runs for runs in job_runs.of(waiting).values())

    run_worker("--queues", "tests", "--name", "rest", "--concurrency", "4", **PREFETCH_TASKS)
    assert all_succeeded(job_ids)
    assert_ran_once(job_runs, job_ids)
