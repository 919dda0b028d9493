"""When a stored schedule ticks: cron lines in a time zone, fixed intervals, a single time.

Pure functions of the schedule's fields and a moment; jobs/schedules.py stores and runs.

Cron lines have 5 fields, or 6 with the seconds LAST (croniter's and procrastinate's order,
as in `@app.periodic(cron=...)`). They are read in the schedule's time zone, on the wall
clock, then turned into an instant:

- a wall-clock time the clock skips (02:30 on the night clocks go forward) runs once, at the
  instant it names with the offset before the change (03:30 local), or not at all when the
  next tick of the line comes first (every 30 minutes gives 03:00, 03:30: the ticks the gap
  swallowed are not made up);
- a wall-clock time the clock shows twice (02:30 on the night clocks go back) runs once, at
  its first occurrence; except in a line that runs every hour (hour field `*`), which keeps
  its pace through the repeated hour (every 30 minutes runs four times between 02:00 and
  03:00 that night, as it does every 30 minutes of real time).

So every tick is strictly later than the one before: a schedule never runs twice for one
wall-clock time, nor zero times for a daily time that happens to fall in a gap.

Intervals (every N seconds, minutes, hours or days) count real time from the schedule's start
(or its creation), whatever the time zone: every day is every 24 hours.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Iterator

from croniter import CroniterError, croniter

UNITS = {
    "seconds": dt.timedelta(seconds=1),
    "minutes": dt.timedelta(minutes=1),
    "hours": dt.timedelta(hours=1),
    "days": dt.timedelta(days=1),
}
# PostgreSQL and Python both hold this; a schedule never ticks after it.
LAST_MOMENT = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


class ScheduleTimeError(ValueError):
    """A cron line, time zone or interval that cannot make ticks; the message says why."""


def cron_problem(cron: str) -> str | None:
    """Why `cron` is not a cron line this module reads, or None."""
    fields = cron.split()
    if len(fields) not in (5, 6):
        return (
            f"A cron line has 5 fields (minute hour day month weekday), or 6 with the "
            f"seconds last; this one has {len(fields)}."
        )
    try:
        croniter(" ".join(fields))
    except (CroniterError, ValueError, KeyError) as error:
        return f"Not a cron line: {error}"
    return None


@functools.lru_cache(maxsize=512)
def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The time zone called `name` (an IANA name such as "Europe/Paris")."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleTimeError(f"Unknown time zone: {name!r}.") from error


def cron_ticks(cron: str, zone: str, *, after: dt.datetime) -> Iterator[dt.datetime]:
    """The instants (UTC) at which `cron` read in `zone` ticks, strictly after `after`."""
    if problem := cron_problem(cron):
        raise ScheduleTimeError(problem)
    tz = time_zone(zone)
    fields = cron.split()
    # A line that runs every hour keeps its pace through the hour shown twice.
    hourly = fields[1] == "*"
    after = after.astimezone(dt.UTC)
    wall_clock = croniter(" ".join(fields), _wall_clock_start(after, tz))
    previous = after
    repeated: list[dt.datetime] = []  # second occurrences still to come, in order
    while True:
        try:
            local: dt.datetime = wall_clock.get_next(dt.datetime)
        except (CroniterError, ValueError, OverflowError):
            return  # past year 9999, or a date that never comes (February 30)
        # fold=0: the first occurrence of a repeated time, and for a skipped one the offset
        # in force before the change.
        instant = local.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
        if hourly:
            second = local.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
            if second > instant:
                repeated.append(second)
        while repeated and repeated[0] < instant:
            tick = repeated.pop(0)
            if tick > previous:
                previous = tick
                yield tick
        if instant > LAST_MOMENT:
            return
        if instant > previous:
            previous = instant
            yield instant


# The most a clock change moves a wall clock, with room to spare (DST moves it by an hour).
CLOCK_CHANGE_REACH = dt.timedelta(hours=3)


def _wall_clock_start(after: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The wall-clock time from which to read a line's times to find its ticks after `after`.

    Near a clock change, a few hours early: the tick of a wall-clock time shown twice (its
    second occurrence, in an hourly line) or skipped (02:30, run at 03:30) can come after
    `after` while the wall-clock time it names comes before `after`'s. Elsewhere, `after`'s
    own: walking hours of wall-clock times costs a line with seconds thousands of steps, for
    each due schedule on each tick of the scheduler.
    """
    wall = after.astimezone(tz).replace(tzinfo=None)
    hour = dt.timedelta(hours=1)
    hours = int(CLOCK_CHANGE_REACH / hour) + 1
    offsets = {(after + n * hour).astimezone(tz).utcoffset() for n in range(-hours, hours + 1)}
    return wall - CLOCK_CHANGE_REACH if len(offsets) > 1 else wall


def interval_ticks(
    every: int, unit: str, *, anchor: dt.datetime, after: dt.datetime
) -> Iterator[dt.datetime]:
    """anchor + k * period for every k with a tick strictly after `after`."""
    if unit not in UNITS or every < 1:
        raise ScheduleTimeError("An interval is a whole number of seconds, minutes, hours or days.")
    period = UNITS[unit] * every
    anchor = anchor.astimezone(dt.UTC)
    after = after.astimezone(dt.UTC)
    steps = 0 if after < anchor else (after - anchor) // period + 1
    # Counted from the end, not added up: a sum past year 9999 raises OverflowError.
    room = LAST_MOMENT - anchor
    while period * steps <= room:
        yield anchor + period * steps
        steps += 1


def next_tick(ticks: Iterator[dt.datetime]) -> dt.datetime | None:
    return next(ticks, None)
