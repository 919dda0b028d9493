"""Results recorded by the worker middleware, seen through the API and the admin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import Client
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from example import services, tasks
from example.models import Notification, Report
from jobs.job_status import aended_attempts, ended_attempts
from jobs.models import JobResult
from jobs.results import ATTEMPTS_LOG_LIMIT, UPSERT_SQL, upsert_parameters
from jobs.testing import WorkerProcess, wait_until
from jobs.tokens import issue_token
from tests.conftest import TEST_TASKS, JobMaker

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


def test_results__an_error_message_postgresql_cannot_hold_is_recorded_all_the_same(
    run_worker: Callable[..., Any],
) -> None:
    from tests.slow_tasks import fail_with_unstorable_message

    job_id = fail_with_unstorable_message.defer()
    run_worker(**TEST_TASKS)

    result = JobResult.objects.get(job_id=job_id)
    assert result.status == JobResult.Status.FAILED
    assert result.exception_message == "bad byte \ufffd and half a pair ?"
    assert "ValueError" in result.traceback
    (entry,) = result.attempts_log
    assert entry["error"]["message"] == result.exception_message


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


# --- Every attempt kept: JobResult.attempts_log -----------------------------------------


def test_results__every_attempt_is_logged_with_its_error_and_worker(
    start_worker: StartWorker,
) -> None:
    from procrastinate.contrib.django.models import ProcrastinateWorker

    from tests.slow_tasks import fail_twice

    start_worker("--name", "thrice", **TEST_TASKS)
    job_id = fail_twice.defer()
    wait_until(lambda: ProcrastinateJob.objects.get(id=job_id).status == "succeeded")
    worker_ids = set(ProcrastinateWorker.objects.values_list("id", flat=True))

    log = JobResult.objects.get(job_id=job_id).attempts_log

    assert [(e["attempt"], e["status"]) for e in log] == [
        (1, "failed"), (2, "failed"), (3, "succeeded"),
    ]  # fmt: skip
    for n, entry in enumerate(log[:2], start=1):
        assert entry["error"]["type"] == "builtins.ValueError"
        assert entry["error"]["message"] == f"attempt {n} failed, as asked"
        assert "Traceback (most recent call last)" in entry["error"]["traceback"]
    assert log[2]["error"] is None
    assert {e["worker_name"] for e in log} == {"thrice"}
    assert {e["worker_id"] for e in log} <= worker_ids
    assert len({e["worker_id"] for e in log}) == 1
    assert JobResult.objects.get(job_id=job_id).worker_id in worker_ids
    times = [(e["started_at"], e["finished_at"]) for e in log]
    assert all(started <= finished for started, finished in times)
    assert [started for started, _ in times] == sorted(started for started, _ in times)
    # What the job system's other readers (the django.tasks backend) read.
    assert ended_attempts(job_id) == log
    assert async_to_sync(aended_attempts)(job_id) == log
    assert ended_attempts(job_id + 1000) == []


def test_results__the_api_lists_every_attempt(
    run_worker: Callable[..., Any], client: Client, admin_client: Client
) -> None:
    from django.contrib.auth.models import Permission, User

    from tests.slow_tasks import fail_twice

    reader = User.objects.create_user("reader", password="pw")  # not staff: no tracebacks
    reader.user_permissions.add(Permission.objects.get(codename="view_job_status"))
    client.force_login(reader)
    job_id = fail_twice.defer()
    run_worker(**TEST_TASKS)

    answer = client.get(f"/api/jobs/{job_id}/").json()

    assert answer["status"] == "succeeded"
    assert answer["result"] == {"attempt": 3}
    logged = answer["attempts_log"]
    assert [(e["attempt"], e["status"]) for e in logged] == [
        (1, "failed"), (2, "failed"), (3, "succeeded"),
    ]  # fmt: skip
    assert logged[1]["error"] == {
        "type": "builtins.ValueError",
        "message": "attempt 2 failed, as asked",
    }  # no traceback, as for the last error
    assert all(isinstance(e["worker_id"], int) and e["worker_name"] for e in logged)
    assert all(e["started_at"] <= e["finished_at"] for e in logged)
    staff = admin_client.get(f"/api/async/jobs/{job_id}/").json()["attempts_log"]
    assert "Traceback (most recent call last)" in staff[0]["error"]["traceback"]
    assert staff[2]["error"] is None


def test_results__the_admin_job_page_shows_every_attempt(
    run_worker: Callable[..., Any], admin_client: Client
) -> None:
    from tests.slow_tasks import fail_twice

    job_id = fail_twice.defer()
    run_worker("--name", "page-worker", **TEST_TASKS)

    page = admin_client.get(f"/admin/procrastinate/procrastinatejob/{job_id}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    table = html[html.index('<table class="jobs-attempts">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 4  # the heading and three attempts
    assert "attempt 1 failed, as asked" in table
    assert "attempt 2 failed, as asked" in table
    assert table.count("builtins.ValueError") == 2
    assert table.count("page-worker (#") == 3
    assert 'jobs-status-succeeded">succeeded' in table


def _outcome(job_id: int, **fields: Any) -> dict[str, Any]:
    return upsert_parameters(
        job_id=job_id,
        task_name="jobs.send_notification",
        started_at=timezone.now(),
        worker_name="w",
        finished_at=timezone.now(),
        **fields,
    )


def _upsert(row: dict[str, Any]) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(UPSERT_SQL, row)
    [job_id] = row["result_job_id"]  # one job's row: each parameter an array of one
    return list(JobResult.objects.get(job_id=job_id).attempts_log)


def test_results__an_outcome_written_twice_is_logged_once(make_job: JobMaker) -> None:
    job_id = make_job("doing")  # started once: attempt 1
    failed = _outcome(job_id, status="failed", exception_type="builtins.OSError")

    _upsert(_outcome(job_id, status="running"))
    first = _upsert(failed)
    # The same statement again, as after a reply lost once the server had committed it.
    again = _upsert(failed)
    late_running = _upsert(_outcome(job_id, status="running"))

    assert [(e["attempt"], e["status"]) for e in first] == [(1, "failed")]
    assert again == first
    assert late_running == first


def test_results__a_lost_attempt_is_replaced_by_its_late_workers_outcome(
    make_job: JobMaker,
) -> None:
    job_id = make_job("doing")
    lost = _upsert(
        _outcome(job_id, status="failed", ended_as="lost", exception_type="jobs.stalled.WorkerLost")
    )
    ended = _upsert(_outcome(job_id, status="succeeded", return_value="1"))

    assert [(e["attempt"], e["status"]) for e in lost] == [(1, "lost")]
    assert [(e["attempt"], e["status"], e["error"]) for e in ended] == [(1, "succeeded", None)]


def test_results__the_log_keeps_the_newest_attempts(make_job: JobMaker) -> None:
    job_id = make_job("doing")
    manager = app.job_manager
    worker_id = make_job.worker_id
    assert worker_id is not None
    log: list[dict[str, Any]] = []
    for attempt in range(1, ATTEMPTS_LOG_LIMIT + 4):
        if attempt > 1:  # put back in the queue and taken again: one more "started" event
            manager.retry_job_by_id(job_id, retry_at=timezone.now())
            fetched = async_to_sync(manager.fetch_job)(queues=None, worker_id=worker_id)
            assert fetched is not None
            assert fetched.id == job_id
        log = _upsert(_outcome(job_id, status="failed", exception_type="builtins.OSError"))

    assert len(log) == ATTEMPTS_LOG_LIMIT
    assert [e["attempt"] for e in log] == list(range(4, ATTEMPTS_LOG_LIMIT + 4))
