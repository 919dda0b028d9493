"""jobs/time_labels.py: the one way the admin and the dashboard write durations."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.time_labels import duration_label, relative


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (0.0, "0 ms"),
        (0.3404, "340 ms"),
        (1.5, "1.5 s"),
        (2.0, "2.0 s"),
        (119.94, "119.9 s"),
        (600, "10 min"),
        (7200, "2.0 h"),
        (12_600, "3.5 h"),
    ],
)
def test_duration_label__each_range(seconds: float, label: str) -> None:
    assert duration_label(seconds) == label


def test_relative__before_and_after_now() -> None:
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)

    assert relative(now - dt.timedelta(seconds=12), now=now) == "12.0 s ago"
    assert relative(now + dt.timedelta(minutes=4), now=now) == "in 4 min"
    assert relative(None, now=now) == "-"
