"""Database URLs and databases next to the configured one, for processes that must share
a database: worker processes started by tests get the test database's URL, and a database
created on the same server is reached with the same credentials.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.db import connection as default_connection
from django.db.backends.base.base import BaseDatabaseWrapper


def database_url(
    connection: BaseDatabaseWrapper = default_connection, *, name: str | None = None
) -> str:
    """A `DATABASE_URL` for `connection`'s server and database (or database `name`)."""
    params = connection.get_connection_params()
    host = str(params.get("host") or "localhost")
    port = params.get("port") or 5432
    user = quote(str(params.get("user") or ""), safe="")
    password = quote(str(params.get("password") or ""), safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@"
    database = quote(name or str(connection.settings_dict["NAME"]), safe="")
    return f"postgres://{credentials}{quote(host, safe='')}:{port}/{database}"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_database(name: str, *, connection: BaseDatabaseWrapper = default_connection) -> None:
    """(Re)create an empty database `name` on `connection`'s server."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {_quoted(name)}")


def drop_database(name: str, *, connection: BaseDatabaseWrapper = default_connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")


def connection_kwargs(
    name: str | None = None, *, connection: BaseDatabaseWrapper = default_connection
) -> dict[str, Any]:
    """psycopg `connect()` arguments for `connection`'s server (and database `name`)."""
    params = dict(connection.get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(django_only, None)
    if name is not None:
        params["dbname"] = name
    return params


def listening_pids(connection: BaseDatabaseWrapper = default_connection) -> set[int]:
    """Backends of `connection`'s database whose last statement was a LISTEN: the
    notification connections of running workers."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN %%'"
        )
        return {row[0] for row in cursor.fetchall()}
