"""jobs/processes.py: how the job system starts and stops its processes (run_site,
run_workers, the benchmarks and the test fixtures all go through `start` and `stop`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobs.processes import site_directory, start, stop

# A child that says it is ready once it ignores SIGTERM (or not), then waits.
CHILD = """
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def child() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts a CHILD and waits until it says it is ready; closes its pipe at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start_child(kind: str) -> subprocess.Popen[bytes]:
        process = start(
            [sys.executable, "-c", CHILD, kind], env=dict(os.environ), output=subprocess.PIPE
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        return process

    yield start_child
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()  # waits, reads and closes the pipe


def test_stop__terminates_then_kills_those_still_running(
    child: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    polite, stubborn = child("polite"), child("stubborn")

    killed = stop([polite, stubborn], timeout=1)

    assert killed == [stubborn]
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL


def test_stop__leaves_processes_that_already_ended_alone() -> None:
    ended = start([sys.executable, "-c", "pass"], env=dict(os.environ))
    ended.wait()

    assert stop([ended], timeout=1) == []
    assert ended.returncode == 0


def test_start__in_a_session_of_its_own_in_the_site_directory() -> None:
    process = start(
        [sys.executable, "-c", "import os; print(os.getcwd())"],
        env=dict(os.environ),
        output=subprocess.PIPE,
    )
    output, _ = process.communicate()

    assert Path(output.decode().strip()) == site_directory()
    # Its own session: a terminal's Ctrl-C reaches only the parent, which stops it.
    assert process.pid != os.getsid(0)


def test_site_directory__manage_pys_else_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["/srv/site/manage.py", "run_workers"])
    assert site_directory() == Path("/srv/site").resolve()

    monkeypatch.setattr(sys, "argv", ["/usr/bin/django-admin", "run_workers"])
    assert site_directory() == tmp_path
