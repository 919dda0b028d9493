"""The first Quick start command: `manage.py run_site` starts everything, prints a login for
the example pages (outside production), Ctrl-C stops it."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from procrastinate.contrib.django.models import ProcrastinateJob

from example import services
from jobs.testing import wait_until, worker_environment

pytestmark = pytest.mark.django_db(transaction=True)


def read_until(log: Path, pattern: str, process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if re.search(pattern, text):
            return text
        if process.poll() is not None:
            raise AssertionError(f"run_site exited early:\n{text}")
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed:\n{log.read_text()}")


def start_site(port: int, log: Path, **env: str) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "run_site", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=worker_environment(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def csrf_token(page: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_run_site__a_newcomer_logs_in_submits_a_form_and_sees_the_job_succeed(
    free_port: int, tmp_path: Path
) -> None:
    """The Quick start, as a newcomer does it: the printed login, then the form."""
    log = tmp_path / "site.log"
    process = start_site(free_port, log)
    try:
        output = read_until(log, r"password: \S+\n", process, 60)
        assert f"Site running at http://localhost:{free_port}/" in output
        login_url = re.search(r"Log in to the example pages at (\S+)", output)
        credentials = re.search(r"username: (\S+)\n\s+password: (\S+)\n", output)
        assert login_url, output
        assert credentials, output
        assert login_url.group(1) == f"http://localhost:{free_port}/admin/login/?next=/"
        base = f"http://127.0.0.1:{free_port}"
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

        login_page = browser.open(f"{base}/admin/login/?next=/").read().decode()
        username, password = credentials.groups()
        form = {"username": username, "password": password, "next": "/"}
        with browser.open(
            f"{base}/admin/login/?next=/",
            urlencode({**form, "csrfmiddlewaretoken": csrf_token(login_page)}).encode(),
        ) as response:
            home = response.read().decode()
            assert response.url == f"{base}/"
        assert "Send a notification" in home

        with browser.open(
            f"{base}/notifications/",
            urlencode(
                {
                    "recipient": "a@example.com",
                    "subject": "Hi",
                    "csrfmiddlewaretoken": csrf_token(home),
                }
            ).encode(),
        ) as response:
            saved = re.search(r"job #(\d+) deferred", response.read().decode())
        assert saved, "no job deferred"
        job_id = int(saved.group(1))
        wait_until(
            lambda: ProcrastinateJob.objects.get(id=job_id).status == "succeeded",
            what=log.read_text(),
        )
        activity = browser.open(f"{base}/activity/").read().decode()
        assert re.search(
            rf'data-job-id="{job_id}">(?:(?!</tr>).)*status-succeeded', activity, flags=re.DOTALL
        ), activity

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert "Web server and worker stopped." in output
    assert "Traceback" not in output


def test_run_site__never_makes_a_demo_user_in_production(free_port: int, tmp_path: Path) -> None:
    log = tmp_path / "site.log"
    process = start_site(
        free_port,
        log,
        DJANGO_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="localhost,127.0.0.1",
        EXAMPLE_PAGES="on",  # even with the pages on: their users are the site's business
    )
    try:
        read_until(log, rf"Site running at http://localhost:{free_port}/", process, 60)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert "password" not in output
    assert not User.objects.filter(username=services.DEMO_USERNAME).exists()


def test_reset_demo_user__gives_the_example_permissions_and_a_fresh_password() -> None:
    # Someone's earlier "demo", with more rights than the example needs.
    User.objects.create_superuser(services.DEMO_USERNAME, password="old-password")

    first = services.reset_demo_user()
    second = services.reset_demo_user()

    assert first != second
    user = User.objects.get(username=services.DEMO_USERNAME)
    assert (user.is_active, user.is_staff, user.is_superuser) == (True, True, False)
    assert user.get_all_permissions() == set(services.EXAMPLE_PERMISSIONS)
    assert authenticate(username=services.DEMO_USERNAME, password=first) is None
    assert authenticate(username=services.DEMO_USERNAME, password=second) == user
    # What the demo user may do is what the pages ask for: each of them lets it in.
    client = Client()
    assert client.login(username=services.DEMO_USERNAME, password=second)
    assert client.get("/").status_code == 200
    assert client.get("/activity/").status_code == 200
    assert (
        client.post("/notifications/", {"recipient": "a@b.example", "subject": "s"}).status_code
        == 302
    )
    assert client.post("/reports/", {"title": "t", "hours": "1"}).status_code == 302
    # It has an address for the import's summary too.
    assert client.post("/imports/start/", {"contacts": "Ada, a@b.example"}).status_code == 302


@override_settings(PRODUCTION=True)
def test_reset_demo_user__refused_in_production() -> None:
    with pytest.raises(ImproperlyConfigured, match="never in production"):
        services.reset_demo_user()
    assert not User.objects.filter(username=services.DEMO_USERNAME).exists()


def test_run_site__refuses_a_port_in_use(free_port: int) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port))
        busy.listen()
        with pytest.raises(CommandError, match=f"Cannot listen on 127.0.0.1:{free_port}"):
            call_command("run_site", "--port", str(free_port), "--no-migrate")


@pytest.mark.parametrize(
    ("port", "reason"),
    [("70000", "must be at most 65535, not 70000"), ("http", "'http' is not a whole number")],
)
def test_run_site__rejects_a_bad_port_with_the_reason(port: str, reason: str) -> None:
    # argparse shows an ArgumentTypeError's reason; for a ValueError, "invalid ... value".
    with pytest.raises(CommandError, match=f"argument --port: {reason}"):
        call_command("run_site", "--port", port)
