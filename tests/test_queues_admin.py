"""The admin's page of queues, limits and pauses (jobs/admin/queues.py), through Django's test
client, and in Chromium."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client

from jobs import queue_pauses
from jobs.models import PausedQueue
from jobs.testing import wait_until
from tests.conftest import JobMaker

pytestmark = pytest.mark.django_db

PAGE = "/admin/jobs/queuecontrol/"
PAUSE_FORM = 'class="jobs-queue-action"'


def post(client: Client, data: dict[str, str]) -> list[str]:
    """Post to the page as its forms do; the messages the page shows after the redirect."""
    response = client.post(PAGE, data, follow=True)
    assert response.redirect_chain == [(PAGE, 302)]
    return [str(message) for message in response.context["messages"]]


def operator(name: str, *, may_pause: bool) -> User:
    """Staff who may view jobs, and pause queues if `may_pause`."""
    user = User.objects.create_user(name, password="pw-for-tests", is_staff=True)
    permissions = Permission.objects.filter(
        content_type__app_label="procrastinate", codename="view_procrastinatejob"
    )
    if may_pause:
        permissions |= Permission.objects.filter(
            content_type__app_label="jobs", codename="pause_queue"
        )
    user.user_permissions.set(permissions)
    return user


@pytest.fixture
def pauser() -> Client:
    client = Client()
    client.force_login(operator("pauser", may_pause=True))
    return client


def row_of(page: str, queue: str) -> str:
    start = page.index(f'<tr data-queue="{queue}"')
    return page[start : page.index("</tr>", start)]


def test_queues_page__lists_every_known_queue_with_its_jobs_and_pause(
    pauser: Client, make_job: JobMaker
) -> None:
    make_job(queue="mail")
    make_job(queue="mail", schedule_in={"hours": 1})
    make_job("doing", queue="mail")
    make_job("succeeded", queue="archive")  # only finished jobs: known all the same
    queue_pauses.pause("billing", by="alice", reason="provider <down>")

    response = pauser.get(PAGE)

    assert response.status_code == 200
    page = response.content.decode()
    mail = row_of(page, "mail")
    assert [cell.split(">")[-1] for cell in mail.split("</td>")[1:4]] == ["1", "1", "1"]
    assert "taking jobs" in mail
    billing = row_of(page, "billing")  # paused before its first job
    assert "jobs-paused-badge" in billing
    assert "by alice" in billing
    assert "provider &lt;down&gt;" in billing  # escaped
    assert 'value="resume"' in billing
    assert 'value="pause"' in mail
    assert "archive" in page
    # The queues Django tasks may use (TASKS), and those of the code's tasks.
    for queue in ("reports", "comments", "notifications"):
        assert f'<tr data-queue="{queue}"' in page


def test_queues_page__view_only_staff_see_no_buttons_and_may_not_post(
    staff_client: Client,
) -> None:
    queue_pauses.pause("billing")

    page = staff_client.get(PAGE)
    refused = staff_client.post(PAGE, {"action": "resume", "queue": "billing"})
    refused_pause = staff_client.post(PAGE, {"action": "pause", "queue": "mail"})

    assert page.status_code == 200
    assert PAUSE_FORM not in page.content.decode()
    assert "<th>Action</th>" not in page.content.decode()
    assert refused.status_code == refused_pause.status_code == 403
    assert [p.queue_name for p in queue_pauses.paused_queues()] == ["billing"]


def test_queues_page__for_staff_who_may_view_jobs(client: Client) -> None:
    anonymous = client.get(PAGE)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")

    # Staff who may pause queues but not view jobs: the page shows jobs' figures.
    clerk = User.objects.create_user("clerk", password="x", is_staff=True)
    clerk.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename="pause_queue")
    )
    client.force_login(clerk)
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {"action": "pause", "queue": "mail"}).status_code == 403
    assert not PausedQueue.objects.exists()


def test_admin_index__links_the_page_for_who_may_view_it(
    staff_client: Client, client: Client
) -> None:
    assert PAGE in staff_client.get("/admin/").content.decode()
    assert PAGE in staff_client.get("/admin/jobs/").content.decode()
    client.force_login(User.objects.create_user("clerk", password="x", is_staff=True))
    assert PAGE not in client.get("/admin/").content.decode()


def test_queues_page__pauses_and_resumes_saying_what_happened(
    pauser: Client, make_job: JobMaker
) -> None:
    make_job(queue="mail")

    paused = post(pauser, {"action": "pause", "queue": "mail", "reason": "SMTP down"})
    again = post(pauser, {"action": "pause", "queue": "mail", "reason": "other"})

    assert paused == ["Queue 'mail' paused: workers take none of its jobs until it is resumed."]
    (row,) = queue_pauses.paused_queues()
    assert (row.queue_name, row.paused_by, row.reason) == ("mail", "pauser", "SMTP down")
    (already,) = again
    assert already.startswith("Queue 'mail' was already paused since ")
    assert "by pauser; left as it was." in already
    # What the page accepted, every reader reads back.
    assert queue_pauses.is_paused("mail")
    assert "SMTP down" in row_of(pauser.get(PAGE).content.decode(), "mail")

    resumed = post(pauser, {"action": "resume", "queue": "mail"})
    not_paused = post(pauser, {"action": "resume", "queue": "mail"})

    assert resumed == ["Queue 'mail' resumed: workers take its jobs again."]
    assert not_paused == ["Queue 'mail' was not paused."]
    assert not PausedQueue.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "pause", "queue": "nosuchqueue"}, "No queue 'nosuchqueue' is known"),
        ({"action": "resume", "queue": "nosuchqueue"}, "No queue 'nosuchqueue' is known"),
        ({"action": "pause", "queue": "x" * 129}, "at most 128"),
        ({"action": "pause", "queue": " mail"}, "no spaces around it"),
        ({"action": "pause", "queue": "ma\nil"}, "no control characters"),
        ({"action": "pause", "queue": "mail\x00"}, "Null characters are not allowed"),
        ({"action": "pause", "queue": ""}, "Queue: This field is required."),
        ({"action": "pause"}, "Queue: This field is required."),
        ({"action": "explode", "queue": "mail"}, "Action: Select a valid choice."),
        ({"action": "pause", "queue": "mail", "reason": "x" * 256}, "at most 255 characters"),
        ({"action": "pause", "queue": "mail", "reason": "bad\x00"}, "Null characters"),
    ],
)
def test_queues_page__refuses_bad_input_with_a_message_and_writes_nothing(
    pauser: Client, make_job: JobMaker, data: dict[str, str], message: str
) -> None:
    make_job(queue="mail")

    (said,) = post(pauser, data)

    assert said.startswith("Nothing changed. ")
    assert message in said
    assert not PausedQueue.objects.exists()


def test_queues_page__post_needs_the_csrf_token(make_job: JobMaker) -> None:
    make_job(queue="mail")
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator("pauser", may_pause=True))

    refused = client.post(PAGE, {"action": "pause", "queue": "mail"})

    assert refused.status_code == 403
    assert not PausedQueue.objects.exists()


def test_queues_page__in_chromium_pauses_and_resumes_a_queue(
    browser: Any, site_server: Callable[..., str], make_job: JobMaker
) -> None:
    from selenium.webdriver.common.by import By

    operator("pauser", may_pause=True)
    make_job(queue="mail")
    url = site_server()

    browser.get(f"{url}/admin/login/?next={PAGE}")
    browser.find_element(By.NAME, "username").send_keys("pauser")
    browser.find_element(By.NAME, "password").send_keys("pw-for-tests")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    def row() -> Any:
        return wait_until(
            lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-queue="mail"]'),
            timeout=15,
            what="the mail queue's row",
        )[0]

    def said(text: str) -> bool:
        # Read in one script: an element found on the page being left goes stale.
        shown = browser.execute_script(
            "const list = document.querySelector('.messagelist');"
            "return list ? list.textContent : '';"
        )
        return text in shown

    row().find_element(By.NAME, "reason").send_keys("SMTP provider down")
    row().find_element(By.CSS_SELECTOR, 'button[value="pause"]').click()

    wait_until(lambda: said("Queue 'mail' paused"), timeout=15, what="the pause's message")
    assert "SMTP provider down" in row().text
    assert queue_pauses.is_paused("mail")
    assert PausedQueue.objects.get().paused_by == "pauser"
    artifacts = Path(settings.BASE_DIR) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    browser.save_screenshot(str(artifacts / "queues-page-paused.png"))

    row().find_element(By.CSS_SELECTOR, 'button[value="resume"]').click()

    wait_until(lambda: said("Queue 'mail' resumed"), timeout=15, what="the resume's message")
    assert "taking jobs" in row().text
    assert not PausedQueue.objects.exists()
    errors = [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]
    assert errors == []
