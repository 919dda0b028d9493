"""The chart of `manage.py bench_jobs` (pillow, of the `bench` dependency group)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bench.celery_drain import chart_line


def write_chart(figures: dict[str, Any], path: Path) -> None:
    """A PNG with pickup latency percentiles and drain throughput per setup, with the
    recommended setup's ratio to Celery + Redis (or why Celery was skipped)."""
    width, height, margin = 1000, 670, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (margin, 15), "bench_jobs: pickup latency (ms) and drain throughput (jobs/s)", fill="black"
    )

    def bars(top: int, title: str, items: list[tuple[str, float]], colour: str) -> None:
        draw.text((margin, top), title, fill="black")
        area_top, area_bottom = top + 20, top + 250
        peak = max((value for _, value in items), default=1) or 1
        slot = (width - 2 * margin) / max(len(items), 1)
        for index, (label, value) in enumerate(items):
            left = margin + index * slot + 8
            bar_height = (area_bottom - area_top - 20) * value / peak
            draw.rectangle(
                (left, area_bottom - bar_height, left + slot - 16, area_bottom), fill=colour
            )
            draw.text((left, area_bottom - bar_height - 14), f"{value:,.1f}", fill="black")
            draw.text((left, area_bottom + 4), label, fill="black")

    notify = figures["pickup_listen_notify"]
    bars(
        40,
        "Pickup latency with LISTEN/NOTIFY (ms)",
        [(name, notify[f"{name}_ms"]) for name in ("median", "p95", "p99", "max")],
        "#3b82f6",
    )
    bars(
        340,
        "Drain throughput (jobs/s)",
        [(key.replace("/", "\n"), value["per_second"]) for key, value in figures["drain"].items()],
        "#10b981",
    )
    draw.text((margin, 640), chart_line(figures["celery"]), fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
