"""How times, counts, statuses and long texts read on the job and event pages (durations:
jobs/time_labels.py, shared with the dashboard)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def moment(at: dt.datetime | None) -> str:
    """A time in the site's time zone, to the second; "-" for none."""
    if at is None:
        return "-"
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S")


def shortened(text: str, limit: int, total: int | None = None) -> SafeString:
    """`text` in a scrolling <pre>, cut at `limit` characters with a note of what is left."""
    total = len(text) if total is None else total
    note = SafeString()
    if total > limit:
        note = format_html(
            '<p class="jobs-shortened">Shortened: {} of {} characters shown.</p>',
            f"{limit:,}",
            f"{total:,}",
        )
    return format_html('<pre class="jobs-pre">{}</pre>{}', text[:limit], note)


def status_badge(status: str) -> SafeString:
    return format_html('<span class="jobs-status jobs-status-{}">{}</span>', status, status)
