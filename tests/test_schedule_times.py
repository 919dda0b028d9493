"""jobs.schedule_times: the ticks of cron lines in a time zone (through both DST changes) and
of fixed intervals. Pure functions: no database.

Europe/Paris in 2026: clocks go forward on 29 March at 01:00 UTC (02:00 CET becomes 03:00
CEST: 02:00 to 02:59 never show) and back on 25 October at 01:00 UTC (03:00 CEST becomes
02:00 CET: 02:00 to 02:59 show twice).
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import Iterator

import pytest
from croniter import croniter

from jobs import schedule_times

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
SPRING_FORWARD = dt.date(2026, 3, 29)
FALL_BACK = dt.date(2026, 10, 25)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def local_day(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The instants (UTC) at which `day` starts and ends on Paris clocks."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=PARIS)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=PARIS)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def ticks_on(cron: str, day: dt.date) -> list[dt.datetime]:
    """The ticks of `cron` during `day` on Paris clocks."""
    start, end = local_day(day)
    ticks = schedule_times.cron_ticks(
        cron, "Europe/Paris", after=start - dt.timedelta(microseconds=1)
    )
    return list(itertools.takewhile(lambda tick: tick < end, ticks))


def gaps(ticks: list[dt.datetime]) -> set[dt.timedelta]:
    return {later - earlier for earlier, later in itertools.pairwise(ticks)}


# --- a daily time in the hour the clocks skip or repeat -------------------------------------


def test_cron_ticks__daily_0230_runs_once_on_the_spring_forward_day() -> None:
    ticks = ticks_on("30 2 * * *", SPRING_FORWARD)

    # 02:30 never shows that night: it runs at 03:30 CEST, the instant 02:30 CET names.
    assert ticks == [utc(2026, 3, 29, 1, 30)]
    assert ticks[0].astimezone(PARIS).strftime("%H:%M %Z") == "03:30 CEST"


def test_cron_ticks__daily_0230_runs_once_on_the_fall_back_day() -> None:
    ticks = ticks_on("30 2 * * *", FALL_BACK)

    # 02:30 shows twice: it runs at the first, in summer time.
    assert ticks == [utc(2026, 10, 25, 0, 30)]
    assert ticks[0].astimezone(PARIS).strftime("%H:%M %Z") == "02:30 CEST"


def test_cron_ticks__daily_0230_after_its_first_occurrence_waits_for_the_next_day() -> None:
    # 02:15 CET, in the repeated hour, after 02:30 CEST ran: 02:30 CET is not a second run.
    after = utc(2026, 10, 25, 1, 15)

    ticks = schedule_times.cron_ticks("30 2 * * *", "Europe/Paris", after=after)

    assert next(ticks) == utc(2026, 10, 26, 1, 30)  # 02:30 CET the next day


def test_cron_ticks__daily_0230_from_just_after_the_gap_runs_that_night() -> None:
    # 03:10 CEST on the spring-forward night: 02:30 (03:30 CEST) is still to come.
    after = utc(2026, 3, 29, 1, 10)

    ticks = schedule_times.cron_ticks("30 2 * * *", "Europe/Paris", after=after)

    assert next(ticks) == utc(2026, 3, 29, 1, 30)
    assert next(ticks) == utc(2026, 3, 30, 0, 30)


def test_cron_ticks__daily_0230_all_year_runs_once_a_day() -> None:
    ticks = schedule_times.cron_ticks("30 2 * * *", "Europe/Paris", after=utc(2025, 12, 31, 23))
    year = list(itertools.takewhile(lambda tick: tick.year == 2026, ticks))

    days = [tick.astimezone(PARIS).date() for tick in year]
    assert len(days) == 365
    assert len(set(days)) == 365


# --- every 30 minutes through both changes ----------------------------------------------------


def test_cron_ticks__every_30_minutes_keeps_its_pace_through_spring_forward() -> None:
    ticks = ticks_on("*/30 * * * *", SPRING_FORWARD)

    # A 23-hour day: 46 ticks, every 30 minutes of real time, none twice.
    assert len(ticks) == 46
    assert gaps(ticks) == {dt.timedelta(minutes=30)}
    around = [tick for tick in ticks if utc(2026, 3, 29, 0) <= tick <= utc(2026, 3, 29, 2)]
    assert [tick.astimezone(PARIS).strftime("%H:%M") for tick in around] == [
        "01:00",
        "01:30",
        "03:00",
        "03:30",
        "04:00",
    ]


def test_cron_ticks__every_30_minutes_keeps_its_pace_through_fall_back() -> None:
    ticks = ticks_on("*/30 * * * *", FALL_BACK)

    # A 25-hour day: 50 ticks; the repeated hour runs at 02:00 and 02:30 twice.
    assert len(ticks) == 50
    assert gaps(ticks) == {dt.timedelta(minutes=30)}
    walls = [tick.astimezone(PARIS).strftime("%H:%M %Z") for tick in ticks]
    assert walls[4:10] == [
        "02:00 CEST",
        "02:30 CEST",
        "02:00 CET",
        "02:30 CET",
        "03:00 CET",
        "03:30 CET",
    ]


def test_cron_ticks__every_30_minutes_of_given_hours_runs_each_wall_time_once() -> None:
    # The hour field is not `*`: the line names wall-clock times, each runs once.
    ticks = ticks_on("*/30 0-5 * * *", FALL_BACK)

    walls = [tick.astimezone(PARIS).strftime("%H:%M") for tick in ticks]
    assert walls == [f"{hour:02}:{minute:02}" for hour in range(6) for minute in (0, 30)]
    assert ticks == sorted(set(ticks))


def test_cron_ticks__from_the_second_pass_of_the_repeated_hour() -> None:
    # 02:10 CET: the second 02:30 of an hourly line is still to come, the first is past.
    after = utc(2026, 10, 25, 1, 10)

    ticks = schedule_times.cron_ticks("*/30 * * * *", "Europe/Paris", after=after)

    assert list(itertools.islice(ticks, 3)) == [
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2, 0),
        utc(2026, 10, 25, 2, 30),
    ]


def test_cron_ticks__from_just_before_fall_back_includes_the_repeated_hour() -> None:
    # 02:45 CEST: next come 02:00 CET and 02:30 CET (the hour shown again), then 03:00 CET.
    after = utc(2026, 10, 25, 0, 45)

    ticks = schedule_times.cron_ticks("*/30 * * * *", "Europe/Paris", after=after)

    assert list(itertools.islice(ticks, 3)) == [
        utc(2026, 10, 25, 1, 0),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2, 0),
    ]


def reference_ticks(cron: str, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """The ticks of one long walk from a day before `start`: those of any later `after`
    must be the ones of this walk that follow it."""
    ticks = schedule_times.cron_ticks(cron, "Europe/Paris", after=start - dt.timedelta(days=1))
    return itertools.takewhile(lambda tick: tick <= end, ticks)


@pytest.mark.parametrize("cron", ["*/30 * * * *", "30 2 * * *", "*/20 1-3 * * *", "15 * * * *"])
@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK])
def test_cron_ticks__from_any_moment_are_the_rest_of_the_same_ticks(
    cron: str, day: dt.date
) -> None:
    start, end = local_day(day)
    start -= dt.timedelta(hours=4)
    end += dt.timedelta(hours=4)
    walk = list(reference_ticks(cron, start, end + dt.timedelta(days=5)))
    after = start
    while after < end:
        expected = [tick for tick in walk if tick > after][:3]

        assert (
            list(itertools.islice(schedule_times.cron_ticks(cron, "Europe/Paris", after=after), 3))
            == expected
        ), after

        after += dt.timedelta(minutes=7, seconds=30)


# --- lines with seconds, other zones, limits -------------------------------------------------


def test_cron_ticks__six_fields_have_the_seconds_last() -> None:
    ticks = schedule_times.cron_ticks("* * * * * */20", "UTC", after=utc(2026, 5, 1, 12, 0, 5))

    assert list(itertools.islice(ticks, 4)) == [
        utc(2026, 5, 1, 12, 0, 20),
        utc(2026, 5, 1, 12, 0, 40),
        utc(2026, 5, 1, 12, 1, 0),
        utc(2026, 5, 1, 12, 1, 20),
    ]


def test_cron_ticks__every_second_reads_few_wall_clock_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next tick of an every-second line, far from a clock change, is found by reading
    the next wall-clock time or so, not the thousands of seconds before `after`: the
    scheduler asks it for each due schedule on each tick."""
    read = 0
    get_next = croniter.get_next

    def counting(self: croniter, *args: object, **kwargs: object) -> object:
        nonlocal read
        read += 1
        return get_next(self, *args, **kwargs)

    monkeypatch.setattr(croniter, "get_next", counting)

    ticks = schedule_times.cron_ticks("* * * * * *", "Europe/Paris", after=utc(2026, 5, 1, 12))

    assert next(ticks) == utc(2026, 5, 1, 12, 0, 1)
    assert read <= 2


