"""jobs/job_actions.py: what each action does to jobs in each state. The admin's actions and
the job API's cancel, abort and retry call these functions; their own tests check only how
they report the outcome (tests/test_admin.py, tests/test_api.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import job_actions
from tests.conftest import JobMaker

pytestmark = pytest.mark.django_db


def state(job_id: int) -> tuple[str, bool]:
    job = ProcrastinateJob.objects.get(id=job_id)
    return job.status, job.abort_requested


def test_abort__cancels_a_waiting_job_and_asks_a_running_one_to_stop(
    make_job: JobMaker,
) -> None:
    waiting, running, finished = make_job(), make_job("doing"), make_job("succeeded")

    outcome = job_actions.abort([waiting, running, finished])

    assert sorted(outcome.done) == sorted([waiting, running])
    assert outcome.cancelled == [waiting]
    assert outcome.skipped == {"succeeded": 1}
    assert outcome.refusal == "only waiting or running jobs can be aborted"
    assert state(waiting) == ("cancelled", False)
    assert state(running) == ("doing", True)
    assert state(finished) == ("succeeded", False)


def test_cancel_waiting__leaves_running_and_finished_jobs_alone(make_job: JobMaker) -> None:
    waiting, running, failed = make_job(), make_job("doing"), make_job("failed")

    outcome = job_actions.cancel_waiting([waiting, running, failed])

    assert outcome.done == [waiting]
    assert outcome.cancelled == []
    assert outcome.skipped == {"doing": 1, "failed": 1}
    assert state(waiting) == ("cancelled", False)
    assert state(running) == ("doing", False)


def test_retry_failed__requeues_failed_jobs_only(make_job: JobMaker) -> None:
    failed, waiting = make_job("failed"), make_job()
    at = timezone.now().replace(microsecond=0) + dt.timedelta(hours=1)

    outcome = job_actions.retry_failed([failed, waiting], at=at)

    assert outcome.done == [failed]
    assert outcome.skipped == {"todo": 1}
    retried = ProcrastinateJob.objects.get(id=failed)
    assert (retried.status, retried.scheduled_at) == ("todo", at)


def test_actions__ignore_ids_of_no_job(make_job: JobMaker) -> None:
    outcome = job_actions.abort([make_job() + 1000])

    assert (outcome.done, outcome.skipped) == ([], {})
