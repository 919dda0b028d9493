"""Every measurement of `manage.py bench_jobs`, in order, as one dict of figures (the
measuring process's default database is the benchmark's scratch database)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bench.defer_cost import defer_rates, view_overhead
from bench.workers import drain, pickup_latency, run_workers, soak, stock_worker


def run_all(options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Run each measurement with `options` (bench_jobs' parsed options), logging progress."""
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}
    log("Defer rate...")
    figures["defer_per_second"] = defer_rates(options["defer_count"])
    processes, concurrency = options["processes"], options["concurrency"]
    recommended = run_workers(processes, concurrency)
    figures["recommended"] = {"processes": processes, "concurrency": concurrency}
    figures["drain"] = {}
    setups = (("stock", stock_worker()), ("recommended", recommended))
    rounds = options["repeat"]
    for kind in options["kinds"]:
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in setups}
        # Rounds alternate the setups, so that a slow spell of a shared machine slows
        # both; each setup's median run (the lower middle one for an even count) is
        # reported, with every run's rate.
        for number in range(1, rounds + 1):
            # Each setup goes first in every other round: the tables grow run after run.
            for label, command in setups if number % 2 else setups[::-1]:
                what = f"{options['jobs']:,} {kind} jobs with the {label} setup"
                log(f"Drain {what} ({number}/{rounds})...")
                runs[label].append(drain(command, kind, options["jobs"]))
        for label, results in runs.items():
            ranked = sorted(results, key=lambda result: result["per_second"])
            figures["drain"][f"{kind}/{label}"] = {
                **ranked[(len(ranked) - 1) // 2],
                "runs_per_second": [result["per_second"] for result in results],
            }
    log("Pickup latency with LISTEN/NOTIFY...")
    figures["pickup_listen_notify"] = pickup_latency(
        recommended, options["latency_count"], listeners=processes
    ).__dict__
    poll = options["poll_interval"]
    log(f"Pickup latency with polling only (every {poll} s)...")
    polling = run_workers(
        processes, concurrency, "--no-listen-notify", "--fetch-job-polling-interval", str(poll)
    )
    figures["pickup_polling"] = pickup_latency(
        polling, options["polling_latency_count"], listeners=0
    ).__dict__
    figures["pickup_polling"]["interval_seconds"] = poll
    log("View overhead under uvicorn...")
    figures["view_overhead"] = view_overhead(options["requests"])
    if options["soak"]:
        log(f"Soak: {options['soak']:,} jobs, finished jobs deleted...")
        figures["soak"] = soak(
            run_workers(processes, concurrency, "--delete-jobs", "successful"), options["soak"], log
        )
    return figures