def test_cron_ticks__every_second_through_fall_back_keeps_its_pace() -> None:
    after = utc(2026, 10, 25, 0, 59, 58)

    ticks = list(
        itertools.islice(schedule_times.cron_ticks("* * * * * *", "Europe/Paris", after=after), 4)
    )

    assert ticks == [after + dt.timedelta(seconds=n) for n in range(1, 5)]


def test_cron_ticks__in_new_york() -> None:
    # Clocks went forward on 8 March 2026 at 02:00 EST (07:00 UTC).
    start = dt.datetime(2026, 3, 8, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    end = start + dt.timedelta(days=1)
    ticks = list(
        itertools.takewhile(
            lambda tick: tick < end,
            schedule_times.cron_ticks("30 2 * * *", "America/New_York", after=start),
        )
    )

    assert ticks == [utc(2026, 3, 8, 7, 30)]  # 03:30 EDT


def test_cron_ticks__stop_at_a_date_that_never_comes() -> None:
    ticks = schedule_times.cron_ticks("0 0 30 2 *", "UTC", after=utc(2026, 1, 1))

    assert list(ticks) == []


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "this one has 4"),
        ("* * * * * * *", "this one has 7"),
        ("61 * * * *", "Not a cron line"),
        ("* * * * mon-nope", "Not a cron line"),
    ],
)
def test_cron_problem__says_why(cron: str, message: str) -> None:
    problem = schedule_times.cron_problem(cron)

    assert problem is not None
    assert message in problem
    with pytest.raises(schedule_times.ScheduleTimeError, match=message):
        next(schedule_times.cron_ticks(cron, "UTC", after=utc(2026, 1, 1)))


