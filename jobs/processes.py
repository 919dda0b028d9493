"""The processes the job system starts: the ASGI server and workers, and their supervisor.

`run_site`, `run_workers`, the benchmarks and the test fixtures all start them the same way
(`start`) and stop them the same way (`stop`).
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

# A started process, whatever it writes: `start` makes bytes ones, a test may make text ones.
Process = subprocess.Popen[bytes] | subprocess.Popen[str]
# The exit code of a worker process that asks to be replaced: a job of it did not stop at its
# time limit, and its thread cannot be killed (jobs/time_limits.py). sysexits' EX_TEMPFAIL.
REPLACE_EXIT_CODE = 75


def web_server_command(host: str, port: int, *extra: str, application: str) -> list[str]:
    """uvicorn serving the site's ASGI `application` ("module:name"; sync and async views);
    no lifespan: Django has none."""
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


def site_directory() -> Path:
    """The directory children start in, so that `python -m django` imports the site's
    modules as this process did: manage.py's directory when this process runs manage.py
    (which puts its directory first on the import path, as `-m` does with the working
    directory), else the working directory. No setting is needed (a site may have no
    BASE_DIR)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "manage.py":
        return script.resolve().parent
    return Path.cwd()


def start(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    output: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """`command` started in `cwd` (by default `site_directory()`), in a session of its own:
    a terminal's Ctrl-C reaches only this process, which stops its children in its own order
    (`stop`). Its output and errors go to `output` (DEVNULL, a file), else where this
    process's go."""
    return subprocess.Popen(
        list(command),
        cwd=site_directory() if cwd is None else cwd,
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
    )


def stop(processes: Iterable[Process], *, timeout: float) -> list[Process]:
    """Stop `processes` as a service manager does: SIGTERM to each one still running (a
    procrastinate worker then finishes its jobs within its graceful timeout), a wait of at
    most `timeout` seconds for all of them together (`math.inf`: as long as they take),
    then SIGKILL to any still running. Returns those that had to be killed."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed: list[Process] = []
    for process in processes:
        left = deadline - time.monotonic()
        try:
            process.wait(timeout=None if math.isinf(left) else max(0.0, left))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.append(process)
    return killed


class ProcessGroup:
    """Child processes started together and stopped together, with signal forwarding.

    SIGINT or SIGTERM to this process stops the children gracefully (SIGTERM to each; a
    procrastinate worker then finishes its running jobs within its graceful timeout). A
    second signal is forwarded too: a worker receiving its second signal exits at once,
    leaving its jobs for stalled-job recovery. Children run in their own sessions, so a
    terminal's Ctrl-C reaches only this supervisor, which decides the order.

    With `restart`, a child that dies on its own is started again (after `restart_delay`);
    without, the group stops and `run()` returns why. A child that exits with one of
    `replace_codes` asked to be replaced: it is started again at once, with or without
    `restart`.
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        env: dict[str, str],
        cwd: Path | None = None,
        stop_timeout: float,
        restart: bool = False,
        restart_delay: float = 1.0,
        replace_codes: Collection[int] = (REPLACE_EXIT_CODE,),
        log: Callable[[str], None] = print,
    ) -> None:
        self.commands = commands
        self.cwd = site_directory() if cwd is None else cwd
        self.env = env
        self.stop_timeout = stop_timeout
        self.restart = restart
        self.restart_delay = restart_delay
        self.replace_codes = frozenset(replace_codes)
        self.log = log
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.signals: list[int] = []

    def _spawn(self, name: str) -> None:
        self.processes[name] = start(self.commands[name], env=self.env, cwd=self.cwd)

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
                if code in self.replace_codes:
                    self.log(f"{name} exited with code {code} to be replaced; starting it again.")
                    if not self.signals:
                        self._spawn(name)
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
        killed = stop(self.processes.values(), timeout=self.stop_timeout)
        for name, process in self.processes.items():
            if process in killed:
                self.log(f"{name} did not stop in time; it was killed.")
