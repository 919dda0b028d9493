"""jobs/job_statuses.py names procrastinate's statuses and event types once: they must be
exactly those its database schema knows (the legacy `aborting` status aside)."""

from __future__ import annotations

import pytest
from django.db import connection

from jobs import job_statuses

pytestmark = pytest.mark.django_db


def enum_values(name: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(enum_range(NULL::" + name + "))::text")
        return {row[0] for row in cursor.fetchall()}


def test_statuses__are_the_databases_less_the_legacy_one() -> None:
    assert set(job_statuses.STATUSES) == enum_values("procrastinate_job_status") - {"aborting"}
    assert not set(job_statuses.ACTIVE_STATUSES) & set(job_statuses.FINISHED_STATUSES)


def test_event_types__are_the_databases() -> None:
    assert set(job_statuses.EVENT_TYPES) == enum_values("procrastinate_job_event_type")
    assert set(job_statuses.DUE_EVENTS) <= set(job_statuses.EVENT_TYPES)
    assert set(job_statuses.ATTEMPT_END_EVENTS) <= set(job_statuses.EVENT_TYPES)
