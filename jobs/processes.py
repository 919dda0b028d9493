"""The processes this project starts: the ASGI server and workers, and their supervisor.

`run_site`, `run_workers` and the test fixtures all start them the same way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType


def web_server_command(
    host: str, port: int, *extra: str, application: str = "project.asgi:application"
) -> list[str]:
    """uvicorn serving `project.asgi` (sync and async views); no lifespan: Django has none."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        application,
        "--host",
        host,
        "--port",
        str(port),
        "--lifespan",
        "off",
        *extra,
    ]


def worker_command(*args: str) -> list[str]:
    """`manage.py procrastinate worker` with `args`, without depending on where manage.py is."""
    return [sys.executable, "-m", "django", "procrastinate", "worker", *args]


class ProcessGroup:
    """Child processes started together and stopped together, with signal forwarding.

    SIGINT or SIGTERM to this process stops the children gracefully (SIGTERM to each; a
    procrastinate worker then finishes its running jobs within its graceful timeout). A
    second signal is forwarded too: a worker receiving its second signal exits at once,
    leaving its jobs for stalled-job recovery. Children run in their own sessions, so a
    terminal's Ctrl-C reaches only this supervisor, which decides the order.

    With `restart`, a child that dies on its own is started again (after `restart_delay`);
    without, the group stops and `run()` returns why.
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        cwd: Path,
        env: dict[str, str],
        stop_timeout: float,
        restart: bool = False,
        restart_delay: float = 1.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.commands = commands
        self.cwd = cwd
        self.env = env
        self.stop_timeout = stop_timeout
        self.restart = restart
        self.restart_delay = restart_delay
        self.log = log
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.signals: list[int] = []

    def _spawn(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            self.commands[name], cwd=self.cwd, env=self.env, start_new_session=True
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        if len(self.signals) > 1:
            for process in self.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)

    def run(self, on_tick: Callable[[], None] | None = None, tick: float = 0.2) -> str | None:
        """Start the children and supervise them until a signal; return a failure, if any."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        failure = None
        try:
            for name in self.commands:
                self._spawn(name)
            failure = self._supervise(on_tick, tick)
        finally:
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return failure

    def _supervise(self, on_tick: Callable[[], None] | None, tick: float) -> str | None:
        while not self.signals:
            for name, process in list(self.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                if not self.restart:
                    return f"The {name} exited unexpectedly (exit code {code})."
                self.log(f"{name} exited with code {code}; starting it again.")
                time.sleep(self.restart_delay)
                if not self.signals:
                    self._spawn(name)
            if on_tick is not None:
                on_tick()
            time.sleep(tick)
        return None

    def _stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, process in self.processes.items():
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is None:
                self.log(f"{name} did not stop in time; killing it.")
                process.kill()
            process.wait()
