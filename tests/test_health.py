"""The health endpoint (jobs/health.py): what load balancers and compose's healthcheck see."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.test import Client, RequestFactory
from procrastinate.contrib.django import app

from jobs import health, queue_pauses
from jobs.models import PausedQueue
from jobs.testing import WorkerProcess
from tests.schedule_rows import GONE, break_schedule, make_schedule

HEALTH = "/health/"


@pytest.fixture
def live_worker(db: None) -> int:
    """A worker row with a fresh heartbeat, registered through procrastinate's API."""
    return int(async_to_sync(app.job_manager.register_worker)())


def stale(worker_id: int) -> None:
    with connection.cursor() as cursor:
        # Test setup: age the heartbeat (procrastinate only ever sets it to now()).
        cursor.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '10 minutes' "
            "WHERE id = %s",
            [worker_id],
        )


@pytest.mark.django_db
def test_health__anonymous_gets_the_status_only(
    client: Client, live_worker: int, django_assert_max_num_queries: Any
) -> None:
    # The statement timeout, migrations, workers, schedules, paused queues, and the savepoint
    # around them.
    with django_assert_max_num_queries(7):
        response = client.get(HEALTH)

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_health__ok_with_database_migrations_and_a_live_worker(
    staff_client: Client, live_worker: int
) -> None:
    response = staff_client.get(HEALTH)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failed"] == []
    assert body["warnings"] == []
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["migrations"] == {"ok": True, "missing": []}
    assert body["checks"]["workers"]["live"] == 1
    assert body["checks"]["workers"]["newest_heartbeat_age_seconds"] < 60
    assert body["checks"]["schedules"] == {"ok": True, "broken": 0, "missing_tasks": []}


@pytest.mark.django_db
def test_health__503_without_a_live_worker(staff_client: Client, live_worker: int) -> None:
    stale(live_worker)

    response = staff_client.get(HEALTH)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["failed"] == ["workers"]
    assert body["checks"]["workers"]["live"] == 0
    assert body["checks"]["workers"]["newest_heartbeat_age_seconds"] >= 600


@pytest.mark.django_db
def test_health__503_with_no_worker_at_all(staff_client: Client) -> None:
    body = staff_client.get(HEALTH).json()

    assert body["failed"] == ["workers"]
    assert body["checks"]["workers"]["newest_heartbeat_age_seconds"] is None


@pytest.mark.django_db
def test_health__can_skip_the_workers(staff_client: Client) -> None:
    response = staff_client.get(HEALTH, {"skip": "workers"})

    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "migrations", "schedules", "queues"}


@pytest.mark.django_db
def test_health__a_broken_schedule_is_a_warning_not_a_failure(
    client: Client, staff_client: Client, live_worker: int
) -> None:
    make_schedule()  # healthy
    broken = make_schedule()
    break_schedule(broken)
    broken_but_disabled = make_schedule(enabled=False)
    break_schedule(broken_but_disabled)

    response = staff_client.get(HEALTH)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failed"] == []
    assert body["warnings"] == ["schedules"]
    assert body["checks"]["schedules"] == {"ok": True, "broken": 1, "missing_tasks": [GONE]}
    assert client.get(HEALTH).json() == {"status": "ok"}


@pytest.mark.django_db
def test_health__healthy_schedules_warn_of_nothing(staff_client: Client, live_worker: int) -> None:
    make_schedule()
    make_schedule(enabled=False)

    body = staff_client.get(HEALTH).json()

    assert body["warnings"] == []
    assert body["checks"]["schedules"] == {"ok": True, "broken": 0, "missing_tasks": []}


@pytest.mark.django_db
def test_health__can_skip_the_schedules(staff_client: Client, live_worker: int) -> None:
    response = staff_client.get(HEALTH, {"skip": "schedules,workers,queues"})

    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "migrations"}


@pytest.mark.django_db
def test_health__a_paused_queue_is_information_not_a_failure(
    client: Client, staff_client: Client, live_worker: int
) -> None:
    queue_pauses.pause("billing", by="alice", reason="provider down")

    response = staff_client.get(HEALTH)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failed"] == []
    assert body["warnings"] == []
    since = PausedQueue.objects.get().paused_at.isoformat()
    assert body["checks"]["queues"] == {
        "ok": True,
        "paused": [{"queue": "billing", "since": since, "by": "alice", "reason": "provider down"}],
    }
    assert client.get(HEALTH).json() == {"status": "ok"}


