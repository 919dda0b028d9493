"""When a job may be scheduled: one rule for every time that reaches procrastinate's tables.

PostgreSQL stores far more than Python can read back: `0001-01-01T00:00:00+14:00` is stored as
a date before Christ, which psycopg refuses to load ("timestamp too small"), and an offset
beyond ±15:59 is refused by PostgreSQL itself. So every time that comes from outside (the
JSON API, the admin's reschedule form) goes through `scheduled_time`, which converts it to UTC
in Python, where an overflow is a clear error, and keeps it within bounds that make sense for
a job: a little in the past (it then runs at once) and at most `JOBS_API_MAX_SCHEDULE_DAYS`
ahead.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from jobs.conf import jobs_settings

# A time in the past means "run now"; one much further back is a client's bug (a wrong year,
# a wrong unit), not a wish, and is refused rather than silently run.
MAX_PAST = dt.timedelta(days=1)


class ScheduleError(ValueError):
    """The time is not one a job can be scheduled at; the message says why."""


def max_ahead() -> dt.timedelta:
    return dt.timedelta(days=jobs_settings.JOBS_API_MAX_SCHEDULE_DAYS)


def to_utc(when: dt.datetime) -> dt.datetime:
    """`when` in UTC, where PostgreSQL stores it; ScheduleError if it falls out of Python's
    range there (year 1 at +14:00, year 9999 at -12:00), as it could not be read back."""
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:
        raise ScheduleError("Out of range once converted to UTC.") from None


def scheduled_time(when: dt.datetime, *, now: dt.datetime | None = None) -> dt.datetime:
    """Return `when` in UTC if a job may be scheduled then; raise ScheduleError otherwise.

    `when` must be aware. The result is safe to write to PostgreSQL and to read back.
    """
    if timezone.is_naive(when):
        raise ScheduleError("Must include a UTC offset, such as Z or +02:00.")
    in_utc = to_utc(when)
    now = now or timezone.now()
    if in_utc < now - MAX_PAST:
        raise ScheduleError(f"At most {MAX_PAST.days} day in the past.")
    if in_utc > now + max_ahead():
        raise ScheduleError(f"At most {jobs_settings.JOBS_API_MAX_SCHEDULE_DAYS} days ahead.")
    return in_utc
