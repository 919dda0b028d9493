"""The task functions called directly, the first of the three layers of task tests."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone
from procrastinate import RetryStrategy

from jobs import tasks
from jobs.models import Notification, Report

pytestmark = pytest.mark.django_db


def test_send_notification__sends_mail_once() -> None:
    notification = Notification.objects.create(
        recipient="ada@example.com", subject="Welcome", body="Hello Ada"
    )

    first = tasks.send_notification(notification_id=notification.pk)
    second = tasks.send_notification(notification_id=notification.pk)

    assert first == {"notification_id": notification.pk, "recipient": "ada@example.com"}
    assert second == {"notification_id": notification.pk, "already_sent": True}
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    notification.refresh_from_db()
    assert notification.sent_at is not None


def test_send_notification__unknown_id_raises() -> None:
    with pytest.raises(Notification.DoesNotExist):
        tasks.send_notification(notification_id=999_999)


# Async ORM calls run on another thread and connection than the test's transaction.
@pytest.mark.django_db(transaction=True)
async def test_build_report__counts_notifications_of_its_period() -> None:
    now = timezone.now()
    await Notification.objects.acreate(recipient="a@example.com", subject="in", sent_at=now)
    await Notification.objects.acreate(recipient="b@example.com", subject="in, unsent")
    report = await Report.objects.acreate(
        title="Hour", period_start=now - dt.timedelta(hours=1), period_end=now + dt.timedelta(1)
    )

    result = await tasks.build_report(report_id=report.pk)

    assert result == {"report_id": report.pk, "total": 2, "sent": 1}
    await report.arefresh_from_db()
    assert report.status == Report.Status.READY
    assert report.generated_at is not None


def test_delete_sent_notifications__keeps_recent_and_unsent() -> None:
    now = timezone.now()
    old = Notification.objects.create(
        recipient="a@example.com", subject="old", sent_at=now - dt.timedelta(days=40)
    )
    recent = Notification.objects.create(
        recipient="b@example.com", subject="recent", sent_at=now - dt.timedelta(days=1)
    )
    unsent = Notification.objects.create(recipient="c@example.com", subject="unsent")

    assert tasks.delete_sent_notifications(older_than_days=30) == {"deleted": 1}
    assert set(Notification.objects.values_list("pk", flat=True)) == {recent.pk, unsent.pk}
    assert not Notification.objects.filter(pk=old.pk).exists()


def test_tasks__have_explicit_names_queues_and_retry_policies() -> None:
    from procrastinate.contrib.django import app

    ours = {name: task for name, task in app.tasks.items() if name.startswith("jobs.")}
    assert set(ours) >= {
        "jobs.send_notification",
        "jobs.build_report",
        "jobs.delete_sent_notifications",
    }
    assert ours["jobs.send_notification"].queue == "notifications"
    assert ours["jobs.build_report"].queue == "reports"
    assert ours["jobs.delete_sent_notifications"].queue == "maintenance"
    strategy = ours["jobs.send_notification"].retry_strategy
    assert isinstance(strategy, RetryStrategy)
    assert strategy.max_attempts == 2
