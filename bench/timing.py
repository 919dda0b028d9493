"""Timing figures: latency percentiles of timed runs, the time of one SQL statement, and
rates measured in alternating rounds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.scratch import ScratchDatabase
from jobs.queue_stats import quantile


@dataclass(frozen=True)
class Latency:
    count: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        """The percentiles of `seconds` (not empty), in milliseconds, computed as the
        dashboard computes its own (one implementation: `jobs.queue_stats.quantile`)."""
        ms = sorted(value * 1000 for value in seconds)
        return cls(
            count=len(ms),
            median_ms=quantile(ms, 0.5),
            p95_ms=quantile(ms, 0.95),
            p99_ms=quantile(ms, 0.99),
            max_ms=ms[-1],
        )


def time_statement(database: ScratchDatabase, sql: str) -> float:
    """Seconds one run of `sql` takes on `database`."""
    with database.connect() as conn:
        started = time.perf_counter()
        conn.execute(sql).fetchall()
        return time.perf_counter() - started


Measure = Callable[[], dict[str, Any]]


def alternating_rounds(
    rounds: int,
    measures: Sequence[tuple[str, Measure]],
    announce: Callable[[str, int], None] = lambda label, number: None,
) -> dict[str, dict[str, Any]]:
    """Run each labelled measure (which returns a dict with its `per_second`) `rounds` times.

    Rounds alternate the measures, so that a slow spell of a shared machine slows them
    all, and the first measure goes first only in every other round (the tables grow run
    after run). Each label gets its median run (the lower middle one for an even count),
    with every run's rate in `runs_per_second`. `announce(label, round)` is called before
    each run.
    """
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in measures}
    for number in range(1, rounds + 1):
        for label, measure in measures if number % 2 else measures[::-1]:
            announce(label, number)
            runs[label].append(measure())
    figures = {}
    for label, results in runs.items():
        ranked = sorted(results, key=lambda result: result["per_second"])
        figures[label] = {
            **ranked[(len(ranked) - 1) // 2],
            "runs_per_second": [result["per_second"] for result in results],
        }
    return figures


def rate(count: int, seconds: float) -> dict[str, Any]:
    """`count` jobs in `seconds`, as a benchmark row."""
    return {"jobs": count, "seconds": round(seconds, 2), "per_second": round(count / seconds, 1)}


def with_ratio(pair: dict[str, dict[str, Any]], over: str, under: str) -> dict[str, Any]:
    """`pair` with the ratio of `over`'s median rate to `under`'s."""
    return {**pair, "ratio": round(pair[over]["per_second"] / pair[under]["per_second"], 3)}
