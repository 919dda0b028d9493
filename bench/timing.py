"""Timing figures: latency percentiles of timed runs, and the time of one SQL statement."""

from __future__ import annotations

import time
from dataclasses import dataclass

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
