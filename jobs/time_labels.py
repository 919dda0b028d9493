"""How durations and moments relative to now read on the job system's pages: the admin's
job list and job page, and the dashboard (its tables and its charts) write them alike."""

from __future__ import annotations

import datetime as dt


def duration_label(seconds: float) -> str:
    """340 ms, 1.2 s, 12 min, 3.5 h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def relative(moment: dt.datetime | None, *, now: dt.datetime) -> str:
    """ "in 4 min", "12 s ago"; "-" for no moment."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    text = duration_label(abs(seconds))
    return f"in {text}" if seconds >= 0 else f"{text} ago"
