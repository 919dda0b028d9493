"""Database backend: Django's PostgreSQL backend, pointed at the embedded server.

The server is started in `get_connection_params`, which Django calls just before it opens
a connection and which procrastinate's worker also calls to build its own connector, so
the first process that needs the database starts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db.backends.postgresql import base

from project.embedded_postgres import ensure_running


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        server = ensure_running(Path(self.settings_dict["EMBEDDED_DATA_DIR"]))
        params["host"] = server.host
        params["port"] = server.port
        return params
