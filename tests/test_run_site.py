"""The first Quick start command: `manage.py run_site` starts everything, Ctrl-C stops it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs import services
from jobs.testing import worker_environment

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


def test_run_site__serves_runs_jobs_and_stops_on_ctrl_c(free_port: int, tmp_path: Path) -> None:
    log = tmp_path / "site.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_site", "--port", str(free_port)],
            cwd=settings.BASE_DIR,
            env=worker_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        read_until(log, rf"Site running at http://localhost:{free_port}/", process, 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/") as response:
            assert response.status == 200
            assert b"Send a notification" in response.read()

        notification = services.queue_notification(recipient="a@example.com", subject="Hi")
        assert notification.job_id is not None
        deadline = time.monotonic() + 20
        while ProcrastinateJob.objects.get(id=notification.job_id).status != "succeeded":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert "Web server and worker stopped." in output
    assert "Traceback" not in output


def test_run_site__refuses_a_port_in_use(free_port: int) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port))
        busy.listen()
        with pytest.raises(CommandError, match=f"Cannot listen on 127.0.0.1:{free_port}"):
            call_command("run_site", "--port", str(free_port), "--no-migrate")


def test_run_site__rejects_a_bad_port() -> None:
    with pytest.raises(CommandError, match="port"):
        call_command("run_site", "--port", "70000")
