"""Filters for the dashboard's templates: durations and times relative to the snapshot."""

from __future__ import annotations

import datetime as dt

from django import template

from jobs.time_labels import duration_label, relative

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """1.2 s, 340 ms, 12 min, 3.5 h."""
    return "-" if seconds is None else duration_label(seconds)


@register.filter
def relative_to(moment: dt.datetime | None, now: dt.datetime) -> str:
    """ "in 4 min" or "12 s ago", from `now` (the snapshot's time)."""
    return relative(moment, now=now)


@register.filter
def get(mapping: dict[str, int], key: str) -> int | None:
    return mapping.get(key)


@register.filter
def count(value: int | None) -> str:
    """1,234,567."""
    return "-" if value is None else f"{value:,}"
