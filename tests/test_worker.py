"""A real `manage.py procrastinate worker` process running real jobs."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from example import services, tasks
from example.models import Notification, Report
from jobs.testing import WorkerProcess, wait_until
from tests.conftest import TEST_TASKS
from tests.slow_tasks import quick

pytestmark = pytest.mark.django_db(transaction=True)

StartWorker = Callable[..., WorkerProcess]


def wait_for_status(job_id: int, statuses: set[str], timeout: float = 30) -> ProcrastinateJob:
    deadline = time.monotonic() + timeout
    while True:
        job = ProcrastinateJob.objects.get(id=job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status}, expected {statuses}")
        time.sleep(0.02)


def test_worker__runs_sync_and_async_jobs_to_success(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp_path),
    )
    notification = services.queue_notification(
        recipient="grace@example.com", subject="Your export is ready", body="Download it."
    )
    assert notification.job_id is not None
    now = timezone.now()
    report = Report.objects.create(
        title="Last hour", period_start=now - dt.timedelta(hours=1), period_end=now
    )
    report_job = tasks.build_report.defer(report_id=report.pk)

    assert wait_for_status(notification.job_id, {"succeeded", "failed"}).status == "succeeded"
    assert wait_for_status(report_job, {"succeeded", "failed"}).status == "succeeded"

    notification.refresh_from_db()
    assert notification.sent_at is not None
    mail = "".join(path.read_text() for path in tmp_path.iterdir())
    assert "Subject: Your export is ready" in mail
    assert "grace@example.com" in mail
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    assert (report.notifications_total, report.notifications_sent) == (1, 1)


def sessions_since(since: dt.datetime) -> list[dict[str, Any]]:
    """The client sessions of the test database opened at or after `since` (the test's own
    excepted): those of a worker started after that moment."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, query, state, query_start, state_change FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND backend_start >= %s",
            [since],
        )
        columns = [column.name for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def waiting_for_a_wake_up(since: dt.datetime, *, listens: bool) -> bool:
    """Whether the worker whose sessions were opened after `since` is idle, waiting for a
    NOTIFY (or its next poll): every session idle, and the fetch it makes once its LISTEN
    is up (jobs/connector.py wakes it then) over.

    That fetch shows in pg_stat_activity as a fetch that started after LISTEN ended on the
    listening session. A fetch already under way then (the worker's first) may swallow that
    wake-up instead; the worker's next heartbeat, started after LISTEN ended too, shows that
    it is over. (A worker that does not listen only makes its first fetch.)
    """
    sessions = sessions_since(since)
    listening = [s for s in sessions if s["query"].upper().startswith("LISTEN ")]
    others = [s for s in sessions if s not in listening]
    if listens and len(listening) != 1:
        return False
    listened_at = listening[0]["state_change"] if listening else since
    return all(s["state"] == "idle" for s in sessions) and any(
        ("procrastinate_fetch_job" in s["query"] or "procrastinate_update_heartbeat" in s["query"])
        and s["query_start"] > listened_at
        for s in others
    )


def database_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_worker__listen_notify_picks_up_a_job_without_polling(start_worker: StartWorker) -> None:
    """Two idle workers, polling every 100 s, one listening and one not: a job for each is
    deferred, and only LISTEN/NOTIFY can explain a pickup before the next poll."""
    # Heartbeats every 1.25 s: one follows the fetch made once LISTEN is up, if a fetch
    # under way then swallowed that wake-up (see waiting_for_a_wake_up).
    beating = {"JOBS_STALLED_WORKER_SECONDS": "5", **TEST_TASKS}
    started = database_now()
    start_worker(
        "--queues", "polled", "--fetch-job-polling-interval", "100", "--no-listen-notify",
        **beating,
    )  # fmt: skip
    wait_until(lambda: waiting_for_a_wake_up(started, listens=False), what="the poller idle")
    started = database_now()
    start_worker("--queues", "tests", "--fetch-job-polling-interval", "100", **beating)
    # Not merely listening: its fetch after LISTEN came up would find a job deferred now.
    wait_until(lambda: waiting_for_a_wake_up(started, listens=True), what="the listener idle")

    polled = quick.configure(queue="polled").defer(n=1)
    notified = quick.defer(n=2)

    # Well before either worker's next poll (100 s after its last fetch).
    wait_until(
        lambda: ProcrastinateJob.objects.get(id=notified).status == "succeeded",
        what="the notified job succeeded",
    )
    # Deferred first, to a worker just as idle but not listening: still waiting.
    assert ProcrastinateJob.objects.get(id=polled).status == "todo"


def test_worker__listens_on_every_queue_including_builtin(start_worker: StartWorker) -> None:
    worker = start_worker()
    assert "on all queues" in worker.output()
    from procrastinate.contrib.django import app

    builtin_job = app.configure_task("procrastinate.builtin_tasks.remove_old_jobs").defer(
        max_hours=24
    )
    maintenance_job = tasks.delete_sent_notifications.defer(older_than_days=1)

    assert ProcrastinateJob.objects.get(id=builtin_job).queue_name == "builtin"
    assert wait_for_status(builtin_job, {"succeeded", "failed"}).status == "succeeded"
    assert wait_for_status(maintenance_job, {"succeeded", "failed"}).status == "succeeded"


def test_worker__failing_task_is_retried_then_fails_with_events(
    failing_mail_worker: Callable[[], WorkerProcess],
) -> None:
    failing_mail_worker()
    notification = services.queue_notification(recipient="lin@example.com", subject="Hi")
    assert notification.job_id is not None

    job = wait_for_status(notification.job_id, {"failed", "succeeded"}, timeout=60)

    assert job.status == "failed"
    assert job.attempts == 3  # the first run and the policy's two retries
    events = list(
        ProcrastinateEvent.objects.filter(job_id=job.id)
        .order_by("at", "id")
        .values_list("type", flat=True)
    )
    assert events.count("started") == 3
    assert events.count("deferred_for_retry") == 2
    assert events[0] == "deferred"
    assert events[-1] == "failed"
    notification.refresh_from_db()
    assert notification.sent_at is None


def test_worker__stops_cleanly_on_sigterm(start_worker: StartWorker) -> None:
    worker = start_worker()

    code = worker.stop(signal.SIGTERM, timeout=15)

    assert code == 0
    assert "Stop requested" in worker.output()
    assert "Stopped worker" in worker.output()
    assert "Traceback" not in worker.output()


def test_run_worker_fixture__drains_the_queue(run_worker: Callable[..., object]) -> None:
    notification = Notification.objects.create(recipient="a@example.com", subject="Hello")
    job_id = tasks.send_notification.defer(notification_id=notification.pk)

    run_worker(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")

    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"
    notification.refresh_from_db()
    assert notification.sent_at is not None
