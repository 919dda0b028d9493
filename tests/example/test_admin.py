"""The example's admins: its lists take only the filters and search they show (the job
system's checked lists), and the report form refuses periods it could not read back."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from example.models import Notification, Report
from tests.test_admin import refused

pytestmark = pytest.mark.django_db

NOTIFICATIONS_URL = "/admin/example/notification/"
REPORTS_URL = "/admin/example/report/"


@pytest.mark.parametrize(
    ("url", "query", "says"),
    [
        (NOTIFICATIONS_URL, {"body__regex": "["}, "'body__regex' is not a filter"),
        (NOTIFICATIONS_URL, {"sent_at__gte": "-1000000d"}, "sent_at__gte: '-1000000d' is out"),
        (NOTIFICATIONS_URL, {"sent_at__lt": "a\x00"}, "null characters are not allowed"),
        (REPORTS_URL, {"status__exact": "a\x00"}, "null characters are not allowed"),
        (REPORTS_URL, {"title__regex": "["}, "'title__regex' is not a filter"),
    ],
)
def test_example_lists__refuse_bad_parameters_with_a_message(
    admin_client: Client, url: str, query: dict[str, str], says: str
) -> None:
    Notification.objects.create(recipient="a@example.com", subject="Hi")

    refused(admin_client, url, query, says=says)


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("0001-01-01", "2026-01-01", "Out of range once converted to UTC."),
        ("2026-01-02", "2026-01-01", "Must be after the start of the period."),
    ],
)
def test_report_admin__refuses_periods_it_could_not_read_back(
    admin_client: Client, settings: Any, start: str, end: str, says: str
) -> None:
    # East of UTC: the first day of year 1 is still a day before Christ in UTC.
    settings.TIME_ZONE = "Asia/Tokyo"

    response = admin_client.post(
        f"{REPORTS_URL}add/",
        {
            "title": "Q1",
            "period_start_0": start,
            "period_start_1": "00:00:00",
            "period_end_0": end,
            "period_end_1": "00:00:00",
        },
    )

    assert response.status_code == 200
    assert says in response.content.decode()
    assert not Report.objects.exists()
    assert admin_client.get(REPORTS_URL).status_code == 200
