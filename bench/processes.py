"""The processes a benchmark starts (a web server, groups of workers) and stops again.

The commands themselves are the project's (`jobs.processes`): a benchmark measures the
web server and the workers as `run_site` and `run_workers` start them.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.scratch import ScratchDatabase
from jobs.processes import start, stop, web_server_command


@contextmanager
def running(
    command: list[str], *, env: dict[str, str], stop_timeout: float = 60, quiet: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running for the duration of the block, started and stopped as `run_workers`
    starts and stops its workers (`jobs.processes.start` and `stop`: SIGTERM, then SIGKILL
    after `stop_timeout` seconds). `quiet` discards its output (workers log a line or two
    per job)."""
    process = start(command, env=env, output=subprocess.DEVNULL if quiet else None)
    try:
        yield process
    finally:
        stop([process], timeout=stop_timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_accepting(
    port: int, process: subprocess.Popen[bytes], timeout: float = 30, *, what: str = "web server"
) -> None:
    """Wait until `process` accepts connections on `port` (uvicorn loads the application
    before it listens, so it is then ready to answer; so does redis-server its data).
    RuntimeError naming `what` if it exits or does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {what} did not start") from None
            time.sleep(0.1)


@contextmanager
def web_server(database: ScratchDatabase, **env: str) -> Iterator[int]:
    """The site under uvicorn on a free local port against `database`; yields the port."""
    port = free_port()
    command = web_server_command(
        "127.0.0.1", port, "--no-access-log", "--log-level", "warning",
        application="project.asgi:application",
    )  # fmt: skip
    # Its warnings and errors stay visible: they explain a failed benchmark.
    with running(command, env=database.environment(**env), stop_timeout=10, quiet=False) as process:
        wait_accepting(port, process)
        yield port
