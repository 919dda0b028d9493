"""Loading a `timestamptz` that Python's datetime cannot hold, instead of failing the query.

PostgreSQL stores times from 4713 BC to 294276 AD, and `infinity` / `-infinity`; Python's
datetime runs from year 1 to 9999. psycopg refuses the rest with a DataError ("timestamp too
small (before year 1)") when it loads a row, and the whole query fails. One job row with
such a `scheduled_at` (written by `'0001-01-01T00:00:00+14:00'`, stored as 0001-12-31 BC;
its `scheduled` event gets the same `at`) then broke every reader of job rows: the worker
that fetched it exited, stalled-job recovery failed, the admin, the status API, the
dashboard and the metrics answered 500.

With the loaders registered here a time before year 1 (or `-infinity`) loads as `EARLIEST`
and a time after 9999 (or `infinity`) as `LATEST`: aware, in UTC, a day inside datetime's
range (`datetime.min` / `datetime.max` would overflow when shown in a time zone ahead of /
behind UTC, as Django's templates and admin do with every time). The row itself is not
changed: a reader sees "as early" or "as late as a datetime goes", which is what the row
says; code that must tell a bound from a real time compares with `EARLIEST` / `LATEST`.
Any other load error is still raised.

Registered on every connection that reads job rows, once per connection:

- Django's connections, by `jobs.apps` on `connection_created`: on top of the loader
  Django's backend registers for the connection's time zone, whose time zone the bounds
  then take (UTC with `USE_TZ = True`, naive without), as Django's own loader does for
  every other time. (A connection whose time zone changes while open, which only tests do
  with `override_settings`, gets Django's plain loader back on its cursors.)
- The worker's connections, by `jobs.connector` (the adapters passed as `context=`).

Only `timestamptz`: every time in procrastinate's tables and this app's is one (the one
`date`, a day of the daily statistics, is computed from job results, not taken from input).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from psycopg import DataError, adapt, pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.postgres import types

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

# A UTC offset is less than a day: these convert to every time zone.
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(days=1)

TIMESTAMPTZ_OID = types["timestamptz"].oid


def _is_before_year_one(data: Buffer, format: pq.Format) -> bool | None:
    """Whether a value psycopg could not load lies before year 1 (True), after 9999 (False),
    or neither (None: it failed for another reason)."""
    if format == pq.Format.BINARY:  # microseconds since 2000-01-01, PostgreSQL's int8
        return int.from_bytes(bytes(data), "big", signed=True) < 0
    # The text psycopg reads (DateStyle ISO, which it requires): its own rule for the error.
    text = bytes(data).decode("ascii", "replace")
    if text == "-infinity" or text.endswith(" BC"):
        return True
    if text == "infinity" or len(text.split(" ", 1)[0]) > len("9999-12-31"):
        return False
    return None


class _TolerantLoader(adapt.Loader):
    """The loader registered before it, except that out-of-range times load as bounds."""

    wrapped: ClassVar[type[adapt.Loader]]
    # Django's loaders carry the connection's time zone (None: naive times) and Django
    # compares it with its own before each cursor, so it is kept; the bounds take it too.
    timezone: ClassVar[dt.tzinfo | None] = dt.UTC

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        # An instance, not a subclass: psycopg's C loaders are called below Python's
        # `load`, so a Python override of a C loader would never run.
        self._load = self.wrapped(oid, context).load

    def load(self, data: Buffer) -> Any:
        try:
            return self._load(data)
        except DataError:
            before = _is_before_year_one(data, self.format)
            if before is None:
                raise
            return (EARLIEST if before else LATEST).replace(tzinfo=self.timezone)


@functools.cache
def _tolerant(loader: type[adapt.Loader]) -> type[_TolerantLoader]:
    namespace = {
        "wrapped": loader,
        "format": loader.format,
        "timezone": getattr(loader, "timezone", dt.UTC),
    }
    return type(f"Tolerant{loader.__name__}", (_TolerantLoader,), namespace)


def tolerate_out_of_range_times(context: AdaptContext) -> None:
    """Make `context` (a connection, a cursor, an adapters map) load out-of-range
    `timestamptz` values as `EARLIEST` / `LATEST`. Safe to call again."""
    adapters = context.adapters
    for format in (pq.Format.TEXT, pq.Format.BINARY):
        loader = adapters.get_loader(TIMESTAMPTZ_OID, format)
        if loader is not None and not issubclass(loader, _TolerantLoader):
            adapters.register_loader(TIMESTAMPTZ_OID, _tolerant(loader))


def tolerant_adapters(context: AdaptContext | None = None) -> adapt.AdaptersMap:
    """`context`'s adapters (psycopg's defaults without one), loading out-of-range times as
    bounds: pass it as `context=` to psycopg's `connect()`."""
    adapters = adapt.AdaptersMap(context.adapters if context is not None else psycopg.adapters)
    tolerate_out_of_range_times(adapters)
    return adapters


def tolerate_out_of_range_times_on_django_connection(
    *, connection: BaseDatabaseWrapper, **kwargs: Any
) -> None:
    """`connection_created` receiver: the new connection of a PostgreSQL database on psycopg 3."""
    if isinstance(connection.connection, psycopg.Connection):
        tolerate_out_of_range_times(connection.connection)
