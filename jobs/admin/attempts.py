"""A job's ended attempts (`JobResult.attempts_log`) as an HTML table: who ran each, when,
how it ended, and its error with the traceback folded away."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs.admin.formatting import moment, shortened, status_badge
from jobs.time_labels import duration_label

TRACEBACK_CHARS = 20_000


def _at(text: Any) -> dt.datetime | None:
    return parse_datetime(text) if isinstance(text, str) else None


def _worker(entry: dict[str, Any]) -> str:
    name, worker_id = entry.get("worker_name") or "", entry.get("worker_id")
    if worker_id is None:
        return name or "-"
    return f"{name} (#{worker_id})" if name else f"#{worker_id}"


def _took(started: dt.datetime | None, finished: dt.datetime | None) -> str:
    if started is None or finished is None:
        return "-"
    return duration_label(max(0.0, (finished - started).total_seconds()))


def _error(error: Any) -> SafeString:
    if not isinstance(error, dict):
        return format_html("{}", "-")
    trace = error.get("traceback") or ""
    folded = SafeString()
    if trace:
        folded = format_html(
            "<details><summary>Traceback</summary>{}</details>",
            shortened(trace, TRACEBACK_CHARS),
        )
    return format_html(
        "<strong>{}</strong>: {}{}",
        error.get("type", ""),
        str(error.get("message", ""))[:500],
        folded,
    )


def render_attempts(entries: Sequence[dict[str, Any]]) -> SafeString:
    """One row per ended attempt, oldest first."""
    if not entries:
        return format_html("{}", "No attempt has ended yet.")
    rows = []
    for entry in entries:
        started, finished = _at(entry.get("started_at")), _at(entry.get("finished_at"))
        rows.append(
            (
                entry.get("attempt", "?"),
                status_badge(str(entry.get("status", "?"))),
                _worker(entry),
                moment(started),
                moment(finished),
                _took(started, finished),
                _error(entry.get("error")),
            )
        )
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        rows,
    )
    return format_html(
        '<table class="jobs-attempts"><thead><tr><th>Attempt</th><th>Ended as</th>'
        "<th>Worker</th><th>Started</th><th>Finished</th><th>Took</th><th>Error</th></tr>"
        "</thead><tbody>{}</tbody></table>",
        body,
    )
