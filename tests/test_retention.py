"""Retention removes only finished jobs older than their status's limit, with their
events and results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from example import tasks
from jobs import retention, workflows
from jobs.models import Batch, BatchJob, JobResult
from tests import workflow_tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished_jobs(run_worker: Callable[..., Any]) -> dict[str, int]:
    jobs = {
        "succeeded": tasks.delete_sent_notifications.defer(older_than_days=30),
        "failed": tasks.send_notification.defer(notification_id=987654),  # no such row
        "cancelled": tasks.delete_sent_notifications.defer(older_than_days=1),
        "todo": tasks.delete_sent_notifications.configure(schedule_in={"hours": 1}).defer(
            older_than_days=2
        ),
    }
    app.job_manager.cancel_job_by_id(jobs["cancelled"])
    run_worker()
    statuses = dict(
        ProcrastinateJob.objects.filter(id__in=jobs.values()).values_list("id", "status")
    )
    assert [statuses[jobs[name]] for name in jobs] == ["succeeded", "failed", "cancelled", "todo"]
    return jobs


def remaining(jobs: dict[str, int]) -> set[str]:
    left = set(ProcrastinateJob.objects.filter(id__in=jobs.values()).values_list("id", flat=True))
    return {name for name, job_id in jobs.items() if job_id in left}


def test_prune_jobs__only_finished_jobs_past_their_limit(finished_jobs: dict[str, int]) -> None:
    two_hours_later = timezone.now() + dt.timedelta(hours=2)
    hours = {"succeeded": 1, "failed": 24, "cancelled": 1, "aborted": 1}

    dry = retention.prune_jobs(now=two_hours_later, hours=hours, dry_run=True)
    assert {item.status: item.jobs for item in dry}["succeeded"] >= 1
    assert remaining(finished_jobs) == {"succeeded", "failed", "cancelled", "todo"}

    retention.prune_jobs(now=two_hours_later, hours=hours, batch_size=1)

    assert remaining(finished_jobs) == {"failed", "todo"}
    gone = [finished_jobs["succeeded"], finished_jobs["cancelled"]]
    assert not ProcrastinateEvent.objects.filter(job_id__in=gone).exists()
    assert not JobResult.objects.filter(job_id=finished_jobs["succeeded"]).exists()
    assert JobResult.objects.filter(job_id=finished_jobs["failed"]).exists()

    # A day and more later, the failure goes too; the waiting job never does.
    retention.prune_jobs(now=two_hours_later + dt.timedelta(days=2), hours=hours)
    assert remaining(finished_jobs) == {"todo"}


def test_prune_jobs__zero_hours_keeps_a_status_forever(finished_jobs: dict[str, int]) -> None:
    much_later = timezone.now() + dt.timedelta(days=400)

    retention.prune_jobs(now=much_later, hours={"succeeded": 1, "failed": 0})

    assert remaining(finished_jobs) == {"failed", "cancelled", "todo"}


def test_prune_jobs_command__recent_jobs_stay(finished_jobs: dict[str, int]) -> None:
    out = StringIO()

    call_command("prune_jobs", stdout=out)

    assert "Deleted 0 finished job(s) and 0 finished batch(es)" in out.getvalue()
    assert remaining(finished_jobs) == {"succeeded", "failed", "cancelled", "todo"}


def test_prune_batches__a_finished_batch_goes_with_its_last_job(
    run_worker: Callable[..., Any],
) -> None:
    on_finish = workflows.job(workflow_tasks.callback)
    emptied = workflows.defer_batch(
        [workflows.job(workflow_tasks.double, n=n) for n in (1, 2)], on_finish=on_finish
    )
    # Its failed job is kept forever (retention 0 for failures): the batch stays with it.
    kept = workflows.defer_batch([workflows.job(workflow_tasks.fail, n=3)], on_finish=on_finish)
    run_worker()
    running = workflows.defer_batch([workflows.job(workflow_tasks.double, n=4)])  # not run
    hours = {"succeeded": 1, "failed": 0, "cancelled": 1, "aborted": 1}
    later = timezone.now() + dt.timedelta(hours=2)
    retention.prune_jobs(now=later, hours=hours)

    assert retention.prune_batches(now=later, hours=hours, dry_run=True) == 1
    assert retention.prune_batches(now=timezone.now(), hours=hours) == 0  # finished too lately
    assert set(Batch.objects.values_list("pk", flat=True)) == {emptied.pk, kept.pk, running.pk}
    assert retention.prune_batches(now=later, hours=hours) == 1

    assert set(Batch.objects.values_list("pk", flat=True)) == {kept.pk, running.pk}
    assert not BatchJob.objects.filter(batch_id=emptied.pk).exists()
    assert Batch.objects.get(pk=kept.pk).failed == 1
