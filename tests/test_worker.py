"""A real `manage.py procrastinate worker` process running real jobs."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from example import services, tasks
from example.models import Notification, Report
from jobs.testing import WorkerProcess

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


def test_worker__listen_notify_picks_up_a_job_without_polling(start_worker: StartWorker) -> None:
    # Polling every 100 s: only a NOTIFY can explain a pickup within a second.
    start_worker("--fetch-job-polling-interval", "100")

    # After the worker's first (empty) fetch, so that polling cannot be what finds it.
    time.sleep(0.5)
    deferred_at = time.monotonic()
    job_id = tasks.delete_sent_notifications.defer(older_than_days=30)
    job = wait_for_status(job_id, {"succeeded"}, timeout=5)
    picked_up_in = time.monotonic() - deferred_at

    assert job.status == "succeeded"
    assert picked_up_in < 1.0


def test_worker__without_listen_notify_waits_for_the_poll(start_worker: StartWorker) -> None:
    """The counterpart of the test above: it shows the pickup really came from NOTIFY."""
    start_worker("--fetch-job-polling-interval", "100", "--no-listen-notify")
    time.sleep(0.5)

    job_id = tasks.delete_sent_notifications.defer(older_than_days=30)
    time.sleep(1.5)

    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


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
