"""A job's events as an HTML table, with what each interval between them was."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs.admin.formatting import moment, status_badge
from jobs.admin.loaders import EventRow
from jobs.job_statuses import ATTEMPT_END_EVENTS, DUE_EVENTS
from jobs.time_labels import duration_label


def render_timeline(events: Sequence[EventRow]) -> SafeString:
    """The job's events as a table: when, how long after the previous one (and what that
    interval was: waiting or running), how long after the job was deferred."""
    if not events:
        return format_html("{}", "-")
    first = events[0].at
    rows = []
    previous: EventRow | None = None
    for event in events:
        gap = since = ""
        if previous is not None and previous.at and event.at:
            seconds = (event.at - previous.at).total_seconds()
            meaning = ""
            if previous.type in DUE_EVENTS and event.type == "started":
                meaning = "waited "
            elif previous.type == "started" and event.type in ATTEMPT_END_EVENTS:
                meaning = "ran "
            gap = f"{meaning}{duration_label(max(0.0, seconds))}"
        if first and event.at:
            since = f"+{duration_label(max(0.0, (event.at - first).total_seconds()))}"
        rows.append((status_badge(event.type), moment(event.at), gap, since))
        previous = event
    body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table class="jobs-timeline"><thead><tr><th>Event</th><th>At</th>'
        "<th>After the previous</th><th>Since the first</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        body,
    )
