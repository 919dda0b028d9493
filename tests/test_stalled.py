"""A worker killed with SIGKILL mid-job: the job is recovered and finishes elsewhere, once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from jobs.models import JobResult
from jobs.testing import WorkerProcess, wait_until
from tests.conftest import TEST_TASKS

pytestmark = pytest.mark.django_db(transaction=True)


def kill_mid_job(start_worker: Callable[..., WorkerProcess], task: Any, path: Path) -> int:
    doomed = start_worker("--queues", "tests", "--name", "doomed", **TEST_TASKS)
    job_id = int(task.defer(path=str(path)))
    wait_until(lambda: ProcrastinateJob.objects.filter(id=job_id, status="doing").exists())
    doomed.stop(signal.SIGKILL)
    assert ProcrastinateJob.objects.get(id=job_id).status == "doing"
    return job_id


def recover(stalled_after: int = 1) -> str:
    time.sleep(stalled_after + 0.5)  # let the dead worker's heartbeat age
    out = StringIO()
    call_command("recover_stalled_jobs", "--stalled-after", str(stalled_after), stdout=out)
    return out.getvalue()


def test_stalled__job_of_a_killed_worker_finishes_once_on_another(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file

    flag = tmp_path / "go"
    job_id = kill_mid_job(start_worker, wait_for_file, flag)
    start_worker(
        "--queues",
        "tests",
        "--name",
        "survivor",
        "--fetch-job-polling-interval",
        "0.2",
        **TEST_TASKS,
    )
    flag.touch()

    dry = StringIO()
    call_command("recover_stalled_jobs", "--stalled-after", "1", "--dry-run", stdout=dry)
    output = recover()

    assert f"job {job_id} (tests.wait_for_file): retried" in output
    wait_until(lambda: ProcrastinateJob.objects.get(id=job_id).status == "succeeded")
    events = list(ProcrastinateEvent.objects.filter(job_id=job_id).values_list("type", flat=True))
    assert events.count("started") == 2
    assert events.count("succeeded") == 1
    result = JobResult.objects.get(job_id=job_id)
    assert (result.status, result.worker_name, result.attempt) == ("succeeded", "survivor", 2)


def test_stalled__task_without_retry_is_failed(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.slow_tasks import wait_for_file_once

    job_id = kill_mid_job(start_worker, wait_for_file_once, tmp_path / "never")

    output = recover()

    assert f"job {job_id} (tests.wait_for_file_once): failed" in output
    assert ProcrastinateJob.objects.get(id=job_id).status == "failed"


def test_recover_stalled_jobs__nothing_stalled_is_harmless() -> None:
    out = StringIO()
    call_command("recover_stalled_jobs", stdout=out)
    assert "Recovered 0 stalled job(s)" in out.getvalue()