@pytest.mark.django_db
def test_health__no_paused_queue(staff_client: Client, live_worker: int) -> None:
    assert staff_client.get(HEALTH).json()["checks"]["queues"] == {"ok": True, "paused": []}


@pytest.mark.django_db
def test_health__503_when_a_migration_is_missing(
    staff_client: Client, live_worker: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_disk = health.migrations_on_disk()
    monkeypatch.setattr(
        health,
        "migrations_on_disk",
        lambda: {**on_disk, "jobs": on_disk["jobs"] | {"9999_from_the_next_deploy"}},
    )

    response = staff_client.get(HEALTH)

    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == {
        "ok": False,
        "missing": ["jobs.9999_from_the_next_deploy"],
    }


@pytest.mark.django_db
def test_health__a_pending_procrastinate_post_migration_is_reported_not_failed(
    staff_client: Client, live_worker: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # procrastinate's upgrade runs the new code before its "post" migrations.
    on_disk = health.migrations_on_disk()
    monkeypatch.setattr(
        health,
        "migrations_on_disk",
        lambda: {**on_disk, "procrastinate": on_disk["procrastinate"] | {"0099_post_cleanup"}},
    )

    response = staff_client.get(HEALTH)

    assert response.status_code == 200
    assert response.json()["checks"]["migrations"] == {
        "ok": True,
        "missing": [],
        "pending_post_migrations": ["procrastinate.0099_post_cleanup"],
    }


def test_migrations_on_disk__lists_both_apps() -> None:
    on_disk = health.migrations_on_disk()

    assert "0041_post_retry_failed_job" in on_disk["procrastinate"]
    assert "0004_admin_indexes" in on_disk["jobs"]
    assert "__init__" not in on_disk["jobs"]


UNREACHABLE = 'connection to server at "db.internal", port 5432 failed: user "app"'


@pytest.mark.django_db
def test_health__anonymous_gets_no_database_error(client: Client) -> None:
    with mock.patch.object(connection, "cursor", side_effect=OperationalError(UNREACHABLE)):
        response = client.get(HEALTH)

    assert response.status_code == 503
    assert response.json() == {"status": "fail"}
    assert b"db.internal" not in response.content


@pytest.mark.django_db
def test_health__a_user_who_is_not_staff_gets_the_status_only(
    client: Client, django_user_model: Any
) -> None:
    client.force_login(django_user_model.objects.create_user("visitor", password="pw"))

    response = client.get(HEALTH)  # no worker: the workers check fails

    assert response.status_code == 503
    assert response.json() == {"status": "fail"}


@pytest.mark.django_db
def test_health__staff_see_why_the_database_is_unreachable(staff_user: User) -> None:
    request = RequestFactory().get(HEALTH)
    request.user = staff_user  # what the auth middleware set before the database went away
    with mock.patch.object(connection, "cursor", side_effect=OperationalError(UNREACHABLE)):
        response = health.health(request)

    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["status"] == "fail"
    assert body["failed"] == ["database", "migrations", "workers", "schedules", "queues"]
    assert UNREACHABLE in body["checks"]["database"]["error"]


@pytest.mark.django_db
def test_health__a_session_cookie_while_the_database_is_down_gets_the_status(
    staff_client: Client,
) -> None:
    # Reading the session and its user fails too: the answer is the status, not a 500.
    with mock.patch.object(connection, "cursor", side_effect=OperationalError(UNREACHABLE)):
        response = staff_client.get(HEALTH)

    assert response.status_code == 503
    assert response.json() == {"status": "fail"}


def test_health__served_by_uvicorn_with_a_real_worker(
    start_worker: Callable[..., WorkerProcess], site_server: Callable[..., str]
) -> None:
    url = site_server() + HEALTH
    with pytest.raises(urllib.error.HTTPError) as no_worker:
        urllib.request.urlopen(url, timeout=10)
    assert no_worker.value.code == 503
    no_worker.value.close()

    start_worker()

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