def test_cron_problem__accepts_five_and_six_fields() -> None:
    assert schedule_times.cron_problem("30 2 * * *") is None
    assert schedule_times.cron_problem("*/5 * * * * *") is None


def test_time_zone__unknown_name() -> None:
    with pytest.raises(schedule_times.ScheduleTimeError, match="Unknown time zone: 'Mars/Olympus'"):
        schedule_times.time_zone("Mars/Olympus")


# --- intervals ---------------------------------------------------------------------------


def test_interval_ticks__count_from_the_anchor() -> None:
    anchor = utc(2026, 5, 1, 12, 0, 0)

    ticks = schedule_times.interval_ticks(
        90, "seconds", anchor=anchor, after=utc(2026, 5, 1, 12, 4)
    )

    assert list(itertools.islice(ticks, 3)) == [
        utc(2026, 5, 1, 12, 4, 30),
        utc(2026, 5, 1, 12, 6, 0),
        utc(2026, 5, 1, 12, 7, 30),
    ]


def test_interval_ticks__before_the_anchor_start_at_it() -> None:
    anchor = utc(2026, 5, 1, 12)

    ticks = schedule_times.interval_ticks(2, "hours", anchor=anchor, after=utc(2026, 5, 1, 9))

    assert next(ticks) == anchor


def test_interval_ticks__on_a_tick_give_the_next_one() -> None:
    anchor = utc(2026, 5, 1, 12)

    ticks = schedule_times.interval_ticks(1, "minutes", anchor=anchor, after=utc(2026, 5, 1, 12, 5))

    assert next(ticks) == utc(2026, 5, 1, 12, 6)


def test_interval_ticks__a_day_is_24_hours_through_dst() -> None:
    anchor = dt.datetime(2026, 3, 28, 2, 30, tzinfo=PARIS)

    ticks = schedule_times.interval_ticks(1, "days", anchor=anchor, after=anchor)

    assert next(ticks) - anchor == dt.timedelta(hours=24)
    assert next(ticks).astimezone(PARIS).strftime("%d %H:%M") == "30 03:30"


@pytest.mark.parametrize(("every", "unit"), [(0, "seconds"), (1, "weeks"), (-1, "days")])
def test_interval_ticks__refuse_what_is_not_an_interval(every: int, unit: str) -> None:
    with pytest.raises(schedule_times.ScheduleTimeError):
        next(
            schedule_times.interval_ticks(
                every, unit, anchor=utc(2026, 1, 1), after=utc(2026, 1, 1)
            )
        )


def test_interval_ticks__stop_before_the_last_moment() -> None:
    anchor = utc(9999, 12, 20)

    ticks = list(schedule_times.interval_ticks(3, "days", anchor=anchor, after=anchor))

    assert ticks == [utc(9999, 12, 23), utc(9999, 12, 26), utc(9999, 12, 29)]


def test_interval_ticks__none_after_the_last_moment() -> None:
    anchor = utc(9999, 1, 1)

    ticks = schedule_times.interval_ticks(3000, "days", anchor=anchor, after=utc(9999, 6, 1))

    assert list(ticks) == []
