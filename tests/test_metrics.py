"""The Prometheus endpoint (jobs/metrics.py): who may read it, and what it says."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.db.models.functions import Now
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from jobs import queue_pauses
from jobs.models import Schedule
from tests.conftest import JobMaker
from tests.schedule_rows import break_schedule, make_schedule

METRICS = "/metrics/"
TOKEN = "metrics-token-for-tests"


def samples(response: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.fixture
def with_token(settings: Any) -> str:
    settings.JOBS_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.mark.django_db
def test_metrics__need_the_token_or_a_staff_login(
    client: Client, staff_client: Client, with_token: str
) -> None:
    anonymous = client.get(METRICS)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get(METRICS, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert staff_client.get(METRICS).status_code == 200
    # Another scheme (a proxy's Basic) is no bearer token: the session decides.
    assert staff_client.get(METRICS, headers={"Authorization": "Basic YTpi"}).status_code == 200
    client.force_login(User.objects.create_user("clerk", password="x"))
    assert client.get(METRICS).status_code == 403


@pytest.mark.django_db
def test_metrics__without_a_token_setting_no_bearer_is_accepted(client: Client) -> None:
    assert client.get(METRICS, headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get(METRICS, headers={"Authorization": "Bearer anything"}).status_code == 401


@pytest.mark.django_db
def test_metrics__waiting_and_running_jobs_and_workers(
    client: Client, make_job: JobMaker, with_token: str, django_assert_max_num_queries: Any
) -> None:
    make_job(queue="mail")
    make_job(queue="mail", schedule_in={"hours": 1})
    make_job("doing", queue="mail")
    make_job("failed", queue="reports")

    with django_assert_max_num_queries(14):
        response = client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"})

    values = samples(response)
    assert values[("pgjobs_database_up", ())] == 1
    assert values[("pgjobs_jobs", (("queue", "mail"), ("status", "todo")))] == 2
    assert values[("pgjobs_jobs", (("queue", "mail"), ("status", "doing")))] == 1
    assert values[("pgjobs_jobs_scheduled", (("queue", "mail"),))] == 1
    assert values[("pgjobs_oldest_waiting_seconds", (("queue", "mail"),))] >= 0
    assert values[("pgjobs_finished_jobs", (("status", "failed"),))] == 1
    assert values[("pgjobs_workers", (("state", "live"),))] == 1  # the one that fetched
    for state in ("enabled", "disabled", "broken"):
        assert values[("pgjobs_schedules", (("state", state),))] == 0
    assert values[("pgjobs_schedules_overdue_seconds", ())] == 0


@pytest.mark.django_db
def test_metrics__schedules_by_state_and_the_most_overdue(client: Client, with_token: str) -> None:
    on_time, late = make_schedule(), make_schedule(cron="30 4 * * *")
    make_schedule(enabled=False)
    broken = make_schedule()
    break_schedule(broken)
    broken_but_disabled = make_schedule(enabled=False)
    break_schedule(broken_but_disabled)
    # Due for 90 s and not yet taken, as when no worker serves the maintenance queue.
    Schedule.objects.filter(pk=late.pk).update(next_run_at=Now() - dt.timedelta(seconds=90))
    Schedule.objects.filter(pk=on_time.pk).update(next_run_at=Now() - dt.timedelta(seconds=5))

    values = samples(client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"}))

    assert values[("pgjobs_schedules", (("state", "enabled"),))] == 2
    assert values[("pgjobs_schedules", (("state", "disabled"),))] == 2
    assert values[("pgjobs_schedules", (("state", "broken"),))] == 1
    # At least the 90 s (plus the statements between); in seconds, not milliseconds.
    assert 90 <= values[("pgjobs_schedules_overdue_seconds", ())] < 3600


@pytest.mark.django_db
def test_metrics__one_sample_per_paused_queue_with_its_name_escaped(
    client: Client, with_token: str
) -> None:
    queue_pauses.pause("billing")
    queue_pauses.pause('odd "queue" \\ name')

    response = client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"})

    paused = {
        key: value for key, value in samples(response).items() if key[0] == "pgjobs_queue_paused"
    }
    assert paused == {
        ("pgjobs_queue_paused", (("queue", "billing"),)): 1,
        ("pgjobs_queue_paused", (("queue", 'odd "queue" \\ name'),)): 1,
    }
    assert 'pgjobs_queue_paused{queue="odd \\"queue\\" \\\\ name"} 1.0' in response.content.decode()
    queue_pauses.resume("billing")
    again = samples(client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"}))
    assert ("pgjobs_queue_paused", (("queue", "billing"),)) not in again


def test_metrics__histograms_and_failures_of_a_busy_queue(
    seeded_history: int, client: Client, with_token: str
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_events "
            "WHERE type = 'started' AND at >= now() - interval '300 seconds'"
        )
        (started,) = cursor.fetchone()

    values = samples(client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"}))

    waiting_counts = {
        labels: value
        for (name, labels), value in values.items()
        if name == "pgjobs_job_waiting_seconds_gcount"
    }
    assert sum(waiting_counts.values()) == started > 0
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in values.items()
        if name == "pgjobs_job_waiting_seconds_bucket" and dict(labels)["queue"] == "notifications"
    )
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative
    assert buckets[-1][1] == waiting_counts[(("queue", "notifications"),)]
    assert ("pgjobs_job_duration_seconds_gsum", (("queue", "notifications"),)) in values
    assert any(name == "pgjobs_failed_attempts" for name, _ in values)
    assert values[("pgjobs_jobs_estimated", (("queue", "reports"), ("status", "succeeded")))] > 0


@pytest.mark.django_db
def test_metrics__say_so_when_the_database_cannot_be_read(client: Client, with_token: str) -> None:
    with mock.patch.object(connection, "cursor", side_effect=OperationalError("down")):
        response = client.get(METRICS, headers={"Authorization": f"Bearer {TOKEN}"})

    assert samples(response) == {("pgjobs_database_up", ()): 0.0}


@pytest.mark.django_db
def test_metrics__openmetrics_when_asked(client: Client, with_token: str) -> None:
    response = client.get(
        METRICS,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")
