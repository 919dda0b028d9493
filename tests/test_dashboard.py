"""The staff dashboard (jobs/dashboard.py, jobs/charts.py): access, figures, charts, and the
page in a real browser against a real server after real jobs ran."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from example import services, tasks
from jobs import charts, queue_pauses, queue_stats
from jobs.queue_stats import Percentiles, QueueState, Throughput
from jobs.testing import WorkerProcess
from tests.conftest import JobMaker

DASHBOARD = "/dashboard/"


@pytest.fixture(autouse=True)
def _fresh_throughput_cache() -> None:
    queue_stats.forget_settled_buckets()


@pytest.mark.django_db
@pytest.mark.parametrize("path", [DASHBOARD, "/dashboard/panels/", "/dashboard/data/"])
def test_dashboard__is_for_staff_who_may_view_jobs(
    client: Client, staff_client: Client, path: str
) -> None:
    assert client.get(path).status_code == 302
    assert client.get(path)["Location"].startswith("/admin/login/")
    client.force_login(User.objects.create_user("clerk", password="x", is_staff=True))
    assert client.get(path).status_code == 403
    assert staff_client.get(path).status_code == 200


@pytest.mark.django_db
def test_dashboard__shows_an_empty_queue(staff_client: Client) -> None:
    response = staff_client.get(DASHBOARD)

    page = response.content.decode()
    assert response["Cache-Control"].startswith("max-age=0")
    assert 'data-chart="throughput"' in page
    assert "No worker is running." in page
    assert "No failed attempt in the last 3 hours." in page
    assert "jobs.recover_stalled_jobs" in page  # periodic tasks come from the registry


@pytest.mark.django_db
def test_dashboard__shows_waiting_and_running_jobs_now(
    staff_client: Client, make_job: JobMaker
) -> None:
    oldest = make_job(queue="mail")
    make_job(queue="mail", schedule_in={"hours": 1})
    make_job("doing", queue="mail")

    response = staff_client.get("/dashboard/panels/")

    page = response.content.decode()
    assert 'class="bar-waiting" data-value="1"' in page
    assert 'class="bar-scheduled" data-value="1"' in page
    assert 'class="bar-running" data-value="1"' in page
    assert f"/admin/procrastinate/procrastinatejob/{oldest}/change/" in page


@pytest.mark.django_db
def test_dashboard__shows_the_paused_queues(staff_client: Client, make_job: JobMaker) -> None:
    make_job(queue="mail")
    make_job(queue="reports")
    queue_pauses.pause("mail", by="alice", reason="SMTP <down>")
    queue_pauses.pause("billing")  # no job yet: listed all the same

    page = staff_client.get("/dashboard/panels/").content.decode()
    data = staff_client.get("/dashboard/data/").json()

    start = page.index('id="paused-queues"')
    banner = page[start : page.index("</section>", start)]
    assert "2 queues: workers take none of their jobs" in banner
    assert "<strong>mail</strong>" in banner
    assert "by alice: <q>SMTP &lt;down&gt;</q>" in banner
    assert "<strong>billing</strong>" in banner
    assert "/admin/jobs/queuecontrol/" in banner
    # In the table of queues, the paused one has its badge.
    assert '?queue=mail">mail</a> <span class="paused-badge">paused</span>' in page
    assert '?queue=reports">reports</a></td>' in page
    assert data["paused"]["mail"]["by"] == "alice"
    assert data["paused"]["mail"]["reason"] == "SMTP <down>"
    assert set(data["paused"]) == {"mail", "billing"}


@pytest.mark.django_db
def test_dashboard__no_banner_without_paused_queues(staff_client: Client) -> None:
    page = staff_client.get("/dashboard/panels/").content.decode()

    assert 'id="paused-queues"' not in page
    assert staff_client.get("/dashboard/data/").json()["paused"] == {}


def test_dashboard__figures_of_a_busy_queue(
    seeded_history: int, staff_client_committed: Client, django_assert_max_num_queries: Any
) -> None:
    # Session, user, now, estimates (2), waiting and running, throughput, final states,
    # waiting and run time samples, workers, failures, periodic tasks.
    with django_assert_max_num_queries(14):
        response = staff_client_committed.get("/dashboard/panels/")

    page = response.content.decode()
    assert page.count('class="bar-succeeded"') > 100
    assert 'class="bar-failed"' in page
    assert 'data-chart="waiting"' in page
    assert 'class="percentiles" data-queue="reports"' in page
    for exception in ("smtplib.SMTPServerDisconnected", "TimeoutError"):
        assert exception in page
    # Both seeded workers beat just now: each is listed as live, none as stale.
    assert page.count('<tr class="live">') == 2
    assert '<tr class="stale">' not in page
    assert 'class="estimate">≈ ' in page  # finished jobs, from the analyzed table
    assert "?task=jobs.build_report&amp;status=failed" in page


def test_dashboard_data__serves_the_snapshot_as_json(
    seeded_history: int, staff_client_committed: Client
) -> None:
    data = staff_client_committed.get("/dashboard/data/").json()

    assert len(data["throughput"]["succeeded"]) == len(data["throughput"]["times"]) == 180
    assert sum(data["throughput"]["succeeded"]) == data["finished"]["succeeded"] > 0
    assert data["live_workers"] == 2
    queues = {q["queue"]: q for q in data["queues"]}
    assert set(queues) >= {"notifications", "reports", "maintenance"}
    assert queues["notifications"]["exact"] == ["doing", "todo"]
    assert {"p50", "p90", "p99", "max", "samples"} <= set(data["run_times"][0])
    assert data["failures"][0]["job_ids"]
    assert dt.datetime.fromisoformat(data["now"])
    assert any(p["last_run"] for p in data["periodic"])


@pytest.fixture
def staff_client_committed(transactional_db: None) -> Client:
    """A staff client whose user is committed (for tests with a transactional database)."""
    user = User.objects.create_superuser("boss", password="pw-for-tests")
    client = Client()
    client.force_login(user)
    return client


def test_throughput_chart__draws_stacked_bars_with_their_values() -> None:
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    data = Throughput(start=start, bucket_seconds=60, succeeded=[0, 10, 5], failed=[0, 2, 0])

    svg = str(charts.throughput_chart(data))

    assert svg.count('class="bar-succeeded"') == 2  # empty minutes draw nothing
    assert 'class="bar-succeeded" data-value="10"' in svg
    assert 'class="bar-failed" data-value="2"' in svg
    assert "12:01: 10 succeeded, 2 failed" in svg
    assert ">20<" in svg  # the y scale's top: 12 rounded up to a nice figure


def test_queue_chart__escapes_names() -> None:
    queue = QueueState(queue="<script>", counts={"todo": 3, "doing": 1}, scheduled=1)

    svg = str(charts.queue_chart([queue]))

    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert 'class="bar-waiting" data-value="2"' in svg


def test_percentile_chart__places_bars_on_a_log_scale() -> None:
    rows = [Percentiles(queue="", samples=3, p50=0.1, p90=1.0, p99=10.0, max=11.0)]

    svg = str(charts.percentile_chart("running", rows, caption="Run time"))

    assert 'data-queue=""' in svg
    assert "median 100 ms, 90% 1.0 s, 99% 10.0 s (3 jobs)" in svg


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 1), (0.3, 0.5), (7, 10), (12, 20), (45, 50), (100, 100)]
)
def test_nice_ceiling__rounds_up_to_1_2_5(value: float, expected: float) -> None:
    assert charts.nice_ceiling(value) == pytest.approx(expected)


# --- In a browser ------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], *, timeout: float = 30, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_dashboard__draws_its_charts_in_chromium_after_jobs_ran(
    browser: Any,
    start_worker: Callable[..., WorkerProcess],
    site_server: Callable[..., str],
) -> None:
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("boss", password="pw-for-tests")
    start_worker()
    job_ids: list[int] = []
    for n in range(4):
        notification = services.queue_notification(recipient=f"u{n}@example.com", subject="Hi")
        assert notification.job_id is not None
        job_ids.append(notification.job_id)
    # No such notification: the task raises DoesNotExist, which it does not retry.
    job_ids += [tasks.send_notification.defer(notification_id=999_999 + n) for n in range(2)]
    wait_for(
        lambda: (
            set(ProcrastinateJob.objects.filter(id__in=job_ids).values_list("status", flat=True))
            <= {"succeeded", "failed"}
        ),
        what="the jobs to finish",
    )
    url = site_server(JOBS_DASHBOARD_REFRESH_SECONDS="1")

    browser.get(f"{url}/admin/login/?next=/dashboard/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("pw-for-tests")
    # The worker also runs the periodic tasks that are due, so successes may be added while
    # the page is made: it shows a count taken between these two.
    succeeded_before = ProcrastinateEvent.objects.filter(type="succeeded").count()
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: browser.current_url.endswith("/dashboard/"), what="the dashboard")

    def values(selector: str) -> list[int]:
        marks = browser.find_elements(By.CSS_SELECTOR, selector)
        return [int(mark.get_attribute("data-value")) for mark in marks]

    shown = sum(values('svg[data-chart="throughput"] rect.bar-succeeded'))
    succeeded = ProcrastinateEvent.objects.filter(type="succeeded").count()
    assert succeeded_before >= 4
    assert succeeded_before <= shown <= succeeded
    assert sum(values('svg[data-chart="throughput"] rect.bar-failed')) == 2
    assert browser.find_elements(By.CSS_SELECTOR, 'svg[data-chart="running"] g.percentiles')
    assert browser.find_elements(By.CSS_SELECTOR, 'svg[data-chart="waiting"] g.percentiles')
    assert "Notification.DoesNotExist" in browser.page_source
    assert "live" in browser.find_element(By.CSS_SELECTOR, "table.workers").text
    # The page refreshes itself, and the charts are drawn again.
    wait_for(
        lambda: int(browser.find_element(By.ID, "dashboard").get_attribute("data-refreshes")) >= 2,
        what="the page to refresh itself",
    )
    # (A periodic task may have finished meanwhile.)
    assert sum(values('svg[data-chart="throughput"] rect.bar-succeeded')) >= shown
    box = browser.find_element(By.CSS_SELECTOR, 'svg[data-chart="throughput"]').rect
    assert box["width"] > 600
    assert box["height"] > 100

    artifacts = Path(settings.BASE_DIR) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / "dashboard.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
