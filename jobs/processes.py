"""Command lines for the processes this project starts: the ASGI server and workers.

`run_site`, the benchmarks and the test fixtures all start them the same way.
"""

from __future__ import annotations

import sys


def web_server_command(host: str, port: int, *extra: str) -> list[str]:
    """uvicorn serving `project.asgi` (sync and async views); no lifespan: Django has none."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "project.asgi:application",
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
