"""Batches and chains (jobs/workflows.py) run by real workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import workflows
from jobs.models import Batch
from tests import workflow_tasks as wt

pytestmark = pytest.mark.django_db(transaction=True)


def callback_jobs(batch: Batch, task_name: str = "tests.wf.callback") -> list[ProcrastinateJob]:
    return list(
        ProcrastinateJob.objects.filter(task_name=task_name, args__batch__id=batch.pk).order_by(
            "id"
        )
    )


def test_defer_batch__success_runs_on_success_and_on_finish_once(
    run_worker: Callable[..., Any],
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(5)],
        on_success=workflows.job(wt.callback, tag="success"),
        on_finish=workflows.job(wt.callback, tag="finish"),
        on_failure=workflows.job(wt.callback, tag="failure"),
        description="five doubles",
        properties={"import_id": 7},
    )
    assert (batch.total, batch.pending) == (5, 5)

    run_worker()

    batch.refresh_from_db()
    assert (batch.pending, batch.succeeded, batch.failed) == (0, 5, 0)
    assert batch.finished_at is not None
    tags = sorted(job.args["tag"] for job in callback_jobs(batch))
    assert tags == ["finish", "success"]
    (job,) = [job for job in callback_jobs(batch) if job.args["tag"] == "success"]
    assert job.status == "succeeded"
    assert job.args["batch"]["properties"] == {"import_id": 7}
    status = workflows.batch_status(batch.pk)
    assert status is not None
    assert status["status"] == "succeeded"
    assert sorted(j["return_value"] for j in status["jobs"]["results"]) == [0, 2, 4, 6, 8]


def test_defer_chain__passes_results_on(run_worker: Callable[..., Any]) -> None:
    batch = workflows.defer_chain(
        [
            workflows.job(wt.add, n=1),
            workflows.job(wt.add, n=10).result_as("previous"),
            workflows.job(wt.django_asquare, n=2).result_as("previous"),
        ],
        on_success=workflows.job(wt.callback, tag="chain"),
    )
    run_worker()
    status = workflows.batch_status(batch.pk)
    assert status is not None
    assert [j["return_value"] for j in status["jobs"]["results"]] == [1, 11, 15]
    assert status["status"] == "succeeded"
    assert len(callback_jobs(batch)) == 1


def test_defer_batch__failure_and_fan_out(run_worker: Callable[..., Any]) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.fail, n=1), workflows.job(wt.fan_out, count=3)],
        on_success=workflows.job(wt.callback, tag="success"),
        on_finish=workflows.job(wt.callback, tag="finish"),
        on_failure=workflows.job(wt.callback, tag="failure"),
    )
    run_worker()
    batch.refresh_from_db()
    assert (batch.total, batch.succeeded, batch.failed, batch.pending) == (5, 4, 1, 0)
    assert sorted(job.args["tag"] for job in callback_jobs(batch)) == ["failure", "finish"]
