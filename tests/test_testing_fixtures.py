"""The fixtures jobs.testing offers a site's own tests, used here as a site would."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from example import services
from example.models import Notification, Report
from jobs.testing import InMemoryQueue, worker_environment


def test_procrastinate_in_memory__runs_deferred_jobs_on_demand(
    procrastinate_in_memory: InMemoryQueue,
) -> None:
    notification = services.queue_notification(recipient="a@example.com", subject="Hello")
    now = timezone.now()
    report = Report.objects.create(
        title="Today", period_start=now - dt.timedelta(days=1), period_end=now
    )
    from example import tasks

    tasks.build_report.defer(report_id=report.pk)

    # Nothing ran yet: the jobs wait in memory, not in PostgreSQL.
    todo = procrastinate_in_memory.jobs(status="todo")
    assert [job["task_name"] for job in todo] == ["jobs.send_notification", "jobs.build_report"]
    assert Notification.objects.get().sent_at is None

    procrastinate_in_memory.run()

    assert [job["status"] for job in procrastinate_in_memory.jobs()] == ["succeeded"] * 2
    assert Notification.objects.get(pk=notification.pk).sent_at is not None
    assert [message.subject for message in mail.outbox] == ["Hello"]
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    assert report.notifications_total == 1


def test_procrastinate_in_memory__failed_job_is_reported(
    procrastinate_in_memory: InMemoryQueue,
) -> None:
    from example import tasks

    tasks.send_notification.defer(notification_id=123456)  # no such notification

    procrastinate_in_memory.run()

    assert [job["status"] for job in procrastinate_in_memory.jobs()] == ["failed"]


def test_procrastinate_in_memory__a_task_may_report_progress(
    procrastinate_in_memory: InMemoryQueue,
) -> None:
    from tests.slow_tasks import quick  # reports its progress, then returns n

    quick.defer(n=7)
    procrastinate_in_memory.run()

    assert [job["status"] for job in procrastinate_in_memory.jobs()] == ["succeeded"]


def test_worker_environment__names_the_settings_module_this_process_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A site's settings module has its own name; it need not be in the environment.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.setattr(settings, "SETTINGS_MODULE", "tests.bare_site.settings")

    assert worker_environment()["DJANGO_SETTINGS_MODULE"] == "tests.bare_site.settings"


def test_worker_environment__without_a_settings_module_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "SETTINGS_MODULE", None)

    with pytest.raises(ImproperlyConfigured, match="need a settings module"):
        worker_environment()


def test_worker_environment__under_overridden_settings_names_the_module_beneath(
    settings: Any,
) -> None:
    # pytest-django's `settings` fixture (override_settings) holds changed settings in a
    # holder whose own SETTINGS_MODULE is None.
    settings.TIME_ZONE = "America/Los_Angeles"

    assert worker_environment()["DJANGO_SETTINGS_MODULE"] == os.environ["DJANGO_SETTINGS_MODULE"]
