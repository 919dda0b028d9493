"""What limits throughput, measured by `manage.py bench_jobs` beside its drains: the pickup
latency of urgent jobs while the recommended setup drains a backlog, the machine's ceiling
(PostgreSQL's own cost per job, the worker taken out: bench.ceiling), and the scaling grid,
jobs/s of `run_workers` against processes x concurrency. Figures and their lines of the
report."""

from __future__ import annotations

import re
from argparse import ArgumentTypeError
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.ceiling import ceiling
from bench.timing import alternating_rounds
from bench.workers import drain, pickup_latency_under_load, run_workers

# The bounds of each --grid cell: those of bench_jobs' --processes and --concurrency.
MAX_PROCESSES = 64
MAX_CONCURRENCY = 500
# Connections of the ceiling at most (PostgreSQL's max_connections is 100 by default).
MAX_CEILING_CONNECTIONS = 64
GRID_KIND = "noop_sync"
_CELL = re.compile(r"(\d+)x(\d+)")


def grid_cells(value: str) -> list[tuple[int, int]]:
    """`--grid`: cells "PROCESSESxCONCURRENCY" separated by commas ("" for none)."""
    if not value.strip():
        return []
    cells: list[tuple[int, int]] = []
    for text in (part.strip() for part in value.split(",")):
        match = _CELL.fullmatch(text)
        if match is None:
            raise ArgumentTypeError(
                f"{text!r} is not PROCESSESxCONCURRENCY: give cells such as 1x1,2x4"
            )
        cell = (int(match[1]), int(match[2]))
        if not (1 <= cell[0] <= MAX_PROCESSES and 1 <= cell[1] <= MAX_CONCURRENCY):
            raise ArgumentTypeError(
                f"{text}: from 1 to {MAX_PROCESSES} processes, "
                f"from 1 to {MAX_CONCURRENCY} concurrency"
            )
        if cell in cells:
            raise ArgumentTypeError(f"{text} is given twice")
        cells.append(cell)
    return cells


def ceiling_connections(options: dict[str, Any]) -> int:
    """The ceiling's connections: `--ceiling-connections`, by default one per slot of the
    recommended setup, which has as many statements in flight at most. (One or two are
    too few: each statement of a connection waits for the one before, commit included.)"""
    given: int | None = options["ceiling_connections"]
    return given or min(options["processes"] * options["concurrency"], MAX_CEILING_CONNECTIONS)


def scaling_figures(
    options: dict[str, Any], recommended: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """`pickup_under_load` with `recommended` (run_workers' command), `ceiling`, and `grid`
    when `--grid` names cells, with bench_jobs' parsed `options`."""
    jobs, count, pace = options["jobs"], options["load_latency_count"], options["load_latency_rate"]
    log(
        f"Pickup latency under load: {count:,} urgent jobs, {pace} a second, while the "
        f"recommended setup drains a backlog of {jobs:,}..."
    )
    figures: dict[str, Any] = {
        "pickup_under_load": pickup_latency_under_load(
            recommended,
            backlog=jobs,
            count=count,
            per_second=pace,
            listeners=options["processes"],
        )
    }
    connections = ceiling_connections(options)
    log(f"The ceiling: {jobs:,} jobs fetched and finished from {connections} connections...")
    figures["ceiling"] = ceiling(jobs, connections)
    if options["grid"]:
        figures["grid"] = grid(options["grid"], jobs, options["grid_repeat"], log)
    return figures


def grid(
    cells: list[tuple[int, int]], jobs: int, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """The drain of `jobs` no-op sync jobs by `run_workers --processes P --concurrency C`
    for each (P, C) of `cells`, in `rounds` alternating rounds; each cell's median run."""

    def announce(label: str, number: int) -> None:
        log(f"Grid: drain {jobs:,} {GRID_KIND} jobs with {label} ({number}/{rounds})...")

    labels = {
        f"{processes}x{concurrency}": (processes, concurrency) for processes, concurrency in cells
    }
    rows = alternating_rounds(
        rounds,
        [
            (label, partial(drain, run_workers(processes, concurrency), GRID_KIND, jobs))
            for label, (processes, concurrency) in labels.items()
        ],
        announce,
    )
    return {
        "kind": GRID_KIND,
        "cells": {
            label: {**row, "processes": labels[label][0], "concurrency": labels[label][1]}
            for label, row in rows.items()
        },
    }


# --- The report ---------------------------------------------------------------------------


def report_lines(figures: dict[str, Any]) -> list[str]:
    """The report's lines for the figures of `scaling_figures` in `figures` (all of
    bench_jobs' figures)."""
    recommended = figures["recommended"]
    setup = (
        f"run_workers --processes {recommended['processes']} "
        f"--concurrency {recommended['concurrency']}"
    )
    load = figures["pickup_under_load"]
    lines = [
        f"Pickup latency under load (no-op async jobs of a higher priority, {load['per_second']} "
        f"a second, while {setup} drains a backlog of no-op async jobs, never fewer than "
        f"{load['fewest_waiting']:,} seen waiting): median {load['median_ms']:.2f} ms, "
        f"p95 {load['p95_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms, "
        f"max {load['max_ms']:.2f} ms ({load['count']:,} jobs)"
    ]
    lines += _ceiling_lines(figures["ceiling"], figures["drain"])
    if "grid" in figures:
        lines += _grid_lines(figures["grid"])
    return lines


def _ceiling_lines(row: dict[str, Any], drains: dict[str, Any]) -> list[str]:
    lines = [
        "The machine's ceiling: no worker, only the statements a worker sends for each job "
        "(the app's fetch, then the job's end with its result row), from "
        f"{row['connections']} plain connection(s) as fast as they go: "
        f"{row['per_second']:,.1f} jobs/s ({row['jobs']:,} jobs in {row['seconds']} s): "
        "the most this machine's PostgreSQL does with these statements, which no worker "
        "sending them beats.",
    ]
    if row["server_cpu_ms_per_job"] is None:
        lines.append("  PostgreSQL's CPU per job: not measured (the server runs elsewhere)")
    else:
        lines.append(
            f"  CPU per job: PostgreSQL {row['server_cpu_ms_per_job']:.3f} ms (its backends "
            f"for these connections {row['backend_cpu_ms_per_job']:.3f} ms), the client "
            f"{row['client_cpu_ms_per_job']:.3f} ms; with every core given to PostgreSQL, "
            f"at most {row['cpu_bound_per_second']:,.0f} jobs/s"
        )
    shares = [
        f"{key.split('/')[0]} {value['per_second'] / row['per_second']:.0%}"
        for key, value in drains.items()
        if key.endswith("/recommended")
    ]
    if shares:
        lines.append(f"  the recommended setup's drains reach, of the ceiling: {', '.join(shares)}")
    return lines


def _grid_lines(figures: dict[str, Any]) -> list[str]:
    lines = [
        f"Scaling (no-op sync jobs/s, run_workers processes x concurrency, "
        f"median of {len(next(iter(figures['cells'].values()))['runs_per_second'])} run(s)):"
    ]
    for label, row in figures["cells"].items():
        runs = row["runs_per_second"]
        spread = f"   (runs: {', '.join(f'{rate:,.0f}' for rate in runs)})" if len(runs) > 1 else ""
        lines.append(
            f"  {label:<8}{row['per_second']:>10,.1f}   "
            f"({row['jobs']:,} jobs in {row['seconds']} s){spread}"
        )
    return lines
