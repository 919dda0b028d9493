"""Results recorded by the worker middleware, seen through the API and the admin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from procrastinate.contrib.django.models import ProcrastinateJob

from example import services, tasks
from example.models import Notification, Report
from jobs.models import JobResult
from jobs.testing import WorkerProcess, wait_until
from jobs.tokens import issue_token
from tests.conftest import TEST_TASKS

pytestmark = pytest.mark.django_db(transaction=True)

StartWorker = Callable[..., WorkerProcess]


def status(client: Client, job_id: int, token: str, api: str = "/api") -> dict[str, Any]:
    response = client.get(f"{api}/jobs/{job_id}/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return dict(response.json())


@pytest.fixture
def token() -> str:
    _, raw = issue_token(name="t", tasks=["jobs.send_notification", "jobs.build_report"])
    return raw


def test_results__sync_and_async_successes(
    start_worker: StartWorker, client: Client, token: str
) -> None:
    worker = start_worker("--name", "results-worker")
    notification = services.queue_notification(recipient="a@example.com", subject="Hi")
    assert notification.job_id is not None
    report = Report.objects.create(
        title="All", period_start=notification.created_at, period_end=notification.created_at
    )
    report_job = tasks.build_report.defer(report_id=report.pk)

    for job_id in (notification.job_id, report_job):
        wait_until(lambda job_id=job_id: status(client, job_id, token)["status"] == "succeeded")  # type: ignore[misc]

    mail = status(client, notification.job_id, token)
    assert mail["result"] == {"notification_id": notification.pk, "recipient": "a@example.com"}
    assert mail["worker"] == "results-worker"
    assert mail["last_attempt"] == 1
    assert mail["error"] is None
    assert mail["started_at"] <= mail["finished_at"]
    assert mail["duration_seconds"] >= 0
    built = status(client, report_job, token)
    assert built["result"] == {"report_id": report.pk, "total": 0, "sent": 0}
    assert "Stopped" not in worker.output()


def test_results__failure_keeps_the_last_attempt_with_traceback(
    failing_mail_worker: Callable[[], WorkerProcess],
    client: Client,
    admin_client: Client,
    token: str,
) -> None:
    failing_mail_worker()
    notification = services.queue_notification(recipient="a@example.com", subject="Hi")
    job_id = notification.job_id
    assert job_id is not None

    final = wait_until(
        lambda: (s := status(client, job_id, token))["status"] == "failed" and s, timeout=60
    )

    assert final["last_attempt"] == 3
    assert final["result"] is None
    assert final["error"]["type"] == "builtins.ConnectionRefusedError"
    assert "Connection refused" in final["error"]["message"]
    assert "traceback" not in final["error"]  # the server's code is for the site's users
    traced = admin_client.get(f"/api/jobs/{job_id}/").json()["error"]["traceback"]
    assert "Traceback (most recent call last)" in traced
    assert "smtplib" in traced


def test_results__progress_while_running_then_abort(
    start_worker: StartWorker, admin_client: Client, tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file

    start_worker("--abort-job-polling-interval", "0.1", **TEST_TASKS)
    job_id = wait_for_file.defer(path=str(tmp_path / "never"))

    def job() -> dict[str, Any]:
        return dict(admin_client.get(f"/api/jobs/{job_id}/").json())

    running = wait_until(lambda: (current := job())["progress"] and current)
    assert running["status"] == "doing"
    assert running["progress"] == {"fraction": 0.5, "message": "waiting for the file"}

    response = admin_client.post(f"/api/jobs/{job_id}/abort/")
    assert response.status_code == 202
    assert response.json()["action"] == "abort_requested"

    aborted = wait_until(lambda: (current := job())["status"] == "aborted" and current)
    assert aborted["error"]["type"] == "procrastinate.exceptions.JobAborted"


def test_results__retry_a_failed_job_over_the_api(
    run_worker: Callable[..., Any], client: Client, token: str
) -> None:
    job_id = tasks.send_notification.defer(notification_id=424242)  # no such row: fails
    run_worker()
    assert status(client, job_id, token)["status"] == "failed"
    assert status(client, job_id, token)["error"]["type"].endswith("DoesNotExist")

    response = client.post(
        f"/api/async/jobs/{job_id}/retry/", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"

    Notification.objects.create(id=424242, recipient="late@example.com", subject="Now it exists")
    run_worker(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")

    final = status(client, job_id, token)
    assert final["status"] == "succeeded"
    assert final["last_attempt"] == 2
    assert final["error"] is None


def test_results__unserializable_return_value_is_stored_as_repr(
    run_worker: Callable[..., Any],
) -> None:
    from tests.slow_tasks import return_unserializable

    job_id = return_unserializable.defer()
    run_worker(**TEST_TASKS)

    result = JobResult.objects.get(job_id=job_id)
    assert result.status == JobResult.Status.SUCCEEDED
    assert result.return_value == {"unserializable": "{1, 2, 3}"}


def test_results__shown_on_the_admin_job_page(
    run_worker: Callable[..., Any], admin_client: Client
) -> None:
    job_id = tasks.send_notification.defer(notification_id=31337)
    run_worker()

    page = admin_client.get(f"/admin/procrastinate/procrastinatejob/{job_id}/change/")

    assert page.status_code == 200
    assert b"DoesNotExist" in page.content
    assert b"Traceback" in page.content
    assert b"(attempt 1, worker " in page.content


def test_results__deleted_with_their_job_by_procrastinate(run_worker: Callable[..., Any]) -> None:
    from procrastinate.contrib.django import app

    job_id = tasks.delete_sent_notifications.defer(older_than_days=1)
    run_worker()
    assert JobResult.objects.filter(job_id=job_id).exists()

    async_to_sync(app.job_manager.delete_old_jobs)(nb_hours=0, include_failed=True)

    assert not ProcrastinateJob.objects.filter(id=job_id).exists()
    assert not JobResult.objects.filter(job_id=job_id).exists()


def test_results__a_running_attempt_before_its_row_and_after_a_failed_one(
    start_worker: StartWorker, admin_client: Client, tmp_path: Path
) -> None:
    """Short attempts write their row only at the end: the API reads the running one from
    procrastinate's events, and an earlier attempt's error is not shown as the current."""
    from tests.slow_tasks import wait_quietly

    # A running attempt never gets its own row before it ends in this test.
    start_worker("--name", "slow-row", JOBS_RESULT_RUNNING_AFTER_MS="600000", **TEST_TASKS)
    path, give_up = tmp_path / "file", tmp_path / "give-up"
    # Each attempt ends when the test says so: by `give_up` (a failure) or `path`.
    job_id = wait_quietly.defer(path=str(path), give_up=str(give_up), timeout=600)

    def job() -> dict[str, Any]:
        return dict(admin_client.get(f"/api/jobs/{job_id}/").json())

    first = wait_until(lambda: (current := job())["status"] == "doing" and current)
    assert first["last_attempt"] == 1
    assert first["started_at"] is not None
    assert first["worker"] is None
    assert first["error"] is None
    assert not JobResult.objects.filter(job_id=job_id).exists()

    give_up.touch()
    failed = wait_until(lambda: (current := job())["status"] == "failed" and current)
    assert failed["error"]["type"] == "builtins.TimeoutError"
    assert failed["worker"] == "slow-row"
    assert failed["last_attempt"] == 1
    admin_page = f"/admin/procrastinate/procrastinatejob/{job_id}/change/"
    assert b"failed (attempt 1" in admin_client.get(admin_page).content

    give_up.unlink()
    assert admin_client.post(f"/api/jobs/{job_id}/retry/").status_code == 200
    second = wait_until(lambda: (current := job())["status"] == "doing" and current)
    assert second["last_attempt"] == 2
    assert second["error"] is None
    assert second["started_at"] > failed["started_at"]
    assert JobResult.objects.get(job_id=job_id).status == JobResult.Status.FAILED
    assert b"failed (attempt 1" not in admin_client.get(admin_page).content

    path.touch()
    done = wait_until(lambda: (current := job())["status"] == "succeeded" and current)
    assert done["last_attempt"] == 2
    assert done["result"] == {"found": str(path)}
    assert done["error"] is None


@pytest.mark.parametrize("after_ms", ["0", "300"])
def test_results__a_long_attempt_gets_its_running_row(
    start_worker: StartWorker, admin_client: Client, tmp_path: Path, after_ms: str
) -> None:
    from tests.slow_tasks import wait_quietly

    start_worker("--name", "long-row", JOBS_RESULT_RUNNING_AFTER_MS=after_ms, **TEST_TASKS)
    path = tmp_path / "file"
    job_id = wait_quietly.defer(path=str(path), timeout=30)

    row = wait_until(lambda: JobResult.objects.filter(job_id=job_id).first())
    assert row.status == JobResult.Status.RUNNING
    assert (row.attempt, row.worker_name, row.finished_at) == (1, "long-row", None)
    running = admin_client.get(f"/api/jobs/{job_id}/").json()
    assert (running["status"], running["worker"]) == ("doing", "long-row")

    path.touch()
    wait_until(lambda: JobResult.objects.get(job_id=job_id).status == JobResult.Status.SUCCEEDED)
    row.refresh_from_db()
    assert row.finished_at is not None
    assert row.return_value == {"found": str(path)}


def test_results__progress_writes_the_running_row_and_outlives_the_end(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file

    start_worker("--name", "progress", JOBS_RESULT_RUNNING_AFTER_MS="600000", **TEST_TASKS)
    path = tmp_path / "file"
    job_id = wait_for_file.defer(path=str(path))

    running = wait_until(lambda: JobResult.objects.filter(job_id=job_id).first())
    assert (running.status, running.progress, running.progress_message) == (
        JobResult.Status.RUNNING, 0.5, "waiting for the file",
    )  # fmt: skip
    assert running.worker_name == "progress"

    path.touch()
    wait_until(lambda: JobResult.objects.get(job_id=job_id).status == JobResult.Status.SUCCEEDED)
    running.refresh_from_db()
    assert (running.progress, running.progress_message) == (1.0, "done")
    assert running.finished_at is not None


def test_results__a_return_value_too_large_to_keep_is_described(
    run_worker: Callable[..., Any],
) -> None:
    from jobs.results import RETURN_VALUE_LIMIT
    from tests.slow_tasks import return_large

    kept = return_large.defer(characters=100)
    dropped = return_large.defer(characters=RETURN_VALUE_LIMIT)
    run_worker(**TEST_TASKS)

    assert JobResult.objects.get(job_id=kept).return_value == "x" * 100
    too_large = JobResult.objects.get(job_id=dropped)
    assert too_large.status == JobResult.Status.SUCCEEDED
    assert isinstance(too_large.return_value, dict)
    assert "the limit is 1,000,000" in too_large.return_value["too_large"]


def test_results__an_aborted_async_job_is_recorded_as_aborted(
    start_worker: StartWorker, admin_client: Client
) -> None:
    from tests.slow_tasks import sleep_async

    start_worker("--abort-job-polling-interval", "0.1", **TEST_TASKS)
    job_id = sleep_async.defer(seconds=60)
    wait_until(lambda: ProcrastinateJob.objects.get(id=job_id).status == "doing")

    assert admin_client.post(f"/api/jobs/{job_id}/abort/").status_code == 202

    result = wait_until(
        lambda: JobResult.objects.filter(job_id=job_id).exclude(status="running").first()
    )
    assert result.status == JobResult.Status.ABORTED
    assert result.exception_type == "asyncio.exceptions.CancelledError"
    assert ProcrastinateJob.objects.get(id=job_id).status == "aborted"
