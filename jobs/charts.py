"""The dashboard's charts, drawn on the server as inline SVG.

No charting library and nothing fetched by the browser: the page refreshes by fetching the
panels again, charts included. Every text goes through format_html. Each chart carries
`data-chart` and its marks carry `data-value`, so tests (and curious readers of the page
source) can find the figures behind the drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from jobs.queue_stats import Percentiles, QueueState, Throughput
from jobs.time_labels import duration_label

SUCCEEDED = "#2f9e55"
FAILED = "#d64532"
WAITING = "#4c78a8"
SCHEDULED = "#a7c1e0"
RUNNING = "#f0a030"
AXIS = "#98a2b3"
TEXT = "#475467"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (1 for 0)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover (the loop always returns)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _svg(kind: str, width: int, height: int, label: str, body: SafeString) -> SafeString:
    return format_html(
        '<svg class="chart" data-chart="{}" viewBox="0 0 {} {}" width="100%" role="img" '
        'aria-label="{}" xmlns="http://www.w3.org/2000/svg">{}</svg>',
        kind,
        width,
        height,
        label,
        body,
    )


def _join(parts: Sequence[SafeString]) -> SafeString:
    return mark_safe("".join(parts))  # each part was built by format_html


def throughput_chart(data: Throughput, *, width: int = 900, height: int = 240) -> SafeString:
    """Stacked bars per bucket: succeeded below, failed on top, with a y scale and times."""
    left, right, top, bottom = 48, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [s + f for s, f in zip(data.succeeded, data.failed, strict=True)]
    ceiling = nice_ceiling(max(totals, default=0))
    count = len(totals)
    slot = plot_w / max(count, 1)
    bar = round(max(slot * 0.8, 0.5), 2)
    parts: list[SafeString] = []
    for fraction in (0, 0.5, 1):
        y = round(top + plot_h * (1 - fraction), 1)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="0.5"/>'
                '<text x="{}" y="{}" font-size="11" text-anchor="end" fill="{}">{}</text>',
                left,
                width - right,
                y,
                y,
                AXIS,
                left - 6,
                y + 4,
                TEXT,
                _number(ceiling * fraction),
            )
        )
    times = data.times()
    zone = timezone.get_current_timezone()
    label_every = max(1, round(count / 6))
    for index, (moment, succeeded, failed) in enumerate(
        zip(times, data.succeeded, data.failed, strict=True)
    ):
        x = round(left + index * slot, 2)
        local = moment.astimezone(zone)
        if index % label_every == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="11" fill="{}">{}</text>',
                    x,
                    height - 8,
                    TEXT,
                    local.strftime("%H:%M"),
                )
            )
        if not succeeded and not failed:
            continue
        ok_h = round(plot_h * succeeded / ceiling, 2)
        bad_h = round(plot_h * failed / ceiling, 2)
        # Up to a few hundred bars per refresh: built from numbers and a time we format,
        # nothing to escape, so f-strings rather than format_html's escaping of each one.
        parts.append(
            mark_safe(
                f"<g><title>{local:%H:%M}: {succeeded} succeeded, {failed} failed</title>"
                f'<rect class="bar-succeeded" data-value="{succeeded}" x="{x}" '
                f'y="{round(top + plot_h - ok_h, 2)}" width="{bar}" height="{ok_h}" '
                f'fill="{SUCCEEDED}"/>'
                f'<rect class="bar-failed" data-value="{failed}" x="{x}" '
                f'y="{round(top + plot_h - ok_h - bad_h, 2)}" width="{bar}" height="{bad_h}" '
                f'fill="{FAILED}"/></g>'
            )
        )
    per = "minute" if data.bucket_seconds == 60 else f"{data.bucket_seconds} s"
    return _svg(
        "throughput",
        width,
        height,
        f"Jobs finished per {per}: succeeded and failed",
        _join(parts),
    )


def queue_chart(queues: Sequence[QueueState], *, width: int = 900) -> SafeString:
    """A bar per queue: jobs waiting (due now), scheduled for later, and running."""
    row, left, right = 26, 130, 90
    height = max(1, len(queues)) * row + 10
    plot_w = width - left - right
    ceiling = nice_ceiling(
        max((q.waiting + q.scheduled + q.counts.get("doing", 0) for q in queues), default=0)
    )
    parts: list[SafeString] = []
    for index, queue in enumerate(queues):
        y = 5 + index * row
        x = float(left)
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="12" text-anchor="end" fill="{}">{}</text>',
                left - 8,
                y + 15,
                TEXT,
                queue.queue,
            )
        )
        segments = (
            ("waiting", queue.waiting, WAITING),
            ("scheduled", queue.scheduled, SCHEDULED),
            ("running", queue.counts.get("doing", 0), RUNNING),
        )
        for name, value, colour in segments:
            w = round(plot_w * value / ceiling, 2)
            parts.append(
                format_html(
                    '<rect class="bar-{}" data-value="{}" x="{}" y="{}" width="{}" '
                    'height="18" fill="{}"><title>{}: {} {}</title></rect>',
                    name,
                    value,
                    x,
                    y,
                    w,
                    colour,
                    queue.queue,
                    f"{value:,}",
                    name,
                )
            )
            x = round(x + w, 2)
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="12" fill="{}">{} / {} / {}</text>',
                round(x + 6, 2),
                y + 14,
                TEXT,
                f"{queue.waiting:,}",
                f"{queue.scheduled:,}",
                f"{queue.counts.get('doing', 0):,}",
            )
        )
    return _svg(
        "queues", width, height, "Jobs per queue: waiting, scheduled, running", _join(parts)
    )


def percentile_chart(
    kind: str, rows: Sequence[Percentiles], *, width: int = 440, caption: str
) -> SafeString:
    """Per queue, a bar from the median to the 99th percentile on a logarithmic time axis
    (1 ms to 1 day), with a mark at the 90th."""
    row, left, right, top = 24, 110, 12, 22
    height = top + max(1, len(rows)) * row + 6
    plot_w = width - left - right
    low, high = math.log10(0.001), math.log10(86400)

    def x_of(seconds: float) -> float:
        clamped = min(max(seconds, 0.001), 86400)
        return round(left + plot_w * (math.log10(clamped) - low) / (high - low), 2)

    parts: list[SafeString] = []
    for seconds, label in ((0.01, "10 ms"), (1, "1 s"), (60, "1 min"), (3600, "1 h")):
        x = x_of(seconds)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="0.5"/>'
                '<text x="{}" y="12" font-size="10" text-anchor="middle" fill="{}">{}</text>',
                x,
                x,
                top - 4,
                height,
                AXIS,
                x,
                TEXT,
                label,
            )
        )
    for index, item in enumerate(rows):
        y = top + index * row
        start, end = x_of(item.p50), x_of(item.p99)
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="12" text-anchor="end" fill="{}">{}</text>'
                '<g class="percentiles" data-queue="{}" data-value="{}">'
                "<title>{}: median {}, 90% {}, 99% {} ({} jobs)</title>"
                '<rect x="{}" y="{}" width="{}" height="14" rx="3" fill="{}"/>'
                '<rect x="{}" y="{}" width="2" height="18" fill="{}"/></g>',
                left - 8,
                y + 12,
                TEXT,
                item.queue or "all queues",
                item.queue,
                round(item.p50, 6),
                item.queue or "all queues",
                duration_label(item.p50),
                duration_label(item.p90),
                duration_label(item.p99),
                item.samples,
                start,
                y,
                round(max(end - start, 2), 2),
                WAITING if kind == "waiting" else RUNNING,
                round(x_of(item.p90) - 1, 2),
                y - 2,
                TEXT,
            )
        )
    return _svg(kind, width, height, caption, _join(parts))


def legend(items: Sequence[tuple[str, str]]) -> SafeString:
    return format_html(
        '<p class="legend">{}</p>',
        format_html_join(
            " ", '<span><i style="background:{}"></i>{}</span>', ((c, n) for n, c in items)
        ),
    )
