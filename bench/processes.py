"""The processes a benchmark starts (a web server, groups of workers) and stops again.

The commands themselves are the project's (`jobs.processes`): a benchmark measures the
web server and the workers as `run_site` and `run_workers` start them.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from bench.scratch import ScratchDatabase
from jobs.processes import web_server_command


@contextmanager
def running(
    command: list[str], *, env: dict[str, str], stop_timeout: float = 60, quiet: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running for the duration of the block; stopped with SIGTERM (a worker
    finishes its jobs), killed if it is still there after `stop_timeout` seconds.

    In its own session, so that a terminal's Ctrl-C reaches only the benchmark, which then
    stops it here. `quiet` discards its output (workers log a line or two per job).
    """
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=env,
        stdout=output,
        stderr=output,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_accepting(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until `process` accepts connections on `port` (uvicorn loads the application
    before it listens, so it is then ready to answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start") from None
            time.sleep(0.1)


@contextmanager
def web_server(database: ScratchDatabase, **env: str) -> Iterator[int]:
    """The site under uvicorn on a free local port against `database`; yields the port."""
    port = free_port()
    command = web_server_command("127.0.0.1", port, "--no-access-log", "--log-level", "warning")
    # Its warnings and errors stay visible: they explain a failed benchmark.
    with running(command, env=database.environment(**env), stop_timeout=10, quiet=False) as process:
        wait_accepting(port, process)
        yield port
