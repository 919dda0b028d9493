"""The queue's figures (jobs/queue_stats.py), checked against plain SQL counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from croniter import croniter
from django.db import connection

from jobs import queue_stats
from jobs.periodic import periodic_overview
from tests.conftest import JobMaker


def scalar(sql: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_queue_states__counts_waiting_and_running_jobs_and_finds_the_oldest(
    make_job: JobMaker,
) -> None:
    oldest = make_job(queue="mail")
    make_job(queue="mail")
    make_job(queue="mail", schedule_in={"hours": 1})
    make_job("doing", queue="mail")
    make_job("succeeded", queue="reports")

    states = {state.queue: state for state in queue_stats.queue_states()}

    mail = states["mail"]
    assert mail.counts["todo"] == 3
    assert mail.counts["doing"] == 1
    assert mail.scheduled == 1
    assert mail.waiting == 2
    assert {"todo", "doing"} <= mail.exact
    assert mail.oldest_job_id == oldest
    assert mail.oldest_age_seconds is not None
    assert mail.oldest_age_seconds >= 0


@pytest.mark.django_db
def test_queue_states__estimates_beyond_the_limit_and_still_finds_the_oldest(
    make_job: JobMaker,
) -> None:
    oldest = make_job(queue="mail")
    make_job(queue="mail")
    make_job(queue="mail")

    states = {state.queue: state for state in queue_stats.queue_states(limit=2)}

    assert "todo" not in states["mail"].exact
    assert states["mail"].oldest_job_id == oldest


@pytest.mark.django_db
def test_estimated_jobs_by_queue_and_status__reads_analyze_statistics(
    make_job: JobMaker,
) -> None:
    for _ in range(30):
        make_job("succeeded", queue="reports")
    for _ in range(10):
        make_job("failed", queue="mail")

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE procrastinate_jobs")

    estimates = queue_stats.estimated_jobs_by_queue_and_status()
    assert estimates[("reports", "succeeded")] == pytest.approx(30, abs=3)
    assert estimates[("mail", "failed")] == pytest.approx(10, abs=3)
    assert "mail" in queue_stats.known_queues()
    assert "jobs.send_notification" in queue_stats.known_tasks()


def test_percentiles__per_queue_and_for_all() -> None:
    samples = [("a", float(n)) for n in range(1, 101)] + [("b", 1000.0)]

    rows = {row.queue: row for row in queue_stats.percentiles(samples)}

    assert rows["a"].samples == 100
    assert rows["a"].p50 == pytest.approx(50.5)
    assert rows["a"].p90 == pytest.approx(90.1)
    assert rows["a"].max == 100
    assert rows["b"].p99 == 1000
    assert rows[""].samples == 101
    assert rows[""].max == 1000


@pytest.mark.django_db
@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_quantile__is_postgresqls_percentile_cont(q: float) -> None:
    # The one percentile of the dashboard and the benchmarks (bench/timing.py).
    values = sorted([0.004, 0.2, 0.21, 1.5, 3.0, 3.0, 7.25, 40.0, 41.0, 600.0, 0.03])

    expected = scalar(
        "SELECT percentile_cont(%s) WITHIN GROUP (ORDER BY v) FROM unnest(%s::float8[]) v",
        [q, values],
    )

    assert queue_stats.quantile(values, q) == pytest.approx(expected)
    assert queue_stats.quantile([5.0], q) == 5.0


def test_percentiles__of_nothing_is_empty() -> None:
    assert queue_stats.percentiles([]) == []


def test_throughput__counts_finished_jobs_per_minute(seeded_history: int) -> None:
    now = queue_stats.database_now()

    data = queue_stats.throughput(hours=3, now=now)

    assert len(data.succeeded) == len(data.failed) == 180
    assert data.times()[-1] <= now < data.times()[-1] + dt.timedelta(minutes=1)
    since = data.start
    assert sum(data.succeeded) == scalar(
        "SELECT count(*) FROM procrastinate_events WHERE type = 'succeeded' AND at >= %s",
        [since],
    )
    assert sum(data.failed) == scalar(
        "SELECT count(*) FROM procrastinate_events WHERE type = 'failed' AND at >= %s", [since]
    )
    assert sum(data.failed) > 0


def test_throughput__reads_settled_minutes_once(
    seeded_history: int, django_assert_num_queries: Any
) -> None:
    now = queue_stats.database_now()
    first = queue_stats.throughput(hours=3, now=now)
    with connection.cursor() as cursor:
        # Rewrite history behind the cache's back: a settled minute must not be read again.
        cursor.execute("DELETE FROM procrastinate_events WHERE type = 'succeeded'")

    again = queue_stats.throughput(hours=3, now=now)

    settled = sum(
        1 for t in first.times() if t + dt.timedelta(minutes=1) <= now - queue_stats.SETTLED
    )
    assert again.succeeded[:settled] == first.succeeded[:settled]
    assert sum(again.succeeded[settled:]) == 0


def test_waiting_and_run_times__sample_recent_jobs(seeded_history: int) -> None:
    waiting = queue_stats.waiting_times(seconds=3 * 3600, sample=500)
    running = queue_stats.run_times(seconds=3 * 3600, sample=500)

    assert len(waiting) == 500
    assert len(running) == 500
    # The seeded jobs wait 0.05 to 2.05 s and run 0.1 to 3.1 s.
    assert all(0.05 <= value <= 2.05 for _, value in waiting)
    assert all(0.1 <= value <= 3.1 for _, value in running)
    assert {queue for queue, _ in waiting} <= {"notifications", "reports", "maintenance", "legacy"}


def test_recent_failures__grouped_by_task_and_exception(seeded_history: int) -> None:
    groups = queue_stats.recent_failures(seconds=3 * 3600)

    assert sum(group.count for group in groups) == scalar(
        "SELECT count(*) FROM jobs_jobresult WHERE status = 'failed'"
    )
    assert [group.count for group in groups] == sorted(
        (group.count for group in groups), reverse=True
    )
    first = groups[0]
    assert first.exception_type in {
        "smtplib.SMTPServerDisconnected",
        "TimeoutError",
        "jobs.models.Report.DoesNotExist",
    }
    assert 1 <= len(first.job_ids) <= 5
    assert first.last_message
    assert scalar("SELECT task_name FROM procrastinate_jobs WHERE id = %s", [first.job_ids[0]]) == (
        first.task_name
    )


def test_workers__live_and_stale(seeded_history: int) -> None:
    assert [w.live for w in queue_stats.workers(live_within=60)] == [True, True]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '5 minutes' "
            "WHERE id = (SELECT min(id) FROM procrastinate_workers)"
        )

    workers = queue_stats.workers(live_within=60)

    assert [w.live for w in workers] == [True, False]
    assert workers[1].age_seconds >= 300
    assert sum(w.running_jobs for w in workers) == scalar(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
    )


def test_periodic_overview__next_and_last_run(seeded_history: int) -> None:
    now = queue_stats.database_now()

    states = {(s.task_name, s.periodic_id): s for s in periodic_overview(now=now)}

    minute = states[("jobs.recover_stalled_jobs", "every-minute")]
    assert minute.next_run == croniter("* * * * *", now).get_next(dt.datetime)
    assert minute.description == "Every minute"
    assert minute.last_run is not None
    assert now - minute.last_run <= dt.timedelta(minutes=2)
    assert minute.queue == "maintenance"
